import { strict as assert } from "assert";
import { test } from "node:test";
import { statusView } from "../src/statusText";

test("states map to icons, tooltip carries model and message", () => {
  const view = statusView({ state: "loading", message: "loading default", model: "default" }, true);
  assert.equal(view.text, "$(sync~spin) Qwen");
  assert.equal(view.tooltip, "qwen-lsp: loading\nmodel: default\nloading default");
  assert.equal(statusView({ state: "error", message: "no file" }, true).error, true);
  assert.equal(statusView({ state: "ready" }, false).text, "$(circle-slash) Qwen");
});
