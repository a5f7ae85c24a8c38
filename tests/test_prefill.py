"""Idle prefill (Completer.prefill, lsp/handlers/prefill.py): where the cursor rests, and where a
freshly opened document will likely be completed first, the prompt is read while the engine is
idle. Through a real client with the real model: a completion at a rested place evaluates only a
few tokens, and a prefill in progress gives way to a real request within one prompt step."""

from __future__ import annotations

import asyncio
import time

from lsprotocol import types as lsp

from qwen_lsp.completion.completer import Completer, first_place
from qwen_lsp.config import Settings
from qwen_lsp.engine.base import GenerationRequest
from qwen_lsp.syntax.documents import Document
from tests.conftest import open_doc, server_env, server_status, settled_status
from tests.fake_engine import FakeEngine
from tests.test_prompt_cache import end_of, inline, module

CURSOR_RESTED = "qwen/cursorRested"


def rest(client, uri: str, position: lsp.Position) -> None:
    client.protocol.notify(
        CURSOR_RESTED, {"textDocument": {"uri": uri}, "position": {"line": position.line, "character": position.character}}
    )


async def prefill_done(client, seen: int, timeout: float = 60.0) -> list[dict]:
    """The engine's records after the first `seen`, once a prefill (nothing generated, stopped by
    its zero token budget) is among them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recent = (await server_status(client)).get("recent", [])[seen:]
        if any(r["stop_reason"] == "length" and r["generated_tokens"] == 0 for r in recent):
            return recent
        await asyncio.sleep(0.2)
    raise AssertionError(f"no prefill recorded: {recent}")


async def test_a_completion_where_the_cursor_rested_evaluates_only_a_few_tokens(client, tmp_path):
    text = module("alpha", functions=20)
    uri = open_doc(client, str(tmp_path / "alpha.py"), text)
    seen = len((await server_status(client)).get("recent", []))
    rest(client, uri, end_of(text))
    await prefill_done(client, seen)
    seen = len((await settled_status(client, seen + 1))["recent"])
    await inline(client, uri, end_of(text))
    request = (await settled_status(client, seen + 1))["recent"][-1]
    print(f"rested place: {request['evaluated_tokens']} of {request['prompt_tokens']} prompt tokens evaluated")
    assert request["prompt_tokens"] > 300, request
    assert request["evaluated_tokens"] < request["prompt_tokens"] / 10, request


async def test_a_prefill_in_progress_gives_way_to_a_real_request_within_one_step(client, tmp_path):
    big = module("beta", functions=60)  # a prompt of ~650 tokens: ~3 s to read
    small = module("gamma", functions=2)
    big_uri = open_doc(client, str(tmp_path / "beta.py"), big)
    small_uri = open_doc(client, str(tmp_path / "gamma.py"), small)
    await inline(client, small_uri, end_of(small))  # the model is loaded
    seen = await quiet_count(client)  # and idle: opening the files prefilled them meanwhile
    rest(client, big_uri, end_of(big))
    await asyncio.sleep(1.0)  # the prefill is reading its prompt
    await inline(client, small_uri, lsp.Position(3, 0))
    recent = await until_answered(client, seen)
    shown = [
        (r["prompt_tokens"], r["evaluated_tokens"], r["generated_tokens"], r["stop_reason"], round(r["queued_seconds"], 2)) for r in recent
    ]
    prefills = [r for r in recent[:-1] if r["generated_tokens"] == 0 and r["prompt_tokens"] > 500]
    assert prefills, shown
    prefill, request = prefills[-1], recent[-1]
    print(f"real request queued {request['queued_seconds']:.3f} s behind a prefill that had read {prefill['evaluated_tokens']} tokens")
    assert prefill["stop_reason"] == "cancelled" and prefill["evaluated_tokens"] < prefill["prompt_tokens"], shown
    assert request["queued_seconds"] < 2.0, shown  # one 256-token step is ~1.1 s on 2 cores


async def test_a_prefill_too_cold_for_the_budget_reads_the_fallback_first(make_client, model_path, tmp_path):
    """Issue 16: where the cursor rests briefly at a new place, the full prompt (here ~2,000
    tokens, ~10 s) is not read by the first keystroke, and the cold fallback's own window was
    read by nobody. The prefill reads that small window first, then the full one: the request
    that interrupts it answers from the small window at once."""
    options = {"completionMaxMs": 0, "completionColdPromptMs": 300, "completionColdContextTokens": 128, "completionContextTokens": 2048}
    client = await make_client(env=server_env(QWEN_LSP_MODEL=str(model_path)), options=options)
    text = module("delta", functions=120)
    uri = open_doc(client, str(tmp_path / "delta.py"), text)
    rest(client, uri, end_of(text))
    await asyncio.sleep(3.0)  # the small window is read (~0.6 s), the full one is not (~10 s)
    seen = len((await server_status(client))["recent"])
    await inline(client, uri, end_of(text))
    answered = next(r for r in await until_answered(client, seen) if r["generated_tokens"])
    print(f"answered from {answered['prompt_tokens']} tokens, {answered['evaluated_tokens']} evaluated")
    assert answered["fell_back"] and answered["evaluated_tokens"] <= 16, answered


async def quiet_count(client) -> int:
    """How many generations are filed, once none has come for a second."""
    count = -1
    while True:
        now = len((await server_status(client))["recent"])
        if now == count:
            return count
        count = now
        await asyncio.sleep(1.0)


async def until_answered(client, seen: int) -> list[dict]:
    """The generations filed after the first `seen`, once the last of them is a request's own
    (it generated text, or stopped by itself) rather than a prefill."""
    for _ in range(200):
        recent = (await server_status(client))["recent"][seen:]
        if recent and (recent[-1]["generated_tokens"] or recent[-1]["stop_reason"] in ("stop", "time")):
            return recent
        await asyncio.sleep(0.1)
    return recent


class RecordingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[GenerationRequest] = []

    def generate(self, request, on_prompt_progress=None):
        self.requests.append(request)
        return super().generate(request, on_prompt_progress)


FILE = """import os


def first(path):
    name = os.path.basename(path)
    return name.upper()


def second(value):
    return value * 2
"""


def test_the_first_place_of_a_file_is_the_end_of_its_first_definition():
    doc = Document("file:///first.py", FILE, 1, "python")
    assert FILE[: first_place(doc)].endswith("return name.upper()")
    assert first_place(Document("file:///empty.py", "x = 1\n", 1, "python")) == len("x = 1\n")


async def test_an_opened_document_is_prefilled_at_its_first_place_unless_a_place_is_known():
    engine = RecordingEngine()
    completer = Completer(lambda: engine)
    await completer.opened(Document("file:///first.py", FILE, 1, "python"), Settings())
    assert [r.max_tokens for r in engine.requests] == [0]
    assert engine.requests[0].prompt.text.split("<|fim_middle|>")[-1].endswith("return name.upper()")
    rested = Document("file:///rested.py", FILE, 1, "python")
    completer.prefill(Settings(), rested, len(FILE))  # the plugin said where the cursor is
    await completer.opened(rested, Settings())
    assert len(engine.requests) == 2, "the known place is not replaced by a guess"
    engine.close()


async def test_closing_a_document_stops_reading_its_prompt():
    """A prefill (or the full window read after a cold answer) of a document the user has closed
    is work for nobody: it must not hold the engine or the CPU (another server, a benchmark's
    next arm, the user's next file)."""

    class Recording(RecordingEngine):
        def generate(self, request, on_prompt_progress=None):
            generation = super().generate(request, on_prompt_progress)
            self.generations.append(generation)
            return generation

    engine = Recording()
    engine.generations = []
    completer = Completer(lambda: engine)
    doc = Document("file:///closed.py", FILE, 1, "python")
    completer.prefill(Settings(), doc, len(FILE))
    completer.forget(doc.uri)
    assert [g.cancelled for g in engine.generations] == [True]
    engine.close()
