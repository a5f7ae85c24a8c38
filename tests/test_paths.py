"""Paths through the server that no other test walks, through a real client: type-through with a
backspace and a divergence, the classic `textDocument/completion` answer, BLOCK mode, a fix edit
after non-ASCII text in utf-16 columns, and the ranges of diagnostics and explain actions. The
fake engine stands in where the model's words do not matter."""

from __future__ import annotations

import ast
import asyncio

import pytest
from lsprotocol import types as lsp

from tests.conftest import NO_TIME_LIMITS, open_doc, position_of, server_env, settled_status
from tests.helpers import inline_completion
from tests.rawlsp import resolve_fix_with_fake_answer
from tests.test_completion import BODY, end_of

NO_MODEL = {"QWEN_LSP_MODEL": "/nonexistent/none.gguf"}  # features that never start the engine


@pytest.fixture
async def client(model_path, make_client):
    """The real model with no time limit on a completion: what these paths do must not depend on
    how busy the machine is (a completion cut short by the limit is no suggestion)."""
    return await make_client(env=server_env(QWEN_LSP_MODEL=str(model_path)), options=NO_TIME_LIMITS)


def edit(client, uri: str, version: int, start: lsp.Position, end: lsp.Position, text: str) -> None:
    client.text_document_did_change(
        lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[lsp.TextDocumentContentChangePartial(range=lsp.Range(start, end), text=text)],
        )
    )


def at_column(at: lsp.Position, shift: int) -> lsp.Position:
    return lsp.Position(at.line, at.character + shift)


async def generations(client, at_least: int, attempts: int = 10) -> list[dict[str, object]]:
    """The engine's recorded requests once `at_least` are there (or after `attempts` tenths of a
    second: a test that expects none waits that long for one to show up)."""
    return (await settled_status(client, at_least, attempts))["recent"]  # type: ignore[return-value]


async def test_type_through_survives_a_backspace_and_a_divergence_asks_the_model(client, tmp_path):
    uri = open_doc(client, str(tmp_path / "areas.py"), BODY)
    at = end_of(BODY)
    first = (await inline_completion(client, uri, at)).items[0].insert_text
    assert len(first) >= 3, first
    seen = len(await generations(client, 1, attempts=50))
    # Typed the suggestion's first two characters: the rest, from the cache.
    edit(client, uri, 2, at, at, first[:2])
    typed = await inline_completion(client, uri, at_column(at, 2))
    assert [(i.insert_text, i.range.start) for i in typed.items] == [(first[2:], at_column(at, 2))]
    # A backspace: still the same suggestion, one character longer.
    edit(client, uri, 3, at_column(at, 1), at_column(at, 2), "")
    back = await inline_completion(client, uri, at_column(at, 1))
    assert [(i.insert_text, i.range.start) for i in back.items] == [(first[1:], at_column(at, 1))]
    assert len(await generations(client, seen + 1)) == seen, "type-through and backspace must not ask the model"
    # Something else typed: the cached suggestion no longer fits, the model is asked again.
    other = "z" if first[1] != "z" else "q"
    edit(client, uri, 4, at_column(at, 1), at_column(at, 1), other)
    diverged = await inline_completion(client, uri, at_column(at, 2))
    assert all(i.insert_text != first[2:] for i in diverged.items)
    # (After a warm-up of the new prompt, which generates nothing.)
    for count in range(seen + 1, seen + 4):
        recent = await generations(client, count, attempts=50)
        if any(r["generated_tokens"] for r in recent[seen:]):
            break
    assert any(r["generated_tokens"] for r in recent[seen:]), recent[seen:]


async def test_classic_completion_is_one_item_inserting_the_suggestion_at_the_cursor(client, tmp_path):
    uri = open_doc(client, str(tmp_path / "areas.py"), BODY)
    at = end_of(BODY)
    result = await client.text_document_completion_async(lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), at))
    assert isinstance(result, lsp.CompletionList) and result.is_incomplete is True
    (item,) = result.items
    assert isinstance(item.text_edit, lsp.TextEdit), item
    assert item.text_edit.range == lsp.Range(at, at)
    assert item.text_edit.new_text.strip() and "\n" not in item.text_edit.new_text
    # The same suggestion the inline request gets there (from the cache).
    inline = await inline_completion(client, uri, at)
    assert [i.insert_text for i in inline.items] == [item.text_edit.new_text]


BLOCK_OPENED = "def fizzbuzz(n: int) -> str:\n    "


async def test_a_block_just_opened_gets_a_several_line_indented_body(client, tmp_path):
    uri = open_doc(client, str(tmp_path / "fizz.py"), BLOCK_OPENED)
    at = end_of(BLOCK_OPENED)
    result = await inline_completion(client, uri, at)
    assert result.items, "no suggestion for the body of a function just opened"
    text = result.items[0].insert_text
    lines = [line for line in ("    " + text).split("\n") if line.strip()]
    assert len(lines) >= 2, f"BLOCK mode gives the body, not one line: {text!r}"
    assert all(line.startswith("    ") for line in lines), text
    ast.parse(BLOCK_OPENED + text)


# -- with the fake engine / no model ------------------------------------------------------------------
NON_ASCII_BROKEN = 'def first():\n    return 1\n\n\ndef greet(x):\n    return "👋 名前 " + x +\n\n\ndef last():\n    return 3\n'
BROKEN_LINE = '    return "👋 名前 " + x +'


def test_a_fix_edit_after_emoji_and_cjk_is_in_utf16_columns(tmp_path):
    end = len(BROKEN_LINE.encode("utf-16-le")) // 2  # 24: the emoji counts two units
    assert end == len(BROKEN_LINE) + 1
    diagnostic = {
        "range": {"start": {"line": 5, "character": 4}, "end": {"line": 5, "character": end}},
        "message": "Syntax error",
        "severity": 1,
    }
    answer = '```python\ndef greet(x):\n    return "👋 名前 " + x + "!"\n```'
    uri = (tmp_path / "greet.py").as_uri()
    _, resolved = resolve_fix_with_fake_answer(answer, uri, NON_ASCII_BROKEN, diagnostic, stderr=tmp_path / "err.log")
    assert "edit" in resolved, resolved["title"]
    (change,) = resolved["edit"]["documentChanges"]
    (only,) = change["edits"]
    at = {"line": 5, "character": end}
    assert only == {"range": {"start": at, "end": at}, "newText": ' "!"'}, only


DIAGNOSED = "def total(prices):\n    result = 0\n    for p in prices:\n        result += p *\n    return result\n"


async def test_a_diagnostic_covers_its_error_token(make_client, tmp_path):
    client = await make_client(env=server_env(**NO_MODEL))
    uri = open_doc(client, str(tmp_path / "total.py"), DIAGNOSED)
    for _ in range(100):
        if client.diagnostics.get(uri):
            break
        await asyncio.sleep(0.05)
    (diagnostic,) = client.diagnostics[uri]
    star = position_of(DIAGNOSED, "result += p ")
    # The dangling `*` (or the end of its line, where the operand is missing) is inside the range.
    assert diagnostic.range.start.line == star.line and diagnostic.range.start.character <= star.character, diagnostic.range
    assert (diagnostic.range.end.line, diagnostic.range.end.character) >= (star.line, star.character + 1), diagnostic.range
    assert diagnostic.range.end.line <= star.line + 1, "the range is the error, not the rest of the file"


FUNCTIONS = "import math\n\n\ndef area(r):\n    return math.pi * r ** 2\n\n\ndef ring(outer, inner):\n    big = area(outer)\n    return big - area(inner)\n"


async def test_the_explain_action_at_the_cursor_covers_its_function_exactly(make_client, tmp_path):
    from tests.conftest import code_actions_parsed_right

    client = await make_client(profile="visual-studio-code", env=server_env(**NO_MODEL))
    code_actions_parsed_right(client)
    uri = open_doc(client, str(tmp_path / "ring.py"), FUNCTIONS)
    cursor = position_of(FUNCTIONS, "big = ar")
    actions = await client.text_document_code_action_async(
        lsp.CodeActionParams(lsp.TextDocumentIdentifier(uri), lsp.Range(cursor, cursor), lsp.CodeActionContext(diagnostics=[]))
    )
    (action,) = [a for a in actions if a.command and a.command.command == "qwen.explain"]
    rng = action.command.arguments[0]["range"]
    start, end = position_of(FUNCTIONS, "\n\n\ndef ring"), position_of(FUNCTIONS, "- area(inner)")
    assert rng == {"start": {"line": start.line, "character": 0}, "end": {"line": end.line, "character": end.character}}, rng
