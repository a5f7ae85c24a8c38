"""A line's leading whitespace and its width, with one tab width for the whole package.

TAB_WIDTH is 8 because CPython's tokenizer expands tabs to multiples of 8 (and checks the
result against tabs counted as 1 column: where the two orders disagree it raises TabError). For
indentation CPython accepts, every tab width from 1 to 8 orders lines the same way, so the
width only decides anything on indentation Python rejects, and there 8 agrees with Python.
"""

from __future__ import annotations

TAB_WIDTH = 8


def leading_whitespace(line: str) -> str:
    """The spaces and tabs a line starts with."""
    return line[: len(line) - len(line.lstrip(" \t"))]


def width(line: str) -> int:
    """Columns taken by a line's leading whitespace, tabs to the next multiple of TAB_WIDTH."""
    return len(leading_whitespace(line).expandtabs(TAB_WIDTH))
