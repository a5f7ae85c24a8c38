"""Document sync: the server keeps its own copy of each open document, with its syntax tree."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lsprotocol import types as lsp

from qwen_lsp.completion.completer import TYPED_CHARS
from qwen_lsp.lsp.convert import offset, offsets
from qwen_lsp.syntax.documents import Document

if TYPE_CHECKING:
    from qwen_lsp.lsp.server import QwenLanguageServer

log = logging.getLogger(__name__)


def did_open(ls: QwenLanguageServer, params: lsp.DidOpenTextDocumentParams) -> None:
    """`textDocument/didOpen`: keep the text and publish its syntax errors."""
    item = params.text_document
    doc = ls.documents.open(item.uri, item.text, item.version, item.language_id)
    ls.publish_syntax_diagnostics(doc)
    ls.run_in_background(ls.completer.opened(doc, ls.settings))


def did_change(ls: QwenLanguageServer, params: lsp.DidChangeTextDocumentParams) -> None:
    """`textDocument/didChange`: apply the edits, publish the syntax errors, and while the user
    types let the engine read the new prefix."""
    doc = changed_document(ls, params.text_document)
    if doc is None:
        return
    apply_changes(doc, params.content_changes)
    doc.version = params.text_document.version
    ls.publish_syntax_diagnostics(doc)
    ls.completer.edited(doc)
    if (cursor := typed_at(doc, params.content_changes)) is not None:
        ls.completer.warm(ls.settings, doc, cursor)


def did_close(ls: QwenLanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
    """`textDocument/didClose`: forget the document and its completions."""
    ls.documents.close(params.text_document.uri)
    ls.completer.forget(params.text_document.uri)


def did_save(ls: QwenLanguageServer, params: lsp.DidSaveTextDocumentParams) -> None:
    """`textDocument/didSave`: other documents' project context may show this file."""
    ls.completer.saved(params.text_document.uri, ls.documents.get(params.text_document.uri))


def did_change_watched_files(ls: QwenLanguageServer, params: lsp.DidChangeWatchedFilesParams) -> None:
    """`workspace/didChangeWatchedFiles`: files changed outside the editor (a checkout, a build)."""
    ls.completer.files_changed([change.uri for change in params.changes])


def changed_document(ls: QwenLanguageServer, identifier: lsp.VersionedTextDocumentIdentifier) -> Document | None:
    """The open document a change applies to, or None (logged) if there is none to apply it to."""
    doc = ls.documents.get(identifier.uri)
    if doc is None:
        log.warning("change to a document that is not open: %s", identifier.uri)
        return None
    if identifier.version <= doc.version:
        # Versions strictly increase; an older one is a replayed or stale change, and its
        # deltas applied to the current text would corrupt it.
        log.warning("ignored a change to %s: version %d is not after %d", doc.uri, identifier.version, doc.version)
        return None
    return doc


def apply_changes(doc: Document, changes: Sequence[lsp.TextDocumentContentChangeEvent]) -> None:
    for change in changes:
        if isinstance(change, lsp.TextDocumentContentChangePartial):
            doc.replace(*offsets(doc, change.range), change.text)
        else:
            doc.replace_all(change.text)


def typed_at(doc: Document, changes: Sequence[lsp.TextDocumentContentChangeEvent]) -> int | None:
    """Where the cursor is if the last change looks like typing (a short insertion), else None."""
    last = changes[-1] if changes else None
    if isinstance(last, lsp.TextDocumentContentChangePartial) and len(last.text) <= TYPED_CHARS:
        return offset(doc, last.range.start) + len(last.text)
    return None
