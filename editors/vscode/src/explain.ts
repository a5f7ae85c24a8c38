// "Qwen: Explain Selection": runs the server's `qwen.explain` command and streams its `$/progress`
// reports into a side panel, with a Stop button that cancels the request.
import MarkdownIt from "markdown-it";
import * as vscode from "vscode";
import { ExecuteCommandRequest, LanguageClient, WorkDoneProgress } from "vscode-languageclient/node";
import { StatusItem } from "./status";

/** The argument of the server's `qwen.explain` command. */
export interface ExplainTarget {
  textDocument: { uri: string };
  range: { start: { line: number; character: number }; end: { line: number; character: number } };
}

type ToPanel =
  | { type: "start"; title: string }
  | { type: "status"; text: string }
  | { type: "text"; html: string }
  | { type: "done"; html: string }
  | { type: "stopped" }
  | { type: "error"; text: string };

const markdown = new MarkdownIt({ html: false, linkify: true });

export class ExplainPanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private running: vscode.CancellationTokenSource | undefined;
  private counter = 0;

  constructor(
    private readonly client: () => LanguageClient | undefined,
    private readonly status: StatusItem,
  ) {}

  /** Explain the editor's selection; with nothing selected the server explains the enclosing function. */
  async explainSelection(editor: vscode.TextEditor | undefined): Promise<void> {
    const client = this.client();
    if (!editor || !client) {
      void vscode.window.showWarningMessage("Qwen: open a file and select the code to explain.");
      return;
    }
    const range = editor.selection;
    const target = {
      textDocument: { uri: client.code2ProtocolConverter.asUri(editor.document.uri) },
      range: client.code2ProtocolConverter.asRange(range),
    };
    const name = editor.document.uri.path.split("/").pop();
    if (range.isEmpty) {
      await this.explain(target, `the function at ${name}:${range.start.line + 1}`);
      return;
    }
    // A selection of whole lines ends at the start of the next one.
    const last = range.end.character === 0 && range.end.line > range.start.line ? range.end.line : range.end.line + 1;
    await this.explain(target, `${name}:${range.start.line + 1}-${last}`);
  }

  async explain(target: ExplainTarget, title: string): Promise<void> {
    const client = this.client();
    if (!client) {
      return;
    }
    this.running?.cancel();
    const cancel = new vscode.CancellationTokenSource();
    this.running = cancel;
    this.reveal();
    this.post({ type: "start", title });
    const token = `qwen-vscode-explain-${++this.counter}`;
    const progress = client.onProgress(WorkDoneProgress.type, token, (value) => {
      if (cancel.token.isCancellationRequested || value.kind !== "report" || !value.message) {
        return;
      }
      if (value.percentage !== undefined) {
        this.post({ type: "status", text: value.message }); // still reading the code
      } else {
        this.post({ type: "text", html: markdown.render(value.message) });
      }
    });
    this.status.begin();
    try {
      const result = await client.sendRequest(
        ExecuteCommandRequest.type,
        { command: "qwen.explain", arguments: [target], workDoneToken: token },
        cancel.token,
      );
      this.post({ type: "done", html: markdown.render((result as { text: string }).text) });
    } catch (err) {
      if (cancel.token.isCancellationRequested) {
        this.post({ type: "stopped" });
      } else {
        this.post({ type: "error", text: err instanceof Error ? err.message : String(err) });
      }
    } finally {
      progress.dispose();
      this.status.end();
      if (this.running === cancel) {
        this.running = undefined;
      }
      cancel.dispose();
    }
  }

  stop(): void {
    this.running?.cancel();
  }

  private reveal(): void {
    if (this.panel) {
      this.panel.reveal(vscode.ViewColumn.Beside, true);
      return;
    }
    const panel = vscode.window.createWebviewPanel(
      "qwen.explain",
      "Qwen: Explain",
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true },
      { enableScripts: true, retainContextWhenHidden: true, localResourceRoots: [] },
    );
    panel.webview.html = html(nonce());
    panel.webview.onDidReceiveMessage((message: { type: string }) => {
      if (message.type === "stop") {
        this.stop();
      }
    });
    panel.onDidDispose(() => {
      this.stop(); // closing the panel cancels too
      this.panel = undefined;
    });
    this.panel = panel;
  }

  private post(message: ToPanel): void {
    void this.panel?.webview.postMessage(message);
  }

  dispose(): void {
    this.stop();
    this.panel?.dispose();
  }
}

function nonce(): string {
  return Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16)).join("");
}

function html(nonce: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-${nonce}';">
<style>
  body { font-family: var(--vscode-font-family); font-size: var(--vscode-font-size); color: var(--vscode-foreground); padding: 0 12px; }
  header { display: flex; align-items: center; gap: 8px; position: sticky; top: 0; padding: 8px 0; background: var(--vscode-editor-background); }
  header h2 { flex: 1; margin: 0; font-size: 1.1em; }
  #state { color: var(--vscode-descriptionForeground); }
  button { color: var(--vscode-button-foreground); background: var(--vscode-button-background); border: none; padding: 4px 12px; cursor: pointer; }
  button:disabled { opacity: 0.4; cursor: default; }
  pre, code { font-family: var(--vscode-editor-font-family); }
  pre { background: var(--vscode-textCodeBlock-background); padding: 8px; overflow-x: auto; }
  .error { color: var(--vscode-errorForeground); }
</style>
</head>
<body>
<header><h2 id="title">Qwen: Explain</h2><span id="state"></span><button id="stop" disabled>Stop</button></header>
<main id="qwen-explain"></main>
<script nonce="${nonce}">
  const vscode = acquireVsCodeApi();
  const title = document.getElementById("title");
  const state = document.getElementById("state");
  const stop = document.getElementById("stop");
  const content = document.getElementById("qwen-explain");
  stop.addEventListener("click", () => vscode.postMessage({ type: "stop" }));
  window.addEventListener("message", (event) => {
    const message = event.data;
    switch (message.type) {
      case "start":
        title.textContent = "Qwen: " + message.title;
        content.innerHTML = "";
        state.textContent = "starting…";
        stop.disabled = false;
        break;
      case "status":
        state.textContent = message.text;
        break;
      case "text":
        content.innerHTML = message.html;
        state.textContent = "streaming…";
        break;
      case "done":
        content.innerHTML = message.html;
        state.textContent = "done";
        stop.disabled = true;
        break;
      case "stopped":
        state.textContent = "stopped";
        stop.disabled = true;
        break;
      case "error":
        content.innerHTML = "";
        const error = document.createElement("p");
        error.className = "error";
        error.textContent = message.text;
        content.appendChild(error);
        state.textContent = "failed";
        stop.disabled = true;
        break;
    }
  });
</script>
</body>
</html>`;
}
