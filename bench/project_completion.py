"""Completion on real project code: does the rest of the project help the model?

Tasks come from real, widely used pure-Python packages that nobody here wrote, installed at
benchmark time into a temporary folder (`pip install --no-deps --target`, pinned versions, never
committed). A task is one single-line statement inside a function that uses a name the file
imports from a sibling module; the workspace is the package's source, the file is opened with that
line emptied and the cursor at its indentation, and the answer's first line is compared with the
line that was there.

Three arms, one model, one process, the same tasks, in one run:
- `project`: the server's prompt (layout.build + completer.fim_prompt) behind the project's
  definitions in Qwen's repository format (qwen_lsp/completion/project_context.py). Until the
  server builds that prompt itself, this arm drives the engine directly with it, like
  bench/completion.py's `mirror` (same stop rule and post-processing); `ServerArm` is where an
  LSP client takes over once it is wired.
- `server`: the same without the project's context (the server's prompt as it is today, mirrored).
- `bare`: the bare model, a 60/20-line FIM window, cut at the first newline.
After each `project` request the same request is repeated: the KV cache then holds its prompt, as
at a warm place in the editor (the server warms it after each edit), which gives the warm latency.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import difflib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.completion import _bare_window, bare, local_engine, percentile
from qwen_lsp.completion import layout, postprocess
from qwen_lsp.completion.completer import fim_prompt
from qwen_lsp.completion.project_context import repo_name, repo_prompt, sections_for
from qwen_lsp.config import Settings
from qwen_lsp.engine.base import Engine, GenerationRequest
from qwen_lsp.engine.model_pack import resolve_model
from qwen_lsp.syntax.documents import Document
from qwen_lsp.syntax.project import Project

# Pure-Python packages with many sibling-module imports; pinned so tasks are the same every run.
PACKAGES = ("rich==13.9.4", "click==8.1.7")
PROJECT_CONTEXT_TOKENS = 512  # proposed default of the `projectContextTokens` setting
OUT = Path(__file__).parent / "results" / "project"
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class Task:
    root: Path  # the workspace folder: the package's source
    path: Path
    text: str  # the file with the line emptied to its indentation
    offset: int  # the cursor: end of that indentation
    truth: str  # the line that was there, stripped


# -- tasks -------------------------------------------------------------------------------------------
def install(target: Path) -> list[Path]:
    """The packages' source folders, installed into `target` (needs the network once)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), *PACKAGES], check=True
    )
    return [target / spec.split("==")[0] for spec in PACKAGES]


def sibling_names(tree: ast.Module, package: str) -> set[str]:
    """Names a module imports from its own package (relative, or absolute under its name)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] == package):
            names.update(alias.asname or alias.name for alias in node.names if alias.name != "*")
    return names


def candidate_lines(path: Path, package: str) -> list[tuple[int, str]]:
    """(line index, line) of one-line simple statements inside functions using a sibling name."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    imported = sibling_names(tree, package)
    lines = text.split("\n")
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = function.body[1:] if ast.get_docstring(function) else function.body
        for statement in body:
            simple = isinstance(statement, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return))
            if not simple or statement.lineno != statement.end_lineno:
                continue
            line = lines[statement.lineno - 1]
            if len(line.strip()) >= 8 and imported & set(_IDENTIFIER.findall(line)):
                found.append((statement.lineno - 1, line))
    return found


def build_tasks(roots: list[Path], count: int, seed: int = 0) -> list[Task]:
    """`count` tasks spread evenly over the packages, drawn with a fixed seed."""
    tasks = []
    for number, root in enumerate(roots):
        pool = [(path, index, line) for path in sorted(root.rglob("*.py")) for index, line in candidate_lines(path, root.name)]
        share = count // len(roots) + (number < count % len(roots))
        for path, index, line in sorted(random.Random(seed).sample(pool, min(share, len(pool))), key=lambda t: (str(t[0]), t[1])):
            lines = path.read_text(encoding="utf-8").split("\n")
            indent = line[: len(line) - len(line.lstrip())]
            before = "\n".join([*lines[:index], indent])
            text = before + "\n" + "\n".join(lines[index + 1 :])
            tasks.append(Task(root, path, text, len(before), line.strip()))
    return tasks


# -- arms --------------------------------------------------------------------------------------------
class ServerArm:
    """The server's completion at a task: its prompt and stop rule run on the engine directly.
    Once the server builds the project prompt, replace `complete` with an LSP request (open the
    workspace folder, didOpen the file, inlineCompletion at the cursor, as bench/completion.py)."""

    def __init__(self, engine: Engine, settings: Settings, project_tokens: int) -> None:
        self.engine, self.settings, self.project_tokens = engine, settings, project_tokens
        self.projects: dict[Path, Project] = {}  # one per workspace, kept across tasks like a session

    def open(self, task: Task) -> float:
        """What the server does when the file is opened (off the event loop): parse the modules
        it imports from, so every request in the file sees the same context. Its seconds."""
        started = time.perf_counter()
        if self.project_tokens > 0:
            self.projects.setdefault(task.root, Project([task.root])).warm(task.text, task.path)
        return time.perf_counter() - started

    async def complete(self, task: Task) -> tuple[str, float]:
        started = time.perf_counter()
        doc = Document(task.path.as_uri(), task.text, 1, "python")
        ctx = layout.build(doc, task.offset, self.settings.completion_context_tokens)
        if ctx.mode is layout.Mode.NOTHING:
            return "", time.perf_counter() - started
        prompt = fim_prompt(ctx)
        if self.project_tokens > 0:
            project = self.projects.setdefault(task.root, Project([task.root]))
            sections = sections_for(project, task.text, task.path, self.project_tokens)
            prompt = repo_prompt(repo_name(project, task.path), project.relative(task.path), sections, prompt)
        request = GenerationRequest(
            prompt=prompt,
            max_tokens=self.settings.completion_max_tokens,
            max_generation_time=self.settings.completion_max_ms / 1000 or None,
        )
        async with self.engine.generate(request) as generation:
            async for _ in generation:
                if postprocess.end_of_suggestion(generation.text, ctx) is not None:
                    break
        return postprocess.clean(generation.text, ctx) or "", time.perf_counter() - started


@dataclass
class ArmResult:
    answers: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def first_line(text: str) -> str:
    return next((line.strip() for line in text.split("\n") if line.strip()), "")


def score(result: ArmResult, tasks: list[Task]) -> dict[str, float]:
    firsts = [first_line(answer) for answer in result.answers]
    return {
        "exact": sum(f == t.truth for f, t in zip(firsts, tasks, strict=True)) / len(tasks),
        "similarity": sum(difflib.SequenceMatcher(None, f, t.truth).ratio() for f, t in zip(firsts, tasks, strict=True)) / len(tasks),
        "empty": sum(not f for f in firsts) / len(tasks),
        "p50_s": percentile(result.seconds, 0.5),
        "p95_s": percentile(result.seconds, 0.95),
    }


async def run(tasks: list[Task], engine: Engine, settings: Settings, project_tokens: int, max_seconds: float) -> dict[str, ArmResult]:
    """Every arm on each task in turn; no new task once `max_seconds` have passed (0: no limit),
    so a run on a busy machine still ends with figures (over the tasks done)."""
    results = {name: ArmResult() for name in ("project", "project_warm", "server", "bare", "open")}
    with_project, without = ServerArm(engine, settings, project_tokens), ServerArm(engine, settings, 0)
    started = time.perf_counter()
    for number, task in enumerate(tasks):
        if max_seconds and time.perf_counter() - started > max_seconds:
            print(f"  time is up after {number} tasks", flush=True)
            break
        results["open"].seconds.append(with_project.open(task))
        # The server without project context first: it meets the file cold, as the baseline in
        # issue 12 did; the project arm may then move (KV-shift) that window's tokens behind its
        # own sections instead of reading them again, as the server would after a restart.
        for name, arm in (("server", without), ("project", with_project), ("project_warm", with_project)):
            answer, seconds = await arm.complete(task)
            results[name].answers.append(answer)
            results[name].seconds.append(seconds)
        answer, seconds = await bare(engine, *_bare_window(task.text, task.offset), settings.completion_max_tokens)
        results["bare"].answers.append(answer)
        results["bare"].seconds.append(seconds)
        shown = {name: f"{first_line(r.answers[-1])[:40]!r} {r.seconds[-1]:.1f}s" for name, r in results.items() if r.answers}
        print(f"  {number + 1}/{len(tasks)} {task.path.relative_to(task.root.parent)}: truth {task.truth[:40]!r} {shown}", flush=True)
    return results


# -- report ------------------------------------------------------------------------------------------
LABELS = {
    "project": "server + project context (engine, mirrored prompt)",
    "server": "server without it (engine, mirrored prompt)",
    "bare": "bare model, 60/20-line window",
    "project_warm": "server + project context, warm KV (same place again)",
}


def write_report(figures: dict[str, dict[str, float]], tasks: list[Task], results: dict[str, ArmResult], command: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    arms = ["project", "server", "bare"]
    for offset, metric in enumerate(("exact", "similarity", "empty")):
        axes[0].bar([i + offset * 0.27 for i in range(len(arms))], [figures[a][metric] for a in arms], width=0.27, label=metric)
    axes[0].set_xticks([i + 0.27 for i in range(len(arms))], ["+ project", "server", "bare"])
    axes[0].set_title(f"{len(tasks)} lines of {', '.join(PACKAGES)}")
    axes[0].legend()
    for name in ("project", "project_warm", "server", "bare"):
        ordered = sorted(results[name].seconds)
        axes[1].plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=LABELS[name])
    axes[1].set_xlabel("latency (s)")
    axes[1].set_ylabel("fraction of requests")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "report.png", dpi=100)

    lines = [
        f"# Completion on real project code ({time.strftime('%Y-%m-%d %H:%M')})", "",
        f"Command: `{command}`. Packages: {', '.join(PACKAGES)} (installed at run time). Tasks: {len(tasks)}. "
        f"Project context: {PROJECT_CONTEXT_TOKENS} tokens.", "",
        f"Machine: {os.cpu_count()} cores, shared with other work (load average at the end "
        f"{os.getloadavg()[0]:.1f}): compare the arms, measured in the same run, rather than absolute times.", "",
        "The first two arms run the server's prompt on the engine in this process (the server does not build the "
        "project prompt yet); the bare model cuts at the first newline. One engine serves every arm, in the order "
        "server, + project, + project again, bare: an arm can reuse (by KV shift) runs of at least 64 tokens that the "
        "arm before it evaluated, so only the first arm of a task is fully cold.", "",
        "| | exact (first line) | similarity | answered with nothing | p50 | p95 |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("project", "server", "bare", "project_warm"):
        f = figures[name]
        lines.append(f"| {LABELS[name]} | {f['exact']:.3f} | {f['similarity']:.3f} | {f['empty']:.0%} | {f['p50_s']:.2f} s | {f['p95_s']:.2f} s |")
    opened = figures["open"]
    lines += [
        "", f"Parsing the modules a file imports when it is opened (`Project.warm`, off the event loop in the server, "
        f"not counted above): p50 {opened['p50_s'] * 1000:.0f} ms, max {opened['max_s'] * 1000:.0f} ms.",
        "", "![exact, similarity, empty; latency](report.png)", "",
    ]
    (OUT / "report.md").write_text("\n".join(lines), encoding="utf-8")
    (OUT / "report.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return OUT / "report.md"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench project-completion", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--project-tokens", type=int, default=PROJECT_CONTEXT_TOKENS)
    parser.add_argument("--max-minutes", type=float, default=0, help="start no task after this long (0: no limit)")
    args = parser.parse_args(argv)
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="qwen-project-bench-") as folder:
        tasks = build_tasks(install(Path(folder)), args.tasks)
        print(f"{len(tasks)} tasks", flush=True)
        engine = local_engine(resolve_model(None, "", None))
        try:
            results = asyncio.run(run(tasks, engine, settings, args.project_tokens, args.max_minutes * 60))
        finally:
            engine.close()
        tasks = tasks[: len(results["project"].answers)]
        figures: dict[str, Any] = {name: score(result, tasks) for name, result in results.items() if name != "open"}
        figures["open"] = {"p50_s": percentile(results["open"].seconds, 0.5), "max_s": max(results["open"].seconds, default=0.0)}
        report = write_report(figures, tasks, results, "python -m bench project-completion " + " ".join(argv))
    for name, f in figures.items():
        if name == "open":
            continue
        print(f"{LABELS[name]}: exact {f['exact']:.3f}, similarity {f['similarity']:.3f}, empty {f['empty']:.0%}, p50 {f['p50_s']:.2f} s")
    print(f"report: {report}")
    return 0
