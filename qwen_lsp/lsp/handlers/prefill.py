"""`qwen/cursorRested`: our editor plugins say where the cursor came to rest (debounced), and the
server reads the prompt for that place while the engine is idle, so typing there starts warm.

Params: `{"textDocument": {"uri": ...}, "position": {"line": ..., "character": ...}}`, the shape
of LSP's TextDocumentPositionParams. Other clients never send it and lose nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lsprotocol import types as lsp

from qwen_lsp.lsp.convert import offset

if TYPE_CHECKING:
    from qwen_lsp.lsp.server import QwenLanguageServer

log = logging.getLogger(__name__)

CURSOR_RESTED = "qwen/cursorRested"


def cursor_rested(ls: QwenLanguageServer, params: Any) -> None:
    """`qwen/cursorRested` (a notification): prefill the completion prompt at that place."""
    try:
        where = ls.converter.structure(plain(params), lsp.TextDocumentPositionParams)
    except Exception:  # noqa: BLE001 - a malformed hint is dropped: it is only a hint
        log.warning("ignored %s with params %r", CURSOR_RESTED, params)
        return
    doc = ls.documents.get(where.text_document.uri)
    if doc is not None and ls.settings.enable_completion:
        ls.completer.prefill(ls.settings, doc, offset(doc, where.position))


def plain(value: Any) -> Any:
    """pygls hands a custom method's params over as named tuples; the converter wants dicts."""
    if hasattr(value, "_asdict"):
        return {key: plain(item) for key, item in value._asdict().items()}
    return value
