"""The in-process backend: llama-cpp-python, owned by one worker thread.

One `Llama` object and one persistent context for the life of the server. Each prompt is
compared with the tokens already in the KV cache (and with the states saved from earlier places
and files, see prompt_cache.py) and only the new tail is evaluated, in large steps for speed;
llama.cpp's abort callback stops a step in progress, so a cancelled request lets go of the model
at once (or after one generated token).
"""

from __future__ import annotations

import asyncio
import bisect
import codecs
import contextlib
import ctypes
import dataclasses
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen_lsp.engine.base import (
    Engine,
    EngineError,
    EngineState,
    EngineStatus,
    Generation,
    GenerationRequest,
    GenerationStats,
    ModelUnavailable,
    StopReason,
)
from qwen_lsp.engine.cpu import require_runnable_build
from qwen_lsp.engine.memory import return_large_blocks_promptly
from qwen_lsp.engine.prompt_cache import PromptCache, SavedPrompt
from qwen_lsp.engine.tokens import SPECIAL_TOKENS

if TYPE_CHECKING:
    from llama_cpp import Llama, LogitsProcessorList

log = logging.getLogger(__name__)


def tokenize_prompt(llm: Llama, request: GenerationRequest) -> list[int]:
    """The request's tokens. Special tokens are read in template text only: text from the
    user's files (chat message contents, the user pieces of a `tokens.Prompt`) is
    tokenized as plain text, so a file holding "<|im_end|>" or "<|fim_middle|>" cannot end a
    turn, start a new one or move the cursor of a FIM prompt."""

    def tokens(text: str, special: bool) -> list[int]:
        # errors="replace": a lone surrogate from the client must not fail the request.
        return llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=special) if text else []

    if request.messages is not None:  # Qwen's chat format (the template the GGUF carries)
        result: list[int] = []
        for message in request.messages:
            result += tokens(f"<|im_start|>{message.role}\n", True) + tokens(message.content, False)
            result += tokens("<|im_end|>\n", True)
        return result + tokens("<|im_start|>assistant\n", True) + tokens(request.answer_start, False)
    assert request.prompt is not None
    return [token for piece in request.prompt.pieces for token in tokens(piece.text, not piece.user)]


def longest_common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class Shift:
    """Cached tokens [cache_start, cache_start + length) serve as prompt tokens from
    prompt_start on (the KV cells move; their RoPE positions are rotated by llama.cpp)."""

    cache_start: int
    prompt_start: int
    length: int


# Tokens that locate where a chunk of the cache may continue the prompt (then compared in full).
_KEY = 8
# Candidate places looked at per cached token: repeated text (indentation) has many.
_CANDIDATES = 4
# Text inserted before a kept run is at most this share of the run: the run's cells were
# computed without it, and a short run behind much new text (a small window's tail inside a
# large window) would misinform the model more than it saves.
MAX_INSERTED_SHARE = 0.5


@functools.lru_cache(maxsize=8)
def _key_positions(tokens: tuple[int, ...]) -> dict[tuple[int, ...], list[int]]:
    """Where each run of `_KEY` tokens starts in `tokens`, ascending. Cached: one prompt is
    compared with the live sequence and every saved state."""
    positions: dict[tuple[int, ...], list[int]] = {}
    for p in range(len(tokens) - _KEY + 1):
        positions.setdefault(tokens[p : p + _KEY], []).append(p)
    return positions


def _run(cached: list[int], tokens: list[int], c: int, p: int) -> int:
    n = 0
    while c + n < len(cached) and p + n < len(tokens) and cached[c + n] == tokens[p + n]:
        n += 1
    return n


def plan_reuse(cached: list[int], tokens: list[int], min_chunk: int) -> tuple[int, list[Shift]]:
    """How much of `tokens` the KV cache can serve: the common prefix, then, in order, chunks
    of at least `min_chunk` tokens found further on in the cache. Between them the prompt may
    have dropped text (the completion window's start moved down) or gained some (a line added
    below the cursor, a section that changed); what it gained is evaluated in place. This is
    llama-server's `--cache-reuse`, which llama.vim relies on, extended to insertions: moved
    cells keep attention computed over the text before them as it was.
    Returns the number of prompt tokens served and the moves that serve them."""
    head_p = head_c = longest_common_prefix(cached, tokens)
    served, shifts = head_p, []
    starts = _key_positions(tuple(tokens)) if len(tokens) - head_p >= min_chunk else {}
    # Every run of `min_chunk` tokens holds a whole key starting at one of `stride` positions.
    stride = max(min_chunk - _KEY + 1, 1)
    at = head_c
    while starts and at + _KEY <= len(cached) and head_p + min_chunk <= len(tokens):
        found = _chunk_through(cached, tokens, at, (head_c, head_p), starts, min_chunk)
        if found is None:
            at += stride
            continue
        shifts.append(found)
        served += found.length
        head_p, head_c = found.prompt_start + found.length, found.cache_start + found.length
        at = head_c
    return served, shifts


def _chunk_through(
    cached: list[int], tokens: list[int], at: int, heads: tuple[int, int], starts: dict[tuple[int, ...], list[int]], min_chunk: int
) -> Shift | None:
    """A run of at least `min_chunk` tokens common to the cache (from `at`, or earlier but not
    before its head) and the prompt (not before its head), with little inserted before it."""
    head_c, head_p = heads
    places = starts.get(tuple(cached[at : at + _KEY]), [])
    for p in places[bisect.bisect_left(places, head_p) :][:_CANDIDATES]:
        back = 0
        while at - back > head_c and p - back > head_p and cached[at - back - 1] == tokens[p - back - 1]:
            back += 1
        n = _run(cached, tokens, at - back, p - back)
        if n >= min_chunk and p - back - head_p <= n * MAX_INSERTED_SHARE:
            return Shift(at - back, p - back, n)
    return None


def reads_inserted_text(served: int, shifts: list[Shift]) -> bool:
    """Whether a plan of `plan_reuse` reads text between the runs it keeps."""
    end = served - sum(shift.length for shift in shifts)
    for shift in shifts:
        if shift.prompt_start > end:
            return True
        end = shift.prompt_start + shift.length
    return False


@dataclass(frozen=True)
class LocalSettings:
    model_path: str | None = None  # --model / QWEN_LSP_MODEL / initializationOptions.model
    n_ctx: int = 4096
    n_threads: int | None = None  # None: one per core
    # Tokens per prompt-evaluation step (the abort callback stops a step, so cancelling does not
    # wait for it): 227 tokens/s at 128, 234 at 256, 187 at 32 on 2 cores.
    prompt_chunk: int = 256
    # Saved prompt states, for returning to a place or file (~12 MB per 1,000 tokens). With the
    # model and a 4096-token context (~650 MB) this keeps the process under 800 MB.
    prompt_cache_mb: int = 96
    # Shortest run of cached tokens moved to a new position rather than evaluated again.
    min_reuse_chunk: int = 64
    # Read the weights into memory instead of mapping the file: with a mapping, a model file
    # truncated or overwritten in place while the server runs (`cp new.gguf model.gguf`) kills
    # the process with SIGBUS. Costs ~0.25 s more load time and keeps no page shared.
    use_mmap: bool = False


@dataclass
class _Job:
    request: GenerationRequest
    generation: Generation


# With two models alive in one process, llama.cpp 0.3.36 segfaults now and then in decode
# (ggml_cpu_extra_compute_forward), even when they are used in turn. So one engine at a time
# holds a model: an engine replaced by a settings change serves its queue and frees its model
# before its successor loads.
_ONE_MODEL = threading.Lock()
# A live sequence of fewer tokens is not worth saving; a saved state is restored only when it
# serves at least this many more tokens than the live one.
MIN_SAVED_TOKENS = 64
# Prompt reading speed until the engine has measured its own (bundled model, 2 cores, 256-token
# steps: ../shared/notes/latency.md); then a running average of what it reads, so a loaded or
# slower machine falls back to a request's smaller prompt sooner.
INITIAL_PROMPT_TOKENS_PER_SECOND = 200.0
# Past the budget, a fallback that costs at most this much more than the quickest is still
# preferred for what it shows (the quickest is the least context).
FALLBACK_SLACK = 1.25
RATE_SAMPLE_TOKENS = 64  # steps shorter than this say more about overhead than speed
# A failed load is tried again on a request once this long has passed, or at once when what
# the model resolver reads has changed (the user put the model file in place).
LOAD_RETRY_SECONDS = 60.0


class LocalEngine(Engine):
    keeps_prefills = True
    avoids_starts = True

    def __init__(
        self,
        settings: LocalSettings,
        model_resolver: Callable[..., Path],
        model_signature: Callable[[], object] = lambda: None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self._resolve_model = model_resolver
        self._model_signature = model_signature
        self._failed_at = 0.0
        self._failed_signature: object = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._llm: Llama | None = None
        self._stop_token_ids: frozenset[int] = frozenset()
        self._can_shift = False
        self._prompts = PromptCache(settings.prompt_cache_mb * 2**20)
        # A KV shift is applied at the next evaluation; a state saved before that would be stale.
        self._shift_pending = False
        self._abortable: Generation | None = None  # the request whose prompt is being evaluated
        self._prompt_rate = INITIAL_PROMPT_TOKENS_PER_SECOND
        self._abort_callback: object = None  # kept alive while llama.cpp may call it
        self.model_path: Path | None = None
        self.load_seconds: float | None = None
        self._failure: ModelUnavailable | None = None
        self._closed = False
        self._abandoned = False  # closed at the end of a session: queued work is dropped
        self._current: Generation | None = None  # the request the worker serves

    # -- public ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="qwen-lsp-engine", daemon=True)
            self._thread.start()

    def generate(
        self,
        request: GenerationRequest,
        on_prompt_progress: Callable[[float], None] | None = None,
    ) -> Generation:
        generation = Generation(request, asyncio.get_running_loop(), on_prompt_progress)
        if self._closed:
            # Its worker serves what came before `close` and leaves: nobody would answer.
            generation.emit_done(EngineError("The model engine was replaced (the settings changed); ask again."))
        elif self._failure is not None and not self._retry_due():
            generation.emit_done(self._failed())
        else:
            self.start()
            self._jobs.put(_Job(request, generation))
        return generation

    def describe(self) -> dict[str, object]:
        return {
            "backend": "local",
            "model": str(self.model_path) if self.model_path else None,
            "state": self.status.state.value,
            "load_seconds": self.load_seconds,
            "n_ctx": self.settings.n_ctx,
            "n_threads": self._threads(),
            "prompt_cache": self._prompts.describe(),
        }

    def close(self, wait: float | None = None) -> None:
        """Take no more requests; those already queued are still served (a settings change).
        With `wait` (the session ends), stop the work in hand and what is queued too, and
        return once the worker has freed the model, or after `wait` seconds: a process that
        exits while llama.cpp runs on the worker crashes (SIGSEGV)."""
        self._closed = True
        if self._thread is None:
            return
        if wait is not None:
            self._abandoned = True  # before cancelling `_current`: the worker checks it after setting that
            if (current := self._current) is not None:
                current.cancel()
        self._jobs.put(None)
        if wait is not None:
            self._thread.join(wait)

    # -- worker thread ---------------------------------------------------------------------------
    def _threads(self) -> int:
        return self.settings.n_threads or max(1, os.cpu_count() or 1)

    def _run(self) -> None:
        with _ONE_MODEL:
            self._work()

    def _work(self) -> None:
        self._try_load()
        while (job := self._jobs.get()) is not None:
            if self._failure is not None and self._retry_due():
                self._try_load()
            if self._failure is not None:
                job.generation.emit_done(self._failed())
                continue
            self._current = job.generation
            if self._abandoned:
                job.generation.cancel()
            try:
                self._serve(job)
                self.record(job.generation.stats)
                job.generation.emit_done()
            except Exception as exc:
                log.exception("generation failed")
                job.generation.emit_done(exc if isinstance(exc, EngineError) else EngineError(str(exc)))
        self._llm = None  # closed: free the model's memory now, not when the engine is collected
        self._prompts = PromptCache(self._prompts.budget_bytes)

    def _failed(self) -> ModelUnavailable:
        """A fresh error per request: one shared exception, raised again by each consumer,
        would collect every request's frames in its traceback."""
        assert self._failure is not None
        return ModelUnavailable(str(self._failure))

    def _retry_due(self) -> bool:
        return time.monotonic() - self._failed_at >= LOAD_RETRY_SECONDS or self._model_signature() != self._failed_signature

    def _try_load(self) -> None:
        try:
            self._load()
            self._failure = None
            return
        except ModelUnavailable as exc:
            failure = exc
        except Exception as exc:
            log.exception("model load failed")
            failure = ModelUnavailable(f"Could not load the model: {exc}")
        self._failed_at, self._failed_signature = time.monotonic(), self._model_signature()
        self._failure = failure
        self._set_status(EngineStatus(EngineState.FAILED, str(failure)))

    def _load(self) -> None:
        self._set_status(EngineStatus(EngineState.PREPARING, "Preparing the model", 0.0))
        path = self._resolve_model(lambda f: self._set_status(EngineStatus(EngineState.PREPARING, "Verifying the model", f)))
        self.model_path = path
        self._set_status(EngineStatus(EngineState.LOADING, f"Loading {path.name}"))
        require_runnable_build()  # a clear error, not SIGILL, if built for instructions this CPU lacks
        import llama_cpp  # heavy import, deferred so the server starts at once
        from llama_cpp import Llama

        return_large_blocks_promptly()
        started = time.perf_counter()
        try:
            self._llm = Llama(
                model_path=str(path),
                n_ctx=self.settings.n_ctx,
                n_batch=max(self.settings.prompt_chunk, 8),
                n_threads=self._threads(),
                n_threads_batch=self._threads(),
                verbose=False,
                use_mmap=self.settings.use_mmap,
            )
        except ValueError as exc:  # llama.cpp's "Failed to load model from file"
            raise ModelUnavailable(f"{path} is not a loadable GGUF model ({exc}).") from exc
        self._make_room_for_a_second_sequence(self._llm)
        self.load_seconds = time.perf_counter() - started
        self._stop_token_ids = self._special_token_ids()
        memory = llama_cpp.llama_get_memory(self._llm.ctx)
        self._can_shift = memory is not None and llama_cpp.llama_memory_can_shift(memory)
        self._abort_callback = llama_cpp.ggml_abort_callback(self._abort_requested)
        self._set_status(EngineStatus(EngineState.READY, f"{path.name} loaded in {self.load_seconds:.1f} s"))

    @staticmethod
    def _make_room_for_a_second_sequence(llm: Llama) -> None:
        """Give the context a second sequence sharing the same cells (a unified KV cache):
        text inserted into a cached prompt is read while the cells after it wait there (see
        `_fill`). llama-cpp-python's constructor has no parameter for it, so the context it
        made is replaced; the old one's memory is freed at once."""
        from llama_cpp import _internals

        params = llm.context_params
        params.n_seq_max, params.kv_unified = 2, True
        llm._ctx.close()  # type: ignore[no-untyped-call]  # llama-cpp-python leaves it unannotated
        context = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        llm._ctx = llm._stack.enter_context(contextlib.closing(context))

    def _abort_requested(self, _data: object) -> bool:
        """llama.cpp asks this between the operations of a step: stop if the request is gone, or
        is idle work that another request is waiting behind."""
        generation = self._abortable
        return generation is not None and self._gives_way(generation)

    def _gives_way(self, gen: Generation) -> bool:
        """Stop reading this prompt: cancelled, or a prefill (nothing to generate) with a request
        waiting. What it read stays in the KV cache."""
        return gen.should_stop() or (gen.request.max_tokens <= 0 and not self._jobs.empty())

    @staticmethod
    def _refusing(tokens: list[int]) -> LogitsProcessorList:
        """A logits processor under which none of `tokens` can be sampled."""
        import llama_cpp

        def refuse(_input_ids: object, scores: Any) -> Any:  # scores: the logits, a numpy array
            scores[tokens] = float("-inf")
            return scores

        return llama_cpp.LogitsProcessorList([refuse])

    def _special_token_ids(self) -> frozenset[int]:
        assert self._llm is not None
        ids = {self._llm.token_eos()}
        for text in SPECIAL_TOKENS:
            tokens = self._llm.tokenize(text.encode(), add_bos=False, special=True)
            if len(tokens) == 1:
                ids.add(tokens[0])
        return frozenset(ids)

    def _serve(self, job: _Job) -> None:
        llm = self._llm
        assert llm is not None
        gen, request, stats = job.generation, job.request, job.generation.stats
        stats.queued_seconds = time.perf_counter() - gen.created
        if gen.should_stop():
            stats.stop_reason = StopReason.CANCELLED
            return

        full, tokens = self._prompt_in_time(llm, request, stats)
        read = self._read(llm, gen, tokens)
        if read and request.max_tokens <= 0 and tokens is not full:
            # A prefill past the cold budget has read what a request here would answer from
            # (it is saved when the next prompt overwrites it); now the full prompt, for later.
            read = self._read(llm, gen, full)
        if not read:
            stats.stop_reason = StopReason.CANCELLED
            return
        self._sample_loop(llm, gen, request)

    def _read(self, llm: Llama, gen: Generation, tokens: list[int]) -> bool:
        """Bring `tokens` into the KV cache, keeping what it (or a saved state) holds of them;
        False if the request was cancelled first."""
        request, stats = gen.request, gen.stats
        if len(tokens) + request.max_tokens > self.settings.n_ctx:
            raise EngineError(
                f"Prompt of {len(tokens)} tokens plus {request.max_tokens} to generate does not fit "
                f"the context of {self.settings.n_ctx} tokens."
            )
        stats.prompt_tokens = len(tokens)
        self._switch_prompt(llm, tokens, stats)
        started, before = time.perf_counter(), stats.evaluated_tokens
        evaluated = self._reuse_cache(llm, gen, tokens) and self._evaluate(llm, gen, tokens[llm.n_tokens :])
        seconds = time.perf_counter() - started
        stats.prompt_seconds += seconds
        if stats.evaluated_tokens - before >= RATE_SAMPLE_TOKENS:
            rate = (stats.evaluated_tokens - before) / max(seconds, 1e-6)
            self._prompt_rate = 0.7 * self._prompt_rate + 0.3 * rate
        return evaluated

    def _evaluate(self, llm: Llama, gen: Generation, tail: list[int], step: Callable[[list[int]], None] | None = None) -> bool:
        """Evaluate `tail` into the KV cache at `llm.n_tokens`, a step at a time with `step`
        (`Llama.eval`, which drops every cell after the tokens it evaluates); False if the
        request was cancelled first (the steps evaluated by then stay in the cache)."""
        import llama_cpp

        chunk = self.settings.prompt_chunk
        self._abortable = gen
        # Only while reading a prompt: the callback takes the GIL at every operation, and a
        # generated token's step is short anyway.
        llama_cpp.llama_set_abort_callback(llm.ctx, self._abort_callback, None)
        try:
            for i in range(0, len(tail), chunk):
                if self._gives_way(gen):
                    return False
                try:
                    (step or llm.eval)(tail[i : i + chunk])
                except RuntimeError:  # llama_decode returned 2: aborted, its step's cells dropped
                    if self._gives_way(gen):
                        return False
                    raise
                self._shift_pending = False
                gen.stats.evaluated_tokens += len(tail[i : i + chunk])
                gen.emit_prompt_progress(min(1.0, (i + chunk) / len(tail)))
            return True
        finally:
            no_callback = llama_cpp.ggml_abort_callback()  # a NULL function pointer: no callback
            llama_cpp.llama_set_abort_callback(llm.ctx, no_callback, None)
            self._abortable = None

    @staticmethod
    def _decode_next(llm: Llama, batch: list[int]) -> None:
        """`Llama.eval` of `batch` without dropping other cells, and without keeping its logits
        (text inserted into a prompt is never sampled after)."""
        n_past = llm.n_tokens
        llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=False)
        llm._ctx.decode(llm._batch)
        llm.input_ids[n_past : n_past + len(batch)] = batch
        llm.n_tokens += len(batch)

    def _prompt_in_time(self, llm: Llama, request: GenerationRequest, stats: GenerationStats) -> tuple[list[int], list[int]]:
        """The request's prompt, and what to read of it now: the prompt itself; past its cold
        budget, the first fallback that can be read in time, else the first that costs little
        more than the quickest (a fallback that leads with text nobody has read yet, such as a
        file's project sections, is no quicker than the full prompt)."""
        tokens = tokenize_prompt(llm, request)
        budget = request.max_prompt_seconds or 0.0
        if not request.fallback_prompts or self._cold_seconds(llm, tokens) <= budget:
            return tokens, tokens
        stats.fell_back = True
        costed = []
        for prompt in request.fallback_prompts:
            fallback = tokenize_prompt(llm, dataclasses.replace(request, prompt=prompt, fallback_prompts=()))
            costed.append((self._cold_seconds(llm, fallback), fallback))
        quickest = min(seconds for seconds, _ in costed)
        return tokens, next(fallback for seconds, fallback in costed if seconds <= max(budget, quickest * FALLBACK_SLACK))

    def _cold_seconds(self, llm: Llama, tokens: list[int]) -> float:
        """How long reading `tokens` would take: what neither the live sequence nor a saved
        state holds of them, at the speed measured lately."""
        live = llm.input_ids[: llm.n_tokens].tolist()
        served = max(self._served(live, tokens), self._prompts.best(tokens, self._served)[1])
        return (len(tokens) - served) / self._prompt_rate

    def _served(self, cached: list[int], tokens: list[int]) -> int:
        """How many of `tokens` a KV cache holding `cached` can serve."""
        return self._plan(cached, tokens)[0]

    def _plan(self, cached: list[int], tokens: list[int]) -> tuple[int, list[Shift]]:
        if not self._can_shift:
            return longest_common_prefix(cached, tokens), []
        return plan_reuse(cached, tokens, self.settings.min_reuse_chunk)

    def _switch_prompt(self, llm: Llama, tokens: list[int], stats: GenerationStats) -> None:
        """Save the live sequence if this prompt is about to overwrite most of it, or to read
        text inserted before what it keeps (a cancelled read drops what follows, see `_fill`),
        and restore a saved one that serves this prompt better."""
        live = llm.input_ids[: llm.n_tokens].tolist()
        live_served, shifts = self._plan(live, tokens)
        saved, saved_served = self._prompts.best(tokens, self._served)
        restore = saved is not None and saved_served >= live_served + MIN_SAVED_TOKENS
        at_stake = restore or live_served * 2 < len(live) or reads_inserted_text(live_served, shifts)
        if at_stake and len(live) >= MIN_SAVED_TOKENS and not self._shift_pending:
            self._save_live(llm, live)
        if restore and saved is not None:
            self._restore(llm, saved)
            stats.restored_tokens = llm.n_tokens

    def _save_live(self, llm: Llama, live: list[int]) -> None:
        import llama_cpp

        llm._ctx.kv_cache_seq_rm(0, len(live), -1)  # nothing past the tokens recorded
        size = llama_cpp.llama_state_seq_get_size(llm.ctx, 0)
        data = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(llm.ctx, data, size, 0):
            self._prompts.keep(SavedPrompt(tuple(live), data, size))

    def _restore(self, llm: Llama, saved: SavedPrompt) -> None:
        import llama_cpp

        llm._ctx.kv_cache_seq_rm(0, -1, -1)
        restored = llama_cpp.llama_state_seq_set_data(llm.ctx, saved.data, saved.size, 0) > 0
        n = len(saved.tokens) if restored else 0
        llm.input_ids[:n] = saved.tokens
        llm.n_tokens = n
        self._shift_pending = False
        if restored:
            self._prompts.use(saved)
        else:
            log.warning("a saved prompt state could not be restored")
            self._prompts.discard(saved)

    def _reuse_cache(self, llm: Llama, gen: Generation, tokens: list[int]) -> bool:
        """Keep what the KV cache holds of `tokens` (moved where the prompt wants it) and read
        the text inserted between what is kept; `llm.n_tokens` then says where the rest of the
        prompt starts. At least the last token is left to evaluate, for fresh logits to sample
        from. False if the request was cancelled first."""
        cached = llm.input_ids[: llm.n_tokens].tolist()
        if not self._can_shift:
            llm.n_tokens = min(longest_common_prefix(cached, tokens), len(tokens) - 1)  # Llama.eval drops the rest
            gen.stats.reused_tokens = llm.n_tokens
            return True
        served, shifts = plan_reuse(cached, tokens[:-1], self.settings.min_reuse_chunk)
        gen.stats.reused_tokens = served
        prefix = served - sum(shift.length for shift in shifts)
        self._move(llm, prefix, shifts, gen.stats)
        llm.n_tokens = prefix
        for shift in shifts:
            if not self._fill(llm, gen, tokens[llm.n_tokens : shift.prompt_start]):
                return False
            llm.input_ids[shift.prompt_start : shift.prompt_start + shift.length] = tokens[
                shift.prompt_start : shift.prompt_start + shift.length
            ]
            llm.n_tokens = shift.prompt_start + shift.length
        return True

    def _move(self, llm: Llama, prefix: int, shifts: list[Shift], stats: GenerationStats) -> None:
        """Drop the cells no shift keeps, then move each kept run to its place in the prompt, in
        an order where no run lands on cells not yet moved."""
        kept_end = prefix
        for shift in shifts:
            llm._ctx.kv_cache_seq_rm(0, kept_end, shift.cache_start)
            kept_end = shift.cache_start + shift.length
        llm._ctx.kv_cache_seq_rm(0, kept_end, -1)
        down = [shift for shift in shifts if shift.prompt_start < shift.cache_start]
        up = [shift for shift in reversed(shifts) if shift.prompt_start > shift.cache_start]
        for shift in down + up:
            llm._ctx.kv_cache_seq_shift(0, shift.cache_start, shift.cache_start + shift.length, shift.prompt_start - shift.cache_start)
            stats.shifted_tokens += shift.length
            self._shift_pending = True

    def _fill(self, llm: Llama, gen: Generation, inserted: list[int]) -> bool:
        """Evaluate `inserted` at `llm.n_tokens`, before cells already placed after it: llama.cpp
        takes a sequence's new tokens only right after its last cell, so those cells wait in the
        second sequence meanwhile. If cancelled, they are dropped (and the prompt read so far,
        up to `llm.n_tokens`, stays)."""
        if not inserted:
            return True
        start = llm.n_tokens
        llm._ctx.kv_cache_seq_cp(0, 1, start, -1)
        llm._ctx.kv_cache_seq_rm(0, start, -1)
        evaluated = self._evaluate(llm, gen, inserted, step=lambda batch: self._decode_next(llm, batch))
        if evaluated:
            llm._ctx.kv_cache_seq_cp(1, 0, llm.n_tokens, -1)
        llm._ctx.kv_cache_seq_rm(1, -1, -1)
        return evaluated

    def _sample_loop(self, llm: Llama, gen: Generation, request: GenerationRequest) -> None:
        stats = gen.stats
        started = time.perf_counter()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""  # everything generated so far
        emitted = 0  # how much of `text` the consumer has
        holdback = max((len(s) for s in request.stop), default=0)
        deadline = started + request.max_generation_time if request.max_generation_time else None

        def finish(reason: StopReason, end: int | None = None) -> None:
            gen.emit_text(text[emitted : len(text) if end is None else end])
            stats.stop_reason = reason
            stats.generation_seconds = time.perf_counter() - started

        if request.max_tokens <= 0:  # a warm-up: the prompt is now in the KV cache
            return finish(StopReason.LENGTH)
        # The first token of `avoid_start`, refused as the answer's first.
        avoided = llm.tokenize(request.avoid_start.encode(), add_bos=False, special=False)[:1] if request.avoid_start else []
        while True:
            if gen.should_stop():
                return finish(StopReason.STOP if gen.enough else StopReason.CANCELLED)
            first = stats.generated_tokens == 0 and avoided
            token = llm.sample(temp=0.0, repeat_penalty=1.0, logits_processor=self._refusing(avoided) if first else None)
            if token in self._stop_token_ids:
                return finish(StopReason.STOP)
            stats.generated_tokens += 1
            text += decoder.decode(llm.detokenize([token]))
            # Search only where a stop string could newly appear.
            search_from = max(0, emitted - holdback)
            hits = [i for s in request.stop if (i := text.find(s, search_from)) >= 0]
            if hits:
                return finish(StopReason.STOP, min(hits))
            safe = len(text) - holdback if request.stop else len(text)
            if safe > emitted:
                gen.emit_text(text[emitted:safe])
                emitted = safe
            if stats.generated_tokens >= request.max_tokens:
                return finish(StopReason.LENGTH)
            if deadline is not None and time.perf_counter() > deadline:
                return finish(StopReason.TIME)
            llm.eval([token])
