"""Exit when the editor is gone.

An editor that crashes, or is killed, never sends `exit`, and may leave our stdin open (another
process can hold the pipe). The LSP spec gives the client's `processId` in `initialize` for this:
the server checks it now and then and exits once that process is gone, so no orphaned server
keeps the model's memory for days.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), which tells a reused pid apart;
    None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 else None


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :][:1]


def is_alive(pid: int, started: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    if _state(pid) in ("Z", "X"):  # dead, waiting for its parent to collect it
        return False
    return started is None or _start_time(pid) in (None, started)


def _exit_now() -> None:
    logging.shutdown()
    # Not sys.exit: the engine thread may be inside llama.cpp, and nobody waits for an answer.
    os._exit(1)


def watch_parent(pid: int | None, on_gone: Callable[[], None] = _exit_now, every: float = CHECK_SECONDS) -> threading.Thread | None:
    """Start a daemon thread that calls `on_gone` once process `pid` has ended."""
    if not pid or pid == os.getpid():
        return None
    started = _start_time(pid)
    if not is_alive(pid, started):
        log.warning("the client's process %d is not running; not watching it", pid)
        return None

    def run() -> None:
        while True:
            time.sleep(every)
            if not is_alive(pid, started):
                log.warning("the client's process %d is gone: exiting", pid)
                on_gone()
                return

    thread = threading.Thread(target=run, name="qwen-lsp-watchdog", daemon=True)
    thread.start()
    return thread
