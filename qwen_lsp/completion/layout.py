"""What the model sees for a completion: syntax-aware windows, imports and signatures, in a budget.

The prompt is laid out for the engine's KV cache: material that changes slowly comes first (the
module's imports, signatures of the file's own definitions that the window uses, the window up
to an anchor line, the code after the cursor), and the lines typed since the anchor come last,
after `<|fim_middle|>`, as the start of the answer. A keystroke then costs only its own tokens.

Everything before the middle is a function of the anchor alone, read from text that typing on
the cursor's line cannot change: while a line is half-typed the syntax tree around it is broken,
so window edges are found from the text's top-level lines, not from the tree. The anchor moves
in steps, and only once the user types on the new line, so a pause after Enter never pays for
re-evaluating the suffix. Without a tree-sitter grammar the same layout is built from plain text.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from tree_sitter import Node

from qwen_lsp.syntax import symbols
from qwen_lsp.syntax.documents import Document
from qwen_lsp.syntax.indent import leading_whitespace

# Code is about 3 characters a token for this tokenizer (measured on stdlib code: 3.1-3.6); err
# towards fewer characters so a window never overruns its budget.
CHARS_PER_TOKEN = 3
# The window's start moves in steps of this many lines, so typing does not shift it.
WINDOW_STEP_LINES = 16
# The anchor (where the prompt's middle begins) moves in steps of this many lines.
ANCHOR_STEP_LINES = 8
# Shares of the token budget: the code after the cursor, the header of imports/signatures.
SUFFIX_SHARE = 0.25
HEADER_SHARE = 0.2
# Room kept for the lines typed since the anchor (the middle).
MIDDLE_SHARE = 0.1
# Characters right of the cursor that still leave room for a suggestion (closers, separators).
_CLOSERS = set(")]}\"'`:;,")
_STRING_TYPES = {"string", "template_string", "raw_string_literal", "string_literal", "char_literal"}
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
# A line starting at column 0 with code: where a top-level statement begins (a closing bracket
# or a comment there continues or annotates the one before).
_TOP_LEVEL_LINE = re.compile(r"^[^\s)\]}#]", re.MULTILINE)


class Mode(enum.Enum):
    NOTHING = "nothing"  # inside a string or comment, or code right of the cursor
    LINE = "line"  # the rest of the current line
    BLOCK = "block"  # the body of a block just opened


@dataclass(frozen=True)
class Context:
    mode: Mode
    header: str  # imports and signatures from outside the window (stable while typing)
    prefix: str  # window text before the anchor
    suffix: str  # window text after the cursor
    middle: str  # from the anchor to the cursor: the answer's beginning, already typed
    indent: str  # indentation a block's lines start with (BLOCK), or of the cursor's line
    line_prefix: str  # the cursor's line up to the cursor
    line_suffix: str  # the cursor's line after the cursor

    @property
    def held_back(self) -> str:
        """The space or tab right before the cursor, left out of the prompt for the model to
        write: the tokenizer joins a whitespace run's last character to the word after it
        (`"       " + " return"`), so a prompt ending with the whole run is one the model never
        saw. It answered such places with nothing, a comment, or code one space too deep (30
        stdlib places: 8 empty answers became 0, exact first lines 4 became 9)."""
        return self.middle[-1:] if self.middle[-1:] in (" ", "\t") else ""


def build(doc: Document, offset: int, budget_tokens: int) -> Context:
    line_no, _ = doc.position_at(offset)
    line_start = doc.offset_at(line_no, 0)
    line_end = line_start + len(doc.line(line_no))
    line_prefix, line_suffix = doc.text[line_start:offset], doc.text[offset:line_end]
    mode = decide(doc, offset, line_prefix, line_suffix)
    indent = leading_whitespace(line_prefix) if not line_prefix.strip() else leading_whitespace(doc.line(line_no))
    if mode is Mode.BLOCK:
        indent = _block_indent(doc, line_no, line_prefix)
    if mode is Mode.NOTHING:
        return Context(mode, "", "", "", "", indent, line_prefix, line_suffix)

    budget = budget_tokens * CHARS_PER_TOKEN
    suffix = _suffix_window(doc, offset, int(budget * SUFFIX_SHARE))
    # A line holding only indentation belongs to the anchor step of the line above it.
    typed_on = line_no if line_prefix.strip() else max(line_no - 1, 0)
    anchor = doc.offset_at(typed_on // ANCHOR_STEP_LINES * ANCHOR_STEP_LINES, 0)
    window_budget = budget - len(suffix) - int(budget * (HEADER_SHARE + MIDDLE_SHARE))
    start = min(_window_start(doc, anchor, window_budget), anchor)
    used = set(_IDENTIFIER.findall(doc.text[start:anchor] + suffix))
    header_budget = budget - (anchor - start) - len(suffix) - int(budget * MIDDLE_SHARE)
    header = _header(doc, start, used, header_budget)
    return Context(mode, header, doc.text[start:anchor], suffix, doc.text[anchor:offset], indent, line_prefix, line_suffix)


# -- what to complete -------------------------------------------------------------------------------
def decide(doc: Document, offset: int, line_prefix: str, line_suffix: str) -> Mode:
    """Nothing, the rest of the line or a block, from the text and the syntax node at the cursor."""
    if line_suffix.strip() and not set(line_suffix.strip()) <= _CLOSERS:
        return Mode.NOTHING
    if doc.tree is not None and _in_string_or_comment(doc, offset):
        return Mode.NOTHING
    if not line_prefix.strip():
        previous = _previous_code_line(doc, doc.position_at(offset)[0])
        if previous is not None and previous.rstrip().endswith((":", "{")) and not _body_follows(doc, offset, previous):
            return Mode.BLOCK
    return Mode.LINE


def _in_string_or_comment(doc: Document, offset: int) -> bool:
    assert doc.tree is not None
    point = doc.byte_offset(offset)
    node: Node | None = doc.tree.root_node.descendant_for_byte_range(max(point - 1, 0), point)
    while node is not None:
        if "comment" in node.type and node.start_byte < point:
            return True
        # Strictly inside: right after the closing quote is code again.
        if node.type in _STRING_TYPES and node.start_byte < point < node.end_byte:
            return True
        node = node.parent
    return _unclosed_quote(doc, offset)


def _unclosed_quote(doc: Document, offset: int) -> bool:
    """An unterminated string before the cursor: tree-sitter leaves its opening quote in an ERROR
    node (or bare) next to the nodes around the cursor rather than in a `string`."""
    assert doc.tree is not None
    point = doc.byte_offset(offset)
    line_start = doc.byte_offset(doc.offset_at(doc.position_at(offset)[0], 0))
    code_end = doc.byte_offset(_code_end(doc.text, offset))  # trailing blanks are in no node
    node: Node | None = doc.tree.root_node.descendant_for_byte_range(max(code_end - 1, 0), code_end)
    while node is not None:
        if node.type in _STRING_TYPES:
            return False  # its quotes are matched
        for child in node.children:
            if child.start_byte >= point:
                break
            quotes = [child] if child.type == "string_start" else []
            if child.type == "ERROR":
                quotes = [c for c in child.children if c.type == "string_start"]
            for quote in quotes:
                triple = quote.end_byte - quote.start_byte >= 3 and (quote.text or b"")[-3:] in (b'"""', b"'''")
                if quote.start_byte >= line_start or triple:
                    return True
        node = node.parent
    return False


def _code_end(text: str, offset: int) -> int:
    """`len(text[:offset].rstrip())` without copying the text before the cursor."""
    while offset > 0 and text[offset - 1].isspace():
        offset -= 1
    return offset


def _previous_code_line(doc: Document, line_no: int) -> str | None:
    for number in range(line_no - 1, -1, -1):
        if doc.line(number).strip():
            return doc.line(number)
    return None


def _body_follows(doc: Document, offset: int, opener: str) -> bool:
    """A block opener whose body is already written (the next code line is indented deeper)."""
    line_no, _ = doc.position_at(offset)
    for number in range(line_no + 1, doc.line_count):
        line = doc.line(number)
        if line.strip():
            return len(leading_whitespace(line)) > len(leading_whitespace(opener))
    return False


def _block_indent(doc: Document, line_no: int, line_prefix: str) -> str:
    opener = _previous_code_line(doc, line_no) or ""
    unit = "\t" if opener.startswith("\t") else "    "
    deeper = leading_whitespace(opener) + unit
    return line_prefix if len(line_prefix) >= len(deeper) else deeper


# -- windows ----------------------------------------------------------------------------------------
def _suffix_window(doc: Document, offset: int, budget_chars: int) -> str:
    """Text after the cursor up to the next top-level line (the end of the enclosing top-level
    statement), within budget, ending on a whole line."""
    text = doc.text[offset : offset + budget_chars]
    if offset + len(text) < len(doc.text) and "\n" in text:
        text = text[: text.rfind("\n") + 1]
    first_newline = text.find("\n")
    if first_newline >= 0:
        following = text[first_newline + 1 :]
        top = _TOP_LEVEL_LINE.search(following)
        if top is not None:
            text = text[: first_newline + 1 + top.start()]
    return text


def _window_start(doc: Document, anchor: int, budget_chars: int) -> int:
    """Where the window before the anchor begins: the earliest line in budget, moved forward to a
    multiple of WINDOW_STEP_LINES and then to a top-level line, if one comes within a step (and
    before the anchor)."""
    earliest = max(0, anchor - max(budget_chars, 0))
    line, _ = doc.position_at(earliest)
    if doc.offset_at(line, 0) < earliest:
        line += 1
    line = -(-line // WINDOW_STEP_LINES) * WINDOW_STEP_LINES
    if line >= doc.line_count:
        return anchor
    start = doc.offset_at(line, 0)
    within = anchor if line + WINDOW_STEP_LINES >= doc.line_count else min(anchor, doc.offset_at(line + WINDOW_STEP_LINES, 0))
    top = _TOP_LEVEL_LINE.search(doc.text, start, within)
    return top.start() if top is not None else start


# -- the header: imports and the signatures the window uses ----------------------------------------
def _header(doc: Document, start: int, used: set[str], budget_chars: int) -> str:
    """Imports and the signatures of definitions that `used` names, from before the window only,
    read from a tree of that text alone (see `Document.tree_before`)."""
    tree = doc.tree_before(start) if start > 0 and budget_chars > 0 else None
    if tree is None:
        return ""
    data = doc.data[: doc.byte_offset(start)]
    parts: list[str] = []
    for child in tree.root_node.children:
        if child.type in symbols.IMPORTS:
            parts.append(symbols.node_text(data, child))
        elif symbols.definition_node(child).type in symbols.DEFINITIONS:
            encloses = child.end_byte >= len(data)  # the window starts inside it
            signature = _signature(data, child, None if encloses else used)
            if signature:
                parts.append(signature)
    header = ""
    for part in parts:  # document order, so the header is stable while typing
        if len(header) + len(part) + 2 > budget_chars:
            break
        header += part + "\n\n"
    return header


def _signature(data: bytes, node: Node, used: set[str] | None) -> str:
    """`def name(...) ...` / `class Name(...)` with its methods' signatures, if `used` (None: any
    name) holds its name."""
    definition = symbols.definition_node(node)
    name = definition.child_by_field_name("name")
    if name is None or (used is not None and symbols.node_text(data, name) not in used):
        return ""
    body = definition.child_by_field_name("body")
    indent = " " * (definition.start_point.column + 4)
    lines = [symbols.header(definition, data)]
    if definition.type == "class_definition" and body is not None:
        for member in body.children:
            method = symbols.definition_node(member)
            if method.type == "function_definition":
                lines.append(indent + symbols.header(method, data) + " ...")
    if len(lines) == 1:
        lines[0] += " ..."
    return "\n".join(lines)
