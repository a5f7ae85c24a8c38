"""Open documents: text, version, and a tree-sitter tree kept current by edits.

Each incremental change is applied to the text and to the tree (`Tree.edit`), and the tree is
reparsed from the edited one, so a keystroke costs a small reparse rather than a full parse.
Positions arrive in the client's encoding (utf-16 by default, utf-8 or utf-32 if negotiated).
"""

from __future__ import annotations

import bisect
import importlib
import logging
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import PurePosixPath

from tree_sitter import Language, Parser, Point, Tree

log = logging.getLogger(__name__)

_LINE_END = re.compile(r"\r\n|\r|\n")

# Files above this size are kept as text only: parsing megabytes on every keystroke would stall.
MAX_PARSE_BYTES = 2_000_000

_EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".ts": "typescript",
    ".tsx": "tsx", ".rs": "rust", ".go": "go", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".hpp": "cpp", ".java": "java", ".rb": "ruby", ".lua": "lua", ".sh": "bash", ".json": "json",
}


def language_id_for(uri: str, language_id: str | None = None) -> str:
    if language_id:
        return language_id
    return _EXTENSIONS.get(PurePosixPath(uri).suffix.lower(), "plaintext")


@cache
def tree_sitter_language(language_id: str) -> Language | None:
    """The grammar for a language if its `tree_sitter_<name>` package is installed."""
    module_name = "tree_sitter_" + language_id.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    factory = getattr(module, "language", None) or getattr(module, f"language_{language_id}", None)
    if factory is None:
        return None
    try:
        return Language(factory())
    except Exception:  # noqa: BLE001 - an incompatible grammar means plain text, not a crash
        log.warning("tree-sitter grammar %s could not be loaded", module_name, exc_info=True)
        return None


class PositionEncoding:
    UTF8 = "utf-8"
    UTF16 = "utf-16"
    UTF32 = "utf-32"


def _units(text: str, encoding: str) -> int:
    """Length of `text` in the client's code units."""
    if encoding == PositionEncoding.UTF32:
        return len(text)
    if encoding == PositionEncoding.UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _column_to_index(line: str, column: int, encoding: str) -> int:
    """Index into `line` of a column given in code units, clamped to the line. A column inside a
    character (half a surrogate pair, part of a UTF-8 sequence) means that character's start.
    Works on the encoded line, so a megabyte-long line costs one encode, not a Python loop."""
    column = max(0, column)
    if encoding == PositionEncoding.UTF32 or line.isascii():
        return min(column, len(line))
    if encoding == PositionEncoding.UTF8:
        data = line.encode("utf-8", "surrogatepass")[:column]
        lead = len(data) - 1
        while lead > 0 and data[lead] & 0xC0 == 0x80:  # continuation bytes: 0b10xxxxxx
            lead -= 1
        if lead >= 0 and lead + _utf8_length(data[lead]) > len(data):
            data = data[:lead]
        return len(data.decode("utf-8", "surrogatepass"))
    whole = line.encode("utf-16-le", "surrogatepass")
    data = whole[: 2 * column]
    following = whole[len(data) + 1 : len(data) + 2]  # high byte of the next unit (little-endian)
    if len(data) >= 2 and 0xD8 <= data[-1] <= 0xDB and following and 0xDC <= following[0] <= 0xDF:
        data = data[:-2]  # the high half of a pair whose low half lies past the column
    return len(data.decode("utf-16-le", "surrogatepass"))


def _utf8_length(lead: int) -> int:
    return 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


@dataclass
class Document:
    uri: str
    text: str
    version: int
    language_id: str
    encoding: str = PositionEncoding.UTF16
    tree: Tree | None = None
    _parser: Parser | None = field(default=None, repr=False)
    _line_starts: list[int] = field(default_factory=list, repr=False)
    _tree_before: tuple[int, Tree] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._index_lines()
        language = tree_sitter_language(self.language_id)
        if language is not None:
            self._parser = Parser(language)
            self._reparse(None)

    # -- positions ------------------------------------------------------------------------------
    def _index_lines(self) -> None:
        if "\r" in self.text:  # LSP counts "\r\n", "\n" and a lone "\r" as line ends
            self._line_starts = [0, *(m.end() for m in _LINE_END.finditer(self.text))]
            return
        starts = [0]
        find = self.text.find
        i = find("\n")
        while i >= 0:
            starts.append(i + 1)
            i = find("\n", i + 1)
        self._line_starts = starts

    @property
    def line_count(self) -> int:
        return len(self._line_starts)

    def line(self, number: int) -> str:
        """Line `number` without its line end."""
        start = self._line_starts[number]
        end = self._line_starts[number + 1] if number + 1 < len(self._line_starts) else len(self.text)
        return self.text[start:end].rstrip("\r\n")

    def offset_at(self, line: int, column: int) -> int:
        """Character offset of a client position, clamped into the document (the spec says a
        column past the line's end means the end of the line)."""
        if line < 0:
            return 0
        if line >= len(self._line_starts):
            return len(self.text)
        return self._line_starts[line] + _column_to_index(self.line(line), max(column, 0), self.encoding)

    def position_at(self, offset: int) -> tuple[int, int]:
        """Client position (line, column in code units) of a character offset."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self._line_starts, offset) - 1
        start = self._line_starts[line]
        return line, _units(self.text[start:offset], self.encoding)

    def byte_offset(self, offset: int) -> int:
        return len(self.text[:offset].encode("utf-8", "surrogatepass"))

    def _point(self, offset: int) -> Point:
        # tree-sitter counts rows at "\n" only, whatever the client's line ends.
        row = self.text.count("\n", 0, offset)
        start = self.text.rfind("\n", 0, offset) + 1
        return Point(row, len(self.text[start:offset].encode("utf-8", "surrogatepass")))

    def tree_before(self, offset: int) -> Tree | None:
        """A tree of `text[:offset]` alone, kept until an edit lands before `offset`. Unlike
        `tree` it holds still while the code after `offset` is half-typed: one unclosed bracket
        there turns the whole file's tree into a single ERROR node."""
        if self.tree is None or self._parser is None:
            return None
        if self._tree_before is None or self._tree_before[0] != offset:
            self._tree_before = (offset, self._parser.parse(self.text[:offset].encode("utf-8", "surrogatepass")))
        return self._tree_before[1]

    # -- edits ----------------------------------------------------------------------------------
    def replace(self, start: int, end: int, new_text: str) -> None:
        """Replace text[start:end] (character offsets, clamped into the text) and keep the tree
        current."""
        start, end = sorted((max(0, min(start, len(self.text))), max(0, min(end, len(self.text)))))
        if self.tree is not None:
            start_byte = self.byte_offset(start)
            old_end_byte = start_byte + len(self.text[start:end].encode("utf-8", "surrogatepass"))
            start_point, old_end_point = self._point(start), self._point(end)
        self.text = self.text[:start] + new_text + self.text[end:]
        self._index_lines()
        if self._tree_before is not None and start < self._tree_before[0]:
            self._tree_before = None
        if self.tree is not None:
            new_end = start + len(new_text)
            self.tree.edit(
                start_byte=start_byte,
                old_end_byte=old_end_byte,
                new_end_byte=start_byte + len(new_text.encode("utf-8", "surrogatepass")),
                start_point=start_point,
                old_end_point=old_end_point,
                new_end_point=self._point(new_end),
            )
        if self._parser is not None:  # also parses afresh a file that shrank below the limit
            self._reparse(self.tree)

    def replace_all(self, text: str) -> None:
        self.text = text
        self._tree_before = None
        self._index_lines()
        if self._parser is not None:
            self._reparse(None)

    def _reparse(self, old: Tree | None) -> None:
        assert self._parser is not None
        data = self.text.encode("utf-8", "surrogatepass")
        if len(data) > MAX_PARSE_BYTES:
            self.tree = None
            return
        self.tree = self._parser.parse(data, old) if old is not None else self._parser.parse(data)


class Documents:
    """The open documents of one session."""

    def __init__(self) -> None:
        self._docs: dict[str, Document] = {}
        self.encoding = PositionEncoding.UTF16

    def open(self, uri: str, text: str, version: int, language_id: str | None = None) -> Document:
        doc = Document(uri, text, version, language_id_for(uri, language_id), self.encoding)
        self._docs[uri] = doc
        return doc

    def get(self, uri: str) -> Document | None:
        return self._docs.get(uri)

    def close(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def __len__(self) -> int:
        return len(self._docs)
