//! `Gateway`: stand-ins in-process + a real Envoy loading the built keygate.wasm, on free ports.

use crate::envoy::{self, Ports};
use crate::http::{self, Response};
use crate::{repo_root, HOOK_PASSWORD, HOOK_USER, SECRET_ENV, WEBHOOK_PATH};
use keygate_standins::{Standins, StandinsConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long Envoy gets to report `/ready` (it takes ~200 ms with the wasm filter).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to change for one test. `GatewayOptions::default()` is the demo configuration.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// Envoy worker threads (`--concurrency`); 2 as in the demo, so shared data really is shared.
    pub concurrency: u32,
    /// JSON merge patches (RFC 7386) applied in turn to the plugin JSON of envoy.local.yaml:
    /// objects merge, `null` removes a key, anything else replaces.
    pub patches: Vec<Value>,
    /// Extra environment for Envoy: `Some` sets (overriding the stand-in secrets), `None` removes.
    pub env: Vec<(String, Option<String>)>,
    /// Stand-ins settings; keep the default (ephemeral loopback) listen addresses.
    pub standins: StandinsConfig,
    /// More listeners (YAML list items, indented as under `static_resources.listeners`), e.g.
    /// the benchmark's minimal filter beside the plugin.
    pub extra_listeners: Vec<String>,
    /// How the wasm filter is configured: as envoy.local.yaml ships it, or as Istio and Envoy
    /// Gateway generate it. Default from `KEYGATE_E2E_HEADERS` (`hold` or `forward`).
    pub headers: HeadersMode,
    /// Load the module over HTTP from this loopback port, checked against this sha256, instead of
    /// from the local file.
    pub remote_code: Option<(u16, String)>,
    /// A whole plugin configuration in place of envoy.local.yaml's (then `patches` apply), e.g.
    /// one taken from a control-plane resource.
    pub plugin_config: Option<Value>,
    /// Put the ledger on etcd: the client ports of its members (`envoy::with_etcd_cluster`).
    pub etcd: Option<Vec<u16>>,
    /// Log every gateway request with envoy.production.yaml's access log (to Envoy's stdout,
    /// so into `envoy_log`): `envoy::with_production_access_log`.
    pub access_log: bool,
    /// The license cluster's circuit breakers at this many requests (and pending requests)
    /// instead of the shipped 16: `envoy::with_license_breakers`.
    pub license_breakers: Option<u32>,
    /// The module to load instead of [`wasm_path`]'s (the benchmark's `--wasm`, to compare two
    /// builds in one run).
    pub wasm: Option<PathBuf>,
}

/// Whether the filter may pause a request at its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadersMode {
    /// `allow_on_headers_stop_iteration: true` and the plugin's `hold_request_headers: true`:
    /// the route's upstream never sees a webhook request.
    Hold,
    /// Neither (Istio's WasmPlugin, Envoy Gateway): the head goes on to the upstream without
    /// query or secret header, the body never does.
    Forward,
}

impl HeadersMode {
    /// From `KEYGATE_E2E_HEADERS`; `hold` when unset.
    pub fn from_env() -> HeadersMode {
        match std::env::var("KEYGATE_E2E_HEADERS").as_deref() {
            Ok("forward") => HeadersMode::Forward,
            _ => HeadersMode::Hold,
        }
    }
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            concurrency: 2,
            patches: Vec::new(),
            env: Vec::new(),
            standins: StandinsConfig::default(),
            extra_listeners: Vec::new(),
            headers: HeadersMode::from_env(),
            remote_code: None,
            plugin_config: None,
            etcd: None,
            access_log: false,
            license_breakers: None,
            wasm: None,
        }
    }
}

impl GatewayOptions {
    /// Adds a merge patch over the plugin configuration, applied after the ones before it.
    pub fn patch(mut self, patch: Value) -> Self {
        self.patches.push(patch);
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), Some(value.to_string())));
        self
    }
    pub fn unset_env(mut self, key: &str) -> Self {
        self.env.push((key.to_string(), None));
        self
    }
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }
    /// The gateway listener writes envoy.production.yaml's access log into `envoy_log`.
    pub fn access_log(mut self) -> Self {
        self.access_log = true;
        self
    }
    /// At most `n` license calls in flight through Envoy; more are refused by Envoy (overflow).
    pub fn license_breakers(mut self, n: u32) -> Self {
        self.license_breakers = Some(n);
        self
    }
    /// The ledger on the etcd members listening on `client_ports`.
    pub fn etcd(mut self, client_ports: &[u16]) -> Self {
        self.etcd = Some(client_ports.to_vec());
        self
    }
}

/// A running gateway. Envoy is stopped (and its temp dir removed, unless the test failed) on drop.
pub struct Gateway {
    /// Shared with its replicas (`Gateway::replica`): one Salesforce and license server for all.
    pub standins: Arc<Standins>,
    /// The wasm-filtered listener, the no-plugin floor listener, Envoy's admin.
    pub gateway_addr: SocketAddr,
    pub floor_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The plugin configuration Envoy was given (after the patch).
    pub plugin_config: Value,
    envoy: Child,
    base_id: u32,
    dir: PathBuf,
    options: GatewayOptions,
}

impl Gateway {
    /// Starts everything; panics with Envoy's log tail when Envoy does not become ready.
    pub fn start(options: GatewayOptions) -> Gateway {
        Gateway::try_start(options).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `start`, but a configuration Envoy (or the plugin) refuses is an `Err` with the log tail.
    pub fn try_start(options: GatewayOptions) -> Result<Gateway, String> {
        // Free ports are found by binding port 0 and letting go; another process can take one
        // before Envoy binds it. That race is retried with fresh ports, nothing else is.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Gateway::start_once(options.clone(), None) {
                Err(e) if attempt < 4 && e.contains("Address already in use") => continue,
                other => return other,
            }
        }
    }

    /// Another Envoy with the same configuration in front of the same stand-ins: a fleet member
    /// (with `GatewayOptions::etcd`, they share the ledger too).
    pub fn replica(&self) -> Gateway {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Gateway::start_once(self.options.clone(), Some(Arc::clone(&self.standins))) {
                Err(e) if attempt < 4 && e.contains("Address already in use") => continue,
                other => return other.unwrap_or_else(|e| panic!("{e}")),
            }
        }
    }

    fn start_once(
        options: GatewayOptions,
        standins: Option<Arc<Standins>>,
    ) -> Result<Gateway, String> {
        let root = repo_root();
        let envoy_bin = root.join(".venv/bin/envoy");
        if !envoy_bin.exists() {
            return Err(format!(
                "{} is missing: run scripts/setup",
                envoy_bin.display()
            ));
        }
        let wasm = options.wasm.clone().unwrap_or_else(wasm_path);
        if !wasm.exists() {
            return Err(format!("{} is missing: run scripts/build", wasm.display()));
        }

        let standins = match standins {
            Some(s) => s,
            None => Arc::new(
                Standins::start(options.standins.clone())
                    .map_err(|e| format!("starting the stand-ins: {e}"))?,
            ),
        };
        let ports = Ports {
            gateway: free_port(),
            floor: free_port(),
            admin: free_port(),
            upstream: standins.upstream_addr().port(),
            salesforce: standins.salesforce_addr().port(),
            license: standins.license_addr().port(),
        };

        let template = fs::read_to_string(root.join("host-config/envoy.local.yaml"))
            .map_err(|e| format!("reading host-config/envoy.local.yaml: {e}"))?;
        let mut plugin_config = options
            .plugin_config
            .clone()
            .unwrap_or_else(|| envoy::plugin_config(&template));
        if options.headers == HeadersMode::Forward {
            envoy::merge_patch(
                &mut plugin_config,
                &serde_json::json!({"hold_request_headers": null}),
            );
        }
        for patch in &options.patches {
            envoy::merge_patch(&mut plugin_config, patch);
        }
        if let Some(ports) = &options.etcd {
            envoy::merge_patch(&mut plugin_config, &envoy::etcd_ledger_patch(ports));
        }
        let mut yaml = envoy::render_envoy_config(
            &envoy::with_plugin_config(&template, &plugin_config),
            &ports,
            &wasm,
        );
        if options.headers == HeadersMode::Forward {
            // As the control planes generate it: the field absent (Envoy's default, false).
            let kept: Vec<&str> = yaml
                .lines()
                .filter(|l| l.trim() != "allow_on_headers_stop_iteration: true")
                .collect();
            yaml = kept.join("\n") + "\n";
        }
        if let Some(ports) = &options.etcd {
            yaml = envoy::with_etcd_cluster(&yaml, ports);
        }
        if let Some((port, sha256)) = &options.remote_code {
            yaml = envoy::with_remote_code(&yaml, *port, sha256);
        }
        if let Some(n) = options.license_breakers {
            yaml = envoy::with_license_breakers(&yaml, n)?;
        }
        if options.access_log {
            let production = fs::read_to_string(root.join("host-config/envoy.production.yaml"))
                .map_err(|e| format!("reading host-config/envoy.production.yaml: {e}"))?;
            yaml = envoy::with_production_access_log(&yaml, &production)?;
        }
        for listener in &options.extra_listeners {
            yaml = yaml.replacen("  listeners:\n", &format!("  listeners:\n{listener}"), 1);
        }

        let base_id = unique_base_id();
        let dir = std::env::temp_dir().join(format!("keygate-e2e-{base_id}"));
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let config_path = dir.join("envoy.yaml");
        fs::write(&config_path, yaml)
            .map_err(|e| format!("writing {}: {e}", config_path.display()))?;
        let envoy = spawn_envoy(&dir, &options, base_id)?;

        let gateway = Gateway {
            standins,
            gateway_addr: loopback(ports.gateway),
            floor_addr: loopback(ports.floor),
            admin_addr: loopback(ports.admin),
            plugin_config,
            envoy,
            base_id,
            dir,
            options,
        };
        gateway.wait_ready()
    }

    /// The requests the route's upstream (the stand-ins' echo) received. A head whose body never
    /// came does not count in `Forward` mode, where the plugin lets heads through and holds every
    /// body (foundation.rs `the_route_upstream_never_receives_a_webhook_body` checks those heads);
    /// in `Hold` mode it counts like any request.
    pub fn upstream_received(&self) -> Vec<keygate_standins::RecordedRequest> {
        let forward = self.headers_mode() == HeadersMode::Forward;
        self.standins
            .record()
            .into_iter()
            .filter(|r| r.service == "upstream")
            .filter(|r| !(forward && r.body == keygate_standins::TRUNCATED_BODY))
            .collect()
    }

    /// How this gateway's wasm filter treats request headers.
    pub fn headers_mode(&self) -> HeadersMode {
        self.options.headers
    }

    /// Stops Envoy and starts it again on the same ports, configuration and stand-ins: a deploy.
    /// Shared data (the plugin's ledger and token) is gone; Salesforce and the license server
    /// keep what they hold.
    pub fn restart_envoy(self) -> Gateway {
        let mut gw = self;
        gw.stop_envoy();
        gw.base_id = unique_base_id();
        match spawn_envoy(&gw.dir, &gw.options, gw.base_id) {
            Ok(envoy) => gw.envoy = envoy,
            Err(e) => panic!("{e}"),
        }
        gw.wait_ready().unwrap_or_else(|e| panic!("{e}"))
    }

    fn stop_envoy(&mut self) {
        // SIGTERM first so Envoy exits cleanly; SIGKILL if it lingers.
        let _ = Command::new("kill")
            .arg(self.envoy.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(self.envoy.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.envoy.kill();
        let _ = self.envoy.wait();
        // Envoy leaves its hot-restart shared memory behind (named after base id and epoch 0).
        let _ = fs::remove_file(format!(
            "/dev/shm/envoy_shared_memory_{}",
            self.base_id * 10
        ));
    }

    fn wait_ready(mut self) -> Result<Gateway, String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.envoy.try_wait() {
                return Err(format!(
                    "Envoy exited ({status}) before ready:\n{}",
                    self.log_tail(40)
                ));
            }
            let ready = http::request(
                self.admin_addr,
                "GET",
                "/ready",
                &[],
                b"",
                Duration::from_secs(1),
            );
            if ready.is_ok_and(|r| r.status == 200) {
                return Ok(self);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Any request to the gateway listener (30 s overall timeout; panics on I/O errors).
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.request_with_timeout(method, path_and_query, headers, body, http::DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{method} {path_and_query}: {e}\n{}", self.log_tail(20)))
    }

    /// Like `request`, with its own overall timeout and I/O errors (reset, timeout) as `Err`.
    pub fn request_with_timeout(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> std::io::Result<Response> {
        http::request(
            self.gateway_addr,
            method,
            path_and_query,
            headers,
            body,
            timeout,
        )
    }

    pub fn get(&self, path_and_query: &str) -> Response {
        self.request("GET", path_and_query, &[], b"")
    }

    /// POST as Salesforce sends an Outbound Message (`text/xml; charset=utf-8`, empty SOAPAction).
    pub fn post_soap(&self, path_and_query: &str, body: impl AsRef<[u8]>) -> Response {
        let headers = [
            ("Content-Type", "text/xml; charset=utf-8"),
            ("SOAPAction", "\"\""),
        ];
        self.request("POST", path_and_query, &headers, body.as_ref())
    }

    /// `post_soap` to the webhook with the right shared secret in the query (QLM's form).
    pub fn post_webhook(&self, body: impl AsRef<[u8]>) -> Response {
        self.post_soap(&webhook_path_with_secret(), body)
    }

    /// GET on Envoy's admin listener.
    pub fn admin_get(&self, path_and_query: &str) -> Response {
        http::request(
            self.admin_addr,
            "GET",
            path_and_query,
            &[],
            b"",
            http::DEFAULT_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("admin {path_and_query}: {e}"))
    }

    /// The plugin's own metrics (`wasmcustom.*` in Envoy's /stats), keyed without the prefix.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let text = self.admin_get("/stats?filter=^wasmcustom%5C.").text();
        text.lines()
            .filter_map(|line| line.strip_prefix("wasmcustom."))
            .filter_map(|line| line.split_once(": "))
            .filter_map(|(name, value)| Some((name.to_string(), value.trim().parse().ok()?)))
            .collect()
    }

    /// One plugin metric; 0 when the plugin has not defined it (yet).
    pub fn counter(&self, name: &str) -> u64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    /// Everything Envoy wrote to stdout/stderr so far (plugin logs at info and above).
    pub fn envoy_log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// Names of the secret variables (passwords, client secret) whose values appear in Envoy's
    /// log; user names and client ids are not secret ("keygate" is everywhere in the log).
    pub fn leaked_secrets(&self) -> Vec<&'static str> {
        let log = self.envoy_log();
        SECRET_ENV
            .iter()
            .filter(|(name, _)| {
                name.ends_with("PASSWORD")
                    || name.ends_with("SECRET")
                    || name.ends_with("API_KEY")
                    || name.ends_with("TOKEN")
            })
            .filter(|(_, value)| log.contains(value))
            .map(|(name, _)| *name)
            .collect()
    }

    /// Waits up to `timeout` for `needle` in Envoy's log; whether it came.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.envoy_log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.envoy_log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The Envoy process's id (its memory, for a soak).
    pub fn envoy_pid(&self) -> u32 {
        self.envoy.id()
    }

    /// Where the rendered config and the log live (kept after a failed test).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop_envoy();
        if std::thread::panicking() {
            eprintln!(
                "keygate-e2e: Envoy config and log kept in {}",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Starts Envoy on `dir/envoy.yaml`, appending to `dir/envoy.log`.
fn spawn_envoy(dir: &Path, options: &GatewayOptions, base_id: u32) -> Result<Child, String> {
    let root = repo_root();
    let envoy_bin = root.join(".venv/bin/envoy");
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("envoy.log"))
        .map_err(|e| format!("opening envoy.log: {e}"))?;
    let mut command = Command::new(&envoy_bin);
    command
        .current_dir(&root)
        .arg("-c")
        .arg(dir.join("envoy.yaml"))
        .args(["--concurrency", &options.concurrency.to_string()])
        .args(["--base-id", &base_id.to_string()])
        .args(["--log-level", "warn", "--component-log-level", "wasm:info"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    for (key, value) in SECRET_ENV {
        command.env(key, value);
    }
    for (key, value) in &options.env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", envoy_bin.display()))
}

/// The query string Salesforce is configured with in QLM's setup: vendor, user and password.
pub fn webhook_path_with_secret() -> String {
    format!("{WEBHOOK_PATH}?is_vendor=salesforce&is_user={HOOK_USER}&is_pwd={HOOK_PASSWORD}")
}

/// The built plugin; `KEYGATE_WASM` overrides it (to try another build without copying it).
pub fn wasm_path() -> PathBuf {
    std::env::var_os("KEYGATE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(envoy::DEFAULT_WASM))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port the OS considers free now, never one this process was given before: the OS may hand
/// the same port to two `bind(0)` calls in a row (once a gateway's and its floor listener's,
/// which Envoy refused as duplicates). Envoy binds it a few ms later; another process taking it
/// meanwhile is possible but rare (`try_start` retries that).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Envoys running at once need distinct `--base-id`s (hot-restart socket and shared memory).
/// Unique per process (pid) and per gateway within it (counter).
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    100_000 + (std::process::id() % 100_000) * 64 + NEXT.fetch_add(1, Ordering::Relaxed) % 64
}
