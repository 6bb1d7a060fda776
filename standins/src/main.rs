//! `keygate-standins`: runs the Salesforce, license-server (QLM and Keygen) and echo stand-ins
//! until killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use keygate_standins::{Standins, StandinsConfig};

const USAGE: &str = "usage: keygate-standins [--salesforce ADDR] [--license ADDR] [--upstream ADDR]
                        [--orders PATH] [--page-size N] [--plain-text-keys] [--quiet]
defaults: --salesforce 127.0.0.1:18081 --license 127.0.0.1:18082 --upstream 127.0.0.1:18080
          --orders testdata/salesforce/orders.json (relative to the working directory)";

fn parse_args(args: &[String]) -> Result<StandinsConfig, String> {
    let addr = |s: &str| -> Result<SocketAddr, String> {
        s.parse().map_err(|e| format!("bad address {s:?}: {e}"))
    };
    let mut config = StandinsConfig {
        salesforce_addr: addr("127.0.0.1:18081")?,
        license_addr: addr("127.0.0.1:18082")?,
        upstream_addr: addr("127.0.0.1:18080")?,
        orders_path: PathBuf::from("testdata/salesforce/orders.json"),
        log_requests: true,
        ..StandinsConfig::default()
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--salesforce" => config.salesforce_addr = addr(&value()?)?,
            "--license" => config.license_addr = addr(&value()?)?,
            "--upstream" => config.upstream_addr = addr(&value()?)?,
            "--orders" => config.orders_path = PathBuf::from(value()?),
            "--page-size" => {
                let v = value()?;
                config.page_size = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("bad page size {v:?}"))?;
            }
            "--plain-text-keys" => config.plain_text_keys = true,
            "--quiet" => config.log_requests = false,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(config)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse_args(&args) {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("keygate-standins: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let orders = config.orders_path.display().to_string();
    let standins = match Standins::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keygate-standins: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "salesforce stand-in listening on {} ({} orders from {orders})",
        standins.salesforce_url(),
        standins.order_ids().len()
    );
    println!(
        "license stand-in listening on {} (QLM under {}, Keygen under {})",
        standins.license_url(),
        keygate_standins::LICENSE_PATH_PREFIX,
        standins.keygen_url()
    );
    println!("upstream stand-in listening on {}", standins.upstream_url());
    // Serve until SIGINT/SIGTERM: their default action ends the process, which is all we need.
    loop {
        std::thread::park();
    }
}
