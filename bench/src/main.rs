//! `keygate-bench`: the plugin in a real Envoy, measured against Envoy's own floor in the same
//! run, plus start-up, size and the core's throughput natively and in wasm. Prints one table and
//! writes it as JSON under `bench-results/`. Targets are reported PASS/MISS, never enforced: the
//! exit status only says whether the benchmark itself ran. Run it through `scripts/bench`, which
//! builds what it measures. Sections (README, "Benchmarks"):
//!
//! 1. floor: Envoy `direct_response` with the SOAP ack, no plugin (wrk);
//! 2. validate + ack: the plugin on a 1-notification message that needs no callout (wrk);
//! 3. full flow: 1 activated order, 1 line, token cached: query + license + write-back through
//!    the stand-ins, closed loop on one keep-alive connection, every message a new order; 3b: the
//!    minimal SDK filter making the same number of calls one after another, the same closed loop;
//! 4. scale: 10 and 100 notifications per message, both paths, with upstream calls per message;
//! 5. .wasm size and Envoy start-to-ready with and without the plugin, and with the minimal SDK
//!    filter in its place (what compiling any wasm module costs this Envoy);
//! 6. the core (SOAP parse, validate + ack, flow steps) natively and in wasm under Node;
//! 7. the ledger on etcd (a one-member cluster on loopback) against shared data: the full flow of
//!    row 3 on a fresh Envoy with each, back to back.

mod client;
mod fixtures;
mod listener;
mod report;
mod start;
mod wrk;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use keygate_e2e::{repo_root, testdata, webhook_path_with_secret, Gateway, GatewayOptions};
use keygate_standins::{EndpointStats, StandinsConfig};
use report::{median, ms, percentile, quotient, ratio, thousands, us, Row};
use serde_json::{json, Value};
use wrk::{WrkResult, WrkSettings};

const USAGE: &str = "usage: keygate-bench [--smoke] [--json PATH] [--wasm PATH] [--wasm-unopt PATH]
                     [--core-native PATH] [--core-wasm PATH] [--connections N] [--duration SECONDS]
                     [--rounds N] [--starts N] [--concurrency N] [--patch JSON]...
--wasm: the plugin module every Envoy of the run loads (default: scripts/build's output); run
the benchmark once per module, alternating, to compare two builds.
--patch: a JSON merge patch over the plugin configuration of envoy.local.yaml (repeatable), for
experiments such as --patch '{\"license_server\":{\"max_concurrency\":16}}'.
Run through scripts/bench, which builds the .wasm, the stand-ins and the core benchmarks first.";

/// How much to measure.
#[derive(Debug, Clone)]
struct Plan {
    smoke: bool,
    wrk: WrkSettings,
    /// wrk rows are run this many times, interleaved (floor, 1, 10, 100, floor, …); medians shown.
    rounds: usize,
    /// Envoy starts per configuration (with / without the plugin, interleaved); median shown.
    starts: usize,
    /// Envoy worker threads.
    concurrency: u32,
    /// Full-flow messages sent before measuring (the first one logs in).
    flow_warmup: usize,
    /// Full-flow runs: (notifications per message, messages).
    flow: [(usize, usize); 3],
}

impl Plan {
    fn full() -> Plan {
        Plan {
            smoke: false,
            wrk: WrkSettings {
                threads: 1,
                connections: 8,
                duration: Duration::from_secs(4),
            },
            // A median of at least five, rounds alternating the cases (A/B/A/B).
            rounds: 5,
            starts: 5,
            concurrency: 2,
            flow_warmup: 20,
            flow: [(1, 1000), (10, 120), (100, 24)],
        }
    }

    fn smoke() -> Plan {
        Plan {
            smoke: true,
            wrk: WrkSettings {
                duration: Duration::from_secs(1),
                ..Plan::full().wrk
            },
            rounds: 1,
            starts: 1,
            flow_warmup: 3,
            flow: [(1, 20), (10, 3), (100, 2)],
            ..Plan::full()
        }
    }

    fn orders_needed(&self) -> usize {
        self.flow_warmup + self.flow.iter().map(|(n, m)| n * m).sum::<usize>()
    }
}

struct Opts {
    plan: Plan,
    json: Option<PathBuf>,
    wasm: PathBuf,
    wasm_unopt: PathBuf,
    core_native: PathBuf,
    core_wasm: PathBuf,
    /// The minimal SDK filter that row 2 is measured against (scripts/bench builds it).
    minimal_wasm: PathBuf,
    /// Merge patches over the plugin configuration (GatewayOptions::patch).
    patches: Vec<Value>,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let root = repo_root();
    let smoke = args.iter().any(|a| a == "--smoke");
    let mut opts = Opts {
        plan: if smoke { Plan::smoke() } else { Plan::full() },
        json: None,
        wasm: keygate_e2e::wasm_path(),
        wasm_unopt: root.join("target/wasm32-wasip1/release/keygate.unopt.wasm"),
        core_native: root.join("target/release/keygate-bench-core"),
        core_wasm: root.join("target/wasm32-wasip1/release/keygate-bench-core.opt.wasm"),
        minimal_wasm: root
            .join("target/wasm32-wasip1/release/keygate_bench_minimal_filter.opt.wasm"),
        patches: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("bad number {v:?}"));
        match arg.as_str() {
            "--smoke" => {}
            "--json" => opts.json = Some(PathBuf::from(value()?)),
            "--wasm" => opts.wasm = PathBuf::from(value()?),
            "--wasm-unopt" => opts.wasm_unopt = PathBuf::from(value()?),
            "--core-native" => opts.core_native = PathBuf::from(value()?),
            "--core-wasm" => opts.core_wasm = PathBuf::from(value()?),
            "--minimal-wasm" => opts.minimal_wasm = PathBuf::from(value()?),
            "--connections" => opts.plan.wrk.connections = number(value()?)? as u32,
            "--duration" => opts.plan.wrk.duration = Duration::from_secs(number(value()?)?),
            "--rounds" => opts.plan.rounds = number(value()?)?.max(1) as usize,
            "--starts" => opts.plan.starts = number(value()?)?.max(1) as usize,
            "--concurrency" => opts.plan.concurrency = number(value()?)?.max(1) as u32,
            "--patch" => {
                let v = value()?;
                let patch = serde_json::from_str(&v).map_err(|e| format!("--patch {v:?}: {e}"))?;
                opts.patches.push(patch);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("keygate-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn say(msg: &str) {
    eprintln!("\x1b[1m--> {msg}\x1b[0m");
}

fn tool_version(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| "missing".into())
}

/// `1.40.0` out of `envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`.
fn envoy_version(envoy: &Path) -> String {
    let v = tool_version(&envoy.display().to_string(), &["--version"]);
    let release = v
        .split("version:")
        .nth(1)
        .and_then(|w| w.split('/').nth(1))
        .unwrap_or("?");
    format!("Envoy {release}")
}

/// User + system CPU time of a process (all threads), in seconds (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(opts: &Opts) -> Result<(), String> {
    let plan = &opts.plan;
    let root = repo_root();
    let envoy = start::envoy_bin();
    for (what, path) in [
        ("Envoy (scripts/setup)", &envoy),
        ("the plugin (scripts/build)", &opts.wasm),
        (
            "the native core benchmark (scripts/bench builds it)",
            &opts.core_native,
        ),
        (
            "the wasm core benchmark (scripts/bench builds it)",
            &opts.core_wasm,
        ),
        (
            "the minimal SDK filter (scripts/bench builds it)",
            &opts.minimal_wasm,
        ),
    ] {
        if !path.exists() {
            return Err(format!("{what}: {} is missing", path.display()));
        }
    }
    let wrk_version = tool_version("wrk", &["--version"]);
    if wrk_version == "missing" {
        return Err("wrk is not installed (KEYGATE_NEED_WRK=1 scripts/setup installs it)".into());
    }
    let tmp = std::env::temp_dir().join(format!("keygate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let started = Instant::now();
    let load_before = loadavg();

    let mut rows: Vec<Row> = Vec::new();
    let mut data = serde_json::Map::new();

    // 5. Size and start (first: nothing else is running yet).
    say("5. .wasm size; Envoy start-to-ready with and without the plugin, and with the minimal filter");
    let (size_rows, size_json) = size_and_start(opts, &envoy, &tmp)?;
    data.insert("size_and_start".into(), size_json);

    // 6. Core, natively and in wasm (before Envoy and the stand-ins take the CPU).
    say("6. core throughput, native and wasm (Node)");
    let (core_rows, core_json) = core(opts)?;
    data.insert("core".into(), core_json);

    // 1–4 on one Envoy with the stand-ins.
    say(&format!(
        "starting the stand-ins ({} generated orders) and Envoy ({} workers)",
        plan.orders_needed(),
        plan.concurrency
    ));
    let orders_path = tmp.join("orders.json");
    let orders = fixtures::orders_json(
        &keygate_standins::default_orders_path(),
        plan.orders_needed(),
    )?;
    std::fs::write(&orders_path, orders).map_err(|e| e.to_string())?;
    let minimal_port = start::free_port();
    let dispatch_port = start::free_port();
    let chain_port = start::free_port();
    let bare_port = start::free_port();
    let gw = Gateway::try_start(GatewayOptions {
        concurrency: plan.concurrency,
        patches: opts.patches.clone(),
        standins: StandinsConfig {
            orders_path: orders_path.clone(),
            ..StandinsConfig::default()
        },
        extra_listeners: vec![
            listener::minimal(minimal_port, &opts.minimal_wasm),
            listener::minimal_dispatch(dispatch_port, &opts.minimal_wasm, 1),
            listener::minimal_dispatch(chain_port, &opts.minimal_wasm, FLOW_CALLS),
            listener::bare(bare_port),
        ],
        wasm: Some(opts.wasm.clone()),
        ..GatewayOptions::default()
    })?;
    let minimal_addr = SocketAddr::from(([127, 0, 0, 1], minimal_port));
    let dispatch_addr = SocketAddr::from(([127, 0, 0, 1], dispatch_port));
    let chain_addr = SocketAddr::from(([127, 0, 0, 1], chain_port));
    let bare_addr = SocketAddr::from(([127, 0, 0, 1], bare_port));

    say(&format!(
        "1, 2, 4. floor and validate + ack with wrk -t{} -c{} -d{}s, {} round(s)",
        plan.wrk.threads,
        plan.wrk.connections,
        plan.wrk.duration.as_secs(),
        plan.rounds
    ));
    let listeners = Listeners {
        minimal: minimal_addr,
        dispatch: dispatch_addr,
        bare: bare_addr,
    };
    let (wrk_rows, wrk_json) = floor_and_validate(plan, &gw, listeners, &tmp)?;
    let call_cpu = wrk_json["dispatched_call_envoy_cpu_us"].as_f64();
    data.insert("wrk".into(), wrk_json);

    say("3, 4. full flow through the stand-ins (closed loop, one keep-alive connection)");
    let (flow_rows, flow_json) = full_flow(plan, &gw, chain_addr, call_cpu)?;
    data.insert("full_flow".into(), flow_json);
    drop(gw);

    say("7. the etcd ledger against shared data (full flow, 1 order, 1 line; fresh Envoy each)");
    let (ledger_rows, ledger_json) = ledger_modes(plan, opts, &orders_path)?;
    data.insert("ledger_modes".into(), ledger_json);

    rows.extend(wrk_rows.0);
    rows.extend(flow_rows.0);
    rows.extend(wrk_rows.1);
    rows.extend(flow_rows.1);
    rows.extend(ledger_rows);
    rows.extend(size_rows);
    rows.extend(core_rows);

    let ts = report::timestamp();
    let header = format!(
        "keygate bench {ts}{} — {} cores, load {load_before} → {}, {}, {}, Envoy --concurrency {}, {:.0} s",
        if plan.smoke { " (smoke)" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        envoy_version(&envoy),
        wrk_version.split_whitespace().take(2).collect::<Vec<_>>().join(" "),
        plan.concurrency,
        started.elapsed().as_secs_f64(),
    );
    let table = report::table(&rows);
    println!("{header}\n{table}");
    let misses: Vec<&str> = rows
        .iter()
        .filter(|r| r.verdict == Some(false))
        .map(|r| r.id.as_str())
        .collect();
    let targets = rows.iter().filter(|r| r.verdict.is_some()).count();
    println!(
        "targets: {} of {targets} PASS{}",
        targets - misses.len(),
        if misses.is_empty() {
            String::new()
        } else {
            format!("; MISS: {}", misses.join(", "))
        }
    );

    let json_path = opts.json.clone().unwrap_or_else(|| {
        root.join("bench-results").join(if plan.smoke {
            "smoke-latest.json".to_owned()
        } else {
            format!("bench-{ts}.json")
        })
    });
    let doc = json!({
        "timestamp": ts,
        "smoke": plan.smoke,
        "machine": {
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "load_before": load_before, "load_after": loadavg(),
        },
        "tools": {
            "envoy": tool_version(&envoy.display().to_string(), &["--version"]),
            "wrk": wrk_version, "node": tool_version("node", &["--version"]),
        },
        "plan": {
            "wrk": {"threads": plan.wrk.threads, "connections": plan.wrk.connections,
                    "duration_s": plan.wrk.duration.as_secs()},
            "rounds": plan.rounds, "starts": plan.starts, "envoy_concurrency": plan.concurrency,
            "flow_warmup": plan.flow_warmup, "flow": plan.flow,
            "plugin_patches": opts.patches,
        },
        "table": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "data": data,
    });
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text + "\n").map_err(|e| format!("{}: {e}", json_path.display()))?;
    println!("JSON: {}", json_path.display());
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Size and start

fn size_and_start(opts: &Opts, envoy: &Path, tmp: &Path) -> Result<(Vec<Row>, Value), String> {
    let plan = &opts.plan;
    let bytes = std::fs::metadata(&opts.wasm)
        .map_err(|e| format!("{}: {e}", opts.wasm.display()))?
        .len();
    let unopt = std::fs::metadata(&opts.wasm_unopt).ok().map(|m| m.len());
    // scripts/build leaves the optimised module both in place and as keygate.opt.wasm.
    let optimised = std::fs::read(opts.wasm.with_file_name("keygate.opt.wasm"))
        .ok()
        .zip(std::fs::read(&opts.wasm).ok())
        .is_some_and(|(a, b)| a == b);
    let limit = 512 * 1024;
    let mut rows = vec![Row::new("5a", ".wasm size (the module Envoy loads)")
        .result(format!("{} B", thousands(bytes as f64)))
        .vs(match unopt {
            Some(u) if optimised => format!(
                "{:.1} KiB; wasm-opt -Oz from {} B (-{:.0}%)",
                bytes as f64 / 1024.0,
                thousands(u as f64),
                100.0 * (1.0 - bytes as f64 / u as f64)
            ),
            _ => format!(
                "{:.1} KiB; NOT wasm-opt'd (run scripts/build)",
                bytes as f64 / 1024.0
            ),
        })
        .target("≤ 512 KiB (524,288 B)", bytes <= limit)];

    let minimal_bytes = std::fs::metadata(&opts.minimal_wasm)
        .map_err(|e| format!("{}: {e}", opts.minimal_wasm.display()))?
        .len();
    // One start with `module` as the wasm filter, or (`with_filter` false) without the filter.
    let time = |module: &Path, with_filter: bool| -> Result<start::StartTime, String> {
        let (yaml, ports) = start::render(module)?;
        let yaml = if with_filter {
            yaml
        } else {
            start::without_plugin(&yaml)?
        };
        start::time_start(envoy, &yaml, &ports, with_filter, plan.concurrency, tmp)
    };
    let (mut with, mut without, mut minimal) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.starts {
        with.push(time(&opts.wasm, true)?);
        without.push(time(&opts.wasm, false)?);
        // The same config with the minimal SDK filter in the plugin's place: what any wasm
        // filter costs this Envoy to start (V8 compiles the whole module before /ready).
        minimal.push(time(&opts.minimal_wasm, true)?);
    }
    let med = |v: &[start::StartTime], f: fn(&start::StartTime) -> Duration| {
        median(
            &v.iter()
                .map(|s| f(s).as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        )
    };
    let (ready_with, ready_without) = (med(&with, |s| s.ready), med(&without, |s| s.ready));
    let (first_with, first_without) = (
        med(&with, |s| s.first_response),
        med(&without, |s| s.first_response),
    );
    rows.push(
        Row::new("5b", format!("Envoy start → /ready, median of {}", plan.starts))
            .result(format!("{ready_with:.0} ms with plugin"))
            .vs(format!(
                "{ready_without:.0} ms without; first ack {first_with:.0} ms / first 200 {first_without:.0} ms"
            ))

    );
    let ready_minimal = med(&minimal, |s| s.ready);
    // Start time over the bare Envoy, per KiB of module: about equal for both modules when
    // compiling is what the start costs.
    let per_kib = |ready: f64, module: u64| {
        (ready - ready_without).max(0.0) / (module as f64 / 1024.0).max(1.0)
    };
    rows.push(
        Row::new("5c", "Envoy start → /ready, minimal SDK filter in the plugin's place")
            .result(format!("{ready_minimal:.0} ms"))
            .vs(format!(
                "with plugin {} the minimal filter's; over the bare Envoy: plugin {:.2} ms per KiB of its {:.0} KiB, minimal filter {:.2} ms per KiB of {:.0} KiB",
                ratio(quotient(ready_with, ready_minimal)),
                per_kib(ready_with, bytes),
                bytes as f64 / 1024.0,
                per_kib(ready_minimal, minimal_bytes),
                minimal_bytes as f64 / 1024.0,
            ))
            .target(
                "with plugin ≤ 3.5× the minimal filter's",
                quotient(ready_with, ready_minimal) <= 3.5,
            ),
    );
    let ms_list = |v: &[start::StartTime], f: fn(&start::StartTime) -> Duration| {
        v.iter()
            .map(|s| f(s).as_secs_f64() * 1e3)
            .collect::<Vec<_>>()
    };
    let json = json!({
        "wasm_bytes": bytes, "wasm_unoptimised_bytes": unopt, "wasm_optimised": optimised, "wasm_path": opts.wasm,
        "start_ms": {
            "with_plugin": {"ready": ms_list(&with, |s| s.ready), "first_ack": ms_list(&with, |s| s.first_response),
                            "median_ready": ready_with},
            "without_plugin": {"ready": ms_list(&without, |s| s.ready), "first_200": ms_list(&without, |s| s.first_response),
                               "median_ready": ready_without},
            "minimal_filter": {"ready": ms_list(&minimal, |s| s.ready), "first_ack": ms_list(&minimal, |s| s.first_response),
                               "median_ready": ready_minimal, "wasm_bytes": minimal_bytes},
        },
    });
    Ok((rows, json))
}

// ---------------------------------------------------------------------------------------------
// 6. Core throughput

fn core_lines(mut cmd: Command, what: &str) -> Result<BTreeMap<String, Value>, String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut map = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{what}: {line:?}: {e}"))?;
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        map.insert(name, v);
    }
    Ok(map)
}

fn core(opts: &Opts) -> Result<(Vec<Row>, Value), String> {
    let mut native = Command::new(&opts.core_native);
    let mut wasm = Command::new("node");
    wasm.args(["--experimental-wasi-unstable-preview1", "--no-warnings"])
        .arg(repo_root().join("scripts/run-wasi.mjs"))
        .arg(&opts.core_wasm);
    if opts.plan.smoke {
        native.arg("--smoke");
        wasm.arg("--smoke");
    }
    let native = core_lines(native, "native core benchmark")?;
    let wasm = core_lines(wasm, "wasm core benchmark (node)")?;
    let mut rows = Vec::new();
    let labels = [
        (
            "parse/hundred",
            "6a",
            "soap::parse hundred.xml (100 notifications)",
        ),
        ("parse/activated_one", "6b", "soap::parse activated_one.xml"),
        (
            "flow/activated_one",
            "6c",
            "flow steps, 1 order (login, query, lookup, license, write-back)",
        ),
        (
            "flow/hundred",
            "6d",
            "flow steps, 100 orders (100 lookups + 100 license calls)",
        ),
        (
            "webhook/not_activated_one",
            "6f",
            "validate + ack in the core: webhook::on_body, not_activated_one.xml (row 2's own work)",
        ),
    ];
    let mut ratios = serde_json::Map::new();
    for (name, id, what) in labels {
        let (Some(n), Some(w)) = (native.get(name), wasm.get(name)) else {
            return Err(format!("core benchmark {name} missing from the output"));
        };
        let (n_ns, w_ns) = (
            n["median_ns"].as_f64().unwrap_or(0.0),
            w["median_ns"].as_f64().unwrap_or(0.0),
        );
        let r = quotient(w_ns, n_ns);
        // Best batches: the least disturbed by other load on a shared machine.
        let (n_min, w_min) = (
            n["min_ns"].as_f64().unwrap_or(0.0),
            w["min_ns"].as_f64().unwrap_or(0.0),
        );
        let r_min = quotient(w_min, n_min);
        ratios.insert(name.to_owned(), json!({"median": r, "min": r_min}));
        let mut row = Row::new(id, what)
            .result(format!("native {}", us(n_ns)))
            .vs(format!(
                "wasm {} = {} native (best batches {})",
                us(w_ns),
                ratio(r),
                ratio(r_min)
            ));
        if name == "parse/hundred" {
            row = row.target("wasm ≤ 2× native", r <= 2.0);
        }
        rows.push(row);
    }
    let instructions = parse_instructions(&opts.core_native);
    // 6e between the timed rows 6a–6d and 6f.
    let at = rows.len().saturating_sub(1);
    rows.insert(
        at,
        match instructions {
            Ok(n) => Row::new("6e", "soap::parse hundred.xml, instructions (native)")
                .result(format!("{:.2} M", n as f64 / 1e6))
                // A figure, not a target: the module is no longer built around it.
                .vs("cachegrind, (11 parses − 1 parse) / 10"),
            Err(ref e) => Row::new("6e", "soap::parse hundred.xml, instructions (native)")
                .result("not measured")
                .vs(e.clone()),
        },
    );
    Ok((
        rows,
        json!({"native": native, "wasm": wasm, "wasm_over_native": ratios, "wasm_module": opts.core_wasm,
               "parse_hundred_instructions": instructions.ok()}),
    ))
}

/// Instructions one `soap::parse` of hundred.xml executes natively, counted by valgrind's
/// cachegrind: the run with 11 parses less the run with 1, over 10, so start-up and the
/// benchmark's own checks cancel out. Deterministic, unlike a time on a shared machine.
fn parse_instructions(core_native: &Path) -> Result<u64, String> {
    let count = |repeat: u32| -> Result<u64, String> {
        let out = Command::new("valgrind")
            .args([
                "--tool=cachegrind",
                "--cache-sim=no",
                "--cachegrind-out-file=/dev/null",
            ])
            .arg(core_native)
            .args(["--only", "parse/hundred", "--repeat", &repeat.to_string()])
            .output()
            .map_err(|e| format!("valgrind: {e} (scripts/setup installs it for the benchmark)"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        stderr
            .lines()
            // "==pid== I   refs:      40,923,108"
            .find_map(|l| {
                let (_, rest) = l.split_once(" I ")?;
                let n = rest.trim_start().strip_prefix("refs:")?;
                Some(n.trim().replace(',', ""))
            })
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| "valgrind printed no instruction count".to_owned())
    };
    let (one, eleven) = (count(1)?, count(11)?);
    Ok(eleven.saturating_sub(one) / 10)
}

// ---------------------------------------------------------------------------------------------
// 1, 2, 4: floor and validate + ack with wrk

/// A route that is not the webhook (the stand-ins' echo answers it).
const PASSTHROUGH_PATH: &str = "/hello";

/// Rows for the top of the table (sections 1–3) and for the scale section (4).
type SplitRows = (Vec<Row>, Vec<Row>);

/// The benchmark's own listeners on the plugin's Envoy (`listener.rs`).
#[derive(Clone, Copy)]
struct Listeners {
    minimal: SocketAddr,
    dispatch: SocketAddr,
    bare: SocketAddr,
}

/// (rows 1–2, rows 4a–4b) and the raw figures.
fn floor_and_validate(
    plan: &Plan,
    gw: &Gateway,
    listeners: Listeners,
    tmp: &Path,
) -> Result<(SplitRows, Value), String> {
    let one = testdata("soap/valid/not_activated_one.xml");
    let ten = fixtures::message(&(0..10).collect::<Vec<_>>(), "Draft", 0);
    let hundred = fixtures::message(&(0..100).collect::<Vec<_>>(), "Draft", 0);
    let webhook = webhook_path_with_secret();
    // (key, listener, path, body)
    let cases: [(&str, SocketAddr, &str, &str); 6] = [
        ("floor", gw.floor_addr, "/floor", &one),
        ("minimal", listeners.minimal, &webhook, &one),
        ("minimal_dispatch", listeners.dispatch, &webhook, &one),
        ("validate_1", gw.gateway_addr, &webhook, &one),
        ("validate_10", gw.gateway_addr, &webhook, &ten),
        ("validate_100", gw.gateway_addr, &webhook, &hundred),
    ];
    let mut scripts = Vec::new();
    for (key, addr, path, body) in &cases {
        let reply = client::Conn::new(*addr)
            .post_soap(path, body.as_bytes())
            .map_err(|e| format!("{key}: {e}"))?;
        if !reply.is_ack() {
            return Err(format!(
                "{key}: not acked: HTTP {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
        let body_path = tmp.join(format!("{key}.xml"));
        std::fs::write(&body_path, body).map_err(|e| e.to_string())?;
        scripts.push(wrk::post_script(tmp, key, &body_path).map_err(|e| e.to_string())?);
    }
    // Pass-through: plain GETs to another route, through the plugin as shipped and through the
    // same HTTP stack without it.
    let get = wrk::get_script(tmp, "get").map_err(|e| e.to_string())?;
    let passthrough: [(&str, SocketAddr); 2] = [
        ("passthrough_plugin", gw.gateway_addr),
        ("passthrough_bare", listeners.bare),
    ];
    for (key, addr) in passthrough {
        let r = keygate_e2e::http::request(
            addr,
            "GET",
            PASSTHROUGH_PATH,
            &[],
            b"",
            Duration::from_secs(5),
        )
        .map_err(|e| format!("{key}: {e}"))?;
        if r.status != 200 {
            return Err(format!("{key}: GET {PASSTHROUGH_PATH}: HTTP {}", r.status));
        }
    }
    let envoy_pid = Some(gw.envoy_pid());
    let mut results: BTreeMap<&str, Vec<WrkResult>> = BTreeMap::new();
    // One wrk run, with Envoy's CPU time per request over it.
    let measure = |key: &str, addr: SocketAddr, path: &str, script: &Path| {
        let cpu_before = envoy_pid.and_then(cpu_seconds);
        let mut r = wrk::run(plan.wrk, addr, path, script).map_err(|e| format!("{key}: {e}"))?;
        if let (Some(a), Some(b)) = (cpu_before, envoy_pid.and_then(cpu_seconds)) {
            r.envoy_cpu_us_per_request = Some((b - a) * 1e6 / r.requests.max(1) as f64);
        }
        Ok::<_, String>(r)
    };
    for _ in 0..plan.rounds {
        for ((key, addr, path, _), script) in cases.iter().zip(&scripts) {
            let r = measure(key, *addr, path, script)?;
            results.entry(key).or_default().push(r);
        }
        for (key, addr) in passthrough {
            let r = measure(key, addr, PASSTHROUGH_PATH, &get)?;
            results.entry(key).or_default().push(r);
        }
    }
    let agg = |key: &str| -> (f64, f64, f64) {
        let rs = &results[key];
        (
            median(&rs.iter().map(WrkResult::rps).collect::<Vec<_>>()),
            median(&rs.iter().map(|r| r.p50_us).collect::<Vec<_>>()),
            median(&rs.iter().map(|r| r.p99_us).collect::<Vec<_>>()),
        )
    };
    // Envoy's CPU per request: steadier than req/s on a shared machine (wrk and Envoy share cores).
    let cpu = |key: &str| -> Option<f64> {
        let v: Vec<f64> = results[key]
            .iter()
            .filter_map(|r| r.envoy_cpu_us_per_request)
            .collect();
        (!v.is_empty()).then(|| median(&v))
    };
    let cpu_text = |key: &str| {
        cpu(key).map_or(String::new(), |c| match cpu("floor") {
            Some(f) if key != "floor" && f > 0.0 => {
                format!("; Envoy CPU {c:.0} µs/req = {} floor", ratio(c / f))
            }
            _ => format!("; Envoy CPU {c:.0} µs/req"),
        })
    };
    let (through, bare) = (agg("passthrough_plugin"), agg("passthrough_bare"));
    let through_ratio = quotient(through.0, bare.0);
    let (floor, minimal, dispatch, v1, v10, v100) = (
        agg("floor"),
        agg("minimal"),
        agg("minimal_dispatch"),
        agg("validate_1"),
        agg("validate_10"),
        agg("validate_100"),
    );
    let c = plan.wrk.connections;
    let vs_floor = quotient(v1.0, floor.0);
    let time_ratio = |x: (f64, f64, f64)| quotient(v1.0, x.0);
    // Row 2's target: keygate's Envoy CPU per request against the minimal SDK filter's.
    let vs_minimal = match (cpu("validate_1"), cpu("minimal")) {
        (Some(k), Some(m)) if m > 0.0 => Some(k / m),
        _ => None,
    };
    // Its spread: the same ratio round by round (each round ran both, one after the other).
    let per_round: Vec<f64> = results["validate_1"]
        .iter()
        .zip(&results["minimal"])
        .filter_map(|(k, m)| {
            Some(k.envoy_cpu_us_per_request? / m.envoy_cpu_us_per_request?.max(1e-9))
        })
        .collect();
    let spread = match (
        per_round.iter().copied().reduce(f64::min),
        per_round.iter().copied().reduce(f64::max),
    ) {
        (Some(lo), Some(hi)) => format!(" (rounds {lo:.2}–{hi:.2}×)"),
        _ => String::new(),
    };
    // What one dispatched call (a GET to the stand-ins, answer back in the VM) costs Envoy.
    let call_cpu = match (cpu("minimal_dispatch"), cpu("minimal")) {
        (Some(d), Some(m)) => Some((d - m).max(0.0)),
        _ => None,
    };
    let top = vec![
        Row::new("1", "floor: Envoy direct_response ack, no plugin")
            .result(format!("{} req/s", thousands(floor.0)))
            .latency(floor.1, floor.2)
            .vs(format!("wrk -c{c}{}", cpu_text("floor"))),
        Row::new("1b", "minimal SDK filter: buffer body, same ack")
            .result(format!("{} req/s", thousands(minimal.0)))
            .latency(minimal.1, minimal.2)
            .vs(format!(
                "{} floor req/s{}",
                ratio(quotient(minimal.0, floor.0)),
                cpu_text("minimal")
            )),
        Row::new(
            "1d",
            "minimal SDK filter + one dispatched GET, then the ack",
        )
        .result(format!("{} req/s", thousands(dispatch.0)))
        .latency(dispatch.1, dispatch.2)
        .vs(format!(
            "{} 1b req/s{}: one dispatched call costs Envoy {} (1d − 1b)",
            ratio(quotient(dispatch.0, minimal.0)),
            cpu_text("minimal_dispatch"),
            call_cpu.map_or("?".into(), |c| format!("{c:.0} µs"))
        )),
        Row::new("1c", "pass-through GET to another route, plugin as shipped")
            .result(format!("{} req/s", thousands(through.0)))
            .latency(through.1, through.2)
            .vs(format!(
                "{} the same Envoy without the plugin ({} req/s){}",
                ratio(through_ratio),
                thousands(bare.0),
                cpu_text("passthrough_plugin")
            ))
            .target("≥ 0.97× without the plugin", through_ratio >= 0.97),
        Row::new("2", "validate + ack, 1 notification (no callout)")
            .result(format!("{} req/s", thousands(v1.0)))
            .latency(v1.1, v1.2)
            .vs(format!(
                "{} floor req/s{}; {} the minimal filter's CPU{spread}",
                ratio(vs_floor),
                cpu_text("validate_1"),
                vs_minimal.map_or("?".into(), ratio)
            ))
            .target(
                "CPU ≤ 1.3× minimal filter",
                vs_minimal.is_some_and(|r| r <= 1.3),
            ),
    ];
    let scale = vec![
        Row::new("4a", "validate + ack, 10 notifications")
            .result(format!("{} req/s", thousands(v10.0)))
            .latency(v10.1, v10.2)
            .vs(format!(
                "{} the 1-notification time{}",
                ratio(time_ratio(v10)),
                cpu_text("validate_10")
            )),
        Row::new("4b", "validate + ack, 100 notifications")
            .result(format!("{} req/s", thousands(v100.0)))
            .latency(v100.1, v100.2)
            .vs(format!(
                "{} the 1-notification time{}",
                ratio(time_ratio(v100)),
                cpu_text("validate_100")
            )),
    ];
    let json = json!({
        "rounds": results.iter().map(|(k, v)| (k.to_string(), Value::from(v.iter().map(WrkResult::to_json).collect::<Vec<_>>()))).collect::<serde_json::Map<_, _>>(),
        "validate_cpu_over_minimal": vs_minimal,
        "dispatched_call_envoy_cpu_us": call_cpu,
        "median_rps": {"floor": floor.0, "minimal": minimal.0, "minimal_dispatch": dispatch.0, "validate_1": v1.0, "validate_10": v10.0, "validate_100": v100.0},
        "median_envoy_cpu_us_per_request": {"floor": cpu("floor"), "minimal": cpu("minimal"),
                                            "minimal_dispatch": cpu("minimal_dispatch"), "validate_1": cpu("validate_1"),
                                            "validate_10": cpu("validate_10"), "validate_100": cpu("validate_100")},
        "validate_over_floor": vs_floor,
        "passthrough_over_bare": through_ratio,
        "time_ratio_100_over_1": time_ratio(v100),
        "time_ratio_10_over_1": time_ratio(v10),
    });
    Ok(((top, scale), json))
}

// ---------------------------------------------------------------------------------------------
// 3, 4: full flow

const KINDS: [(&str, &str); 7] = [
    ("token", "login"),
    ("query", "query"),
    ("query_more", "query_more"),
    ("license", "license"),
    ("retrieve", "retrieve"),
    ("composite", "write-back"),
    ("echo", "echo"),
];

struct FlowRun {
    notifications: usize,
    latencies_us: Vec<f64>,
    /// Stand-ins' own service time of each message's calls.
    service_us: Vec<f64>,
    /// Calls of each message by endpoint.
    calls: Vec<BTreeMap<String, u64>>,
    wall_s: f64,
    /// Envoy's CPU time over the run, per message (from /proc; `None` if unreadable).
    envoy_cpu_us_per_message: Option<f64>,
    /// sObject Collections calls every message must make: 2 with the shared-data ledger (the new
    /// lines' issuing marks, then their keys), 1 with etcd (its marks are its own).
    write_backs: u64,
}

impl FlowRun {
    fn sorted_latencies(&self) -> Vec<f64> {
        let mut v = self.latencies_us.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn p50(&self) -> f64 {
        percentile(&self.sorted_latencies(), 50.0)
    }
    fn p99(&self) -> f64 {
        percentile(&self.sorted_latencies(), 99.0)
    }
    /// Stand-ins' service time per message: Σ service_us_total / messages.
    fn service_mean(&self) -> f64 {
        self.service_us.iter().sum::<f64>() / self.service_us.len().max(1) as f64
    }
    /// What Envoy and the filter add at p50: p50 less the stand-ins' own service time.
    fn added(&self) -> f64 {
        self.p50() - self.service_mean()
    }
    /// A table row with this run's message rate and latencies.
    fn row(&self, id: &str, what: impl Into<String>) -> Row {
        Row::new(id, what)
            .result(format!(
                "{} msg/s",
                thousands(self.latencies_us.len() as f64 / self.wall_s.max(1e-9))
            ))
            .latency(self.p50(), self.p99())
    }
    fn calls_range(&self, endpoint: &str) -> (u64, u64) {
        let counts = self
            .calls
            .iter()
            .map(|c| c.get(endpoint).copied().unwrap_or(0));
        (counts.clone().min().unwrap_or(0), counts.max().unwrap_or(0))
    }
    /// Exactly 1 query (one page), at most 1 login and exactly `write_backs` sObject Collections
    /// calls in every message.
    fn calls_ok(&self) -> bool {
        self.calls_range("query") == (1, 1)
            && self.calls_range("query_more") == (0, 0)
            && self.calls_range("token").1 <= 1
            && self.calls_range("composite") == (self.write_backs, self.write_backs)
    }
    fn to_json(&self) -> Value {
        let mut calls = serde_json::Map::new();
        for (endpoint, _) in KINDS {
            let (lo, hi) = self.calls_range(endpoint);
            calls.insert(endpoint.into(), json!({"min": lo, "max": hi}));
        }
        json!({
            "notifications": self.notifications, "messages": self.latencies_us.len(),
            "p50_us": self.p50(), "p99_us": self.p99(), "wall_s": self.wall_s,
            "messages_per_s": self.latencies_us.len() as f64 / self.wall_s.max(1e-9),
            "standins_service_us_per_message": self.service_mean(),
            "added_p50_us": self.added(),
            "calls_per_message": calls, "calls_ok": self.calls_ok(),
            "envoy_cpu_us_per_message": self.envoy_cpu_us_per_message,
        })
    }
}

fn delta(
    before: &BTreeMap<String, EndpointStats>,
    after: &BTreeMap<String, EndpointStats>,
) -> (BTreeMap<String, u64>, f64) {
    let mut calls = BTreeMap::new();
    let mut service = 0.0;
    for (endpoint, a) in after {
        let b = before.get(endpoint).copied().unwrap_or_default();
        if a.count > b.count {
            calls.insert(endpoint.clone(), a.count - b.count);
        }
        service += a.service_us_total.saturating_sub(b.service_us_total) as f64;
    }
    (calls, service)
}

/// Sends `messages` messages of `notifications` new orders each, one at a time.
fn flow_run(
    gw: &Gateway,
    conn: &mut client::Conn,
    next_order: &mut usize,
    notifications: usize,
    messages: usize,
) -> Result<FlowRun, String> {
    let bodies: Vec<String> = (0..messages)
        .map(|_| {
            let orders: Vec<usize> = (*next_order..*next_order + notifications).collect();
            let m = fixtures::message(&orders, "Activated", *next_order);
            *next_order += notifications;
            m
        })
        .collect();
    let what = format!("full flow ({notifications} per message)");
    closed_loop(
        gw,
        conn,
        &webhook_path_with_secret(),
        &bodies,
        notifications,
        &what,
    )
}

/// Row 3b: `messages` copies of row 2's message to the minimal filter that makes row 3's calls
/// one after another (`listener::minimal_dispatch`), on `conn`, one at a time.
fn chain_run(gw: &Gateway, conn: &mut client::Conn, messages: usize) -> Result<FlowRun, String> {
    let one = testdata("soap/valid/not_activated_one.xml");
    let bodies = vec![one; messages];
    closed_loop(gw, conn, "/", &bodies, 1, "minimal filter, chained calls")
}

/// POSTs each body in turn on one keep-alive connection; every reply must be an ack. Records the
/// latency, the stand-ins' calls and service time of each message, and Envoy's CPU over the run.
fn closed_loop(
    gw: &Gateway,
    conn: &mut client::Conn,
    path: &str,
    bodies: &[String],
    notifications: usize,
    what: &str,
) -> Result<FlowRun, String> {
    let messages = bodies.len();
    let mut run = FlowRun {
        notifications,
        latencies_us: Vec::with_capacity(messages),
        service_us: Vec::with_capacity(messages),
        calls: Vec::with_capacity(messages),
        wall_s: 0.0,
        envoy_cpu_us_per_message: None,
        write_backs: if gw.plugin_config["ledger"]["backend"] == "etcd" {
            1
        } else {
            2
        },
    };
    let envoy_pid = Some(gw.envoy_pid());
    let cpu_before = envoy_pid.and_then(cpu_seconds);
    let mut before = gw.standins.stats();
    let mut busy = Duration::ZERO;
    for body in bodies {
        let t = Instant::now();
        let reply = conn
            .post_soap(path, body.as_bytes())
            .map_err(|e| format!("{what}: {e}"))?;
        let took = t.elapsed();
        busy += took;
        if !reply.is_ack() {
            return Err(format!(
                "{what}: not acked: HTTP {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
        let after = gw.standins.stats();
        let (calls, service) = delta(&before, &after);
        before = after;
        run.latencies_us.push(took.as_secs_f64() * 1e6);
        run.service_us.push(service);
        run.calls.push(calls);
    }
    run.wall_s = busy.as_secs_f64();
    if let (Some(a), Some(b)) = (cpu_before, envoy_pid.and_then(cpu_seconds)) {
        run.envoy_cpu_us_per_message = Some((b - a) * 1e6 / messages.max(1) as f64);
    }
    Ok(run)
}

/// The plugin's own cost of one more order line: Envoy CPU per message, 100-order message
/// against 1-order, over the 99 extra lines (each also a license call through Envoy).
fn per_line_cpu(one: &FlowRun, hundred: &FlowRun) -> Option<f64> {
    let (a, b) = (
        one.envoy_cpu_us_per_message?,
        hundred.envoy_cpu_us_per_message?,
    );
    let extra = hundred
        .notifications
        .saturating_sub(one.notifications)
        .max(1) as f64;
    Some((b - a) / extra)
}

fn per_line_row(one: &FlowRun, hundred: &FlowRun, call_cpu: Option<f64>) -> Row {
    let per_line = per_line_cpu(one, hundred);
    let in_calls = match (per_line, call_cpu) {
        (Some(l), Some(c)) if c > 0.0 => format!(" = {:.1} dispatched calls (1d)", l / c),
        _ => String::new(),
    };
    // The target: what a line costs beyond its own dispatched calls, each at row 1d − 1b.
    let calls = license_calls_per_line(hundred);
    let beyond = match (per_line, call_cpu) {
        (Some(l), Some(c)) => Some(l - calls * c),
        _ => None,
    };
    Row::new("4h", "full flow: Envoy CPU per additional order line")
        .result(per_line.map_or("?".into(), |c| us(c * 1e3)))
        .vs(format!(
            "Envoy CPU {} per 1-order message, {} per 100-order message{in_calls}",
            one.envoy_cpu_us_per_message
                .map_or("?".into(), |c| us(c * 1e3)),
            hundred
                .envoy_cpu_us_per_message
                .map_or("?".into(), |c| us(c * 1e3))
        ))
        .target(
            format!(
                "≤ 10 µs beyond its {calls:.0} calls × (1d − 1b): {}",
                beyond.map_or("?".into(), |b| us(b * 1e3))
            ),
            beyond.is_some_and(|b| b <= 10.0),
        )
}

/// License-server calls (lookups + issues) per new order line, over every message of a run.
fn license_calls_per_line(run: &FlowRun) -> f64 {
    let calls: u64 = run
        .calls
        .iter()
        .map(|c| c.get("license").copied().unwrap_or(0) + c.get("retrieve").copied().unwrap_or(0))
        .sum();
    let lines = (run.calls.len() * run.notifications).max(1);
    calls as f64 / lines as f64
}

/// Row 4i: what one new line costs the license server in the ledger mode that ran.
fn license_calls_row(run: &FlowRun) -> Row {
    let per_line = license_calls_per_line(run);
    Row::new("4i", "license-server calls per new order line, shared-data ledger")
        .result(format!("{per_line:.2}"))
        .vs("RetrieveActivationKeyHttp + GetActivationKeyWithExpiryDate: a volatile ledger looks every unknown line up before issuing it")
        .target("= 2 (lookup + issue)", (per_line - 2.0).abs() < 1e-9)
}

fn calls_row(id: &str, run: &FlowRun, text: &str) -> Row {
    Row::new(
        id,
        format!("upstream calls per message, {} order(s)", run.notifications),
    )
    .result(format!("{} messages", run.calls.len()))
    .vs(text)
    .target(
        format!(
            "query =1, login ≤1, write-back ={} (issuing marks, keys)",
            run.write_backs
        ),
        run.calls_ok(),
    )
}

/// Rows 7a–7c: the same full flow (1 order, then 100 per message) on two Envoys started side by
/// side, one with the shared-data ledger and one with the ledger on a one-member etcd on
/// loopback, the runs alternating round by round (shared, etcd, shared, …): 7a and 7c are the
/// median of the per-round ratios, with their spread. Per message with etcd: claim + read, the
/// new lines' pending marks (a transaction per 64 lines), record + release; a lease grant per
/// claim TTL per Envoy. 7c also counts the etcd calls per message (Envoy's `etcd` cluster).
fn ledger_modes(plan: &Plan, opts: &Opts, orders_path: &Path) -> Result<(Vec<Row>, Value), String> {
    let etcd = keygate_e2e::etcd::EtcdCluster::start(1);
    let (_, messages) = plan.flow[0];
    let (big, big_messages) = plan.flow[2];
    let rounds = plan.rounds.max(1);
    // Each round's share, at least 2 (100-order messages use up the generated orders quickly).
    let (small_each, big_each) = ((messages / rounds).max(2), (big_messages / rounds).max(2));
    let mut gws = Vec::new();
    for on_etcd in [false, true] {
        let mut options = GatewayOptions {
            concurrency: plan.concurrency,
            patches: opts.patches.clone(),
            standins: StandinsConfig {
                orders_path: orders_path.to_path_buf(),
                ..StandinsConfig::default()
            },
            wasm: Some(opts.wasm.clone()),
            ..GatewayOptions::default()
        };
        if on_etcd {
            options = options.etcd(&etcd.client_ports());
        }
        let gw = Gateway::try_start(options)?;
        let mut conn = client::Conn::new(gw.gateway_addr);
        let mut next_order = 0;
        flow_run(&gw, &mut conn, &mut next_order, 1, plan.flow_warmup)?;
        gws.push((gw, conn, next_order));
    }
    // Index 0: shared data; 1: etcd.
    let mut small: [Vec<FlowRun>; 2] = [Vec::new(), Vec::new()];
    let mut large: [Vec<FlowRun>; 2] = [Vec::new(), Vec::new()];
    let mut etcd_calls = 0u64;
    for _ in 0..rounds {
        for (i, (gw, conn, next)) in gws.iter_mut().enumerate() {
            if let Some(runs) = small.get_mut(i) {
                runs.push(flow_run(gw, conn, next, 1, small_each)?);
            }
        }
    }
    for _ in 0..rounds {
        for (i, (gw, conn, next)) in gws.iter_mut().enumerate() {
            let before = cluster_requests(gw, "etcd");
            let run = flow_run(gw, conn, next, big, big_each)?;
            if i == 1 {
                etcd_calls += cluster_requests(gw, "etcd").saturating_sub(before);
            }
            if let Some(runs) = large.get_mut(i) {
                runs.push(run);
            }
        }
    }
    let per_round = |runs: &[Vec<FlowRun>; 2]| -> Vec<f64> {
        runs[0]
            .iter()
            .zip(&runs[1])
            .map(|(shared, on_etcd)| on_etcd.p50() / shared.p50().max(1e-9))
            .collect()
    };
    let (rels, big_rels) = (per_round(&small), per_round(&large));
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("rounds {}–{}", ratio(lo), ratio(hi))
    };
    let (rel, big_rel) = (median(&rels), median(&big_rels));
    let etcd_per_message = etcd_calls as f64 / (rounds * big_each) as f64;
    let (Some(shared), Some(on_etcd), Some(big_shared), Some(big_etcd)) = (
        small[0].last(),
        small[1].last(),
        large[0].last(),
        large[1].last(),
    ) else {
        return Err("ledger runs of each size expected".into());
    };
    let added = on_etcd.p50() - shared.p50();
    let cpu = |r: &FlowRun| {
        r.envoy_cpu_us_per_message
            .map_or("?".into(), |c| us(c * 1e3))
    };
    let calls = license_calls_per_line(on_etcd);
    let rows = vec![
        Row::new("7a", "full flow, 1 order, 1 line: etcd ledger vs shared data")
            .latency(on_etcd.p50(), on_etcd.p99())
            .result(format!("{} the shared-data time", ratio(rel)))
            .vs(format!(
                "median of {rounds} alternating rounds ({}); last round: shared data p50 {} → etcd adds {} per message; Envoy CPU {} vs {} per message",
                spread(&rels),
                ms(shared.p50()),
                ms(added),
                cpu(on_etcd),
                cpu(shared)
            )),
        Row::new("7c", format!("full flow, {big} orders per message: etcd ledger vs shared data"))
            .latency(big_etcd.p50(), big_etcd.p99())
            .result(format!("{} the shared-data time", ratio(big_rel)))
            .vs(format!(
                "median of {rounds} alternating rounds ({}); last round: shared data p50 {} (a lookup + an issue per line) → etcd {} (the lines' marks in one transaction per 64, an issue per line); {etcd_per_message:.1} etcd calls per message",
                spread(&big_rels),
                ms(big_shared.p50()),
                ms(big_etcd.p50())
            ))
            .target("≤ 2× the shared-data time", big_rel <= 2.0),
        Row::new("7b", "license-server calls per new order line, etcd ledger")
            .result(format!("{calls:.2}"))
            .vs("GetActivationKeyWithExpiryDate only: etcd records every line before its call, so a line it does not know was never issued")
            .target("= 1 (issue only)", (calls - 1.0).abs() < 1e-9),
    ];
    let json = json!({
        "shared_data": shared.to_json(), "etcd": on_etcd.to_json(),
        "shared_data_big": big_shared.to_json(), "etcd_big": big_etcd.to_json(),
        "etcd_over_shared_p50_big": big_rel, "etcd_over_shared_p50_big_rounds": big_rels,
        "etcd_over_shared_p50": rel, "etcd_over_shared_p50_rounds": rels, "etcd_added_p50_us": added,
        "etcd_calls_per_big_message": etcd_per_message,
        "license_calls_per_new_line_etcd": calls,
        "license_calls_per_new_line_shared": license_calls_per_line(shared),
    });
    Ok((rows, json))
}

/// Requests Envoy has sent through `cluster` (its `upstream_rq_total`).
fn cluster_requests(gw: &Gateway, cluster: &str) -> u64 {
    let name = format!("cluster.{cluster}.upstream_rq_total");
    gw.admin_get(&format!("/stats?filter=^{name}$"))
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
        .unwrap_or(0)
}

/// Calls row 3's message makes one after another: query, lookup, issue, write-back.
/// Row 3's calls per message, token cached: the query, the new line's issuing mark, the lookup,
/// the issue, the write-back.
const FLOW_CALLS: u32 = 5;

/// (rows 3 and 3b, rows 4c–4g) and the raw figures.
/// `chain`: the minimal filter's listener making `FLOW_CALLS` calls in turn (row 3b).
/// `call_cpu`: Envoy's CPU for one dispatched call (row 1d), to put row 4h against.
fn full_flow(
    plan: &Plan,
    gw: &Gateway,
    chain: SocketAddr,
    call_cpu: Option<f64>,
) -> Result<(SplitRows, Value), String> {
    gw.standins.reset();
    // 3b first, on its own connection: the same closed loop through a filter with no work of its
    // own between its calls (before row 3's warm-up, so that row 3 runs as warm as before).
    let mut chain_conn = client::Conn::new(chain);
    chain_run(gw, &mut chain_conn, plan.flow_warmup)?;
    let chained = chain_run(gw, &mut chain_conn, plan.flow[0].1)?;
    if chained.calls_range("echo") != (u64::from(FLOW_CALLS), u64::from(FLOW_CALLS)) {
        return Err(format!(
            "row 3b: {:?} calls to the echo per message, expected {FLOW_CALLS}",
            chained.calls_range("echo")
        ));
    }
    let mut conn = client::Conn::new(gw.gateway_addr);
    let mut next_order = 0;
    // Warm-up: the first message logs in (the token is then cached in shared data), the rest
    // warm the VMs and Envoy's upstream connection pools.
    let warm = flow_run(gw, &mut conn, &mut next_order, 1, plan.flow_warmup)?;
    if warm.calls_range("token").1 != 1 && plan.flow_warmup > 0 {
        eprintln!("keygate-bench: note: the warm-up did not log in exactly once");
    }
    let mut runs = Vec::new();
    for (notifications, messages) in plan.flow {
        runs.push(flow_run(
            gw,
            &mut conn,
            &mut next_order,
            notifications,
            messages,
        )?);
    }
    let [one, ten, hundred] = &runs[..] else {
        return Err("three full-flow runs expected".into());
    };
    let (added, chain_added) = (one.added(), chained.added());
    // Row 3's calls per message, which 3b stands for (a different count is said in the row).
    let flow_calls: u64 = KINDS.iter().map(|(e, _)| one.calls_range(e).1).sum();
    let chain_note = if flow_calls == u64::from(FLOW_CALLS) {
        String::new()
    } else {
        format!(" (row 3 made {flow_calls} calls per message)")
    };
    let top = vec![
        one.row("3", "full flow: 1 order, 1 line, token cached")
            .vs(format!(
                "stand-ins {} → plugin adds {}, {} beyond 3b",
                ms(one.service_mean()),
                ms(added),
                ms(added - chain_added)
            ))
            .target(
                "≤ 0.25 ms beyond 3b at p50",
                added - chain_added <= 250.0,
            ),
        chained
            .row(
                "3b",
                format!(
                    "minimal SDK filter + {FLOW_CALLS} dispatched GETs one after another, then the ack"
                ),
            )
            .vs(format!(
            "stand-ins {} → adds {}: row 3's calls in turn, no work between them{chain_note}",
            ms(chained.service_mean()),
            ms(chain_added)
        )),
    ];
    let rel = |r: &FlowRun| quotient(r.p50(), one.p50());
    let calls_text = |r: &FlowRun| {
        KINDS
            .iter()
            .filter(|(endpoint, _)| {
                r.calls_range(endpoint).1 > 0
                    || matches!(*endpoint, "token" | "query" | "composite")
            })
            .map(|(endpoint, label)| {
                let (lo, hi) = r.calls_range(endpoint);
                if lo == hi {
                    format!("{label} {lo}")
                } else {
                    format!("{label} {lo}–{hi}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let scale = vec![
        ten.row("4c", "full flow, 10 orders per message")
            .vs(format!(
                "{} the 1-order time; stand-ins {} → plugin adds {}",
                ratio(rel(ten)),
                ms(ten.service_mean()),
                ms(ten.added())
            )),
        hundred
            .row("4d", "full flow, 100 orders per message")
            .vs(format!(
                "{} the 1-order time; stand-ins {} → plugin adds {}",
                ratio(rel(hundred)),
                ms(hundred.service_mean()),
                ms(hundred.added())
            )),
        per_line_row(one, hundred, call_cpu),
        calls_row("4e", one, &calls_text(one)),
        calls_row("4f", ten, &calls_text(ten)),
        calls_row("4g", hundred, &calls_text(hundred)),
        license_calls_row(hundred),
    ];
    let json = json!({
        "warmup": warm.to_json(),
        "runs": runs.iter().map(FlowRun::to_json).collect::<Vec<_>>(),
        "added_p50_us": added,
        "chained_calls": {"calls": FLOW_CALLS, "run": chained.to_json(), "added_p50_us": chain_added},
        "envoy_cpu_us_per_additional_line": per_line_cpu(one, hundred),
        "time_ratio_100_over_1": rel(hundred),
        "time_ratio_10_over_1": rel(ten),
        "license_calls_per_new_line": license_calls_per_line(hundred),
    });
    Ok(((top, scale), json))
}
