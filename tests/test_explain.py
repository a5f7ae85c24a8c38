"""Explain through a real client: the code actions, the prompt's context, streaming through
`$/progress`, a token of the server's own, and both kinds of cancellation."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

from qwen_lsp import explain
from bench.fix_cases import PROGRAM
from qwen_lsp.syntax.documents import Document
from tests.conftest import code_actions_parsed_right, open_doc, plain, server_env, server_status

OPTIONS = {"explainMaxTokens": 160}


def selection_of(text: str, snippet: str) -> lsp.Range:
    start = text.index(snippet)
    end = start + len(snippet)
    position = lambda offset: lsp.Position(text.count("\n", 0, offset), offset - text.rfind("\n", 0, offset) - 1)  # noqa: E731
    return lsp.Range(position(start), position(end))


SNIPPET = '''    for item in items:
        lines.append(f"{item.name}: {item.quantity} x {item.price:.2f}")
    lines.append(f"total: {calculate_total(items):.2f}")'''


def explain_params(uri: str, rng: lsp.Range, token: str | None) -> lsp.ExecuteCommandParams:
    arguments = [{"textDocument": {"uri": uri}, "range": {"start": {"line": rng.start.line, "character": rng.start.character}, "end": {"line": rng.end.line, "character": rng.end.character}}}]
    return lsp.ExecuteCommandParams(command="qwen.explain", arguments=arguments, work_done_token=token)


def messages_of(reports: list[object]) -> list[str]:
    return [r.message for r in reports if isinstance(r, lsp.WorkDoneProgressReport) and r.message]


def test_prompt_has_the_selections_context() -> None:
    doc = Document("file:///tmp/inventory.py", PROGRAM, 1, "python")
    start = PROGRAM.index(SNIPPET)
    system, user = explain.build_messages(doc, start, start + len(SNIPPET))
    text = user.content
    assert SNIPPET.strip() in text
    assert "def summary(items: list[Item]) -> str:" in text  # the enclosing signature
    assert "import json" in text and "from dataclasses import dataclass" in text
    assert "def calculate_total(items: list[Item]) -> float:" in text  # used, defined elsewhere
    assert "def most_expensive" not in text  # not used by the selection


async def test_code_actions_offer_explain_for_a_selection_and_the_function_at_the_cursor(make_client, tmp_path) -> None:
    client = await make_client(profile="visual-studio-code", env=server_env(QWEN_LSP_MODEL=str(tmp_path / "none.gguf")))
    code_actions_parsed_right(client)
    uri = open_doc(client, str(tmp_path / "inventory.py"), PROGRAM)
    selected = await client.text_document_code_action_async(
        lsp.CodeActionParams(lsp.TextDocumentIdentifier(uri), selection_of(PROGRAM, SNIPPET), lsp.CodeActionContext(diagnostics=[]))
    )
    (action,) = [a for a in selected if a.command and a.command.command == "qwen.explain"]
    assert action.title == "Explain with Qwen"
    cursor = selection_of(PROGRAM, "best = items[0]").start
    at_cursor = await client.text_document_code_action_async(
        lsp.CodeActionParams(lsp.TextDocumentIdentifier(uri), lsp.Range(cursor, cursor), lsp.CodeActionContext(diagnostics=[]))
    )
    (action,) = [a for a in at_cursor if a.command and a.command.command == "qwen.explain"]
    assert action.title == "Explain `most_expensive` with Qwen"
    rng = action.command.arguments[0]["range"]
    function = selection_of(PROGRAM, PROGRAM[PROGRAM.index("def most_expensive") : PROGRAM.index("    return best") + len("    return best")])
    assert (rng["start"]["line"], rng["end"]["line"]) == (function.start.line, function.end.line)
    # Outside any function with nothing selected there is nothing to explain.
    top = lsp.Position(0, 0)
    nothing = await client.text_document_code_action_async(
        lsp.CodeActionParams(lsp.TextDocumentIdentifier(uri), lsp.Range(top, top), lsp.CodeActionContext(diagnostics=[]))
    )
    assert not [a for a in nothing if a.command and a.command.command == "qwen.explain"]


async def test_explanation_streams_and_the_result_is_the_last_report(make_client, model_path, tmp_path) -> None:
    client = await make_client(profile="visual-studio-code", env=server_env(QWEN_LSP_MODEL=str(model_path)), options=OPTIONS)
    uri = open_doc(client, str(tmp_path / "inventory.py"), PROGRAM)
    result = plain(await client.workspace_execute_command_async(explain_params(uri, selection_of(PROGRAM, SNIPPET), "explain-1")))
    reports = client.progress_reports["explain-1"]
    assert isinstance(reports[0], lsp.WorkDoneProgressBegin) and isinstance(reports[-1], lsp.WorkDoneProgressEnd)
    messages = messages_of(reports)
    reading = [m for m in messages if m.startswith("Reading the code")]
    text_reports = [m for m in messages if not m.startswith("Reading the code")]
    assert reading and messages.index(reading[0]) < messages.index(text_reports[0]), "no prompt progress before the text"
    assert len(text_reports) >= 3, "the explanation did not stream"
    # Each report extends the previous one: the explanation so far.
    assert all(b.startswith(a.rstrip()) for a, b in zip(text_reports, text_reports[1:]))
    assert result["text"] == text_reports[-1] and len(result["text"]) > 40
    assert result["complete"] is True


async def test_server_creates_a_token_when_the_client_gave_none(make_client, model_path, tmp_path) -> None:
    client = await make_client(profile="neovim@v0.11.0", env=server_env(QWEN_LSP_MODEL=str(model_path)), options={"explainMaxTokens": 24})
    uri = open_doc(client, str(tmp_path / "inventory.py"), PROGRAM)
    before = set(client.progress_reports)
    result = plain(await client.workspace_execute_command_async(explain_params(uri, selection_of(PROGRAM, SNIPPET), None)))
    created = [t for t in client.progress_reports if t not in before and str(t).startswith("qwen-lsp/explain/")]
    assert len(created) == 1
    assert messages_of(client.progress_reports[created[0]])[-1] == result["text"]


async def wait_for_text(client, token: str) -> str:
    while True:
        texts = [m for m in messages_of(client.progress_reports.get(token, [])) if not m.startswith("Reading the code")]
        if texts:
            return texts[-1]
        await asyncio.sleep(0.05)


async def last_request_stats(client) -> dict[str, object]:
    """The engine's figures for its one request, once it has let go of it (it records them when
    the generation has stopped, a moment after the client saw the cancellation)."""
    while not (recent := (await server_status(client)).get("recent")):
        await asyncio.sleep(0.1)
    (stats,) = recent
    return stats


async def test_cancel_request_stops_the_generation(make_client, model_path, tmp_path) -> None:
    client = await make_client(profile="visual-studio-code", env=server_env(QWEN_LSP_MODEL=str(model_path)), options={"explainMaxTokens": 400})
    uri = open_doc(client, str(tmp_path / "inventory.py"), PROGRAM)
    request = asyncio.ensure_future(
        client.protocol.send_request_async(lsp.WORKSPACE_EXECUTE_COMMAND, explain_params(uri, selection_of(PROGRAM, SNIPPET), "explain-2"), msg_id="explain-2")
    )
    await wait_for_text(client, "explain-2")
    client.protocol.notify(lsp.CANCEL_REQUEST, lsp.CancelParams(id="explain-2"))
    with pytest.raises(JsonRpcException) as error:
        await request
    assert error.value.code == -32800  # RequestCancelled
    stats = await last_request_stats(client)
    assert stats["stop_reason"] == "cancelled"
    assert 0 < stats["generated_tokens"] < 100, stats  # of up to 400
    assert isinstance(client.progress_reports["explain-2"][-1], lsp.WorkDoneProgressEnd)


async def test_progress_cancel_stops_and_returns_what_was_written(make_client, model_path, tmp_path) -> None:
    client = await make_client(profile="visual-studio-code", env=server_env(QWEN_LSP_MODEL=str(model_path)), options={"explainMaxTokens": 400})
    uri = open_doc(client, str(tmp_path / "inventory.py"), PROGRAM)
    request = asyncio.ensure_future(client.workspace_execute_command_async(explain_params(uri, selection_of(PROGRAM, SNIPPET), "explain-3")))
    await wait_for_text(client, "explain-3")
    client.window_work_done_progress_cancel(lsp.WorkDoneProgressCancelParams(token="explain-3"))
    result = plain(await request)
    assert result["complete"] is False and result["text"]
    assert messages_of(client.progress_reports["explain-3"])[-1] == result["text"]
    stats = await last_request_stats(client)
    assert stats["stop_reason"] == "cancelled" and stats["generated_tokens"] < 100, stats
