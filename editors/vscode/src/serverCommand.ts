/** Finding the command that starts the server: the setting, `qwen-lsp` on PATH, or the active Python environment. */
import * as fs from "fs";
import * as path from "path";

export interface ServerCommand {
  command: string;
  args: string[];
}

export interface Lookup {
  /** PATH-like directory list. */
  pathDirs: string[];
  /** Interpreter chosen for the workspace (python.defaultInterpreterPath), or "". */
  pythonInterpreter: string;
  /** VIRTUAL_ENV or CONDA_PREFIX, or "". */
  activeEnv: string;
  isExecutable: (file: string) => boolean;
}

const EXE = process.platform === "win32" ? ".exe" : "";
const BIN = process.platform === "win32" ? "Scripts" : "bin";

/** The server command for the settings `serverPath` and `serverArgs`, or undefined when none is found. */
export function resolveServer(serverPath: string, serverArgs: string[], lookup: Lookup): ServerCommand | undefined {
  if (serverPath) {
    return { command: serverPath, args: serverArgs.length ? serverArgs : defaultArgs(serverPath) };
  }
  const envDirs = [lookup.pythonInterpreter && path.dirname(lookup.pythonInterpreter),
    lookup.activeEnv && path.join(lookup.activeEnv, BIN)].filter((d): d is string => !!d);
  for (const dir of [...envDirs, ...lookup.pathDirs]) {
    const candidate = path.join(dir, "qwen-lsp" + EXE);
    if (lookup.isExecutable(candidate)) {
      return { command: candidate, args: ["serve", ...serverArgs] };
    }
  }
  for (const dir of envDirs) {
    const python = path.join(dir, "python" + EXE);
    if (lookup.isExecutable(python)) {
      return { command: python, args: ["-m", "qwen_lsp.server", ...serverArgs] };
    }
  }
  return undefined;
}

/** `serve` for a `qwen-lsp` executable, `-m qwen_lsp.server` for a Python interpreter. */
function defaultArgs(serverPath: string): string[] {
  const name = path.basename(serverPath).toLowerCase();
  return name.startsWith("python") ? ["-m", "qwen_lsp.server"] : ["serve"];
}

/** The lookup of this process: its PATH and environment, and the file system. */
export function systemLookup(pythonInterpreter: string): Lookup {
  return {
    pathDirs: (process.env.PATH ?? "").split(path.delimiter).filter(Boolean),
    pythonInterpreter,
    activeEnv: process.env.VIRTUAL_ENV ?? process.env.CONDA_PREFIX ?? "",
    isExecutable: (file) => {
      try {
        fs.accessSync(file, fs.constants.X_OK);
        return fs.statSync(file).isFile();
      } catch {
        return false;
      }
    },
  };
}
