import { strict as assert } from "assert";
import * as path from "path";
import { test } from "node:test";
import { resolveServer, type Lookup } from "../src/serverCommand";

function lookup(executables: string[], extra: Partial<Lookup> = {}): Lookup {
  return { pathDirs: ["/usr/bin"], pythonInterpreter: "", activeEnv: "", isExecutable: (f) => executables.includes(f), ...extra };
}

test("the setting wins, with serve for qwen-lsp and -m for a Python", () => {
  assert.deepEqual(resolveServer("/opt/qwen-lsp", [], lookup([])), { command: "/opt/qwen-lsp", args: ["serve"] });
  assert.deepEqual(resolveServer("/venv/bin/python3", [], lookup([])),
    { command: "/venv/bin/python3", args: ["-m", "qwen_lsp.server"] });
  assert.deepEqual(resolveServer("/x/run", ["--model", "m"], lookup([])), { command: "/x/run", args: ["--model", "m"] });
});

test("the active Python environment comes before PATH", () => {
  const env = lookup(["/venv/bin/qwen-lsp", "/usr/bin/qwen-lsp"], { activeEnv: "/venv" });
  assert.deepEqual(resolveServer("", [], env), { command: path.join("/venv/bin", "qwen-lsp"), args: ["serve"] });
  assert.deepEqual(resolveServer("", [], lookup(["/usr/bin/qwen-lsp"])), { command: "/usr/bin/qwen-lsp", args: ["serve"] });
});

test("an environment without the script runs the module with its Python", () => {
  const env = lookup(["/proj/.venv/bin/python"], { pythonInterpreter: "/proj/.venv/bin/python" });
  assert.deepEqual(resolveServer("", ["--log-level", "debug"], env),
    { command: "/proj/.venv/bin/python", args: ["-m", "qwen_lsp.server", "--log-level", "debug"] });
});

test("nothing found", () => {
  assert.equal(resolveServer("", [], lookup([])), undefined);
});
