// How to start qwen-lsp and what to tell it, from the user's `qwen.*` settings.
import * as vscode from "vscode";
import { Executable, ServerOptions } from "vscode-languageclient/node";

// Settings the extension itself uses; everything else under `qwen` goes to the server as is.
const CLIENT_ONLY = new Set(["serverPath", "pythonPath", "languages"]);

export function serverOptions(): ServerOptions {
  const config = vscode.workspace.getConfiguration("qwen");
  const serverPath = config.get<string>("serverPath", "");
  const pythonPath = config.get<string>("pythonPath", "");
  let run: Executable;
  if (serverPath) {
    run = { command: serverPath, args: ["serve"] };
  } else if (pythonPath) {
    run = { command: pythonPath, args: ["-m", "qwen_lsp", "serve"] };
  } else {
    run = { command: "qwen-lsp", args: ["serve"] };
  }
  return { run, debug: run };
}

/** The server's settings (see qwen_lsp/config.py), sent at start and on every change. */
export function serverSettings(): Record<string, unknown> {
  const config = vscode.workspace.getConfiguration("qwen");
  const settings: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config)) {
    if (typeof value !== "function" && !CLIENT_ONLY.has(key)) {
      settings[key] = value;
    }
  }
  return settings;
}

export function languages(): string[] {
  return vscode.workspace.getConfiguration("qwen").get<string[]>("languages", ["python"]);
}

/** Settings whose change needs a new server process rather than a didChangeConfiguration. */
export function needsRestart(event: vscode.ConfigurationChangeEvent): boolean {
  return [...CLIENT_ONLY, "model", "backend", "endpoint", "modelName", "nThreads"].some((key) => event.affectsConfiguration(`qwen.${key}`));
}
