"""Explain a selection (or the function at the cursor): a chat prompt with the selection's
context from the file, whose answer streams to the caller as it grows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qwen_lsp.prompting import render as prompts
from qwen_lsp.syntax import symbols
from qwen_lsp.config import Settings
from qwen_lsp.syntax.documents import Document
from qwen_lsp.engine.base import ChatMessage, Engine, GenerationRequest, StopReason

# Context shown besides the selection, in characters (~4 per token; ~10 ms a token to read).
CONTEXT_CHARS = 2000


@dataclass(frozen=True)
class ExplainUpdate:
    """Either prompt evaluation progress (`text` None) or the explanation so far."""

    prompt_fraction: float | None = None
    text: str | None = None


@dataclass(frozen=True)
class Target:
    """What to explain: character offsets and what to call it."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class Explanation:
    text: str
    complete: bool  # False when cancelled or cut at the token limit


def target(doc: Document, start: int, end: int) -> Target | None:
    """The selection if there is one, else the function (or class) at the cursor."""
    if doc.text[start:end].strip():
        return Target(start, end, "selection")
    if doc.tree is None:
        return None
    node = symbols.function_at(doc.tree, doc.byte_offset(start))
    if node is None:
        return None
    data = doc.text.encode("utf-8", "surrogatepass")
    name = symbols.definition_name(node, data)
    return Target(symbols.char_offset(data, node.start_byte), symbols.char_offset(data, node.end_byte), f"`{name}`")


def context(doc: Document, start: int, end: int) -> str:
    """Signatures around the selection, the file's imports, and the definitions elsewhere in the
    file of names the selection uses (short ones whole, long ones as outlines)."""
    if doc.tree is None:
        return ""
    data = doc.text.encode("utf-8", "surrogatepass")
    start_byte, end_byte = doc.byte_offset(start), doc.byte_offset(end)
    parts = []
    imports = symbols.imports(doc.tree, data)
    if imports:
        parts.append("Imports of the file:\n```" + doc.language_id + "\n" + "\n".join(imports) + "\n```")
    around = symbols.enclosing_signatures(doc.tree, start_byte, end_byte, data)
    if around:
        parts.append("The code is inside:\n```" + doc.language_id + "\n" + "\n".join(around) + "\n```")
    shown = symbols.used_definitions_text(doc.tree, data, start_byte, end_byte, CONTEXT_CHARS)
    if shown:
        parts.append(
            "Definitions from the same file that it uses:\n```" + doc.language_id + "\n" + "\n\n".join(shown) + "\n```"
        )
    return "\n\n".join(parts)


def build_messages(doc: Document, start: int, end: int) -> tuple[ChatMessage, ...]:
    user = prompts.render(
        "explain_user.md",
        path=doc.uri.rsplit("/", 1)[-1],
        language=doc.language_id,
        context=context(doc, start, end),
        selection=doc.text[start:end].strip("\n"),
    )
    return (ChatMessage("system", prompts.render("explain_system.md")), ChatMessage("user", user))


async def explain(
    engine: Engine,
    settings: Settings,
    doc: Document,
    start: int,
    end: int,
    on_update: Callable[[ExplainUpdate], None],
) -> Explanation:
    """Stream the explanation of doc.text[start:end] through `on_update`; the result's text is
    the last text update, stripped of surrounding whitespace."""
    request = GenerationRequest(messages=build_messages(doc, start, end), max_tokens=settings.explain_max_tokens)
    generation = engine.generate(request, lambda f: on_update(ExplainUpdate(prompt_fraction=f)))
    async with generation:
        async for _ in generation:
            on_update(ExplainUpdate(text=generation.text.strip()))
    return Explanation(generation.text.strip(), generation.stats.stop_reason is StopReason.STOP)
