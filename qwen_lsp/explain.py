"""Explain a selection: a chat prompt whose answer streams to the caller as it grows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qwen_lsp import prompts
from qwen_lsp.config import Settings
from qwen_lsp.documents import Document
from qwen_lsp.engine.base import ChatMessage, Engine, GenerationRequest


@dataclass(frozen=True)
class ExplainUpdate:
    """Either prompt evaluation progress (`text` None) or the explanation so far."""

    prompt_fraction: float | None = None
    text: str | None = None


def build_messages(doc: Document, start: int, end: int) -> tuple[ChatMessage, ...]:
    selection = doc.text[start:end]
    user = prompts.render(
        "explain_user.md",
        path=doc.uri.rsplit("/", 1)[-1],
        language=doc.language_id,
        context="",
        selection=selection,
    )
    return (
        ChatMessage("system", prompts.render("explain_system.md")),
        ChatMessage("user", user),
    )


async def explain(
    engine: Engine,
    settings: Settings,
    doc: Document,
    start: int,
    end: int,
    on_update: Callable[[ExplainUpdate], None],
) -> str:
    request = GenerationRequest(
        messages=build_messages(doc, start, end),
        max_tokens=settings.explain_max_tokens,
    )
    generation = engine.generate(request, lambda f: on_update(ExplainUpdate(prompt_fraction=f)))
    async with generation:
        async for _ in generation:
            on_update(ExplainUpdate(text=generation.text))
    return generation.text.strip()
