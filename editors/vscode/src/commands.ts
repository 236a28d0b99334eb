/** The extension's commands: toggle, pick a model, trigger, show the last prompt, open the log. */
import * as vscode from "vscode";
import type { LanguageClient } from "vscode-languageclient/node";
import { toggledEnable } from "./settings";

const SECTION = "qwenLsp";

async function toggle(): Promise<void> {
  const config = vscode.workspace.getConfiguration(SECTION);
  await config.update("enable", toggledEnable(config.get<Record<string, boolean>>("enable")),
    vscode.ConfigurationTarget.Global);
}

async function pickModel(): Promise<void> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const browse = "$(folder) Browse for a .gguf file…";
  const enter = "$(edit) Enter a model name or path…";
  const picked = await vscode.window.showQuickPick(["default", browse, enter],
    { placeHolder: `Current model: ${config.get<string>("model")}` });
  let model: string | undefined = picked;
  if (picked === browse) {
    const files = await vscode.window.showOpenDialog({ filters: { "GGUF model": ["gguf"] }, canSelectMany: false });
    model = files?.[0]?.fsPath;
  } else if (picked === enter) {
    model = await vscode.window.showInputBox({ prompt: "Model name, .gguf path or Hugging Face model directory" });
  }
  if (model) {
    await config.update("model", model, vscode.ConfigurationTarget.Global);
  }
}

async function showLastPrompt(client: LanguageClient): Promise<void> {
  const result = await client.sendRequest<{ prompt: string }>("qwenLsp/lastPrompt", {});
  const doc = await vscode.workspace.openTextDocument({ content: result.prompt || "(no prompt yet)" });
  await vscode.window.showTextDocument(doc, { preview: true });
}

export function registerCommands(client: LanguageClient): vscode.Disposable[] {
  return [
    vscode.commands.registerCommand("qwenLsp.toggle", toggle),
    vscode.commands.registerCommand("qwenLsp.pickModel", pickModel),
    vscode.commands.registerCommand("qwenLsp.trigger",
      () => vscode.commands.executeCommand("editor.action.inlineSuggest.trigger")),
    vscode.commands.registerCommand("qwenLsp.showLastPrompt", () => showLastPrompt(client)),
    vscode.commands.registerCommand("qwenLsp.openLog", () => client.outputChannel.show(true)),
  ];
}
