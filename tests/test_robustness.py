"""Issue 15, robustness: line ends in fix edits, frames one byte short, the remote backend's
stream end, retries, defused text and API keys."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

from qwen_lsp.engine.base import StopReason
from tests.conftest import open_doc, server_env, server_status
from tests.rawlsp import RawServer, frame


@pytest.fixture
def raw(tmp_path):
    """A server on raw pipes; no model is needed for protocol behaviour."""
    server = RawServer(server_env(QWEN_LSP_MODEL=str(tmp_path / "no-model.gguf")), stderr=tmp_path / "stderr.log")
    yield server
    server.close()


# -- transport ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("short_by", [1, 2])
def test_a_content_length_one_byte_short_is_still_answered(raw, short_by):
    """A body whose JSON ends in "}}" cut by one still ends in "}": it looks whole, but the
    missing byte is waiting before the next header."""
    raw.initialize()
    status = {"jsonrpc": "2.0", "id": "short", "method": "qwen/status", "params": {}}
    body = json.dumps(status).encode()
    raw.send_bytes(frame(status, length=len(body) - short_by))
    assert "result" in raw.response("short", timeout=10)
    raw.send({**status, "id": "next"})
    assert "result" in raw.response("next", timeout=10)


# -- line ends in fixes ------------------------------------------------------------------------------
BROKEN = 'def greet(name)\n    return "Hello, " + name\n\n\nprint(greet("Ada"))\n'


def test_edits_made_on_lf_text_keep_each_lines_own_end():
    """The diff is made on the text as the model saw it ("\n" ends) and mapped back: lines left
    alone keep their ends (mixed ones too), new lines take the document's, and no edit starts
    or ends between a "\r" and its "\n". A form feed is a character, not a line end."""
    from qwen_lsp.edits import TextEdit, apply_edits, edits_keeping_line_ends, split_lines

    old = "a\r\nb\nc\x0cd\r\n"
    edits = edits_keeping_line_ends(old, "a\nB\nc\x0cd\ne\n", base=10)
    assert edits == (TextEdit(13, 14, "B"), TextEdit(20, 20, "e\r\n"))
    assert apply_edits(old, [TextEdit(e.start - 10, e.end - 10, e.new_text) for e in edits]) == "a\r\nB\nc\x0cd\r\ne\r\n"
    assert split_lines("x\x0cy\rz\r\n\u2028w") == ["x\x0cy\r", "z\r\n", "\u2028w"]


@pytest.mark.model
def test_fix_write_changes_only_the_bytes_of_the_fix(model_path, tmp_path):
    """`qwen-lsp fix FILE:LINE --write` on a CRLF file with a form feed line (^L, which Python's
    str.splitlines counts as a line end and LSP does not) above the error: the file gains the
    one missing colon and keeps every other byte."""
    before = ("# greetings\n\x0c\n" + BROKEN).replace("\n", "\r\n").encode()
    path = tmp_path / "greet.py"
    path.write_bytes(before)
    command = [sys.executable, "-m", "qwen_lsp", "fix", f"{path}:3", "--write"]
    done = subprocess.run(command, env=server_env(QWEN_LSP_MODEL=str(model_path)), capture_output=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert path.read_bytes() == before.replace(b"def greet(name)\r\n", b"def greet(name):\r\n")


@pytest.mark.model
@pytest.mark.parametrize("line_end", ["\r\n", "\r"], ids=["crlf", "cr"])
async def test_a_fix_keeps_the_documents_line_ends_and_is_minimal(client, tmp_path, line_end):
    """The model reads and writes "\n"; a CRLF or CR-only document still gets one edit that
    inserts the missing colon, not a rewrite of the unit with its line ends changed."""
    text = BROKEN.replace("\n", line_end)
    uri = open_doc(client, str(tmp_path / "greet.py"), text)
    while not client.diagnostics.get(uri):  # our own syntax diagnostics arrive after didOpen
        await asyncio.sleep(0.05)
    diagnostic = client.diagnostics[uri][0]
    if line_end == "\r":
        # Our own diagnostic is misplaced in a CR-only file (tree-sitter reads it as one line; a
        # syntax-layer issue): use the one Pyright publishes, at the end of the `def` line.
        end = lsp.Position(0, len("def greet(name)"))
        diagnostic = lsp.Diagnostic(lsp.Range(end, end), 'Expected ":"', source="Pyright")
    params = lsp.CodeActionParams(lsp.TextDocumentIdentifier(uri), diagnostic.range, lsp.CodeActionContext(diagnostics=[diagnostic]))
    quickfix = next(a for a in await client.text_document_code_action_async(params) if a.kind == lsp.CodeActionKind.QuickFix)
    resolved = await client.code_action_resolve_async(quickfix)
    assert resolved.edit is not None, resolved.title
    edits = resolved.edit.document_changes[0].edits if resolved.edit.document_changes else resolved.edit.changes[uri]
    assert [(e.range.start.line, e.range.start.character, e.range.end.line, e.range.end.character, e.new_text) for e in edits] == [
        (0, len("def greet(name)"), 0, len("def greet(name)"), ":")
    ]


# -- the remote backend, against a fake OpenAI-compatible server --------------------------------------
class FakeOpenAI:
    """Answers GET /v1/models and streams `answer` for completions. `hold_open`: after [DONE]
    the connection stays open (a proxy); `swallow`: a completion is read and the connection
    closed without a word. Records each request's first line and Authorization header."""

    def __init__(self, answer: str = "a + b", hold_open: bool = False, swallow: bool = False) -> None:
        self.answer, self.hold_open, self.swallow = answer, hold_open, swallow
        self.requests: list[tuple[str, str]] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append((lines[0], headers.get("authorization", "")))
        if lines[0].startswith("GET /v1/models"):
            body = json.dumps({"data": [{"id": "qwen"}]}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
        elif not self.swallow:
            event = {"choices": [{"index": 0, "text": self.answer, "finish_reason": "stop"}]}
            data = f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            if self.hold_open:
                await writer.drain()
                await asyncio.sleep(60)
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> FakeOpenAI:
        self.listener = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.listener.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.listener.close()

    def endpoint(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/v1"


def completion_params(uri: str) -> lsp.InlineCompletionParams:
    return lsp.InlineCompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri),
        position=lsp.Position(1, 11),
        context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Invoked),
    )


async def remote_client(make_client, remote: FakeOpenAI, tmp_path, userinfo: str = "", **env: str):
    client = await make_client(env=server_env(**env), options={"backend": "openai", "endpoint": remote.endpoint(userinfo)})
    return client, open_doc(client, str(tmp_path / "a.py"), "def add(a, b):\n    return ")


async def test_an_answer_after_done_is_not_held_by_a_connection_left_open(make_client, tmp_path):
    async with FakeOpenAI(hold_open=True) as remote:
        client, uri = await remote_client(make_client, remote, tmp_path)
        started = time.perf_counter()
        result = await client.text_document_inline_completion_async(completion_params(uri))
        elapsed = time.perf_counter() - started
    assert result.items and result.items[0].insert_text == "a + b"
    assert elapsed < 5, f"answered after {elapsed:.1f} s: the stream was read past [DONE]"


async def test_a_request_the_server_may_have_received_is_not_sent_twice(make_client, tmp_path):
    """A new connection that closes after taking the request: the model may be generating, so
    the POST is not repeated (only a kept-alive connection closed under it is retried)."""
    async with FakeOpenAI(swallow=True) as remote:
        client, uri = await remote_client(make_client, remote, tmp_path)
        with pytest.raises(JsonRpcException):
            await client.text_document_inline_completion_async(completion_params(uri))
    posts = [line for line, _ in remote.requests if line.startswith("POST")]
    assert len(posts) == 1, remote.requests


async def test_the_users_special_token_spellings_come_back_without_zero_width_spaces(make_client, tmp_path):
    """The user's "<|im_end|>" goes out defused; the model copies it back that way; the
    suggestion holds the user's spelling, and no other zero-width space is touched."""
    answer = 'a + b  # "<|\u200bim_end|>" and <|\u200bfim_middle|>, a\u200bb'
    async with FakeOpenAI(answer=answer) as remote:
        client, uri = await remote_client(make_client, remote, tmp_path)
        result = await client.text_document_inline_completion_async(completion_params(uri))
    assert result.items[0].insert_text == 'a + b  # "<|im_end|>" and <|fim_middle|>, a\u200bb'


@pytest.mark.parametrize("key", ["sk-test-7731\r\n", " sk-test-7731 "], ids=["newline", "spaces"])
async def test_an_api_key_with_spaces_around_it_is_used_stripped(make_client, tmp_path, key):
    async with FakeOpenAI() as remote:
        client, uri = await remote_client(make_client, remote, tmp_path, QWEN_LSP_API_KEY=key)
        result = await client.text_document_inline_completion_async(completion_params(uri))
    assert result.items and result.items[0].insert_text == "a + b"
    assert {auth for _, auth in remote.requests} == {"Bearer sk-test-7731"}


@pytest.mark.parametrize("secret", ["key", "password"])
async def test_the_api_key_and_the_endpoints_password_are_in_no_message(make_client, tmp_path, secret):
    """A key the HTTP library refuses (a line break inside) makes an error that quotes the
    header; a server that is down, an error that names the endpoint: neither the key nor the
    URL's password reaches the error response, the pop-up or the status."""
    async with FakeOpenAI() as remote:
        if secret == "key":
            client, uri = await remote_client(make_client, remote, tmp_path, QWEN_LSP_API_KEY="sk-secret-7731\nmore")
        else:
            remote.listener.close()
            await remote.listener.wait_closed()
            client, uri = await remote_client(make_client, remote, tmp_path, userinfo="ada:hunter2-7731@")
        with pytest.raises(JsonRpcException) as error:
            await client.text_document_inline_completion_async(completion_params(uri))
        status = await server_status(client)
    shown = [str(error.value), json.dumps(status), *(m.message for m in client.messages)]
    assert any("127.0.0.1" in text for text in shown), shown
    assert not [text for text in shown if "7731" in text], shown


# -- hangs, lost answers and stale edits (items 2, 5, 7, 12, 13, 15) ----------------------------------
FAKE_SERVER = [sys.executable, "-m", "tests.fake_engine"]


@pytest.fixture
def fake_client(make_client):
    """Start servers running the fake engine: `await fake_client(options=..., answer=...)`."""

    async def factory(options: dict | None = None, answer: str | None = None, capabilities=None):
        env = server_env(**({"QWEN_LSP_FAKE_ANSWER": answer} if answer is not None else {}))
        return await make_client(env=env, options=options, capabilities=capabilities, command=FAKE_SERVER)

    return factory


async def test_closing_a_document_while_its_completion_waits_answers_nothing(fake_client, tmp_path):
    """Item 7: with `debounceMs`, the request waits; a didClose meanwhile forgets the document's
    request numbers. The request answers an empty list, not -32603 (KeyError)."""
    client = await fake_client(options={"debounceMs": 300})
    uri = open_doc(client, str(tmp_path / "a.py"), "def add(a, b):\n    return ")
    pending = asyncio.ensure_future(client.text_document_inline_completion_async(completion_params(uri)))
    await asyncio.sleep(0.1)
    client.text_document_did_close(lsp.DidCloseTextDocumentParams(lsp.TextDocumentIdentifier(uri)))
    result = await asyncio.wait_for(pending, 10)
    assert list(result.items) == []


def test_a_fix_written_while_the_user_typed_is_refused(tmp_path):
    """Item 2: a client without `documentChanges` (Neovim) gets edits without a version. Lines
    typed above the error while the model writes would make the edit land on the wrong lines:
    the version is checked again after generating, and a stale fix is refused with the reason."""
    from tests.rawlsp import RawServer

    uri = (tmp_path / "greet.py").as_uri()
    fixed = BROKEN.replace("def greet(name)", "def greet(name):").split("\n\n\n")[0]
    answer = f"```python\n{fixed}\n```\n" + "The colon was missing. " * 80  # the model talks on
    server = RawServer({**server_env(), "QWEN_LSP_FAKE_ANSWER": answer}, FAKE_SERVER, tmp_path / "stderr.log")
    try:
        server.initialize(
            capabilities={"workspace": {"applyEdit": True}, "textDocument": {"codeAction": {"resolveSupport": {"properties": ["edit"]}}}}
        )
        server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": BROKEN}})
        end = {"line": 0, "character": len("def greet(name)")}
        diagnostic = {"range": {"start": end, "end": end}, "message": 'Expected ":"', "source": "Pyright"}
        params = {"textDocument": {"uri": uri}, "range": diagnostic["range"], "context": {"diagnostics": [diagnostic]}}
        quickfix = next(a for a in server.request("textDocument/codeAction", params)["result"] if a.get("kind") == "quickfix")
        top = {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}}
        typed = {
            "jsonrpc": "2.0",
            "method": "textDocument/didChange",
            "params": {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"range": top, "text": "import os\n\n"}]},
        }
        server.send({"jsonrpc": "2.0", "id": "fix", "method": "codeAction/resolve", "params": quickfix})
        time.sleep(0.1)  # the model is writing (the fake one takes ~0.5 s for this answer)
        server.send(typed)
        resolved = server.response("fix", timeout=30)["result"]
    finally:
        server.close()
    assert resolved.get("edit") is None, resolved["edit"]
    assert "changed while" in resolved["title"], resolved["title"]


def _missing_model(*_: object) -> object:
    from qwen_lsp.engine.base import ModelUnavailable

    raise ModelUnavailable("no model at /nowhere/model.gguf")


def _chat_request():
    from qwen_lsp.engine.base import ChatMessage, GenerationRequest

    return GenerationRequest(messages=(ChatMessage("user", "hi"),), max_tokens=4)


async def test_a_failed_load_gives_each_request_its_own_short_error():
    """Item 13: one shared exception raised again and again collects a frame list per raise,
    pinning every request's frames until the next retry. Each request gets its own error."""
    import traceback

    from qwen_lsp.engine.base import ModelUnavailable
    from qwen_lsp.engine.local import LocalEngine, LocalSettings

    engine = LocalEngine(LocalSettings(), _missing_model)
    errors, depths = [], []
    for _ in range(6):
        with pytest.raises(ModelUnavailable) as caught:
            await asyncio.wait_for(engine.generate(_chat_request()).complete(), 10)
        errors.append(caught.value)
        depths.append(len(traceback.extract_tb(caught.value.__traceback__)))
    engine.close()
    assert len(set(depths)) == 1, depths
    assert len({id(error) for error in errors}) == len(errors)
    assert all("no model at /nowhere/model.gguf" in str(error) for error in errors)


async def test_a_request_to_a_closed_engine_is_answered_at_once():
    """Item 5: a settings change closes the engine while a fix waits to send its retry; the
    retry goes to the closed engine, whose worker has gone. It must fail at once, not hang.
    (Here the load is retried on every request, as when the user just put a model in place.)"""
    import itertools

    from qwen_lsp.engine.base import EngineError
    from qwen_lsp.engine.local import LocalEngine, LocalSettings

    engine = LocalEngine(LocalSettings(), _missing_model, itertools.count().__next__)
    with pytest.raises(EngineError):
        await asyncio.wait_for(engine.generate(_chat_request()).complete(), 10)
    engine.close()
    with pytest.raises(EngineError, match=r"replaced|closed"):
        await asyncio.wait_for(engine.generate(_chat_request()).complete(), 10)


@pytest.mark.parametrize("change", [{"completionMaxTokens": 5}, {"modelName": "other-qwen"}], ids=["max-tokens", "model"])
async def test_a_settings_change_that_shapes_answers_is_not_served_old_answers(make_client, tmp_path, change):
    """Item 12: the suggestion cache is keyed on the place only; after `completionMaxTokens`
    or the model changes, the same place must be asked of the model again."""
    async with FakeOpenAI() as remote:
        client, uri = await remote_client(make_client, remote, tmp_path)
        await client.text_document_inline_completion_async(completion_params(uri))
        asked = len(remote.requests)
        again = await client.text_document_inline_completion_async(completion_params(uri))
        assert len(remote.requests) == asked and again.items[0].insert_text == "a + b", "the cache answers the same place"
        client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings=change))
        await client.text_document_inline_completion_async(completion_params(uri))
    posts = [line for line, _ in remote.requests[asked:] if line.startswith("POST")]
    assert posts, "answered from the cache made with the old settings"


async def test_quick_settings_changes_rebuild_the_engine_once(make_client, tmp_path):
    """Item 15: five quick changes of a setting the engine is built from load the model once,
    after the last; an engine replaced meanwhile shows no pop-up of its own. (The model is
    missing here, so each load is a failure shown to the user.)"""
    client = await make_client(env=server_env(QWEN_LSP_MODEL=str(tmp_path / "no-model.gguf")))
    for _ in range(100):
        if any(m.type == lsp.MessageType.Error for m in client.messages):
            break
        await asyncio.sleep(0.05)
    for n_ctx in range(1024, 1029):
        client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings={"nCtx": n_ctx}))
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.5)
    status = await server_status(client)
    errors = [m.message for m in client.messages if m.type == lsp.MessageType.Error]
    assert len(errors) == 2, errors  # the first engine's, the last one's
    assert status["n_ctx"] == 1028, status


# -- serve --tcp (item 8) ------------------------------------------------------------------------------
class TcpClient:
    """A minimal LSP client on a socket: sends requests, reads frames back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> TcpClient:
        for _ in range(100):
            try:
                return cls(*await asyncio.open_connection("127.0.0.1", port))
            except OSError:
                await asyncio.sleep(0.1)
        raise AssertionError("the server never listened")

    def send(self, message: dict) -> None:
        self.writer.write(frame({"jsonrpc": "2.0", **message}))

    async def response(self, msg_id: object, timeout: float = 20) -> dict:
        """The response with this id; any other response in between fails the test."""
        while True:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
            body = json.loads(await self.reader.readexactly(int(head.split(b":")[1].split(b"\r\n")[0])))
            if "method" in body:
                continue
            assert body.get("id") == msg_id, f"got another request's answer: {body}"
            return body

    async def initialize(self, name: str) -> dict:
        self.send({"id": f"{name}-init", "method": "initialize", "params": {"processId": None, "rootUri": None, "capabilities": {}}})
        return await self.response(f"{name}-init")

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_each_tcp_connection_is_a_session_of_its_own(tmp_path):
    """Item 8: every connection used to share one protocol: a second client got the first one's
    answers, and after a disconnect nobody could initialize again. Now a second client while
    one is connected is told so; after a disconnect a new client starts a fresh session."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = server_env(QWEN_LSP_MODEL=str(tmp_path / "no-model.gguf"))
    command = [sys.executable, "-m", "qwen_lsp", "serve", "--tcp", f"127.0.0.1:{port}"]
    proc = await asyncio.create_subprocess_exec(*command, env=env, stderr=open(tmp_path / "stderr.log", "wb"))  # noqa: SIM115
    try:
        first = await TcpClient.connect(port)
        assert "result" in await first.initialize("first")
        first.send({"method": "initialized", "params": {}})
        uri = (tmp_path / "a.py").as_uri()
        first.send(
            {
                "method": "textDocument/didOpen",
                "params": {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": "x = 1\n"}},
            }
        )
        second = await TcpClient.connect(port)
        refused = await second.initialize("second")
        assert "serving another client" in refused["error"]["message"], refused
        first.send({"id": "first-status", "method": "qwen/status", "params": {}})
        assert (await first.response("first-status"))["result"]["process"]["open_documents"] == 1
        await first.close()
        await second.close()
        third = await TcpClient.connect(port)
        assert "result" in await third.initialize("third")
        third.send({"id": "third-status", "method": "qwen/status", "params": {}})
        assert (await third.response("third-status"))["result"]["process"]["open_documents"] == 0  # not the first's
        third.send({"id": "third-shutdown", "method": "shutdown"})
        assert "result" in await third.response("third-shutdown")
        third.send({"method": "exit"})
        await third.close()
        fourth = await TcpClient.connect(port)  # `exit` ended the session, not the server
        assert "result" in await fourth.initialize("fourth")
        await fourth.close()
    finally:
        proc.kill()
        await proc.wait()


async def test_closing_at_the_end_stops_the_models_work_and_waits_for_it(model_path):
    """A process that exits while llama.cpp still evaluates a prompt on the worker thread
    crashes (SIGSEGV, seen in CI after `qwen-lsp complete`: the idle prefill was running).
    `close(wait=...)` at the end of a session stops the work in hand and what is queued, and
    returns once the model is freed."""
    from qwen_lsp.engine.base import GenerationRequest
    from qwen_lsp.engine.local import LocalEngine, LocalSettings
    from qwen_lsp.engine.tokens import Prompt

    engine = LocalEngine(LocalSettings(), lambda progress: model_path)
    long_prompt = Prompt.template("def f(x):\n    return x\n" * 400)  # some seconds to read
    reading = asyncio.Event()
    running = engine.generate(GenerationRequest(prompt=long_prompt, max_tokens=8), lambda fraction: reading.set())
    queued = engine.generate(GenerationRequest(prompt=Prompt.template("def g():\n"), max_tokens=8))
    answers = [asyncio.create_task(generation.complete()) for generation in (running, queued)]
    await asyncio.wait_for(reading.wait(), 120)
    engine.close(wait=30)
    assert not any(t.name == "qwen-lsp-engine" and t.is_alive() for t in threading.enumerate()), "the worker still runs"
    await asyncio.wait_for(asyncio.gather(*answers), 5)
    assert [g.stats.stop_reason for g in (running, queued)] == [StopReason.CANCELLED] * 2


# -- a remote engine replaced mid-stream (item 15) ----------------------------------------------------
class SlowOpenAI(FakeOpenAI):
    """Streams `words` words (" w0 w1 …": the space before the cursor is the model's to write),
    `delay` seconds apart, without [DONE]: an answer still being written when the engine is
    replaced. `streaming` is set once the first word is out."""

    def __init__(self, words: int, delay: float = 0.05) -> None:
        super().__init__()
        self.words, self.delay = words, delay
        self.streaming = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        length = next((int(v) for k, _, v in (line.partition(":") for line in head[1:]) if k.lower() == "content-length"), 0)
        await reader.readexactly(length)
        self.requests.append((head[0], ""))
        if head[0].startswith("GET"):
            body = json.dumps({"data": [{"id": "qwen"}]}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            chat = "/chat/" in head[0]
            try:
                for n in range(self.words):
                    choice = {"delta": {"content": f" w{n}"}} if chat else {"text": f" w{n}"}
                    event = f"data: {json.dumps({'choices': [{'index': 0, **choice}]})}\n\n".encode()
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                    self.streaming.set()
                    await asyncio.sleep(self.delay)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            except ConnectionError:
                return  # the client hung up: what a cancel does
        writer.close()


async def test_replacing_a_remote_engine_lets_the_answer_in_flight_finish(make_client, tmp_path):
    """Item 15: a settings change that rebuilds the engine closed the old engine's HTTP client
    under a stream in flight; the request answered an error ("broke the stream: ReadError")
    that the editor shows. The answer being written is read to its end instead."""
    async with SlowOpenAI(words=30) as remote:
        client = await make_client(options={"backend": "openai", "endpoint": remote.endpoint(), "completionMaxMs": 0})
        uri = open_doc(client, str(tmp_path / "a.py"), "def add(a, b):\n    return ")
        pending = asyncio.ensure_future(client.text_document_inline_completion_async(completion_params(uri)))
        await asyncio.wait_for(remote.streaming.wait(), 10)
        client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings={"nThreads": 1}))
        result = await asyncio.wait_for(pending, 15)
    assert not [m.message for m in client.messages if m.type == lsp.MessageType.Error]
    assert result.items and result.items[0].insert_text.split()[-1] == "w29", result


async def test_a_remote_stream_cut_at_the_end_of_the_session_ends_as_cancelled():
    """`close(wait=...)` (the session ends) stops what is in flight: the request ends cancelled,
    not with an error about a broken stream."""
    from qwen_lsp.engine.base import ChatMessage, GenerationRequest
    from qwen_lsp.engine.remote import RemoteEngine, RemoteSettings

    async with SlowOpenAI(words=100) as remote:
        engine = RemoteEngine(RemoteSettings(endpoint=remote.endpoint()))
        generation = engine.generate(GenerationRequest(messages=(ChatMessage("user", "explain"),), max_tokens=200))
        await asyncio.wait_for(remote.streaming.wait(), 10)
        engine.close(wait=5)
        text = await asyncio.wait_for(generation.complete(), 5)
    assert text.startswith(" w0") and generation.stats.stop_reason is StopReason.CANCELLED


@pytest.mark.parametrize("chosen_by", ["settings", "command line"])
async def test_no_idle_prefill_is_sent_to_a_remote_server(make_client, tmp_path, chosen_by):
    """A remote server's prompt cache is its own: a guessed prefill there costs it real work and,
    cut by a server going down, showed an error. The backend may be chosen by the settings or by
    `serve --backend openai` flags (which the server's settings do not show)."""
    async with FakeOpenAI() as remote:
        if chosen_by == "settings":
            client, uri = await remote_client(make_client, remote, tmp_path)
        else:
            command = [sys.executable, "-m", "qwen_lsp", "serve", "--backend", "openai", "--endpoint", remote.endpoint()]
            client = await make_client(command=command)
            uri = open_doc(client, str(tmp_path / "a.py"), "def add(a, b):\n    return ")
        client.protocol.notify("qwen/cursorRested", {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 11}})
        await asyncio.sleep(1.0)
    assert not [line for line, _ in remote.requests if line.startswith("POST")], remote.requests


async def test_a_prefill_gives_way_to_any_request_that_comes_while_it_reads(model_path):
    """Idle work must never delay real work: a prefill (nothing to generate) being read when an
    explanation arrives stops within a step, not after its whole prompt (a fix or explain
    request waited up to a whole prefill)."""
    from qwen_lsp.engine.base import ChatMessage, GenerationRequest
    from qwen_lsp.engine.local import LocalEngine, LocalSettings
    from qwen_lsp.engine.tokens import Prompt

    engine = LocalEngine(LocalSettings(), lambda progress: model_path)
    reading = asyncio.Event()
    prefill = engine.generate(
        GenerationRequest(prompt=Prompt.template("def f(x):\n    return x\n" * 300), max_tokens=0), lambda f: reading.set()
    )
    prefilled = asyncio.create_task(prefill.complete())
    await asyncio.wait_for(reading.wait(), 120)
    answer = await asyncio.wait_for(
        engine.generate(GenerationRequest(messages=(ChatMessage("user", "Say hi."),), max_tokens=4)).complete(), 60
    )
    await prefilled
    engine.close(wait=30)
    assert answer
    assert prefill.stats.stop_reason is StopReason.CANCELLED, prefill.stats
    assert prefill.stats.evaluated_tokens < prefill.stats.prompt_tokens / 2, prefill.stats
