"""Old text + new text -> the fewest, smallest text edits (difflib), and applying them back."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class TextEdit:
    start: int  # character offsets into the document
    end: int
    new_text: str


def minimal_edits(old: str, new: str, base: int = 0) -> tuple[TextEdit, ...]:
    """Edits that turn `old` into `new`, at document offset `base`: a line diff, each changed
    block then trimmed to the characters that really differ (so fixing a missing ':' replaces
    nothing but inserts one character)."""
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
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


def apply_edits(text: str, edits: tuple[TextEdit, ...] | list[TextEdit]) -> str:
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        text = text[: edit.start] + edit.new_text + text[edit.end :]
    return text
