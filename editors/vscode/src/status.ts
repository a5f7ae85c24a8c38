// The status bar item: model loading, ready, generating (with the speed of the latest request),
// or an error; a click opens the server log.
import * as vscode from "vscode";
import { LanguageClient } from "vscode-languageclient/node";

interface RecentStats {
  generated_tokens: number;
  generation_seconds: number;
  prompt_tokens: number;
  reused_tokens: number;
  prompt_seconds: number;
}

interface ServerStatus {
  state?: string;
  message?: string;
  model?: string | null;
  recent?: RecentStats[];
}

const POLL_MS = 500;

export class StatusItem implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem("qwen.status", vscode.StatusBarAlignment.Right, 100);
  private active = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly client: () => LanguageClient | undefined) {
    this.item.name = "Qwen";
    this.item.command = "qwen.showLog";
    this.show("$(sync~spin) Qwen", "Starting qwen-lsp…");
    this.item.show();
  }

  /** A model request started (completion, explanation). */
  begin(): void {
    this.active += 1;
    this.show("$(loading~spin) Qwen: generating", "Generating…");
  }

  /** A model request ended: show the speed it ran at. */
  end(): void {
    this.active = Math.max(0, this.active - 1);
    if (this.active === 0) {
      void this.refresh();
    }
  }

  error(message: string): void {
    this.stopPolling();
    this.show("$(error) Qwen", `${message}\n\nClick for the log.`, new vscode.ThemeColor("statusBarItem.errorBackground"));
  }

  /** Ask the server how it is; poll while the model is still loading. */
  async refresh(): Promise<void> {
    this.stopPolling();
    const client = this.client();
    if (!client || !client.isRunning()) {
      return;
    }
    let status: ServerStatus;
    try {
      status = await client.sendRequest<ServerStatus>("qwen/status", {});
    } catch (err) {
      this.error(`qwen/status failed: ${String(err)}`);
      return;
    }
    if (this.active > 0) {
      return;
    }
    switch (status.state) {
      case "ready":
        this.show(`$(sparkle) Qwen${speed(status.recent)}`, tooltip(status));
        break;
      case "failed":
        this.error(status.message ?? "the model failed to load");
        break;
      default: // idle, preparing, loading
        this.show("$(sync~spin) Qwen: loading", status.message ?? "Loading the model…");
        this.timer = setTimeout(() => void this.refresh(), POLL_MS);
    }
  }

  private show(text: string, tooltipText: string, background?: vscode.ThemeColor): void {
    this.item.text = text;
    this.item.tooltip = tooltipText;
    this.item.backgroundColor = background;
  }

  private stopPolling(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  dispose(): void {
    this.stopPolling();
    this.item.dispose();
  }
}

function speed(recent: RecentStats[] | undefined): string {
  const last = recent?.[recent.length - 1];
  if (!last || last.generation_seconds <= 0 || last.generated_tokens < 2) {
    return "";
  }
  return ` ${(last.generated_tokens / last.generation_seconds).toFixed(0)} tok/s`;
}

function tooltip(status: ServerStatus): string {
  const lines = [`Qwen: ${status.state}`, `Model: ${status.model ?? "none"}`];
  const last = status.recent?.[status.recent.length - 1];
  if (last) {
    lines.push(
      `Latest request: ${last.prompt_tokens} prompt tokens (${last.reused_tokens} reused) read in ` +
        `${(last.prompt_seconds * 1000).toFixed(0)} ms, ${last.generated_tokens} tokens generated${speed(status.recent)}`,
    );
  }
  lines.push("Click for the log.");
  return lines.join("\n");
}
