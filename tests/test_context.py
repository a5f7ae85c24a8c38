"""The prompt layout that makes typing cheap (no model needed): while a line is typed, only the
part after `<|fim_middle|>` changes, even when the half-typed line breaks the syntax tree; the
rest moves only with the anchor, never back and forth. And the engine's plan for reusing a KV
cache whose prompt lost a stretch in the middle."""

from __future__ import annotations

from qwen_lsp.completion import layout as context
from qwen_lsp.completion.layout import ANCHOR_STEP_LINES, CHARS_PER_TOKEN, Mode
from qwen_lsp.engine.local import Shift, plan_reuse
from qwen_lsp.syntax.documents import Document

BUDGET_TOKENS = 1024

# A module longer than the window, then a function whose body is typed, and code after it.
HELPERS = "".join(
    f'def helper_{i}(values, scale={i}):\n    """Scale by {i}."""\n    return [v * scale for v in values]\n\n\n' for i in range(40)
)
MODULE = "import os\nimport re\n\n" + HELPERS + "def report(path, values):\n"
AFTER = "\n\n\ndef main():\n    report('out.txt', [1, 2, 3])\n"
BODY = [
    "    lines = []",
    "    for value in helper_3(values):",
    "        text = re.sub(r'\\s+', ' ', str(value))",
    "        if text.startswith(('-', '+')):",
    "            text = text[1:]",
    '        lines.append(f"{value}: {text}")',
    "    name = os.path.basename(path)",
    "    header = {'name': name, 'count': len(lines)}",
    "    with open(path, 'w') as f:",
    "        f.write(str(header) + '\\n')",
    "        f.write('\\n'.join(lines))",
    "    return len(lines)",
]


def stable(ctx: context.Context) -> tuple[str, str, str]:
    """What comes before `<|fim_middle|>` in the prompt."""
    return ctx.header, ctx.prefix, ctx.suffix


def test_typing_changes_only_the_middle_until_the_anchor_moves():
    doc = Document("file:///report.py", MODULE + AFTER, 1, "python")
    typed = MODULE
    seen: list[tuple[str, str, str]] = []
    changes_at: list[tuple[int, str]] = []
    for line in BODY:
        indent = line[: len(line) - len(line.lstrip())]
        for piece in ["\n" + indent if typed != MODULE else indent, *line[len(indent) :]]:
            doc.replace(len(typed), len(typed), piece)
            typed += piece
            ctx = context.build(doc, len(typed), BUDGET_TOKENS)
            if ctx.mode is Mode.NOTHING:
                continue  # inside a string literal: no prompt at all
            assert ctx.prefix + ctx.middle == typed[len(typed) - len(ctx.prefix + ctx.middle) :]
            if not seen or stable(ctx) != seen[-1]:
                assert stable(ctx) not in seen, f"the layout went back to an earlier one at {piece!r}"
                seen.append(stable(ctx))
                changes_at.append((typed.count("\n"), piece))
    lines_typed = len(BODY)
    # The first layout, then one per anchor step crossed while typing.
    assert len(seen) <= 1 + lines_typed // ANCHOR_STEP_LINES + 1, changes_at
    # Never right after Enter: a pause at a line's end must not pay for the suffix again.
    assert all(not piece.startswith("\n") for _, piece in changes_at[1:]), changes_at


def test_the_window_fits_the_budget_and_the_header_names_what_it_uses():
    before = MODULE + "    total = sum(values)\n    "
    doc = Document("file:///report.py", before + "\n    return helper_0([total]) + helper_39([total])" + AFTER, 1, "python")
    ctx = context.build(doc, len(before), BUDGET_TOKENS)
    assert ctx.mode is Mode.LINE
    assert len(ctx.header + ctx.prefix + ctx.suffix + ctx.middle) <= BUDGET_TOKENS * CHARS_PER_TOKEN
    assert not ctx.prefix.startswith("import"), "the module is longer than the window"
    assert "import os" in ctx.header and "import re" in ctx.header
    # Used after the cursor and defined far above the window: its signature is in the header.
    assert "def helper_0(values, scale=0): ..." in ctx.header
    # Defined inside the window: not repeated in the header.
    assert "def helper_39" in ctx.prefix and "def helper_39" not in ctx.header
    assert "def helper_1(" not in ctx.header, "not used anywhere"
    assert "helper_0([total])" in ctx.suffix and "def main" not in ctx.suffix


def test_reuse_plan_keeps_the_common_prefix():
    assert plan_reuse([1, 2, 3, 4], [1, 2, 3, 9, 9], min_chunk=2) == (3, [])
    assert plan_reuse([], [1, 2], min_chunk=2) == (0, [])


def test_reuse_plan_moves_what_follows_a_dropped_stretch():
    header, dropped, kept = [1, 2, 3], list(range(100, 140)), list(range(200, 280))
    cached = header + dropped + kept + [7, 7]
    prompt = header + kept + [8, 8, 8]
    served, shifts = plan_reuse(cached, prompt, min_chunk=64)
    assert shifts == [Shift(cache_start=len(header) + len(dropped), prompt_start=len(header), length=len(kept))]
    assert served == len(header) + len(kept)


def test_reuse_plan_keeps_what_follows_inserted_or_changed_text():
    header, kept, tail = [1, 2, 3], list(range(200, 280)), list(range(300, 380))
    # A line added below the cursor: the prompt gains tokens the cache never held.
    served, shifts = plan_reuse(header + kept + tail, header + [9, 9] + kept + tail + [5], min_chunk=64)
    assert shifts == [Shift(cache_start=len(header), prompt_start=len(header) + 2, length=len(kept) + len(tail))]
    assert served == len(header) + len(kept) + len(tail)
    # A stretch changed in two places: each run that follows is kept where it now belongs.
    cached = header + [7] * 5 + kept + [8] * 3 + tail
    prompt = header + [6] * 9 + kept + [4] + tail
    served, shifts = plan_reuse(cached, prompt, min_chunk=64)
    assert shifts == [Shift(8, 12, len(kept)), Shift(8 + len(kept) + 3, 12 + len(kept) + 1, len(tail))]
    assert served == len(header) + len(kept) + len(tail)
    # A short run behind much new text is read again: its cells never saw that text.
    assert plan_reuse(header + kept, header + list(range(500, 600)) + kept, min_chunk=64) == (len(header), [])


def test_reuse_plan_ignores_short_matches():
    cached = [1, 2] + list(range(100, 110)) + list(range(200, 230))
    prompt = [1, 2] + list(range(200, 230))
    assert plan_reuse(cached, prompt, min_chunk=64) == (2, [])
