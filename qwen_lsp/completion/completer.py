"""Code completion: fill-in-the-middle at the cursor, answered from the cache when possible.

A request first asks the syntax tree whether to complete anything (and whether a line or a block),
then the cache (exact place, or a suggestion being typed through), then the generation in flight
for this document (re-attached if the new prefix extends it, superseded otherwise), and only then
the model, with a prompt laid out for KV reuse (see context.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_lsp.completion import layout as context
from qwen_lsp.completion import postprocess
from qwen_lsp.completion.cache import SuggestionCache
from qwen_lsp.completion.flight import Flight
from qwen_lsp.completion.layout import Context, Mode
from qwen_lsp.completion.project_context import ProjectContext
from qwen_lsp.config import Settings
from qwen_lsp.engine.base import Engine, GenerationRequest, StopReason
from qwen_lsp.engine.tokens import Prompt
from qwen_lsp.prompting.render import render_prompt
from qwen_lsp.syntax import symbols
from qwen_lsp.syntax.documents import Document

# An edit inserting at most this much is typing (a keystroke, or Enter with its indentation).
TYPED_CHARS = 32
# The settings that shape a suggestion: the cache keeps only answers made under their values.
ANSWER_SETTINGS = (
    "model",
    "backend",
    "endpoint",
    "model_name",
    "completion_max_tokens",
    "completion_max_ms",
    "completion_context_tokens",
    "completion_cold_prompt_ms",
    "completion_cold_context_tokens",
    "project_context_tokens",
)


@dataclass(frozen=True)
class Suggestion:
    text: str  # inserted at `offset`
    offset: int


def fim_prompt(ctx: Context) -> Prompt:
    """The prompt ends at the cursor (see layout.py), so it also serves to warm the KV cache;
    a space or tab right before the cursor is the model's to write (`Context.held_back`)."""
    middle = ctx.middle[: len(ctx.middle) - len(ctx.held_back)]
    return render_prompt("fim.txt", header=ctx.header, prefix=ctx.prefix, suffix=ctx.suffix, middle=middle)


class Completer:
    """Completion for one session: its cache and, per document, the generation in flight.

    The newest request of a document wins: an older one still waiting gives up (answering
    nothing) rather than queue a generation behind it, and a generation that cannot answer the
    newest request is cancelled. Cancelling loses no work: the KV cache keeps the evaluated
    prompt, which the next prompt shares up to the cursor.
    """

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine
        self.cache = SuggestionCache()
        self._flights: dict[str, Flight] = {}
        self._warming: Flight | None = None
        self._warming_uri = ""  # the document `_warming` reads a prompt of
        # Newest request number per document (0: none yet, but a place in it was prefilled).
        self._requests: dict[str, int] = {}
        self.project = ProjectContext()

    def prompt(self, settings: Settings, doc: Document, ctx: Context) -> Prompt:
        """The FIM prompt for `ctx`, behind what the model should know of the rest of the project."""
        return self.project.prompt(doc.uri, doc.text, doc.version, settings.project_context_tokens, fim_prompt(ctx))

    async def suggest(self, settings: Settings, doc: Document, offset: int) -> Suggestion | None:
        number = self._requests[doc.uri] = self._requests.get(doc.uri, 0) + 1
        self.cache.made_with(answer_shape(settings))
        ctx = context.build(doc, offset, settings.completion_context_tokens)
        if ctx.mode is Mode.NOTHING:
            return None
        before, after = doc.text[:offset], doc.text[offset:]
        cached = self.cache.get(before, after)
        if cached is not None:
            return Suggestion(cached, offset)

        flight = self._flights.get(doc.uri)
        if flight is not None and not flight.done:
            typed = flight.typed_since(before, after)
            if typed is None:
                flight.supersede()
            else:
                text = await flight.result()
                if text is not None:
                    text = complete_lines(text, flight.stop_reason, ctx)
                if text and text.startswith(typed):
                    cleaned = postprocess.clean(text[len(typed) :], ctx)
                    return Suggestion(cleaned, offset) if cleaned else None
                # It went another way than the user: ask the model afresh.

        if settings.debounce_ms > 0:
            await asyncio.sleep(settings.debounce_ms / 1000)
        if self._requests.get(doc.uri) != number:
            return None  # a newer request from this document took over, or it was closed
        cleaned = await self._generate(settings, doc, ctx, before, after)
        if cleaned is not None:
            self.cache.put(before, after, cleaned)
        return Suggestion(cleaned, offset) if cleaned else None

    def warm(self, settings: Settings, doc: Document, offset: int) -> None:
        """After an edit, evaluate the prompt up to the cursor while the engine is idle, so the
        request that follows (now or after a pause) only pays for what comes after it."""
        busy = [*self._flights.values(), *([self._warming] if self._warming else [])]
        if any(not flight.done for flight in busy):
            return
        self._warm_at(settings, doc, offset, context.build(doc, offset, settings.completion_context_tokens))

    def prefill(self, settings: Settings, doc: Document, offset: int) -> None:
        """The cursor rests at `offset` (our editor plugins say so) or the document was just
        opened: evaluate the prompt there while the engine is idle, so that typing there starts
        warm. It queues behind generations already asked for, and a real request supersedes it
        (see `_start`): the engine lets go within one prompt step. Only for an engine that
        keeps what it read (the in-process model; see `Engine.keeps_prefills`)."""
        if not self._engine().keeps_prefills:
            return
        if self._warming is not None and not self._warming.done:
            self._warming.supersede()  # the cursor moved on: only its newest resting place counts
        self._requests.setdefault(doc.uri, 0)  # a place in it is known: `opened` need not guess one
        ctx = context.build(doc, offset, settings.completion_context_tokens)
        if ctx.mode is Mode.NOTHING and ctx.line_suffix:
            # Resting on code the user will edit rather than extend: the line's end shares the
            # prompt's stable part (project sections, header, the window up to the anchor).
            offset += len(ctx.line_suffix)
            ctx = context.build(doc, offset, settings.completion_context_tokens)
        self._warm_at(settings, doc, offset, ctx, new_place=True)

    def _warm_at(self, settings: Settings, doc: Document, offset: int, ctx: Context, new_place: bool = False) -> None:
        if not settings.enable_completion or ctx.mode is Mode.NOTHING:
            return
        self.cache.made_with(answer_shape(settings))
        if self.cache.get(doc.text[:offset], doc.text[offset:]) is not None:
            return
        # At a new place, a prefill too cold for the budget first reads the prompt a request
        # there would answer from, then the full one (LocalEngine._serve). While typing, the
        # full one is what the next keystrokes need.
        fallback = self._fallback(settings, doc, offset) if new_place else {}
        request = GenerationRequest(prompt=self.prompt(settings, doc, ctx), max_tokens=0, **fallback)
        self._warming = Flight(self._engine().generate(request), doc.text[:offset], doc.text[offset:], lambda _: False, ctx.held_back)
        self._warming_uri = doc.uri

    # -- the project around the documents (see project_context.py) ---------------------------------
    def set_workspace(self, folders: list[Path]) -> None:
        self.project.set_folders(folders)

    async def opened(self, doc: Document, settings: Settings) -> None:
        """A document was opened: read what it imports from the project, off the event loop;
        then prefill its likely first place (the project sections read just now lead every
        prompt of the file, so they are read first)."""
        self.project.opened(doc.uri, doc.text)
        if settings.project_context_tokens > 0:
            await asyncio.to_thread(self.project.warm, doc.uri, doc.text)
        if settings.enable_completion and doc.uri not in self._requests:
            self.prefill(settings, doc, first_place(doc))

    def edited(self, doc: Document) -> None:
        self.project.edited(doc.uri, doc.text)

    def saved(self, uri: str, doc: Document | None) -> None:
        self.project.saved(uri, doc.text if doc else None)

    def files_changed(self, uris: list[str]) -> None:
        self.project.files_changed(uris)

    def forget(self, uri: str) -> None:
        """The document was closed: stop its generation, and the reading of its prompt."""
        self.project.closed(uri, None)
        flight = self._flights.pop(uri, None)
        if flight is not None and not flight.done:
            flight.supersede()
        if self._warming is not None and self._warming_uri == uri and not self._warming.done:
            self._warming.supersede()
        self._requests.pop(uri, None)

    async def _generate(self, settings: Settings, doc: Document, ctx: Context, before: str, after: str) -> str | None:
        text = await self._run(settings, doc, ctx, before, after)
        if text is None:
            return None
        indent = postprocess.missing_indent(text, ctx)
        if indent is not None:
            # Ask again as an auto-indenting editor would have placed the cursor (the prompt
            # only grows by the indentation, so this costs a few tokens, not the window).
            indented = dataclasses.replace(ctx, middle=ctx.middle + indent, line_prefix=indent)
            again = await self._run(settings, doc, indented, before + indent, after)
            cleaned = postprocess.clean(again, indented) if again else None
            return indent + cleaned if cleaned else None
        cleaned = postprocess.clean(text, ctx)
        asks_again = cleaned is None and self._engine().avoids_starts
        repeated = postprocess.repeats_what_follows(text, ctx) if asks_again else ""
        if repeated:
            # The model wrote the next line again, as if nothing were missing here: ask for its
            # next choice (the prompt is in the KV cache, so this costs a few tokens).
            again = await self._run(settings, doc, ctx, before, after, avoid_start=ctx.held_back + repeated)
            return postprocess.clean(again, ctx) if again else None
        return cleaned

    async def _run(self, settings: Settings, doc: Document, ctx: Context, before: str, after: str, avoid_start: str = "") -> str | None:
        """A new generation's text (None if it was superseded), a block cut short trimmed."""
        flight = self._start(settings, doc, ctx, before, after, avoid_start)
        text = await flight.result()
        if flight.generation.stats.fell_back:
            # Answered from the small window: read the full one while the user reads the answer.
            self._warm_at(settings, doc, len(before), ctx)
        return None if text is None else complete_lines(text, flight.stop_reason, ctx)

    def _start(self, settings: Settings, doc: Document, ctx: Context, before: str, after: str, avoid_start: str = "") -> Flight:
        if self._warming is not None and not self._warming.done:
            self._warming.supersede()  # its evaluated prompt stays in the KV cache for this one
        previous = self._flights.get(doc.uri)
        if previous is not None and not previous.done:
            previous.supersede()
        request = GenerationRequest(
            prompt=self.prompt(settings, doc, ctx),
            max_tokens=settings.completion_max_tokens,
            max_generation_time=settings.completion_max_ms / 1000 if settings.completion_max_ms > 0 else None,
            avoid_start=avoid_start,
            **self._fallback(settings, doc, len(before)),
        )
        generation = self._engine().generate(request)
        flight = Flight(generation, before, after, lambda text: postprocess.end_of_suggestion(text, ctx) is not None, ctx.held_back)
        self._flights[doc.uri] = flight
        return flight

    def _fallback(self, settings: Settings, doc: Document, offset: int) -> dict[str, Any]:
        """The smaller prompts the engine answers from when the full one is too cold to read in
        time: a smaller window behind the project's sections, then that window alone (the
        sections are no quicker to read than the full window until they are in the KV cache).
        The place, and so the start of the answer, is the same."""
        if settings.completion_cold_prompt_ms <= 0 or settings.completion_cold_context_tokens >= settings.completion_context_tokens:
            return {}
        own = fim_prompt(context.build(doc, offset, settings.completion_cold_context_tokens))
        with_sections = self.project.prompt(doc.uri, doc.text, doc.version, settings.project_context_tokens, own)
        prompts = (own,) if with_sections is own else (with_sections, own)
        return {"fallback_prompts": prompts, "max_prompt_seconds": settings.completion_cold_prompt_ms / 1000}


def answer_shape(settings: Settings) -> tuple[object, ...]:
    return tuple(getattr(settings, name) for name in ANSWER_SETTINGS)


def first_place(doc: Document) -> int:
    """Where a freshly opened document will most likely be completed first, as far as the server
    can tell: the end of its first definition (inside a function body, and a window from the
    file's top that nearby places share), else the end of the text."""
    definitions = symbols.top_level_definitions(doc.tree, doc.data).values() if doc.tree is not None else []
    first = min((d.node for d in definitions if d.node.type != "expression_statement"), key=lambda n: n.start_byte, default=None)
    if first is None:
        return len(doc.text)
    return symbols.char_offset(doc.data, first.end_byte)


def complete_lines(text: str, stop_reason: StopReason | None, ctx: Context) -> str:
    """A suggestion cut short by the time or token budget keeps only its complete lines: a block
    drops its last line, and a line that never reached its end is no suggestion (it would show a
    cut-off start such as "margin =")."""
    if stop_reason not in (StopReason.TIME, StopReason.LENGTH):
        return text
    if ctx.mode is Mode.LINE:
        return text if postprocess.end_of_suggestion(text, ctx) is not None else ""
    if "\n" in text.strip("\n"):
        return text[: text.rstrip("\n").rfind("\n")]
    return text if text.endswith("\n") else ""
