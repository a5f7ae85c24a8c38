"""Explain through a real client: the code actions, the prompt's context, streaming through
`$/progress`, a token of the server's own, and both kinds of cancellation."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import Callable

import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, client_capabilities

from bench.fix_cases import PROGRAM
from qwen_lsp import explain
from qwen_lsp.config import Settings
from qwen_lsp.engine.base import Engine, Generation, GenerationRequest, StopReason
from qwen_lsp.syntax.documents import Document
from tests.conftest import SERVER, code_actions_parsed_right, open_doc, plain, server_env, server_status

OPTIONS = {"explainMaxTokens": 160}


def selection_of(text: str, snippet: str) -> lsp.Range:
    start = text.index(snippet)
    end = start + len(snippet)
    position = lambda offset: lsp.Position(text.count("\n", 0, offset), offset - text.rfind("\n", 0, offset) - 1)  # noqa: E731
    return lsp.Range(position(start), position(end))


SNIPPET = """    for item in items:
        lines.append(f"{item.name}: {item.quantity} x {item.price:.2f}")
    lines.append(f"total: {calculate_total(items):.2f}")"""


def explain_params(uri: str, rng: lsp.Range, token: str | None) -> lsp.ExecuteCommandParams:
    arguments = [
        {
            "textDocument": {"uri": uri},
            "range": {
                "start": {"line": rng.start.line, "character": rng.start.character},
                "end": {"line": rng.end.line, "character": rng.end.character},
            },
        }
    ]
    return lsp.ExecuteCommandParams(command="qwen.explain", arguments=arguments, work_done_token=token)


def messages_of(reports: list[object]) -> list[str]:
    return [r.message for r in reports if isinstance(r, lsp.WorkDoneProgressReport) and r.message]


def test_prompt_has_the_selections_context() -> None:
    doc = Document("file:///tmp/inventory.py", PROGRAM, 1, "python")
    start = PROGRAM.index(SNIPPET)
    text = explain.ask(doc, start, start + len(SNIPPET)).shown
    assert SNIPPET.strip() in text
    assert "def summary(items: list[Item]) -> str:" in text  # the enclosing signature
    assert "import json" not in text  # imports only of the names it uses (none here)
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
    function = selection_of(
        PROGRAM, PROGRAM[PROGRAM.index("def most_expensive") : PROGRAM.index("    return best") + len("    return best")]
    )
    assert (rng["start"]["line"], rng["end"]["line"]) == (function.start.line, function.end.line)
    # Outside any function with nothing selected there is nothing to explain.
    top = lsp.Position(0, 0)
    nothing = await client.text_document_code_action_async(
        lsp.CodeActionParams(lsp.TextDocumentIdentifier(uri), lsp.Range(top, top), lsp.CodeActionContext(diagnostics=[]))
    )
    assert not [a for a in nothing if a.command and a.command.command == "qwen.explain"]


async def test_explanation_streams_as_it_is_written(make_client, model_path, tmp_path) -> None:
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
    assert len(result["text"]) > 40 and result["complete"] is True
    # It streamed: the text showed up a little at a time, not in one report at the end (the server
    # re-sends the whole result as its last report, so reports of the result prove nothing).
    earlier = [text for text in text_reports if text != result["text"]]
    assert earlier and len(earlier[0]) < len(result["text"]) / 3, text_reports
    assert any(len(text) > len(result["text"]) / 2 for text in earlier), text_reports


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
    while not (generated := [r for r in (await server_status(client)).get("recent", []) if r["generated_tokens"]]):
        await asyncio.sleep(0.1)  # (a prefill of the opened file generates nothing)
    (stats,) = generated
    return stats


async def test_cancel_request_stops_the_generation(make_client, model_path, tmp_path) -> None:
    client = await make_client(
        profile="visual-studio-code", env=server_env(QWEN_LSP_MODEL=str(model_path)), options={"explainMaxTokens": 400}
    )
    uri = open_doc(client, str(tmp_path / "inventory.py"), PROGRAM)
    request = asyncio.ensure_future(
        client.protocol.send_request_async(
            lsp.WORKSPACE_EXECUTE_COMMAND, explain_params(uri, selection_of(PROGRAM, SNIPPET), "explain-2"), msg_id="explain-2"
        )
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
    client = await make_client(
        profile="visual-studio-code", env=server_env(QWEN_LSP_MODEL=str(model_path)), options={"explainMaxTokens": 400}
    )
    uri = open_doc(client, str(tmp_path / "inventory.py"), PROGRAM)
    request = asyncio.ensure_future(
        client.workspace_execute_command_async(explain_params(uri, selection_of(PROGRAM, SNIPPET), "explain-3"))
    )
    await wait_for_text(client, "explain-3")
    client.window_work_done_progress_cancel(lsp.WorkDoneProgressCancelParams(token="explain-3"))
    result = plain(await request)
    assert result["complete"] is False and result["text"]
    assert messages_of(client.progress_reports["explain-3"])[-1] == result["text"]
    stats = await last_request_stats(client)
    assert stats["stop_reason"] == "cancelled" and stats["generated_tokens"] < 100, stats


# -- grounded explanations ------------------------------------------------------------------------
BOXES = PROGRAM[PROGRAM.index("def boxes_needed") : PROGRAM.index("def summary")].rstrip()
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_the_answer_starts_with_the_functions_name_and_parameters_written_by_the_server() -> None:
    doc = Document("file:///tmp/inventory.py", PROGRAM, 1, "python")
    start = PROGRAM.index(BOXES)
    asked = explain.ask(doc, start, start + len(BOXES))
    assert asked.answer_start == "**Summary:** `boxes_needed(items, per_box)`"
    generate, _ = explain.request(Settings(), doc, start, start + len(BOXES))
    assert generate.messages == asked.messages and generate.answer_start == asked.answer_start
    system, _question, example_answer, user = asked.messages
    assert "README" in system.content  # what not to claim
    assert example_answer.role == "assistant" and example_answer.content.startswith("**Summary:** `area(width, height)`")
    assert "import math" in user.content and "It uses from elsewhere: `Item`, `math`." in user.content
    assert "Answer in English" in user.content
    # What comes before the user's code is the same for every selection, so that the KV cache
    # keeps its evaluation from one request to the next.
    other = explain.ask(doc, PROGRAM.index("def summary"), len(PROGRAM))
    assert other.messages[:3] == asked.messages[:3]
    assert explain.ask(doc, start + BOXES.index("    return"), start + len(BOXES)).answer_start == "**Summary:**"


def test_the_language_comes_from_a_bcp47_tag_or_a_posix_locale() -> None:
    asked = explain.ask(Document("file:///tmp/inventory.py", PROGRAM, 1, "python"), 0, 40, "zh-cn")
    system, _, example_answer, user = asked.messages
    assert "Chinese (简体中文)" in system.content and "Answer in Chinese" in user.content
    assert asked.answer_start == "**概述:**" and "**参数:**" in example_answer.content
    assert explain.language_of("zh_CN.UTF-8") == explain.language_of("zh-Hans") == explain.language_of("zh")
    assert explain.language_of("zh-TW").name.startswith("Traditional Chinese")
    assert explain.language_of("ja").name.startswith("Japanese") and explain.language_of("de-AT").name.startswith("German")
    for tag in (None, "", "C", "POSIX", "en-US", "tlh"):
        assert explain.language_of(tag) is explain.ENGLISH
    # Each language has its worked example (an English one draws the model into English).
    for language in explain.LANGUAGES.values():
        _, answer = explain.example(language)
        assert answer.content.startswith(f"**{language.summary}:** `area(width, height)`") and "$" not in answer.content


def test_length_scales_with_the_selection() -> None:
    settings = Settings(explain_max_tokens=400)
    five_lines = "\n".join(f"x{i} = {i}" for i in range(5))
    assert explain.max_tokens(settings, five_lines) < 200
    assert explain.max_tokens(settings, five_lines + "\n# a comment\n\n") == explain.max_tokens(settings, five_lines)
    assert explain.max_tokens(settings, five_lines * 20) == 400
    assert explain.max_tokens(Settings(explain_max_tokens=30), five_lines) == 30


PROMPT = "def dedent(text):\n    margin = _whitespace_only_re.sub('', text)\n    return margin\n"
ANSWER = (
    "**Summary:** Removes common leading whitespace from `text`. It is documented in the README.\n"
    "**Steps:**\n"
    "1. Calls `_whitespace_only_re.sub` on `text`.\n"
    "2. Uses `textwrap_helper` to finish. Then returns `margin`.\n"
    "3. Checked by the unit tests in test_textwrap.py.\n"
    "4. Returns the result.\n"
    "**Pitfalls:** See the documentation.\n"
)


def streamed(answer: str, prompt: str = PROMPT) -> tuple[list[str], str]:
    grounded = explain.GroundedText(prompt)
    shown: list[str] = []
    for end in range(1, len(answer) + 1):
        text = grounded.update(answer[:end]).strip()
        if text and (not shown or text != shown[-1]):
            shown.append(text)
    return shown, grounded.result(answer, stopped=True)


def test_sentences_about_unshown_files_and_names_are_left_out_as_the_text_streams() -> None:
    shown, final = streamed(ANSWER)
    assert final == (
        "**Summary:** Removes common leading whitespace from `text`. \n"
        "**Steps:**\n"
        "1. Calls `_whitespace_only_re.sub` on `text`.\n"
        "2. Then returns `margin`.\n"
        "3. Returns the result."
    )
    assert shown[0] == "**Summary:**"  # text shows at once
    assert all(b.startswith(a) for a, b in itertools.pairwise(shown)), "the shown text went backwards"
    assert shown[-1] == final


def test_an_answer_is_never_emptied_and_an_unfinished_sentence_is_not_kept() -> None:
    assert streamed("It is described in the README.")[1] == "It is described in the README."
    grounded = explain.GroundedText(PROMPT)
    assert grounded.result("**Summary:** Strips `text`. Then it calls", stopped=False) == "**Summary:** Strips `text`."


class Scripted(Engine):
    """An engine whose answer is given: what the feature does with an answer, not the model."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    def start(self) -> None:
        pass

    def generate(self, request: GenerationRequest, on_prompt_progress: Callable[[float], None] | None = None) -> Generation:
        generation = Generation(request, asyncio.get_running_loop(), on_prompt_progress)
        for word in re.findall(r"\S*\s*", self.answer):
            generation.emit_text(word)
        generation.stats.stop_reason = StopReason.STOP
        generation.emit_done()
        return generation

    def describe(self) -> dict[str, object]:
        return {"backend": "scripted"}

    def close(self, wait: float | None = None) -> None:
        pass


async def test_the_filter_judges_the_answer_against_the_code_not_the_instructions() -> None:
    """The system message says "never mention a README" and the worked example names `width`:
    neither makes a README or `width` something the code showed."""
    doc = Document("file:///tmp/inventory.py", PROGRAM, 1, "python")
    start = PROGRAM.index(BOXES)
    answer = " divides `items` into boxes. It is described in the README.\n**Steps:**\n1. Sums `quantity`. Then scales by `width`.\n"
    updates: list[explain.ExplainUpdate] = []
    result = await explain.explain(Scripted(answer), Settings(), doc, start, start + len(BOXES), updates.append)
    assert result.text == "**Summary:** `boxes_needed(items, per_box)` divides `items` into boxes. \n**Steps:**\n1. Sums `quantity`."
    assert result.complete and updates[-1].text == result.text


def test_chinese_sentences_are_cut_at_chinese_stops() -> None:
    _, final = streamed("**概述:** 该函数去掉 `text` 的公共缩进。详见 README 文档。它返回 `margin`。\n")
    assert final == "**概述:** 该函数去掉 `text` 的公共缩进。它返回 `margin`。"


async def test_explanation_names_the_function_and_its_parameters_and_claims_nothing_unshown(make_client, model_path, tmp_path) -> None:
    client = await make_client(profile="visual-studio-code", env=server_env(QWEN_LSP_MODEL=str(model_path)))
    uri = open_doc(client, str(tmp_path / "inventory.py"), PROGRAM)
    result = plain(await client.workspace_execute_command_async(explain_params(uri, selection_of(PROGRAM, BOXES), "explain-4")))
    text = result["text"]
    assert "boxes_needed" in text and "`items`" in text and "per_box" in text, text
    assert not re.search(r"readme|documentation|unit test|test suite", text, re.I), text
    assert len(text) < 1200, text  # a five-line function gets a short answer


async def test_explanation_in_chinese_keeps_the_identifiers(model_path, tmp_path) -> None:
    """VS Code sends its display language as `initialize`'s `locale`: a zh-cn editor gets its
    explanation in Chinese, through the real protocol, with the code's names as written."""
    client = await ClientServerConfig(server_command=SERVER, server_env=server_env(QWEN_LSP_MODEL=str(model_path))).start()
    try:
        await client.initialize_session(
            lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"), locale="zh-cn", process_id=os.getpid())
        )
        uri = open_doc(client, str(tmp_path / "inventory.py"), PROGRAM)
        result = plain(await client.workspace_execute_command_async(explain_params(uri, selection_of(PROGRAM, BOXES), "explain-zh")))
    finally:
        await client.shutdown_session()
    text = result["text"]
    assert len(CJK.findall(text)) >= 10, text
    assert "boxes_needed" in text and "per_box" in text, text
