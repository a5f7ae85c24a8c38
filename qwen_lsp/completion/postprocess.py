"""Stop rules and clean-up for model suggestions.

`end_of_suggestion` is asked while text streams in, so generation stops as soon as the line or
block is complete (every token costs ~30 ms). `clean` then makes the text safe to insert: no
repeat of the code after the cursor, no repeated lines, brackets balanced against the rest of the
line, no trailing whitespace, and never an empty suggestion.
"""

from __future__ import annotations

from qwen_lsp.completion.layout import Context, Mode
from qwen_lsp.syntax.indent import leading_whitespace, width

# A block suggestion stops after this many lines: longer ones are rarely accepted whole.
MAX_BLOCK_LINES = 8
_PAIRS = {")": "(", "]": "[", "}": "{"}


def end_of_suggestion(text: str, ctx: Context) -> int | None:
    """Where the suggestion in `text` (generated so far) ends, or None if it may go on."""
    if ctx.mode is Mode.LINE:
        start = _leading_blank_lines(text, ctx)
        newline = text.find("\n", start)
        return newline if newline >= 0 else None
    lines = text.split("\n")
    complete = lines[:-1]  # the last line may still grow
    end = 0
    for number, line in enumerate(complete):
        if number > 0 and line.strip() and width(line) < width(ctx.indent):
            return max(end - 1, 0)  # a dedent closes the block
        if number >= MAX_BLOCK_LINES or (number > 0 and _repeats(complete[:number], line)):
            return max(end - 1, 0)
        if number > 1 and not line.strip() and not complete[number - 1].strip():
            return max(end - 1, 0)
        end += len(line) + 1
    return None


def clean(text: str, ctx: Context) -> str | None:
    """The text to insert at the cursor, or None if nothing useful is left."""
    end = end_of_suggestion(text, ctx)
    if end is not None:
        text = text[:end]
    text = text[_leading_blank_lines(text, ctx) :]
    lines = [line.rstrip() for line in text.split("\n")]
    lines = _without_open_end(_drop_suffix_repeats(lines, ctx))
    text = "\n".join(lines).rstrip()
    text = _balance_against_line_suffix(text, ctx)
    if not text.strip() or (not ctx.line_prefix.strip() and text.strip() == ctx.line_suffix.strip()):
        return None
    return text


def repeats_what_follows(text: str, ctx: Context) -> str:
    """The suggestion's first line if it is the code after the cursor's line written again (a
    model that sees nothing missing at the cursor writes what comes next), else ""."""
    following = _next_code_line(ctx)
    first = text[_leading_blank_lines(text, ctx) :].split("\n", maxsplit=1)[0]
    if following.strip() and (ctx.line_prefix + first).strip() == following.strip():
        return first
    return ""


def missing_indent(text: str, ctx: Context) -> str | None:
    """The indentation to ask again with, when a suggestion on an empty line at column 0 cannot
    stand there: the code after it is indented, so a line at column 0 that opens no block would
    end the function in the middle of its body."""
    if ctx.line_prefix or ctx.line_suffix.strip() or not text.strip() or text[0] in " \t\n":
        return None
    following = _next_code_line(ctx)
    first = text.split("\n", maxsplit=1)[0].rstrip()
    if not following[:1].isspace() or first.endswith(":"):
        return None
    above = (ctx.prefix + ctx.middle).split("\n")
    previous = next((line for line in reversed(above[:-1]) if line.strip()), "")
    indent = leading_whitespace(previous)
    return indent + ("    " if previous.rstrip().endswith(":") else "") or None


def _next_code_line(ctx: Context) -> str:
    """The first line after the cursor's that is not blank ("" if none)."""
    return next((line for line in ctx.suffix.split("\n")[1:] if line.strip()), "")


def _leading_blank_lines(text: str, ctx: Context) -> int:
    """On a blank line, a model that first writes empty lines means the code that follows them."""
    if ctx.line_prefix.strip() or ctx.line_suffix.strip():
        return 0
    stripped = text.lstrip(" \t\n")
    if not stripped or "\n" not in text[: len(text) - len(stripped)]:
        return 0
    return text.rfind("\n", 0, len(text) - len(stripped)) + 1


def _without_open_end(lines: list[str]) -> list[str]:
    """A suggestion of several lines cut after a line that opens a block (`for x in y:`, the
    block line limit) would leave a block without a body: end before that line."""
    while len(lines) > 1 and (not lines[-1].strip() or lines[-1].rstrip().endswith(":")):
        lines = lines[:-1]
    return lines


def _repeats(previous: list[str], line: str) -> bool:
    return bool(line.strip()) and len(line.strip()) > 3 and line in previous


def _drop_suffix_repeats(lines: list[str], ctx: Context) -> list[str]:
    """Cut the suggestion where it starts repeating the code that follows the cursor's line."""
    following = _next_code_line(ctx).strip()
    if not following:
        return lines
    for number, line in enumerate(lines):
        whole = ctx.line_prefix + line if number == 0 else line
        if whole.strip() and whole.strip() == following:
            return lines[:number]
    return lines


def _balance_against_line_suffix(text: str, ctx: Context) -> str:
    """If the suggestion also writes closers that already follow the cursor, drop its copies."""
    rest = ctx.line_suffix.rstrip()
    if not rest or "\n" in text:
        return text
    if _balanced(ctx.line_prefix + text + rest):
        return text
    for k in range(min(len(rest), len(text)), 0, -1):
        if text.endswith(rest[:k]) and _balanced(ctx.line_prefix + text[:-k] + rest):
            return text[:-k]
    return text


def _balanced(line: str) -> bool:
    """Brackets on the line close in order (ignoring those inside simple string literals)."""
    stack: list[str] = []
    quote = ""
    for char in line:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in _PAIRS and (not stack or stack.pop() != _PAIRS[char]):
            return False
    return not stack
