// The editor context menu: "Explain with Qwen" in the server's languages (context key
// `qwen.languages`) and "Fix with Qwen" when a diagnostic is on the cursor's line (context key
// `qwen.diagnosticAtCursor`, kept up to date from the diagnostics as the selection moves). A
// right-click moves the cursor to the click, so "the cursor" is where the user clicked.
import * as vscode from "vscode";
import { CodeAction, CodeActionRequest, CodeActionResolveRequest, LanguageClient } from "vscode-languageclient/node";
import { languages } from "./server";

function diagnosticsAtCursor(editor: vscode.TextEditor): vscode.Diagnostic[] {
  const line = editor.selection.active.line;
  return vscode.languages
    .getDiagnostics(editor.document.uri)
    .filter((d) => d.range.start.line <= line && line <= d.range.end.line);
}

function updateContext(): void {
  const editor = vscode.window.activeTextEditor;
  const here = editor !== undefined && diagnosticsAtCursor(editor).length > 0;
  void vscode.commands.executeCommand("setContext", "qwen.diagnosticAtCursor", here);
}

/** Keep the context keys of the menu's `when` clauses. */
export function trackMenuContext(): vscode.Disposable {
  const setLanguages = (): void => void vscode.commands.executeCommand("setContext", "qwen.languages", languages());
  setLanguages();
  updateContext();
  return vscode.Disposable.from(
    vscode.window.onDidChangeTextEditorSelection(updateContext),
    vscode.window.onDidChangeActiveTextEditor(updateContext),
    vscode.languages.onDidChangeDiagnostics(updateContext),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration("qwen.languages")) {
        setLanguages();
      }
    }),
  );
}

/** "Fix with Qwen": the server's quick fix for the diagnostics on the cursor's line (any
 * extension's), resolved into an edit with a progress notification, and applied. */
export async function fixAtCursor(client: LanguageClient | undefined, editor: vscode.TextEditor | undefined): Promise<void> {
  const diagnostics = editor ? diagnosticsAtCursor(editor) : [];
  if (!client || !editor || diagnostics.length === 0) {
    void vscode.window.showWarningMessage("Qwen: no problem on this line to fix.");
    return;
  }
  const c2p = client.code2ProtocolConverter;
  const message = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: "Qwen: fixing…", cancellable: true },
    async (_progress, token) => {
      const actions = await client.sendRequest(
        CodeActionRequest.type,
        {
          textDocument: c2p.asTextDocumentIdentifier(editor.document),
          range: c2p.asRange(diagnostics[0].range),
          context: { diagnostics: await c2p.asDiagnostics(diagnostics), only: [vscode.CodeActionKind.QuickFix.value] },
        },
        token,
      );
      const offered = (actions ?? []).find((a): a is CodeAction => "title" in a && a.title.startsWith("Fix with Qwen"));
      if (!offered) {
        return "Qwen offered no fix here.";
      }
      const fix = await client.sendRequest(CodeActionResolveRequest.type, offered, token);
      if (!fix.edit) {
        return fix.title;
      }
      const applied = await vscode.workspace.applyEdit(await client.protocol2CodeConverter.asWorkspaceEdit(fix.edit));
      return applied ? undefined : "the file changed while Qwen was fixing it; try again.";
    },
  );
  if (message) {
    void vscode.window.showWarningMessage(`Qwen: ${message}`);
  }
}
