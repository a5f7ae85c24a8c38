"""Code actions: "Explain with Qwen" and one quick fix per diagnostic. Offering them never runs
the model; a fix is written in `codeAction/resolve`, or by the `qwen.fix` command for clients
that cannot resolve an edit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lsprotocol import types as lsp

from qwen_lsp import explain, fix
from qwen_lsp.edits import TextEdit
from qwen_lsp.lsp import commands
from qwen_lsp.lsp.convert import offsets, to_problem, to_range
from qwen_lsp.lsp.errors import engine_errors
from qwen_lsp.syntax.documents import Document

if TYPE_CHECKING:
    from qwen_lsp.lsp.server import QwenLanguageServer

OPTIONS = lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix, lsp.CodeActionKind.Empty], resolve_provider=True)


def code_action(ls: QwenLanguageServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
    """`textDocument/codeAction`: explain the selection (or the function at the cursor), and
    offer a quick fix for each diagnostic."""
    doc = ls.document(params.text_document.uri)
    actions = []
    if wanted(params, lsp.CodeActionKind.Empty) and (action := explain_action(ls, doc, params.range)) is not None:
        actions.append(action)
    if wanted(params, lsp.CodeActionKind.QuickFix):
        actions += [fix_action(ls, doc, diagnostic) for diagnostic in params.context.diagnostics]
    return actions


async def code_action_resolve(ls: QwenLanguageServer, action: lsp.CodeAction) -> lsp.CodeAction:
    """`codeAction/resolve`: write the quick fix's edit (the title says why if there is none)."""
    target = commands.fix_target(ls.converter, action.data)
    if not action.diagnostics or target is None:
        return action
    edit, reason = await fix_edit(ls, target, action.diagnostics[0])
    if edit is None:
        action.title = f"{action.title} (no fix: {reason})"
    action.edit = edit
    return action


async def fix_command(ls: QwenLanguageServer, params: lsp.ExecuteCommandParams) -> dict[str, object]:
    """`workspace/executeCommand` `qwen.fix`: fix and apply through `workspace/applyEdit`.
    Result: `{"applied": bool, "reason": str}`."""
    arguments = commands.arguments_of(ls.converter, params, commands.FixArguments)
    edit, reason = await fix_edit(ls, arguments.text_document, arguments.diagnostic)
    if edit is None:
        ls.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Warning, f"Qwen found no fix: {reason}"))
        return {"applied": False, "reason": reason}
    response = await ls.workspace_apply_edit_async(lsp.ApplyWorkspaceEditParams(edit=edit, label="Fix with Qwen"))
    return {"applied": response.applied, "reason": response.failure_reason or ""}


def wanted(params: lsp.CodeActionParams, kind: lsp.CodeActionKind) -> bool:
    """Whether `context.only` asks for `kind`: the kind itself or one above it (`a` covers `a.b`).
    Its entries arrive as plain strings, known kinds included."""
    only = [k.value if isinstance(k, lsp.CodeActionKind) else k for k in params.context.only or []]
    return not only or any(kind.value == k or kind.value.startswith(f"{k}.") for k in only)


def explain_action(ls: QwenLanguageServer, doc: Document, rng: lsp.Range) -> lsp.CodeAction | None:
    target = explain.target(doc, *offsets(doc, rng))
    if target is None:
        return None
    title = "Explain with Qwen" if target.label == "selection" else f"Explain {target.label} with Qwen"
    arguments = commands.ExplainArguments(lsp.TextDocumentIdentifier(doc.uri), to_range(doc, target.start, target.end))
    command = commands.command(ls.converter, title, commands.EXPLAIN_COMMAND, arguments)
    return lsp.CodeAction(title=title, kind=lsp.CodeActionKind.Empty, command=command)


def fix_action(ls: QwenLanguageServer, doc: Document, diagnostic: lsp.Diagnostic) -> lsp.CodeAction:
    """The quick fix without its edit: resolved later, or run as a command by clients that cannot."""
    title = f"Fix with Qwen: {diagnostic.message.splitlines()[0] if diagnostic.message else 'this problem'}"
    identifier = lsp.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version)
    action = lsp.CodeAction(
        title=title, kind=lsp.CodeActionKind.QuickFix, diagnostics=[diagnostic], data=ls.converter.unstructure(identifier)
    )
    if not ls.client_features.resolves_edits:
        action.command = commands.command(ls.converter, title, commands.FIX_COMMAND, commands.FixArguments(identifier, diagnostic))
    return action


async def fix_edit(
    ls: QwenLanguageServer, target: lsp.OptionalVersionedTextDocumentIdentifier, diagnostic: lsp.Diagnostic
) -> tuple[lsp.WorkspaceEdit | None, str]:
    """The fix of one diagnostic as a workspace edit, or None and the reason there is none."""
    live = ls.document(target.uri)
    if target.version is not None and target.version != live.version:
        return None, "the document changed since the fix was offered; ask again"
    # The model takes seconds and the user may type meanwhile: work on a copy, and refuse the
    # edit if the document moved on.
    doc = Document(live.uri, live.text, live.version, live.language_id, live.encoding)
    with engine_errors():
        result = await fix.propose_fix(ls.engine, ls.settings, doc, to_problem(doc, diagnostic))
    if not result.edits:
        return None, result.reason
    now = ls.documents.get(doc.uri)
    if now is None or now.version != doc.version:
        # Without `documentChanges` the edit carries no version for the editor to check, and
        # lines typed meanwhile would move it onto other code.
        return None, "the document changed while the fix was written; ask again"
    return workspace_edit(ls, doc, result.edits), ""


def workspace_edit(ls: QwenLanguageServer, doc: Document, edits: Sequence[TextEdit]) -> lsp.WorkspaceEdit:
    """Versioned edits for clients that take them (the edit then fails if the document moved on)."""
    text_edits = [lsp.TextEdit(range=to_range(doc, e.start, e.end), new_text=e.new_text) for e in edits]
    if not ls.client_features.document_changes:
        return lsp.WorkspaceEdit(changes={doc.uri: text_edits})
    identifier = lsp.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version)
    return lsp.WorkspaceEdit(document_changes=[lsp.TextDocumentEdit(text_document=identifier, edits=text_edits)])
