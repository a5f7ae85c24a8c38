"""Evaluated prompts kept across places and files (engine/prompt_cache.py): the least recently
used state goes first, within the budget; a place moved on replaces its older state. Through a
real client with the real model: returning to an earlier file is served from the kept state, and
the cache stays within its budget after visiting many files."""

from __future__ import annotations

import asyncio

from lsprotocol import types as lsp

from qwen_lsp.engine.base import GenerationRequest, StopReason
from qwen_lsp.engine.local import LocalEngine, LocalSettings, longest_common_prefix
from qwen_lsp.engine.prompt_cache import PromptCache, SavedPrompt
from qwen_lsp.engine.tokens import Prompt
from tests.conftest import open_doc, server_status, settled_status

KB = 1024


def saved(tokens: list[int], kb_per_token: int = 12) -> SavedPrompt:
    return SavedPrompt(tuple(tokens), data=None, size=len(tokens) * kb_per_token * KB)


def test_the_least_recently_used_state_goes_first_within_the_budget():
    cache = PromptCache(budget_bytes=3 * 100 * 12 * KB)  # three 100-token states
    files = [saved([n] * 100) for n in range(4)]
    for state in files[:3]:
        cache.keep(state)
    cache.use(files[0])  # the user went back to the first file
    cache.keep(files[3])
    assert cache.used_bytes <= cache.budget_bytes
    assert cache.best([1] * 100, longest_common_prefix) == (None, 0), "the least recently used went"
    assert cache.best([0] * 100, longest_common_prefix)[0] is files[0]
    assert cache.describe() == {"entries": 3, "tokens": 300, "mb": 3.5, "budget_mb": 3.5}


def test_a_place_moved_on_replaces_its_older_state_and_another_place_does_not():
    cache = PromptCache(budget_bytes=10**9)
    cache.keep(saved(list(range(100))))
    cache.keep(saved([*range(100), 7, 7, 7]))  # the same place after some typing
    assert cache.describe()["entries"] == 1
    cache.keep(saved(list(range(10)) + [5] * 90))  # the same file's header, another place
    assert cache.describe()["entries"] == 2


def test_the_best_state_is_the_one_that_serves_most_of_the_prompt():
    cache = PromptCache(budget_bytes=10**9)
    a, b = saved([1] * 50 + [2] * 50), saved([1] * 50 + [3] * 50)
    cache.keep(a)
    cache.keep(b)
    assert cache.best([1] * 50 + [3] * 60, longest_common_prefix) == (b, 100)


def test_a_state_larger_than_the_budget_is_not_kept():
    cache = PromptCache(budget_bytes=10 * 12 * KB)
    cache.keep(saved([1] * 11))
    assert cache.describe()["entries"] == 0


def module(name: str, functions: int = 12) -> str:
    """A file of its own (~35 tokens a function), ending in a loop body to complete."""
    helpers = "".join(f"def {name}_{i}(value):\n    return value * {i} + {len(name) * i}\n\n\n" for i in range(functions))
    return helpers + f"def {name}_total(values):\n    total = 0\n    for value in values:\n        total += "


def end_of(text: str) -> lsp.Position:
    lines = text.split("\n")
    return lsp.Position(len(lines) - 1, len(lines[-1]))


async def inline(client, uri: str, position: lsp.Position) -> lsp.InlineCompletionList:
    return await client.text_document_inline_completion_async(
        lsp.InlineCompletionParams(
            text_document=lsp.TextDocumentIdentifier(uri),
            position=position,
            context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Automatic),
        )
    )


async def visit(client, tmp_path, name: str) -> tuple[str, str]:
    text = module(name)
    uri = open_doc(client, str(tmp_path / f"{name}.py"), text)
    await inline(client, uri, end_of(text))
    return uri, text


async def quiet_count(client, at_least: int) -> int:
    """How many generations the engine has filed, once no more come (opening a file prefills it
    in the background, so stats arrive after the answers)."""
    count = len((await settled_status(client, at_least))["recent"])
    while True:
        await asyncio.sleep(1.0)
        now = len((await server_status(client))["recent"])
        if now == count:
            return count
        count = now


async def answered(client, seen: int) -> dict:
    """`qwen/status` once the request's own generation (one that read a prompt and was not
    cancelled) is filed after the first `seen`."""
    for _ in range(100):
        status = await server_status(client)
        back = status["recent"][seen:]
        if back and back[-1]["prompt_tokens"] and back[-1]["stop_reason"] != "cancelled":
            return status
        await asyncio.sleep(0.1)
    return status


async def test_returning_to_an_earlier_file_is_served_from_the_kept_state(client, tmp_path):
    first_uri, first = await visit(client, tmp_path, "alpha")
    await visit(client, tmp_path, "beta")
    await visit(client, tmp_path, "gamma")
    seen = await quiet_count(client, 3)
    # Back to the first file, on a new line (so no cached suggestion).
    place, typed = end_of(first), "abs(value)\n        total -= "
    client.text_document_did_change(
        lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=first_uri, version=2),
            content_changes=[lsp.TextDocumentContentChangePartial(range=lsp.Range(place, place), text=typed)],
        )
    )
    await inline(client, first_uri, end_of(first + typed))
    status = await answered(client, seen)
    back = status["recent"][seen:]  # the warm-up after the edit, if it ran, and the request
    evaluated = sum(r["evaluated_tokens"] for r in back)
    assert any(r["restored_tokens"] for r in back), back
    assert evaluated < back[-1]["prompt_tokens"] / 4, back
    cache = status["prompt_cache"]
    assert cache["entries"] >= 2 and cache["tokens"] > 0 and cache["mb"] > 0, cache
    # The server's own memory, the kept states included (the model alone is ~400 MB).
    assert status["memory"]["rss_mb"] > 400 + cache["mb"], status["memory"]


async def test_the_kept_states_stay_within_the_budget_after_many_files(make_client, model_path, tmp_path):
    from tests.conftest import server_env

    # A small budget, so that a few files overflow it: ~170 tokens of KV cache a megabyte.
    client = await make_client(env=server_env(QWEN_LSP_MODEL=str(model_path)), options={"promptCacheMb": 4})
    for name in ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]:
        await visit(client, tmp_path, name)
        cache = (await server_status(client))["prompt_cache"]
        assert cache["budget_mb"] == 4, "the promptCacheMb setting reaches the engine"
        assert cache["mb"] <= 4, cache
    assert cache["entries"] >= 1, cache


async def test_a_warm_up_cancelled_while_reading_inserted_text_loses_nothing(model_path):
    """Reading text inserted before a kept run parks the run's cells, which a cancelled read
    drops. So the state is saved first: the request that cancelled the warm-up (here, asking
    again with the prompt read before) is served from it, not read again. (A typing replay lost
    every state of a small file this way: each keystroke's request cancelled the warm-up of the
    full window, which kept the small window's tokens after the text the full one adds.)"""
    engine = LocalEngine(LocalSettings(model_path=str(model_path), min_reuse_chunk=32), lambda progress: model_path)
    engine.start()
    body = module("kept", functions=8)
    small = Prompt.template(body)
    larger = Prompt.template("# a longer window starts with more of the file\nimport os\nimport sys\n\n" + body)
    try:
        async with engine.generate(GenerationRequest(prompt=small, max_tokens=0)) as first:
            async for _ in first:
                pass
        warm_up = engine.generate(GenerationRequest(prompt=larger, max_tokens=0))
        again = engine.generate(GenerationRequest(prompt=small, max_tokens=1))  # a request waiting: the warm-up gives way
        for generation in (warm_up, again):
            async for _ in generation:
                pass
    finally:
        engine.close()
    print(f"warm-up {warm_up.stats}; request {again.stats}")
    assert warm_up.stats.stop_reason is StopReason.CANCELLED
    assert again.stats.evaluated_tokens <= 2, again.stats
