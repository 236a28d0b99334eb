/** What the status bar item shows for a `qwenLsp/status` notification. */

export interface Status {
  state?: string;
  message?: string;
  model?: string | null;
}

export interface StatusView {
  text: string;
  tooltip: string;
  error: boolean;
}

const ICONS: Record<string, string> = {
  loading: "$(sync~spin)",
  ready: "$(check)",
  generating: "$(loading~spin)",
  error: "$(error)",
  disabled: "$(circle-slash)",
};

export function statusView(status: Status, enabled: boolean): StatusView {
  const state = enabled ? status.state ?? "starting" : "disabled";
  const icon = ICONS[state] ?? "$(circle-outline)";
  const lines = [`qwen-lsp: ${state}`];
  if (status.model) {
    lines.push(`model: ${status.model}`);
  }
  if (status.message) {
    lines.push(status.message);
  }
  return { text: `${icon} Qwen`, tooltip: lines.join("\n"), error: state === "error" };
}
