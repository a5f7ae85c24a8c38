"""Code completion: fill-in-the-middle at the cursor.

Takes a document and a cursor, asks the engine for the middle, and returns a suggestion that
inserts at the cursor. (The smarter context, cache and post-processing build on this.)
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen_lsp import prompts
from qwen_lsp.config import Settings
from qwen_lsp.documents import Document
from qwen_lsp.engine.base import Engine, GenerationRequest

LINES_BEFORE = 60
LINES_AFTER = 20


@dataclass(frozen=True)
class Suggestion:
    text: str  # inserted at `offset`
    offset: int


def fim_prompt(prefix: str, suffix: str) -> str:
    return prompts.render("fim.txt", prefix=prefix, suffix=suffix)


def window(doc: Document, offset: int) -> tuple[str, str]:
    line, _ = doc.position_at(offset)
    start = doc.offset_at(max(0, line - LINES_BEFORE), 0)
    end = doc.offset_at(min(doc.line_count - 1, line + LINES_AFTER) + 1, 0)
    return doc.text[start:offset], doc.text[offset:end]


async def suggest(engine: Engine, settings: Settings, doc: Document, offset: int) -> Suggestion | None:
    prefix, suffix = window(doc, offset)
    request = GenerationRequest(
        prompt=fim_prompt(prefix, suffix),
        max_tokens=settings.completion_max_tokens,
        stop=("\n",),
    )
    async with engine.generate(request) as generation:
        text = (await generation.complete()).rstrip()
    if not text.strip():
        return None
    return Suggestion(text, offset)
