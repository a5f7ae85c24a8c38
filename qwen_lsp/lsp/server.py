"""The pygls server: its state, and the registration of the handlers in `handlers/`."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import default_converter

from qwen_lsp import __version__
from qwen_lsp.completion.completer import Completer
from qwen_lsp.config import ENGINE_SETTINGS, Settings
from qwen_lsp.engine.base import Engine, EngineState, EngineStatus
from qwen_lsp.lsp import commands, transport
from qwen_lsp.lsp.capabilities import ClientFeatures
from qwen_lsp.lsp.convert import to_diagnostic
from qwen_lsp.lsp.handlers import code_actions, completion, explain, lifecycle, prefill, status, sync
from qwen_lsp.lsp.progress import Progress
from qwen_lsp.lsp.protocol import QwenProtocol
from qwen_lsp.syntax import diagnostics
from qwen_lsp.syntax.documents import Document, Documents

log = logging.getLogger(__name__)

# Model loading reports at most this often: its messages are steps, not a text being written.
LOAD_REPORTS_PER_SECOND = 10
# A settings change rebuilds the engine once the settings rest this long (a user sliding a
# value, or a settings file saved twice, would otherwise load the model once per change).
REBUILD_AFTER_SECONDS = 0.5

# At the end of a session, how long to wait for the model's worker to stop and free it (a
# step of prompt reading stops within milliseconds; a model being loaded cannot be stopped).
ENGINE_CLOSE_SECONDS = 30.0

# Distinct errors remembered as already shown (each is shown once).
REPORTED_ERRORS = 256

EngineFactory = Callable[[Settings], Engine]


class QwenLanguageServer(LanguageServer):
    def __init__(self, engine_factory: EngineFactory) -> None:
        converter = default_converter()  # type: ignore[no-untyped-call]  # pygls's own factory, untyped
        super().__init__(
            "qwen-lsp",
            __version__,
            text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental,
            protocol_cls=QwenProtocol,
            converter_factory=lambda: converter,
        )
        # The converter pygls reads messages with; command arguments are structured by it too.
        self.converter = converter
        self.engine_factory = engine_factory
        self.settings = Settings()
        self.client_features = ClientFeatures()
        self.documents = Documents()
        self.completer = Completer(lambda: self.engine)
        # Explanations in flight by progress token, which the user may stop from the progress UI.
        self.explanations: dict[lsp.ProgressToken, asyncio.Task[Any]] = {}
        self.client_locale: str | None = None  # `initialize`'s locale: the language of explanations
        self._engine: Engine | None = None
        # Engines replaced by a settings change, still serving what was queued on them.
        self._replaced: weakref.WeakSet[Engine] = weakref.WeakSet()
        self._tasks: set[asyncio.Future[Any]] = set()
        # Bounded: errors that differ in their text (a path, a position) must not grow it forever.
        self._reported_errors: LRUCache[str, None] = LRUCache(maxsize=REPORTED_ERRORS)
        self._failure_shown: str | None = None
        self._rebuild: asyncio.TimerHandle | None = None
        self._load_progress: Progress | None = None

    def report_server_error(self, error: Exception, source: Any) -> None:
        # pygls shows every failure outside a request as a message; one failing on each
        # keystroke would bury the editor in pop-ups. Each distinct error is shown once.
        key = f"{type(error).__name__}: {error}"
        if key not in self._reported_errors:
            self._reported_errors[key] = None
            super().report_server_error(error, source)

    # -- transport: our reader survives broken frames (see transport.py) -------------------------
    def start_io(self, stdin: Any = None, stdout: Any = None) -> int:
        return transport.serve_io(self, stdin, stdout)

    def shutdown(self) -> None:
        """The session is over (`exit`, or the connection closed): free the model first."""
        self.close_engine()
        super().shutdown()  # type: ignore[no-untyped-call]

    # -- settings and engine ---------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.engine_factory(self.settings)
            self._engine.add_status_listener(self._threadsafe(self._on_engine_status))
            self._engine.start()
        return self._engine

    @property
    def started_engine(self) -> Engine | None:
        """The engine if one was built: asking must not start loading a model."""
        return self._engine

    def update_settings(self, settings: Settings) -> None:
        """Take new settings; an engine built from different ones is replaced."""
        before, self.settings = self.settings, settings
        built = self._engine is not None or self._rebuild is not None
        if built and any(getattr(before, name) != getattr(settings, name) for name in ENGINE_SETTINGS):
            self.restart_engine()

    def restart_engine(self) -> None:
        """Let the engine built from the old settings go now (requests already queued on it are
        still served by it), and build the new one once the settings rest, or at the first
        request before that."""
        self._drop_engine()
        if self._rebuild is not None:
            self._rebuild.cancel()
        self._rebuild = asyncio.get_running_loop().call_later(REBUILD_AFTER_SECONDS, self._rebuild_now)

    def _rebuild_now(self) -> None:
        self._rebuild = None
        if self._engine is None:
            self.start_engine()

    def _drop_engine(self) -> None:
        """Close the engine; it is no longer ours to report on (its pop-ups and load progress)."""
        old, self._engine = self._engine, None
        if old is not None:
            old.remove_status_listeners()
            old.close()
            self._replaced.add(old)
        if self._load_progress is not None:
            self._load_progress.end("Settings changed")
            self._load_progress = None
        self._failure_shown = None

    def start_engine(self) -> None:
        """Start loading the model in the background now, showing the load as `$/progress`."""
        self.engine  # noqa: B018
        self.run_in_background(self.report_engine_load())

    def close_engine(self) -> None:
        """Stop every model this server built, drop their queued work, and wait until they are
        freed: a process that exits while llama.cpp still runs crashes."""
        for engine in [*self._replaced, *([self._engine] if self._engine is not None else [])]:
            engine.close(wait=ENGINE_CLOSE_SECONDS)

    def _threadsafe(self, callback: Callable[[EngineStatus], None]) -> Callable[[EngineStatus], None]:
        loop = asyncio.get_running_loop()

        def on_loop(status: EngineStatus) -> None:
            loop.call_soon_threadsafe(callback, status)

        return on_loop

    def _on_engine_status(self, status: EngineStatus) -> None:
        log.info("engine: %s %s", status.state.value, status.message)
        if status.state is EngineState.FAILED and status.message != self._failure_shown:
            # A load retried (see LocalEngine) and failing the same way is not news.
            self._failure_shown = status.message
            self.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Error, f"qwen-lsp: {status.message}"))
        elif status.state is EngineState.READY:
            if self._failure_shown is not None:
                self.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Info, f"qwen-lsp: {status.message}"))
            self._failure_shown = None

    def run_in_background(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def report_engine_load(self) -> None:
        """Show model preparation and loading as `$/progress` until the engine is ready."""
        progress = await Progress.create(self, "load", per_second=LOAD_REPORTS_PER_SECOND)
        if progress is None:
            return
        progress.begin("Qwen model")
        self._load_progress = progress
        engine = self.engine
        engine.add_status_listener(self._threadsafe(lambda status: show_load(progress, status)))
        show_load(progress, engine.status)

    # -- documents -------------------------------------------------------------------------------
    def document(self, uri: str) -> Document:
        doc = self.documents.get(uri)
        if doc is None:
            raise JsonRpcInvalidParams(f"document {uri} is not open")
        return doc

    def publish_syntax_diagnostics(self, doc: Document) -> None:
        problems = diagnostics.document_problems(doc)
        published = [to_diagnostic(doc, p) for p in problems]
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=doc.uri, version=doc.version, diagnostics=published))


def show_load(progress: Progress, status: EngineStatus) -> None:
    """One engine status as a report of the load, or its end once the engine is ready or failed."""
    if status.state in (EngineState.READY, EngineState.FAILED):
        progress.end(status.message)
        return
    percentage = int(status.fraction * 100) if status.fraction is not None else None
    # The first and last steps, and steps without a fraction, are always shown.
    progress.report(status.message, percentage, force=status.fraction in (None, 0.0, 1.0))


def create_server(engine_factory: EngineFactory) -> QwenLanguageServer:
    """A server with every handler registered; each handler's docstring names its LSP method."""
    server = QwenLanguageServer(engine_factory)
    server.feature(lsp.INITIALIZE)(lifecycle.initialize)
    server.feature(lsp.INITIALIZED)(lifecycle.initialized)
    server.feature(lsp.SHUTDOWN)(lifecycle.shutdown)
    server.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)(lifecycle.did_change_configuration)
    server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)(sync.did_open)
    server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)(sync.did_change)
    server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)(sync.did_close)
    server.feature(lsp.TEXT_DOCUMENT_DID_SAVE, lsp.SaveOptions(include_text=False))(sync.did_save)
    server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)(sync.did_change_watched_files)
    server.feature(lsp.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)(lifecycle.did_change_workspace_folders)
    server.feature(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, lsp.InlineCompletionOptions())(completion.inline_completion)
    server.feature(lsp.TEXT_DOCUMENT_COMPLETION, completion.CLASSIC_OPTIONS)(completion.classic_completion)
    server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION, code_actions.OPTIONS)(code_actions.code_action)
    server.feature(lsp.CODE_ACTION_RESOLVE)(code_actions.code_action_resolve)
    server.command(commands.FIX_COMMAND)(code_actions.fix_command)
    server.command(commands.EXPLAIN_COMMAND)(explain.explain_command)
    server.feature(lsp.WINDOW_WORK_DONE_PROGRESS_CANCEL)(explain.work_done_progress_cancel)
    server.feature(status.STATUS_REQUEST)(status.status)
    server.feature(prefill.CURSOR_RESTED)(prefill.cursor_rested)
    return server
