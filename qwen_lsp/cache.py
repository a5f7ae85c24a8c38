"""Answers without the model: the response cache, type-through, and the generation in flight.

Entries are keyed on the text around the cursor, not on the prompt, so any request at the same
place is a hit. On a miss the lookup scans back over what was typed (up to TYPE_THROUGH_CHARS):
if an earlier suggestion starts with the typed text, the rest of it is the answer. A request
whose prefix extends that of the generation still running re-attaches to it instead of starting
over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cachetools import LRUCache

from qwen_lsp.engine.base import Generation

# How much text around the cursor identifies a place (a 60-line window is ~2,500 characters).
KEY_BEFORE_CHARS = 4096
KEY_AFTER_CHARS = 1024
# How far back a typed-through suggestion is looked for (llama.vim: 128).
TYPE_THROUGH_CHARS = 128


def _key(before: str, after: str) -> tuple[str, str]:
    return before[-KEY_BEFORE_CHARS:], after[:KEY_AFTER_CHARS]


class SuggestionCache:
    def __init__(self, maxsize: int = 512) -> None:
        self._entries: LRUCache[tuple[str, str], str] = LRUCache(maxsize=maxsize)

    def put(self, before: str, after: str, text: str) -> None:
        self._entries[_key(before, after)] = text

    def get(self, before: str, after: str) -> str | None:
        """The suggestion for this place: an exact hit, or the rest of one being typed through."""
        exact = self._entries.get(_key(before, after))
        if exact is not None:
            return exact
        for typed_chars in range(1, min(TYPE_THROUGH_CHARS, len(before)) + 1):
            earlier = self._entries.get(_key(before[:-typed_chars], after))
            typed = before[-typed_chars:]
            if earlier is not None and len(earlier) > typed_chars and earlier.startswith(typed):
                return earlier[typed_chars:]
        return None


class Flight:
    """A generation shared by every request it can answer.

    It runs as its own task until `is_done(text)` says the suggestion is complete. Requests wait
    on it; when the last one gives up (its LSP request was cancelled) or a request that it cannot
    answer supersedes it, the generation is cancelled so the engine is free at once.
    """

    def __init__(self, generation: Generation, before: str, after: str, is_done: Callable[[str], bool]) -> None:
        self.generation = generation
        self.before, self.after = before, after
        self.superseded = False
        self._waiters = 0
        self._is_done = is_done
        self._task = asyncio.ensure_future(self._run())
        # A failure reaches the requests that wait; a warm-up nobody waits on must not log it.
        self._task.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def _run(self) -> str:
        async with self.generation as generation:
            async for _ in generation:
                if self._is_done(generation.text):
                    break  # leaving the block cancels the rest of the generation
        return self.generation.text

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
        text = self.generation.text
        if typed and not text:
            return None  # still reading its prompt: one that holds the typed text costs no more
        return typed if text.startswith(typed) or typed.startswith(text) else None

    def supersede(self) -> None:
        self.superseded = True
        self.generation.cancel()

    async def result(self) -> str | None:
        """The generated text, or None if the flight was superseded or failed to produce any."""
        self._waiters += 1
        try:
            text = await asyncio.shield(self._task)
        finally:
            self._waiters -= 1
            if self._waiters == 0 and not self._task.done():
                self.generation.cancel()
        return None if self.superseded else text
