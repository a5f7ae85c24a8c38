"""An LSP client wired through pipes to a server running in a thread of this process.

The command line uses it so that `complete`, `explain` and `fix` travel the same path as an
editor's requests: JSON-RPC in, handlers, features, engine, JSON-RPC out.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.io_ import StdoutWriter, run_async
from pygls.lsp.client import LanguageClient

from qwen_lsp import __version__
from qwen_lsp.lsp.server import ENGINE_CLOSE_SECONDS, QwenLanguageServer

# `shutdown` waits for the model to be freed (see QwenLanguageServer.close_engine).
SHUTDOWN_SECONDS = ENGINE_CLOSE_SECONDS + 5

ProgressHandler = Callable[[lsp.ProgressParams], None]


class InProcessClient:
    def __init__(self, server: QwenLanguageServer, initialization_options: dict[str, Any] | None = None) -> None:
        self.server = server
        self.initialization_options = initialization_options or {}
        self.client = LanguageClient("qwen-lsp-cli", __version__)
        self.diagnostics: dict[str, lsp.PublishDiagnosticsParams] = {}
        self._diagnostics_changed = asyncio.Event()
        self.on_progress: ProgressHandler = lambda params: None
        self._stop = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []

        handlers: dict[str, Callable[[Any], None]] = {
            lsp.PROGRESS: self._on_progress,
            lsp.WINDOW_WORK_DONE_PROGRESS_CREATE: lambda params: None,
            lsp.WINDOW_SHOW_MESSAGE: lambda params: print(params.message, file=sys.stderr),
            lsp.WINDOW_LOG_MESSAGE: lambda params: None,
            lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS: self._on_diagnostics,
        }
        for method, handler in handlers.items():
            # A function of its own each: pygls marks the handler it registers with attributes,
            # which a bound method cannot take.
            self.client.feature(method)(lambda params, handler=handler: handler(params))

    def _on_progress(self, params: lsp.ProgressParams) -> None:
        self.on_progress(params)  # looked up per message: the command line replaces it

    def _on_diagnostics(self, params: lsp.PublishDiagnosticsParams) -> None:
        self.diagnostics[params.uri] = params
        self._diagnostics_changed.set()

    async def __aenter__(self) -> InProcessClient:
        to_server_r, to_server_w = os.pipe()
        to_client_r, to_client_w = os.pipe()
        server_thread = threading.Thread(
            target=self.server.start_io,
            args=(os.fdopen(to_server_r, "rb"), os.fdopen(to_client_w, "wb")),
            name="qwen-lsp-server",
            daemon=True,
        )
        server_thread.start()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(to_client_r, "rb"))
        self.client.protocol.set_writer(StdoutWriter(os.fdopen(to_server_w, "wb")))
        self._tasks.append(asyncio.create_task(run_async(self._stop, reader, self.client.protocol)))
        await self.client.initialize_async(
            lsp.InitializeParams(
                capabilities=lsp.ClientCapabilities(
                    general=lsp.GeneralClientCapabilities(position_encodings=[lsp.PositionEncodingKind.Utf32]),
                    window=lsp.WindowClientCapabilities(work_done_progress=True),
                    # `fix` resolves quick fixes into versioned edits, as an editor would.
                    text_document=lsp.TextDocumentClientCapabilities(
                        code_action=lsp.CodeActionClientCapabilities(
                            data_support=True, resolve_support=lsp.ClientCodeActionResolveOptions(properties=["edit"])
                        )
                    ),
                    workspace=lsp.WorkspaceClientCapabilities(workspace_edit=lsp.WorkspaceEditClientCapabilities(document_changes=True)),
                ),
                initialization_options=self.initialization_options,
                process_id=os.getpid(),
            )
        )
        self.client.initialized(lsp.InitializedParams())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), timeout=SHUTDOWN_SECONDS)
            self.client.exit(None)
        except (TimeoutError, RuntimeError):
            pass
        self._stop.set()

    def open(self, path: Path) -> str:
        uri = path.resolve().as_uri()
        text = path.read_bytes().decode("utf-8", errors="replace")  # as it is: CRLF stays CRLF
        self._diagnostics_changed.clear()
        self.client.text_document_did_open(
            lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="", version=1, text=text))
        )
        return uri

    async def wait_for_diagnostics(self, uri: str, timeout: float = 5.0) -> list[lsp.Diagnostic]:
        while uri not in self.diagnostics:
            self._diagnostics_changed.clear()
            await asyncio.wait_for(self._diagnostics_changed.wait(), timeout)
        return list(self.diagnostics[uri].diagnostics)
