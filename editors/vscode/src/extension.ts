// The qwen-lsp extension: starts the server for the chosen languages (offering to install it when
// there is none); ghost text comes from the language client's inline completion support, quick
// fixes from its code actions. This file wires the status bar, the explain panel, the context
// menu, the installer, the log and the settings to the client.
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  LanguageClient,
  LanguageClientOptions,
  State,
} from "vscode-languageclient/node";
import { ExplainPanel, ExplainTarget } from "./explain";
import { Installer } from "./install";
import { fixAtCursor, trackMenuContext } from "./menu";
import { trackCursorRest } from "./rest";
import { DeclaredSettings, Manifest, languages, serverOptions } from "./server";
import { StatusItem } from "./status";

let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = vscode.window.createOutputChannel("Qwen", { log: true });
  const status = new StatusItem(() => client);
  const panel = new ExplainPanel(() => client, status);
  const settings = new DeclaredSettings(context.extension.packageJSON as Manifest);
  const installer = new Installer(context.globalStorageUri, log);
  context.subscriptions.push(log, status, panel, trackMenuContext(), trackCursorRest(() => client));

  const install = async (): Promise<void> => {
    if (await installer.install()) {
      await restart();
    }
  };
  const offerInstall = async (): Promise<void> => {
    status.error("qwen-lsp is not installed");
    const choice = await vscode.window.showWarningMessage(
      "Qwen: the qwen-lsp server was not found. Install it into a private Python environment for this extension?",
      "Install",
      "Settings",
    );
    if (choice === "Install") {
      await install();
    } else if (choice === "Settings") {
      await vscode.commands.executeCommand("workbench.action.openSettings", "qwen.installSource");
    }
  };

  const start = async (): Promise<void> => {
    const server = serverOptions(installer.server());
    if (!server) {
      void offerInstall(); // not awaited: activation does not wait for the user
      return;
    }
    const clientOptions: LanguageClientOptions = {
      documentSelector: languages().map((language) => ({ language })),
      initializationOptions: settings.serverSettings(),
      outputChannel: log,
      middleware: {
        provideInlineCompletionItems: async (document, position, completionContext, token, next) => {
          status.begin();
          try {
            return await next(document, position, completionContext, token);
          } finally {
            status.end();
          }
        },
        // VS Code shows the server's suggestion as ghost text already; the same text again in the
        // suggest widget would take Tab from the ghost text (and cost a second model request).
        provideCompletionItem: () => undefined,
        // The server's "Explain with Qwen" code action runs this command: show it in the panel.
        executeCommand: async (command, args, next) => {
          if (command === "qwen.explain" && args.length > 0) {
            return panel.explain(args[0] as ExplainTarget, "selection");
          }
          return next(command, args);
        },
      },
    };
    client = new LanguageClient("qwen", "Qwen", server, clientOptions);
    client.onDidChangeState((event) => {
      if (event.newState === State.Stopped) {
        status.error("qwen-lsp stopped");
      }
    });
    try {
      await client.start();
      await status.refresh();
    } catch (err) {
      status.error(`qwen-lsp did not start: ${err instanceof Error ? err.message : String(err)}`);
      log.show(true);
    }
  };
  const restart = async (): Promise<void> => {
    const old = client;
    client = undefined;
    await old?.dispose();
    await start();
  };

  context.subscriptions.push(
    vscode.commands.registerCommand("qwen.explainSelection", () =>
      panel.explainSelection(vscode.window.activeTextEditor),
    ),
    vscode.commands.registerCommand("qwen.explainHere", () => panel.explainSelection(vscode.window.activeTextEditor)),
    vscode.commands.registerCommand("qwen.fixHere", () => fixAtCursor(client, vscode.window.activeTextEditor)),
    vscode.commands.registerCommand("qwen.installServer", install),
    vscode.commands.registerCommand("qwen.showLog", () => log.show()),
    vscode.commands.registerCommand("qwen.restart", restart),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration("qwen")) {
        return;
      }
      if (settings.needsRestart(event)) {
        await restart();
      } else if (client?.isRunning()) {
        await client.sendNotification(DidChangeConfigurationNotification.type, {
          settings: { qwen: settings.serverSettings() },
        });
      }
    }),
  );
  await start();
}

export async function deactivate(): Promise<void> {
  await client?.dispose();
}
