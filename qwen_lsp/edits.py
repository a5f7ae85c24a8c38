"""Old text + new text -> the fewest, smallest text edits (difflib), and applying them back.

Lines end where LSP says they do: at "\r\n", "\r" or "\n" only (`str.splitlines` also breaks at
form feeds, "\x1c".."\x1e", "\x85", "\u2028" and "\u2029", which editors count as characters).
"""

from __future__ import annotations

import bisect
import difflib
import os
import re
from dataclasses import dataclass

LINE_END = re.compile(r"\r\n|\r|\n")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


@dataclass(frozen=True)
class TextEdit:
    start: int  # character offsets into the document
    end: int
    new_text: str


def split_lines(text: str) -> list[str]:
    """The lines of `text` with their ends, split at LSP line ends only."""
    return _LINE.findall(text)


def to_lf(text: str) -> str:
    """`text` with every line end a "\n" (what the model reads and writes)."""
    return LINE_END.sub("\n", text) if "\r" in text else text


def minimal_edits(old: str, new: str, base: int = 0) -> tuple[TextEdit, ...]:
    """Edits that turn `old` into `new`, at document offset `base`: a line diff, each changed
    block then trimmed to the characters that really differ (so fixing a missing ':' replaces
    nothing but inserts one character)."""
    old_lines = split_lines(old)
    new_lines = split_lines(new)
    line_starts = [0]
    for line in old_lines:
        line_starts.append(line_starts[-1] + len(line))
    edits = []
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        before, after = "".join(old_lines[i1:i2]), "".join(new_lines[j1:j2])
        head = len(os.path.commonprefix([before, after]))
        tail = len(os.path.commonprefix([before[head:][::-1], after[head:][::-1]]))
        start = base + line_starts[i1] + head
        edits.append(TextEdit(start, base + line_starts[i2] - tail, after[head : len(after) - tail]))
    return tuple(edits)


def edits_keeping_line_ends(old: str, new_lf: str, base: int = 0) -> tuple[TextEdit, ...]:
    """Edits that turn `old` (whatever its line ends) into `new_lf` (written with "\n"), made on
    the text as the model saw it and mapped back: lines left alone keep their own ends, no edit
    starts or ends between a "\r" and its "\n", and new line ends are the ones `old` uses."""
    old_lf = to_lf(old)
    first_end = LINE_END.search(old)
    ending = first_end.group() if first_end else "\n"
    # Where each "\r\n" (one character in old_lf) sits in old_lf: each one before a position
    # moves it one character further in `old`.
    pairs = [m.start() - i for i, m in enumerate(re.finditer("\r\n", old))]

    def in_old(offset: int) -> int:
        return base + offset + bisect.bisect_left(pairs, offset)

    return tuple(TextEdit(in_old(e.start), in_old(e.end), e.new_text.replace("\n", ending)) for e in minimal_edits(old_lf, to_lf(new_lf)))


def apply_edits(text: str, edits: tuple[TextEdit, ...] | list[TextEdit]) -> str:
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        text = text[: edit.start] + edit.new_text + text[edit.end :]
    return text
