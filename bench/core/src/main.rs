//! `keygate-bench-core [--smoke] [--only NAME] [--repeat N]`: checks, then times every workload of the core
//! and prints one JSON object per line: `{"target": "native"|"wasm32-wasip1", "name", "median_ns",
//! "min_ns", "iters_per_batch", "batches"}`. Built natively and for wasm32-wasip1 (run by Node's
//! `node:wasi` from `scripts/run-wasi.mjs`); `keygate-bench` runs both and prints the ratio.

use std::process::ExitCode;

use keygate_bench_core::{check, measure, workloads, Budget};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut budget = Budget::full();
    let mut only: Option<String> = None;
    let mut repeat: Option<u64> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => budget = Budget::smoke(),
            "--only" => only = it.next().cloned(),
            // For a profiler (valgrind --tool=callgrind): run each workload N times, untimed.
            "--repeat" => repeat = it.next().and_then(|n| n.parse().ok()),
            "-h" | "--help" => {
                println!("usage: keygate-bench-core [--smoke] [--only NAME] [--repeat N]");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("keygate-bench-core: unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    if let Err(e) = check() {
        eprintln!("keygate-bench-core: workload check failed: {e}");
        return ExitCode::FAILURE;
    }
    let target = if cfg!(target_arch = "wasm32") {
        "wasm32-wasip1"
    } else {
        "native"
    };
    for (name, mut f) in workloads() {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        if let Some(n) = repeat {
            let sum: usize = (0..n).map(|_| std::hint::black_box(f())).sum();
            println!("{{\"name\":\"{name}\",\"repeat\":{n},\"sum\":{sum}}}");
            continue;
        }
        let mut json = measure(name, budget, f).to_json();
        json["target"] = target.into();
        println!("{json}");
    }
    ExitCode::SUCCESS
}
