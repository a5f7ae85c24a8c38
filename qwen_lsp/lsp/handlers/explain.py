"""Explain: the `qwen.explain` command, streamed as `$/progress`, and stopping it.

Two kinds of cancel reach an explanation. `$/cancelRequest` cancels the request: it answers
RequestCancelled. `window/workDoneProgress/cancel` (the user's stop button on the progress) stops
the generation: the request answers with the text written so far, `complete` false.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import attrs
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams

from qwen_lsp import explain
from qwen_lsp.lsp import commands
from qwen_lsp.lsp.convert import offsets
from qwen_lsp.lsp.errors import engine_errors
from qwen_lsp.lsp.progress import Progress
from qwen_lsp.syntax.documents import Document

if TYPE_CHECKING:
    from qwen_lsp.lsp.server import QwenLanguageServer


async def explain_command(ls: QwenLanguageServer, params: lsp.ExecuteCommandParams) -> dict[str, object]:
    """`workspace/executeCommand` `qwen.explain`. Result: `{"text": markdown, "complete": bool}`.
    The text also streams as the messages of `$/progress` reports, the last of which equals the
    result's text. `complete` is false when the user stopped it or it hit explainMaxTokens."""
    doc, what = explain_target(ls, commands.arguments_of(ls.converter, params, commands.ExplainArguments))
    run = ExplainRun(await explain_progress(ls, params.work_done_token, what.label))
    text, complete = "", False
    try:
        with engine_errors():
            language = ls.settings.explain_language or ls.client_locale
            result = await explain.explain(ls.engine, ls.settings, doc, what.start, what.end, run.on_update, language=language)
        text, complete = result.text, result.complete
    except asyncio.CancelledError:
        text = run.latest
        if not stopped_by_user(ls, run.progress):
            raise  # $/cancelRequest: the request is cancelled
    finally:
        run.finish(ls, text, complete)
    return {"text": text, "complete": complete}


def work_done_progress_cancel(ls: QwenLanguageServer, params: lsp.WorkDoneProgressCancelParams) -> None:
    """`window/workDoneProgress/cancel`: the user stopped an explanation."""
    task = ls.explanations.pop(params.token, None)
    if task is not None:
        task.cancel()


def explain_target(ls: QwenLanguageServer, arguments: commands.ExplainArguments) -> tuple[Document, explain.Target]:
    doc = ls.document(arguments.text_document.uri)
    what = explain.target(doc, *offsets(doc, arguments.range))
    if what is None:
        raise JsonRpcInvalidParams("nothing to explain: the range is empty and not inside a function")
    return doc, what


async def explain_progress(ls: QwenLanguageServer, token: lsp.ProgressToken | None, label: str) -> Progress | None:
    """Progress on the client's token, or else on one of ours if the client shows progress; the
    request's task is filed under it for the user to stop."""
    progress = Progress(ls, token) if token is not None else await Progress.create(ls, "explain")
    if progress is not None:
        progress.begin(f"Qwen: explain {label}", cancellable=True)
        task = asyncio.current_task()
        assert task is not None
        ls.explanations[progress.token] = task
    return progress


def stopped_by_user(ls: QwenLanguageServer, progress: Progress | None) -> bool:
    """Whether a cancellation is the user's stop: its handler takes the token out before it
    cancels. The task is then uncancelled, to answer with what exists."""
    task = asyncio.current_task()
    if progress is None or progress.token in ls.explanations or task is None:
        return False
    task.uncancel()
    return True


@attrs.define
class ExplainRun:
    """The explanation so far, shown as progress reports (if the client shows progress)."""

    progress: Progress | None
    latest: str = ""

    def on_update(self, update: explain.ExplainUpdate) -> None:
        if update.text is not None:
            self.latest = update.text
        if self.progress is None:
            return
        if update.text is None:
            percentage = int((update.prompt_fraction or 0) * 100)
            self.progress.report(f"Reading the code… {percentage}%", percentage)
        else:
            self.progress.report(update.text)

    def finish(self, ls: QwenLanguageServer, text: str, complete: bool) -> None:
        if self.progress is None:
            return
        ls.explanations.pop(self.progress.token, None)
        if text:  # the last report always carries the whole answer
            self.progress.report(text, force=True)
        self.progress.end(None if complete else "stopped")
