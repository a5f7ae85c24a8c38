// How to start qwen-lsp and what to tell it. The settings are declared in package.json: the
// editor's own (`x-editorOnly`), and the server's, generated from its qwen_lsp/config.py by
// scripts/editor_settings.py. Only declared server settings are sent, and a change of one marked
// `x-restartsServer` restarts the server, so this file names no setting of the server's.
import * as vscode from "vscode";
import { Executable, ServerOptions } from "vscode-languageclient/node";
import { onPath } from "./install";

interface SettingSchema {
  "x-editorOnly"?: boolean;
  "x-restartsServer"?: boolean;
}

export interface Manifest {
  contributes: { configuration: { properties: Record<string, SettingSchema> }[] };
}

/** How to start the server: `qwen.serverPath`, `qwen.pythonPath`, `qwen-lsp` on PATH, then the one
 * the extension installed (`installed`); undefined when there is none. */
export function serverOptions(installed: string | undefined): ServerOptions | undefined {
  const config = vscode.workspace.getConfiguration("qwen");
  const serverPath = config.get<string>("serverPath", "");
  const pythonPath = config.get<string>("pythonPath", "");
  let run: Executable;
  if (serverPath) {
    run = { command: serverPath, args: ["serve"] };
  } else if (pythonPath) {
    // -I: a plain `python -m` puts the working folder first on sys.path, where a cloned
    // repository's `tree_sitter_python.py` would take the place of ours.
    run = { command: pythonPath, args: ["-I", "-m", "qwen_lsp", "serve"] };
  } else if (onPath("qwen-lsp")) {
    run = { command: "qwen-lsp", args: ["serve"] };
  } else if (installed) {
    run = { command: installed, args: ["serve"] };
  } else {
    return undefined;
  }
  return { run, debug: run };
}

export function languages(): string[] {
  return vscode.workspace.getConfiguration("qwen").get<string[]>("languages", ["python"]);
}

/** The `qwen.*` settings package.json declares: which go to the server, which restart it. */
export class DeclaredSettings {
  readonly forServer: string[] = [];
  readonly restartingServer: string[] = [];

  constructor(manifest: Manifest) {
    for (const section of manifest.contributes.configuration) {
      for (const [name, schema] of Object.entries(section.properties)) {
        const key = name.replace(/^qwen\./, "");
        if (!schema["x-editorOnly"]) {
          this.forServer.push(key);
        }
        if (schema["x-restartsServer"]) {
          this.restartingServer.push(key);
        }
      }
    }
  }

  /** The server's settings, sent at start and on every change: the declared ones only, read
   * with their declared scope (a workspace cannot set a `machine` one, nor add others). */
  serverSettings(): Record<string, unknown> {
    const config = vscode.workspace.getConfiguration("qwen");
    return Object.fromEntries(this.forServer.map((key) => [key, config.get(key)]));
  }

  /** Whether a change needs a new server process rather than a didChangeConfiguration. */
  needsRestart(event: vscode.ConfigurationChangeEvent): boolean {
    return this.restartingServer.some((key) => event.affectsConfiguration(`qwen.${key}`));
  }
}
