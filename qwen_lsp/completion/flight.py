"""The generation in flight: shared by every request it can answer.

A request whose prefix extends that of the generation still running re-attaches to it instead of
starting over (Continue does the same). Only a generation that ended by itself answers: one
cancelled by the next keystroke stops mid-word ("Deprec"), and that must never be shown or cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from qwen_lsp.completion.cache import TYPE_THROUGH_CHARS
from qwen_lsp.engine.base import Generation, StopReason


class Flight:
    """A generation shared by every request it can answer.

    It runs as its own task until `is_done(text)` says the suggestion is complete. Requests wait
    on it; when the last one gives up (its LSP request was cancelled) or a request that it cannot
    answer supersedes it, the generation is cancelled so the engine is free at once.
    """

    def __init__(self, generation: Generation, before: str, after: str, is_done: Callable[[str], bool], held_back: str = "") -> None:
        self.generation = generation
        self.before, self.after = before, after
        # Typed before the cursor but left for the model to write (see layout.Context.held_back).
        self.held_back = held_back
        self.superseded = False
        self._waiters = 0
        self._is_done = is_done
        self._task = asyncio.ensure_future(self._run())
        # A failure reaches the requests that wait; a warm-up nobody waits on must not log it.
        self._task.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def _run(self) -> str | None:
        """The text, if the generation ended by itself: complete, or stopped by its time or
        token budget (the caller keeps its complete lines). None if it was cancelled."""
        async with self.generation as generation:
            async for _ in generation:
                if self._is_done(self.text):
                    return self.text  # leaving the block stops the rest of the generation
        return None if self.stop_reason is StopReason.CANCELLED else self.text

    @property
    def text(self) -> str:
        """What the model wrote after the cursor so far (a model that did not write the
        held-back space or tab goes on right after it)."""
        text = self.generation.text
        return text[len(self.held_back) :] if self.held_back and text.startswith(self.held_back) else text

    @property
    def stop_reason(self) -> StopReason | None:
        return self.generation.stats.stop_reason

    @property
    def done(self) -> bool:
        return self._task.done()

    def typed_since(self, before: str, after: str) -> str | None:
        """What was typed since this flight began, if `before`/`after` is the same place moved on
        by typing that the text generated so far agrees with (or the very same place)."""
        if after != self.after or not before.startswith(self.before):
            return None
        typed = before[len(self.before) :]
        if len(typed) > TYPE_THROUGH_CHARS:
            return None
        text = self.text
        if typed and not text:
            return None  # still reading its prompt: one that holds the typed text costs no more
        return typed if text.startswith(typed) or typed.startswith(text) else None

    def supersede(self) -> None:
        self.superseded = True
        self.generation.cancel()

    async def result(self) -> str | None:
        """The generated text, or None if the flight was superseded or cancelled."""
        self._waiters += 1
        try:
            text = await asyncio.shield(self._task)
        finally:
            self._waiters -= 1
            if self._waiters == 0 and not self._task.done():
                self.generation.cancel()
        return None if self.superseded else text
