// Runs a wasm32-wasip1 command module under Node's WASI:
//   node --experimental-wasi-unstable-preview1 --no-warnings bench/core/run-wasm.mjs MODULE.wasm [ARGS...]
// The bench module links the plugin crate, whose proxy-wasm shell may leave `env.proxy_*` imports
// and an `_initialize` export in it; the imports get stubs that trap if ever called (the core never
// calls them), and only `_start` is handed to WASI (Node refuses a module exporting both).
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv, env, exit } from "node:process";

const [path, ...args] = argv.slice(2);
if (!path) {
  console.error("usage: run-wasm.mjs MODULE.wasm [ARGS...]");
  exit(2);
}
const wasi = new WASI({ version: "preview1", args: [path, ...args], env, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(path));
const imports = { wasi_snapshot_preview1: wasi.wasiImport };
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module === "wasi_snapshot_preview1" || imp.kind !== "function") continue;
  imports[imp.module] ??= {};
  imports[imp.module][imp.name] = () => {
    throw new Error(`host function ${imp.module}.${imp.name} called by the bench module`);
  };
}
const instance = await WebAssembly.instantiate(module, imports);
const { memory, _start } = instance.exports;
exit(wasi.start({ exports: { memory, _start } }) ?? 0);
