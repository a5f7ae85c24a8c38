"""Command line: `serve` (stdio or TCP), one-shot `complete`/`explain`/`fix`, and `doctor`."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types as lsp

from qwen_lsp import __version__, privacy
from qwen_lsp.edits import split_lines

if TYPE_CHECKING:
    from qwen_lsp.lsp.server import QwenLanguageServer

log = logging.getLogger("qwen_lsp")


def _parse_location(value: str, parts: int) -> tuple[Path, list[int]]:
    """FILE:LINE[:COL] with 1-based numbers; FILE may itself contain colons."""
    pieces = value.rsplit(":", parts)
    numbers = pieces[1:]
    if len(pieces) != parts + 1 or not all(n.isdigit() and int(n) > 0 for n in numbers):
        raise argparse.ArgumentTypeError(f"expected FILE{':N' * parts} with numbers from 1, got {value!r}")
    return Path(pieces[0]), [int(n) for n in numbers]


def _file_and_lines(value: str) -> tuple[Path, tuple[int, int] | None]:
    path, _, span = value.rpartition(":")
    if path and span and "-" in span and all(p.isdigit() for p in span.split("-", 1)):
        first, last = (int(p) for p in span.split("-", 1))
        return Path(path), (min(first, last), max(first, last))
    if path and span.isdigit():
        return Path(path), (int(span), int(span))
    return Path(value), None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen-lsp",
        description="A language server running Qwen2.5-Coder on your CPU: completion, explain, fix.",
    )
    parser.add_argument("--version", action="version", version=f"qwen-lsp {__version__}")
    parser.add_argument("--model", metavar="PATH", help="GGUF model to use (default: QWEN_LSP_MODEL, then the bundled model)")
    parser.add_argument("--log-file", metavar="PATH", help="write the log here (default: stderr)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="speak LSP on stdio (the default) or TCP")
    serve.add_argument("--tcp", metavar="HOST:PORT", help="listen on a TCP socket instead of stdio")

    complete = commands.add_parser("complete", help="complete code at FILE:LINE:COL")
    complete.add_argument("location", metavar="FILE:LINE:COL")

    explain = commands.add_parser("explain", help="explain FILE or lines FILE:START-END")
    explain.add_argument("location", metavar="FILE[:START-END]")

    fix = commands.add_parser("fix", help="fix the error on FILE:LINE and show the change as a diff")
    fix.add_argument("location", metavar="FILE:LINE")
    fix.add_argument("--write", action="store_true", help="apply the fix to the file")

    commands.add_parser("doctor", help="show the model, its hash, load time and speed on this machine")
    add_backend_flags(parser, default=None)
    for command in commands.choices.values():  # accepted after the command too
        add_backend_flags(command, default=argparse.SUPPRESS)
    return parser


def add_backend_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    group = parser.add_argument_group("model backend")
    group.add_argument(
        "--backend",
        choices=["local", "openai"],
        default=default,
        help="run the model in-process (local, the default) or use an OpenAI-compatible server",
    )
    group.add_argument(
        "--endpoint", metavar="URL", default=default, help="the server's base URL, e.g. http://gpu-box:8080/v1 (API key: QWEN_LSP_API_KEY)"
    )
    group.add_argument(
        "--model-name", metavar="NAME", default=default, help="the model to ask the server for (default: the first it lists)"
    )


def backend_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The backend flags given on the command line; they override the editor's settings."""
    names = ("backend", "endpoint", "model_name")
    return {name: value for name in names if (value := getattr(args, name, None)) is not None}


def configure_logging(level: str, log_file: str | None) -> None:
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    privacy.protect(handler, level)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def make_server(model: str | None, backend: dict[str, Any] | None = None) -> QwenLanguageServer:
    import attrs

    from qwen_lsp.engine import make_engine
    from qwen_lsp.lsp.server import create_server

    return create_server(lambda settings: make_engine(attrs.evolve(settings, **(backend or {})), model))


class TerminalProgress:
    """Renders the server's `$/progress` on stderr: a bar for model loading and prompt reading,
    and the growing text of an explanation on stdout."""

    def __init__(self) -> None:
        self.printed = ""
        self.bar_shown = False

    def __call__(self, params: lsp.ProgressParams) -> None:
        value = params.value
        kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)

        def get(key: str) -> Any:
            return value.get(key) if isinstance(value, dict) else getattr(value, key, None)

        message, percentage = get("message"), get("percentage")
        if kind == "begin" and get("title") and not str(params.token).startswith("qwen-lsp/explain"):
            self._bar(str(get("title")), percentage or 0)
        elif kind == "report" and str(params.token).startswith("qwen-lsp/cli-explain"):
            if percentage is not None:
                self._bar(message or "", percentage)
            elif message is not None and message.startswith(self.printed):
                self._clear_bar()
                sys.stdout.write(message[len(self.printed) :])
                sys.stdout.flush()
                self.printed = message
        elif (kind == "report" and percentage is not None) or (kind == "report" and message):
            self._bar(message or "", percentage)
        elif kind == "end":
            self._clear_bar()

    def _bar(self, label: str, percentage: int | None) -> None:
        if not sys.stderr.isatty():
            return
        filled = int((percentage or 0) / 100 * 30)
        pct = f"{percentage:3d}%" if percentage is not None else "    "
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {pct} {label[:60]:<60}")
        sys.stderr.flush()
        self.bar_shown = True

    def _clear_bar(self) -> None:
        if self.bar_shown:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()
            self.bar_shown = False


async def run_complete(args: argparse.Namespace) -> int:
    from qwen_lsp.client import InProcessClient

    path, (line, column) = _parse_location(args.location, 2)
    async with InProcessClient(make_server(args.model, backend_settings(args))) as session:
        session.on_progress = TerminalProgress()
        uri = session.open(path)
        result = await session.client.text_document_inline_completion_async(
            lsp.InlineCompletionParams(
                text_document=lsp.TextDocumentIdentifier(uri),
                position=lsp.Position(line - 1, column - 1),
                context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Invoked),
            )
        )
        items = result.items if isinstance(result, lsp.InlineCompletionList) else result or []
        if not items:
            print("(no suggestion)", file=sys.stderr)
            return 1
        text = items[0].insert_text
        print(text if isinstance(text, str) else text.value)
    return 0


async def run_explain(args: argparse.Namespace) -> int:
    from qwen_lsp.client import InProcessClient

    path, lines = _file_and_lines(args.location)
    text = path.read_text(encoding="utf-8", errors="replace")
    line_count = max(1, len(text.splitlines()))
    first, last = lines or (1, line_count)
    last = min(last, line_count)
    async with InProcessClient(make_server(args.model, backend_settings(args))) as session:
        progress = TerminalProgress()
        session.on_progress = progress
        uri = session.open(path)
        result = await session.client.workspace_execute_command_async(
            lsp.ExecuteCommandParams(
                command="qwen.explain",
                arguments=[
                    {
                        "textDocument": {"uri": uri},
                        "range": {"start": {"line": first - 1, "character": 0}, "end": {"line": last, "character": 0}},
                    }
                ],
                work_done_token="qwen-lsp/cli-explain",
            )
        )
        answer = result.get("text", "") if isinstance(result, dict) else getattr(result, "text", "")
        if answer.startswith(progress.printed):
            sys.stdout.write(answer[len(progress.printed) :])
        print()
    return 0


async def run_fix(args: argparse.Namespace) -> int:
    from qwen_lsp.client import InProcessClient

    path, (line,) = _parse_location(args.location, 1)
    # Bytes as they are: text mode would turn "\r\n" into "\n", and the fix would rewrite every
    # line end of the file.
    original = path.read_bytes().decode("utf-8")
    async with InProcessClient(make_server(args.model, backend_settings(args))) as session:
        session.on_progress = TerminalProgress()
        uri = path.resolve().as_uri()
        session.client.text_document_did_open(
            lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="", version=1, text=original))
        )
        diagnostics = [d for d in await session.wait_for_diagnostics(uri) if d.range.start.line <= line - 1 <= d.range.end.line]
        if not diagnostics:
            print(f"no error found on line {line}; asking the model to fix it anyway", file=sys.stderr)
            diagnostics = [
                lsp.Diagnostic(
                    range=lsp.Range(lsp.Position(line - 1, 0), lsp.Position(line, 0)),
                    message="This line has a bug",
                    source="qwen-lsp",
                )
            ]
        actions = await session.client.text_document_code_action_async(
            lsp.CodeActionParams(
                text_document=lsp.TextDocumentIdentifier(uri),
                range=diagnostics[0].range,
                context=lsp.CodeActionContext(diagnostics=diagnostics[:1]),
            )
        )
        quickfix = next(a for a in actions or [] if isinstance(a, lsp.CodeAction) and a.kind == lsp.CodeActionKind.QuickFix)
        resolved = await session.client.code_action_resolve_async(quickfix)
        change = resolved.edit.document_changes[0] if resolved.edit and resolved.edit.document_changes else None
        if not isinstance(change, lsp.TextDocumentEdit):
            print(resolved.title, file=sys.stderr)
            return 1
        fixed = _apply(original, list(change.edits))
        sys.stdout.writelines(difflib.unified_diff(split_lines(original), split_lines(fixed), str(path), f"{path} (fixed)"))
        if args.write:
            path.write_bytes(fixed.encode("utf-8"))
    return 0


def _apply(text: str, edits: list[Any]) -> str:
    """Apply utf-32 (code point) positioned edits, last first; lines end where LSP says."""
    lines = split_lines(text)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(position: lsp.Position) -> int:
        return starts[min(position.line, len(lines))] + position.character

    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end) :]
    return text


async def run_doctor(args: argparse.Namespace) -> int:
    from qwen_lsp.config import Settings
    from qwen_lsp.engine import make_engine
    from qwen_lsp.engine.base import EngineState, GenerationRequest
    from qwen_lsp.engine.tokens import Prompt

    engine = make_engine(Settings(**backend_settings(args)), args.model)
    progress = TerminalProgress()
    ready_at: list[float] = []

    def on_status(status: Any) -> None:
        progress._bar(status.message, int(status.fraction * 100) if status.fraction is not None else None)
        if status.state is EngineState.READY:
            ready_at.append(time.perf_counter())

    engine.add_status_listener(on_status)
    started = time.perf_counter()
    engine.start()
    # A first request waits for the load, and its stats carry the speed.
    sample = (Path(__file__).parent / "syntax" / "documents.py").read_text()[:1500]
    generation = engine.generate(GenerationRequest(prompt=Prompt.template(sample), max_tokens=0))
    try:
        await generation.complete()
    except Exception as exc:  # noqa: BLE001 - doctor reports every failure instead of crashing
        progress._clear_bar()
        print(f"model: unavailable\nerror: {exc}")
        return 1
    progress._clear_bar()
    ready = ready_at[0] - started
    info = engine.describe()
    prompt = generation.stats
    gen = engine.generate(
        GenerationRequest(
            prompt=Prompt.template("<|im_start|>user\nWrite a long Python class for a bank account.<|im_end|>\n<|im_start|>assistant\n"),
            max_tokens=64,
        )
    )
    await gen.complete()
    if info["backend"] == "openai":
        print(f"qwen-lsp {__version__}\nendpoint: {info['endpoint']}\nmodel: {info['model']}\nAPI key: {info['api_key']}")
        print(
            f"first token: {gen.stats.prompt_seconds:.2f} s; generation: {gen.stats.generated_tokens / max(gen.stats.generation_seconds, 1e-9):.1f} tokens/s"
        )
        engine.close()
        return 0
    print_local_doctor(engine, info, ready, prompt, gen.stats)
    engine.close()
    return 0


def print_local_doctor(engine: Any, info: dict[str, Any], ready: float, prompt: Any, generated: Any) -> None:
    """`doctor`'s figures for the in-process model: the file, the build, load and speed."""
    from qwen_lsp.engine.base import EngineState
    from qwen_lsp.engine.cpu import recorded_variant, this_cpu
    from qwen_lsp.engine.model_pack import sha256_of

    gen = generated
    model_path = Path(str(info["model"]))
    print(f"qwen-lsp {__version__}")
    print(f"model: {model_path}")
    print(f"size: {model_path.stat().st_size:,} bytes")
    print(f"sha256: {sha256_of(model_path)}")
    print(f"state: {engine.status.state.value}{'' if engine.status.state is EngineState.READY else ' ' + engine.status.message}")
    print(f"threads: {info['n_threads']}, context: {info['n_ctx']} tokens")
    print(f"llama.cpp build: {recorded_variant() or 'not recorded (not installed by scripts/install.sh)'}; this CPU's: {this_cpu().name}")
    print(f"load: {info['load_seconds']:.2f} s (ready after {ready:.2f} s, including finding and verifying the file)")
    print(
        f"prompt: {prompt.evaluated_tokens / max(prompt.prompt_seconds, 1e-9):.0f} tokens/s ({prompt.evaluated_tokens} tokens in {prompt.prompt_seconds:.2f} s)"
    )
    print(
        f"generation: {gen.generated_tokens / max(gen.generation_seconds, 1e-9):.1f} tokens/s ({gen.generated_tokens} tokens in {gen.generation_seconds:.2f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_file)
    command = args.command or "serve"
    if command == "serve":
        if getattr(args, "tcp", None):
            from qwen_lsp.lsp import transport

            host, _, port = args.tcp.rpartition(":")
            # A fresh server per connection: each client is a session of its own.
            return transport.serve_tcp(lambda: make_server(args.model, backend_settings(args)), host or "127.0.0.1", int(port))
        server = make_server(args.model, backend_settings(args))
        return server.start_io()  # 1 when the client sent `exit` without `shutdown`
    runner = {"complete": run_complete, "explain": run_explain, "fix": run_fix, "doctor": run_doctor}[command]
    try:
        return asyncio.run(runner(args))
    except FileNotFoundError as exc:
        print(f"qwen-lsp: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        log.debug("command failed", exc_info=True)
        print(f"qwen-lsp: {exc}", file=sys.stderr)
        return 1
