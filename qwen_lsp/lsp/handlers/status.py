"""`qwen/status`: what the server is doing, for editors' status lines and the soak test."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qwen_lsp.lsp.server import QwenLanguageServer

STATUS_REQUEST = "qwen/status"


def status(ls: QwenLanguageServer, params: Any) -> dict[str, Any]:
    """`qwen/status`: the backend, its state, the stats of its latest requests, and the project index."""
    engine = ls.started_engine
    project = ls.completer.project.describe()
    if engine is None:
        return {"state": "idle", "process": process_figures(ls), "memory": memory_figures(), "project": project}
    return {
        "message": engine.status.message,
        **engine.describe(),
        "recent": engine.recent_stats(),
        "process": process_figures(ls),
        "memory": memory_figures(),
        "project": project,
    }


def memory_figures() -> dict[str, float | None]:
    """The server's resident memory: the model, its KV cache and the kept prompt states, in MB
    (Linux's /proc; None where there is none)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return {"rss_mb": None}
    return {"rss_mb": round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)}


def process_figures(ls: QwenLanguageServer) -> dict[str, int]:
    """What a long-running server must not accumulate (the soak test watches these)."""
    return {
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "pending_requests": len(ls.protocol._request_futures),
        "open_documents": len(ls.documents),
    }
