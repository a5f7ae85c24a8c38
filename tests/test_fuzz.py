"""Property-based fuzzing (hypothesis), bounded for CI; QWEN_LSP_FUZZ_EXAMPLES raises the count.

- Document sync: random text (emoji, CJK, NUL, every LSP line end) and random edits with
  positions anywhere, in utf-8, utf-16 and utf-32, against a small independent model of the
  spec; the tree-sitter tree kept by incremental edits must equal a fresh parse.
- Messages: random byte streams and random JSON-RPC messages into the real transport and
  protocol (a fake engine behind them): no exception escapes, every well-formed request gets
  exactly one answer, and a valid request afterwards is answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_lsp.lsp.server import create_server
from qwen_lsp.lsp.transport import FrameReader, serve
from qwen_lsp.syntax.documents import Document
from tests.fake_engine import FakeEngine

EXAMPLES = int(os.environ.get("QWEN_LSP_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CHARS = st.sampled_from(
    ["a", "b", " ", "(", ")", ":", "\n", "\r", "\r\n", "\t", "é", "中", "😀", "\U0010ffff", "\x00", "def ", "x = 1\n", "\ud800"]
)
TEXT = st.lists(CHARS, max_size=40).map("".join)
NUMBER = st.one_of(st.integers(0, 12), st.integers(0, 2**31 - 1))
ENCODINGS = st.sampled_from(["utf-8", "utf-16", "utf-32"])


# -- a model of the spec's positions -----------------------------------------------------------
def width(char: str, encoding: str) -> int:
    if encoding == "utf-32":
        return 1
    if encoding == "utf-8":
        return len(char.encode("utf-8", "surrogatepass"))
    return 2 if ord(char) > 0xFFFF else 1


def reference_offset(text: str, line: int, column: int, encoding: str) -> int:
    """Lines end at \\r\\n, \\r or \\n; a column past the line's end is the end; a column inside
    a character is that character's start; a line past the end is the end of the text."""
    pieces = re.split(r"(\r\n|\r|\n)", text)
    lines = [(pieces[i], pieces[i + 1] if i + 1 < len(pieces) else "") for i in range(0, len(pieces), 2)]
    if line >= len(lines):
        return len(text)
    start = sum(len(content) + len(end) for content, end in lines[:line])
    units = 0
    for index, char in enumerate(lines[line][0]):
        if units + width(char, encoding) > column:
            return start + index
        units += width(char, encoding)
    return start + len(lines[line][0])


@FUZZ
@given(
    text=TEXT,
    encoding=ENCODINGS,
    edits=st.lists(st.tuples(NUMBER, NUMBER, NUMBER, NUMBER, TEXT), max_size=8),
)
def test_document_sync_matches_the_spec(text, encoding, edits):
    doc = Document("file:///fuzz.py", text, 1, "python", encoding)
    expected = text
    for start_line, start_column, end_line, end_column, new_text in edits:
        start = doc.offset_at(start_line, start_column)
        end = doc.offset_at(end_line, end_column)
        ref_start = reference_offset(expected, start_line, start_column, encoding)
        ref_end = reference_offset(expected, end_line, end_column, encoding)
        assert (start, end) == (ref_start, ref_end)
        low, high = min(start, end), max(start, end)
        doc.replace(low, high, new_text)
        expected = expected[:low] + new_text + expected[high:]
        assert doc.text == expected
    for offset in range(len(doc.text) + 1):
        line, column = doc.position_at(offset)
        back = doc.offset_at(line, column)
        # Every offset maps to a position and back, except inside a "\r\n" pair.
        assert back == offset or doc.text[offset - 1 : offset + 1] == "\r\n"
    if doc.tree is not None:
        fresh = Document("file:///fresh.py", doc.text, 1, "python", encoding)
        assert fresh.tree is not None and str(doc.tree.root_node) == str(fresh.tree.root_node)


# -- the message path -------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
METHODS = st.sampled_from(
    [
        "textDocument/didOpen",
        "textDocument/didChange",
        "textDocument/didClose",
        "textDocument/completion",
        "textDocument/inlineCompletion",
        "textDocument/codeAction",
        "codeAction/resolve",
        "qwen/status",
        "$/cancelRequest",
        "workspace/executeCommand",
        "workspace/didChangeConfiguration",
        "shutdown",
        "no/such",
        "initialize",
    ]
)
URI = "file:///fuzz/a.py"
POSITION = st.fixed_dictionaries({"line": st.integers(-2, 50), "character": st.integers(-2, 50)})
PARAMS = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "textDocument": st.fixed_dictionaries(
                {"uri": st.just(URI), "languageId": st.just("python"), "version": st.integers(-1, 9), "text": TEXT}
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "textDocument": st.fixed_dictionaries({"uri": st.just(URI), "version": st.integers(-1, 9)}),
            "contentChanges": st.lists(
                st.fixed_dictionaries({"range": st.fixed_dictionaries({"start": POSITION, "end": POSITION}), "text": TEXT}), max_size=3
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "textDocument": st.fixed_dictionaries({"uri": st.just(URI)}),
            "position": POSITION,
            "context": st.fixed_dictionaries({"triggerKind": st.integers(0, 3)}),
        }
    ),
    st.fixed_dictionaries({"id": st.integers(0, 20)}),
)
MESSAGE = st.tuples(st.booleans(), METHODS, PARAMS)  # (is a request, method, params)
FRAMING = st.sampled_from(["exact", "exact", "exact", "short", "long", "no-length", "garbage-before"])


def framed(body: bytes, framing: str) -> bytes:
    length = {"short": len(body) - 3, "long": len(body) + 7}.get(framing, len(body))
    header = b"" if framing == "no-length" else f"Content-Length: {max(length, 0)}\r\n".encode()
    prefix = b"\x00junk\r\n" if framing == "garbage-before" else b""
    return prefix + header + b"\r\n" + body


class Capture:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self, wait: float | None = None) -> None:
        pass

    def responses(self) -> list[dict]:
        found = []
        for match in re.finditer(rb"Content-Length: (\d+)\r\n\r\n", self.data):
            body = self.data[match.end() : match.end() + int(match.group(1))]
            message = json.loads(body)
            if "method" not in message:
                found.append(message)
        return found


async def exchange(stream: bytes, expected_ids: list[str]) -> Capture:
    server = create_server(lambda settings: FakeEngine())
    capture = Capture()
    server.protocol.set_writer(capture)  # type: ignore[arg-type]
    chunks = [stream[i : i + 97] for i in range(0, len(stream), 97)] + [b""]

    async def read() -> bytes:
        return chunks.pop(0) if chunks else b""

    await serve(FrameReader(read), server.protocol)  # type: ignore[arg-type]
    try:
        for _ in range(200):  # until every request is answered (the fake engine takes ms)
            answered = {r.get("id") for r in capture.responses()}
            if all(i in answered for i in expected_ids):
                break
            await asyncio.sleep(0.01)
    finally:
        if server._engine is not None:
            server._engine.close()
    return capture


@FUZZ
@given(messages=st.lists(st.tuples(MESSAGE, FRAMING), max_size=10), noise=st.binary(max_size=40))
def test_any_message_stream_leaves_every_request_answered(messages, noise):
    initialize = {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {"processId": None, "capabilities": {}}}
    stream = framed(json.dumps(initialize).encode(), "exact") + noise
    must_answer = ["init"]
    for number, ((is_request, method, params), framing) in enumerate(messages):
        message = {"jsonrpc": "2.0", "method": method, "params": params}
        if is_request:
            message["id"] = f"r{number}"
        stream += framed(json.dumps(message).encode(), framing)
        # Noise ahead of a frame may swallow its header; an intact frame after an intact one
        # must be answered.
        if is_request and framing == "exact" and not noise and all(f == "exact" for _, f in messages[:number]):
            must_answer.append(f"r{number}")
    stream += framed(json.dumps({"jsonrpc": "2.0", "id": "last", "method": "qwen/status", "params": {}}).encode(), "exact")
    must_answer.append("last")
    capture = asyncio.run(exchange(stream, must_answer))
    responses = capture.responses()
    ids = [r.get("id") for r in responses]
    for msg_id in must_answer:
        assert ids.count(msg_id) == 1, (msg_id, ids)
    assert all(("result" in r) != ("error" in r) for r in responses)
