"""The protocol layer's parts, alone and through a real stdio server with the fake engine (no
model): client features resolved once, code-action kinds, command arguments, progress."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams
from pygls.protocol import default_converter

from qwen_lsp.lsp import commands
from qwen_lsp.lsp.capabilities import ClientFeatures
from qwen_lsp.lsp.progress import Progress
from tests.conftest import server_env
from tests.rawlsp import RawServer

DOC_URI = "file:///tmp/broken.py"
BROKEN = "def f(x)\n    return x\n"
DIAGNOSTIC = {"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 8}}, "message": "expected ':'", "severity": 1}


def resolve_capabilities(data_support: bool) -> dict[str, Any]:
    code_action: dict[str, Any] = {"resolveSupport": {"properties": ["edit"]}}
    if data_support:
        code_action["dataSupport"] = True
    return {"textDocument": {"codeAction": code_action}}


def code_actions(capabilities: dict[str, Any], only: list[str] | None, tmp_path: Any) -> dict[str, Any]:
    server = RawServer(server_env(), [sys.executable, "-m", "tests.fake_engine"], tmp_path / "err.log")
    try:
        server.initialize(capabilities=capabilities)
        server.notify("textDocument/didOpen", {"textDocument": {"uri": DOC_URI, "languageId": "python", "version": 1, "text": BROKEN}})
        context: dict[str, Any] = {"diagnostics": [DIAGNOSTIC]}
        if only is not None:
            context["only"] = only
        return server.request(
            "textDocument/codeAction", {"textDocument": {"uri": DOC_URI}, "range": DIAGNOSTIC["range"], "context": context}
        )
    finally:
        server.close()


@pytest.mark.parametrize(("data_support", "has_command"), [(True, False), (False, True)])
def test_quick_fixes_are_resolved_only_by_clients_that_keep_their_data(tmp_path, data_support, has_command) -> None:
    """Resolving the edit needs the action's `data` back: a client that declares resolving edits
    but not keeping data gets the `qwen.fix` command as well."""
    response = code_actions(resolve_capabilities(data_support), None, tmp_path)
    (fix,) = [a for a in response["result"] if a.get("kind") == "quickfix"]
    assert fix["data"] == {"uri": DOC_URI, "version": 1}
    assert ("command" in fix) is has_command
    if has_command:
        assert fix["command"]["command"] == "qwen.fix"
        assert fix["command"]["arguments"] == [{"textDocument": {"uri": DOC_URI, "version": 1}, "diagnostic": DIAGNOSTIC}]


@pytest.mark.parametrize(
    ("only", "kinds"), [(["quickfix"], ["quickfix"]), ([""], [""]), (["quickfix.qwen"], []), (["source.organizeImports"], [])]
)
def test_code_actions_of_the_kinds_asked_for(tmp_path, only, kinds) -> None:
    """`context.only` filters by kind: the kind itself or any kind under it (`a` covers `a.b`)."""
    response = code_actions(resolve_capabilities(True), only, tmp_path)
    assert "result" in response, response
    assert [a.get("kind") for a in response["result"]] == kinds


def test_client_features_are_read_from_the_capabilities() -> None:
    converter = default_converter()
    full = converter.structure(
        {"window": {"workDoneProgress": True}, "workspace": {"workspaceEdit": {"documentChanges": True}}, **resolve_capabilities(True)},
        lsp.ClientCapabilities,
    )
    assert ClientFeatures.of(full, lsp.PositionEncodingKind.Utf32) == ClientFeatures(True, True, True, "utf-32")
    assert ClientFeatures.of(lsp.ClientCapabilities(), None) == ClientFeatures()
    no_data = converter.structure(resolve_capabilities(False), lsp.ClientCapabilities)
    assert not ClientFeatures.of(no_data, "utf-8").resolves_edits


@pytest.mark.parametrize(
    ("argument", "kind", "usage"),
    [
        ({"nonsense": True}, commands.ExplainArguments, "qwen.explain expects"),
        ({"textDocument": {"uri": DOC_URI}, "range": {"start": {"line": "one"}}}, commands.ExplainArguments, "qwen.explain expects"),
        ("file:///tmp/x.py", commands.FixArguments, "qwen.fix expects"),
        ({"textDocument": {"uri": DOC_URI}}, commands.FixArguments, "qwen.fix expects"),
    ],
)
def test_malformed_command_arguments_are_invalid_params(argument, kind, usage) -> None:
    with pytest.raises(JsonRpcInvalidParams) as error:
        commands.arguments_of(default_converter(), lsp.ExecuteCommandParams(command="x", arguments=[argument]), kind)
    assert str(error.value.message).startswith(usage)
    with pytest.raises(JsonRpcInvalidParams):
        commands.arguments_of(default_converter(), lsp.ExecuteCommandParams(command="x"), kind)


def test_command_arguments_round_trip() -> None:
    converter = default_converter()
    rng = lsp.Range(lsp.Position(1, 0), lsp.Position(2, 4))
    explain = commands.command(
        converter, "Explain", commands.EXPLAIN_COMMAND, commands.ExplainArguments(lsp.TextDocumentIdentifier(DOC_URI), rng)
    )
    assert explain.arguments == [
        {"textDocument": {"uri": DOC_URI}, "range": {"start": {"line": 1, "character": 0}, "end": {"line": 2, "character": 4}}}
    ]
    params = lsp.ExecuteCommandParams(command=explain.command, arguments=explain.arguments)
    assert commands.arguments_of(converter, params, commands.ExplainArguments).range == rng
    missing_version = {"textDocument": {"uri": DOC_URI}, "diagnostic": DIAGNOSTIC}
    fix = commands.arguments_of(converter, lsp.ExecuteCommandParams(command="qwen.fix", arguments=[missing_version]), commands.FixArguments)
    assert fix.text_document.version is None and fix.diagnostic.message == "expected ':'"


class Recorder:
    """Stands in for the server's `work_done_progress`, recording what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []
        self.tokens: dict[str, object] = {}  # pygls's table of tokens
        self.work_done_progress = self

    def begin(self, token: str, value: lsp.WorkDoneProgressBegin) -> None:
        self.sent.append(("begin", value))

    def report(self, token: str, value: lsp.WorkDoneProgressReport) -> None:
        self.sent.append(("report", value.message))

    def end(self, token: str, value: lsp.WorkDoneProgressEnd) -> None:
        self.sent.append(("end", value.message))


def test_progress_reports_at_a_bounded_rate_and_nothing_after_its_end() -> None:
    server = Recorder()
    progress = Progress(server, "t", per_second=0.001)  # type: ignore[arg-type]
    progress.begin("Work", cancellable=True)
    progress.report("one")
    progress.report("dropped: too soon")
    progress.report("forced", force=True)
    progress.end("done")
    progress.report("after the end", force=True)
    progress.end("again")
    (kind, begin), *rest = server.sent
    assert kind == "begin" and isinstance(begin, lsp.WorkDoneProgressBegin) and begin.cancellable is True
    assert rest == [("report", "one"), ("report", "forced"), ("end", "done")]
    Progress(server, "u").begin("Load")  # type: ignore[arg-type]
    assert server.sent[-1][1].cancellable is None  # type: ignore[union-attr]


async def test_ended_progress_tokens_are_not_kept(tmp_path) -> None:
    """pygls files a future per progress token and never drops it: a server explaining all day
    must not keep one per explanation (issue 15, item 14)."""
    from qwen_lsp.lsp.progress import Progress
    from qwen_lsp.lsp.server import create_server
    from tests.fake_engine import FakeEngine

    server = create_server(lambda settings: FakeEngine())
    sent: list[object] = []
    server.protocol.notify = lambda method, params=None: sent.append((method, params))  # type: ignore[method-assign]
    for number in range(5):
        progress = Progress(server, f"token-{number}")
        progress.begin("explain")
        progress.end()
    assert server.work_done_progress.tokens == {}
    assert len(sent) == 10
