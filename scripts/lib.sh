# Shared settings for the scripts: sourced, never run. Pins live here so every script agrees.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENVOY_VERSION="1.40.0"
WASM_BINDGEN_VERSION="0.2.130"
VENV="$ROOT/.venv"
TOOLS="$ROOT/.tools"
ENVOY_BIN="$VENV/bin/envoy"
WASM_BINDGEN_RUNNER="$TOOLS/bin/wasm-bindgen-test-runner"
WASM_OUT="$ROOT/target/wasm32-wasip1/release/keygate.wasm"
export PATH="$TOOLS/bin:$HOME/.cargo/bin:$PATH"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
