"""A deliberately dumb LSP client for the reliability tests: it writes whatever bytes a test
gives it (broken frames included) to a server process and reads the server's frames back."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SERVER = [sys.executable, "-m", "qwen_lsp", "serve"]


def frame(message: Any, length: int | None = None) -> bytes:
    body = json.dumps(message).encode() if not isinstance(message, bytes) else message
    return f"Content-Length: {len(body) if length is None else length}\r\n\r\n".encode() + body


class RawServer:
    def __init__(self, env: dict[str, str], command: list[str] | None = None, stderr: Path | None = None) -> None:
        self.stderr_path = stderr
        err = open(stderr, "wb") if stderr else subprocess.DEVNULL  # noqa: SIM115 - closed by the process's end
        self.proc = subprocess.Popen(command or SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    self.messages.put(None)
                    return
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line in (b"\r\n", b"\n"):
                    break
            assert length is not None, "the server wrote a frame without Content-Length"
            self.messages.put(json.loads(out.read(length)))

    def send_bytes(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: Any) -> None:
        self.send_bytes(frame(message))

    def next_message(self, timeout: float = 30.0) -> dict[str, Any]:
        message = self.messages.get(timeout=timeout)
        assert message is not None, "the server closed its output"
        self.seen.append(message)
        return message

    def response(self, msg_id: Any, timeout: float = 30.0) -> dict[str, Any]:
        """The next response with this id (null for errors about unreadable messages)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_message(max(0.1, deadline - time.monotonic()))
            if "method" not in message and message.get("id") == msg_id:
                return message

    def request(self, method: str, params: Any = None, msg_id: Any = None, timeout: float = 30.0) -> dict[str, Any]:
        msg_id = msg_id if msg_id is not None else f"{method}-{time.monotonic_ns()}"
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return self.response(msg_id, timeout)

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def initialize(
        self, process_id: int | None = None, options: dict[str, Any] | None = None, capabilities: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result = self.request(
            "initialize",
            {
                "processId": process_id if process_id is not None else os.getpid(),
                "rootUri": None,
                "capabilities": capabilities or {},
                "initializationOptions": options or {},
            },
        )
        self.notify("initialized", {})
        return result

    def close(self) -> int:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


FIX_CAPABILITIES = {
    "workspace": {"applyEdit": True, "workspaceEdit": {"documentChanges": True}},
    "textDocument": {"codeAction": {"resolveSupport": {"properties": ["edit"]}}},
}


def resolve_fix_with_fake_answer(
    answer: str, uri: str, text: str, diagnostic: dict[str, Any], *, stderr: Path, version: int = 1
) -> tuple[RawServer, dict[str, Any]]:
    """Ask a server running the fake engine, which answers every chat with `answer`, for the
    quick fix of `diagnostic` (an editor passes on another server's diagnostics the same way);
    the closed server (for what it sent) and the resolved code action."""
    server = RawServer({**os.environ, "QWEN_LSP_FAKE_ANSWER": answer}, [sys.executable, "-m", "tests.fake_engine"], stderr)
    try:
        server.initialize(capabilities=FIX_CAPABILITIES)
        server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": version, "text": text}})
        params = {"textDocument": {"uri": uri}, "range": diagnostic["range"], "context": {"diagnostics": [diagnostic]}}
        actions = server.request("textDocument/codeAction", params)["result"]
        resolved = server.request("codeAction/resolve", next(a for a in actions if a.get("kind") == "quickfix"))["result"]
    finally:
        server.close()
    return server, resolved
