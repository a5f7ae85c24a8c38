"""What a keystroke costs in the syntax layer, and trees deeper than Python's recursion limit.

- The line index, byte offsets and the tabs/spaces check are kept current edit by edit; random
  edits must leave them equal to what a fresh document computes whole.
- A keystroke's work must not grow with the file (text-only documents: the line index; Python
  documents: the diagnostics after the reparse, which is tree-sitter's own cost).
- A 3,000-level nested expression goes through a real client and server (the fake engine):
  diagnostics and a completion answer, no error, and the server stays up.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from tree_sitter import Node

from qwen_lsp.syntax import diagnostics
from qwen_lsp.syntax.documents import Document
from tests.conftest import server_env

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PIECES = st.sampled_from(
    [
        "def f():\n",
        "    x = 1\n",
        "\tx = 2\n",
        "  y\n",
        "if a:\n",
        "        z\n",
        "\t    w\n",
        "\n",
        "class C:\n",
        "x = [\n",
        "]\n",
        "(",
        ")",
        "'''",
        "#",
        " ",
        "\t",
        "é",
        "😀",
        "\r\n",
        "\r",
        "pass\n",
        "\ud800",
    ]
)
TEXT = st.lists(PIECES, max_size=30).map("".join)
EDITS = st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.lists(PIECES, max_size=4).map("".join)), max_size=10)


@FUZZ
@given(text=TEXT, edits=EDITS)
def test_edits_keep_offsets_and_diagnostics_equal_to_a_fresh_document(text: str, edits: list[tuple[float, float, str]]) -> None:
    doc = Document("file:///fuzz.py", text, 1, "python")
    diagnostics.document_problems(doc)
    for first, second, new_text in edits:
        start, end = sorted((int(first * len(doc.text)), int(second * len(doc.text))))
        doc.replace(start, end, new_text)
        fresh = diagnostics.parse(doc.text, "python")
        assert diagnostics.document_problems(doc) == diagnostics.syntax_problems(doc.text, fresh, "python")
    again = Document("file:///again.py", doc.text, 1, "python")
    assert doc.line_count == again.line_count
    for offset in range(len(doc.text) + 1):
        byte = doc.byte_offset(offset)
        assert byte == len(doc.text[:offset].encode("utf-8", "surrogatepass"))
        assert doc.char_offset(byte) == offset
        assert doc.position_at(offset) == again.position_at(offset)
    assert doc.data == doc.text.encode("utf-8", "surrogatepass")
    if doc.tree is not None and again.tree is not None:  # tree-sitter was told the right points
        assert node_positions(doc.tree.root_node) == node_positions(again.tree.root_node)


def node_positions(root: Node) -> list[tuple[str, int, int, tuple[int, int], tuple[int, int]]]:
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        found.append((node.type, node.start_byte, node.end_byte, tuple(node.start_point), tuple(node.end_point)))
        stack.extend(node.children)
    return found


def cpu_ms_per_keystroke(doc: Document, timed: Callable[[Document, int], object], count: int = 30) -> float:
    """Median CPU time of `timed(doc, offset)` for `count` characters typed in the middle of
    `doc` (CPU time: the test machine is shared)."""
    offset = doc.offset_at(doc.line_count // 2, 4)
    times = []
    for i in range(count):
        began = time.process_time()
        timed(doc, offset + i)
        times.append(time.process_time() - began)
    return statistics.median(times) * 1000


def type_x(doc: Document, offset: int) -> None:
    doc.replace(offset, offset, "x")


def test_a_keystroke_in_a_text_costs_the_same_in_a_small_and_a_huge_file() -> None:
    """85k lines of 36 characters, as in the issue. The text itself is still copied per edit
    (a `str` cannot change in place): ~0.3 ms a megabyte, allowed for in the bound."""
    line = "    total = total + weights[i] * 2\n"
    small = cpu_ms_per_keystroke(Document("file:///small.txt", line * 1_000, 1, "plaintext"), type_x)
    huge = cpu_ms_per_keystroke(Document("file:///huge.txt", line * 85_000, 1, "plaintext"), type_x)
    assert huge < small * 5 + 2.0, f"{huge:.2f} ms a keystroke at 85k lines, {small:.2f} ms at 1k"


def test_diagnostics_after_a_keystroke_cost_the_same_in_a_small_and_a_large_module() -> None:
    """Only the diagnostics are timed: tree-sitter's own reparse of a Python module grows with its
    number of top-level statements (measured: ~3-7 µs each), and so does finding the ERROR nodes
    of a broken one (a look at each top-level statement, ~0.2 µs)."""
    function = "def f{}(a, b):\n    if a:\n        return b\n    return [a,\n            b]\n\n\n"

    def module(count: int) -> Document:
        doc = Document("file:///m.py", "".join(function.format(i) for i in range(count)), 1, "python")
        diagnostics.document_problems(doc)  # what didOpen publishes: the whole check once
        return doc

    def typed_then_checked(doc: Document, offset: int) -> float:
        type_x(doc, offset)
        began = time.process_time()
        diagnostics.document_problems(doc)
        return time.process_time() - began

    small_doc, large_doc = module(100), module(8_000)
    # At the end of `        return b` (line 2 of a function): the module stays free of errors.
    small = statistics.median(typed_then_checked(small_doc, small_doc.offset_at(7 * 50 + 2, 16) + i) for i in range(30)) * 1000
    large = statistics.median(typed_then_checked(large_doc, large_doc.offset_at(7 * 4_000 + 2, 16) + i) for i in range(30)) * 1000
    assert not large_doc.tree.root_node.has_error
    assert large < small * 5 + 1.0, f"{large:.2f} ms a keystroke at 8,000 functions, {small:.2f} ms at 100"


def test_tabs_and_spaces_found_again_after_edits_far_apart() -> None:
    clean = "def f():\n    return 1\n\n\n"
    doc = Document("file:///t.py", clean * 50 + "def g():\n    a = 1\n\tb = 2\n" + clean * 50, 1, "python")
    assert [p.message for p in diagnostics.document_problems(doc)] == ["Syntax error: inconsistent use of tabs and spaces in indentation"]
    doc.replace(0, 0, "x = (\n")  # broken: no check
    assert diagnostics.document_problems(doc)[0].message.endswith("was never closed")
    doc.replace(0, 6, "")
    tab = doc.text.index("\tb")
    doc.replace(tab, tab + 1, "    ")
    doc.replace(len(doc.text), len(doc.text), "def h():\n        a = 1\n    b = 2\n")
    problems = diagnostics.document_problems(doc)
    assert [doc.text[p.start : p.end] for p in problems] == ["    "]
    assert problems[0].start == doc.text.index("    b = 2\n", len(doc.text) - 30)


# -- deep trees through the protocol ---------------------------------------------------------------
DEPTH = 3_000


async def start_fake_server() -> LanguageClient:
    command = [sys.executable, "-m", "tests.fake_engine"]
    client = await ClientServerConfig(server_command=command, server_env=server_env()).start()
    await client.initialize_session(lsp.InitializeParams(capabilities=client_capabilities("neovim@v0.11.0")))
    return client


@pytest.mark.parametrize("closed", [True, False], ids=["clean", "unclosed"])
async def test_a_3000_level_nested_expression_gets_diagnostics_and_a_completion(closed: bool) -> None:
    deep = "value = " + "(" * DEPTH + "1" + ")" * (DEPTH if closed else DEPTH - 1) + "\n"
    text = "import os\n\n" + deep + "def f(x):\n    return " + "[" * DEPTH + "x" + "]" * DEPTH + "\n\n\nresult = f(value)\n"
    client = await start_fake_server()
    try:
        uri = "file:///deep.py"
        client.text_document_did_open(
            lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=text))
        )
        await asyncio.wait_for(client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS), 30)
        published = client.diagnostics[uri]
        assert bool(published) is not closed  # an unclosed bracket is reported, nothing else
        last = text.count("\n")
        here = lsp.Position(line=2, character=8)
        client.text_document_did_change(
            lsp.DidChangeTextDocumentParams(
                text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[lsp.TextDocumentContentChangePartial(range=lsp.Range(start=here, end=here), text="(")],
            )
        )
        await asyncio.wait_for(client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS), 30)
        assert client.diagnostics[uri]  # now unbalanced either way
        params = lsp.InlineCompletionParams(
            context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Invoked),
            text_document=lsp.TextDocumentIdentifier(uri=uri),
            position=lsp.Position(line=last, character=0),
        )
        answer = await asyncio.wait_for(client.text_document_inline_completion_async(params), 60)
        assert answer is None or isinstance(answer, (list, lsp.InlineCompletionList))
        status = await client.protocol.send_request_async("qwen/status", {})
        assert status is not None  # still serving
        assert not [m for m in client.log_messages if m.type == lsp.MessageType.Error]
    finally:
        await client.shutdown_session()
