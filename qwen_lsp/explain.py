"""Explain a selection (or the function at the cursor): a chat prompt with the selection's
context from the file and the facts an answer must name, whose answer streams to the caller as
it grows, sentence by sentence, with the sentences that claim what the prompt does not show
left out."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from qwen_lsp.config import Settings
from qwen_lsp.engine.base import ChatMessage, Engine, GenerationRequest, StopReason
from qwen_lsp.prompting import render as prompts
from qwen_lsp.syntax import outline, symbols
from qwen_lsp.syntax.documents import Document

# Context shown besides the selection, in characters (~4 per token; a cold token costs ~4 ms to
# read, and the first text should come within a second).
CONTEXT_CHARS = 800
# Tokens an explanation may use: a base for the answer's form, and more per line of code.
BASE_TOKENS = 128
TOKENS_PER_LINE = 8


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


# -- language ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Language:
    name: str  # as the prompt names it
    summary: str  # the answer's three headings, in that language
    steps: str
    pitfalls: str
    parameters: str
    returns: str
    example: str  # the worked example's answer, written in this language: prompts/explain_example_<this>.md


ENGLISH = Language("English", "Summary", "Steps", "Pitfalls", "Parameters", "Returns", "en")
SIMPLIFIED_CHINESE = Language("Chinese (简体中文)", "概述", "步骤", "注意", "参数", "返回", "zh-hans")
TRADITIONAL_CHINESE = Language("Traditional Chinese (繁體中文)", "概述", "步驟", "注意", "參數", "返回", "zh-hant")
LANGUAGES: dict[str, Language] = {
    "en": ENGLISH,
    "zh": SIMPLIFIED_CHINESE,
    "zh-cn": SIMPLIFIED_CHINESE,
    "zh-sg": SIMPLIFIED_CHINESE,
    "zh-hans": SIMPLIFIED_CHINESE,
    "zh-tw": TRADITIONAL_CHINESE,
    "zh-hk": TRADITIONAL_CHINESE,
    "zh-hant": TRADITIONAL_CHINESE,
    "ja": Language("Japanese (日本語)", "概要", "手順", "注意点", "引数", "戻り値", "ja"),
    "ko": Language("Korean (한국어)", "요약", "단계", "주의", "매개변수", "반환", "ko"),
    "de": Language("German (Deutsch)", "Zusammenfassung", "Schritte", "Fallstricke", "Parameter", "Rückgabe", "de"),
    "fr": Language("French (français)", "Résumé", "Étapes", "Pièges", "Paramètres", "Retour", "fr"),
    "es": Language("Spanish (español)", "Resumen", "Pasos", "Trampas", "Parámetros", "Devuelve", "es"),
    "it": Language("Italian (italiano)", "Riepilogo", "Passaggi", "Insidie", "Parametri", "Restituisce", "it"),
    "pt": Language("Portuguese (português)", "Resumo", "Passos", "Armadilhas", "Parâmetros", "Retorno", "pt"),
    "ru": Language("Russian (русский)", "Кратко", "Шаги", "Подводные камни", "Параметры", "Возвращает", "ru"),
}


def language_of(tag: str | None) -> Language:
    """The language for a BCP-47 tag (VS Code: "zh-cn") or a POSIX locale (Neovim's v:lang:
    "zh_CN.UTF-8"); English for anything unknown, "C" and "POSIX" included."""
    if not tag:
        return ENGLISH
    tag = re.split(r"[.@]", tag.strip().lower().replace("_", "-"), maxsplit=1)[0]
    parts = tag.split("-")
    for candidate in (tag, "-".join(parts[:2]), *(f"{parts[0]}-{p}" for p in parts[1:]), parts[0]):
        if candidate in LANGUAGES:
            return LANGUAGES[candidate]
    return ENGLISH


# -- what to explain and the prompt ----------------------------------------------------------------
def target(doc: Document, start: int, end: int) -> Target | None:
    """The selection if there is one, else the function (or class) at the cursor."""
    if doc.text[start:end].strip():
        return Target(start, end, "selection")
    if doc.tree is None:
        return None
    node = symbols.function_at(doc.tree, doc.byte_offset(start))
    if node is None:
        return None
    data = doc.data
    name = symbols.definition_name(node, data)
    return Target(symbols.char_offset(data, node.start_byte), symbols.char_offset(data, node.end_byte), f"`{name}`")


def _fence(doc: Document, title: str, lines: list[str], separator: str = "\n") -> str:
    return f"{title}\n```{doc.language_id}\n{separator.join(lines)}\n```\n"


def context(doc: Document, start: int, end: int, needed: tuple[str, ...] = ()) -> str:
    """The imports of names the selection uses, the signatures around it, and the definitions
    elsewhere in the file of names it uses (short ones whole, long ones as outlines)."""
    if doc.tree is None:
        return ""
    data = doc.data
    start_byte, end_byte = doc.byte_offset(start), doc.byte_offset(end)
    parts = []
    imports = [line for line in symbols.imports(doc.tree, data) if set(re.findall(r"\w+", line)) & set(needed)]
    if imports:
        parts.append(_fence(doc, "Imports it uses:", imports))
    around = symbols.enclosing_signatures(doc.tree, start_byte, end_byte, data)
    if around:
        parts.append(_fence(doc, "The code is inside:", around))
    shown = used_definitions(doc, data, start_byte, end_byte, needed)
    if shown:
        parts.append(_fence(doc, "Definitions from the same file that it uses:", shown, "\n\n"))
    return "".join(parts)


def used_definitions(doc: Document, data: bytes, start_byte: int, end_byte: int, needed: tuple[str, ...]) -> list[str]:
    """The file's definitions of the names the code needs from outside (not of its own local
    names that happen to share a top-level name), those that fit in CONTEXT_CHARS."""
    assert doc.tree is not None
    budget, shown = CONTEXT_CHARS, []
    for definition in symbols.used_definitions(doc.tree, data, start_byte, end_byte):
        source = symbols.render_definition(definition, data)
        if definition.name in needed and len(source) <= budget:
            budget -= len(source)
            shown.append(source)
    return shown


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def example(language: Language) -> tuple[ChatMessage, ChatMessage]:
    """One question and its answer, the same for every request in one language: a small model
    copies the form of an answer it has given far more faithfully than it fills in a described
    form (whose slots it copies), and these messages, like the system message, stay in the KV
    cache from one request to the next. The answer is in the language asked for: an English one
    draws the model into English."""
    headings = {
        "summary": language.summary,
        "parameters": language.parameters,
        "steps": language.steps,
        "returns": language.returns,
    }
    return (
        ChatMessage("user", prompts.render("explain_example_user.md", language_name=language.name)),
        ChatMessage("assistant", prompts.render(f"explain_example_{language.example}.md", **headings)),
    )


def answer_start(found: outline.Outline, language: Language) -> str:
    """The first words of the answer, written by us: the summary's heading and, for a function,
    its name and parameters, which the model goes on to say what it does with. A small model told
    to name them often does not; given them as its own first words, it carries on from them."""
    start = f"**{language.summary}:**"
    if found.name is None:
        return start
    if found.kind == "class":
        return f"{start} `{found.name}`"
    return f"{start} `{found.name}({', '.join(found.parameters)})`"


@dataclass(frozen=True)
class Asked:
    """What the model is given: the messages, and the start of its answer."""

    messages: tuple[ChatMessage, ...]
    answer_start: str

    @property
    def shown(self) -> str:
        """What the model was shown of the user's code (the user message): the answer may name
        only what is in it. The system message's words (its form, "README") do not count."""
        return self.messages[-1].content


def ask(doc: Document, start: int, end: int, language: str | None = None) -> Asked:
    """The system message is the same for every request in one language, so that its evaluation
    is kept in the KV cache; what changes comes after it."""
    speech = language_of(language)
    selection = doc.text[start:end].strip("\n")
    found = outline.Outline(None, None, (), None, False, ())
    if doc.tree is not None:
        found = outline.outline(doc.tree, doc.data, doc.byte_offset(start), doc.byte_offset(end))
    user = prompts.render(
        "explain_user.md",
        path=doc.uri.rsplit("/", 1)[-1],
        language=doc.language_id,
        context=context(doc, start, end, found.outside_names),
        selection=selection,
        uses=f"It uses from elsewhere: {_names(found.outside_names[:6])}." if found.outside_names else "",
        language_name=speech.name,
    )
    system = ChatMessage("system", prompts.render("explain_system.md", language_name=speech.name, pitfalls=speech.pitfalls))
    return Asked((system, *example(speech), ChatMessage("user", user)), answer_start(found, speech))


def request(settings: Settings, doc: Document, start: int, end: int, language: str | None = None) -> tuple[GenerationRequest, Asked]:
    """The generation request: the messages, and the answer's start for the model to continue."""
    asked = ask(doc, start, end, language)
    generate = GenerationRequest(
        messages=asked.messages, answer_start=asked.answer_start, max_tokens=max_tokens(settings, doc.text[start:end])
    )
    return generate, asked


def max_tokens(settings: Settings, selection: str) -> int:
    """A few lines get a few sentences; explainMaxTokens caps it. Comments do not count."""
    lines = sum(1 for line in selection.splitlines() if line.strip() and not line.strip().startswith("#"))
    return max(1, min(settings.explain_max_tokens, BASE_TOKENS + TOKENS_PER_LINE * lines))


# -- keeping the answer to what the prompt shows ----------------------------------------------------
# A heading at the start of a line, a sentence (up to . ! ? followed by a space, or a CJK stop;
# never after a list number), or the rest of a line.
_UNIT = re.compile(
    r"\*\*[^*\n]{1,40}\*\*:?[ \t]*"
    r"|(?:[^\n]*?(?:(?<![\d\s])[.!?](?=\s)|[。！？]))[ \t]*\n*"
    r"|[^\n]*\n+"
)
_UNIT_ENDS = ("\n", " ", "\t", "**", "。", "！", "？")
_HEADING = re.compile(r"\s*\*\*[^*\n]{1,40}\*\*:?\s*$")
_UNSHOWN = re.compile(
    r"readme|documentation|\bdocs\b|unit[- ]?tests?|test (?:suite|cases?|files?)|\bthe tests\b|"
    r"examples? (?:provided|given) in|文档(?!字符串)|单元测试|测试用例|ドキュメント|テスト",
    re.I,
)
_MARKER = re.compile(r"\s*(?:\d+\.|[-*])\s+")
_NUMBERED = re.compile(r"(\s*)\d+\.(?=\s)")
_FILE_NAME = re.compile(r"\b[\w/-]+\.(?:py|md|txt|json|toml|cfg|yaml|yml|rst|ini|js|ts)\b")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Outside backticks, only words that look like code: snake_case, camelCase/CamelCase, dotted.
_CODE_WORD = re.compile(r"\b(?:[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+|_\w+|[a-z]+[A-Z]\w*|[A-Z]+[a-z]+[A-Z]\w*|\w+\.\w+\(?)")


def known_words(prompt: str) -> frozenset[str]:
    """Every word of the prompt: the names an answer may use, besides Python's own."""
    return frozenset(_WORD.findall(prompt)) | outline.COMMON_NAMES


def unknown_names(sentence: str, known: frozenset[str]) -> list[str]:
    """Code-like names in a sentence that the prompt never showed."""
    spans = _CODE_SPAN.findall(sentence)
    words = [w for span in spans for w in _WORD.findall(re.sub(r"\\[a-z]", " ", span))]
    words += [w for token in _CODE_WORD.findall(_CODE_SPAN.sub(" ", sentence)) for w in _WORD.findall(token)]
    return [w for w in words if w not in known and not w.isdigit()]


def grounded(sentence: str, prompt: str, known: frozenset[str]) -> bool:
    """False for a sentence about a README, tests, docs or files the prompt did not show, or one
    naming code the prompt does not contain."""
    if _UNSHOWN.search(sentence) and not _UNSHOWN.search(prompt):
        return False
    if any(name not in prompt for name in _FILE_NAME.findall(sentence)):
        return False
    return not unknown_names(sentence, known)


class GroundedText:
    """The answer as it streams, cut into headings and sentences; a unit is judged once it is
    complete, so the text shown only ever grows. A heading waits for what follows it (except the
    first, which shows at once that an answer is coming)."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.known = known_words(prompt)
        self.shown = ""
        self.held = ""  # a heading not shown yet
        self.consumed = 0  # characters of the raw answer judged so far
        self.marker = ""  # the list marker of a dropped sentence whose line goes on
        self.number = 0  # the last number given to a list item in this list

    def update(self, raw: str, final: bool = False) -> str:
        """The text to show for the raw answer so far; `final` also judges an unfinished unit."""
        while self.consumed < len(raw):
            match = _UNIT.match(raw, self.consumed)
            if match is None or not match.group():
                break
            unit = match.group()
            if match.end() == len(raw) and not final and not unit.endswith(_UNIT_ENDS):
                break  # it may still grow
            self.consumed = match.end()
            self._judge(unit)
        if final and self.consumed < len(raw):  # an unfinished last line
            self._judge(raw[self.consumed :])
            self.consumed = len(raw)
        return self.shown

    def _judge(self, unit: str) -> None:
        if not unit.strip() and self.held:
            self.held += unit
        elif _HEADING.match(unit):
            self.number = 0
            if self.shown:
                self.held += unit
            else:
                self.shown = unit
        elif grounded(unit, self.prompt, self.known):
            unit = self.marker + unit.lstrip() if self.marker else unit
            self.shown += self.held + self._numbered(unit)
            self.held = self.marker = ""
        else:
            self._drop(unit)

    def _numbered(self, unit: str) -> str:
        """A kept list item numbered after the last kept one, so that a dropped item leaves no gap."""
        at_line_start = not self.shown or self.shown.endswith("\n")
        match = _NUMBERED.match(unit) if at_line_start else None
        if match is None:
            self.number = 0 if at_line_start else self.number
            return unit
        self.number += 1
        return f"{match.group(1)}{self.number}." + unit[match.end() :]

    def _drop(self, unit: str) -> None:
        """Leave a sentence out, but not the line break after it, nor the list marker before it
        when the line goes on."""
        at_line_start = not self.shown or self.shown.endswith("\n")
        marker = _MARKER.match(unit)
        self.marker = marker.group() if at_line_start and marker and not unit.endswith("\n") else self.marker
        if unit.endswith("\n"):
            self.marker = ""
            if self.shown and not self.shown.endswith("\n") and not self.held:
                self.shown += "\n"

    def result(self, raw: str, stopped: bool) -> str:
        """The final text: a stream cut short keeps its complete sentences; never empty when the
        model said something."""
        text = self.update(raw, final=stopped).strip()
        if not _HEADING.sub("", text).strip():
            return raw.strip()
        return text


# -- the feature -------------------------------------------------------------------------------------
async def explain(
    engine: Engine,
    settings: Settings,
    doc: Document,
    start: int,
    end: int,
    on_update: Callable[[ExplainUpdate], None],
    *,
    language: str | None = None,
) -> Explanation:
    """Stream the explanation of doc.text[start:end], in `language` (a BCP-47 tag or POSIX locale;
    English when None or unknown), through `on_update`; the result's text is the last update."""
    generate, asked = request(settings, doc, start, end, language)
    answer = GroundedText(asked.shown)
    shown = ""
    generation = engine.generate(generate, lambda f: on_update(ExplainUpdate(prompt_fraction=f)))
    async with generation:
        async for _ in generation:  # the answer's start shows with the model's first words
            text = answer.update(asked.answer_start + generation.text).strip()
            if text != shown:
                shown = text
                on_update(ExplainUpdate(text=text))
    stopped = generation.stats.stop_reason is StopReason.STOP
    text = answer.result(asked.answer_start + generation.text, stopped)
    if text != shown:
        on_update(ExplainUpdate(text=text))
    return Explanation(text, stopped)
