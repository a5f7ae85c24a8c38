"""`qwen/status`: what the server is doing, for editors' status lines and the soak test."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qwen_lsp.lsp.server import QwenLanguageServer

STATUS_REQUEST = "qwen/status"


def status(ls: QwenLanguageServer, params: Any) -> dict[str, Any]:
    """`qwen/status`: the backend, its state, the stats of its latest requests, and the project index."""
    engine = ls.started_engine
    project = ls.completer.project.describe()
    if engine is None:
        return {"state": "idle", "process": process_figures(ls), "project": project}
    return {
        "message": engine.status.message,
        **engine.describe(),
        "recent": engine.recent_stats(),
        "process": process_figures(ls),
        "project": project,
    }


def process_figures(ls: QwenLanguageServer) -> dict[str, int]:
    """What a long-running server must not accumulate (the soak test watches these)."""
    return {
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "pending_requests": len(ls.protocol._request_futures),
        "open_documents": len(ls.documents),
    }
