"""Shared fixtures: the real bundled model and a real client (pytest-lsp) with an editor's
capability profile, talking to `python -m qwen_lsp` over stdio."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from qwen_lsp.engine.model_pack import bundled_model

SERVER = [sys.executable, "-m", "qwen_lsp", "serve"]
# Completion without its time budgets: on a loaded machine they would turn a test's suggestion
# into none (a line cut short is dropped) or into one from the small cold window.
NO_TIME_LIMITS: dict[str, object] = {"completionMaxMs": 0, "completionColdPromptMs": 0}


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The real bundled model, assembled and verified once (into the user's cache)."""
    return bundled_model()


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "QWEN_LSP_MODEL"}
    env.update(extra)
    return env


async def start_client(
    capabilities: lsp.ClientCapabilities,
    env: dict[str, str],
    initialization_options: dict[str, object] | None = None,
    workspace: Path | None = None,
    command: list[str] = SERVER,
) -> LanguageClient:
    """A started and initialized server; `workspace` is sent as the root and only workspace folder."""
    client = await ClientServerConfig(server_command=command, server_env=env).start()
    folders = [lsp.WorkspaceFolder(uri=workspace.resolve().as_uri(), name=workspace.name)] if workspace else None
    await client.initialize_session(
        lsp.InitializeParams(
            capabilities=capabilities,
            initialization_options=initialization_options or {},
            process_id=os.getpid(),
            root_uri=folders[0].uri if folders else None,
            workspace_folders=folders,
        )
    )
    return client


ClientFactory = Callable[..., "AsyncIterator[LanguageClient]"]


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., object]]:
    """Start servers on demand: `await make_client(profile="neovim", env=..., options=..., workspace=..., command=...)`."""
    started: list[LanguageClient] = []

    async def factory(
        profile: str = "neovim@v0.11.0",
        env: dict[str, str] | None = None,
        options: dict[str, object] | None = None,
        capabilities: lsp.ClientCapabilities | None = None,
        workspace: Path | None = None,
        command: list[str] = SERVER,
    ) -> LanguageClient:
        client = await start_client(capabilities or client_capabilities(profile), env or server_env(), options, workspace, command)
        started.append(client)
        return client

    yield factory
    for client in started:
        try:
            await client.shutdown_session()
        except Exception:  # noqa: BLE001 - a test may have killed its server on purpose
            await client.stop()


@pytest.fixture
async def client(model_path: Path, make_client: Callable[..., object]) -> LanguageClient:
    """A Neovim-profile client on a server running the real model. Without a generation time
    budget: on a loaded machine the budget cuts lines short, which then give no suggestion (the
    budget has tests of its own)."""
    return await make_client(env=server_env(QWEN_LSP_MODEL=str(model_path)), options=NO_TIME_LIMITS)  # type: ignore[misc]


def open_doc(client: LanguageClient, path: str, text: str, version: int = 1) -> str:
    uri = Path(path).resolve().as_uri() if not path.startswith("file:") else path
    client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="python", version=version, text=text))
    )
    return uri


def position_of(text: str, marker: str, encoding: str = "utf-16") -> lsp.Position:
    """Position just after the first `marker` in `text`, in the given encoding's units."""
    offset = text.index(marker) + len(marker)
    line = text.count("\n", 0, offset)
    line_start = text.rfind("\n", 0, offset) + 1
    before = text[line_start:offset]
    if encoding == "utf-8":
        column = len(before.encode("utf-8"))
    elif encoding == "utf-32":
        column = len(before)
    else:
        column = len(before.encode("utf-16-le")) // 2
    return lsp.Position(line, column)


__all__ = ["open_doc", "position_of", "pytest_lsp", "server_env"]


def code_actions_parsed_right(client) -> None:
    """lsprotocol (the test client's types) takes any code action that has a `command` for a bare
    Command, turning our explain action's command object into a string; editors look at whether
    `command` is a string. Make the test client do the same."""
    from typing import Union

    converter = client.protocol._converter

    def hook(obj: dict, _: type) -> object:
        kind = lsp.Command if isinstance(obj.get("command"), str) else lsp.CodeAction
        return converter.structure(obj, kind)

    converter.register_structure_hook(Union[lsp.Command, lsp.CodeAction], hook)  # noqa: UP007 - the key lsprotocol registers


def plain(value: object) -> object:
    """pygls hands unknown JSON objects over as named tuples; turn them back into dicts."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}  # type: ignore[attr-defined]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


async def server_status(client: LanguageClient) -> dict[str, object]:
    return plain(await client.protocol.send_request_async("qwen/status", {}))  # type: ignore[return-value]


async def settled_status(client: LanguageClient, recent: int = 1, attempts: int = 50) -> dict[str, object]:
    """`qwen/status` once at least `recent` generations are recorded. An answer can reach the
    client before the engine thread has filed the stats of the generation it stopped."""
    for _ in range(attempts):
        status = await server_status(client)
        if len(status.get("recent", [])) >= recent:  # type: ignore[arg-type]
            return status
        await asyncio.sleep(0.1)
    return status


async def records_after(client: LanguageClient, seen: int, attempts: int = 50) -> list[dict[str, object]]:
    """The engine's records after the first `seen`, once one of them generated (the answer can
    reach the client before its generation's stats are filed)."""
    for _ in range(attempts):
        later: list[dict[str, object]] = (await server_status(client))["recent"][seen:]  # type: ignore[index]
        if any(record["generated_tokens"] for record in later):
            break
        await asyncio.sleep(0.1)
    return later
