// Runs a wasm32-wasip1 command module under Node's WASI:
//   node --experimental-wasi-unstable-preview1 --no-warnings bench/core/run-wasm.mjs MODULE.wasm [ARGS...]
// The bench module links the host-free core only, so WASI is all it may import: a module that
// wants anything else (a proxy-wasm hostcall, say) fails to instantiate here, by name.
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
const foreign = WebAssembly.Module.imports(module).filter((i) => i.module !== "wasi_snapshot_preview1");
if (foreign.length > 0) {
  console.error(`${path} imports more than WASI: ${foreign.map((i) => `${i.module}.${i.name}`).join(", ")}`);
  exit(2);
}
const instance = await WebAssembly.instantiate(module, { wasi_snapshot_preview1: wasi.wasiImport });
exit(wasi.start(instance) ?? 0);
