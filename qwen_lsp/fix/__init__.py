"""Fix one diagnostic: the model rewrites the smallest unit (function, class or statement) that
holds it, and the answer becomes a minimal edit only if it verifiably fixes the problem. An
error that fully determines its edit (a missing import, a header's ':', a method's `self`, extra
arguments, a number added to a text, a misspelling with one close name: fix/repairs.py) is
fixed without the model, under the same verification.

Verification is by re-parsing: no syntax error may remain in the unit or appear anywhere, a
syntax diagnostic must be gone, and a diagnostic about a name (undefined, misspelled, wrong
attribute) must leave that name either no longer used there or imported. Nor may the change
import or call a name the error has nothing to do with, or use one defined nowhere (builtins and
the file's definitions and imports count). The model reads and writes "\n" line ends; the edits
keep the document's. A failed first answer is retried once with the failure described; a second
failure gives no edit and the reason.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass

from tree_sitter import Node

from qwen_lsp.config import Settings
from qwen_lsp.edits import TextEdit, apply_edits, edits_keeping_line_ends, split_lines, to_lf
from qwen_lsp.engine.base import ChatMessage, Engine, GenerationRequest
from qwen_lsp.fix import repairs
from qwen_lsp.prompting import render as prompts
from qwen_lsp.syntax import names, symbols
from qwen_lsp.syntax.diagnostics import Problem, parse, problems_in
from qwen_lsp.syntax.documents import Document

_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)
# Messages about a name (pyright, ruff, mypy, flake8): only these make a name the fix's subject.
_NAME_MESSAGE = re.compile(
    r"is not defined|is unbound|Undefined name|undefined name|Cannot access attribute|has no attribute|is not a known attribute", re.I
)
# Messages whose step the server knows (pyright's and mypy's wording), and the step, said as an
# instruction; {line} is the error's line in the code shown.
_STEPS = (
    (
        re.compile(r'Operator "\+" not supported for types "[^"]*" and "int"'),
        "A text cannot be added to a number: wrap the number on line {line} in `str(...)`.",
    ),
    (
        re.compile(r"Expected indented block|expected an indented block", re.I),
        "The body of the statement above line {line} is not indented: indent line {line} one level deeper.",
    ),
    (re.compile(r"Missing return statement", re.I), "The function does not return its result: add the missing `return` at its end."),
    (re.compile(r"Expected \d+ positional argument", re.I), "The call on line {line} passes too many arguments: remove the extra one."),
)
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
    text: str  # as in the document, with its line ends
    indent: str  # common leading whitespace, removed when shown to the model

    @property
    def lf_text(self) -> str:
        """The text with "\n" line ends, as the model reads and writes code."""
        return to_lf(self.text)


def find_unit(doc: Document, problem: Problem) -> Unit:
    first, _ = doc.position_at(problem.start)
    last, _ = doc.position_at(max(problem.start, problem.end - 1))
    lines = [doc.line(row) for row in range(doc.line_count)]
    return _unit(doc, *symbols.unit_lines(lines, first, last))


def _unit(doc: Document, first: int, last: int) -> Unit:
    start = doc.offset_at(first, 0)
    end = doc.offset_at(last + 1, 0) if last + 1 < doc.line_count else len(doc.text)
    text = doc.text[start:end]
    return Unit(start, end, first, last, text, _common_indent(to_lf(text)))


def _common_indent(text: str) -> str:
    indents = [line[: len(line) - len(line.lstrip(" \t"))] for line in text.split("\n") if line.strip()]
    if not indents:
        return ""
    common = indents[0]
    for indent in indents[1:]:
        while not indent.startswith(common):
            common = common[:-1]
    return common


def _strip_indent(text: str, indent: str) -> str:
    return "".join(line[len(indent) :] if line.startswith(indent) else line for line in split_lines(text))


def _add_indent(code: str, indent: str) -> str:
    if not indent or all(line.startswith(indent) for line in code.split("\n") if line.strip()):
        return code
    return "".join(indent + line if line.strip() else line for line in split_lines(code))


# -- the prompt ------------------------------------------------------------------------------------
def flagged_name(doc: Document, problem: Problem) -> str | None:
    """The identifier a diagnostic about a name points at (pyright and ruff underline the name
    itself); None for other diagnostics, which may underline a name too (mypy's missing return)."""
    if not _NAME_MESSAGE.search(problem.message):
        return None
    word = doc.text[problem.start : problem.end].strip()
    if not word.isidentifier():
        quoted = re.findall(r"[\"'`]([A-Za-z_]\w*)[\"'`]", problem.message)
        word = quoted[0] if quoted else ""
    return word or None


def hints(doc: Document, problem: Problem, unit: Unit) -> list[str]:
    """What the server knows about the error that the model could not see, said as the step to
    take: a small model follows an instruction better than it infers one."""
    line = doc.position_at(problem.start)[0] - unit.first_line + 1
    found = [step.format(line=line) for pattern, step in _STEPS if pattern.search(problem.message)]
    name = flagged_name(doc, problem)
    if name is not None and doc.tree is not None:
        found += _name_hints(doc, problem, unit, name, line)
    return found


def _name_hints(doc: Document, problem: Problem, unit: Unit, name: str, line: int) -> list[str]:
    assert doc.tree is not None
    data = doc.text.encode("utf-8", "surrogatepass")
    if name == "self" and not re.search(r"def\s+\w+\s*\(\s*self\b", unit.text):
        return ["The method's `def` line has no `self` parameter: add `self` as its first parameter."]
    owner = symbols.self_attributes(doc.tree, data, doc.byte_offset(problem.start))
    if owner is not None and name in owner[1] and not _is_attribute(doc, problem):
        return [f"`{name}` is an attribute of the `{owner[0]}` object: write `self.{name}` instead of `{name}` on line {line}."]
    defined = symbols.all_defined_names(doc.tree, data) | set(owner[1] if owner else ())
    matches = difflib.get_close_matches(name, sorted(defined - {name}), n=1, cutoff=0.7)
    if matches:
        return [f"`{name}` is a typo: replace `{name}` with `{matches[0]}` on line {line}."]
    return []


# -- a missing import: added at the top, without the model -----------------------------------------
def import_fix(doc: Document, problem: Problem) -> TextEdit | None:
    """`import name` among the file's imports, for a standard-library module used but neither
    imported nor defined in the file."""
    name = flagged_name(doc, problem)
    if name is None or name not in sys.stdlib_module_names or doc.tree is None or _is_attribute(doc, problem):
        return None
    data = doc.text.encode("utf-8", "surrogatepass")
    if name in names.names_in(doc.tree, data, 0, len(data)).imported | symbols.all_defined_names(doc.tree, data):
        return None
    line = f"import {name}"
    children = doc.tree.root_node.children
    plain = [n for n in children if n.type == "import_statement"]
    later = [n for n in plain if symbols.node_text(data, n) > line]
    if later:
        row = later[0].start_point[0]
    elif plain:
        row = plain[-1].end_point[0] + 1
    else:  # before the first import, else the first statement after the docstring
        row = next((n.start_point[0] for n in children if n.type in symbols.IMPORTS or not _is_docstring(n)), 0)
    offset = doc.offset_at(row, 0) if row < doc.line_count else len(doc.text)
    return TextEdit(offset, offset, line + _line_end(doc.text))


def _is_docstring(node: Node) -> bool:
    return node.type == "comment" or (
        node.type == "expression_statement" and node.named_child_count == 1 and node.named_children[0].type == "string"
    )


def _line_end(text: str) -> str:
    found = re.search(r"\r\n|\r|\n", text)
    return found.group() if found else "\n"


def verify_import(doc: Document, problem: Problem, edit: TextEdit) -> str | None:
    """The one edit outside the unit that a fix may make: a line importing the flagged name,
    at the top level, and nothing else."""
    name = flagged_name(doc, problem)
    fixed = apply_edits(doc.text, [edit])
    tree = parse(to_lf(fixed), doc.language_id)
    if name is None or tree is None or doc.tree is None:
        return "the file cannot be parsed"
    before = names.names_in(doc.tree, doc.text.encode("utf-8", "surrogatepass"), 0, len(doc.text.encode("utf-8", "surrogatepass")))
    data = to_lf(fixed).encode("utf-8", "surrogatepass")
    added = names.names_in(tree, data, 0, len(data)).imported - before.imported
    if added != {name} or not re.fullmatch(rf"(import {name}|from {name} import \w+)(\r\n|\r|\n)", edit.new_text):
        return f"the import added is not only `{name}`"
    return None


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
    owner = symbols.self_attributes(doc.tree, data, start_byte)
    if owner is not None and owner[1]:
        parts.append(f"The attributes of a `{owner[0]}` object: " + ", ".join(f"`self.{a}`" for a in owner[1]))
    defined = list(symbols.top_level_definitions(doc.tree, data))
    if defined:
        parts.append("Names defined at the top level of the file: " + ", ".join(defined))
    return "\n\n".join(parts)


def build_messages(doc: Document, problem: Problem, unit: Unit, refused: str = "") -> list[ChatMessage]:
    """The chat for one fix; `refused` says why an answer that saw a smaller part was refused."""
    line, _ = doc.position_at(problem.start)
    notes = hints(doc, problem, unit) + ([f"An answer that saw less of the code was refused: {refused}."] if refused else [])
    language = doc.language_id
    user = prompts.render(
        "fix_user.md",
        path=doc.uri.rsplit("/", 1)[-1],
        language=language,
        context=context(doc, unit),
        line=line - unit.first_line + 1,
        message=problem.message,
        error_line=_strip_indent(doc.line(line), unit.indent).rstrip() if line < doc.line_count else "",
        hints="\n".join(notes),
        unit=_strip_indent(unit.lf_text, unit.indent).rstrip("\n"),
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
    the unit's place, with the unit's trailing newline; "\n" line ends, like the unit shown."""
    blocks = _FENCE.findall(to_lf(answer))
    if not blocks:
        return None
    shown = _strip_indent(unit.lf_text, unit.indent)
    code = max(blocks, key=lambda b: difflib.SequenceMatcher(a=shown, b=b, autojunk=False).ratio())
    code = _add_indent(code.rstrip("\n"), unit.indent)
    return code + "\n" if unit.lf_text.endswith("\n") else code


def verify(doc: Document, problem: Problem, unit: Unit, new_unit: str) -> str | None:
    """Why `new_unit` (with the document's line ends) is not an acceptable fix, or None."""
    if new_unit == unit.text:
        return "the answer changed nothing"
    # Parsed with "\n" line ends: tree-sitter counts no other, and a file of "\r" ends would
    # be one long line to it.
    old_lf = to_lf(doc.text)
    start = len(to_lf(doc.text[: unit.start]))
    span = _Span(start, len(to_lf(unit.text)), len(to_lf(new_unit)))
    fixed = old_lf[: span.start] + to_lf(new_unit) + old_lf[span.start + span.old_length :]
    return (
        _syntax_failure(doc, problem, first_line=unit.first_line, old_lf=old_lf, fixed=fixed, span=span)
        or _new_definition_failure(doc, problem, unit, new_unit)
        or _flagged_name_failure(doc, problem, unit, new_unit, _bound(doc, fixed, span))
        or _new_names_failure(doc, problem, old_lf, fixed, span)
    )


@dataclass(frozen=True)
class _Span:
    """Where the unit is in the "\n" texts before and after the fix."""

    start: int
    old_length: int
    new_length: int


def _syntax_failure(doc: Document, problem: Problem, *, first_line: int, old_lf: str, fixed: str, span: _Span) -> str | None:
    before = problems_in(old_lf, doc.language_id)
    after = problems_in(fixed, doc.language_id)
    inside = [p for p in after if span.start <= p.start <= span.start + span.new_length]
    if inside:
        line = fixed.count("\n", 0, inside[0].start) - first_line + 1
        return f"the code has a syntax error on its line {line}: {inside[0].message.removeprefix('Syntax error: ')}"
    if len(after) > len(before) or (problem.is_syntax and len(after) >= len(before)):
        return "the change breaks the syntax of the rest of the file"
    return None


def _bound(doc: Document, fixed: str, span: _Span) -> set[str]:
    """The names the new unit binds (a `self` parameter added to a method binds `self`)."""
    tree = parse(fixed, doc.language_id) if doc.language_id == "python" else None
    if tree is None:
        return set()
    data = fixed.encode("utf-8", "surrogatepass")
    return names.names_in(tree, data, _byte(fixed, span.start), _byte(fixed, span.start + span.new_length)).bound


def _flagged_name_failure(doc: Document, problem: Problem, unit: Unit, new_unit: str, bound: set[str]) -> str | None:
    name = flagged_name(doc, problem)
    if problem.is_syntax or name is None or (name in bound and not _is_attribute(doc, problem)):
        return None
    pattern = re.compile(rf"(?<![\w.]){re.escape(name)}\b" if not _is_attribute(doc, problem) else rf"\.{re.escape(name)}\b")
    still_used = len(pattern.findall(new_unit)) >= len(pattern.findall(unit.text))
    imported = re.search(rf"^\s*(import|from)\s.*\b{re.escape(name)}\b", new_unit, re.M) is not None
    if still_used and not imported:
        return f"`{name}` is still used there and still not defined"
    return None


_WORD = re.compile(r"[A-Za-z_]\w*")
_DEFINES = re.compile(r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+(\w+)", re.M)


def _new_definition_failure(doc: Document, problem: Problem, unit: Unit, new_unit: str) -> str | None:
    """A fix defines no function or class the unit did not (a small model pastes the class it
    was shown into its answer), unless the error is that very name being undefined."""
    added = set(_DEFINES.findall(new_unit)) - set(_DEFINES.findall(unit.text)) - {flagged_name(doc, problem)}
    return f"the change adds a definition of `{sorted(added)[0]}`, which the error does not need" if added else None


def _new_names_failure(doc: Document, problem: Problem, old_lf: str, fixed: str, span: _Span) -> str | None:
    """A fix touches only what the error is about: it imports and calls no name the unit did
    not use before, other than the flagged one (or the name a misspelling meant), and every
    name it brings in is defined in the file, imported or a builtin."""
    old_tree = parse(old_lf, doc.language_id) if doc.language_id == "python" else None
    tree = parse(fixed, doc.language_id) if old_tree is not None else None
    if tree is None or old_tree is None:
        return None
    data = fixed.encode("utf-8", "surrogatepass")
    old_end = span.start + span.old_length
    old = names.names_in(old_tree, old_lf.encode("utf-8", "surrogatepass"), _byte(old_lf, span.start), _byte(old_lf, old_end))
    new = names.names_in(tree, data, _byte(fixed, span.start), _byte(fixed, span.start + span.new_length))
    flagged = flagged_name(doc, problem)
    related = {flagged} if flagged and not problem.is_syntax else set()
    imports = sorted(new.imported - old.imported - related)
    if imports:
        return f"the change adds an import of `{imports[0]}`, which the error does not need"
    if flagged in related:  # a misspelled name's fix calls what it meant
        related |= set(difflib.get_close_matches(flagged, sorted(new.called), cutoff=0.6))
    # Around a syntax error the old tree is broken and misses uses: a word of the old unit's
    # text was used there, whatever the parse says.
    old_words = set(_WORD.findall(old_lf))
    calls = sorted(new.called - old.used - old_words - related)
    if calls:
        return f"the change calls `{calls[0]}`, which has nothing to do with the error"
    everywhere = names.names_in(tree, data, 0, len(data))
    if "*" in everywhere.imported:  # a star import can define anything
        return None
    known = symbols.all_defined_names(tree, data) | everywhere.bound | everywhere.imported | names.BUILTINS
    unknown = sorted(new.references - old.used - old_words - known)
    return f"`{unknown[0]}` is not defined anywhere in the file" if unknown else None


def _byte(text: str, offset: int) -> int:
    return len(text[:offset].encode("utf-8", "surrogatepass"))


def _applied(unit: Unit, edits: tuple[TextEdit, ...]) -> str:
    return apply_edits(unit.text, [TextEdit(e.start - unit.start, e.end - unit.start, e.new_text) for e in edits])


def _is_attribute(doc: Document, problem: Problem) -> bool:
    return doc.text[max(0, problem.start - 1) : problem.start] == "."


def find_wider_unit(doc: Document, unit: Unit) -> Unit | None:
    """The function or class around `unit`, for a retry that sees more."""
    lines = [doc.line(row) for row in range(doc.line_count)]
    found = symbols.enclosing_definition_lines(lines, unit.first_line, unit.last_line)
    return _unit(doc, *found) if found is not None else None


async def _answer(engine: Engine, settings: Settings, messages: list[ChatMessage]) -> str:
    request = GenerationRequest(messages=tuple(messages), max_tokens=settings.fix_max_tokens)
    async with engine.generate(request) as generation:
        return await generation.complete()


def _check(doc: Document, problem: Problem, unit: Unit, answer: str) -> tuple[tuple[TextEdit, ...], str]:
    """The answer's edits (keeping the document's line ends) and why they are refused, if so."""
    code = extract_code(answer, unit)
    if code is None:
        return (), "the answer had no code block"
    code = _without_copied_imports(doc, unit, code)
    edits = edits_keeping_line_ends(unit.text, code, unit.start)
    return edits, verify(doc, problem, unit, _applied(unit, edits)) or ""


def _without_copied_imports(doc: Document, unit: Unit, code: str) -> str:
    """The answer without leading lines that repeat the file's imports: a small model copies the
    imports it was shown to the top of its answer."""
    if doc.tree is None:
        return code
    known = {line.strip() for line in symbols.imports(doc.tree, doc.text.encode("utf-8", "surrogatepass"))}
    lines = code.split("\n")
    copied = 0
    while copied < len(lines) and lines[copied].strip() in known and lines[copied].strip() not in unit.lf_text:
        copied += 1
    while copied and copied < len(lines) and not lines[copied].strip():  # and the blank lines after them
        copied += 1
    return "\n".join(lines[copied:])


def repaired(doc: Document, problem: Problem) -> tuple[TextEdit, ...] | None:
    """The edits the error fully determines (fix/repairs.py), if they pass verification
    within the lines they touch and the unit around the error."""
    found = repairs.repair(doc, problem)
    if not found:
        return None
    edits = tuple(TextEdit(r.start, r.end, r.text) for r in found)
    unit = find_unit(doc, problem)
    first = min([unit.first_line] + [doc.position_at(e.start)[0] for e in edits])
    last = max([unit.last_line] + [doc.position_at(e.end)[0] for e in edits])
    unit = _unit(doc, first, last)
    return edits if verify(doc, problem, unit, _applied(unit, edits)) is None else None


async def propose_fix(engine: Engine, settings: Settings, doc: Document, problem: Problem) -> FixResult:
    edit = import_fix(doc, problem)
    if edit is not None and verify_import(doc, problem, edit) is None:
        return FixResult((edit,), attempts=0)
    determined = repaired(doc, problem)
    if determined is not None:  # no model needed
        return FixResult(determined, attempts=0)
    unit = find_unit(doc, problem)
    messages = build_messages(doc, problem, unit)
    failure = ""
    for attempt in (1, 2):
        answer = await _answer(engine, settings, messages)
        edits, failure = _check(doc, problem, unit, answer)
        if not failure:
            return FixResult(edits, attempts=attempt)
        wider = find_wider_unit(doc, unit)
        if wider is not None:  # the retry sees the whole function or class
            unit, messages = wider, build_messages(doc, problem, wider, refused=failure)
            continue
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
