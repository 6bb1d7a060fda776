# Shared settings for the scripts: sourced, never run. Pins live here so every script agrees.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENVOY_VERSION="1.40.0"
# The HTTP/2 client the e2e suite uses for h2c requests with trailers (Python, in .venv).
H2_VERSION="4.1.0"
WASM_BINDGEN_VERSION="0.2.130"
VENV="$ROOT/.venv"
TOOLS="$ROOT/.tools"
ENVOY_BIN="$VENV/bin/envoy"
WASM_BINDGEN_RUNNER="$TOOLS/bin/wasm-bindgen-test-runner"
# A wasm32-wasip1 command module (a test binary, the core benchmark) under Node's WASI.
WASI_RUNNER="node --experimental-wasi-unstable-preview1 --no-warnings $ROOT/scripts/run-wasi.mjs"
WASM_OUT="$ROOT/target/wasm32-wasip1/release/keygate.wasm"
# binaryen's wasm-opt as the npm package's JS/wasm build (runs on Node; no prebuilt binary to fetch).
BINARYEN_VERSION="132.0.0"
WASM_OPT="$TOOLS/node_modules/.bin/wasm-opt"
export PATH="$TOOLS/bin:$HOME/.cargo/bin:$PATH"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31mxx> %s\033[0m\n' "$*" >&2; exit 1; }

# Ports (docs/architecture.md, "Ports"); every script honours these overrides.
: "${KEYGATE_PORT:=10000}" "${KEYGATE_FLOOR_PORT:=10001}" "${KEYGATE_ADMIN_PORT:=9901}"
: "${KEYGATE_UPSTREAM_PORT:=18080}" "${KEYGATE_SF_PORT:=18081}" "${KEYGATE_QLM_PORT:=18082}"
# scripts/run's etcd with KEYGATE_LEDGER=etcd: client port, and peer port (client + 1).
: "${KEYGATE_ETCD_PORT:=2379}"
WEBHOOK_PATH="/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler"

# The credentials the stand-ins accept (docs/architecture.md) and the demo's inbound secret,
# exported for Envoy's host_env_keys. The e2e harness uses the same values (e2e/src/lib.rs).
export_standin_secrets() {
  export KEYGATE_HOOK_USER="${KEYGATE_HOOK_USER:-keygate-hook}"
  export KEYGATE_HOOK_PASSWORD="${KEYGATE_HOOK_PASSWORD:-standin-hook-password}"
  export KEYGATE_SF_CLIENT_ID="${KEYGATE_SF_CLIENT_ID:-standin-client-id}"
  export KEYGATE_SF_CLIENT_SECRET="${KEYGATE_SF_CLIENT_SECRET:-standin-client-secret}"
  export KEYGATE_SF_USERNAME="${KEYGATE_SF_USERNAME:-integration@example.com}"
  export KEYGATE_SF_PASSWORD="${KEYGATE_SF_PASSWORD:-standin-passwordTOKEN}"
  export KEYGATE_QLM_USER="${KEYGATE_QLM_USER:-keygate}"
  export KEYGATE_QLM_PASSWORD="${KEYGATE_QLM_PASSWORD:-standin-qlm-password}"
  export KEYGATE_QLM_API_KEY="${KEYGATE_QLM_API_KEY:-standin-qlm-api-key}"
  export KEYGATE_KEYGEN_TOKEN="${KEYGATE_KEYGEN_TOKEN:-standin-keygen-token}"
}

# The webhook as Salesforce calls it in QLM's setup (secret as is_user/is_pwd query parameters).
webhook_url() {
  echo "http://127.0.0.1:$KEYGATE_PORT$WEBHOOK_PATH?is_vendor=salesforce&is_user=$KEYGATE_HOOK_USER&is_pwd=$KEYGATE_HOOK_PASSWORD"
}

# render_envoy_config OUT [WASM]: host-config/envoy.local.yaml with the ports above and an absolute
# wasm path (default: KEYGATE_WASM if set, to try another build, else WASM_OUT). The e2e crate's
# render-envoy-config does it: the same function the e2e harness and the benchmark use.
render_envoy_config() {
  local out="$1" wasm="${2:-${KEYGATE_WASM:-$WASM_OUT}}"
  (cd "$ROOT" && cargo run --quiet --release -p keygate-e2e --bin render-envoy-config -- "$out" "$wasm") &&
    [ -s "$out" ]
}

# wasm_opt IN OUT: binaryen `wasm-opt -Oz` from IN to OUT (written atomically). Skipped when OUT is
# already the optimisation of exactly these IN bytes (OUT.stamp holds both hashes). The module
# loses its target_features section, so the features rustc's wasm32 targets emit by default
# are named here; should rustc start emitting another, validation fails loudly instead of silently.
WASM_OPT_FEATURES=(--enable-bulk-memory --enable-bulk-memory-opt --enable-nontrapping-float-to-int
  --enable-sign-ext --enable-mutable-globals --enable-multivalue --enable-reference-types)
wasm_opt() {
  local in="$1" out="$2" h_in
  # The two metadata sections (tool versions, feature list) are read by no host.
  local flags=(-Oz --strip-producers --strip-target-features
    "${WASM_OPT_FEATURES[@]}")
  # The stamp names the flags too: changing them re-optimises.
  h_in="$(sha256sum <"$in" | cut -d' ' -f1) $BINARYEN_VERSION ${flags[*]}"
  if [ -f "$out" ] && [ -f "$out.stamp" ] &&
    [ "$(cat "$out.stamp")" = "$h_in $(sha256sum <"$out" | cut -d' ' -f1)" ]; then
    return 0
  fi
  say "wasm-opt -Oz $(basename "$in") (binaryen $BINARYEN_VERSION)"
  "$WASM_OPT" "${flags[@]}" "$in" -o "$out.tmp" || { rm -f "$out.tmp"; return 1; }
  mv -f "$out.tmp" "$out"
  echo "$h_in $(sha256sum <"$out" | cut -d' ' -f1)" >"$out.stamp"
}

# wait_http URL [SECONDS]: until URL answers 200 (default 10 s).
wait_http() {
  local url="$1" deadline=$((SECONDS + ${2:-10}))
  until [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$url" 2>/dev/null)" = 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}
