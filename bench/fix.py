"""The fix benchmark: broken variants of four programs (bench/fix_cases.py BENCH_CASES, twelve
kinds of error: our own syntax diagnostics and pyright/mypy-style messages), each fixed by
qwen-lsp and by the obvious approach on the same engine in the same run, alternating case by case.

The obvious approach: the whole top-level block around the error, "fix this error, reply with the
code", the answer spliced back in place of the block. A fix succeeds when the fixed file runs and
prints exactly what the intact program prints. "Rest identical": every changed line lies in the
error's top-level block, or is an import line added among the file's imports. Writes
bench/results/fix/report.md and fix.png.

    python -m bench fix [--cases N] [--model GGUF] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.fix_cases import BENCH_CASES, FixCase, enclosing_block
from qwen_lsp import fix
from qwen_lsp.config import Settings
from qwen_lsp.edits import apply_edits
from qwen_lsp.engine import make_engine
from qwen_lsp.engine.base import ChatMessage, Engine, GenerationRequest
from qwen_lsp.engine.tokens import Prompt
from qwen_lsp.syntax.diagnostics import Problem, problems_in
from qwen_lsp.syntax.documents import Document

_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)
_IMPORT = re.compile(r"(import|from)\s+\w")
BASELINE_PROMPT = "Fix this error on line {line}: {message}\n```python\n{block}\n```\nFix this error, reply with the code."


@dataclass(frozen=True)
class Outcome:
    ok: bool  # the fixed file prints what the intact program prints
    rest_identical: bool
    seconds: float


@dataclass(frozen=True)
class Row:
    case: FixCase
    ours: Outcome
    baseline: Outcome


def run_program(text: str) -> str | None:
    try:
        result = subprocess.run([sys.executable, "-I", "-c", text], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None
    return result.stdout if result.returncode == 0 else None


def problem_of(doc: Document, case: FixCase) -> Problem:
    if case.diagnostic is None:
        return problems_in(doc.text, "python")[0]
    d = case.diagnostic
    return Problem(doc.offset_at(d.line, d.start), doc.offset_at(d.line, d.end), d.message)


def block_around(lines: list[str], line: int) -> tuple[int, int]:
    """`enclosing_block` without its trailing blank lines: what the baseline rewrites."""
    first, last = enclosing_block([text.rstrip("\r\n") for text in lines], line)
    while last > first and not lines[last].strip():
        last -= 1
    return first, last


def rest_identical(broken: str, fixed: str, line: int) -> bool:
    """Whether every changed line lies in the error's top-level block or adds an import among
    the file's imports (before its first definition)."""
    old, new = broken.splitlines(keepends=True), fixed.splitlines(keepends=True)
    first, last = enclosing_block([text.rstrip("\r\n") for text in old], line)
    header_end = next((i for i, text in enumerate(old) if text.startswith(("def ", "class ", "@"))), len(old))
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag == "equal" or (first <= i1 and i2 <= last + 1):
            continue
        added_imports = tag == "insert" and i1 <= header_end and all(_IMPORT.match(t) or not t.strip() for t in new[j1:j2])
        if not added_imports:
            return False
    return True


async def ours(engine: Engine, settings: Settings, case: FixCase, expected: str | None) -> Outcome:
    doc = Document("file:///bench/program.py", case.broken, 1, "python")
    problem = problem_of(doc, case)
    started = time.perf_counter()
    result = await fix.propose_fix(engine, settings, doc, problem)
    seconds = time.perf_counter() - started
    fixed = apply_edits(doc.text, result.edits)
    line = doc.position_at(problem.start)[0]
    return Outcome(bool(result.edits) and run_program(fixed) == expected, rest_identical(case.broken, fixed, line), seconds)


async def baseline(engine: Engine, settings: Settings, case: FixCase, expected: str | None) -> Outcome:
    doc = Document("file:///bench/program.py", case.broken, 1, "python")
    problem = problem_of(doc, case)
    line = doc.position_at(problem.start)[0]
    lines = case.broken.splitlines(keepends=True)
    first, last = block_around(lines, line)
    block = "".join(lines[first : last + 1]).rstrip("\n")
    prompt = BASELINE_PROMPT.format(line=line - first + 1, message=problem.message, block=block)
    request = GenerationRequest(messages=(ChatMessage("user", prompt),), max_tokens=1024)
    started = time.perf_counter()
    async with engine.generate(request) as generation:
        answer = await generation.complete()
    seconds = time.perf_counter() - started
    blocks = _FENCE.findall(answer)
    if not blocks:
        return Outcome(False, True, seconds)
    code = max(blocks, key=len).rstrip("\n") + "\n"
    fixed = "".join(lines[:first]) + code + "".join(lines[last + 1 :])
    return Outcome(run_program(fixed) == expected, rest_identical(case.broken, fixed, line), seconds)


async def bench(engine: Engine, settings: Settings, cases: tuple[FixCase, ...]) -> list[Row]:
    rows = []
    expected_by_program: dict[str, str | None] = {}
    for case in cases:
        expected = expected_by_program.setdefault(case.program, run_program(case.program))
        row = Row(case, await ours(engine, settings, case, expected), await baseline(engine, settings, case, expected))
        rows.append(row)
        print(
            f"{case.name:40} ours {_mark(row.ours)} {row.ours.seconds:5.1f}s | baseline {_mark(row.baseline)} {row.baseline.seconds:5.1f}s",
            flush=True,
        )
    return rows


def _mark(outcome: Outcome) -> str:
    return ("ok  " if outcome.ok else "FAIL") + ("" if outcome.rest_identical else " (rest changed)")


def summary_line(name: str, outcomes: list[Outcome]) -> str:
    seconds = [o.seconds for o in outcomes]
    fixed = sum(o.ok for o in outcomes)
    p90 = statistics.quantiles(seconds, n=10)[-1] if len(seconds) >= 2 else seconds[0]
    return (
        f"| {name} | {fixed}/{len(outcomes)} ({fixed / len(outcomes):.0%}) | {sum(o.rest_identical for o in outcomes)}/{len(outcomes)} "
        f"| {statistics.median(seconds):.2f} | {p90:.2f} |"
    )


def report(out: Path, rows: list[Row], model: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    by_kind: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_kind[row.case.kind].append(row)
    lines = [
        "# Fix: qwen-lsp beside the whole-block baseline",
        "",
        f"Model `{model}`, greedy, both approaches on one engine in one process, alternating case by case. "
        f"{len(rows)} cases, {len(by_kind)} kinds of error, in four programs. Reproduce with `python -m bench fix`.",
        "",
        "| | fixed (file runs, same output) | rest of the file identical | p50 latency (s) | p90 (s) |",
        "| --- | --- | --- | --- | --- |",
        summary_line("qwen-lsp", [r.ours for r in rows]),
        summary_line('whole block + "fix this error"', [r.baseline for r in rows]),
        "",
        "| kind | qwen-lsp | baseline |",
        "| --- | --- | --- |",
    ]
    for kind, group in by_kind.items():
        lines.append(f"| {kind} | {sum(r.ours.ok for r in group)}/{len(group)} | {sum(r.baseline.ok for r in group)}/{len(group)} |")
    lines += ["", "| case | qwen-lsp | s | baseline | s |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.case.name} | {_mark(r.ours)} | {r.ours.seconds:.1f} | {_mark(r.baseline)} | {r.baseline.seconds:.1f} |")
    lines += ["", "![fix](fix.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    plot(out / "fix.png", by_kind, rows)
    return path


def plot(path: Path, by_kind: dict[str, list[Row]], rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    kinds = list(by_kind)
    x = range(len(kinds))
    left.bar([i - 0.2 for i in x], [100 * sum(r.ours.ok for r in by_kind[k]) / len(by_kind[k]) for k in kinds], 0.4, label="qwen-lsp")
    left.bar(
        [i + 0.2 for i in x], [100 * sum(r.baseline.ok for r in by_kind[k]) / len(by_kind[k]) for k in kinds], 0.4, label="whole block"
    )
    left.set_xticks(list(x), kinds, rotation=35, ha="right")
    left.set_ylabel("% fixed (file runs, same output)")
    left.legend()
    right.boxplot([[r.ours.seconds for r in rows], [r.baseline.seconds for r in rows]], tick_labels=["qwen-lsp", "whole block"])
    right.set_ylabel("seconds per fix")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


async def run(args: argparse.Namespace) -> Path:
    settings = Settings()
    engine = make_engine(settings, args.model)
    engine.start()
    try:
        # Wait for the model to load, so that no figure includes the load.
        async with engine.generate(GenerationRequest(prompt=Prompt.template("\n"), max_tokens=0)) as warm_up:
            await warm_up.complete()
        rows = await bench(engine, settings, _spread(BENCH_CASES, args.cases))
        return report(Path(args.out), rows, Path(str(engine.describe().get("model"))).name)
    finally:
        engine.close()


def _spread(cases: tuple[FixCase, ...], count: int) -> tuple[FixCase, ...]:
    """`count` cases taken evenly across the list, so that a small run still covers the kinds."""
    if count >= len(cases):
        return cases
    step = len(cases) / count
    return tuple(cases[int(i * step)] for i in range(count))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fix", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", type=int, default=len(BENCH_CASES), help=f"how many cases (of {len(BENCH_CASES)}), spread over the kinds"
    )
    parser.add_argument("--model", default=None, help="GGUF path (default: the bundled model)")
    parser.add_argument("--out", default="bench/results/fix", help="folder for the report and plot")
    path = asyncio.run(run(parser.parse_args(argv)))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
