"""Answers without the model: the response cache and type-through.

Entries are keyed on the text around the cursor, not on the prompt, so any request at the same
place is a hit. On a miss the lookup scans back over what was typed (up to TYPE_THROUGH_CHARS):
if an earlier suggestion starts with the typed text, the rest of it is the answer. Answers
made under other settings (another model, another token budget) are dropped, see `made_with`.
"""

from __future__ import annotations

from cachetools import LRUCache

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
        self._made_with: object = None

    def made_with(self, shape: object) -> None:
        """What shapes the answers from now on; the entries made under anything else go."""
        if shape != self._made_with:
            self._entries.clear()
            self._made_with = shape

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
