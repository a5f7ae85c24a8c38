"""The commands the server offers, with their arguments as typed classes.

Arguments are structured by the converter pygls reads every message with, so their JSON spells
fields in camelCase like any LSP type: `{"textDocument": {...}, "range": {...}}`.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import cattrs
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams

EXPLAIN_COMMAND = "qwen.explain"
FIX_COMMAND = "qwen.fix"

T = TypeVar("T")


@attrs.define
class ExplainArguments:
    """What to explain: a selection, or an empty range inside the function to explain."""

    text_document: lsp.TextDocumentIdentifier
    range: lsp.Range


@attrs.define
class FixArguments:
    """The problem to fix, in the document version it was offered for (if known)."""

    text_document: lsp.OptionalVersionedTextDocumentIdentifier
    diagnostic: lsp.Diagnostic


USAGE = {
    ExplainArguments: 'qwen.explain expects [{"textDocument": {"uri": ...}, "range": {...}}]',
    FixArguments: 'qwen.fix expects [{"textDocument": {"uri": ..., "version": ...}, "diagnostic": {...}}]',
}


def arguments_of(converter: cattrs.Converter, params: lsp.ExecuteCommandParams, kind: type[T]) -> T:
    """The command's first argument as `kind`; anything else is the caller's error."""
    if not params.arguments:
        raise JsonRpcInvalidParams(USAGE[kind])
    try:
        return converter.structure(params.arguments[0], kind)
    except cattrs.BaseValidationError as exc:
        raise JsonRpcInvalidParams(USAGE[kind]) from exc


def command(converter: cattrs.Converter, title: str, name: str, arguments: ExplainArguments | FixArguments) -> lsp.Command:
    return lsp.Command(title=title, command=name, arguments=[converter.unstructure(arguments)])


def fix_target(converter: cattrs.Converter, data: Any) -> lsp.OptionalVersionedTextDocumentIdentifier | None:
    """The document a quick fix was offered for, from its `data`; None if the data is not ours."""
    try:
        return converter.structure(data, lsp.OptionalVersionedTextDocumentIdentifier)
    except cattrs.BaseValidationError:
        return None
