"""The LSP base protocol on a byte stream, surviving broken frames.

pygls' reader (`pygls.io_.run_async`) needs an exact `Content-Length: N\r\n` line: a frame with a
missing or wrong length is lost without an answer, or shifts the stream so that every later
message is misread. This reader looks for the next header wherever it starts, notices a length
that ran into the next message, and hands each body to `QwenProtocol.receive`, which answers
what can be answered (a body that is not JSON gets a Parse error).

On stdio, the LSP stream gets a private copy of file descriptor 1, and fd 1 is pointed at stderr:
a stray print, from Python or from native code, can then never corrupt the stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, BinaryIO

from pygls.io_ import StdoutWriter

if TYPE_CHECKING:
    from pygls.server import JsonRPCServer

    from qwen_lsp.lsp.protocol import QwenProtocol

log = logging.getLogger(__name__)

# Case-insensitive, spaces tolerated, "\n" accepted for "\r\n"; searched, not anchored, so that
# garbage before a header is skipped.
CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r?\n", re.I)
HEADER_END = re.compile(rb"\r?\n\r?\n")
# The start of a header, cut anywhere: what a slightly too large length takes of the next frame.
HEADER_START = re.compile(
    rb"\s*" + b"".join(b"(?:" + re.escape(bytes([c])) for c in b"content-length") + rb"(?:[ \t]*(?::[ \t]*\d*\r?)?)?" + b")?" * 13 + b")",
    re.I,
)
MAX_HEADER_BYTES = 64 * 1024
# A 10 MB file is about 10 MB of JSON; a claim far above that is a broken header.
MAX_BODY_BYTES = 512 * 1024 * 1024
READ_SIZE = 1 << 16

Read = Callable[[], Awaitable[bytes]]


class FrameReader:
    """Yields message bodies from a stream of bytes that may hold broken frames."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._buf = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        data = await self._read()
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def next_body(self) -> bytes | None:
        """The next body, or None at the end of the stream."""
        while True:
            end = HEADER_END.search(self._buf)
            if end is None:
                if len(self._buf) > MAX_HEADER_BYTES:
                    log.warning("dropped %d bytes that hold no message header", len(self._buf) - 64)
                    del self._buf[:-64]  # the start of a header may be in the tail
                if not await self._fill():
                    if self._buf.strip():
                        log.warning("the stream ended inside a header")
                    return None
                continue
            headers = bytes(self._buf[: end.start()])
            matches = list(CONTENT_LENGTH.finditer(headers + b"\n"))
            body_start = end.end()
            if not matches:
                log.warning("dropped a frame without a Content-Length header (%d bytes)", body_start)
                del self._buf[:body_start]
                continue
            header = matches[-1]  # the last one: anything before it is garbage
            if header.start() > 0:
                log.warning("skipped %d bytes before a message header", header.start())
            length = int(header.group(1))
            if length > MAX_BODY_BYTES:
                log.warning("dropped a header announcing %d bytes", length)
                del self._buf[:body_start]
                continue
            return await self._body(body_start, length)

    async def _body(self, start: int, length: int) -> bytes | None:
        scanned = start
        while True:
            # A length too large runs into the next message: its header shows up inside the body
            # (a JSON body never holds a raw line break after "Content-Length: N").
            available = min(len(self._buf), start + length)
            nested = CONTENT_LENGTH.search(self._buf, max(start, scanned - 40), available)
            if nested is not None:
                log.warning("a Content-Length of %d ran into the next message", length)
                body = bytes(self._buf[start : nested.start()])
                del self._buf[: nested.start()]
                return body
            if available == start + length:
                break
            scanned = available
            if not await self._fill():
                log.warning("the stream ended inside a message body")
                body = bytes(self._buf[start:])
                self._buf.clear()
                return body or None
        body = bytes(self._buf[start : start + length])
        del self._buf[: start + length]
        return self._fix_length(body)

    def _fix_length(self, body: bytes) -> bytes:
        """A length a little too large takes the start of the next header (given back here);
        one too small cuts the JSON short, and the rest sits before the next header. A body
        cut short can still end in "}" (`{"params": {}}` less one byte), so what tells is the
        rest, not the body's end: after a right length the next bytes are a header or nothing."""
        end = body.rfind(b"}") + 1
        if end and end < len(body.rstrip()) and HEADER_START.fullmatch(body, end):
            log.warning("a Content-Length of %d ran into the next message", len(body))
            self._buf[0:0] = body[end:]
            return body[:end]
        following = CONTENT_LENGTH.search(self._buf)
        rest = bytes(self._buf[: following.start() if following else len(self._buf)])
        if not rest.strip():  # the usual case: no second parse
            return body
        try:
            json.loads(body + rest)
        except ValueError:
            return body
        log.warning("a Content-Length of %d was short by %d bytes", len(body), len(rest))
        del self._buf[: len(rest)]
        return body + rest


async def serve(reader: FrameReader, protocol: QwenProtocol) -> None:
    """Feed bodies to the protocol until the stream ends."""
    while (body := await reader.next_body()) is not None:
        try:
            protocol.receive(body)
        except Exception:
            log.exception("a message could not be handled")


# -- stdio -----------------------------------------------------------------------------------------
def _private_stdout() -> BinaryIO:
    """A private handle on fd 1 for the LSP stream; fd 1 itself then goes to stderr."""
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return stream


async def _pipe_reader(stdin: BinaryIO) -> Read:
    fd = stdin.fileno()
    mode = os.fstat(fd).st_mode
    loop = asyncio.get_running_loop()
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        # Non-blocking reads on the event loop: no thread waits on stdin at exit.
        stream = asyncio.StreamReader(limit=READ_SIZE)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), stdin)
        return lambda: stream.read(READ_SIZE)
    return lambda: loop.run_in_executor(None, os.read, fd, READ_SIZE)


def _run(shutdown: Callable[[], None], main: Coroutine[Any, Any, None]) -> int:
    """Run a transport's loop; the exit code is what the `exit` notification decided."""
    code = 0
    try:
        asyncio.run(main)
    except SystemExit as exc:  # the `exit` notification
        code = exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        pass
    finally:
        shutdown()
    return code


def serve_io(server: JsonRPCServer, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> int:
    """Serve LSP on a pair of byte streams (stdio by default). Returns the exit code: 0 after
    `shutdown` then `exit`, 1 when `exit` came without `shutdown` (as the spec asks)."""
    if stdout is None:
        stdout = _private_stdout()
    protocol: QwenProtocol = server.protocol  # type: ignore[assignment]
    protocol.set_writer(StdoutWriter(stdout))

    async def main() -> None:
        read = await _pipe_reader(stdin or sys.stdin.buffer)
        await serve(FrameReader(read), protocol)
        log.info("the client closed the connection")

    return _run(server.shutdown, main())


BUSY = "qwen-lsp is serving another client on this port (one at a time); try again once it disconnects"


def serve_tcp(make_server: Callable[[], JsonRPCServer], host: str, port: int) -> int:
    """Serve LSP on a TCP socket. Each connection is a session of its own, from a fresh server
    (documents, lifecycle, engine); `exit` ends the session, not the process. One session at a
    time: a process holds one model (see engine/local.py), so a second client while one is
    connected is answered with an error saying so, and disconnected."""
    busy = False

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal busy
        frames = FrameReader(lambda: reader.read(READ_SIZE))
        if busy:
            await _refuse(frames, writer)
            return
        busy = True
        server = make_server()
        protocol: QwenProtocol = server.protocol  # type: ignore[assignment]
        protocol.exit_ends_process = False
        protocol.set_writer(writer)
        try:
            await serve(frames, protocol)
        finally:
            busy = False
            protocol.set_writer(None)  # type: ignore[arg-type]
            server.shutdown()  # type: ignore[no-untyped-call]  # frees the model for the next session
            writer.close()
            log.info("a TCP client disconnected")

    async def main() -> None:
        listener = await asyncio.start_server(connection, host, port)
        async with listener:
            await listener.serve_forever()

    return _run(lambda: None, main())


async def _refuse(frames: FrameReader, writer: asyncio.StreamWriter) -> None:
    """Answer the first request of a client that cannot be served now, and hang up."""
    body = await frames.next_body()
    try:
        msg_id = json.loads(body).get("id") if body else None
    except (ValueError, AttributeError):
        msg_id = None
    error = json.dumps({"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32803, "message": BUSY}})
    writer.write(f"Content-Length: {len(error)}\r\n\r\n{error}".encode())
    await writer.drain()
    writer.close()
