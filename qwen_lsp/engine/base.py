"""The interface between features and model backends.

A feature builds a `GenerationRequest` (a raw prompt for fill-in-the-middle, or chat messages for
explain and fix) and reads the `Generation` it gets back as an async stream of text. Backends
(in-process llama.cpp, a remote OpenAI-compatible server) implement `Engine`; features never
know which one they talk to.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from qwen_lsp.engine.tokens import Prompt


class EngineError(Exception):
    """A request could not be served; the message is meant for the user."""


class ModelUnavailable(EngineError):
    """No model could be found or loaded."""


class EngineState(enum.Enum):
    IDLE = "idle"  # not started yet
    PREPARING = "preparing"  # finding, assembling or verifying the model file
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class EngineStatus:
    state: EngineState
    message: str = ""
    fraction: float | None = None  # progress of the current long step, 0..1


StatusListener = Callable[[EngineStatus], None]


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate. Exactly one of `prompt` (raw text, e.g. FIM) and `messages` (chat)."""

    prompt: Prompt | None = None
    messages: tuple[ChatMessage, ...] | None = None
    max_tokens: int = 64
    stop: tuple[str, ...] = ()
    # Wall-clock budget for generation after the first token (seconds); None means no limit.
    max_generation_time: float | None = None
    # Chat only: the first words of the answer, already written; the model continues them (the
    # generated text does not repeat them).
    answer_start: str = ""
    # Text the answer must not begin with: its first token is refused as the answer's first (the
    # code after the cursor, which a model that sees nothing missing writes again). Only engines
    # that say so (`Engine.avoids_starts`) honour it.
    avoid_start: str = ""
    # Smaller prompts to answer from instead when reading `prompt` (what the KV cache does not
    # hold of it) would take longer than `max_prompt_seconds`: the first that can be read in
    # time, else the first costing little more than the quickest. Backends that cannot tell
    # ignore them.
    fallback_prompts: tuple[Prompt, ...] = ()
    max_prompt_seconds: float | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")


class StopReason(enum.Enum):
    STOP = "stop"  # a stop string or an end-of-text token
    LENGTH = "length"  # max_tokens reached
    TIME = "time"  # max_generation_time reached
    CANCELLED = "cancelled"


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens whose KV cache was kept from the previous request
    shifted_tokens: int = 0  # of those, tokens moved to a new position (see local.plan_reuse)
    restored_tokens: int = 0  # tokens of a saved prompt state put back first (see prompt_cache.py)
    evaluated_tokens: int = 0  # prompt tokens evaluated for this request (fewer if cancelled)
    generated_tokens: int = 0
    queued_seconds: float = 0.0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    stop_reason: StopReason | None = None
    fell_back: bool = False  # answered from the request's fallback prompt (the full one was cold)


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _PromptProgress:
    fraction: float


@dataclass(frozen=True)
class _Done:
    error: BaseException | None = None


_Event = _Text | _PromptProgress | _Done


@dataclass
class Generation:
    """A request in flight. Iterate it for text; cancel it to free the backend at once.

    Backends push events from any thread with the `_emit_*` methods; the consumer reads them on
    its event loop.
    """

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    on_prompt_progress: Callable[[float], None] | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)
    text: str = ""
    _cancel: threading.Event = field(default_factory=threading.Event)
    _events: asyncio.Queue[_Event] = field(default_factory=asyncio.Queue)
    _finished: bool = False
    enough: bool = False  # set by stop(): the consumer ended generation because it was complete
    created: float = field(default_factory=time.perf_counter)

    # -- consumer side ---------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    def stop(self) -> None:
        """The consumer has what it needs: end generation as a cancel does, but count it as a
        normal stop in the stats (so a stopped suggestion is not mistaken for a cancelled one)."""
        self.enough = True
        self.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self._finished

    async def __aiter__(self) -> AsyncIterator[str]:
        while not self._finished:
            event = await self._events.get()
            if isinstance(event, _Text):
                self.text += event.text
                yield event.text
            elif isinstance(event, _PromptProgress):
                if self.on_prompt_progress is not None:
                    self.on_prompt_progress(event.fraction)
            else:
                self._finished = True
                if event.error is not None:
                    raise event.error

    async def complete(self) -> str:
        """Wait for the whole answer."""
        async for _ in self:
            pass
        return self.text

    async def __aenter__(self) -> Generation:
        return self

    async def __aexit__(self, exc_type: object, *exc_info: object) -> None:
        # Leaving the block early must free the backend: after `break` the consumer had enough;
        # an error or a cancelled handler is a cancellation.
        if not self._finished:
            self.stop() if exc_type is None else self.cancel()

    # -- backend side ----------------------------------------------------------------------------
    def should_stop(self) -> bool:
        return self._cancel.is_set()

    def _put(self, event: _Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the consumer's loop is closed (shutdown): nobody is listening
            self._cancel.set()

    def emit_text(self, text: str) -> None:
        if text:
            self._put(_Text(text))

    def emit_prompt_progress(self, fraction: float) -> None:
        self._put(_PromptProgress(fraction))

    def emit_done(self, error: BaseException | None = None) -> None:
        self._put(_Done(error))


class Engine(ABC):
    """A model backend. `start` begins loading in the background; `generate` may be called at
    any time and waits for the model if it is still loading."""

    # Whether a prompt read while idle (max_tokens 0) is kept for the requests after it, in a
    # cache of ours: a remote server's cache is its own, and a guess there costs it real work.
    keeps_prefills: bool = False
    # Whether `GenerationRequest.avoid_start` is honoured (a remote server's token ids are not ours).
    avoids_starts: bool = False

    def __init__(self) -> None:
        self._listeners: list[StatusListener] = []
        self.status = EngineStatus(EngineState.IDLE)
        self._recent: collections.deque[GenerationStats] = collections.deque(maxlen=50)

    def record(self, stats: GenerationStats) -> None:
        self._recent.append(stats)

    def recent_stats(self) -> list[dict[str, object]]:
        """The latest requests' figures, newest last (for `qwen/status`, benchmarks, tests)."""
        return [{**dataclasses.asdict(s), "stop_reason": s.stop_reason.value if s.stop_reason else None} for s in self._recent]

    def add_status_listener(self, listener: StatusListener) -> None:
        self._listeners.append(listener)

    def remove_status_listeners(self) -> None:
        """Forget every listener: whoever replaced this engine no longer reports on it."""
        self._listeners.clear()

    def _set_status(self, status: EngineStatus) -> None:
        self.status = status
        for listener in list(self._listeners):
            listener(status)

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def generate(
        self,
        request: GenerationRequest,
        on_prompt_progress: Callable[[float], None] | None = None,
    ) -> Generation:
        """Queue a request and return its handle at once (never blocks the event loop)."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """What the backend is running, for `doctor` and logs."""

    @abstractmethod
    def close(self, wait: float | None = None) -> None:
        """Take no more requests. With `wait`, the session ends: stop all work and return once
        the backend's resources are freed, or after `wait` seconds."""
