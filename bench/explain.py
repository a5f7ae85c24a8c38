"""The explain benchmark: real functions from the standard library (code nobody here wrote),
explained through a real server (`python -m qwen_lsp serve` over LSP, the `qwen.explain` command
streaming `$/progress`), beside the bare model given a plain "explain this code" prompt.

For each function: time to the first text, to the first sentence past the heading, and the total;
and grounding checks, the same for both sides and written here apart from the server's own
filter: the function's name and each parameter named; no mention of a README, tests,
documentation or files the prompt did not show; no code-like name (in backticks, snake_case,
CamelCase, dotted) that appears nowhere in the prompt. Writes a Markdown report and a PNG plot.

    python -m bench explain [--functions N] [--only NAME,...] [--no-bare] [--out DIR]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import builtins
import importlib
import keyword
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient

from qwen_lsp import explain
from qwen_lsp.config import Settings
from qwen_lsp.engine.base import ChatMessage, Engine, GenerationRequest
from qwen_lsp.engine.local import LocalEngine, LocalSettings
from qwen_lsp.engine.model_pack import resolve_model
from qwen_lsp.syntax.documents import Document

# Standard library modules, and how many of their functions (in source order, 5 to 20 lines:
# what a person selects and right-clicks) to explain.
MODULES = (
    "textwrap",
    "shlex",
    "json.decoder",
    "csv",
    "fractions",
    "statistics",
    "fnmatch",
    "colorsys",
    "heapq",
    "base64",
    "calendar",
    "glob",
)
PER_MODULE = 2
MIN_LINES, MAX_LINES = 5, 20
PLAIN = "Explain this code:\n```python\n{code}\n```"
COMMON = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | {"self", "cls"}
UNSHOWN = re.compile(r"readme|documentation|\bdocs?\b|\btests?\b(?! (?:whether|if|that|for whether))|test suite|unit test", re.I)
FILE_NAME = re.compile(r"\b[\w/-]+\.(?:py|md|txt|json|toml|cfg|yaml|yml|rst|ini)\b")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CODE_WORD = re.compile(r"\b(?:[A-Za-z]\w*_\w+|_\w+|[a-z]+[A-Z]\w*|[A-Z]+[a-z]+[A-Z]\w*|\w+\.\w+)")


@dataclass(frozen=True)
class Function:
    module: str
    path: Path
    name: str  # qualified: Class.method
    parameters: tuple[str, ...]
    first_line: int  # 0-based, decorators included
    end_line: int  # 0-based, exclusive


@dataclass
class Run:
    first_text: float
    first_sentence: float
    total: float
    text: str
    failures: list[str] = field(default_factory=list)


# -- the functions ------------------------------------------------------------------------------
def functions_of(module: str) -> list[Function]:
    path = Path(importlib.import_module(module).__file__ or "")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node, owner in _definitions(tree):
        first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        end = node.end_lineno or node.lineno
        params = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
        params += [a.arg for a in (node.args.vararg, node.args.kwarg) if a is not None]
        if MIN_LINES <= end - first <= MAX_LINES and not node.name.startswith("__"):
            qualified = f"{owner}.{node.name}" if owner else node.name
            found.append(Function(module, path, qualified, tuple(p for p in params if p not in ("self", "cls")), first, end))
    return found


def _definitions(tree: ast.Module) -> list[tuple[ast.FunctionDef, str]]:
    """Module-level functions and the methods of module-level classes, in source order."""
    found: list[tuple[ast.FunctionDef, str]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found.append((node, ""))
        elif isinstance(node, ast.ClassDef):
            found += [(m, node.name) for m in node.body if isinstance(m, ast.FunctionDef)]
    return found


def pick_functions(count: int, only: tuple[str, ...] = ()) -> list[Function]:
    """The first `count` functions, or of them those whose qualified name (`module.Class.name`)
    ends with one of `only` (to compare a change on a few, on a shared machine)."""
    picked = [f for module in MODULES for f in functions_of(module)[:PER_MODULE]]
    if only:
        picked = [f for f in picked if any(f"{f.module}.{f.name}".endswith(name) for name in only)]
    return picked[:count]


# -- the checks ----------------------------------------------------------------------------------
def grounding_failures(text: str, prompt: str, function: Function) -> list[str]:
    """What is wrong with an explanation, against the prompt the model was given."""
    failures = []
    short_name = function.name.rsplit(".", 1)[-1]
    if short_name not in text:
        failures.append(f"name `{short_name}` missing")
    missing = [p for p in function.parameters if not re.search(rf"(?<![\w']){re.escape(p)}(?![\w])", text)]
    if missing:
        failures.append("parameters missing: " + ", ".join(missing))
    if (match := UNSHOWN.search(text)) and not UNSHOWN.search(prompt):
        failures.append(f"mentions {match.group()!r}")
    files = [f for f in FILE_NAME.findall(text) if f not in prompt]
    if files:
        failures.append("files not shown: " + ", ".join(files))
    words = set(WORD.findall(prompt)) | COMMON
    names = [w for span in CODE_SPAN.findall(text) for w in WORD.findall(span.replace("\\n", " ").replace("\\t", " "))]
    names += [w for token in CODE_WORD.findall(CODE_SPAN.sub(" ", text)) for w in WORD.findall(token)]
    unknown = sorted({n for n in names if n not in words})
    if unknown:
        failures.append("names not in the prompt: " + ", ".join(unknown[:5]))
    return failures


def first_sentence_done(text: str) -> bool:
    """Whether the text holds a sentence past any heading (what a reader can start reading)."""
    body = re.sub(r"\*\*[^*\n]{1,40}\*\*:?", "", text)
    return bool(re.search(r"\w.*?(?:[.!?。！？](?:\s|$)|\n)", body))


# -- our side: through the server ----------------------------------------------------------------
class Watcher:
    """The client's view of `$/progress`: when each token's first text and first sentence came."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.first_text: dict[str, float] = {}
        self.first_sentence: dict[str, float] = {}

    def __call__(self, params: lsp.ProgressParams) -> None:
        value, token, now = params.value, str(params.token), time.perf_counter()
        message = value.get("message") if isinstance(value, dict) else getattr(value, "message", None)
        percentage = value.get("percentage") if isinstance(value, dict) else getattr(value, "percentage", None)
        if not message or percentage is not None or token not in self.started:
            return
        self.first_text.setdefault(token, now - self.started[token])
        if first_sentence_done(message):
            self.first_sentence.setdefault(token, now - self.started[token])


async def start_server(model: Path, watcher: Watcher, language: str | None, threads: int) -> LanguageClient:
    client = LanguageClient("qwen-lsp-bench", "1")
    client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)(lambda params: None)
    client.feature(lsp.PROGRESS)(watcher)
    client.feature(lsp.WINDOW_WORK_DONE_PROGRESS_CREATE)(lambda params: None)  # the server's loading progress
    await client.start_io(sys.executable, "-m", "qwen_lsp", "serve", env={**os.environ, "QWEN_LSP_MODEL": str(model)})
    capabilities = lsp.ClientCapabilities(window=lsp.WindowClientCapabilities(work_done_progress=True))
    options = {"nThreads": threads}
    await client.initialize_async(
        lsp.InitializeParams(capabilities=capabilities, process_id=os.getpid(), locale=language, initialization_options=options)
    )
    client.initialized(lsp.InitializedParams())
    return client


async def ours(client: LanguageClient, watcher: Watcher, function: Function, number: int) -> tuple[float, str]:
    token = f"bench-explain-{number}"
    rng = {"start": {"line": function.first_line, "character": 0}, "end": {"line": function.end_line, "character": 0}}
    params = lsp.ExecuteCommandParams(
        command="qwen.explain", arguments=[{"textDocument": {"uri": function.path.as_uri()}, "range": rng}], work_done_token=token
    )
    watcher.started[token] = time.perf_counter()
    result = await client.workspace_execute_command_async(params)
    total = time.perf_counter() - watcher.started[token]
    text = result.get("text", "") if isinstance(result, dict) else getattr(result, "text", "")
    return total, text


def our_prompt(function: Function, text: str, language: str | None) -> tuple[str, int, int]:
    """What the server showed the model of the code (the same feature code, run here: its last
    message; not the instructions, nor the worked example, whose names are not the code's) and
    the function's character range."""
    doc = Document(function.path.as_uri(), text, 1, "python")
    start, end = doc.offset_at(function.first_line, 0), doc.offset_at(function.end_line, 0)
    return explain.ask(doc, start, end, language).shown, start, end


# -- the bare side: the model in this process, a plain prompt ---------------------------------------
async def bare(engine: Engine, code: str, max_tokens: int) -> Run:
    request = GenerationRequest(messages=(ChatMessage("user", PLAIN.format(code=code)),), max_tokens=max_tokens)
    started = time.perf_counter()
    first = sentence = None
    async with engine.generate(request) as generation:
        async for _ in generation:
            now = time.perf_counter() - started
            first = first or (now if generation.text.strip() else None)
            sentence = sentence or (now if first_sentence_done(generation.text) else None)
    total = time.perf_counter() - started
    return Run(first or total, sentence or total, total, generation.text.strip())


async def run(args: argparse.Namespace) -> Path:
    model = resolve_model(args.model, "", None)
    functions = pick_functions(args.functions, tuple(n for n in args.only.split(",") if n))
    settings = Settings()
    watcher = Watcher()
    client = await start_server(model, watcher, args.language, args.threads)
    rows: list[Row] = []
    engine = LocalEngine(LocalSettings(model_path=str(model), n_threads=args.threads or None), lambda progress: model)
    if args.bare:
        engine.start()
    try:
        for number, function in enumerate(functions):
            text = function.path.read_text(encoding="utf-8")
            client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(function.path.as_uri(), "python", 1, text)))
            prompt, start, end = our_prompt(function, text, args.language)
            total, answer = await ours(client, watcher, function, number)
            token = f"bench-explain-{number}"
            mine = Run(watcher.first_text.get(token, total), watcher.first_sentence.get(token, total), total, answer)
            mine.failures = grounding_failures(answer, prompt, function)
            theirs = await bare_run(engine, settings, text[start:end].strip("\n"), function, args) if args.bare else None
            rows.append((function, mine, theirs))
            print(f"{function.module}.{function.name}: ours {brief(mine)} | bare {brief(theirs)}", flush=True)
            if args.verbose:
                print(mine.text, flush=True)
    finally:
        engine.close()
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
    return report(Path(args.out), rows, args)


async def bare_run(engine: Engine, settings: Settings, code: str, function: Function, args: argparse.Namespace) -> Run:
    run = await bare(engine, code, explain.max_tokens(settings, code) if args.same_length else settings.explain_max_tokens)
    run.failures = grounding_failures(run.text, PLAIN.format(code=code), function)
    return run


def brief(run: Run | None) -> str:
    if run is None:
        return "not run"
    return (
        f"first {run.first_text:.2f}s sentence {run.first_sentence:.2f}s total {run.total:.1f}s "
        f"{'ok' if not run.failures else run.failures}"
    )


# -- the report ------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


Row = tuple[Function, Run, Run | None]  # the bare side is None when it was not run (--no-bare)


def sides(rows: list[Row]) -> list[tuple[str, list[Run]]]:
    """Each side that ran, labelled, with its runs."""
    found = [("qwen-lsp (server, `qwen.explain`)", [row[1] for row in rows])]
    bare_runs = [row[2] for row in rows if row[2] is not None]
    return found + ([("bare model, plain prompt", bare_runs)] if bare_runs else [])


def summary_rows(rows: list[Row]) -> list[str]:
    lines = ["| | first text p50 | first sentence p50 | total p50 | passes every check |", "| --- | --- | --- | --- | --- |"]
    for label, runs in sides(rows):
        passed = sum(not r.failures for r in runs)
        lines.append(
            f"| {label} | {median([r.first_text for r in runs]):.2f} s | {median([r.first_sentence for r in runs]):.2f} s | "
            f"{median([r.total for r in runs]):.1f} s | {passed}/{len(runs)} ({passed / len(runs):.0%}) |"
        )
    return lines


def cells(run: Run | None) -> str:
    if run is None:
        return "— | not run"
    return f"{run.first_text:.2f} / {run.total:.1f} | {'; '.join(run.failures) or 'ok'}"


def report(out: Path, rows: list[Row], args: argparse.Namespace) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Explain: grounded answers through the server, beside the bare model",
        "",
        f"{len(rows)} functions (5–20 lines) from the standard library modules {', '.join(MODULES)}, "
        "the first two of each in source order. Ours: `python -m qwen_lsp serve` over LSP, `qwen.explain` on the "
        "function's lines, times taken from `$/progress` as the client sees it. Bare: the same model in the bench "
        f"process, the prompt `{PLAIN.splitlines()[0]}` and the code, greedy. Language: {args.language or 'English'}. "
        f"Threads per model: {args.threads or 'one per core'}. Reproduce with `python -m bench explain`.",
        "",
        *summary_rows(rows),
        "",
        "First text is the first streamed text (for ours usually the `**Summary:**` heading); first sentence is the "
        "first complete sentence past it. Checks: the function's name and every parameter named; no README, tests, "
        "documentation or file the prompt did not hold; no code-like name absent from the prompt. The server drops "
        "sentences that fail the last two (its own filter, written apart from these checks).",
        "",
        "| function | ours first / total (s) | ours | bare first / total (s) | bare |",
        "| --- | --- | --- | --- | --- |",
    ]
    for function, mine, theirs in rows:
        lines.append(f"| `{function.module}.{function.name}` | {cells(mine)} | {cells(theirs)} |")
    lines += ["", "![explain](explain.png)", "", "## Answers (ours)", ""]
    for function, mine, _ in rows[:3]:
        lines += [f"### `{function.module}.{function.name}`", "", mine.text, ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    plot(out / "explain.png", rows)
    return out / "report.md"


def plot(path: Path, rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    ran = sides(rows)
    labels = ["qwen-lsp", "bare model"][: len(ran)]
    for (_, runs), label in zip(ran, labels, strict=True):
        times = sorted(run.first_text for run in runs)
        left.plot(range(1, len(times) + 1), times, marker="o", label=label)
    left.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    left.set_xlabel("functions, sorted")
    left.set_ylabel("time to first text (s)")
    left.set_title("Time to first text")
    left.legend()
    passed = [sum(not run.failures for run in runs) / len(runs) * 100 for _, runs in ran]
    right.bar(labels, passed, color=["C0", "C1"][: len(ran)])
    right.axhline(90, color="grey", linestyle="--", linewidth=1)
    right.set_ylim(0, 100)
    right.set_ylabel("% passing every grounding check")
    right.set_title(f"Grounding ({len(rows)} functions)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", type=int, default=len(MODULES) * PER_MODULE, help="how many functions to explain")
    parser.add_argument("--only", default="", help="comma-separated names: only the functions whose name ends so")
    parser.add_argument("--bare", action=argparse.BooleanOptionalAction, default=True, help="also run the bare model")
    parser.add_argument("--verbose", action="store_true", help="print each of our answers")
    parser.add_argument("--language", default=None, help="the client's locale, e.g. zh-cn (default: none, English)")
    parser.add_argument(
        "--same-length",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give the bare model the same token limit as ours (else explainMaxTokens)",
    )
    parser.add_argument("--threads", type=int, default=0, help="threads for each model (0: one per core)")
    parser.add_argument("--model", default=None, help="GGUF path (default: the bundled model)")
    parser.add_argument("--out", default="bench/results/explain", help="folder for the report and plot")
    path = asyncio.run(run(parser.parse_args(argv)))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
