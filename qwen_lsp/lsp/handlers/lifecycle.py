"""Start, settings and stop."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types as lsp
from pygls.uris import to_fs_path

from qwen_lsp import watchdog
from qwen_lsp.config import parse_settings
from qwen_lsp.lsp.capabilities import ClientFeatures
from qwen_lsp.lsp.protocol import QwenProtocol

PYTHON_FILE_WATCHER = lsp.RegistrationParams(
    registrations=[
        lsp.Registration(
            id="qwen-lsp/python-files",
            method=lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES,
            register_options=lsp.DidChangeWatchedFilesRegistrationOptions(watchers=[lsp.FileSystemWatcher(glob_pattern="**/*.py")]),
        )
    ]
)

if TYPE_CHECKING:
    from qwen_lsp.lsp.server import QwenLanguageServer


def initialize(ls: QwenLanguageServer, params: lsp.InitializeParams) -> None:
    """`initialize`: read the settings and what the client can do; stop when the editor dies."""
    ls.settings = parse_settings(params.initialization_options)
    # On TCP a client's death ends its session, not the server.
    if not isinstance(ls.protocol, QwenProtocol) or ls.protocol.exit_ends_process:
        watchdog.watch_parent(params.process_id)
    ls.client_features = ClientFeatures.of(params.capabilities, ls.workspace.position_encoding)
    ls.documents.encoding = ls.client_features.position_encoding
    ls.client_locale = params.locale
    ls.completer.set_workspace(workspace_folders(ls))


async def initialized(ls: QwenLanguageServer, params: lsp.InitializedParams) -> None:
    """`initialized`: start loading the model, so the first request finds it ready, and ask to
    hear of changed Python files (the project context shows their definitions)."""
    ls.start_engine()
    if ls.client_features.watches_files:
        await ls.client_register_capability_async(PYTHON_FILE_WATCHER)


def did_change_workspace_folders(ls: QwenLanguageServer, params: lsp.DidChangeWorkspaceFoldersParams) -> None:
    """`workspace/didChangeWorkspaceFolders` (pygls has updated `ls.workspace` already)."""
    ls.completer.set_workspace(workspace_folders(ls))


def workspace_folders(ls: QwenLanguageServer) -> list[Path]:
    folders = [to_fs_path(folder.uri) for folder in ls.workspace.folders.values()]
    if not folders and ls.workspace.root_uri:
        folders = [to_fs_path(ls.workspace.root_uri)]
    return [Path(folder) for folder in folders if folder]


def shutdown(ls: QwenLanguageServer, params: None) -> None:
    """`shutdown`: free the model."""
    ls.close_engine()


def did_change_configuration(ls: QwenLanguageServer, params: lsp.DidChangeConfigurationParams) -> None:
    """`workspace/didChangeConfiguration`: merge the new settings into the current ones."""
    ls.update_settings(parse_settings(params.settings, ls.settings))
