"""The pygls server: registers handlers and translates protocol types; features do the work."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from qwen_lsp import __version__, explain, fix, watchdog
from qwen_lsp.completion import completer as completion
from qwen_lsp.syntax import diagnostics
from qwen_lsp.lsp import transport
from qwen_lsp.config import Settings, parse_settings
from qwen_lsp.syntax.documents import Document, Documents
from qwen_lsp.engine.base import Engine, EngineError, EngineState, EngineStatus
from qwen_lsp.lsp.protocol import QwenProtocol

log = logging.getLogger(__name__)

EXPLAIN_COMMAND = "qwen.explain"
FIX_COMMAND = "qwen.fix"
SOURCE = "qwen-lsp"
REPORTS_PER_SECOND = 20
STATUS_REQUEST = "qwen/status"
# Settings the engine is built from: changing one replaces the engine.
ENGINE_SETTINGS = ("model", "n_ctx", "n_threads", "backend", "endpoint", "model_name")

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
        self._reported_errors: set[str] = set()
        self._failure_shown: str | None = None

    def report_server_error(self, error: Exception, source: Any) -> None:
        # pygls shows every failure outside a request as a message; one failing on each
        # keystroke would bury the editor in pop-ups. Each distinct error is shown once.
        key = f"{type(error).__name__}: {error}"
        if key not in self._reported_errors:
            self._reported_errors.add(key)
            super().report_server_error(error, source)

    # -- transport: our reader survives broken frames (see transport.py) -------------------------
    def start_io(self, stdin: Any = None, stdout: Any = None) -> int:  # type: ignore[override]
        return transport.serve_io(self, stdin, stdout)

    def start_tcp(self, host: str, port: int) -> int:  # type: ignore[override]
        return transport.serve_tcp(self, host, port)

    # -- engine ----------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.engine_factory(self.settings)
            self._engine.add_status_listener(self._threadsafe(self._on_engine_status))
            self._engine.start()
        return self._engine

    def restart_engine(self) -> None:
        """Build the engine afresh from the current settings; requests already queued on the old
        one are still served by it, new ones go to the new one."""
        old, self._engine = self._engine, None
        if old is not None:
            old.close()
        self._failure_shown = None
        self.start_engine()

    def start_engine(self) -> None:
        """Start loading the model in the background now, showing the load as `$/progress`."""
        self.engine  # noqa: B018
        self._background(self.report_engine_load())

    def _threadsafe(self, callback: Callable[[EngineStatus], None]) -> Callable[[EngineStatus], None]:
        loop = asyncio.get_running_loop()
        return lambda status: loop.call_soon_threadsafe(callback, status)

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
        problems = diagnostics.syntax_problems(doc.text, doc.tree, doc.language_id)
        published = [to_diagnostic(doc, p) for p in problems]
        self.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=doc.uri, version=doc.version, diagnostics=published)
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


def to_diagnostic(doc: Document, problem: diagnostics.Problem) -> lsp.Diagnostic:
    return lsp.Diagnostic(
        range=to_range(doc, problem.start, problem.end),
        message=problem.message,
        severity=lsp.DiagnosticSeverity.Error,
        source=SOURCE,
    )


def process_figures(ls: QwenLanguageServer) -> dict[str, int]:
    """What a long-running server must not accumulate (the soak test watches these)."""
    return {
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "pending_requests": len(ls.protocol._request_futures),
        "open_documents": len(ls.documents),
    }


def engine_errors_as_lsp(error: EngineError) -> RequestFailed:
    return RequestFailed(str(error))


def create_server(engine_factory: EngineFactory) -> QwenLanguageServer:
    server = QwenLanguageServer(engine_factory)

    @server.feature(lsp.INITIALIZE)
    def initialize(ls: QwenLanguageServer, params: lsp.InitializeParams) -> None:
        ls.settings = parse_settings(params.initialization_options)
        watchdog.watch_parent(params.process_id)
        encoding = ls.workspace.position_encoding
        ls.documents.encoding = str(getattr(encoding, "value", encoding) or "utf-16")

    @server.feature(lsp.INITIALIZED)
    def initialized(ls: QwenLanguageServer, params: lsp.InitializedParams) -> None:
        ls.start_engine()

    @server.feature(lsp.SHUTDOWN)
    def shutdown(ls: QwenLanguageServer, params: None) -> None:
        if ls._engine is not None:
            ls._engine.close()

    @server.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: QwenLanguageServer, params: lsp.DidChangeConfigurationParams) -> None:
        before, ls.settings = ls.settings, parse_settings(params.settings, ls.settings)
        if ls._engine is not None and any(getattr(before, name) != getattr(ls.settings, name) for name in ENGINE_SETTINGS):
            ls.restart_engine()

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
        if params.text_document.version <= doc.version:
            # Versions strictly increase; an older one is a replayed or stale change, and its
            # deltas applied to the current text would corrupt it.
            log.warning("ignored a change to %s: version %d is not after %d", doc.uri, params.text_document.version, doc.version)
            return
        for change in params.content_changes:
            if isinstance(change, lsp.TextDocumentContentChangePartial):
                start, end = offsets(doc, change.range)
                doc.replace(start, end, change.text)
            else:
                doc.replace_all(change.text)
        doc.version = params.text_document.version
        ls.publish_syntax_diagnostics(doc)
        last = params.content_changes[-1] if params.content_changes else None
        if isinstance(last, lsp.TextDocumentContentChangePartial) and len(last.text) <= completion.TYPED_CHARS:
            # Typing: let the engine read the new prefix while the user goes on.
            completer.warm(ls.settings, doc, doc.offset_at(last.range.start.line, last.range.start.character) + len(last.text))

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: QwenLanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
        ls.documents.close(params.text_document.uri)
        completer.forget(params.text_document.uri)

    # -- completion ------------------------------------------------------------------------------
    completer = completion.Completer(lambda: server.engine)

    async def suggest(ls: QwenLanguageServer, uri: str, position: lsp.Position) -> tuple[Document, completion.Suggestion | None]:
        doc = ls.document(uri)
        if not ls.settings.enable_completion:
            return doc, None
        try:
            return doc, await completer.suggest(ls.settings, doc, doc.offset_at(position.line, position.character))
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

    # -- explain and fix --------------------------------------------------------------------------
    def client_resolves_edits(ls: QwenLanguageServer) -> bool:
        text_document = ls.client_capabilities.text_document
        support = text_document.code_action.resolve_support if text_document and text_document.code_action else None
        return bool(support and "edit" in support.properties)

    def client_takes_document_changes(ls: QwenLanguageServer) -> bool:
        workspace = ls.client_capabilities.workspace
        return bool(workspace and workspace.workspace_edit and workspace.workspace_edit.document_changes)

    def wanted(params: lsp.CodeActionParams, kind: lsp.CodeActionKind) -> bool:
        only = params.context.only
        return not only or any(kind == k or kind.value.startswith(f"{k.value}.") for k in only)

    @server.feature(
        lsp.TEXT_DOCUMENT_CODE_ACTION,
        lsp.CodeActionOptions(
            code_action_kinds=[lsp.CodeActionKind.QuickFix, lsp.CodeActionKind.Empty],
            resolve_provider=True,
        ),
    )
    def code_action(ls: QwenLanguageServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
        """Explain the selection (or the function at the cursor), and one quick fix per
        diagnostic. Nothing here runs the model: fixes are written in codeAction/resolve, or by
        the `qwen.fix` command for clients that cannot resolve an edit."""
        doc = ls.document(params.text_document.uri)
        actions = []
        start, end = offsets(doc, params.range)
        target = explain.target(doc, start, end) if wanted(params, lsp.CodeActionKind.Empty) else None
        if target is not None:
            title = "Explain with Qwen" if target.label == "selection" else f"Explain {target.label} with Qwen"
            arguments = [{"textDocument": {"uri": doc.uri}, "range": ls.protocol._converter.unstructure(to_range(doc, target.start, target.end))}]
            actions.append(
                lsp.CodeAction(
                    title=title,
                    kind=lsp.CodeActionKind.Empty,
                    command=lsp.Command(title=title, command=EXPLAIN_COMMAND, arguments=arguments),
                )
            )
        if not wanted(params, lsp.CodeActionKind.QuickFix):
            return actions
        resolves = client_resolves_edits(ls)
        for diagnostic in params.context.diagnostics:
            title = f"Fix with Qwen: {diagnostic.message.splitlines()[0] if diagnostic.message else 'this problem'}"
            identifier = {"uri": doc.uri, "version": doc.version}
            action = lsp.CodeAction(title=title, kind=lsp.CodeActionKind.QuickFix, diagnostics=[diagnostic], data=identifier)
            if not resolves:
                arguments = [{"textDocument": identifier, "diagnostic": ls.protocol._converter.unstructure(diagnostic)}]
                action.command = lsp.Command(title=title, command=FIX_COMMAND, arguments=arguments)
            actions.append(action)
        return actions

    async def fix_edit(ls: QwenLanguageServer, uri: str, version: int | None, diagnostic: lsp.Diagnostic) -> tuple[lsp.WorkspaceEdit | None, str]:
        """The fix of one diagnostic as a workspace edit, or None and the reason there is none."""
        live = ls.document(uri)
        if version is not None and version != live.version:
            return None, "the document changed since the fix was offered; ask again"
        # The model takes seconds and the user may type meanwhile: work on a copy, and send the
        # edit for the copy's version, which the editor refuses if the document moved on.
        doc = Document(live.uri, live.text, live.version, live.language_id, live.encoding)
        start, end = offsets(doc, diagnostic.range)
        try:
            result = await fix.propose_fix(ls.engine, ls.settings, doc, diagnostics.Problem(start, end, diagnostic.message))
        except EngineError as exc:
            raise engine_errors_as_lsp(exc) from exc
        if not result.edits:
            return None, result.reason
        edits = [lsp.TextEdit(range=to_range(doc, e.start, e.end), new_text=e.new_text) for e in result.edits]
        if not client_takes_document_changes(ls):
            return lsp.WorkspaceEdit(changes={doc.uri: edits}), ""
        identifier = lsp.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version)
        return lsp.WorkspaceEdit(document_changes=[lsp.TextDocumentEdit(text_document=identifier, edits=edits)]), ""

    @server.feature(lsp.CODE_ACTION_RESOLVE)
    async def code_action_resolve(ls: QwenLanguageServer, action: lsp.CodeAction) -> lsp.CodeAction:
        data = action.data if isinstance(action.data, dict) else {}
        if not action.diagnostics or "uri" not in data:
            return action
        edit, reason = await fix_edit(ls, data["uri"], data.get("version"), action.diagnostics[0])
        if edit is None:
            action.title = f"{action.title} (no fix: {reason})"
        action.edit = edit
        return action

    @server.command(FIX_COMMAND)
    async def fix_command(ls: QwenLanguageServer, params: lsp.ExecuteCommandParams) -> dict[str, object]:
        """Fix and apply through `workspace/applyEdit`. Result: `{"applied": bool, "reason": str}`."""
        try:
            target = (params.arguments or [])[0]
            uri = target["textDocument"]["uri"]
            version = target["textDocument"].get("version")
            diagnostic = ls.protocol._converter.structure(target["diagnostic"], lsp.Diagnostic)
        except Exception as exc:  # noqa: BLE001 - any malformed argument is the caller's error
            raise JsonRpcInvalidParams(
                'qwen.fix expects [{"textDocument": {"uri": ..., "version": ...}, "diagnostic": {...}}]'
            ) from exc
        edit, reason = await fix_edit(ls, uri, version, diagnostic)
        if edit is None:
            ls.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Warning, f"Qwen found no fix: {reason}"))
            return {"applied": False, "reason": reason}
        response = await ls.workspace_apply_edit_async(lsp.ApplyWorkspaceEditParams(edit=edit, label="Fix with Qwen"))
        return {"applied": response.applied, "reason": response.failure_reason or ""}

    @server.command(EXPLAIN_COMMAND)
    async def explain_command(ls: QwenLanguageServer, params: lsp.ExecuteCommandParams) -> dict[str, object]:
        """Result: `{"text": markdown, "complete": bool}`. The text also streams as the messages
        of `$/progress` reports, the last of which equals the result's text. `complete` is false
        when the user stopped it (window/workDoneProgress/cancel) or it hit explainMaxTokens."""
        args = params.arguments or []
        try:
            target = args[0]
            doc = ls.document(target["textDocument"]["uri"])
            rng = ls.protocol._converter.structure(target["range"], lsp.Range)
        except JsonRpcException:
            raise
        except Exception as exc:  # noqa: BLE001 - any malformed argument is the caller's error
            raise JsonRpcInvalidParams(
                'qwen.explain expects [{"textDocument": {"uri": ...}, "range": {...}}]'
            ) from exc
        what = explain.target(doc, *offsets(doc, rng))
        if what is None:
            raise JsonRpcInvalidParams("nothing to explain: the range is empty and not inside a function")
        token = params.work_done_token
        if token is None and ls.client_supports_progress():
            token = f"qwen-lsp/explain/{uuid.uuid4()}"
            try:
                await ls.work_done_progress.create_async(token)
            except Exception:  # noqa: BLE001 - a client may refuse; the answer still comes as the result
                token = None
        last_sent = 0.0
        latest = ""

        def on_update(update: explain.ExplainUpdate) -> None:
            nonlocal last_sent, latest
            if update.text is not None:
                latest = update.text
            now = time.monotonic()
            if token is None or now - last_sent < 1 / REPORTS_PER_SECOND:
                return
            last_sent = now
            if update.text is None:
                percentage = int((update.prompt_fraction or 0) * 100)
                report = lsp.WorkDoneProgressReport(message=f"Reading the code… {percentage}%", percentage=percentage)
            else:
                report = lsp.WorkDoneProgressReport(message=update.text)
            ls.work_done_progress.report(token, report)

        if token is not None:
            title = f"Qwen: explain {what.label}"
            ls.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(title=title, cancellable=True, percentage=0))
            task = asyncio.current_task()
            assert task is not None
            ls._explain_tokens[token] = task
        text, complete = "", False
        try:
            result = await explain.explain(ls.engine, ls.settings, doc, what.start, what.end, on_update)
            text, complete = result.text, result.complete
        except asyncio.CancelledError:
            text = latest
            current = asyncio.current_task()
            if token is None or token in ls._explain_tokens or current is None:
                raise  # $/cancelRequest: the request is cancelled
            current.uncancel()  # window/workDoneProgress/cancel: the user stopped it; keep what exists
        except EngineError as exc:
            raise engine_errors_as_lsp(exc) from exc
        finally:
            if token is not None:
                ls._explain_tokens.pop(token, None)
                if text:  # the last report always carries the whole answer
                    ls.work_done_progress.report(token, lsp.WorkDoneProgressReport(message=text))
                ls.work_done_progress.end(token, lsp.WorkDoneProgressEnd(message=None if complete else "stopped"))
        return {"text": text, "complete": complete}

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
            return {"state": "idle", "process": process_figures(ls)}
        return {"message": engine.status.message, **engine.describe(), "recent": engine.recent_stats(), "process": process_figures(ls)}

    return server
