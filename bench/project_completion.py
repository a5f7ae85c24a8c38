"""Completion on real project code: does the rest of the project help the model?

Tasks come from real, widely used pure-Python packages that nobody here wrote, installed at
benchmark time into a temporary folder (`pip install --no-deps --target`, pinned versions, never
committed). A task is one single-line statement inside a function that uses a name the file
imports from a sibling module; the workspace is the package's source, the file is opened with that
line emptied and the cursor at its indentation, and the answer's first line is compared with the
line that was there.

Three arms, the same tasks, in one run:
- `project`: the server through an LSP client (`qwen-lsp serve`, the packages' folders as
  workspace folders, `projectContextTokens` at its default): didOpen, inlineCompletion at the cursor, didClose.
- `server`: the same server with `projectContextTokens` 0 (a second process, its own KV cache).
- `bare`: the bare model on an engine in this process, a 60/20-line FIM window, cut at the first
  newline.
After each server request a blank line is added below the cursor's and the same place asked again:
the suggestion cache cannot answer it, the KV cache holds the prompt up to the cursor, as at a warm
place in the editor (the server warms it after each edit), which gives the warm latency.
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

from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient

from bench.completion import _bare_window, ask, bare, local_engine, percentile, stop_server, utf16_position
from qwen_lsp.config import Settings
from qwen_lsp.engine.model_pack import resolve_model
from qwen_lsp.syntax.project import Project

# Pure-Python packages with many sibling-module imports; pinned so tasks are the same every run.
PACKAGES = ("rich==13.9.4", "click==8.1.7")
PROJECT_CONTEXT_TOKENS = Settings().project_context_tokens  # the default of `projectContextTokens`
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
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), *PACKAGES], check=True)
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
    """The server at a task, through an LSP client as an editor drives it: started with the
    packages' folders as workspace folders and `projectContextTokens` set, the file opened (the
    server reads what it imports off the event loop), an inline completion at the cursor, and the
    file closed again."""

    def __init__(self, model: Path, project_tokens: int) -> None:
        self.model, self.project_tokens = model, project_tokens
        self.client: LanguageClient | None = None

    async def start(self, roots: list[Path]) -> None:
        client = LanguageClient("qwen-lsp-bench", "1")
        client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)(lambda params: None)  # not what is measured
        await client.start_io(sys.executable, "-m", "qwen_lsp", "serve", env={**os.environ, "QWEN_LSP_MODEL": str(self.model)})
        capabilities = lsp.ClientCapabilities(
            general=lsp.GeneralClientCapabilities(position_encodings=[lsp.PositionEncodingKind.Utf16]),
            text_document=lsp.TextDocumentClientCapabilities(inline_completion=lsp.InlineCompletionClientCapabilities()),
        )
        folders = [lsp.WorkspaceFolder(uri=root.as_uri(), name=root.name) for root in roots]
        await client.initialize_async(
            lsp.InitializeParams(
                capabilities=capabilities,
                process_id=os.getpid(),
                workspace_folders=folders,
                initialization_options={"projectContextTokens": self.project_tokens},
            )
        )
        client.initialized(lsp.InitializedParams())
        self.client = client

    async def stop(self) -> None:
        if self.client is not None:
            await stop_server(self.client)

    async def complete(self, task: Task) -> tuple[tuple[str, float], tuple[str, float]]:
        """(answer, seconds) cold at the task's place, then warm: the same place after a blank
        line is added below the cursor's, which the suggestion cache does not answer but the KV
        cache, holding the prompt up to the cursor, mostly does (only the code after the cursor
        is read again)."""
        assert self.client is not None
        uri = task.path.as_uri()
        self.client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, "python", 1, task.text)))
        await self._indexed()
        cold = await self._ask(uri, task)
        below = task.text.find("\n", task.offset)
        below = len(task.text) if below < 0 else below
        edited = task.text[:below] + "\n" + task.text[below:]
        self.client.text_document_did_change(
            lsp.DidChangeTextDocumentParams(
                lsp.VersionedTextDocumentIdentifier(uri=uri, version=2), [lsp.TextDocumentContentChangeWholeDocument(text=edited)]
            )
        )
        warm = await self._ask(uri, task)
        self.client.text_document_did_close(lsp.DidCloseTextDocumentParams(lsp.TextDocumentIdentifier(uri)))
        return cold, warm

    async def _indexed(self, attempts: int = 40) -> None:
        """Wait until the server has parsed what the opened file imports (`project.parses` in
        `qwen/status` no longer grows), as an editor's user takes a moment before typing: the
        first request would otherwise race the warm-up on a busy machine."""
        assert self.client is not None
        parses = -1
        for _ in range(attempts):
            status = await self.client.protocol.send_request_async("qwen/status", {})
            now = status.project.parses
            if now == parses:
                return
            parses = now
            await asyncio.sleep(0.1)

    async def _ask(self, uri: str, task: Task) -> tuple[str, float]:
        started = time.perf_counter()
        answer = await ask(self.client, uri, utf16_position(task.text[: task.offset]))  # type: ignore[arg-type]
        return answer, time.perf_counter() - started


def warm_seconds(projects: dict[Path, Project], task: Task) -> float:
    """What the server does when the file is opened, off its event loop: parse the modules it
    imports from (`Project.warm`, here in this process, to time it). Its seconds."""
    started = time.perf_counter()
    projects.setdefault(task.root, Project([task.root])).warm(task.text, task.path)
    return time.perf_counter() - started


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


async def run(tasks: list[Task], model: Path, settings: Settings, project_tokens: int, max_seconds: float) -> dict[str, ArmResult]:
    """Every arm on each task in turn; no new task once `max_seconds` have passed (0: no limit),
    so a run on a busy machine still ends with figures (over the tasks done)."""
    results = {name: ArmResult() for name in ("project", "project_warm", "server", "server_warm", "bare", "open")}
    with_project, without = ServerArm(model, project_tokens), ServerArm(model, 0)
    roots = sorted({task.root for task in tasks})
    await with_project.start(roots)
    await without.start(roots)
    engine = local_engine(model)
    projects: dict[Path, Project] = {}
    started = time.perf_counter()
    try:
        for number, task in enumerate(tasks):
            if max_seconds and time.perf_counter() - started > max_seconds:
                print(f"  time is up after {number} tasks", flush=True)
                break
            results["open"].seconds.append(warm_seconds(projects, task))
            for name, arm in (("server", without), ("project", with_project)):
                for arm_name, (answer, seconds) in zip((name, name + "_warm"), await arm.complete(task), strict=True):
                    results[arm_name].answers.append(answer)
                    results[arm_name].seconds.append(seconds)
            answer, seconds = await bare(engine, *_bare_window(task.text, task.offset), settings.completion_max_tokens)
            results["bare"].answers.append(answer)
            results["bare"].seconds.append(seconds)
            shown = {name: f"{first_line(r.answers[-1])[:40]!r} {r.seconds[-1]:.1f}s" for name, r in results.items() if r.answers}
            print(f"  {number + 1}/{len(tasks)} {task.path.relative_to(task.root.parent)}: truth {task.truth[:40]!r} {shown}", flush=True)
    finally:
        engine.close()
        await with_project.stop()
        await without.stop()
    return results


# -- report ------------------------------------------------------------------------------------------
LABELS = {
    "project": "server + project context (LSP)",
    "server": "server without it (LSP, projectContextTokens 0)",
    "bare": "bare model, 60/20-line window",
    "project_warm": "server + project context, warm KV (same place, a line added below)",
    "server_warm": "server without it, warm KV (same place, a line added below)",
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
    for name in ("project", "project_warm", "server", "server_warm", "bare"):
        ordered = sorted(results[name].seconds)
        axes[1].plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=LABELS[name])
    axes[1].set_xlabel("latency (s)")
    axes[1].set_ylabel("fraction of requests")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "report.png", dpi=100)

    lines = [
        f"# Completion on real project code ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"Command: `{command}`. Packages: {', '.join(PACKAGES)} (installed at run time). Tasks: {len(tasks)}. "
        f"Project context: {PROJECT_CONTEXT_TOKENS} tokens.",
        "",
        f"Machine: {os.cpu_count()} cores (load average at the end {os.getloadavg()[0]:.1f}, the benchmark's "
        "own processes included): compare the arms, measured in the same run, rather than absolute times.",
        "",
        "The server arms are two `qwen-lsp serve` processes driven through an LSP client (workspace folders: the "
        "packages' sources; `projectContextTokens` "
        f"{PROJECT_CONTEXT_TOKENS} and 0): didOpen, once the server has "
        "parsed the file's imports an inlineCompletion at the cursor, then again after a blank line is added below the "
        "cursor's (warm: the KV cache holds the prompt up to the cursor), didClose. "
        "Each server has its own model and KV cache, so each arm meets a file cold. The bare model runs on an engine "
        "in this process and cuts at the first newline.",
        "",
        "| | exact (first line) | similarity | answered with nothing | p50 | p95 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("project", "server", "bare", "project_warm", "server_warm"):
        f = figures[name]
        lines.append(
            f"| {LABELS[name]} | {f['exact']:.3f} | {f['similarity']:.3f} | {f['empty']:.0%} | {f['p50_s']:.2f} s | {f['p95_s']:.2f} s |"
        )
    opened = figures["open"]
    lines += [
        "",
        f"Parsing the modules a file imports when it is opened (`Project.warm`, timed in the benchmark's process; "
        f"the server does it off its event loop, not counted above): p50 {opened['p50_s'] * 1000:.0f} ms, max {opened['max_s'] * 1000:.0f} ms.",
        "",
        "![exact, similarity, empty; latency](report.png)",
        "",
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
        results = asyncio.run(run(tasks, resolve_model(None, "", None), settings, args.project_tokens, args.max_minutes * 60))
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
