/** The server's settings (section `qwenLsp`) taken from the extension's configuration. */

/** Keys the server knows; the others (serverPath, serverArgs) are for the extension only. */
export const SERVER_KEYS = ["model", "contextBudget", "maxTokens", "timeBudgetMs", "debounceMs", "candidates",
  "enable", "logLevel"] as const;

export type ServerSettings = Partial<Record<(typeof SERVER_KEYS)[number], unknown>>;

/** Only the server's keys of `get` (the values the user set), skipping unset ones. */
export function serverSettings(get: (key: string) => unknown): ServerSettings {
  const settings: ServerSettings = {};
  for (const key of SERVER_KEYS) {
    const value = get(key);
    if (value !== undefined && value !== null) {
      settings[key] = value;
    }
  }
  return settings;
}

/** The `enable` map after toggling completion for every language. */
export function toggledEnable(enable: Record<string, boolean> | undefined): Record<string, boolean> {
  const on = (enable ?? {})["*"] ?? true;
  return { ...(enable ?? {}), "*": !on };
}
