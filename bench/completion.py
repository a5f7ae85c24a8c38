"""The completion benchmark: typing replay, HumanEval single-line infilling, server overhead.

Everything goes through a real server process (`python -m qwen_lsp serve`) spoken to over LSP,
and every figure has its baseline measured in the same run, in this process, with the same model:
- typing replay: real stdlib functions typed at 10 characters/s, an inlineCompletion request on
  every keystroke (not cancelled by the client, like Neovim), and at each line end (after Enter
  and the editor's auto-indent) a pause that waits for the suggestion. Baseline: the bare
  approach (a 60/20-line FIM window, cut at the newline) at a sample of the same pauses.
- HumanEval single-line infilling (every 6th task): the document is the task's prompt, an empty
  line, and its suffix; the server is asked at the empty line. Baseline: the bare model with a
  plain FIM prompt, greedy, cut at the first newline.
- overhead: for every HumanEval task the server's own prompt (built by the same feature code) is
  also run on an engine in this process, with the same stop rule; the ratio of the two times.
- the moves (issue 16), each on a server with the new caches (and our plugins' cursorRested
  notifications) and on one with them turned off (`promptCacheMb: 0`, no rests): cold places in
  freshly opened stdlib files (a line's code removed, asked at its indentation; latency, empty
  answers, first line exact and similar), the same places after the cursor rested, a typing
  replay with several files open that returns to the first, and cut-off suggestions at its pauses.
  `--moves-only` runs just these (the default sizes take ~12 minutes on a quiet 2-core machine).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import difflib
import gzip
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient

from qwen_lsp.completion import layout as context
from qwen_lsp.completion import postprocess
from qwen_lsp.completion.completer import fim_prompt
from qwen_lsp.config import Settings
from qwen_lsp.engine.base import Engine, GenerationRequest
from qwen_lsp.engine.local import LocalEngine, LocalSettings
from qwen_lsp.engine.model_pack import resolve_model
from qwen_lsp.engine.tokens import Prompt
from qwen_lsp.syntax.documents import Document

DATA = Path(os.environ.get("QWEN_LSP_HUMANEVAL", "/work/shared/data/human-eval-infilling"))
TASK_FILE = "HumanEval-SingleLineInfilling.jsonl.gz"
# Real code to type: (module, function). Comments and docstrings are left out of the typing.
REPLAY = [("textwrap", "indent"), ("shlex", "quote"), ("fnmatch", "filter"), ("shlex", "join"), ("textwrap", "dedent")]
CHARS_PER_SECOND = 10
BARE_EVERY = 5  # the bare baseline runs at every 5th pause (each one costs seconds)


# -- clients ------------------------------------------------------------------------------------
async def start_server(model: Path, options: dict[str, object] | None = None) -> LanguageClient:
    client = LanguageClient("qwen-lsp-bench", "1")
    client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)(lambda params: None)  # not what is measured
    env = {**os.environ, "QWEN_LSP_MODEL": str(model)}
    await client.start_io(sys.executable, "-m", "qwen_lsp", "serve", env=env)
    capabilities = lsp.ClientCapabilities(
        general=lsp.GeneralClientCapabilities(position_encodings=[lsp.PositionEncodingKind.Utf16]),
        text_document=lsp.TextDocumentClientCapabilities(inline_completion=lsp.InlineCompletionClientCapabilities()),
    )
    await client.initialize_async(
        lsp.InitializeParams(capabilities=capabilities, process_id=os.getpid(), initialization_options=options or {})
    )
    client.initialized(lsp.InitializedParams())
    return client


async def stop_server(client: LanguageClient) -> None:
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


def utf16_position(text: str) -> lsp.Position:
    """Position of the end of `text` (LSP's default units)."""
    lines = text.split("\n")
    return lsp.Position(len(lines) - 1, len(lines[-1].encode("utf-16-le")) // 2)


async def ask(client: LanguageClient, uri: str, position: lsp.Position) -> str:
    result = await client.text_document_inline_completion_async(
        lsp.InlineCompletionParams(
            text_document=lsp.TextDocumentIdentifier(uri),
            position=position,
            context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Automatic),
        )
    )
    return result.items[0].insert_text if result and result.items else ""


def local_engine(model: Path) -> Engine:
    engine = LocalEngine(LocalSettings(model_path=str(model), n_threads=None), lambda progress: model)
    engine.start()
    return engine


async def bare(engine: Engine, prefix: str, suffix: str, max_tokens: int) -> tuple[str, float]:
    """The bare model: plain FIM prompt, greedy, cut at the first newline."""
    started = time.perf_counter()
    request = GenerationRequest(
        prompt=Prompt.template(f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"), max_tokens=max_tokens, stop=("\n",)
    )
    async with engine.generate(request) as generation:
        text = await generation.complete()
    return text, time.perf_counter() - started


async def mirror(engine: Engine, settings: Settings, text: str, offset: int) -> tuple[str | None, float]:
    """The server's prompt and stop rule, run on an engine directly (no LSP, no process)."""
    started = time.perf_counter()
    doc = Document("file:///mirror.py", text, 1, "python")
    ctx = context.build(doc, offset, settings.completion_context_tokens)
    request = GenerationRequest(prompt=fim_prompt(ctx), max_tokens=settings.completion_max_tokens)
    async with engine.generate(request) as generation:
        async for _ in generation:
            if postprocess.end_of_suggestion(generation.text, ctx) is not None:
                break
    return postprocess.clean(generation.text, ctx), time.perf_counter() - started


async def warm(engine: Engine, settings: Settings, text: str, offset: int) -> None:
    """Leave the engine's KV cache as a request at this place would."""
    ctx = context.build(Document("file:///mirror.py", text, 1, "python"), offset, settings.completion_context_tokens)
    async with engine.generate(GenerationRequest(prompt=fim_prompt(ctx), max_tokens=0)) as generation:
        await generation.complete()


# -- HumanEval --------------------------------------------------------------------------------------
def humaneval_tasks(count: int) -> list[dict[str, Any]]:
    with gzip.open(DATA / TASK_FILE, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return rows[::6][:150][:count]


def passes(task: dict[str, Any], middle: str) -> bool:
    program = task["prompt"] + middle + "\n" + task["suffix"] + "\n" + task["test"] + f"\ncheck({task['entry_point']})\n"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(program)
    try:
        return subprocess.run([sys.executable, f.name], capture_output=True, timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        os.unlink(f.name)


@dataclass
class HumanEvalResult:
    bare_pass: list[bool] = field(default_factory=list)
    server_pass: list[bool] = field(default_factory=list)
    bare_seconds: list[float] = field(default_factory=list)
    server_seconds: list[float] = field(default_factory=list)
    overhead_pairs: list[tuple[float, float]] = field(default_factory=list)  # (server, engine alone)
    same_text: int = 0


async def run_humaneval(
    client: LanguageClient, bare_engine: Engine, mirror_engine: Engine, settings: Settings, count: int, overhead_every: int
) -> HumanEvalResult:
    result = HumanEvalResult()
    previous: tuple[str, int] | None = None
    for number, task in enumerate(humaneval_tasks(count)):
        text = task["prompt"] + "\n" + task["suffix"]
        offset = len(task["prompt"])
        middle, seconds = await bare(bare_engine, task["prompt"], "\n" + task["suffix"], settings.completion_max_tokens)
        result.bare_pass.append(passes(task, middle))
        result.bare_seconds.append(seconds)

        measure_overhead = number % overhead_every == 0
        if measure_overhead:
            if previous is not None:  # the KV cache the server's engine holds now
                await warm(mirror_engine, settings, *previous)
            expected, seconds = await mirror(mirror_engine, settings, text, offset)
        previous = (text, offset)

        uri = f"file:///bench/humaneval_{number}.py"
        client.text_document_did_open(
            lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=text))
        )
        started = time.perf_counter()
        suggestion = await ask(client, uri, utf16_position(task["prompt"]))
        result.server_seconds.append(time.perf_counter() - started)
        client.text_document_did_close(lsp.DidCloseTextDocumentParams(lsp.TextDocumentIdentifier(uri)))
        result.server_pass.append(passes(task, suggestion))
        alone = ""
        if measure_overhead:
            result.overhead_pairs.append((result.server_seconds[-1], seconds))
            result.same_text += suggestion == (expected or "")
            alone = f" (engine alone {seconds:.2f}s)"
        print(
            f"  task {number + 1}/{count}: bare {'pass' if result.bare_pass[-1] else 'fail'} "
            f"{result.bare_seconds[-1]:.2f}s, server {'pass' if result.server_pass[-1] else 'fail'} "
            f"{result.server_seconds[-1]:.2f}s{alone}; pass@1 so far server "
            f"{sum(result.server_pass) / len(result.server_pass):.3f}, bare {sum(result.bare_pass) / len(result.bare_pass):.3f}",
            flush=True,
        )
    return result


# -- typing replay ------------------------------------------------------------------------------------
def replay_sources(replay: list[tuple[str, str]] = REPLAY) -> list[tuple[str, str, list[str]]]:
    """(module text without the function's body, the text before the body, body lines to type)."""
    sources = []
    for module_name, function in replay:
        path = Path(importlib.import_module(module_name).__file__ or "")
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
        lines = text.split("\n")
        body = node.body[1:] if ast.get_docstring(node) else node.body
        first, last = body[0].lineno - 1, node.end_lineno or body[-1].lineno
        typed = [line for line in lines[first:last] if line.strip() and not line.strip().startswith("#")]
        before = "\n".join(lines[: node.body[0].lineno - 1])  # up to the signature (and docstring)
        if ast.get_docstring(node):
            before = "\n".join(lines[:first])
        after = "\n" + "\n".join(lines[last:])
        sources.append((f"{module_name}.{function}", before.rstrip("\n"), [*typed, after]))
    return sources


@dataclass
class ReplayResult:
    pause_seconds: list[float] = field(default_factory=list)
    first_pauses: list[int] = field(default_factory=list)  # indexes of each file's first (cold) pause
    pause_exact: int = 0  # suggestions equal to the line the user then typed
    keystroke_seconds: list[float] = field(default_factory=list)
    keystroke_nonempty: int = 0
    keystroke_suggested_in_time: int = 0  # answered with a suggestion before the next keystroke
    bare_seconds: list[float] = field(default_factory=list)
    bare_exact: int = 0
    bare_pauses: int = 0


async def run_replay(client: LanguageClient, bare_engine: Engine, settings: Settings, max_lines: int) -> ReplayResult:
    result = ReplayResult()
    interval = 1 / CHARS_PER_SECOND
    lines_done = 0
    for name, before, rest in replay_sources():
        *body, after = rest
        uri = f"file:///bench/replay_{name}.py"
        text, version = before, 1
        client.text_document_did_open(
            lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="python", version=version, text=text + after))
        )
        pending: list[asyncio.Task[None]] = []

        def insert(piece: str) -> None:
            nonlocal text, version
            at = utf16_position(text)
            version += 1
            text += piece
            client.text_document_did_change(
                lsp.DidChangeTextDocumentParams(
                    lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    [lsp.TextDocumentContentChangePartial(range=lsp.Range(at, at), text=piece)],
                )
            )

        async def keystroke() -> None:
            started = time.perf_counter()
            suggestion = await ask(client, uri, utf16_position(text))
            seconds = time.perf_counter() - started
            result.keystroke_seconds.append(seconds)
            result.keystroke_nonempty += bool(suggestion)
            result.keystroke_suggested_in_time += bool(suggestion) and seconds <= interval

        for number, line in enumerate(body):
            if lines_done >= max_lines:
                break
            indent = line[: len(line) - len(line.lstrip())]
            insert("\n" + indent)  # Enter, and the editor's auto-indent
            if number == 0:
                result.first_pauses.append(len(result.pause_seconds))
            started = time.perf_counter()
            suggestion = await ask(client, uri, utf16_position(text))
            result.pause_seconds.append(time.perf_counter() - started)
            result.pause_exact += suggestion.strip() == line.strip()
            if len(result.pause_seconds) % BARE_EVERY == 1:
                window = _bare_window(text + after, len(text))
                middle, seconds = await bare(bare_engine, *window, settings.completion_max_tokens)
                result.bare_seconds.append(seconds)
                result.bare_exact += middle.strip() == line.strip()
                result.bare_pauses += 1
            print(f"    pause {len(result.pause_seconds)}: {result.pause_seconds[-1]:.2f}s", flush=True)
            for char in line[len(indent) :]:
                insert(char)
                pending.append(asyncio.ensure_future(keystroke()))
                await asyncio.sleep(interval)
            lines_done += 1
        await asyncio.gather(*pending)
        client.text_document_did_close(lsp.DidCloseTextDocumentParams(lsp.TextDocumentIdentifier(uri)))
        print(f"  typed {name}: {lines_done} lines so far", flush=True)
    return result


def _bare_window(text: str, offset: int) -> tuple[str, str]:
    """The first version's window: 60 lines before the cursor, 20 after."""
    line = text.count("\n", 0, offset)
    lines = text.split("\n")
    start = sum(len(x) + 1 for x in lines[: max(0, line - 60)])
    end = sum(len(x) + 1 for x in lines[: min(len(lines), line + 21)])
    return text[start:offset], text[offset:end]


# -- report -------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def figures(replay: ReplayResult | None, he: HumanEvalResult | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if replay is not None:
        before_next = sum(s <= 1 / CHARS_PER_SECOND for s in replay.keystroke_seconds)
        warm = [s for i, s in enumerate(replay.pause_seconds) if i not in replay.first_pauses]
        out["replay"] = {
            "pauses": len(replay.pause_seconds),
            "pause_p50_s": percentile(replay.pause_seconds, 0.5),
            "pause_p95_s": percentile(replay.pause_seconds, 0.95),
            "first_pause_in_a_file_p50_s": percentile([replay.pause_seconds[i] for i in replay.first_pauses], 0.5),
            "later_pauses_p50_s": percentile(warm, 0.5),
            "later_pauses_p95_s": percentile(warm, 0.95),
            "pause_exact_next_line": replay.pause_exact / max(1, len(replay.pause_seconds)),
            "keystrokes": len(replay.keystroke_seconds),
            "keystrokes_answered_before_next": before_next / max(1, len(replay.keystroke_seconds)),
            "keystrokes_suggested_before_next": replay.keystroke_suggested_in_time / max(1, len(replay.keystroke_seconds)),
            "keystrokes_with_suggestion": replay.keystroke_nonempty / max(1, len(replay.keystroke_seconds)),
            "bare_pauses": replay.bare_pauses,
            "bare_p50_s": percentile(replay.bare_seconds, 0.5),
            "bare_p95_s": percentile(replay.bare_seconds, 0.95),
            "bare_exact_next_line": replay.bare_exact / max(1, replay.bare_pauses),
        }
    if he is not None:
        ratios = [server / alone for server, alone in he.overhead_pairs if alone > 0]
        out["humaneval"] = {
            "tasks": len(he.server_pass),
            "server_pass_at_1": sum(he.server_pass) / max(1, len(he.server_pass)),
            "bare_pass_at_1": sum(he.bare_pass) / max(1, len(he.bare_pass)),
            "server_p50_s": percentile(he.server_seconds, 0.5),
            "bare_p50_s": percentile(he.bare_seconds, 0.5),
            "overhead_tasks": len(he.overhead_pairs),
            "server_on_those_p50_s": percentile([server for server, _ in he.overhead_pairs], 0.5),
            "engine_alone_p50_s": percentile([alone for _, alone in he.overhead_pairs], 0.5),
            "server_over_engine_median_ratio": statistics.median(ratios) if ratios else float("nan"),
            "server_same_text_as_engine_alone": he.same_text / max(1, len(he.overhead_pairs)),
        }
    return out


def write_report(out_dir: Path, command: str, result: dict[str, Any], replay: ReplayResult | None, he: HumanEvalResult | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    plot = out_dir / f"completion-{stamp}.png"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    if replay is not None:
        series = [
            ("server, pause at line end", replay.pause_seconds),
            ("bare 60/20 window, same pauses", replay.bare_seconds),
            ("server, every keystroke", replay.keystroke_seconds),
        ]
        for label, values in series:
            if values:
                ordered = sorted(values)
                axes[0].plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
        axes[0].axvline(0.6, color="grey", linestyle=":", label="target p50 0.6 s")
        axes[0].set_xscale("log")
        axes[0].set_xlabel("latency (s, log)")
        axes[0].set_ylabel("fraction of requests")
        axes[0].set_title(f"Typing replay at {CHARS_PER_SECOND} chars/s")
        axes[0].legend(fontsize=8)
    if he is not None:
        alone = [a for _, a in he.overhead_pairs]
        for label, values in [("server (LSP)", he.server_seconds), ("engine alone, same prompt", alone), ("bare FIM", he.bare_seconds)]:
            ordered = sorted(values)
            axes[1].plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
        h = result["humaneval"]
        axes[1].set_title(f"HumanEval single-line: pass@1 server {h['server_pass_at_1']:.3f} vs bare {h['bare_pass_at_1']:.3f}")
        axes[1].set_xlabel("latency (s)")
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot, dpi=100)

    lines = [f"# Completion benchmark ({time.strftime('%Y-%m-%d %H:%M')})", "", f"Command: `{command}`", ""]
    lines += [f"Machine: {os.cpu_count()} cores; load average at the end {os.getloadavg()[0]:.1f} (shared machine: compare ratios).", ""]
    if "replay" in result:
        r = result["replay"]
        lines += [
            "## Typing replay",
            "",
            "| figure | server | bare (60/20 window, same pauses) | target |",
            "| --- | --- | --- | --- |",
            f"| pause latency p50 | {r['pause_p50_s']:.2f} s | {r['bare_p50_s']:.2f} s | ≤ 0.6 s |",
            f"| pause latency p95 | {r['pause_p95_s']:.2f} s | {r['bare_p95_s']:.2f} s | ≤ 1.5 s |",
            f"| suggestion = the line then typed | {r['pause_exact_next_line']:.2f} | {r['bare_exact_next_line']:.2f} | |",
            f"| first pause after opening a file (cold prompt), p50 | {r['first_pause_in_a_file_p50_s']:.2f} s | | |",
            f"| later pauses p50 / p95 | {r['later_pauses_p50_s']:.2f} s / {r['later_pauses_p95_s']:.2f} s | | |",
            f"| keystroke requests answered before the next keystroke | {r['keystrokes_answered_before_next']:.2f} | | ≥ 0.5 |",
            f"| keystroke requests answered with a suggestion before the next keystroke | {r['keystrokes_suggested_before_next']:.2f} | | |",
            f"| keystroke answers carrying a suggestion | {r['keystrokes_with_suggestion']:.2f} | | |",
            "",
            f"{r['pauses']} pauses ({len(replay.first_pauses) if replay else 0} of them the first in a freshly opened file; "
            f"{r['bare_pauses']} also measured bare), {r['keystrokes']} keystroke requests.",
            "",
        ]
    if "humaneval" in result:
        h = result["humaneval"]
        lines += [
            "## HumanEval single-line infilling",
            "",
            "| figure | server (LSP inlineCompletion) | bare model (plain FIM, cut at newline) | target |",
            "| --- | --- | --- | --- |",
            f"| pass@1 ({h['tasks']} tasks) | {h['server_pass_at_1']:.3f} | {h['bare_pass_at_1']:.3f} | ≥ 0.60 |",
            f"| latency p50 | {h['server_p50_s']:.2f} s | {h['bare_p50_s']:.2f} s | |",
            "",
            "## Server overhead",
            "",
            f"On {h['overhead_tasks']} of the tasks the server's own prompt also ran on an engine in the benchmark "
            f"process: p50 {h['engine_alone_p50_s']:.2f} s against the server's {h['server_on_those_p50_s']:.2f} s; "
            f"server over engine, median per-task ratio **{h['server_over_engine_median_ratio']:.3f}** (target ≤ 1.05); "
            f"identical text in {h['server_same_text_as_engine_alone']:.0%} of tasks.",
            "",
        ]
    lines += [f"![latency]({plot.name})", "", "```json", json.dumps(result, indent=2), "```", ""]
    report = out_dir / f"completion-{stamp}.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


# -- the moves (issue 16): cold places in real files, several files open, cut-off suggestions -----
# Real files nobody here wrote; the cold positions cycle through them.
COLD_MODULES = (
    "argparse",
    "difflib",
    "csv",
    "calendar",
    "configparser",
    "pprint",
    "tokenize",
    "gettext",
    "string",
    "glob",
    "posixpath",
    "heapq",
    "ftplib",
    "json.decoder",
    "dataclasses",
    "shlex",
)
# The multi-file replay: (module, function) typed in turn; the first is returned to at the end.
MOVES_REPLAY = [("textwrap", "dedent"), ("shlex", "quote"), ("fnmatch", "filter")]
REST_SECONDS = 2.0  # the cursor rests this long before the user types (rested cold positions)
SWITCH_SECONDS = 1.0  # between moving into another file and typing there
CURSOR_RESTED = "qwen/cursorRested"
# The configurations compared: the new caches, and the same server with them turned off.
# "off" also answers cold places from the full window (no completionColdPromptMs fallback).
CONFIGS = {"new": ({}, True), "off": ({"promptCacheMb": 0, "completionColdPromptMs": 0}, False)}  # (initializationOptions, send rests)


@dataclass(frozen=True)
class ColdPlace:
    name: str  # module:line
    text: str  # the module with the line's code removed (its indentation kept)
    offset: int  # the end of that indentation
    real: str  # the line removed


def cold_places(count: int, salt: int = 0) -> list[ColdPlace]:
    """`count` statement lines inside functions, spread through COLD_MODULES, each in its own copy
    of its module with that line's code removed (another `salt`: other lines)."""
    candidates: dict[str, list[int]] = {}
    texts: dict[str, str] = {}
    for module_name in COLD_MODULES:
        text = Path(importlib.import_module(module_name).__file__ or "").read_text(encoding="utf-8")
        texts[module_name] = text
        lines = text.split("\n")
        rows = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                rows |= {s.lineno - 1 for s in body if s.lineno == s.end_lineno and len(lines[s.lineno - 1].strip()) >= 8}
        candidates[module_name] = sorted(rows)
    places = []
    for k in range(count):
        module_name = COLD_MODULES[k % len(COLD_MODULES)]
        rows = candidates[module_name]
        row = rows[(k // len(COLD_MODULES) * 7 + 3 + salt * 13) * len(rows) // 29 % len(rows)]  # spread, deterministic
        lines = texts[module_name].split("\n")
        indent = lines[row][: len(lines[row]) - len(lines[row].lstrip())]
        text = "\n".join([*lines[:row], indent, *lines[row + 1 :]])
        offset = sum(len(line) + 1 for line in lines[:row]) + len(indent)
        places.append(ColdPlace(f"{module_name}:{row + 1}", text, offset, lines[row].strip()))
    return places


def first_line(suggestion: str) -> str:
    return suggestion.strip("\n").split("\n")[0].strip()


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def cut_off(suggestion: str, real: str, stop_reason: str | None) -> bool:
    """A suggestion that stops where the model was interrupted: a strict prefix of the real line
    ending mid-token ("Deprec"), or one from a cancelled or timed-out generation ending mid-line."""
    shown = first_line(suggestion)
    if not shown or shown == real or not real.startswith(shown):
        return False
    mid_token = (shown[-1].isalnum() or shown[-1] == "_") and (real[len(shown)].isalnum() or real[len(shown)] == "_")
    return mid_token or (stop_reason in ("cancelled", "time") and "\n" not in suggestion.strip("\n"))


@dataclass
class MovesResult:
    cold_seconds: list[float] = field(default_factory=list)
    cold_empty: int = 0
    cold_exact: int = 0
    cold_similarity: list[float] = field(default_factory=list)
    rested_seconds: list[float] = field(default_factory=list)  # cold places after the cursor rested
    pause_seconds: list[float] = field(default_factory=list)
    pause_similarity: list[float] = field(default_factory=list)
    return_pause_seconds: list[float] = field(default_factory=list)
    cut_off: list[str] = field(default_factory=list)
    rss_mb: float = float("nan")  # the server's, at the end
    prompt_cache_mb: float = float("nan")  # of which kept prompt states


def notify_rest(client: LanguageClient, uri: str, position: lsp.Position) -> None:
    client.protocol.notify(
        CURSOR_RESTED, {"textDocument": {"uri": uri}, "position": {"line": position.line, "character": position.character}}
    )


async def last_stop_reason(client: LanguageClient) -> str | None:
    status = await client.protocol.send_request_async("qwen/status", {})
    recent = getattr(status, "recent", None) or []
    return getattr(recent[-1], "stop_reason", None) if recent else None


async def run_cold(client: LanguageClient, config: str, places: list[ColdPlace], rests: bool, result: MovesResult) -> None:
    """Open each place's file and ask at once (the cold figure); with rests, every third place is
    followed by another place of its module (one never asked, so no cached answer serves it),
    asked after the cursor rested there for REST_SECONDS."""
    rest_places = cold_places(len(places), salt=1)
    for number, cold_place in enumerate(places):
        asked = [(False, f"file:///bench/cold_{config}_{number}.py", cold_place)]
        if rests and number % 3 == 0:
            asked.append((True, f"file:///bench/rested_{config}_{number}.py", rest_places[number]))
        for rested, uri, place in asked:
            client.text_document_did_open(
                lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=place.text))
            )
            position = utf16_position(place.text[: place.offset])
            if rested:
                notify_rest(client, uri, position)
                await asyncio.sleep(REST_SECONDS)
            started = time.perf_counter()
            suggestion = await ask(client, uri, position)
            seconds = time.perf_counter() - started
            client.text_document_did_close(lsp.DidCloseTextDocumentParams(lsp.TextDocumentIdentifier(uri)))
            if rested:
                result.rested_seconds.append(seconds)
                continue
            result.cold_seconds.append(seconds)
            result.cold_empty += not first_line(suggestion)
            result.cold_exact += first_line(suggestion) == place.real
            result.cold_similarity.append(similarity(first_line(suggestion), place.real))
            print(
                f"    [{config}] cold {number + 1}/{len(places)} {place.name}: {seconds:.2f}s {first_line(suggestion)[:40]!r}", flush=True
            )


class TypedFile:
    """A file kept open in the server, typed into line by line like run_replay does."""

    def __init__(self, client: LanguageClient, uri: str, before: str, body: list[str], after: str) -> None:
        self.client, self.uri, self.text, self.after, self.body = client, uri, before, after, body
        self.version, self.next_line = 1, 0
        client.text_document_did_open(
            lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=before + after))
        )

    def insert(self, piece: str) -> None:
        at = utf16_position(self.text)
        self.version += 1
        self.text += piece
        self.client.text_document_did_change(
            lsp.DidChangeTextDocumentParams(
                lsp.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
                [lsp.TextDocumentContentChangePartial(range=lsp.Range(at, at), text=piece)],
            )
        )

    async def type_lines(self, count: int, result: MovesResult, returning: bool) -> None:
        """Type `count` more lines: Enter and auto-indent, a pause that waits for the suggestion,
        then the line's characters at CHARS_PER_SECOND (with a request per keystroke)."""
        pending = []
        for line in self.body[self.next_line : self.next_line + count]:
            indent = line[: len(line) - len(line.lstrip())]
            self.insert("\n" + indent)
            started = time.perf_counter()
            suggestion = await ask(self.client, self.uri, utf16_position(self.text))
            result.pause_seconds.append(time.perf_counter() - started)
            if returning and line is self.body[self.next_line]:
                result.return_pause_seconds.append(result.pause_seconds[-1])
            result.pause_similarity.append(similarity(first_line(suggestion), line.strip()))
            if cut_off(suggestion, line.strip(), await last_stop_reason(self.client)):
                result.cut_off.append(first_line(suggestion))
            for char in line[len(indent) :]:
                self.insert(char)
                pending.append(asyncio.ensure_future(ask(self.client, self.uri, utf16_position(self.text))))
                await asyncio.sleep(1 / CHARS_PER_SECOND)
        self.next_line += count
        await asyncio.gather(*pending)


async def run_files(client: LanguageClient, config: str, lines_per_file: int, rests: bool, result: MovesResult) -> None:
    """Several files open; type in each in turn, then go back to the first (edited a while ago,
    two other files since) and type on."""
    sources = {name: (before, rest) for name, before, rest in replay_sources(MOVES_REPLAY)}
    files = []
    for name, (before, rest) in sources.items():
        *body, after = rest
        files.append(TypedFile(client, f"file:///bench/moves_{config}_{name}.py", before, body, after))
    for visit, typed in enumerate([*files, files[0]]):
        if rests:  # the user clicked into the file: our plugins say where the cursor rests
            notify_rest(client, typed.uri, utf16_position(typed.text))
        await asyncio.sleep(SWITCH_SECONDS)
        await typed.type_lines(lines_per_file, result, returning=visit == len(files))
        print(f"    [{config}] typed {typed.uri.rsplit('/', 1)[-1]}: {len(result.pause_seconds)} pauses so far", flush=True)
    for typed in files:
        client.text_document_did_close(lsp.DidCloseTextDocumentParams(lsp.TextDocumentIdentifier(typed.uri)))


async def run_moves(model: Path, positions: int, lines_per_file: int) -> dict[str, MovesResult]:
    results = {}
    places = cold_places(positions)
    for config, (options, rests) in CONFIGS.items():
        print(f"moves, {config} ({options or 'default settings'}{', cursor rests sent' if rests else ''})", flush=True)
        client = await start_server(model, options)
        result = results[config] = MovesResult()
        try:
            await run_cold(client, config, places, rests, result)
            await run_files(client, config, lines_per_file, rests, result)
            status = await client.protocol.send_request_async("qwen/status", {})
            result.rss_mb = status.memory.rss_mb  # after dozens of places: the prompt cache is full
            result.prompt_cache_mb = status.prompt_cache.mb
        finally:
            await stop_server(client)
    return results


def moves_figures(results: dict[str, MovesResult]) -> dict[str, Any]:
    out = {}
    for config, r in results.items():
        out[config] = {
            "cold_positions": len(r.cold_seconds),
            "cold_p50_s": percentile(r.cold_seconds, 0.5),
            "cold_p95_s": percentile(r.cold_seconds, 0.95),
            "cold_empty": r.cold_empty / max(1, len(r.cold_seconds)),
            "cold_exact_first_line": r.cold_exact / max(1, len(r.cold_seconds)),
            "cold_similarity": statistics.mean(r.cold_similarity) if r.cold_similarity else float("nan"),
            "rested_positions": len(r.rested_seconds),
            "rested_p50_s": percentile(r.rested_seconds, 0.5),
            "pauses": len(r.pause_seconds),
            "pause_p50_s": percentile(r.pause_seconds, 0.5),
            "pause_p95_s": percentile(r.pause_seconds, 0.95),
            "pause_similarity": statistics.mean(r.pause_similarity) if r.pause_similarity else float("nan"),
            "return_first_pause_s": r.return_pause_seconds[0] if r.return_pause_seconds else float("nan"),
            "cut_off_suggestions": len(r.cut_off),
            "rss_mb": r.rss_mb,
            "prompt_cache_mb": r.prompt_cache_mb,
            "cut_off_examples": r.cut_off[:5],
        }
    return out


MOVES_TABLE = [  # (figure, key(s), format, target)
    ("cold place in a freshly opened real file, p50 / p95", ("cold_p50_s", "cold_p95_s"), "{:.2f} s", "p50 ≤ 1.5 s, p95 ≤ 2.5 s"),
    ("... answered with nothing", ("cold_empty",), "{:.0%}", "≤ 5%"),
    ("... first line exact / similarity", ("cold_exact_first_line", "cold_similarity"), "{:.3f}", "≥ 0.27 / ≥ 0.55"),
    (
        f"... another place of the file after the cursor rested there {REST_SECONDS:.0f} s (cursorRested), p50",
        ("rested_p50_s",),
        "{:.2f} s",
        "",
    ),
    ("typing replay, several files open: pause p50 / p95", ("pause_p50_s", "pause_p95_s"), "{:.2f} s", "≤ 0.3 s / ≤ 1.0 s"),
    ("... similarity of the pause suggestion to the line then typed", ("pause_similarity",), "{:.2f}", "≥ 0.40"),
    ("back to a file edited earlier (two other files edited since), first pause", ("return_first_pause_s",), "{:.2f} s", "≤ 0.5 s"),
    ("pauses whose suggestion was a cut-off start of the right line", ("cut_off_suggestions",), "{}", "0"),
    ("server RSS at the end / of it kept prompt states (MB)", ("rss_mb", "prompt_cache_mb"), "{:.0f}", "RSS ≤ 800"),
]


def moves_table(figures_: dict[str, Any]) -> list[str]:
    lines = ["| figure | new caches | all off (promptCacheMb 0, no prefill, no cold fallback) | target |", "| --- | --- | --- | --- |"]
    for label, keys, fmt, target in MOVES_TABLE:
        cells = [" / ".join(fmt.format(figures_[config][key]) for key in keys) for config in CONFIGS]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {target} |")
    return lines


def write_moves_report(out_dir: Path, command: str, figures_: dict[str, Any], results: dict[str, MovesResult]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    plot = out_dir / f"moves-{stamp}.png"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for config, r in results.items():
        for ax, values, what in [
            (axes[0], r.cold_seconds, "cold places"),
            (axes[0], r.rested_seconds, "rested places"),
            (axes[1], r.pause_seconds, "pauses"),
        ]:
            if values:
                ordered = sorted(values)
                ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=f"{what}, {config}")
    for ax, title, target in [(axes[0], "Cold places in stdlib files", 1.5), (axes[1], "Typing replay, several files open", 0.3)]:
        ax.axvline(target, color="grey", linestyle=":", label=f"target p50 {target} s")
        ax.set_title(title)
        ax.set_xlabel("latency (s)")
        ax.set_ylabel("fraction of requests")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot, dpi=100)
    lines = [f"# Completion while moving ({time.strftime('%Y-%m-%d %H:%M')})", "", f"Command: `{command}`", ""]
    lines += [f"Machine: {os.cpu_count()} cores; load average at the end {os.getloadavg()[0]:.1f}.", ""]
    lines += [*moves_table(figures_), "", f"![latency]({plot.name})", "", "```json", json.dumps(figures_, indent=2), "```", ""]
    report = out_dir / f"moves-{stamp}.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


async def run(args: argparse.Namespace) -> int:
    model = resolve_model(args.model, "", None)
    command = ("python -m bench completion " + " ".join(args.argv)).strip()
    if not args.moves_only:
        await run_earlier_parts(args, model, command)
    if args.positions > 0 or args.file_lines > 0:
        results = await run_moves(model, args.positions, args.file_lines)
        moves = moves_figures(results)
        print(json.dumps(moves, indent=2))
        print("\n".join(moves_table(moves)))
        print(f"report: {write_moves_report(Path(args.out), command, moves, results)}")
    return 0


async def run_earlier_parts(args: argparse.Namespace, model: Path, command: str) -> None:
    """The typing replay in one file and HumanEval, against their bare baselines."""
    settings = Settings()
    client = await start_server(model)
    # One engine for both baselines: a second model in this process would slow the first by a
    # quarter (measured) and make llama.cpp crash now and then (see engine/local.py).
    bare_engine = mirror_engine = local_engine(model)
    try:
        replay = he = None
        if args.lines > 0:
            print(f"typing replay ({args.lines} lines at {CHARS_PER_SECOND} chars/s)", flush=True)
            replay = await run_replay(client, bare_engine, settings, args.lines)
        if args.tasks > 0:
            print(f"HumanEval single-line infilling ({args.tasks} tasks)", flush=True)
            he = await run_humaneval(client, bare_engine, mirror_engine, settings, args.tasks, args.overhead_every)
    except Exception:
        traceback.print_exc()  # shown before the shutdown below, which may end the process
        raise
    finally:
        await stop_server(client)
        bare_engine.close()
    result = figures(replay, he)
    print(json.dumps(result, indent=2))
    print(f"report: {write_report(Path(args.out), command, result, replay, he)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench completion")
    parser.add_argument("--tasks", type=int, default=150, help="HumanEval tasks (every 6th of the 1,033; at most 150)")
    parser.add_argument("--lines", type=int, default=60, help="lines to type in the replay")
    parser.add_argument("--overhead-every", type=int, default=3, help="measure the engine alone on every Nth task")
    parser.add_argument("--moves-only", action="store_true", help="only the moves: cold places, several files open, cut-offs")
    parser.add_argument("--positions", type=int, default=60, help="cold places in stdlib files (moves)")
    parser.add_argument("--file-lines", type=int, default=8, help="lines typed per file visit in the multi-file replay (moves)")
    parser.add_argument("--model", help="GGUF model (default: QWEN_LSP_MODEL, then the bundled model)")
    parser.add_argument("--out", default="bench/results/completion", help="where the report and plot go")
    args = parser.parse_args(argv)
    args.argv = argv
    return asyncio.run(run(args))
