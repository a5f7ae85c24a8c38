// Tell the server where the cursor comes to rest (`qwen/cursorRested`, debounced), so it reads the
// completion prompt for that place while the model is idle and typing there starts warm. VS Code
// asks for inline completions only on typing, so without this the server would learn the place at
// the first keystroke. Typing itself needs no hint: the server learns the place from the edits.
import * as vscode from "vscode";
import { LanguageClient } from "vscode-languageclient/node";

const NOTIFICATION = "qwen/cursorRested";
const REST_MS = 300;

export function trackCursorRest(getClient: () => LanguageClient | undefined): vscode.Disposable {
  let timer: NodeJS.Timeout | undefined;
  let sent = "";
  const versions = new Map<string, number>(); // per document, its version at the last cursor move

  const send = (editor: vscode.TextEditor): void => {
    const client = getClient();
    if (!client?.isRunning() || vscode.window.activeTextEditor !== editor) {
      return;
    }
    const { line, character } = editor.selection.active;
    const uri = client.code2ProtocolConverter.asUri(editor.document.uri);
    const place = `${uri}:${line}:${character}`;
    if (place !== sent) {
      sent = place; // only a new place is worth the engine's time
      void client.sendNotification(NOTIFICATION, { textDocument: { uri }, position: { line, character } });
    }
  };
  const schedule = (editor: vscode.TextEditor | undefined): void => {
    clearTimeout(timer);
    if (editor) {
      timer = setTimeout(() => send(editor), REST_MS);
    }
  };

  return vscode.Disposable.from(
    vscode.window.onDidChangeActiveTextEditor(schedule),
    vscode.window.onDidChangeTextEditorSelection((event) => {
      const document = event.textEditor.document;
      const key = document.uri.toString();
      const typed = versions.has(key) && versions.get(key) !== document.version;
      versions.set(key, document.version);
      if (typed) {
        clearTimeout(timer); // the cursor moved because the text changed
      } else {
        schedule(event.textEditor);
      }
    }),
    vscode.workspace.onDidCloseTextDocument((document) => versions.delete(document.uri.toString())),
    { dispose: () => clearTimeout(timer) },
  );
}
