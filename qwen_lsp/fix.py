"""Fix an error: syntax diagnostics of our own, and a model-written fix turned into a minimal,
verified edit confined to the syntactic unit that holds the error."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from tree_sitter import Node, Tree

from qwen_lsp import prompts
from qwen_lsp.config import Settings
from qwen_lsp.documents import Document, tree_sitter_language
from qwen_lsp.engine.base import ChatMessage, Engine, GenerationRequest

_UNIT_TYPES = {
    "function_definition", "class_definition", "decorated_definition", "if_statement",
    "for_statement", "while_statement", "try_statement", "with_statement",
}
_FENCE = re.compile(r"```[\w+-]*\n(.*?)(?:```|\Z)", re.S)


@dataclass(frozen=True)
class Problem:
    """A diagnostic as offsets into the document."""

    start: int
    end: int
    message: str


@dataclass(frozen=True)
class TextEdit:
    start: int  # character offsets into the document
    end: int
    new_text: str


@dataclass(frozen=True)
class FixResult:
    edits: tuple[TextEdit, ...]
    reason: str = ""  # why there is no edit


# -- diagnostics of our own ----------------------------------------------------------------------
def _error_nodes(node: Node) -> list[Node]:
    if not node.has_error:
        return []
    if node.is_missing or node.type == "ERROR":
        return [node]
    found: list[Node] = []
    for child in node.children:
        found.extend(_error_nodes(child))
    return found


def count_syntax_errors(tree: Tree | None) -> int:
    return 0 if tree is None else len(_error_nodes(tree.root_node))


def syntax_problems(doc: Document) -> list[Problem]:
    if doc.tree is None:
        return []
    data = doc.text.encode("utf-8", "surrogatepass")
    problems = []
    for node in _error_nodes(doc.tree.root_node):
        start = len(data[: node.start_byte].decode("utf-8", "replace"))
        end = len(data[: node.end_byte].decode("utf-8", "replace"))
        if node.is_missing:
            message = f"Syntax error: missing '{node.type}'"
        else:
            snippet = doc.text[start:end].strip().splitlines()[0][:40] if doc.text[start:end].strip() else ""
            message = f"Syntax error near '{snippet}'" if snippet else "Syntax error"
        problems.append(Problem(start, max(end, start), message))
    return problems


# -- the fix --------------------------------------------------------------------------------------
def unit_lines(doc: Document, problem: Problem) -> tuple[int, int]:
    """First and last line of the smallest enclosing block statement (or the problem's own
    lines, widened by one line each way, when the tree offers nothing better)."""
    first, _ = doc.position_at(problem.start)
    last, _ = doc.position_at(problem.end)
    if doc.tree is not None:
        node = doc.tree.root_node.descendant_for_point_range((first, 0), (last, 0))
        while node is not None and node.type not in _UNIT_TYPES:
            node = node.parent
        if node is not None and not node.has_error:
            return node.start_point.row, node.end_point.row
    return max(0, first - 1), min(doc.line_count - 1, last + 1)


def extract_code(answer: str) -> str | None:
    match = _FENCE.search(answer)
    return match.group(1) if match else None


def minimal_edits(old: str, new: str, base: int) -> tuple[TextEdit, ...]:
    """Line-level diff of two versions of a unit, as edits at document offset `base`."""
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    offsets = [0]
    for line in old_lines:
        offsets.append(offsets[-1] + len(line))
    edits = []
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            edits.append(TextEdit(base + offsets[i1], base + offsets[i2], "".join(new_lines[j1:j2])))
    return tuple(edits)


def apply_edits(text: str, edits: tuple[TextEdit, ...]) -> str:
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        text = text[: edit.start] + edit.new_text + text[edit.end :]
    return text


def _parse_errors(doc: Document, text: str) -> int:
    language = tree_sitter_language(doc.language_id)
    if language is None:
        return 0
    from tree_sitter import Parser

    return count_syntax_errors(Parser(language).parse(text.encode("utf-8", "surrogatepass")))


async def propose_fix(engine: Engine, settings: Settings, doc: Document, problem: Problem) -> FixResult:
    first, last = unit_lines(doc, problem)
    start = doc.offset_at(first, 0)
    end = doc.offset_at(last + 1, 0) if last + 1 < doc.line_count else len(doc.text)
    unit = doc.text[start:end]
    errors_before = _parse_errors(doc, doc.text)
    problem_line, _ = doc.position_at(problem.start)
    retry = ""
    reason = "the model gave no code"
    for _attempt in range(2):
        user = prompts.render(
            "fix_user.md",
            path=doc.uri.rsplit("/", 1)[-1],
            language=doc.language_id,
            context="",
            line=problem_line + 1,
            message=problem.message,
            retry=retry,
            first_line=first + 1,
            last_line=last + 1,
            unit=unit.rstrip("\n"),
        )
        request = GenerationRequest(
            messages=(ChatMessage("system", prompts.render("fix_system.md")), ChatMessage("user", user)),
            max_tokens=settings.fix_max_tokens,
        )
        async with engine.generate(request) as generation:
            answer = await generation.complete()
        code = extract_code(answer)
        if code is None:
            reason = "the model gave no code"
        else:
            new_unit = code if not unit.endswith("\n") or code.endswith("\n") else code + "\n"
            edits = minimal_edits(unit, new_unit, start)
            fixed = apply_edits(doc.text, edits)
            errors_after = _parse_errors(doc, fixed)
            if not edits:
                reason = "the model changed nothing"
            elif errors_after > errors_before or (problem.message.startswith("Syntax error") and errors_after >= errors_before and errors_before > 0):
                reason = "the model's fix still has syntax errors"
            else:
                return FixResult(edits)
        retry = f"A previous attempt failed: {reason}. Try again.\n"
    return FixResult((), reason)
