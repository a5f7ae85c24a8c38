"""Translation between LSP positions and the character offsets the features work in."""

from __future__ import annotations

from lsprotocol import types as lsp

from qwen_lsp.syntax.diagnostics import Problem
from qwen_lsp.syntax.documents import Document

SOURCE = "qwen-lsp"


def to_position(doc: Document, offset: int) -> lsp.Position:
    line, character = doc.position_at(offset)
    return lsp.Position(line=line, character=character)


def to_range(doc: Document, start: int, end: int) -> lsp.Range:
    return lsp.Range(start=to_position(doc, start), end=to_position(doc, end))


def offset(doc: Document, position: lsp.Position) -> int:
    return doc.offset_at(position.line, position.character)


def offsets(doc: Document, rng: lsp.Range) -> tuple[int, int]:
    """The range as (start, end) offsets, in order even if the client sent them reversed."""
    start, end = offset(doc, rng.start), offset(doc, rng.end)
    return min(start, end), max(start, end)


def to_diagnostic(doc: Document, problem: Problem) -> lsp.Diagnostic:
    return lsp.Diagnostic(
        range=to_range(doc, problem.start, problem.end),
        message=problem.message,
        severity=lsp.DiagnosticSeverity.Error,
        source=SOURCE,
    )


def to_problem(doc: Document, diagnostic: lsp.Diagnostic) -> Problem:
    return Problem(*offsets(doc, diagnostic.range), diagnostic.message)
