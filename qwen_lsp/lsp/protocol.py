"""JSON-RPC behaviour that pygls does not give us out of the box.

pygls 2.1.1 drops a request whose params do not fit the lsprotocol types without any answer (the
client waits forever), answers nothing before `initialize` or after `shutdown`, and logs whole
messages, document text included. `QwenProtocol.receive` takes one frame's body and makes sure
every request gets exactly one answer, with the error code the JSON-RPC and LSP specs name.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Generator
from typing import Any

import attrs
import cattrs
from lsprotocol import types as lsp
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcParseError,
    JsonRpcServerNotInitialized,
)
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import JsonRPCNotification, JsonRPCRequestMessage, JsonRPCResponseMessage
from pygls.protocol.language_server import lsp_method

log = logging.getLogger(__name__)

JSONRPC_VERSION = "2.0"


def _valid_id(value: object) -> bool:
    # JSON-RPC ids are strings or integers; true/false are not integers here.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def describe_validation_error(exc: Exception) -> str:
    """Where and what was wrong, without the values (they may be the user's code)."""
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc, path="$"))
    return type(exc).__name__


class QwenProtocol(LanguageServerProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._initialize_received = False
        # On stdio `exit` ends the process; a TCP session's `exit` ends only its connection.
        self.exit_ends_process = True

    # -- receiving -------------------------------------------------------------------------------
    def receive(self, body: bytes) -> None:
        """Handle one message body: parse, check its shape, structure it, dispatch it."""
        log.debug("received %r", body)
        try:
            data = json.loads(body)
        except ValueError as exc:  # includes bytes that are not UTF-8
            log.warning("a message is not valid JSON (%s)", type(exc).__name__)
            self._send_error(None, JsonRpcParseError("Parse error: the message is not valid JSON"))
            return
        if not isinstance(data, dict):
            # A JSON-RPC batch (an array) is not part of LSP.
            log.warning("a message is a JSON %s, not an object", type(data).__name__)
            self._send_error(None, JsonRpcInvalidRequest("Invalid request: a message must be a JSON object"))
            return
        msg_id = data.get("id")
        if data.get("jsonrpc") != JSONRPC_VERSION:
            self._send_error(msg_id if _valid_id(msg_id) else None, JsonRpcInvalidRequest('Invalid request: "jsonrpc" must be "2.0"'))
            return
        if "method" in data:
            self._receive_call(data)
        elif "result" in data or "error" in data:
            self._receive_response(data)
        else:
            self._send_error(msg_id if _valid_id(msg_id) else None, JsonRpcInvalidRequest("Invalid request: no method, result or error"))

    def _receive_call(self, data: dict[str, Any]) -> None:
        method = data["method"]
        is_request = "id" in data
        if is_request and not _valid_id(data["id"]):
            self._send_error(None, JsonRpcInvalidRequest("Invalid request: the id must be a string or an integer"))
            return
        if not isinstance(method, str):
            if is_request:
                self._send_error(data["id"], JsonRpcInvalidRequest("Invalid request: the method must be a string"))
            return
        fallback = JsonRPCRequestMessage if is_request else JsonRPCNotification
        message_type = self.get_message_type(method) or fallback
        if is_request and "id" not in attrs.fields_dict(message_type):
            self._send_error(data["id"], JsonRpcInvalidRequest(f"Invalid request: {method} is a notification, sent with an id"))
            return
        try:
            message = self._converter.structure(data, message_type)
        except Exception as exc:  # noqa: BLE001 - any shape the types reject is the sender's error
            detail = describe_validation_error(exc)
            log.warning("invalid params for %s: %s", method, detail)
            if is_request:
                self._send_error(data["id"], JsonRpcInvalidParams(f"Invalid params for {method}: {detail}"))
            return
        self.handle_message(message)

    def _receive_response(self, data: dict[str, Any]) -> None:
        msg_id = data.get("id")
        if not _valid_id(msg_id):
            log.warning("a response without a valid id was ignored")
            return
        assert isinstance(msg_id, str | int)
        try:
            if "error" in data:
                message = self._converter.structure(data, lsp.ResponseErrorMessage)
            else:
                message = self._converter.structure(data, self._result_types.pop(msg_id, None) or JsonRPCResponseMessage)
        except Exception as exc:  # noqa: BLE001 - fail the waiting request instead of leaving it pending
            detail = describe_validation_error(exc)
            log.warning("invalid response to %s: %s", msg_id, detail)
            self._handle_response(msg_id, None, lsp.ResponseError(code=JsonRpcInvalidParams.CODE, message=detail))
            return
        self.handle_message(message)

    def handle_message(self, message: Any) -> None:
        """The lifecycle rules of the LSP spec, then pygls' dispatch."""
        method = getattr(message, "method", None)
        is_request = method is not None and hasattr(message, "id")
        if method == lsp.EXIT:
            super().handle_message(message)
        elif method == lsp.INITIALIZE:
            if self._initialize_received:
                self._send_error(message.id, JsonRpcInvalidRequest("Invalid request: the server is already initialized"))
                return
            self._initialize_received = True
            super().handle_message(message)
        elif method is not None and not self._initialize_received:
            if is_request:
                self._send_error(message.id, JsonRpcServerNotInitialized(f"{method}: the server is not initialized yet"))
        elif method is not None and self._shutdown:
            if is_request:
                self._send_error(message.id, JsonRpcInvalidRequest(f"{method}: the server is shutting down"))
        else:
            super().handle_message(message)

    def _execute_handler(self, msg_id: Any, handler: Any, callback: Any, args: Any = None, kwargs: Any = None) -> None:
        """pygls files the future of every async or generator handler under its id, but only a
        request's answer takes it out again: each notification (every keystroke's didChange)
        would leave one behind for the life of the server."""

        def done(future: Any) -> None:
            self._request_futures.pop(msg_id, None)
            callback(future)

        super()._execute_handler(msg_id, handler, done, args, kwargs)

    def _send_error(self, msg_id: Any, error: JsonRpcException) -> None:
        self._send_data(lsp.ResponseErrorMessage(id=msg_id, error=error.to_response_error()))

    # -- sending ---------------------------------------------------------------------------------
    def _send_data(self, data: Any) -> None:
        """pygls' writer, without logging every outgoing message at INFO (they hold document
        text). Messages are logged at DEBUG by the transport instead."""
        if not data or self.writer is None:
            return
        body = json.dumps(data, default=self._serialize_message)  # ASCII: len() is the byte count
        log.debug("sending %s", body)
        try:
            written = self.writer.write(f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
            if inspect.isawaitable(written):  # a websocket writer
                asyncio.ensure_future(written)  # noqa: RUF006 - pygls' websocket writer, fire and forget
        except (BrokenPipeError, ConnectionError, ValueError):
            # The client is gone (closed pipe or closed file); the reader sees end of input next.
            log.warning("could not send a message: the client is gone")

    # -- built-in features -----------------------------------------------------------------------
    @lsp_method(lsp.EXIT)
    def lsp_exit(self, *args: Any) -> Generator[Any, Any, None]:
        if self.exit_ends_process:
            yield from super().lsp_exit(*args)
        elif self.writer is not None:
            self.writer.close()  # the transport sees the end of the connection

    @lsp_method(lsp.SHUTDOWN)
    def lsp_shutdown(self, *args: Any) -> Generator[Any, Any, None]:
        """pygls cancels every pending future while it iterates over them; a request the server
        sent to the client (`client/registerCapability` to a client that never answers) has a
        future whose cancel callback removes it from that dict at once, which broke the loop
        ("dictionary changed size during iteration") and answered `shutdown` with an error.
        Cancel those first, from a copy; pygls then finds only the rest."""
        current = self.msg_id
        for msg_id, future in list(self._request_futures.items()):
            if msg_id != current and not future.done() and not isinstance(future, asyncio.Future):
                future.cancel()
        yield from super().lsp_shutdown(*args)

    @lsp_method(lsp.WORKSPACE_EXECUTE_COMMAND)
    async def lsp_workspace__execute_command(self, params: lsp.ExecuteCommandParams) -> Any:  # type: ignore[override]  # pygls runs a coroutine as well
        """Runs a command as the task of its own request, with the whole params.

        pygls' built-in runs a command under a fresh id that `$/cancelRequest` cannot reach, and
        drops the request's `workDoneToken`; a streaming, cancellable explain needs both.
        """
        handler = self.fm.commands.get(params.command)
        if handler is None:
            raise JsonRpcInvalidParams(f"unknown command {params.command!r}")
        return await handler(params)

    # Our own `Documents` hold the text. pygls' built-ins would keep a second copy of every
    # document, and read a never-opened document from disk when a change for it arrives.
    @lsp_method(lsp.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: lsp.DidOpenTextDocumentParams) -> Generator[Any, Any, None]:
        yield from self._user_handler(lsp.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: lsp.DidChangeTextDocumentParams) -> Generator[Any, Any, None]:
        yield from self._user_handler(lsp.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: lsp.DidCloseTextDocumentParams) -> Generator[Any, Any, None]:
        yield from self._user_handler(lsp.TEXT_DOCUMENT_DID_CLOSE, params)

    def _user_handler(self, method: str, params: Any) -> Generator[Any, Any, None]:
        # pygls runs what a built-in yields, sync or async alike.
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None
