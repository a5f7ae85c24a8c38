"""Fix through a real client: our own syntax diagnostics, quick fixes offered without the model,
edits written in codeAction/resolve that are minimal, versioned, confined to the unit, and make
the file run again; the `qwen.fix` command for a client that cannot resolve."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from lsprotocol import types as lsp

from bench.fix import rest_identical
from bench.fix_cases import BENCH_CASES, CASES, PROGRAM, FixCase, name_case
from qwen_lsp import fix
from qwen_lsp.config import Settings
from qwen_lsp.edits import TextEdit, apply_edits
from qwen_lsp.engine.base import Engine, Generation, GenerationRequest
from qwen_lsp.syntax.diagnostics import Problem, problems_in
from qwen_lsp.syntax.documents import Document
from tests.conftest import (
    code_actions_parsed_right,
    open_doc,
    plain,
    server_env,
    server_status,
)
from tests.rawlsp import resolve_fix_with_fake_answer

ONE_PER_KIND = {case.kind: case for case in reversed(BENCH_CASES)}  # the first case of each kind
# The kinds the fix gets right reliably (some without the model: fix/repairs.py); "unindented
# body" and a missing `return` statement (the first "missing return" case: the model answers it
# unchanged) are measured by `python -m bench fix`, not asserted here.
KINDS = [
    "missing colon",
    "unclosed bracket",
    "misspelled name",
    "missing import",
    "wrong attribute",
    "mixed tabs",
    "missing self",
    "self attribute",
    "str + int",
    "wrong argument count",
]


@pytest.fixture
def model_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No fix without the model: for the tests of what happens to the model's answers."""
    monkeypatch.setattr(fix.repairs, "repair", lambda doc, problem: None)


def run(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", text], capture_output=True, text=True, timeout=60)


def apply(text: str, edits: list[lsp.TextEdit]) -> str:
    """Apply edits whose positions are UTF-16 (the text is ASCII, so code points)."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        start = starts[edit.range.start.line] + edit.range.start.character
        end = starts[edit.range.end.line] + edit.range.end.character
        text = text[:start] + edit.new_text + text[end:]
    return text


async def diagnostics_for(client, uri: str) -> list[lsp.Diagnostic]:
    while uri not in client.diagnostics:
        await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return client.diagnostics[uri]


def external(case: FixCase) -> lsp.Diagnostic:
    d = case.diagnostic
    assert d is not None
    rng = lsp.Range(lsp.Position(d.line, d.start), lsp.Position(d.line, d.end))
    return lsp.Diagnostic(range=rng, message=d.message, source=d.source, severity=lsp.DiagnosticSeverity.Error)


def code_action_params(uri: str, diagnostic: lsp.Diagnostic) -> lsp.CodeActionParams:
    return lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri),
        range=diagnostic.range,
        context=lsp.CodeActionContext(diagnostics=[diagnostic]),
    )


def test_own_syntax_diagnostics_are_where_python_says_with_readable_messages() -> None:
    for case in CASES:
        if case.diagnostic is not None:
            continue
        with pytest.raises(SyntaxError) as python:
            compile(case.broken, "case.py", "exec")
        problems = problems_in(case.broken, "python")
        assert problems, case.name
        first = problems[0]
        assert case.broken.count("\n", 0, first.start) + 1 == python.value.lineno, case.name
        words = {"missing colon": "':'", "unclosed bracket": "never closed", "mixed tabs": "tabs and spaces"}
        if case.name != "unclosed bracket (list)":  # tree-sitter sees that one as a missing ')'
            assert words[case.kind] in first.message, (case.name, first.message)
    assert problems_in(PROGRAM, "python") == []


@pytest.mark.parametrize("kind", KINDS)
async def test_fix_through_a_real_client(kind: str, make_client, model_path, tmp_path) -> None:
    case = ONE_PER_KIND[kind]
    expected = run(case.program)
    assert expected.returncode == 0
    client = await make_client(profile="visual-studio-code", env=server_env(QWEN_LSP_MODEL=str(model_path)))
    code_actions_parsed_right(client)
    uri = open_doc(client, str(tmp_path / "inventory.py"), case.broken, version=3)
    published = await diagnostics_for(client, uri)
    if case.diagnostic is None:
        assert published, "the server published no diagnostic of its own for a syntax error"
        diagnostic = published[0]
        assert diagnostic.source == "qwen-lsp"
    else:
        assert not published, "a file without syntax errors gets no diagnostic of ours"
        diagnostic = external(case)

    # The quick fix is offered at once: the model does not run for codeAction.
    actions = await client.text_document_code_action_async(code_action_params(uri, diagnostic))
    fixes = [a for a in actions if a.kind == lsp.CodeActionKind.QuickFix]
    assert len(fixes) == 1 and fixes[0].edit is None
    assert fixes[0].title == "Fix with Qwen: " + diagnostic.message.splitlines()[0]
    assert list(fixes[0].diagnostics or []) == [diagnostic]
    assert (await server_status(client)).get("recent", []) == [], "codeAction ran the model"

    resolved = await client.code_action_resolve_async(fixes[0])
    assert resolved.edit is not None, resolved.title
    (change,) = resolved.edit.document_changes
    assert isinstance(change, lsp.TextDocumentEdit)
    assert change.text_document.uri == uri and change.text_document.version == 3
    fixed = apply(case.broken, change.edits)

    # Minimal and confined: every changed line lies in the block that holds the error, or is
    # an import added among the file's imports.
    assert fixed != case.broken and rest_identical(case.broken, fixed, diagnostic.range.start.line), fixed
    if kind == "missing import":
        assert [e.new_text for e in change.edits] == ["import math\n"]
    assert sum(len(e.new_text) for e in change.edits) < 80, change.edits

    result = run(fixed)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout


async def test_fix_command_applies_the_edit_for_a_client_without_resolve(make_client, model_path, tmp_path) -> None:
    case = ONE_PER_KIND["missing colon"]
    client = await make_client(profile="emacs", env=server_env(QWEN_LSP_MODEL=str(model_path)))
    code_actions_parsed_right(client)
    applied: list[lsp.ApplyWorkspaceEditParams] = []

    @client.feature(lsp.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: lsp.ApplyWorkspaceEditParams) -> lsp.ApplyWorkspaceEditResult:
        applied.append(params)
        return lsp.ApplyWorkspaceEditResult(applied=True)

    uri = open_doc(client, str(tmp_path / "inventory.py"), case.broken)
    diagnostic = (await diagnostics_for(client, uri))[0]
    actions = await client.text_document_code_action_async(code_action_params(uri, diagnostic))
    (action,) = [a for a in actions if a.kind == lsp.CodeActionKind.QuickFix]
    assert action.command is not None and action.command.command == "qwen.fix"
    result = await client.workspace_execute_command_async(
        lsp.ExecuteCommandParams(command=action.command.command, arguments=action.command.arguments)
    )
    assert plain(result) == {"applied": True, "reason": ""}
    (params,) = applied
    # Emacs declares documentChanges: the edit is versioned.
    (change,) = params.edit.document_changes
    fixed = apply(case.broken, change.edits)
    assert run(fixed).returncode == 0


# -- the verification, with a stand-in engine that answers what the test wants ----------------------
class ScriptedEngine(Engine):
    """Answers each request with the next scripted text (protocol plumbing only: no model)."""

    def __init__(self, answers: list[str]) -> None:
        super().__init__()
        self.answers = answers
        self.requests: list[GenerationRequest] = []

    def start(self) -> None: ...

    def describe(self) -> dict[str, object]:
        return {"backend": "scripted"}

    def close(self, wait: float | None = None) -> None: ...

    def generate(self, request: GenerationRequest, on_prompt_progress=None) -> Generation:
        self.requests.append(request)
        generation = Generation(request, asyncio.get_running_loop())
        generation.emit_text(self.answers.pop(0))
        generation.emit_done()
        return generation


def broken_doc(case: FixCase) -> tuple[Document, Problem]:
    doc = Document("file:///tmp/inventory.py", case.broken, 1, "python")
    return doc, problems_in(doc.text, "python")[0]


async def test_a_fix_that_fails_verification_twice_gives_no_edit_and_says_why(model_path_only: None) -> None:
    doc, problem = broken_doc(ONE_PER_KIND["missing colon"])
    unit = fix.find_unit(doc, problem)
    still_broken = "```python\n" + unit.text.replace("-> Item", "-> Item (") + "```"
    engine = ScriptedEngine([still_broken, "I cannot fix this."])
    result = await fix.propose_fix(engine, Settings(), doc, problem)
    assert result.edits == () and result.attempts == 2
    assert "no code block" in result.reason
    retry = engine.requests[1].messages[-1].content
    assert "syntax error on its line" in retry, retry


async def test_a_second_answer_that_passes_is_taken(model_path_only: None) -> None:
    doc, problem = broken_doc(ONE_PER_KIND["missing colon"])
    unit = fix.find_unit(doc, problem)
    good = "```python\n" + unit.text.replace("-> Item\n", "-> Item:\n", 1) + "```"
    engine = ScriptedEngine(["```python\n" + unit.text + "```", good])
    result = await fix.propose_fix(engine, Settings(), doc, problem)
    assert result.attempts == 2 and len(result.edits) == 1
    (edit,) = result.edits
    assert edit.new_text == ":" and edit.start == edit.end == doc.text.index("-> Item\n") + len("-> Item")
    assert "changed nothing" in engine.requests[1].messages[-1].content


def test_a_renamed_but_still_undefined_name_is_refused() -> None:
    case = ONE_PER_KIND["misspelled name"]
    doc = Document("file:///tmp/inventory.py", case.broken, 1, "python")
    d = case.diagnostic
    assert d is not None
    problem = Problem(doc.offset_at(d.line, d.start), doc.offset_at(d.line, d.end), d.message)
    unit = fix.find_unit(doc, problem)
    unchanged_name = unit.text.replace("lines = []", "lines: list[str] = []")
    assert "still used" in (fix.verify(doc, problem, unit, unchanged_name) or "")
    assert fix.verify(doc, problem, unit, unit.text.replace("calculate_totl", "calculate_total")) is None
    # Renamed, but to a name defined nowhere either: still a NameError.
    assert "`calculate_sum` is not defined" in (fix.verify(doc, problem, unit, unit.text.replace("calculate_totl", "calculate_sum")) or "")


def test_a_rename_to_another_undefined_name_gets_no_edit_through_a_client(tmp_path) -> None:
    """The same through a server whose (fake) model answers with that rename; the diagnostic
    is pyright's, passed on by the editor in the code action's context. (A name with no close
    name in the file, so that the model is asked.)"""
    case = name_case(
        "unknown name", "misspelled name", "{calculate_total(items)", "{grand_total(items)", "grand_total", '"grand_total" is not defined'
    )
    doc = Document("file:///tmp/inventory.py", case.broken, 1, "python")
    d = case.diagnostic
    assert d is not None
    problem = Problem(doc.offset_at(d.line, d.start), doc.offset_at(d.line, d.end), d.message)
    assert fix.repairs.repair(doc, problem) is None
    unit = fix.find_unit(doc, problem)
    answer = "```python\n" + unit.text.replace("grand_total", "grand_totals") + "```"
    rng = {"start": {"line": d.line, "character": d.start}, "end": {"line": d.line, "character": d.end}}
    diagnostic = {"range": rng, "message": d.message, "severity": 1, "source": "Pyright"}
    _, resolved = resolve_fix_with_fake_answer(answer, doc.uri, case.broken, diagnostic, stderr=tmp_path / "err.log")
    assert "edit" not in resolved, resolved["edit"]
    assert "`grand_totals` is not defined" in resolved["title"], resolved["title"]


def pyright_problem(case: FixCase) -> tuple[Document, Problem]:
    doc = Document("file:///tmp/program.py", case.broken, 1, "python")
    d = case.diagnostic
    assert d is not None
    return doc, Problem(doc.offset_at(d.line, d.start), doc.offset_at(d.line, d.end), d.message)


async def test_a_missing_import_goes_at_the_top_without_the_model() -> None:
    for name in ("missing import (math)", "missing import (re)", "missing import (itertools)"):
        case = next(c for c in BENCH_CASES if c.name == name)
        doc, problem = pyright_problem(case)
        engine = ScriptedEngine([])
        result = await fix.propose_fix(engine, Settings(), doc, problem)
        assert result.attempts == 0 and engine.requests == [], name
        assert apply_edits(doc.text, result.edits) == case.program, name  # where it was, in order
        # CRLF documents get a CRLF line.
        crlf = Document(doc.uri, doc.text.replace("\n", "\r\n"), 1, "python")
        (edit,) = (await fix.propose_fix(engine, Settings(), crlf, Problem(*_crlf_span(doc, problem), problem.message))).edits
        assert edit.new_text.endswith("\r\n"), edit


def _crlf_span(doc: Document, problem: Problem) -> tuple[int, int]:
    line = doc.position_at(problem.start)[0]
    return problem.start + line, problem.end + line


def test_the_import_at_the_top_imports_the_flagged_name_and_nothing_else() -> None:
    doc, problem = pyright_problem(ONE_PER_KIND["missing import"])
    edit = fix.import_fix(doc, problem)
    assert edit is not None and fix.verify_import(doc, problem, edit) is None
    for other in ("import os\n", "import math, os\n", "import math\nos.system('x')\n"):
        assert fix.verify_import(doc, problem, TextEdit(edit.start, edit.end, other)) is not None, other


def test_a_self_parameter_added_to_the_def_line_passes_verification() -> None:
    """The diagnostic is on `self` in the body; the fix is on the `def` line, and `self` stays used."""
    doc, problem = pyright_problem(ONE_PER_KIND["missing self"])
    unit = fix.find_unit(doc, problem)
    assert unit.text.lstrip().startswith("def deposit(amount")
    assert fix.verify(doc, problem, unit, unit.text.replace("def deposit(amount", "def deposit(self, amount")) is None
    assert "still used" in (fix.verify(doc, problem, unit, unit.text.replace("amount: int", "amount: float")) or "")


def test_hints_say_the_step_for_the_new_kinds() -> None:
    expected = {
        "missing self": "add `self` as its first parameter",
        "self attribute": "write `self.count`",
        "str + int": "in `str(...)`",
        "unindented body": "indent line",
        "missing return": "add the missing `return`",
        "wrong argument count": "remove the extra one",
    }
    for kind, words in expected.items():
        doc, problem = pyright_problem(ONE_PER_KIND[kind])
        assert words in " ".join(fix.hints(doc, problem, fix.find_unit(doc, problem))), kind


async def test_a_refused_method_fix_is_retried_with_the_whole_class(model_path_only: None) -> None:
    doc, problem = pyright_problem(ONE_PER_KIND["self attribute"])
    unit = fix.find_unit(doc, problem)
    wider = fix.find_wider_unit(doc, unit)
    assert wider is not None and wider.text.startswith("class Account:") and unit.text in wider.text
    good = "```python\n" + wider.text.replace("count += 1\n        return True", "self.count += 1\n        return True") + "```"
    engine = ScriptedEngine(["```python\n" + unit.text + "```", good])
    result = await fix.propose_fix(engine, Settings(), doc, problem)
    assert result.attempts == 2 and [e.new_text for e in result.edits] == ["self."]
    retry = engine.requests[1].messages[-1].content
    assert "class Account:" in retry and "refused: the answer changed nothing" in retry, retry


async def test_imports_the_model_copies_above_its_answer_are_dropped(model_path_only: None) -> None:
    doc, problem = pyright_problem(ONE_PER_KIND["str + int"])
    unit = fix.find_unit(doc, problem)
    fixed = unit.text.replace('" has " + self.balance', '" has " + str(self.balance)')
    shown = fix._strip_indent(fixed, unit.indent)  # the model reads and writes the method unindented
    engine = ScriptedEngine(["```python\nfrom dataclasses import dataclass\n\n" + shown + "```"])
    result = await fix.propose_fix(engine, Settings(), doc, problem)
    assert result.attempts == 1 and apply_edits(doc.text, result.edits) == ONE_PER_KIND["str + int"].program


def test_closing_a_bracket_around_calls_the_broken_line_already_made_is_accepted(tmp_path) -> None:
    """Around a syntax error the old parse is broken and misses the calls the line already made:
    closing `print("area", circle_area(2)` was refused as "calls `print`, which has nothing to do
    with the error" (seen in VS Code's context-menu fix)."""
    text = 'import math\n\n\ndef circle_area(radius):\n    return math.pi * radius ** 2\n\n\nprint("area", circle_area(2)\n'
    diagnostic = {
        "range": {"start": {"line": 7, "character": 5}, "end": {"line": 7, "character": 6}},
        "message": "Syntax error: '(' was never closed",
        "source": "qwen-lsp",
    }
    answer = '```python\nprint("area", circle_area(2))\n```'
    _, resolved = resolve_fix_with_fake_answer(answer, (tmp_path / "shapes.py").as_uri(), text, diagnostic, stderr=tmp_path / "err.log")
    assert resolved.get("edit"), resolved["title"]


def test_an_answer_that_pastes_a_class_into_the_method_is_refused() -> None:
    """Seen with the real model on a missing `return True`: the right line, plus a copy of the
    `Account` class pasted above the method, which verification let through."""
    doc, problem = pyright_problem(ONE_PER_KIND["missing return"])
    unit = fix.find_unit(doc, problem)
    pasted = "    @dataclass\n    class Account:\n        owner: str\n\n" + unit.text.rstrip("\n") + "\n        return True\n"
    assert "adds a definition of `Account`" in (fix.verify(doc, problem, unit, pasted) or "")
    assert fix.verify(doc, problem, unit, unit.text.rstrip("\n") + "\n        return True\n") is None
