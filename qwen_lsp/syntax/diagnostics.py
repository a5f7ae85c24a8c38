"""Syntax errors of our own, read from the tree-sitter tree, with messages a person can act on.

tree-sitter marks what it could not parse as ERROR nodes and what it had to invent as MISSING
nodes; both are located precisely but say nothing. The messages here name the likely cause (a
missing ':', a bracket never closed, an unexpected token). Python's "inconsistent use of tabs and
spaces" is not a grammar error at all, so it is checked separately over the statements' lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tree_sitter import Node, Parser, Tree

from qwen_lsp.syntax.documents import tree_sitter_language

SYNTAX_PREFIX = "Syntax error: "
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}
_HEADER = re.compile(r"\s*(async\s+def|def|class|if|elif|else|for|while|try|except|finally|with|match|case)\b")
_STATEMENT_PARENTS = {"module", "block"}


@dataclass(frozen=True)
class Problem:
    """A diagnostic as character offsets into the document."""

    start: int
    end: int
    message: str

    @property
    def is_syntax(self) -> bool:
        return self.message.startswith(SYNTAX_PREFIX)


def parse(text: str, language_id: str) -> Tree | None:
    language = tree_sitter_language(language_id)
    if language is None:
        return None
    return Parser(language).parse(text.encode("utf-8", "surrogatepass"))


def error_nodes(node: Node) -> list[Node]:
    """The outermost ERROR and MISSING nodes under `node`."""
    if not node.has_error:
        return []
    if node.is_missing or node.type == "ERROR":
        return [node]
    found: list[Node] = []
    for child in node.children:
        found.extend(error_nodes(child))
    return found


def syntax_problems(text: str, tree: Tree | None, language_id: str) -> list[Problem]:
    if tree is None:
        return []
    data = text.encode("utf-8", "surrogatepass")
    ascii_text = len(data) == len(text)

    def char(byte: int) -> int:
        return byte if ascii_text else len(data[:byte].decode("utf-8", "replace"))

    problems = [_describe(text, node, char) for node in error_nodes(tree.root_node)]
    if language_id == "python" and not tree.root_node.has_error:  # a broken tree has no reliable blocks
        problems.extend(_mixed_indentation(text, tree))
    return sorted(problems, key=lambda p: p.start)


def problems_in(text: str, language_id: str) -> list[Problem]:
    """Parse `text` afresh and list its syntax problems (used to verify a fix)."""
    return syntax_problems(text, parse(text, language_id), language_id)


# -- messages --------------------------------------------------------------------------------------
def _line_bounds(text: str, offset: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return start, len(text) if end < 0 else end


def _unclosed_bracket(text: str, start: int, end: int) -> int | None:
    """Offset of the first bracket opened in text[start:end] and never closed there (strings and
    comments are skipped roughly: brackets inside quotes on the same line do not count)."""
    stack: list[int] = []
    quote = ""
    i = start
    while i < end:
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote or c == "\n":
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#":
            newline = text.find("\n", i, end)
            i = end if newline < 0 else newline
            continue
        elif c in _OPEN:
            stack.append(i)
        elif c in _CLOSE and stack and text[stack[-1]] == _CLOSE[c]:
            stack.pop()
        i += 1
    return stack[0] if stack else None


def _describe(text: str, node: Node, char: Callable[[int], int]) -> Problem:
    start, end = char(node.start_byte), char(node.end_byte)
    if node.is_missing:
        return Problem(start, start, f"{SYNTAX_PREFIX}missing '{node.type}'")
    line_start, line_end = _line_bounds(text, start)
    header = text[line_start:line_end]
    # A compound statement's header without its ':' (the ERROR usually starts on or after it).
    for candidate_start in (line_start, _line_bounds(text, max(0, line_start - 1))[0]):
        cand_end = _line_bounds(text, candidate_start)[1]
        line = text[candidate_start:cand_end]
        code = line.split("#", 1)[0].rstrip()
        if _HEADER.match(line) and code and not code.endswith(":") and _unclosed_bracket(text, candidate_start, cand_end) is None:
            at = candidate_start + len(code)
            return Problem(at, at, f"{SYNTAX_PREFIX}expected ':' at the end of `{code.strip()}`")
    bracket = _unclosed_bracket(text, start, end)
    if bracket is not None:
        return Problem(bracket, bracket + 1, f"{SYNTAX_PREFIX}'{text[bracket]}' was never closed")
    snippet = text[start:end].strip().split("\n", 1)[0][:40]
    first_end = min(end, line_end) if end > start else start
    if not snippet:
        return Problem(start, first_end, f"{SYNTAX_PREFIX}invalid syntax in `{header.strip()[:60]}`")
    return Problem(start, first_end, f"{SYNTAX_PREFIX}unexpected `{snippet}`")


# -- Python's tab/space consistency ----------------------------------------------------------------
def _statement_lines(node: Node, rows: set[int]) -> None:
    for child in node.children:
        if node.type in _STATEMENT_PARENTS and child.is_named:
            rows.add(child.start_point.row)
        if child.child_count:
            _statement_lines(child, rows)


def _widths(indent: str) -> tuple[int, int]:
    """Indentation width with tabs to multiples of 8 and with tabs as 1 column: CPython calls
    indentation inconsistent when the two disagree about its order."""
    return len(indent.expandtabs(8)), len(indent.replace("\t", " "))


def _mixed_indentation(text: str, tree: Tree) -> list[Problem]:
    rows: set[int] = set()
    _statement_lines(tree.root_node, rows)
    lines = text.split("\n")
    line_starts = [0]
    for line in lines:
        line_starts.append(line_starts[-1] + len(line) + 1)
    mixed = "\n\t" in text and "\n " in text
    message = "inconsistent use of tabs and spaces in indentation" if mixed else "unindent does not match any outer indentation level"
    stack = [(0, 0)]
    problems = []
    for row in sorted(rows):
        if row >= len(lines):
            continue
        line = lines[row]
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        wide, narrow = _widths(indent)
        dedented = False
        while len(stack) > 1 and wide < stack[-1][0]:
            stack.pop()
            dedented = True
        top_wide, top_narrow = stack[-1]
        same = wide == top_wide and narrow == top_narrow
        deeper = wide > top_wide and narrow > top_narrow
        if not same and (dedented or not deeper):
            start = line_starts[row]
            problems.append(Problem(start, start + len(indent), SYNTAX_PREFIX + message))
        if wide > top_wide:  # after a problem too, so that one bad line is reported once
            stack.append((wide, narrow))
    return problems
