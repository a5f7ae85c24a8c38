"""Syntax errors of our own, read from the tree-sitter tree, with messages a person can act on.

tree-sitter marks what it could not parse as ERROR nodes and what it had to invent as MISSING
nodes; both are located precisely but say nothing. The messages here name the likely cause (a
missing ':', a bracket never closed, an unexpected token). Python's "inconsistent use of tabs and
spaces" is not a grammar error at all, so it is checked separately over the statements' lines.

`document_problems` is what a keystroke pays for: it redoes the tabs/spaces check only for the
top-level statements that edits touched since it last ran. Every walk over the tree is iterative:
code nests deeper than Python's recursion limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tree_sitter import Node, Parser, Tree

from qwen_lsp.syntax.documents import Document, Edit, decoded_length, tree_sitter_language
from qwen_lsp.syntax.indent import width

SYNTAX_PREFIX = "Syntax error: "
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}
_HEADER = re.compile(r"\s*(async\s+def|def|class|if|elif|else|for|while|try|except|finally|with|match|case)\b")
_LEADING_BLANKS = re.compile(rb"[ \t]*")
_BRACKET_SCAN = re.compile(r"""[\\"'#\n()\[\]{}]""")
# The nodes a `block` can be found under (the compound statements and their clauses): the
# statements' lines are read without walking into expressions.
_BLOCK_HOLDERS = {
    "module",
    "block",
    "function_definition",
    "class_definition",
    "decorated_definition",
    "if_statement",
    "elif_clause",
    "else_clause",
    "for_statement",
    "while_statement",
    "try_statement",
    "except_clause",
    "except_group_clause",
    "finally_clause",
    "with_statement",
    "match_statement",
    "case_clause",
}
MIXED = "inconsistent use of tabs and spaces in indentation"
UNMATCHED = "unindent does not match any outer indentation level"


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
    """The outermost ERROR and MISSING nodes under `node`, in document order."""
    found: list[Node] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if not current.has_error:
            continue
        if current.is_missing or current.type == "ERROR":
            found.append(current)
        else:
            stack.extend(reversed(current.children))
    return found


def syntax_problems(text: str, tree: Tree | None, language_id: str) -> list[Problem]:
    """The problems of a text that no `Document` holds (a fix being verified), checked whole."""
    if tree is None:
        return []
    data = text.encode("utf-8", "surrogatepass")
    ascii_text = len(data) == len(text)

    def char(byte: int) -> int:
        return byte if ascii_text else decoded_length(data[:byte])

    problems = [_describe(text, node, char) for node in error_nodes(tree.root_node)]
    if language_id == "python" and not tree.root_node.has_error:  # a broken tree has no reliable blocks
        spans = _indentation_spans(data, tree.root_node.children, char)
        message = SYNTAX_PREFIX + _indentation_message(data) if spans else ""
        problems.extend(Problem(start, end, message) for start, end in spans)
    return sorted(problems, key=lambda p: p.start)


def document_problems(doc: Document) -> list[Problem]:
    """The problems of an open document, as `syntax_problems` finds them, at a cost that grows
    with the edits since the last call rather than with the file."""
    if doc.tree is None:
        return []
    problems = [_describe(doc.text, node, doc.char_offset) for node in error_nodes(doc.tree.root_node)]
    if doc.language_id == "python" and not doc.tree.root_node.has_error:
        check = doc.watchers.get(_Indentation.NAME)
        if not isinstance(check, _Indentation):
            check = doc.watchers[_Indentation.NAME] = _Indentation()
        spans = check.spans_now(doc)
        message = SYNTAX_PREFIX + _indentation_message(doc.data) if spans else ""
        problems.extend(Problem(start, end, message) for start, end in spans)
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
    comments are skipped roughly: brackets inside quotes on the same line do not count). Steps
    from one character that matters to the next, so an ERROR spanning the file stays cheap."""
    stack: list[int] = []
    quote = ""
    i = start
    while (m := _BRACKET_SCAN.search(text, i, end)) is not None:
        c, i = m.group(), m.end()
        if quote:
            if c == "\\":
                i += 1
            elif c in (quote, "\n"):
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#":
            newline = text.find("\n", i, end)
            i = end if newline < 0 else newline
        elif c in _OPEN:
            stack.append(m.start())
        elif c in _CLOSE and stack and text[stack[-1]] == _CLOSE[c]:
            stack.pop()
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
def _indentation_message(data: bytes) -> str:
    return MIXED if b"\n\t" in data and b"\n " in data else UNMATCHED


def _statement_line_starts(tops: list[Node]) -> list[int]:
    """Byte offsets of the lines on which statements start (named children of the module and of
    blocks), ascending, for the module's children `tops` and what they hold."""
    starts: list[int] = []
    stack = [(node, node.is_named) for node in reversed(tops)]
    while stack:
        node, is_statement = stack.pop()
        if is_statement:
            line_start = node.start_byte - node.start_point.column  # columns are bytes since "\n"
            if not starts or starts[-1] != line_start:
                starts.append(line_start)
        if node.type in _BLOCK_HOLDERS:
            holds_statements = node.type == "block"
            stack.extend((child, holds_statements and child.is_named) for child in reversed(node.children))
    return starts


def _indentation_spans(data: bytes, tops: list[Node], char: Callable[[int], int]) -> list[tuple[int, int]]:
    """Indentation CPython would reject, as character spans, in the module's children `tops`,
    the first of which starts at column 0 (or the file): there no indentation level is open.
    CPython compares each line's width with tabs to multiples of 8 and with tabs as 1 column, and
    calls indentation inconsistent when the two disagree about its order."""
    stack = [(0, 0)]
    spans = []
    for line_start in _statement_line_starts(tops):
        indent = _LEADING_BLANKS.match(data, line_start).group().decode()  # type: ignore[union-attr]
        wide, narrow = width(indent), len(indent)
        dedented = False
        while len(stack) > 1 and wide < stack[-1][0]:
            stack.pop()
            dedented = True
        top_wide, top_narrow = stack[-1]
        same = wide == top_wide and narrow == top_narrow
        deeper = wide > top_wide and narrow > top_narrow
        if not same and (dedented or not deeper):
            start = char(line_start)
            spans.append((start, start + len(indent)))
        if wide > top_wide:  # after a problem too, so that one bad line is reported once
            stack.append((wide, narrow))
    return spans


def _segment(root: Node, low: int, high: int) -> tuple[list[Node], int, int]:
    """The module's children from the last one at or before byte `low` that starts a line (at
    column 0 no indentation level is open, whatever came before) to before the first such one
    after byte `high`, and the bytes they span."""
    first = _child_at(root, low)
    while first is not None and not (first.start_byte <= low and _opens_line(first)):
        first = first.prev_sibling
    node = first or (root.child(0) if root.child_count else None)
    tops: list[Node] = []
    while node is not None and not (node.start_byte > high and _opens_line(node)):
        tops.append(node)
        node = node.next_sibling
    start = first.start_byte if first is not None else 0
    return tops, start, node.start_byte if node is not None else root.end_byte


def _child_at(root: Node, byte: int) -> Node | None:
    """The last child of `root` starting at or before `byte`, else None. (Not
    `Node.first_child_for_byte`: py-tree-sitter 0.26 crashes when no child qualifies.)"""
    low, high = 0, root.child_count  # the answer's index + 1 lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        child = root.child(middle)
        if child is not None and child.start_byte <= byte:
            low = middle + 1
        else:
            high = middle
    return root.child(low - 1) if low > 0 else None


def _opens_line(node: Node) -> bool:
    return node.is_named and node.start_point.column == 0


class _Indentation:
    """The tabs/spaces check of one document, kept between keystrokes: the spans found, moved
    along with edits, and the text edited since, so that the next check redoes only the
    top-level statements around it.

    Not `Tree.changed_ranges`: for Python it reports everything after an edit. What the text
    span misses: a change of lexical context that runs past the next top-level statement with no
    text there edited, and a clean parse both before and after — only where the code after reads
    cleanly both as code and as string content. It is seen at the next edit there.
    """

    NAME = "indentation"

    def __init__(self) -> None:
        self.checked = False
        self.spans: list[tuple[int, int]] = []
        self.dirty: tuple[int, int] | None = None  # character span edited since the check

    def edited(self, edit: Edit) -> None:
        delta = edit.new_end - edit.old_end
        self.spans = [(s, e) if s < edit.start else (s + delta, e + delta) for s, e in self.spans if not edit.start <= s < edit.old_end]
        low, high = self.dirty if self.dirty is not None else (edit.start, edit.new_end)

        def moved(p: int) -> int:
            return p if p <= edit.start else (p + delta if p >= edit.old_end else edit.new_end)

        self.dirty = (min(moved(low), edit.start), max(moved(high), edit.new_end))

    def spans_now(self, doc: Document) -> list[tuple[int, int]]:
        """The spans for `doc.tree` (a tree without errors)."""
        assert doc.tree is not None
        root = doc.tree.root_node
        if not self.checked:
            tops, start, end = root.children, 0, root.end_byte
        elif self.dirty is None:
            return self.spans
        else:
            tops, start, end = _segment(root, doc.byte_offset(self.dirty[0]), doc.byte_offset(self.dirty[1]))
        first, last = doc.char_offset(start), doc.char_offset(end)
        found = _indentation_spans(doc.data, tops, doc.char_offset)
        self.spans = [s for s in self.spans if s[0] < first] + found + [s for s in self.spans if s[0] >= last]
        self.checked, self.dirty = True, None
        return self.spans
