"""Fix one diagnostic: the model rewrites the smallest unit (function, class or statement) that
holds it, and the answer becomes a minimal edit only if it verifiably fixes the problem.

Verification is by re-parsing: no syntax error may remain in the unit or appear anywhere, a
syntax diagnostic must be gone, and a diagnostic about a name (undefined, misspelled, wrong
attribute) must leave that name either no longer used there or imported. A failed first answer
is retried once with the failure described; a second failure gives no edit and the reason.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass

from qwen_lsp.prompting import render as prompts
from qwen_lsp.syntax import symbols
from qwen_lsp.config import Settings
from qwen_lsp.syntax.diagnostics import Problem, problems_in
from qwen_lsp.syntax.documents import Document
from qwen_lsp.edits import TextEdit, minimal_edits
from qwen_lsp.engine.base import ChatMessage, Engine, GenerationRequest

_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)
# Context shown besides the unit, in characters (~4 per token; prompt tokens cost ~10 ms each).
CONTEXT_CHARS = 1800


@dataclass(frozen=True)
class FixResult:
    edits: tuple[TextEdit, ...]
    reason: str = ""  # why there is no edit
    attempts: int = 0  # model answers it took (0: the model was not asked)


@dataclass(frozen=True)
class Unit:
    """Whole lines of the document, [start, end) in characters, that the fix may rewrite."""

    start: int
    end: int
    first_line: int
    last_line: int
    text: str
    indent: str  # common leading whitespace, removed when shown to the model


def find_unit(doc: Document, problem: Problem) -> Unit:
    first, _ = doc.position_at(problem.start)
    last, _ = doc.position_at(max(problem.start, problem.end - 1))
    lines = doc.text.split("\n")
    first, last = symbols.unit_lines(lines, first, last)
    start = doc.offset_at(first, 0)
    end = doc.offset_at(last + 1, 0) if last + 1 < doc.line_count else len(doc.text)
    text = doc.text[start:end]
    return Unit(start, end, first, last, text, _common_indent(text))


def _common_indent(text: str) -> str:
    indents = [line[: len(line) - len(line.lstrip(" \t"))] for line in text.splitlines() if line.strip()]
    if not indents:
        return ""
    common = indents[0]
    for indent in indents[1:]:
        while not indent.startswith(common):
            common = common[:-1]
    return common


def _strip_indent(text: str, indent: str) -> str:
    return "".join(line[len(indent) :] if line.startswith(indent) else line for line in text.splitlines(keepends=True))


def _add_indent(code: str, indent: str) -> str:
    if not indent or all(line.startswith(indent) for line in code.splitlines() if line.strip()):
        return code
    return "".join(indent + line if line.strip() else line for line in code.splitlines(keepends=True))


# -- the prompt ------------------------------------------------------------------------------------
def flagged_name(doc: Document, problem: Problem) -> str | None:
    """The identifier a diagnostic points at (pyright and ruff underline the name itself)."""
    word = doc.text[problem.start : problem.end].strip()
    if not word.isidentifier():
        quoted = re.findall(r"[\"'`]([A-Za-z_]\w*)[\"'`]", problem.message)
        word = quoted[0] if quoted else ""
    return word or None


def hints(doc: Document, problem: Problem, unit: Unit) -> list[str]:
    """What the server knows about the error that the model could not see, said as the step to
    take: a small model follows an instruction better than it infers one."""
    name = flagged_name(doc, problem)
    if problem.is_syntax or name is None or doc.tree is None:
        return []
    data = doc.text.encode("utf-8", "surrogatepass")
    defined = symbols.all_defined_names(doc.tree, data)
    imported = any(re.search(rf"\b{re.escape(name)}\b", line) for line in symbols.imports(doc.tree, data))
    found = []
    if name in sys.stdlib_module_names and not imported:
        found.append(
            f"`{name}` is a standard-library module that the file does not import. Only this code may "
            f"change, so add the line `import {name}` as the first line of the function body."
        )
    matches = difflib.get_close_matches(name, sorted(defined - {name}), n=1, cutoff=0.7)
    if matches:
        line, _ = doc.position_at(problem.start)
        found.append(f"`{name}` is a typo: replace `{name}` with `{matches[0]}` on line {line - unit.first_line + 1}.")
    return found


def context(doc: Document, unit: Unit) -> str:
    """Imports, the definitions elsewhere in the file of names the unit uses, and the names the
    file defines, within CONTEXT_CHARS."""
    if doc.tree is None:
        return ""
    data = doc.text.encode("utf-8", "surrogatepass")
    start_byte, end_byte = doc.byte_offset(unit.start), doc.byte_offset(unit.end)
    parts = []
    imports = symbols.imports(doc.tree, data)
    if imports:  # inline, not as a code block: a small model copies code blocks into its answer
        parts.append("The file's imports: " + "; ".join(f"`{line}`" for line in imports))
    shown = symbols.used_definitions_text(doc.tree, data, start_byte, end_byte, CONTEXT_CHARS)
    if shown:
        parts.append(
            f"For reference (do not repeat it), definitions elsewhere in the file that the code uses:\n```{doc.language_id}\n"
            + "\n\n".join(shown)
            + "\n```"
        )
    names = list(symbols.top_level_definitions(doc.tree, data))
    if names:
        parts.append("Names defined at the top level of the file: " + ", ".join(names))
    return "\n\n".join(parts)


def build_messages(doc: Document, problem: Problem, unit: Unit) -> list[ChatMessage]:
    line, _ = doc.position_at(problem.start)
    language = doc.language_id
    user = prompts.render(
        "fix_user.md",
        path=doc.uri.rsplit("/", 1)[-1],
        language=language,
        context=context(doc, unit),
        line=line - unit.first_line + 1,
        message=problem.message,
        error_line=_strip_indent(doc.line(line), unit.indent).rstrip() if line < doc.line_count else "",
        hints="\n".join(hints(doc, problem, unit)),
        unit=_strip_indent(unit.text, unit.indent).rstrip("\n"),
    )
    return [
        ChatMessage("system", prompts.render("fix_system.md")),
        # One worked example: it shows the answer's form and that a hint is to be followed. It
        # is the same for every fix, so its tokens stay in the KV cache from one fix to the next.
        ChatMessage("user", prompts.render("fix_example_user.md")),
        ChatMessage("assistant", prompts.render("fix_example_assistant.md")),
        ChatMessage("user", user),
    ]


# -- the answer ------------------------------------------------------------------------------------
def extract_code(answer: str, unit: Unit) -> str | None:
    """The fenced block most like the unit (the model may add a usage example), re-indented to
    the unit's place, with the unit's trailing newline."""
    blocks = _FENCE.findall(answer)
    if not blocks:
        return None
    shown = _strip_indent(unit.text, unit.indent)
    code = max(blocks, key=lambda b: difflib.SequenceMatcher(a=shown, b=b, autojunk=False).ratio())
    code = _add_indent(code.rstrip("\n"), unit.indent)
    return code + "\n" if unit.text.endswith("\n") else code


def verify(doc: Document, problem: Problem, unit: Unit, new_unit: str) -> str | None:
    """Why `new_unit` is not an acceptable fix, or None when it is."""
    if new_unit == unit.text:
        return "the answer changed nothing"
    fixed = doc.text[: unit.start] + new_unit + doc.text[unit.end :]
    before = problems_in(doc.text, doc.language_id)
    after = problems_in(fixed, doc.language_id)
    unit_end = unit.start + len(new_unit)
    inside = [p for p in after if unit.start <= p.start <= unit_end]
    if inside:
        line = fixed.count("\n", 0, inside[0].start) - unit.first_line + 1
        return f"the code has a syntax error on its line {line}: {inside[0].message.removeprefix('Syntax error: ')}"
    if len(after) > len(before) or (problem.is_syntax and len(after) >= len(before)):
        return "the change breaks the syntax of the rest of the file"
    name = flagged_name(doc, problem)
    if not problem.is_syntax and name is not None:
        pattern = re.compile(rf"(?<![\w.]){re.escape(name)}\b" if not _is_attribute(doc, problem) else rf"\.{re.escape(name)}\b")
        still_used = len(pattern.findall(new_unit)) >= len(pattern.findall(unit.text))
        imported = re.search(rf"^\s*(import|from)\s.*\b{re.escape(name)}\b", new_unit, re.M) is not None
        if still_used and not imported:
            return f"`{name}` is still used there and still not defined"
    return None


def _is_attribute(doc: Document, problem: Problem) -> bool:
    return doc.text[max(0, problem.start - 1) : problem.start] == "."


async def propose_fix(engine: Engine, settings: Settings, doc: Document, problem: Problem) -> FixResult:
    unit = find_unit(doc, problem)
    messages = build_messages(doc, problem, unit)
    failure = ""
    for attempt in (1, 2):
        request = GenerationRequest(messages=tuple(messages), max_tokens=settings.fix_max_tokens)
        async with engine.generate(request) as generation:
            answer = await generation.complete()
        code = extract_code(answer, unit)
        failure = "the answer had no code block" if code is None else verify(doc, problem, unit, code) or ""
        if code is not None and not failure:
            return FixResult(minimal_edits(unit.text, code, unit.start), attempts=attempt)
        # The retry continues the conversation, so the first prompt's KV cache is reused.
        messages += [
            ChatMessage("assistant", answer),
            ChatMessage(
                "user",
                prompts.render(
                    "fix_retry.md",
                    failure=failure,
                    message=problem.message,
                    hints=" ".join(hints(doc, problem, unit)),
                    language=doc.language_id,
                ),
            ),
        ]
    return FixResult((), reason=f"the model's answer was refused twice; last time {failure}", attempts=2)
