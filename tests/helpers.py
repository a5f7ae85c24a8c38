"""Helpers the tests share: requests a client sends, edits applied as an editor would, ports."""

from __future__ import annotations

import re
import socket
from typing import Any

from lsprotocol import types as lsp

# LSP's line ends: "\r\n", "\n" and a lone "\r" (not the form feeds str.splitlines also breaks at).
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


async def inline_completion(
    client: Any, uri: str, position: lsp.Position, *, invoked: bool = False, msg_id: str | None = None
) -> lsp.InlineCompletionList:
    """`textDocument/inlineCompletion` as typing (Automatic) or Alt+\\ (Invoked) sends it; with
    `msg_id`, under that request id (so a test can cancel it)."""
    kind = lsp.InlineCompletionTriggerKind.Invoked if invoked else lsp.InlineCompletionTriggerKind.Automatic
    params = lsp.InlineCompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri), position=position, context=lsp.InlineCompletionContext(trigger_kind=kind)
    )
    if msg_id is None:
        return await client.text_document_inline_completion_async(params)
    return await client.protocol.send_request_async(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)


def apply_text_edits(text: str, edits: list[lsp.TextEdit]) -> str:
    """Apply edits as an editor does, last first. Positions count code points (the tests' texts
    are ASCII or use a utf-32 client) on lines ended as LSP ends them."""
    starts = [0]
    for line in _LINE.findall(text):
        starts.append(starts[-1] + len(line))

    def offset(position: lsp.Position) -> int:
        return starts[min(position.line, len(starts) - 1)] + position.character

    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end) :]
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
