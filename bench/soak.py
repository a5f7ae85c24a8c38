"""Soak: thousands of completion requests typed into a document, most cancelled within
milliseconds (what an editor does on every keystroke), with explain requests mixed in, a
settings change that rebuilds the engine while requests are queued on it, and a reconnect: the
client drops its TCP connection with a request in flight and starts a new session.

    python -m bench soak [--engine fake|local] [--requests N] [--out DIR]

Prints and writes (report.md, soak.json, soak.png): requests served and cancelled, p50/p95
latency of the served ones, the server's RSS and threads after warm-up and at the end, asyncio
tasks and pending requests inside the server, and whether any request went unanswered.
`--engine fake` soaks the protocol plumbing fast; `--engine local` runs the real model. The
server is `serve --tcp` (reconnecting needs a socket; stdio is what every other test drives).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
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
URI = "file:///soak/weighted.py"
SETTINGS = {"completionMaxTokens": 16, "explainMaxTokens": 24}
# Rebuilds the engine (for the model: frees it and loads it again) and changes nothing else.
SETTINGS_CHANGE = {"promptCacheMb": 64}


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
    # Where in the storm (a fraction of its requests) the settings change and the reconnect come.
    settings_change_at: float = 1 / 3
    reconnect_at: float = 2 / 3


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
    settings_changes: int = 0
    reconnects: int = 0
    abandoned: int = 0  # in flight when the client hung up: nobody is left to answer them
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


def server_command(engine: str, address: str) -> list[str]:
    if engine == "fake":
        return [sys.executable, "-m", "tests.fake_engine_tcp", address]
    return [sys.executable, "-m", "qwen_lsp", "serve", "--tcp", address]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def proc_figures(pid: int) -> tuple[int, int]:
    """(RSS in bytes, threads) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])


def _plain(value: Any) -> Any:
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    return value


class Session:
    """One LSP session on its own TCP connection, with the soak's document open."""

    def __init__(self, result: SoakResult) -> None:
        self.client = LanguageClient("qwen-lsp-soak", "1")

        @self.client.feature(lsp.WINDOW_SHOW_MESSAGE)
        def show_message(params: lsp.ShowMessageParams) -> None:
            result.messages.append(params.message)

        @self.client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def diagnostics(params: lsp.PublishDiagnosticsParams) -> None:
            pass  # the soak reads answers to requests only

    @classmethod
    async def connect(cls, result: SoakResult, port: int, settings: dict[str, object], text: str, version: int) -> Session:
        """A new session, once the server listens and has let the previous one go (until then
        it refuses a second client)."""
        params = lsp.InitializeParams(capabilities=lsp.ClientCapabilities(), process_id=os.getpid(), initialization_options=settings)
        for _ in range(300):
            session = cls(result)
            try:
                await session.client.start_tcp("127.0.0.1", port)
                await asyncio.wait_for(session.client.initialize_async(params), result.options.answer_timeout)
            except TimeoutError as exc:
                raise RuntimeError("the server did not answer initialize on a new connection") from exc
            except (OSError, JsonRpcException):  # not listening yet, or refused: busy
                await session.hang_up()
                await asyncio.sleep(0.1)
                continue
            session.client.initialized(lsp.InitializedParams())
            session.client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(URI, "python", version, text)))
            return session
        raise RuntimeError(f"no session with the server on port {port}")

    async def inside(self) -> dict[str, int]:
        status = _plain(await self.client.protocol.send_request_async("qwen/status", {}))
        return dict(status["process"])

    async def hang_up(self) -> None:
        """Drop the connection without shutdown or exit: an editor that crashed."""
        if self.client.protocol.writer is not None:
            self.client.protocol.writer.close()
        await self.client.stop()

    async def end(self) -> None:
        await asyncio.wait_for(self.client.shutdown_async(None), 10)
        self.client.exit(None)
        await asyncio.wait_for(self.client.stop(), 10)


class Soak:
    """The storm: one character typed per request, into the last line of the document."""

    def __init__(self, options: SoakOptions, result: SoakResult, port: int) -> None:
        self.options, self.result, self.port = options, result, port
        self.rng = random.Random(options.seed)
        self.settings: dict[str, object] = dict(SETTINGS)
        self.line = DOCUMENT.count("\n")
        self.version, self.typed = 1, 0
        self.pending: list[asyncio.Future[Any]] = []
        self.sent_at: dict[int, float] = {}
        self.session: Session

    async def connect(self) -> None:
        self.session = await Session.connect(self.result, self.port, self.settings, DOCUMENT + LINE[: self.typed], self.version)

    def settle(self, number: int, future: asyncio.Future[Any]) -> None:
        error = future.exception()
        if error is None:
            self.result.served += 1
            self.result.latencies.append(time.perf_counter() - self.sent_at[number])
        elif isinstance(error, JsonRpcRequestCancelled) or getattr(error, "code", None) == JsonRpcRequestCancelled.CODE:
            self.result.cancelled += 1
        else:
            self.result.failed += 1

    def completion(self, number: int) -> asyncio.Future[Any]:
        """Completion request `number` at the cursor, counted once answered."""
        self.sent_at[number] = time.perf_counter()
        future = self.request(f"soak-{number}")
        future.add_done_callback(lambda f: self.settle(number, f))
        return future

    def request(self, msg_id: str) -> asyncio.Future[Any]:
        params = lsp.InlineCompletionParams(
            text_document=lsp.TextDocumentIdentifier(URI),
            position=lsp.Position(self.line, self.typed),
            context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Automatic),
        )
        protocol = self.session.client.protocol
        return asyncio.ensure_future(protocol.send_request_async(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id))

    async def explain(self, number: int) -> None:
        """An explain request of the whole document, waited for."""
        rng = {"start": {"line": 0, "character": 0}, "end": {"line": self.line, "character": 0}}
        params = lsp.ExecuteCommandParams(command="qwen.explain", arguments=[{"textDocument": {"uri": URI}, "range": rng}])
        future = asyncio.ensure_future(self.session.client.workspace_execute_command_async(params))
        await asyncio.wait([future], timeout=self.options.answer_timeout)
        if not future.done():
            self.result.unanswered_explains += 1
            self.result.stalled_at = number

    def type_one(self) -> None:
        """Type one character of LINE; at its end, delete the line and start over, so the
        document stays the same size and memory is free to stay flat."""
        self.version += 1
        if self.typed == len(LINE):
            change = lsp.TextDocumentContentChangePartial(lsp.Range(lsp.Position(self.line, 0), lsp.Position(self.line, self.typed)), "")
            self.typed = 0
        else:
            at = lsp.Position(self.line, self.typed)
            change = lsp.TextDocumentContentChangePartial(lsp.Range(at, at), LINE[self.typed])
            self.typed += 1
        self.session.client.text_document_did_change(
            lsp.DidChangeTextDocumentParams(lsp.VersionedTextDocumentIdentifier(version=self.version, uri=URI), [change])
        )

    async def warm_up(self) -> None:
        """The model loads, caches fill, an explain sizes the chat buffers; figures are taken
        from here on."""
        for number in range(-5, 0):
            await asyncio.wait_for(self.completion(number), self.options.answer_timeout)
        await self.explain(-1)
        self.result.served = 0
        self.result.latencies.clear()

    async def step(self, number: int) -> None:
        """One keystroke and its completion request: cancelled at once, or waited for."""
        self.type_one()
        future = self.completion(number)
        self.result.sent += 1
        if number == int(self.options.requests * self.options.settings_change_at):
            await self.change_settings()  # and the request is waited for
        elif self.rng.random() < self.options.cancel_fraction:
            await asyncio.sleep(self.rng.uniform(0, 0.005))
            self.session.client.protocol.notify(lsp.CANCEL_REQUEST, lsp.CancelParams(id=f"soak-{number}"))
            self.pending.append(future)
            return
        await asyncio.wait([future], timeout=self.options.answer_timeout)
        if not future.done():
            self.pending.append(future)
            self.result.stalled_at = number

    async def change_settings(self) -> None:
        """Rebuild the engine while it works on the request just sent."""
        await asyncio.sleep(0.005)  # the request reaches the engine
        self.settings.update(SETTINGS_CHANGE)
        self.session.client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings=SETTINGS_CHANGE))
        self.result.settings_changes += 1

    async def reconnect(self, number: int) -> None:
        """Wait for what was asked (every request is answered), then hang up while the server
        works on one more request, and start a new session."""
        await self.wait_pending()
        dropped = self.request(f"dropped-{number}")
        await self.session.hang_up()
        self.result.abandoned += 0 if dropped.done() else 1
        await self.connect()
        self.result.reconnects += 1

    async def wait_pending(self) -> None:
        if self.pending:
            await asyncio.wait(self.pending, timeout=self.options.answer_timeout)
        self.result.unanswered += sum(1 for f in self.pending if not f.done())
        self.pending.clear()

    def sample(self, number: int, pid: int) -> None:
        rss, threads = proc_figures(pid)
        self.result.rss.append((number, rss))
        self.result.threads.append((number, threads))

    async def storm(self, pid: int) -> None:
        options, result = self.options, self.result
        sample_every = max(1, options.requests // options.samples)
        reconnect_at = int(options.requests * options.reconnect_at)
        for number in range(options.requests):
            if number == reconnect_at:
                await self.reconnect(number)
            await self.step(number)
            if options.explain_every and number % options.explain_every == options.explain_every - 1:
                await self.explain(number)
                result.explains += 1
            if result.stalled_at is not None:
                break
            if number % sample_every == 0 or number == options.requests - 1:
                self.sample(number + 1, pid)
            self.pending = [f for f in self.pending if not f.done()]
        await self.wait_pending()


async def run_soak(options: SoakOptions, env: dict[str, str] | None = None) -> SoakResult:
    result = SoakResult(options)
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *server_command(options.engine, f"127.0.0.1:{port}"), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    soak = Soak(options, result, port)
    try:
        await soak.connect()
        await soak.warm_up()
        result.inside_before = await soak.session.inside()
        started = time.perf_counter()
        await soak.storm(server.pid)
        result.seconds = time.perf_counter() - started
        await asyncio.sleep(0.2)  # let the server finish its cancelled tasks' bookkeeping
        if result.stalled_at is None:
            result.inside_after = await asyncio.wait_for(soak.session.inside(), options.answer_timeout)
        soak.sample(result.sent, server.pid)
        await soak.session.end()
    finally:
        if server.returncode is None:
            server.terminate()
        await server.wait()
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
            f"in the storm: {result.settings_changes} settings change rebuilding the engine, {result.reconnects} reconnect "
            f"({result.abandoned} request in flight dropped with its connection)",
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
