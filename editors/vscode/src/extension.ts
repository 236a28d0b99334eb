/** Starts qwen-lsp over stdio, keeps its settings in sync, and shows its status. */
import * as vscode from "vscode";
import { LanguageClient, type LanguageClientOptions } from "vscode-languageclient/node";
import { registerCommands } from "./commands";
import { resolveServer, systemLookup } from "./serverCommand";
import { serverSettings } from "./settings";
import { statusView, type Status } from "./statusText";

const SECTION = "qwenLsp";
let client: LanguageClient | undefined;

/** The server settings the user set (so the server's own defaults and command line apply otherwise). */
function settings() {
  const config = vscode.workspace.getConfiguration(SECTION);
  return serverSettings((key) => {
    const value = config.inspect(key);
    return value?.workspaceFolderValue ?? value?.workspaceValue ?? value?.globalValue;
  });
}

function enabled(): boolean {
  return vscode.workspace.getConfiguration(SECTION).get<Record<string, boolean>>("enable")?.["*"] ?? true;
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const interpreter = vscode.workspace.getConfiguration("python").get<string>("defaultInterpreterPath") ?? "";
  const server = resolveServer(config.get<string>("serverPath") ?? "", config.get<string[]>("serverArgs") ?? [],
    systemLookup(interpreter === "python" ? "" : interpreter));
  if (!server) {
    void vscode.window.showErrorMessage(
      "qwen-lsp: server not found. `pip install qwen-lsp` in the active Python environment, or set qwenLsp.serverPath.");
    return;
  }

  const item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  item.command = "qwenLsp.openLog";
  let last: Status = { state: "starting" };
  const show = () => {
    const view = statusView(last, enabled());
    item.text = view.text;
    item.tooltip = view.tooltip;
    item.backgroundColor = view.error ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  };
  show();
  item.show();

  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    initializationOptions: settings(),
    outputChannelName: "Qwen LSP",
    middleware: {
      workspace: {
        configuration: (params, token, next) =>
          params.items.every((i) => i.section === SECTION) ? params.items.map(() => settings()) : next(params, token),
      },
    },
  };
  client = new LanguageClient("qwenLsp", "Qwen LSP", { command: server.command, args: server.args }, clientOptions);
  context.subscriptions.push(item, ...registerCommands(client),
    client.onNotification("qwenLsp/status", (status: Status) => {
      last = status;
      show();
    }),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration(SECTION)) {
        show();
        void client?.sendNotification("workspace/didChangeConfiguration", { settings: { [SECTION]: settings() } });
      }
    }));
  await client.start();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
