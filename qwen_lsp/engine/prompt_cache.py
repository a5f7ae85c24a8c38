"""Evaluated prompts kept across places and files.

The engine has one live sequence in its KV cache. Before a prompt that shares little with it
overwrites it (the user switched files, or jumped far within one), its state is saved here; a
later prompt that shares more with a saved state than with the live one restores it (~2 ms for
1,000 tokens, against ~4 s to evaluate them again). Entries are least-recently-used first out,
within a budget in bytes (the KV cache costs ~12 KB a token).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass

# How many prompt tokens a state serves: see local.plan_reuse.
Served = Callable[[list[int], list[int]], int]


@dataclass(frozen=True)
class SavedPrompt:
    tokens: tuple[int, ...]  # the tokens whose keys and values `data` holds, from position 0
    data: object  # llama.cpp's sequence state, as it gave it (a ctypes byte array)
    size: int  # bytes

    def supersedes(self, older: SavedPrompt) -> bool:
        """The same place, moved on: most of the older prompt is a prefix of this one."""
        common = 0
        for a, b in zip(self.tokens, older.tokens, strict=False):
            if a != b:
                break
            common += 1
        return common * 2 >= len(older.tokens)


class PromptCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: collections.OrderedDict[int, SavedPrompt] = collections.OrderedDict()
        self._next_id = 0
        # Only the engine thread changes the entries; `describe` may be read from another.
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return sum(entry.size for entry in self._entries.values())

    def keep(self, saved: SavedPrompt) -> None:
        """Store `saved` in place of the states it supersedes, evicting the least recently used
        until the budget holds."""
        if saved.size > self.budget_bytes:
            return
        with self._lock:
            for key in [k for k, entry in self._entries.items() if saved.supersedes(entry)]:
                del self._entries[key]
            self._entries[self._next_id] = saved
            self._next_id += 1
            while self.used_bytes > self.budget_bytes:
                self._entries.popitem(last=False)

    def best(self, tokens: list[int], served: Served) -> tuple[SavedPrompt | None, int]:
        """The saved state that serves most of `tokens`, and how many it serves."""
        best: SavedPrompt | None = None
        best_served = 0
        for entry in self._entries.values():
            n = served(list(entry.tokens), tokens)
            if n > best_served:
                best, best_served = entry, n
        return best, best_served

    def use(self, saved: SavedPrompt) -> None:
        """`saved` was restored: it becomes the most recently used."""
        for key in [k for k, entry in self._entries.items() if entry is saved]:
            self._entries.move_to_end(key)

    def discard(self, saved: SavedPrompt) -> None:
        with self._lock:
            for key in [k for k, entry in self._entries.items() if entry is saved]:
                del self._entries[key]

    def describe(self) -> dict[str, object]:
        with self._lock:
            entries = list(self._entries.values())
        return {
            "entries": len(entries),
            "tokens": sum(len(entry.tokens) for entry in entries),
            "mb": round(sum(entry.size for entry in entries) / 2**20, 1),
            "budget_mb": round(self.budget_bytes / 2**20, 1),
        }
