"""What the client can do, resolved once at `initialize` (the capabilities do not change)."""

from __future__ import annotations

import attrs
from lsprotocol import types as lsp


@attrs.frozen
class ClientFeatures:
    """The client capabilities the handlers depend on. The defaults are a client that declared
    nothing, which is also what a request before `initialize` sees."""

    # `$/progress` tokens the server creates (`window/workDoneProgress/create`).
    work_done_progress: bool = False
    # Quick fixes offered without an edit, written in `codeAction/resolve`: the client must keep
    # each action's `data` until it resolves it, and resolve its `edit`.
    resolves_edits: bool = False
    # Versioned edits (`documentChanges`), which the client refuses if the document moved on.
    document_changes: bool = False
    # How positions count characters on a line.
    position_encoding: str = "utf-16"
    # File watchers registered by the server (`workspace/didChangeWatchedFiles`).
    watches_files: bool = False

    @classmethod
    def of(cls, capabilities: lsp.ClientCapabilities, position_encoding: object) -> ClientFeatures:
        """`position_encoding` is the one pygls negotiated (an enum member, a string or None)."""
        return cls(
            work_done_progress=bool(capabilities.window and capabilities.window.work_done_progress),
            resolves_edits=_resolves_edits(capabilities.text_document),
            document_changes=_document_changes(capabilities.workspace),
            position_encoding=str(getattr(position_encoding, "value", position_encoding) or "utf-16"),
            watches_files=_watches_files(capabilities.workspace),
        )


def _resolves_edits(text_document: lsp.TextDocumentClientCapabilities | None) -> bool:
    code_action = text_document.code_action if text_document else None
    if code_action is None or not code_action.data_support or code_action.resolve_support is None:
        return False
    return "edit" in code_action.resolve_support.properties


def _document_changes(workspace: lsp.WorkspaceClientCapabilities | None) -> bool:
    return bool(workspace and workspace.workspace_edit and workspace.workspace_edit.document_changes)


def _watches_files(workspace: lsp.WorkspaceClientCapabilities | None) -> bool:
    watched = workspace.did_change_watched_files if workspace else None
    return bool(watched and watched.dynamic_registration)
