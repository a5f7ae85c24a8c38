"""A stand-in engine for soaking the protocol plumbing (never for judging model behaviour).

It behaves like the local engine where the plumbing can tell: one worker thread takes requests
in order, "evaluates" the prompt in chunks and "generates" tokens with small sleeps, checks for
cancellation between steps, reports through the same `Generation` events and records stats.
Run it as a stdio server with `python -m tests.fake_engine`; QWEN_LSP_FAKE_ANSWER, if
set, is the answer to every chat request (the safety tests give it a hostile one).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections.abc import Callable

from qwen_lsp.engine.base import (
    Engine,
    EngineState,
    EngineStatus,
    Generation,
    GenerationRequest,
    StopReason,
)

CHUNK_SECONDS = 0.002  # one 32-"token" prompt chunk
TOKEN_SECONDS = 0.001
WORDS = ("value", " + ", "1", " if ", "ready", " else ", "None")


class FakeEngine(Engine):
    keeps_prefills = True  # stands in for the in-process model

    def __init__(self, chat_answer: str | None = None) -> None:
        super().__init__()
        self.chat_answer = chat_answer
        self._jobs: queue.SimpleQueue[Generation | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="qwen-lsp-fake-engine", daemon=True)
            self._thread.start()
            self._set_status(EngineStatus(EngineState.READY, "fake engine ready"))

    def generate(self, request: GenerationRequest, on_prompt_progress: Callable[[float], None] | None = None) -> Generation:
        generation = Generation(request, asyncio.get_running_loop(), on_prompt_progress)
        self.start()
        self._jobs.put(generation)
        return generation

    def describe(self) -> dict[str, object]:
        return {"backend": "fake", "model": None, "state": self.status.state.value}

    def close(self, wait: float | None = None) -> None:
        if self._thread is not None:
            self._jobs.put(None)

    def _run(self) -> None:
        while (gen := self._jobs.get()) is not None:
            self._serve(gen)
            self.record(gen.stats)
            gen.emit_done()

    def _serve(self, gen: Generation) -> None:
        stats, request = gen.stats, gen.request
        text = request.prompt.text if request.prompt is not None else "".join(m.content for m in request.messages or ())
        stats.prompt_tokens = len(text) // 4 + 1
        stats.evaluated_tokens = 0
        for _ in range(0, stats.prompt_tokens, 32 * 8):  # eight chunks per step keeps it brisk
            if gen.should_stop():
                stats.stop_reason = StopReason.CANCELLED
                return
            time.sleep(CHUNK_SECONDS)
            stats.evaluated_tokens = min(stats.prompt_tokens, stats.evaluated_tokens + 256)
        answer = self.chat_answer if request.messages is not None and self.chat_answer is not None else None
        pieces = [answer[i : i + 8] for i in range(0, len(answer), 8)] if answer else list(WORDS * 2)
        for piece in pieces[: request.max_tokens if answer is None else None]:
            if gen.should_stop():
                stats.stop_reason = StopReason.CANCELLED
                return
            time.sleep(TOKEN_SECONDS)
            stats.generated_tokens += 1
            gen.emit_text(piece)
        stats.stop_reason = StopReason.LENGTH


def main() -> int:
    from qwen_lsp.cli import configure_logging
    from qwen_lsp.lsp.server import create_server

    configure_logging("WARNING", None)
    answer = os.environ.get("QWEN_LSP_FAKE_ANSWER")
    return create_server(lambda settings: FakeEngine(answer)).start_io()


if __name__ == "__main__":
    raise SystemExit(main())
