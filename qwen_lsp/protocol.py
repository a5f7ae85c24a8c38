"""JSON-RPC behaviour that pygls does not give us out of the box."""

from __future__ import annotations

from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method


class QwenProtocol(LanguageServerProtocol):
    """Runs `workspace/executeCommand` as the task of its own request, with the whole params.

    pygls' built-in runs a command under a fresh id that `$/cancelRequest` cannot reach, and drops
    the request's `workDoneToken`; a streaming, cancellable explain needs both.
    """

    @lsp_method(lsp.WORKSPACE_EXECUTE_COMMAND)
    async def lsp_workspace__execute_command(self, params: lsp.ExecuteCommandParams) -> Any:
        handler = self.fm.commands.get(params.command)
        if handler is None:
            raise JsonRpcInvalidParams(f"unknown command {params.command!r}")
        return await handler(params)
