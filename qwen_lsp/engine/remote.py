"""The remote backend: any server speaking the OpenAI-compatible HTTP API (llama.cpp's
`llama-server`, vLLM, Ollama, llama-cpp-python's `llama_cpp.server`).

A raw prompt (fill-in-the-middle) goes to `/completions`, chat messages to `/chat/completions`,
both streamed as server-sent events. Each request runs as an asyncio task on the caller's loop;
cancelling the `Generation` cancels the task, which closes the HTTP stream at once so the server
stops generating. One keep-alive connection pool serves all requests: a completion per typing
pause must not pay a TCP (or TLS) handshake.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from qwen_lsp.engine.base import (
    Engine,
    EngineError,
    EngineState,
    EngineStatus,
    Generation,
    GenerationRequest,
    GenerationStats,
    StopReason,
)
from qwen_lsp.engine.tokens import Refuser, defuse

log = logging.getLogger(__name__)

API_KEY_ENV = "QWEN_LSP_API_KEY"
# The OpenAI API accepts at most four stop strings; the rest are enforced here.
SERVER_STOP_LIMIT = 4
# After `[DONE]` a server ends the response at once; a proxy may hold it open. This long, then
# the connection is dropped rather than waited on.
DRAIN_SECONDS = 0.05


@dataclass(frozen=True)
class RemoteSettings:
    endpoint: str = "http://127.0.0.1:8080/v1"  # llama-server's default address
    model_name: str = ""  # empty: the first model the server lists
    api_key: str | None = field(default=None, repr=False)  # from API_KEY_ENV only; never logged
    # A server that does not accept a connection within this time is down (or the URL is wrong).
    connect_timeout: float = 3.0
    # Once connected, the first token may wait this long: a cold model load on Ollama or vLLM,
    # or a long prompt on a busy server, takes tens of seconds.
    load_timeout: float = 300.0
    # Once tokens flow, a server silent for this long has died mid-answer.
    stall_timeout: float = 30.0


@dataclass
class RemoteGeneration(Generation):
    """A `Generation` whose cancellation also cancels the HTTP task, closing its stream."""

    task: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        super().cancel()
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)


class _StopScanner:
    """Cuts streamed text at the first stop string, holding back what could start one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.holdback = max((len(s) for s in stops), default=0)
        self.text = ""
        self.emitted = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """What may be shown now, and whether a stop string was reached."""
        self.text += piece
        search_from = max(0, self.emitted - self.holdback)
        hits = [i for s in self.stops if (i := self.text.find(s, search_from)) >= 0]
        if hits:
            return self._take(min(hits)), True
        return self._take(len(self.text) - self.holdback if self.stops else len(self.text)), False

    def flush(self) -> str:
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        out = self.text[self.emitted : max(end, self.emitted)]
        self.emitted = max(end, self.emitted)
        return out


class RemoteEngine(Engine):
    def __init__(self, settings: RemoteSettings) -> None:
        super().__init__()
        self.settings = settings
        self._base = settings.endpoint.rstrip("/")  # with any user:password@, for requests only
        url = httpx.URL(self._base)
        self.endpoint = str(url.copy_with(username=None, password=None)) if url.userinfo else self._base
        # A key pasted with its line end is still the key (and a newline in a header is refused
        # by the HTTP library in a message that quotes the header).
        self.api_key = (settings.api_key or "").strip() or None
        self._secrets = _secrets(self.api_key, url)
        self.model_name = settings.model_name or None
        self._client: httpx.AsyncClient | None = None
        self._probe: asyncio.Task[None] | None = None
        self._listing = asyncio.Lock()  # one model listing at a time, not one per waiting request
        self._streams: set[asyncio.Task[None]] = set()  # requests in flight, which own the client
        self._closed = False

    # -- public ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Check the server in the background so the editor learns early if it is down."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop yet: the first request checks instead
            return
        if self._probe is None:
            self._set_state(EngineState.LOADING, f"Connecting to {self.endpoint}")
            self._probe = loop.create_task(self._check())

    def generate(
        self,
        request: GenerationRequest,
        on_prompt_progress: Callable[[float], None] | None = None,
    ) -> Generation:
        generation = RemoteGeneration(request, asyncio.get_running_loop(), on_prompt_progress)
        if self._closed:  # whoever replaced this engine serves new requests
            generation.emit_done(EngineError("The model engine was replaced (the settings changed); ask again."))
            return generation
        generation.task = task = generation.loop.create_task(self._serve(generation))
        self._streams.add(task)
        task.add_done_callback(lambda task: self._ended(task, generation))
        return generation

    def describe(self) -> dict[str, object]:
        return {
            "backend": "openai",
            "endpoint": self.endpoint,
            "model": self.model_name,
            "state": self.status.state.value,
            "api_key": "set" if self.api_key else "not set",
        }

    def close(self, wait: float | None = None) -> None:
        """Take no more requests. Streams in flight are read to their end (a settings change must
        not turn an answer being written into an error); with `wait` (the session ends) they are
        cancelled. The connections close once the last stream has ended."""
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
        if wait is not None:
            for task in self._streams:
                task.cancel()
        if not self._streams:
            self._close_client()

    # -- requests --------------------------------------------------------------------------------
    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.settings.load_timeout, connect=self.settings.connect_timeout),
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=4, keepalive_expiry=60),
            )
        return self._client

    async def _check(self) -> None:
        try:
            await self._model()
        except EngineError as exc:
            log.warning("%s", exc)  # _set_state has told the user

    async def _model(self) -> str:
        """The model to ask for: the configured name, else the first one the server lists."""
        async with self._listing:
            if self.model_name is None:
                response = await self._send("GET", "/models")
                await response.aread()
                await response.aclose()
                try:
                    self.model_name = str(response.json()["data"][0]["id"])
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    raise self._failure(f"{self.endpoint}/models lists no model; set --model-name.") from exc
            return self.model_name

    def _ended(self, task: asyncio.Task[None], gen: Generation) -> None:
        self._streams.discard(task)
        if task.cancelled():  # before `_serve` started: it had no chance to answer
            self._cancelled(gen)
        if self._closed and not self._streams:
            self._close_client()

    def _close_client(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                asyncio.get_running_loop().create_task(client.aclose())
            except RuntimeError:  # the loop is gone and its sockets with it
                pass

    def _cancelled(self, gen: Generation) -> None:
        gen.stats.stop_reason = StopReason.STOP if gen.enough else StopReason.CANCELLED
        self.record(gen.stats)
        gen.emit_done()

    async def _serve(self, gen: Generation) -> None:
        try:
            await self._stream(gen)
        except asyncio.CancelledError:  # the consumer cancelled: the stream is closed already
            self._cancelled(gen)
            return
        except EngineError as exc:
            gen.emit_done(type(exc)(self._scrub(str(exc))))
            return
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the engine down
            message = self._scrub(f"The model server at {self.endpoint} failed: {type(exc).__name__}: {exc}")
            log.error("remote generation failed: %s", message)  # no traceback: it would quote the key
            gen.emit_done(EngineError(message))
            return
        self.record(gen.stats)
        gen.emit_done()

    def _body(self, request: GenerationRequest, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "stream": True,
            "stream_options": {"include_usage": True},
            # Greedy, like the in-process engine. llama-cpp-python's server would otherwise apply
            # a repeat penalty of 1.1, which punishes code for reusing its own identifiers.
            "temperature": 0,
            "repeat_penalty": 1.0,
            # A warm-up (max_tokens 0) still asks for one token: 0 means "no limit" to some servers.
            "max_tokens": max(1, request.max_tokens),
        }
        if request.stop:
            body["stop"] = list(request.stop[:SERVER_STOP_LIMIT])
        # These servers read special tokens anywhere in what they are sent: the user's text is
        # defused first (the local engine tokenizes it as plain text instead).
        if request.prompt is not None:
            body["prompt"] = request.prompt.defused()
        else:
            assert request.messages is not None
            body["messages"] = [{"role": m.role, "content": defuse(m.content)} for m in request.messages]
            if request.answer_start:
                # A last assistant message is continued, not answered: llama-server and Ollama do
                # so by themselves, vLLM when told.
                body["messages"].append({"role": "assistant", "content": defuse(request.answer_start)})
                body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    async def _stream(self, gen: Generation) -> None:
        request, stats = gen.request, gen.stats
        model = await self._model()
        path = "/completions" if request.prompt is not None else "/chat/completions"
        sent = time.perf_counter()
        stats.queued_seconds = sent - gen.created
        response = await self._send("POST", path, self._body(request, model))
        scanner = _StopScanner(request.stop)
        refuser = Refuser()  # the user's special-token spellings come back defused: undo that
        first_token: float | None = None
        try:
            async for chunk in self._events(response, lambda: first_token is None):  # noqa: B023 - reads it as it changes
                self._read_usage(chunk, stats)
                piece, finish = _choice(chunk)
                if finish is not None:
                    stats.stop_reason = finish
                if not piece:
                    continue
                if first_token is None:
                    first_token = time.perf_counter()
                    stats.prompt_seconds = first_token - sent
                if request.max_tokens <= 0:
                    # A warm-up: the prompt is now in the server's cache; its one token is dropped
                    # and the stream read to its end so that the connection goes back to the pool.
                    stats.stop_reason = StopReason.LENGTH
                    continue
                stats.generated_tokens += 1  # about one token per event; a usage report corrects it
                text, stopped = scanner.feed(piece)
                gen.emit_text(refuser.feed(text) + (refuser.flush() if stopped else ""))
                if stopped:
                    stats.stop_reason = StopReason.STOP
                    return
                budget = request.max_generation_time
                if budget is not None and time.perf_counter() - first_token > budget:
                    gen.emit_text(refuser.feed(scanner.flush()) + refuser.flush())
                    stats.stop_reason = StopReason.TIME
                    return
            gen.emit_text(refuser.feed(scanner.flush()) + refuser.flush())
            stats.stop_reason = stats.stop_reason or StopReason.STOP
        finally:
            # Closing an unfinished stream drops its connection: that is what stops the server.
            await response.aclose()
            if first_token is not None:
                stats.generation_seconds = time.perf_counter() - first_token

    async def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """Open a streamed response, waiting out a remote model that is still loading."""
        url = self._base + path
        deadline = time.monotonic() + self.settings.load_timeout
        stale_retried = False
        while True:
            connection = _ConnectionTrace()
            try:
                request = self.client.build_request(method, url, json=body, extensions={"trace": connection.event})
                response = await self.client.send(request, stream=True)
            except httpx.RemoteProtocolError as exc:
                if stale_retried or not connection.reused:
                    raise self._failure(f"The connection to {self.endpoint} failed: {_reason(exc)}") from exc
                # Closed without an answer on a kept-alive connection: the server had closed it
                # as the request went out, so nothing reached the model. On a new connection the
                # server may have got the request (and be generating): never sent twice.
                stale_retried = True
                continue
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise self._failure(
                    f"Cannot reach the model server at {self.endpoint} ({_reason(exc)}). Start it or fix "
                    "--endpoint; the next request will try again."
                ) from exc
            except httpx.TimeoutException as exc:
                raise self._failure(
                    f"The model server at {self.endpoint} accepted the request but did not answer within "
                    f"{self.settings.load_timeout:.0f} s."
                ) from exc
            except httpx.TransportError as exc:
                raise self._failure(f"The connection to {self.endpoint} failed: {_reason(exc)}") from exc
            if response.status_code == 503 and time.monotonic() < deadline:
                # llama-server answers 503 while it loads its model: wait, do not fail.
                await response.aclose()
                self._set_state(EngineState.LOADING, f"The model server at {self.endpoint} is loading its model")
                await asyncio.sleep(1.0)
                continue
            if response.status_code >= 400:
                await response.aread()
                await response.aclose()
                raise self._http_error(response, path)
            self._set_state(EngineState.READY, f"Connected to {self.endpoint}")
            return response

    async def _events(self, response: httpx.Response, waiting_for_first: Callable[[], bool]) -> AsyncIterator[dict[str, Any]]:
        """The JSON payloads of a server-sent event stream, up to `[DONE]`."""
        lines = response.aiter_lines()
        while True:
            limit = self.settings.load_timeout if waiting_for_first() else self.settings.stall_timeout
            try:
                async with asyncio.timeout(limit):
                    line = await anext(lines)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                what = "before the first token" if waiting_for_first() else "mid-answer"
                raise self._failure(f"The model server at {self.endpoint} went silent {what} (no data for {limit:.0f} s).") from exc
            except httpx.TransportError as exc:
                raise self._failure(f"The model server at {self.endpoint} broke the stream: {_reason(exc)}") from exc
            if not line.startswith("data:"):
                continue  # blank separators, ": ping" comments, "event:" names
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                await _drain(lines, DRAIN_SECONDS)
                return
            try:
                chunk = json.loads(data)
            except ValueError as exc:
                raise EngineError(f"The model server at {self.endpoint} sent a malformed event: {data[:200]}") from exc
            if "error" in chunk:
                raise EngineError(f"The model server at {self.endpoint} reported: {_error_message(chunk)}")
            yield chunk

    @staticmethod
    def _read_usage(chunk: dict[str, Any], stats: GenerationStats) -> None:
        usage = chunk.get("usage") or {}
        if usage.get("prompt_tokens"):
            stats.prompt_tokens = usage["prompt_tokens"]
        if usage.get("completion_tokens") is not None:
            stats.generated_tokens = usage["completion_tokens"]
        timings = chunk.get("timings") or {}  # llama-server: what its prompt cache saved
        if "prompt_n" in timings:
            stats.evaluated_tokens = timings["prompt_n"]
            stats.reused_tokens = timings.get("cache_n", 0)

    # -- errors and state ------------------------------------------------------------------------
    def _set_state(self, state: EngineState, message: str) -> None:
        # Only transitions: a server that stays down is reported once, not on every keystroke.
        if state is not self.status.state:
            self._set_status(EngineStatus(state, message))

    def _scrub(self, text: str) -> str:
        """`text` without the API key or the endpoint's password, however the text quotes them."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _failure(self, message: str) -> EngineError:
        message = self._scrub(message)
        self._set_state(EngineState.FAILED, message)
        return EngineError(message)

    def _http_error(self, response: httpx.Response, path: str) -> EngineError:
        code, detail = response.status_code, _error_message(_json_or_text(response))
        if code in (401, 403):
            hint = "the key in" if self.settings.api_key else "it needs an API key: set"
            return self._failure(f"The model server at {self.endpoint} refused the request (HTTP {code}); {hint} {API_KEY_ENV}.")
        if code == 404:
            model = f" or no model {self.model_name!r} (see --model-name)" if self.model_name else ""
            return self._failure(
                f"The model server at {self.endpoint} has no {path}{model} (HTTP 404: {detail}). The endpoint should end in /v1."
            )
        # A 4xx about this one request (e.g. a prompt too long) says nothing about the server.
        return EngineError(f"The model server at {self.endpoint} answered HTTP {code}: {detail}")


class _ConnectionTrace:
    """Whether a request went out on a kept-alive connection (httpcore's trace events)."""

    def __init__(self) -> None:
        self.reused = True

    async def event(self, name: str, info: dict[str, Any]) -> None:
        if name.startswith("connection.connect_tcp"):
            self.reused = False


def _secrets(api_key: str | None, url: httpx.URL) -> list[str]:
    """What must never be shown: the key and the URL's user:password, as written and as quoted
    in a bytes repr (a newline inside becomes a backslash and an n), longest first."""
    found = {api_key or "", url.userinfo.decode("utf-8", "replace"), url.password or ""}
    found |= {repr(s.encode())[2:-1] for s in found if s}
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def _choice(chunk: dict[str, Any]) -> tuple[str, StopReason | None]:
    """The text of a completion or chat event, and why the server stopped (if it did)."""
    choices = chunk.get("choices") or []
    if not choices:
        return "", None  # e.g. the closing usage event
    choice = choices[0]
    text = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
    reason = choice.get("finish_reason")
    return text or "", None if reason is None else StopReason.LENGTH if reason == "length" else StopReason.STOP


async def _drain(lines: AsyncIterator[str], limit: float) -> None:
    """Read a finished stream to its very end: only a fully read response gives its connection
    back to the pool; closing it one byte early drops the connection."""
    try:
        async with asyncio.timeout(limit):
            async for _ in lines:
                pass
    except (TimeoutError, httpx.TransportError):
        pass  # the connection is dropped instead; the answer is complete either way


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _error_message(payload: Any) -> str:
    """OpenAI errors are {"error": {"message": ...}}; others send a string or {"detail": ...}."""
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload))
        if isinstance(error, dict):
            error = error.get("message", error)
        payload = error
    return str(payload).strip().splitlines()[0][:300] if str(payload).strip() else "(no detail)"


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
