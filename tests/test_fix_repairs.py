"""Fixes that the error fully determines (fix/repairs.py): made without the model, verified,
keeping the document's line ends; and left to the model whenever the error leaves a choice."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from bench.fix import problem_of
from bench.fix_cases import BENCH_CASES, FixCase
from qwen_lsp import fix
from qwen_lsp.config import Settings
from qwen_lsp.edits import apply_edits
from qwen_lsp.engine.base import Engine, Generation, GenerationRequest
from qwen_lsp.fix import repairs
from qwen_lsp.syntax.diagnostics import Problem
from qwen_lsp.syntax.documents import Document

# One case of each kind whose fix the diagnostic determines.
DETERMINED = [
    "missing colon (class)",
    "missing self (deposit)",
    "missing self (total)",
    "self.count (withdraw)",
    "str + int (describe)",
    "str + int (sentences)",
    "wrong argument count (Account)",
    "wrong argument count (step)",
    "missing return (population)",
    "misspelled name (cells)",
    "wrong attribute (neighbours)",
    "wrong attribute (deposit)",
]


class NoModel(Engine):
    """An engine that fails the test if it is asked anything."""

    def start(self) -> None: ...

    def describe(self) -> dict[str, object]:
        return {"backend": "none"}

    def close(self, wait: float | None = None) -> None: ...

    def generate(self, request: GenerationRequest, on_prompt_progress=None) -> Generation:
        raise AssertionError("the model was asked for a fix the error determines")


def output(text: str) -> str:
    result = subprocess.run([sys.executable, "-I", "-c", text], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def case_named(name: str) -> FixCase:
    return next(c for c in BENCH_CASES if c.name == name)


@pytest.mark.parametrize("name", DETERMINED)
def test_a_determined_fix_needs_no_model_and_makes_the_file_run(name: str) -> None:
    case = case_named(name)
    doc = Document("file:///tmp/program.py", case.broken, 1, "python")
    result = asyncio.run(fix.propose_fix(NoModel(), Settings(), doc, problem_of(doc, case)))
    assert result.attempts == 0 and result.edits, result.reason
    assert output(apply_edits(doc.text, result.edits)) == output(case.program)
    assert sum(len(e.new_text) + e.end - e.start for e in result.edits) < 30, result.edits  # minimal


@pytest.mark.parametrize("name", ["missing self (deposit)", "str + int (describe)", "missing colon (class)"])
def test_a_determined_fix_keeps_crlf_line_ends(name: str) -> None:
    case = case_named(name)
    lf = Document("file:///tmp/program.py", case.broken, 1, "python")
    problem = problem_of(lf, case)
    line = lf.position_at(problem.start)[0]
    crlf = Document(lf.uri, case.broken.replace("\n", "\r\n"), 1, "python")
    shifted = Problem(problem.start + line, problem.end + line, problem.message)
    result = asyncio.run(fix.propose_fix(NoModel(), Settings(), crlf, shifted))
    fixed = apply_edits(crlf.text, result.edits)
    assert fixed == apply_edits(lf.text, fix.repaired(lf, problem) or ()).replace("\n", "\r\n")


def _problem(text: str, token: str, message: str, occurrence: int = 1) -> tuple[Document, Problem]:
    doc = Document("file:///tmp/t.py", text, 1, "python")
    start = -1
    for _ in range(occurrence):
        start = text.index(token, start + 1)
    return doc, Problem(start, start + len(token), message)


@pytest.mark.parametrize(
    ("text", "token", "message"),
    [
        # Two close names: which one is meant is the model's choice.
        ("def total_a(): ...\ndef total_b(): ...\nprint(total_c())\n", "total_c", '"total_c" is not defined'),
        # A static method takes no `self`.
        ("class A:\n    @staticmethod\n    def f():\n        return self\n", "self", '"self" is not defined'),
        # A splat passes an unknown count.
        ("def f(a): ...\nf(*xs, 2)\n", "2", "Expected 1 positional argument"),
        # A class with a base from elsewhere may have the attribute under a close name.
        ("class A(Base):\n    def f(self):\n        return self.nmae\n", "nmae", 'Cannot access attribute "nmae" for class "A*"'),
        # A last statement kept for its effect is not the missing result.
        ("def f() -> int:\n    print(1)\n", "f", "Missing return statement  [return]"),
        # Two numbers: nothing to turn into text.
        ("x = 1 + 2.5\n", "1 + 2.5", 'Operator "+" not supported for types "int" and "float"'),
        # A parameter of that name is not the object's attribute.
        (
            "class A:\n    def __init__(self):\n        self.n = 0\n    def f(self, n):\n        n += 1\n",
            "n",
            '"n" is unbound',
        ),
    ],
)
def test_an_error_that_leaves_a_choice_goes_to_the_model(text: str, token: str, message: str) -> None:
    occurrence = text.count(token) if token in ("n", "self") else 1
    doc, problem = _problem(text, token, message, occurrence)
    assert repairs.repair(doc, problem) is None


def test_extra_arguments_before_keyword_arguments_go_with_their_commas() -> None:
    text = "def f(a, *, key=0): ...\nf(1, 2, 3, key=4)\nf(9, key=1)\n"
    doc, problem = _problem(text, "2", "Expected 1 positional argument")
    (found,) = repairs.repair(doc, problem) or []
    assert apply_edits(text, [fix.TextEdit(found.start, found.end, found.text)]).splitlines()[1] == "f(1, key=4)"
    doc, problem = _problem("def g(): ...\ng(1, key=2)\n", "1", "Expected 0 positional arguments")
    (found,) = repairs.repair(doc, problem) or []
    assert apply_edits(doc.text, [fix.TextEdit(found.start, found.end, found.text)]).splitlines()[1] == "g(key=2)"


def test_a_name_that_is_the_objects_attribute_is_prefixed_everywhere_in_the_method() -> None:
    text = (
        "class C:\n    def __init__(self):\n        self.count = 0\n\n"
        "    def bump(self):\n        count += 1\n        return count\n\n\nc = C()\nprint(c.bump(), c.bump())\n"
    )
    doc, problem = _problem(text, "count", '"count" is unbound', occurrence=2)
    edits = fix.repaired(doc, problem)
    assert edits is not None
    assert output(apply_edits(text, edits)) == "1 2\n"


def test_a_bench_case_of_a_kind_the_model_fixes_is_not_repaired() -> None:
    case = case_named("missing return (withdraw)")  # the whole `return True` is gone
    doc = Document("file:///tmp/program.py", case.broken, 1, "python")
    assert repairs.repair(doc, problem_of(doc, case)) is None
