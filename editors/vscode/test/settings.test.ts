import { strict as assert } from "assert";
import { test } from "node:test";
import { SERVER_KEYS, serverSettings, toggledEnable } from "../src/settings";

test("only the server's keys are sent, unset ones left out", () => {
  const config: Record<string, unknown> = { model: "default", maxTokens: 32, serverPath: "/x", enable: { "*": true } };
  assert.deepEqual(serverSettings((k) => config[k]), { model: "default", maxTokens: 32, enable: { "*": true } });
});

test("the server's keys match package.json's contributed settings", () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const manifest = require("../../package.json");
  const contributed = Object.keys(manifest.contributes.configuration.properties).map((k: string) => k.slice("qwenLsp.".length));
  assert.deepEqual([...SERVER_KEYS].sort(), contributed.filter((k: string) => !k.startsWith("server")).sort());
});

test("toggle flips the default and keeps per-language entries", () => {
  assert.deepEqual(toggledEnable(undefined), { "*": false });
  assert.deepEqual(toggledEnable({ "*": false, markdown: false }), { "*": true, markdown: false });
});
