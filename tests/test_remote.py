"""The remote backend through a real client: pytest-lsp drives `qwen-lsp serve --backend openai`,
which talks to a real OpenAI-compatible server on loopback (llama-cpp-python's
`llama_cpp.server`, its `server` extra) running the bundled model."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from qwen_lsp.config import parse_settings
from tests.conftest import open_doc, server_env, server_status
from tests.helpers import apply_text_edits, free_port, inline_completion

API_KEY = f"test-key-{uuid.uuid4().hex}"

FUNCTION = '''import math


def circle_area(radius: float) -> float:
    """Area of a circle."""
    return math.pi * radius ** 2


def hypotenuse(a: float, b: float) -> float:
    """Length of the hypotenuse of a right triangle with legs a and b."""
    return '''


pytestmark = pytest.mark.model


class ModelServer:
    """`python -m llama_cpp.server` with the bundled model, on a fixed loopback port so that it
    can be stopped and started again under the same address."""

    def __init__(self, model: Path, log: Path) -> None:
        self.model, self.log = model, log
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
            "--host", "127.0.0.1", "--port", str(self.port), "--api_key", API_KEY,
            "--n_ctx", "4096", "--n_threads", "2", "--n_threads_batch", "2",
            # By default a new request interrupts the one streaming; off, so that only our
            # closing of the stream can stop a generation early.
            "--interrupt_requests", "False",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its prints reach the log at once
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        while True:  # the port opens once the model is loaded
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.endpoint}/models", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:
                self.process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def ensure_running(self) -> ModelServer:
        if self.process is None:
            self.start()
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def model_server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    server = ModelServer(model_path, tmp_path_factory.mktemp("llama-server") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def start_lsp(make_client: Callable[..., object]) -> Callable[..., object]:
    """Start `python -m qwen_lsp [GLOBAL_ARGS] serve ARGS` under a Neovim-profile client."""

    async def start(
        args: list[str],
        options: dict[str, object] | None = None,
        env: dict[str, str] | None = None,
        global_args: tuple[str, ...] = (),
    ) -> LanguageClient:
        command = [sys.executable, "-m", "qwen_lsp", *global_args, "serve", *args]
        return await make_client(env=env, options=options, command=command)  # type: ignore[no-any-return,operator]

    return start


def remote_args(server: ModelServer) -> list[str]:
    return ["--backend", "openai", "--endpoint", server.endpoint]


def with_key() -> dict[str, str]:
    return server_env(QWEN_LSP_API_KEY=API_KEY)


def client_ports(log: str, path: str, method: str = "POST") -> list[str]:
    """Client ports of the requests to `path` in uvicorn's access log, oldest first."""
    return re.findall(rf"127\.0\.0\.1:(\d+) - \"{method} {re.escape(path)} HTTP", log)


async def test_completion_through_the_remote_server_reuses_its_connection(model_server, start_lsp, tmp_path):
    server = model_server.ensure_running()
    listings_before = len(client_ports(server.text(), "/v1/models", "GET"))
    requests_before = len(client_ports(server.text(), "/v1/completions"))
    log_file = tmp_path / "qwen-lsp.log"
    debug = ("--log-level", "DEBUG", "--log-file", str(log_file))
    client = await start_lsp(remote_args(server), env=with_key(), global_args=debug)

    uri = open_doc(client, str(tmp_path / "geometry.py"), FUNCTION)
    first = await inline_completion(client, uri, lsp.Position(FUNCTION.count("\n"), len("    return ")), invoked=True)
    print("RECENT", (await server_status(client))["recent"])
    assert first.items, "the remote model gave no suggestion"
    # Not checked for quality: on a loaded machine the completion's time budget cuts it short.
    assert first.items[0].insert_text.strip()
    other = open_doc(client, str(tmp_path / "arith.py"), "def subtract(x, y):\n    return ")
    second = await inline_completion(client, other, lsp.Position(1, 11), invoked=True)
    assert second.items and second.items[0].insert_text.strip()

    status = await server_status(client)
    assert status["backend"] == "openai" and status["state"] == "ready"
    assert status["endpoint"] == server.endpoint and status["api_key"] == "set"
    assert status["recent"][-1]["generated_tokens"] > 0
    # Keep-alive: the first completion went over the connection that listed the models at start
    # (the same client port). A stream stopped early (e.g. by the completion's time budget) must
    # drop its connection to stop the server, so only fully read answers are reused.
    listings = client_ports(server.text(), "/v1/models", "GET")[listings_before:]
    requests = client_ports(server.text(), "/v1/completions")[requests_before:]
    assert len(listings) == 1 and len(requests) == 2 and requests[0] == listings[0], (listings, requests)
    # The key reached the server (which refuses requests without it) but never the log, even at
    # DEBUG level where every HTTP request is logged.
    log = log_file.read_text()
    assert "/v1/completions" in log
    assert API_KEY not in log


async def explain(client: LanguageClient, uri: str, rng: lsp.Range) -> asyncio.Future[object]:
    """Start `qwen.explain` (the documented command behind the "Explain with Qwen" action)."""
    target = {"textDocument": {"uri": uri}, "range": client.protocol._converter.unstructure(rng)}
    params = lsp.ExecuteCommandParams(command="qwen.explain", arguments=[target])
    return asyncio.ensure_future(client.workspace_execute_command_async(params))


def explain_texts(client: LanguageClient) -> list[str]:
    return [
        r.message
        for token, reports in client.progress_reports.items()
        if str(token).startswith("qwen-lsp/explain")
        for r in reports
        if isinstance(r, lsp.WorkDoneProgressReport) and r.message and r.percentage is None
    ]


async def test_explain_streams_through_the_remote_server(model_server, start_lsp, tmp_path):
    client = await start_lsp(remote_args(model_server.ensure_running()), {"explainMaxTokens": 48}, with_key())
    uri = open_doc(client, str(tmp_path / "geometry.py"), FUNCTION)
    result = await (await explain(client, uri, lsp.Range(lsp.Position(3, 0), lsp.Position(6, 0))))
    answer = result["text"] if isinstance(result, dict) else result.text
    assert answer.strip()
    texts = explain_texts(client)
    assert len(texts) >= 2, "the explanation did not stream"
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:])), "each report extends the last"
    assert texts[-1].strip() == answer.strip()


async def test_fix_through_the_remote_server(model_server, start_lsp, tmp_path):
    server = model_server.ensure_running()
    client = await start_lsp(remote_args(server), {"fixMaxTokens": 120}, with_key())
    # A bracket left open: where it closes is the model's call (a missing colon, say, is fixed
    # without the model; see fix/repairs.py).
    broken = 'def greet(name):\n    return "Hello, " + name.title(\n\n\nprint(greet("Ada"))\n'
    uri = open_doc(client, str(tmp_path / "greet.py"), broken)
    while not client.diagnostics.get(uri):  # our own syntax diagnostics arrive after didOpen
        await asyncio.sleep(0.05)
    diagnostic = client.diagnostics[uri][0]
    actions = await client.text_document_code_action_async(
        lsp.CodeActionParams(lsp.TextDocumentIdentifier(uri), diagnostic.range, lsp.CodeActionContext(diagnostics=[diagnostic]))
    )
    quickfix = next(a for a in actions if isinstance(a, lsp.CodeAction) and a.kind == lsp.CodeActionKind.QuickFix)
    asked = len(client_ports(server.text(), "/v1/chat/completions"))
    resolved = await client.code_action_resolve_async(quickfix)
    assert len(client_ports(server.text(), "/v1/chat/completions")) > asked, "the fix did not come from the server"
    edit = resolved.edit
    assert edit is not None, resolved.title
    edits = edit.document_changes[0].edits if edit.document_changes else edit.changes[uri]
    fixed = apply_text_edits(broken, list(edits))
    compile(fixed, "greet.py", "exec")  # the fix parses
    assert "def greet(name):" in fixed


async def test_cancelling_closes_the_stream_and_the_remote_generation_stops(model_server, start_lsp, tmp_path):
    server = model_server.ensure_running()
    # An explanation allowed to run for thousands of tokens: minutes on this machine.
    client = await start_lsp(remote_args(server), {"explainMaxTokens": 3000}, with_key())
    uri = open_doc(client, str(tmp_path / "geometry.py"), FUNCTION)
    request = await explain(client, uri, lsp.Range(lsp.Position(0, 0), lsp.Position(10, 0)))
    while not explain_texts(client):  # the remote model has started answering
        await asyncio.sleep(0.05)
    token = next(t for t in client.progress_reports if str(t).startswith("qwen-lsp/explain"))
    client.window_work_done_progress_cancel(lsp.WorkDoneProgressCancelParams(token))
    result = await request  # what was written until the user stopped it
    assert (result["complete"] if isinstance(result, dict) else result.complete) is False

    # The server handles one request at a time and was told not to interrupt one for the next:
    # this completion is served only once the explanation's generation has ended.
    other = open_doc(client, str(tmp_path / "arith.py"), "def add(x, y):\n    return ")
    assert (await inline_completion(client, other, lsp.Position(1, 11), invoked=True)).items

    # The server saw the explanation's own connection close (our server process is alive: it
    # just answered) and left its generation loop at that moment; it logs that line only then.
    log = server.text()
    explain_port = client_ports(log, "/v1/chat/completions")[-1]
    assert re.search(rf"Disconnected from client .*port={explain_port}\)", log), log[-3000:]
    status = await server_status(client)
    cancelled = [r for r in status["recent"] if r["stop_reason"] == "cancelled"]
    assert cancelled and cancelled[-1]["generated_tokens"] < 3000


async def test_endpoint_down_gives_a_clear_error_and_recovers_when_it_returns(model_server, start_lsp, tmp_path):
    server = model_server.ensure_running()
    # Configured the way an editor does it: initializationOptions.
    client = await start_lsp([], {"backend": "openai", "endpoint": server.endpoint}, with_key())
    docs = [
        open_doc(client, str(tmp_path / f"m{i}.py"), f"def {name}(x, y):\n    return ")
        for i, name in enumerate(["add", "multiply", "subtract"])
    ]
    assert (await inline_completion(client, docs[0], lsp.Position(1, 11), invoked=True)).items

    server.stop()
    with pytest.raises(JsonRpcException) as error:
        await inline_completion(client, docs[1], lsp.Position(1, 11), invoked=True)
    assert f"Cannot reach the model server at {server.endpoint}" in str(error.value)
    assert (await server_status(client))["state"] == "failed"
    errors = [m for m in client.messages if m.type == lsp.MessageType.Error]
    assert len(errors) == 1 and "Cannot reach" in errors[0].message

    server.start()  # same address; the editor and qwen-lsp keep running
    requests_before = len(client_ports(server.text(), "/v1/completions"))
    result = await inline_completion(client, docs[2], lsp.Position(1, 11), invoked=True)
    assert result.items and result.items[0].insert_text.strip()
    assert len(client_ports(server.text(), "/v1/completions")) == requests_before + 1
    assert (await server_status(client))["state"] == "ready"


async def test_switching_the_backend_in_the_settings_replaces_the_engine(model_server, start_lsp, tmp_path):
    server = model_server.ensure_running()
    # Starts on the local backend with no model: every completion fails.
    client = await start_lsp([], env={**with_key(), "QWEN_LSP_MODEL": str(tmp_path / "none.gguf")})
    uri = open_doc(client, str(tmp_path / "a.py"), "def add(x, y):\n    return ")
    with pytest.raises(JsonRpcException):
        await inline_completion(client, uri, lsp.Position(1, 11), invoked=True)
    client.workspace_did_change_configuration(
        lsp.DidChangeConfigurationParams(settings={"qwen": {"backend": "openai", "endpoint": server.endpoint}})
    )
    result = await inline_completion(client, uri, lsp.Position(1, 11), invoked=True)
    assert result.items and result.items[0].insert_text.strip()
    status = await server_status(client)
    assert status["backend"] == "openai" and status["state"] == "ready"


async def test_a_missing_api_key_is_named_in_the_error(model_server, start_lsp, tmp_path):
    client = await start_lsp(remote_args(model_server.ensure_running()), env=server_env())
    uri = open_doc(client, str(tmp_path / "a.py"), "def add(x, y):\n    return ")
    with pytest.raises(JsonRpcException) as error:
        await inline_completion(client, uri, lsp.Position(1, 11), invoked=True)
    assert "HTTP 401" in str(error.value) and "QWEN_LSP_API_KEY" in str(error.value)


def test_backend_settings_are_parsed_and_checked():
    settings = parse_settings({"qwen": {"backend": "openai", "endpoint": "http://gpu:8000/v1", "modelName": "qwen"}})
    assert (settings.backend, settings.endpoint, settings.model_name) == ("openai", "http://gpu:8000/v1", "qwen")
    assert parse_settings({"backend": "gpu"}).backend == "local"  # unknown: the default, not a crash
