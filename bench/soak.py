"""Soak: thousands of completion requests typed into a document, most cancelled within
milliseconds (what an editor does on every keystroke), with explain requests mixed in.

    python -m bench soak [--engine fake|local] [--requests N] [--out DIR]

Prints and writes (report.md, soak.json, soak.png): requests served and cancelled, p50/p95
latency of the served ones, the server's RSS and threads after warm-up and at the end, asyncio
tasks and pending requests inside the server, and whether any request went unanswered.
`--engine fake` soaks the protocol plumbing fast; `--engine local` runs the real model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcRequestCancelled
from pygls.lsp.client import LanguageClient

LINE = "    total = total + weights[index] * values[index]"
DOCUMENT = '''def weighted_sum(weights: list[float], values: list[float]) -> float:
    """Sum of values, each multiplied by its weight."""
    total = 0.0
    for index in range(len(values)):
'''


@dataclass
class SoakOptions:
    engine: str = "fake"  # "fake": protocol plumbing only; "local": the real model
    requests: int = 3000
    cancel_fraction: float = 0.8  # requests cancelled 0-5 ms after they are sent
    explain_every: int = 100  # one explain request per this many completions
    samples: int = 20  # RSS/thread samples over the run
    seed: int = 7
    # A request still unanswered after this long stops the soak and counts as unanswered.
    answer_timeout: float = 30.0


@dataclass
class SoakResult:
    options: SoakOptions
    sent: int = 0
    served: int = 0  # answered with a result
    cancelled: int = 0  # answered with RequestCancelled
    failed: int = 0  # answered with another error
    unanswered: int = 0
    unanswered_explains: int = 0
    stalled_at: int | None = None  # the request after which the server stopped answering
    explains: int = 0
    latencies: list[float] = field(default_factory=list)  # served completions, seconds
    rss: list[tuple[int, int]] = field(default_factory=list)  # (requests sent, bytes)
    threads: list[tuple[int, int]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # window/showMessage from the server
    inside_before: dict[str, int] = field(default_factory=dict)  # the server's own figures
    inside_after: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def server_command(engine: str) -> list[str]:
    if engine == "fake":
        return [sys.executable, "-m", "tests.fake_engine"]
    return [sys.executable, "-m", "qwen_lsp", "serve"]


def proc_figures(pid: int) -> tuple[int, int]:
    """(RSS in bytes, threads) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])


def _plain(value: Any) -> Any:
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    return value


async def _drain(stream: asyncio.StreamReader | None) -> None:
    while stream is not None and await stream.read(65536):
        pass


async def _inside(client: LanguageClient) -> dict[str, int]:
    status = _plain(await client.protocol.send_request_async("qwen/status", {}))
    return dict(status["process"])


async def run_soak(options: SoakOptions, env: dict[str, str] | None = None) -> SoakResult:
    rng = random.Random(options.seed)
    result = SoakResult(options)
    client = LanguageClient("qwen-lsp-soak", "1")

    @client.feature(lsp.WINDOW_SHOW_MESSAGE)
    def show_message(params: lsp.ShowMessageParams) -> None:
        result.messages.append(params.message)

    @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def diagnostics(params: lsp.PublishDiagnosticsParams) -> None:
        pass  # the soak reads answers to requests only

    await client.start_io(*server_command(options.engine), env=env)
    pid = client._server.pid  # type: ignore[union-attr]
    # pygls' client pipes the server's stderr and never reads it, as an editor would: once the
    # log fills the 64 KB pipe the server blocks in a log call. Drain it like an editor does.
    _stderr_drain = asyncio.ensure_future(_drain(client._server.stderr))  # type: ignore[union-attr]  # noqa: RUF006 - the name keeps the task alive
    uri = "file:///soak/weighted.py"
    try:
        await client.initialize_async(
            lsp.InitializeParams(
                capabilities=lsp.ClientCapabilities(),
                process_id=os.getpid(),
                initialization_options={"completionMaxTokens": 16, "explainMaxTokens": 24},
            )
        )
        client.initialized(lsp.InitializedParams())
        client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, "python", 1, DOCUMENT)))
        line = DOCUMENT.count("\n")
        version, typed = 1, 0
        pending: list[asyncio.Future[Any]] = []
        sent_at: dict[int, float] = {}

        def settle(number: int, future: asyncio.Future[Any]) -> None:
            error = future.exception()
            if error is None:
                result.served += 1
                result.latencies.append(time.perf_counter() - sent_at[number])
            elif isinstance(error, JsonRpcRequestCancelled) or getattr(error, "code", None) == JsonRpcRequestCancelled.CODE:
                result.cancelled += 1
            else:
                result.failed += 1

        def completion(number: int) -> asyncio.Future[Any]:
            params = lsp.InlineCompletionParams(
                text_document=lsp.TextDocumentIdentifier(uri),
                position=lsp.Position(line, typed),
                context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Automatic),
            )
            sent_at[number] = time.perf_counter()
            future = asyncio.ensure_future(
                client.protocol.send_request_async(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=f"soak-{number}")
            )
            future.add_done_callback(lambda f: settle(number, f))
            return future

        async def explain() -> None:
            params = lsp.ExecuteCommandParams(
                command="qwen.explain",
                arguments=[
                    {"textDocument": {"uri": uri}, "range": {"start": {"line": 0, "character": 0}, "end": {"line": line, "character": 0}}}
                ],
            )
            future = asyncio.ensure_future(client.workspace_execute_command_async(params))
            await asyncio.wait([future], timeout=options.answer_timeout)
            if not future.done():
                result.unanswered_explains += 1
                result.stalled_at = number

        # Warm-up: the model loads, caches fill, an explain sizes the chat buffers; figures are
        # taken from here on.
        for number in range(-5, 0):
            await asyncio.wait_for(completion(number), options.answer_timeout)
        await explain()
        result.served = 0
        result.latencies.clear()
        result.inside_before = await _inside(client)
        started = time.perf_counter()
        sample_every = max(1, options.requests // options.samples)
        for number in range(options.requests):
            # Type one character of LINE; at its end, delete the line and start over, so the
            # document stays the same size and memory is free to stay flat.
            version += 1
            if typed == len(LINE):
                change = lsp.TextDocumentContentChangePartial(lsp.Range(lsp.Position(line, 0), lsp.Position(line, typed)), "")
                typed = 0
            else:
                at = lsp.Position(line, typed)
                change = lsp.TextDocumentContentChangePartial(lsp.Range(at, at), LINE[typed])
                typed += 1
            client.text_document_did_change(
                lsp.DidChangeTextDocumentParams(lsp.VersionedTextDocumentIdentifier(version=version, uri=uri), [change])
            )
            future = completion(number)
            result.sent += 1
            if rng.random() < options.cancel_fraction:
                await asyncio.sleep(rng.uniform(0, 0.005))
                client.protocol.notify(lsp.CANCEL_REQUEST, lsp.CancelParams(id=f"soak-{number}"))
                pending.append(future)
            else:
                await asyncio.wait([future], timeout=options.answer_timeout)
                if not future.done():
                    pending.append(future)
                    result.stalled_at = number
                    break
            if options.explain_every and number % options.explain_every == options.explain_every - 1:
                await explain()
                result.explains += 1
                if result.stalled_at is not None:
                    break
            if number % sample_every == 0 or number == options.requests - 1:
                rss, threads = proc_figures(pid)
                result.rss.append((number + 1, rss))
                result.threads.append((number + 1, threads))
            pending = [f for f in pending if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=options.answer_timeout)
        result.unanswered = sum(1 for f in pending if not f.done())
        result.seconds = time.perf_counter() - started
        await asyncio.sleep(0.2)  # let the server finish its cancelled tasks' bookkeeping
        if result.stalled_at is None:
            result.inside_after = await asyncio.wait_for(_inside(client), options.answer_timeout)
        rss, threads = proc_figures(pid)
        result.rss.append((result.sent, rss))
        result.threads.append((result.sent, threads))
    finally:
        try:
            await asyncio.wait_for(client.shutdown_async(None), 10)
            client.exit(None)
            await asyncio.wait_for(client.stop(), 10)
        except (TimeoutError, JsonRpcException, RuntimeError):
            client._server.kill()  # type: ignore[union-attr]
    return result


def summary(result: SoakResult) -> str:
    rss_start, rss_end = result.rss[0][1], result.rss[-1][1]
    return "\n".join(
        [
            f"soak ({result.options.engine} engine): {result.sent} completion requests in {result.seconds:.1f} s, "
            f"{result.explains} explains",
            f"served {result.served}, cancelled {result.cancelled}, other errors {result.failed}, unanswered {result.unanswered}"
            f" (explains unanswered: {result.unanswered_explains})"
            + (f"; STALLED after request {result.stalled_at}" if result.stalled_at is not None else ""),
            f"latency of served completions: p50 {result.percentile(0.5) * 1000:.1f} ms, p95 {result.percentile(0.95) * 1000:.1f} ms",
            f"server RSS: {rss_start / 1e6:.1f} MB after warm-up, {rss_end / 1e6:.1f} MB at the end "
            f"(max {max(r for _, r in result.rss) / 1e6:.1f} MB)",
            f"server threads: {result.threads[0][1]} after warm-up, {result.threads[-1][1]} at the end",
            f"inside the server: before {result.inside_before}, after {result.inside_after}",
            f"messages shown to the user: {len(result.messages)}" + (f" (first: {result.messages[0][:200]})" if result.messages else ""),
        ]
    )


def write_report(result: SoakResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps({**asdict(result), "p50": result.percentile(0.5), "p95": result.percentile(0.95)}, indent=1))
    (out / "report.md").write_text(f"# Soak\n\n```\n{summary(result)}\n```\n\n![RSS and latency](soak.png)\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'qwen-lsp[bench]')", file=sys.stderr)
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([n for n, _ in result.rss], [r / 1e6 for _, r in result.rss], marker="o")
    left.set(xlabel="completion requests sent", ylabel="server RSS (MB)", title="Memory after warm-up")
    left.set_ylim(bottom=0)
    right.hist([x * 1000 for x in result.latencies], bins=40)
    right.set(
        xlabel="latency of served completions (ms)",
        ylabel="requests",
        title=f"p50 {result.percentile(0.5) * 1000:.1f} ms, p95 {result.percentile(0.95) * 1000:.1f} ms",
    )
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["fake", "local"], default="fake")
    parser.add_argument("--requests", type=int, default=SoakOptions.requests)
    parser.add_argument("--cancel-fraction", type=float, default=SoakOptions.cancel_fraction)
    parser.add_argument("--explain-every", type=int, default=SoakOptions.explain_every)
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak"))
    args = parser.parse_args(argv)
    options = SoakOptions(
        answer_timeout=30.0 if args.engine == "fake" else 900.0,
        engine=args.engine,
        requests=args.requests,
        cancel_fraction=args.cancel_fraction,
        explain_every=args.explain_every,
    )
    result = asyncio.run(run_soak(options))
    print(summary(result))
    write_report(result, args.out / args.engine)
    print(f"report: {args.out / args.engine / 'report.md'}")
    return 0 if result.unanswered == result.unanswered_explains == result.failed == 0 else 1
