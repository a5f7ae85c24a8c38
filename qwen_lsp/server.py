"""The pygls server: registers handlers and translates protocol types; features do the work."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from qwen_lsp import __version__, completion, explain, fix
from qwen_lsp.config import Settings, parse_settings
from qwen_lsp.documents import Document, Documents
from qwen_lsp.engine.base import Engine, EngineError, EngineState, EngineStatus
from qwen_lsp.protocol import QwenProtocol

log = logging.getLogger(__name__)

EXPLAIN_COMMAND = "qwen.explain"
FIX_COMMAND = "qwen.fix"
SOURCE = "qwen-lsp"
REPORTS_PER_SECOND = 20
STATUS_REQUEST = "qwen/status"

EngineFactory = Callable[[Settings], Engine]


class RequestFailed(JsonRpcException):
    """LSP's RequestFailed: the request was valid but could not be served (e.g. no model)."""

    CODE = -32803


class QwenLanguageServer(LanguageServer):
    def __init__(self, engine_factory: EngineFactory) -> None:
        super().__init__(
            "qwen-lsp",
            __version__,
            text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental,
            protocol_cls=QwenProtocol,
        )
        self.engine_factory = engine_factory
        self.settings = Settings()
        self.documents = Documents()
        self._engine: Engine | None = None
        self._explain_tokens: dict[lsp.ProgressToken, asyncio.Task[Any]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    # -- engine ----------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.engine_factory(self.settings)
            self._engine.add_status_listener(self._threadsafe(self._on_engine_status))
            self._engine.start()
        return self._engine

    def _threadsafe(self, callback: Callable[[EngineStatus], None]) -> Callable[[EngineStatus], None]:
        loop = asyncio.get_running_loop()
        return lambda status: loop.call_soon_threadsafe(callback, status)

    def _on_engine_status(self, status: EngineStatus) -> None:
        log.info("engine: %s %s", status.state.value, status.message)
        if status.state is EngineState.FAILED:
            self.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Error, f"qwen-lsp: {status.message}"))

    def _background(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    def client_supports_progress(self) -> bool:
        window = self.client_capabilities.window
        return bool(window and window.work_done_progress)

    async def report_engine_load(self) -> None:
        """Show model preparation and loading as `$/progress` until the engine is ready."""
        if not self.client_supports_progress():
            return
        token = f"qwen-lsp/load/{uuid.uuid4()}"
        try:
            await self.work_done_progress.create_async(token)
        except Exception:  # noqa: BLE001 - a client may refuse; loading goes on regardless
            return
        done = asyncio.Event()
        last_sent = 0.0

        def on_status(status: EngineStatus) -> None:
            nonlocal last_sent
            if done.is_set():
                return
            if status.state in (EngineState.READY, EngineState.FAILED):
                self.work_done_progress.end(token, lsp.WorkDoneProgressEnd(message=status.message))
                done.set()
            elif time.monotonic() - last_sent > 0.1 or status.fraction in (None, 0.0, 1.0):
                last_sent = time.monotonic()
                percentage = int(status.fraction * 100) if status.fraction is not None else None
                self.work_done_progress.report(
                    token, lsp.WorkDoneProgressReport(message=status.message, percentage=percentage)
                )

        self.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(title="Qwen model", percentage=0))
        engine = self.engine
        engine.add_status_listener(self._threadsafe(on_status))
        on_status(engine.status)

    # -- documents -------------------------------------------------------------------------------
    def document(self, uri: str) -> Document:
        doc = self.documents.get(uri)
        if doc is None:
            raise JsonRpcInvalidParams(f"document {uri} is not open")
        return doc

    def publish_syntax_diagnostics(self, doc: Document) -> None:
        diagnostics = [to_diagnostic(doc, p) for p in fix.syntax_problems(doc)]
        self.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=doc.uri, version=doc.version, diagnostics=diagnostics)
        )


# -- translation helpers ---------------------------------------------------------------------------
def to_position(doc: Document, offset: int) -> lsp.Position:
    line, character = doc.position_at(offset)
    return lsp.Position(line=line, character=character)


def to_range(doc: Document, start: int, end: int) -> lsp.Range:
    return lsp.Range(start=to_position(doc, start), end=to_position(doc, end))


def offsets(doc: Document, rng: lsp.Range) -> tuple[int, int]:
    start = doc.offset_at(rng.start.line, rng.start.character)
    end = doc.offset_at(rng.end.line, rng.end.character)
    return min(start, end), max(start, end)


def to_diagnostic(doc: Document, problem: fix.Problem) -> lsp.Diagnostic:
    return lsp.Diagnostic(
        range=to_range(doc, problem.start, problem.end),
        message=problem.message,
        severity=lsp.DiagnosticSeverity.Error,
        source=SOURCE,
    )


def engine_errors_as_lsp(error: EngineError) -> RequestFailed:
    return RequestFailed(str(error))


def create_server(engine_factory: EngineFactory) -> QwenLanguageServer:
    server = QwenLanguageServer(engine_factory)

    @server.feature(lsp.INITIALIZE)
    def initialize(ls: QwenLanguageServer, params: lsp.InitializeParams) -> None:
        ls.settings = parse_settings(params.initialization_options)
        encoding = ls.workspace.position_encoding
        ls.documents.encoding = str(getattr(encoding, "value", encoding) or "utf-16")

    @server.feature(lsp.INITIALIZED)
    def initialized(ls: QwenLanguageServer, params: lsp.InitializedParams) -> None:
        ls.engine  # noqa: B018 - start loading the model in the background now
        ls._background(ls.report_engine_load())

    @server.feature(lsp.SHUTDOWN)
    def shutdown(ls: QwenLanguageServer, params: None) -> None:
        if ls._engine is not None:
            ls._engine.close()

    @server.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: QwenLanguageServer, params: lsp.DidChangeConfigurationParams) -> None:
        ls.settings = parse_settings(params.settings, ls.settings)

    # -- document sync ---------------------------------------------------------------------------
    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: QwenLanguageServer, params: lsp.DidOpenTextDocumentParams) -> None:
        item = params.text_document
        doc = ls.documents.open(item.uri, item.text, item.version, item.language_id)
        ls.publish_syntax_diagnostics(doc)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: QwenLanguageServer, params: lsp.DidChangeTextDocumentParams) -> None:
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            log.warning("change to a document that is not open: %s", params.text_document.uri)
            return
        for change in params.content_changes:
            if isinstance(change, lsp.TextDocumentContentChangePartial):
                start, end = offsets(doc, change.range)
                doc.replace(start, end, change.text)
            else:
                doc.replace_all(change.text)
        doc.version = params.text_document.version
        ls.publish_syntax_diagnostics(doc)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: QwenLanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
        ls.documents.close(params.text_document.uri)

    # -- completion ------------------------------------------------------------------------------
    async def suggest(ls: QwenLanguageServer, uri: str, position: lsp.Position) -> tuple[Document, completion.Suggestion | None]:
        doc = ls.document(uri)
        if not ls.settings.enable_completion:
            return doc, None
        try:
            return doc, await completion.suggest(ls.engine, ls.settings, doc, doc.offset_at(position.line, position.character))
        except EngineError as exc:
            raise engine_errors_as_lsp(exc) from exc

    @server.feature(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, lsp.InlineCompletionOptions())
    async def inline_completion(ls: QwenLanguageServer, params: lsp.InlineCompletionParams) -> lsp.InlineCompletionList:
        doc, suggestion = await suggest(ls, params.text_document.uri, params.position)
        if suggestion is None:
            return lsp.InlineCompletionList(items=[])
        at = to_position(doc, suggestion.offset)
        return lsp.InlineCompletionList(
            items=[lsp.InlineCompletionItem(insert_text=suggestion.text, range=lsp.Range(at, at))]
        )

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=[".", "(", " "]))
    async def classic_completion(ls: QwenLanguageServer, params: lsp.CompletionParams) -> lsp.CompletionList:
        doc, suggestion = await suggest(ls, params.text_document.uri, params.position)
        if suggestion is None:
            return lsp.CompletionList(is_incomplete=True, items=[])
        at = to_position(doc, suggestion.offset)
        item = lsp.CompletionItem(
            label=suggestion.text.strip().splitlines()[0][:60],
            kind=lsp.CompletionItemKind.Text,
            detail="Qwen",
            text_edit=lsp.TextEdit(range=lsp.Range(at, at), new_text=suggestion.text),
            filter_text="",
            sort_text="0",
        )
        return lsp.CompletionList(is_incomplete=True, items=[item])

    # -- explain ---------------------------------------------------------------------------------
    @server.feature(
        lsp.TEXT_DOCUMENT_CODE_ACTION,
        lsp.CodeActionOptions(
            code_action_kinds=[lsp.CodeActionKind.QuickFix, lsp.CodeActionKind.Empty],
            resolve_provider=True,
        ),
    )
    def code_action(ls: QwenLanguageServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
        doc = ls.document(params.text_document.uri)
        actions = []
        start, end = offsets(doc, params.range)
        if end > start:
            arguments = [{"textDocument": {"uri": doc.uri}, "range": ls.protocol._converter.unstructure(params.range)}]
            actions.append(
                lsp.CodeAction(
                    title="Explain with Qwen",
                    kind=lsp.CodeActionKind.Empty,
                    command=lsp.Command(title="Explain with Qwen", command=EXPLAIN_COMMAND, arguments=arguments),
                )
            )
        for diagnostic in params.context.diagnostics:
            actions.append(
                lsp.CodeAction(
                    title=f"Fix with Qwen: {diagnostic.message}",
                    kind=lsp.CodeActionKind.QuickFix,
                    diagnostics=[diagnostic],
                    data={"uri": doc.uri, "version": doc.version},
                )
            )
        return actions

    @server.feature(lsp.CODE_ACTION_RESOLVE)
    async def code_action_resolve(ls: QwenLanguageServer, action: lsp.CodeAction) -> lsp.CodeAction:
        data = action.data if isinstance(action.data, dict) else {}
        if not action.diagnostics or "uri" not in data:
            return action
        doc = ls.document(data["uri"])
        diagnostic = action.diagnostics[0]
        start, end = offsets(doc, diagnostic.range)
        version = doc.version
        try:
            result = await fix.propose_fix(ls.engine, ls.settings, doc, fix.Problem(start, end, diagnostic.message))
        except EngineError as exc:
            raise engine_errors_as_lsp(exc) from exc
        if not result.edits:
            action.title = f"{action.title} (no fix: {result.reason})"
            return action
        edits = [lsp.TextEdit(range=to_range(doc, e.start, e.end), new_text=e.new_text) for e in result.edits]
        action.edit = lsp.WorkspaceEdit(
            document_changes=[
                lsp.TextDocumentEdit(
                    text_document=lsp.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=version),
                    edits=edits,
                )
            ]
        )
        return action

    @server.command(EXPLAIN_COMMAND)
    async def explain_command(ls: QwenLanguageServer, params: lsp.ExecuteCommandParams) -> dict[str, str]:
        """Result: `{"text": markdown}`; the text also streams as `$/progress` report messages."""
        args = params.arguments or []
        try:
            target = args[0]
            doc = ls.document(target["textDocument"]["uri"])
            rng = ls.protocol._converter.structure(target["range"], lsp.Range)
        except Exception as exc:  # noqa: BLE001 - any malformed argument is the caller's error
            raise JsonRpcInvalidParams(
                'qwen.explain expects [{"textDocument": {"uri": ...}, "range": {...}}]'
            ) from exc
        start, end = offsets(doc, rng)
        token = params.work_done_token
        if token is None and ls.client_supports_progress():
            token = f"qwen-lsp/explain/{uuid.uuid4()}"
            await ls.work_done_progress.create_async(token)
        last_sent = 0.0

        def on_update(update: explain.ExplainUpdate) -> None:
            nonlocal last_sent
            if token is None:
                return
            now = time.monotonic()
            if now - last_sent < 1 / REPORTS_PER_SECOND:
                return
            last_sent = now
            if update.text is None:
                percentage = int((update.prompt_fraction or 0) * 100)
                report = lsp.WorkDoneProgressReport(message=f"Reading the code… {percentage}%", percentage=percentage)
            else:
                report = lsp.WorkDoneProgressReport(message=update.text)
            ls.work_done_progress.report(token, report)

        if token is not None:
            ls.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(title="Qwen: explain", cancellable=True))
            task = asyncio.current_task()
            assert task is not None
            ls._explain_tokens[token] = task
        try:
            text = await explain.explain(ls.engine, ls.settings, doc, start, end, on_update)
            if token is not None:  # the last report always carries the whole answer
                ls.work_done_progress.report(token, lsp.WorkDoneProgressReport(message=text))
            return {"text": text}
        except EngineError as exc:
            raise engine_errors_as_lsp(exc) from exc
        finally:
            if token is not None:
                ls._explain_tokens.pop(token, None)
                ls.work_done_progress.end(token, lsp.WorkDoneProgressEnd())

    @server.feature(lsp.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def work_done_progress_cancel(ls: QwenLanguageServer, params: lsp.WorkDoneProgressCancelParams) -> None:
        task = ls._explain_tokens.pop(params.token, None)
        if task is not None:
            task.cancel()

    @server.feature(STATUS_REQUEST)
    def status(ls: QwenLanguageServer, params: Any) -> dict[str, Any]:
        """`qwen/status`: the backend, its state, and the stats of its latest requests."""
        engine = ls._engine
        if engine is None:
            return {"state": "idle"}
        return {"message": engine.status.message, **engine.describe(), "recent": engine.recent_stats()}

    return server
