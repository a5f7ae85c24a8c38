"""Completion, inline (ghost text) and classic (a one-item menu), both from one suggestion."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types as lsp

from qwen_lsp.completion.completer import Suggestion
from qwen_lsp.lsp.convert import offset, to_position
from qwen_lsp.lsp.errors import engine_errors
from qwen_lsp.syntax.documents import Document

if TYPE_CHECKING:
    from qwen_lsp.lsp.server import QwenLanguageServer

CLASSIC_OPTIONS = lsp.CompletionOptions(trigger_characters=[".", "(", " "])


async def inline_completion(ls: QwenLanguageServer, params: lsp.InlineCompletionParams) -> lsp.InlineCompletionList:
    """`textDocument/inlineCompletion`: the suggestion as ghost text at the cursor."""
    doc, suggestion = await suggest(ls, params.text_document.uri, params.position)
    if suggestion is None:
        return lsp.InlineCompletionList(items=[])
    at = to_position(doc, suggestion.offset)
    return lsp.InlineCompletionList(items=[lsp.InlineCompletionItem(insert_text=suggestion.text, range=lsp.Range(at, at))])


async def classic_completion(ls: QwenLanguageServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    """`textDocument/completion`: the suggestion as the one item of a menu that is always
    incomplete, so the client asks again as the user types."""
    doc, suggestion = await suggest(ls, params.text_document.uri, params.position)
    if suggestion is None:
        return lsp.CompletionList(is_incomplete=True, items=[])
    at = to_position(doc, suggestion.offset)
    item = lsp.CompletionItem(
        label=suggestion.text.strip().splitlines()[0][:60],
        kind=lsp.CompletionItemKind.Text,
        detail="Qwen",
        text_edit=lsp.TextEdit(range=lsp.Range(at, at), new_text=suggestion.text),
        filter_text="",
        sort_text="0",
    )
    return lsp.CompletionList(is_incomplete=True, items=[item])


async def suggest(ls: QwenLanguageServer, uri: str, position: lsp.Position) -> tuple[Document, Suggestion | None]:
    doc = ls.document(uri)
    if not ls.settings.enable_completion:
        return doc, None
    with engine_errors():
        return doc, await ls.completer.suggest(ls.settings, doc, offset(doc, position))
