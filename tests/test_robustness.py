"""Issue 15, robustness: line ends in fix edits, frames one byte short, the remote backend's
stream end, retries, defused text and API keys."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

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
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
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
