"""Explain and fix against the bare model, side by side in one run.

Explain: time to the first text and total time, our prompt (tree-sitter context) against a plain
"explain this code" chat prompt, interleaved so that neither reuses the other's KV cache.
Fix: success (the fixed file runs and prints what the intact program prints) and latency, our
fix (unit, context, hints, verification, one retry) against the bare model asked to fix the
whole file. Writes a Markdown report and a PNG plot under bench/results/.

    python -m bench explain-fix [--fix-cases N] [--explain-cases N] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.fix_cases import CASES, PROGRAM, FixCase, enclosing_block
from qwen_lsp import explain, fix
from qwen_lsp.config import Settings
from qwen_lsp.edits import apply_edits
from qwen_lsp.engine import make_engine
from qwen_lsp.engine.base import ChatMessage, Engine, GenerationRequest
from qwen_lsp.engine.tokens import Prompt
from qwen_lsp.syntax.diagnostics import Problem, problems_in
from qwen_lsp.syntax.documents import Document

EXPLAIN_TARGETS = ("calculate_total", "most_expensive", "summary", "parse_items", "boxes_needed")
_FENCE = re.compile(r"```[\w+-]*\n(.*?)(?:```|\Z)", re.S)


@dataclass
class Timing:
    first_text: float
    total: float


@dataclass
class FixOutcome:
    ok: bool
    seconds: float
    untouched_elsewhere: bool  # every changed line lies in the error's top-level block


def run_program(text: str) -> str | None:
    result = subprocess.run([sys.executable, "-c", text], capture_output=True, text=True, timeout=60)
    return result.stdout if result.returncode == 0 else None


async def timed_stream(engine: Engine, request: GenerationRequest) -> Timing:
    started = time.perf_counter()
    first = None
    async with engine.generate(request) as generation:
        async for _ in generation:
            first = first or time.perf_counter() - started
    total = time.perf_counter() - started
    return Timing(first or total, total)


def function_range(name: str) -> tuple[int, int]:
    start = PROGRAM.index(f"def {name}(")
    end = PROGRAM.find("\n\n\n", start)
    return start, end


async def bench_explain(engine: Engine, settings: Settings, count: int) -> tuple[list[Timing], list[Timing]]:
    doc = Document("file:///bench/inventory.py", PROGRAM, 1, "python")
    ours, bare = [], []
    for name in EXPLAIN_TARGETS[:count]:
        start, end = function_range(name)
        request, _ = explain.request(settings, doc, start, end)
        ours.append(await timed_stream(engine, request))
        plain = f"Explain this code:\n```python\n{PROGRAM[start:end]}\n```"
        bare_request = GenerationRequest(messages=(ChatMessage("user", plain),), max_tokens=settings.explain_max_tokens)
        bare.append(await timed_stream(engine, bare_request))
        print(
            f"explain {name}: ours first {ours[-1].first_text:.2f}s total {ours[-1].total:.2f}s | "
            f"bare first {bare[-1].first_text:.2f}s total {bare[-1].total:.2f}s",
            flush=True,
        )
    return ours, bare


def problem_of(doc: Document, case: FixCase) -> Problem:
    if case.diagnostic is None:
        return problems_in(doc.text, "python")[0]
    d = case.diagnostic
    return Problem(doc.offset_at(d.line, d.start), doc.offset_at(d.line, d.end), d.message)


def confined(broken: str, fixed: str, line: int) -> bool:
    """Whether the lines that differ all lie in the top-level block around `line`."""
    import difflib

    lines = broken.splitlines()
    first, last = enclosing_block(lines, line)
    matcher = difflib.SequenceMatcher(a=lines, b=fixed.splitlines(), autojunk=False)
    return all(first <= i1 and i2 <= last + 1 for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal")


async def bench_fix(engine: Engine, settings: Settings, cases: tuple[FixCase, ...]) -> list[tuple[FixCase, FixOutcome, FixOutcome]]:
    expected = run_program(PROGRAM)
    rows = []
    for case in cases:
        doc = Document("file:///bench/inventory.py", case.broken, 1, "python")
        problem = problem_of(doc, case)
        line = doc.position_at(problem.start)[0]
        started = time.perf_counter()
        result = await fix.propose_fix(engine, settings, doc, problem)
        seconds = time.perf_counter() - started
        fixed = apply_edits(doc.text, result.edits)
        ours = FixOutcome(bool(result.edits) and run_program(fixed) == expected, seconds, confined(case.broken, fixed, line))

        plain = f"Fix this error on line {line + 1}: {problem.message}\n```python\n{case.broken}```"
        request = GenerationRequest(messages=(ChatMessage("user", plain),), max_tokens=1024)
        started = time.perf_counter()
        async with engine.generate(request) as generation:
            answer = await generation.complete()
        seconds = time.perf_counter() - started
        blocks = _FENCE.findall(answer)
        candidate = max(blocks, key=len) if blocks else ""
        bare = FixOutcome(
            bool(candidate) and run_program(candidate) == expected, seconds, bool(candidate) and confined(case.broken, candidate, line)
        )
        rows.append((case, ours, bare))
        print(
            f"fix {case.name}: ours {'ok' if ours.ok else 'FAIL'} {ours.seconds:.1f}s | "
            f"bare {'ok' if bare.ok else 'FAIL'} {bare.seconds:.1f}s",
            flush=True,
        )
    return rows


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(
    out: Path, explained: tuple[list[Timing], list[Timing]], fixed: list[tuple[FixCase, FixOutcome, FixOutcome]], engine: Engine
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    ours_x, bare_x = explained
    ours_ok = [o for _, o, _ in fixed]
    bare_ok = [b for _, _, b in fixed]
    rate = lambda outcomes: sum(o.ok for o in outcomes) / len(outcomes) if outcomes else float("nan")  # noqa: E731
    lines = [
        "# Explain and fix: qwen-lsp against the bare model",
        "",
        f"Model: `{Path(str(engine.describe().get('model'))).name}`; both sides run in one process, one "
        "after the other for each task, on the same engine. Greedy decoding. Reproduce with "
        "`python -m bench explain-fix`.",
        "",
        "## Explain (seconds, median)",
        "",
        "| | first text | total |",
        "| --- | --- | --- |",
        f"| qwen-lsp (context prompt) | {median([t.first_text for t in ours_x]):.2f} | {median([t.total for t in ours_x]):.2f} |",
        f"| bare model (plain prompt) | {median([t.first_text for t in bare_x]):.2f} | {median([t.total for t in bare_x]):.2f} |",
        "",
        f"{len(ours_x)} functions. Our prompt is longer (imports, signatures, definitions used), so its first text "
        "comes later; the ratio says by how much.",
        "",
        "## Fix",
        "",
        "| | success | median latency (s) | rest of file untouched |",
        "| --- | --- | --- | --- |",
        f"| qwen-lsp | {sum(o.ok for o in ours_ok)}/{len(ours_ok)} ({rate(ours_ok):.0%}) | {median([o.seconds for o in ours_ok]):.1f} | {sum(o.untouched_elsewhere for o in ours_ok)}/{len(ours_ok)} |",
        f"| bare model | {sum(o.ok for o in bare_ok)}/{len(bare_ok)} ({rate(bare_ok):.0%}) | {median([o.seconds for o in bare_ok]):.1f} | {sum(o.untouched_elsewhere for o in bare_ok)}/{len(bare_ok)} |",
        "",
        "Success: the fixed file runs and prints exactly what the intact program prints. The bare model "
        "gets the whole file and the diagnostic and must answer with the whole file.",
        "",
        "| case | qwen-lsp | s | bare | s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case, ours, bare in fixed:
        lines.append(
            f"| {case.name} | {'ok' if ours.ok else 'no'} | {ours.seconds:.1f} | {'ok' if bare.ok else 'no'} | {bare.seconds:.1f} |"
        )
    if ours_x and bare_x:
        ratio = median([t.first_text for t in ours_x]) / median([t.first_text for t in bare_x])
        lines += ["", f"Explain time to first text, ours / bare: {ratio:.2f}."]
    if ours_ok and bare_ok:
        lines.append(f"Fix latency, ours / bare: {median([o.seconds for o in ours_ok]) / median([o.seconds for o in bare_ok]):.2f}.")
    lines += ["", "![explain and fix](explain_fix.png)", ""]
    (out / "explain_fix.md").write_text("\n".join(lines), encoding="utf-8")

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 4))
    labels = ["qwen-lsp", "bare model"]
    width = 0.35
    left.bar(
        [0 - width / 2, 1 - width / 2], [median([t.first_text for t in ours_x]), median([t.total for t in ours_x])], width, label=labels[0]
    )
    left.bar(
        [0 + width / 2, 1 + width / 2], [median([t.first_text for t in bare_x]), median([t.total for t in bare_x])], width, label=labels[1]
    )
    left.set_xticks([0, 1], ["first text", "total"])
    left.set_ylabel("seconds (median)")
    left.set_title("Explain")
    left.legend()
    middle.bar(labels, [rate(ours_ok) * 100, rate(bare_ok) * 100], color=["C0", "C1"])
    middle.set_ylabel("% of cases fixed (file runs, same output)")
    middle.set_ylim(0, 100)
    middle.set_title(f"Fix success ({len(fixed)} cases)")
    right.bar(labels, [median([o.seconds for o in ours_ok]), median([o.seconds for o in bare_ok])], color=["C0", "C1"])
    right.set_ylabel("seconds (median)")
    right.set_title("Fix latency")
    figure.tight_layout()
    figure.savefig(out / "explain_fix.png", dpi=100)
    return out / "explain_fix.md"


async def run(args: argparse.Namespace) -> Path:
    settings = Settings(explain_max_tokens=args.explain_tokens)
    engine = make_engine(settings, args.model)
    engine.start()
    try:
        # Wait for the model to load, so that no figure includes the load.
        async with engine.generate(GenerationRequest(prompt=Prompt.template("\n"), max_tokens=0)) as warm_up:
            await warm_up.complete()
        explained = await bench_explain(engine, settings, args.explain_cases)
        fixed = await bench_fix(engine, settings, CASES[: args.fix_cases])
        return report(Path(args.out), explained, fixed, engine)
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench explain-fix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fix-cases", type=int, default=len(CASES), help=f"how many fix cases (of {len(CASES)})")
    parser.add_argument("--explain-cases", type=int, default=len(EXPLAIN_TARGETS), help="how many functions to explain")
    parser.add_argument("--explain-tokens", type=int, default=200, help="most tokens per explanation")
    parser.add_argument("--model", default=None, help="GGUF path (default: the bundled model)")
    parser.add_argument("--out", default="bench/results", help="folder for the report and plot")
    path = asyncio.run(run(parser.parse_args(argv)))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
