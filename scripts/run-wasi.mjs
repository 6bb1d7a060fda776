// Runs a wasm32-wasip1 command module under Node's WASI:
//   node --experimental-wasi-unstable-preview1 --no-warnings scripts/run-wasi.mjs MODULE.wasm [ARGS...]
// Two users: the core's benchmark (bench/core, through scripts/bench) and the core's tests on the
// target that ships (scripts/test sets it as cargo's runner for wasm32-wasip1). The repository is
// the one directory the module may read, at its own absolute path, so tests that read testdata/
// by `CARGO_MANIFEST_DIR` find it. The modules link the host-free core only, so WASI is all they
// may import: a module that wants anything else (a proxy-wasm hostcall, say) fails to
// instantiate here, by name.
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv, env, exit } from "node:process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const [path, ...args] = argv.slice(2);
if (!path) {
  console.error("usage: run-wasi.mjs MODULE.wasm [ARGS...]");
  exit(2);
}
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const wasi = new WASI({
  version: "preview1",
  args: [path, ...args],
  env,
  preopens: { [repo]: repo },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(path));
const foreign = WebAssembly.Module.imports(module).filter((i) => i.module !== "wasi_snapshot_preview1");
if (foreign.length > 0) {
  console.error(`${path} imports more than WASI: ${foreign.map((i) => `${i.module}.${i.name}`).join(", ")}`);
  exit(2);
}
const instance = await WebAssembly.instantiate(module, { wasi_snapshot_preview1: wasi.wasiImport });
exit(wasi.start(instance) ?? 0);
