"""One `$/progress` token: begin, reports at a bounded rate, end. Model loading and explain use it."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

from lsprotocol import types as lsp

if TYPE_CHECKING:
    from qwen_lsp.lsp.server import QwenLanguageServer

# More reports than this a second only cost the client redraws nobody can read.
REPORTS_PER_SECOND = 20


class Progress:
    """Reports for one token. Reports closer together than the rate allows are dropped unless
    forced; nothing is sent after `end`."""

    def __init__(self, server: QwenLanguageServer, token: lsp.ProgressToken, per_second: float = REPORTS_PER_SECOND) -> None:
        self.server = server
        self.token = token
        self.interval = 1 / per_second
        self.ended = False
        self._last_report = float("-inf")

    @classmethod
    async def create(cls, server: QwenLanguageServer, kind: str, per_second: float = REPORTS_PER_SECOND) -> Progress | None:
        """A token of the server's own (`window/workDoneProgress/create`), or None when the
        client cannot show progress or refuses the token."""
        if not server.client_features.work_done_progress:
            return None
        token = f"qwen-lsp/{kind}/{uuid.uuid4()}"
        try:
            await server.work_done_progress.create_async(token)
        except Exception:  # noqa: BLE001 - a client may refuse; the work goes on without progress
            return None
        return cls(server, token, per_second)

    def begin(self, title: str, cancellable: bool = False) -> None:
        # `cancellable` is left out unless true, as clients read a missing one as false.
        value = lsp.WorkDoneProgressBegin(title=title, cancellable=cancellable or None, percentage=0)
        self.server.work_done_progress.begin(self.token, value)

    def report(self, message: str, percentage: int | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if self.ended or (not force and now - self._last_report < self.interval):
            return
        self._last_report = now
        self.server.work_done_progress.report(self.token, lsp.WorkDoneProgressReport(message=message, percentage=percentage))

    def end(self, message: str | None = None) -> None:
        if not self.ended:
            self.ended = True
            self.server.work_done_progress.end(self.token, lsp.WorkDoneProgressEnd(message=message))
            # pygls keeps a future per token for the life of the server; an ended one is done with.
            self.server.work_done_progress.tokens.pop(self.token, None)
