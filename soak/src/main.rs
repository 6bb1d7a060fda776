//! `scripts/soak`: Salesforce traffic against Envoy with the plugin, every fault at once, for a
//! bounded time; then an invariant checker over the end state and the figures, printed and
//! written as JSON. Exits non-zero on any violation.
//!
//! ```text
//! keygate-soak [--minutes M] [--seed S] [--ledger shared_data|etcd] [--replicas 1|2]
//!              [--backend qlm] [--workers N] [--json FILE]
//! ```
//!
//! The run: a book of orders generated from the seed (`book`); the stand-ins serving it; one
//! Envoy, or two replicas (sharing a 3-member etcd with `--ledger etcd`); the Salesforce
//! simulator delivering the book's messages in three waves (activations; then cancellations,
//! reduction and renewal orders; then reactivations), each message until it is acked
//! (`simulator`); the seeded fault schedule over the first `--minutes` (`faults`); the settling
//! of every delivery once the faults stop; the checker (`invariants`); the figures (`figures`).

mod book;
mod faults;
mod figures;
mod invariants;
mod memory;
mod simulator;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_e2e::etcd::EtcdCluster;
use keygate_e2e::{Gateway, GatewayOptions};
use keygate_standins::{Standins, StandinsConfig};

use book::{Book, Order};
use faults::Event;
use keygate_e2e::exactly_once::outbound_message_with_status;
use simulator::{deliver_wave, Message, Traffic};

/// An Envoy's memory may grow at most this much per 10 000 messages after its warm-up
/// (`memory`: per process lifetime, a restart being a new process, read from long lifetimes).
const RSS_GROWTH_BOUND_KIB_PER_10K: f64 = 32.0 * 1024.0;
/// And at most this much in any one lifetime after its warm-up.
const RSS_GROWTH_BOUND_KIB: u64 = 48 * 1024;

/// How long deliveries may go on settling after the faults stop (Salesforce would go on for a
/// day; a message still unacked after this is counted lost). A claim left by an Envoy that died
/// holds for `ledger.claim_ttl_ms` (90 s) from its delivery's start, and a line it left pending
/// for the license call's time and grace.
const SETTLE: Duration = Duration::from_secs(300);

struct Args {
    minutes: f64,
    seed: u64,
    etcd: bool,
    replicas: usize,
    workers: usize,
    json: Option<PathBuf>,
}

fn usage(why: &str) -> ! {
    eprintln!("keygate-soak: {why}\nusage: keygate-soak [--minutes M] [--seed S] [--ledger shared_data|etcd] [--replicas 1|2] [--backend qlm] [--workers N] [--json FILE]");
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        minutes: 1.0,
        seed: 1,
        etcd: false,
        replicas: 1,
        workers: 8,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--minutes" => {
                a.minutes = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--minutes takes a number"))
            }
            "--seed" => {
                a.seed = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--seed takes a whole number"))
            }
            "--ledger" => match value().as_str() {
                "shared_data" => a.etcd = false,
                "etcd" => a.etcd = true,
                other => usage(&format!("unknown ledger {other}")),
            },
            "--replicas" => match value().as_str() {
                "1" => a.replicas = 1,
                "2" => a.replicas = 2,
                _ => usage("--replicas is 1 or 2"),
            },
            "--backend" => match value().as_str() {
                "qlm" => {}
                other => usage(&format!(
                    "unknown backend {other} (qlm is the one there is)"
                )),
            },
            "--workers" => {
                a.workers = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--workers takes a whole number"))
            }
            "--json" => a.json = Some(PathBuf::from(value())),
            "-h" | "--help" => usage("a bounded soak"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if !(0.1..=600.0).contains(&a.minutes) {
        usage("--minutes must be between 0.1 and 600");
    }
    if a.replicas == 2 && !a.etcd {
        eprintln!("keygate-soak: note: two replicas on the shared-data ledger share no ledger (README, \"Several Envoys\")");
    }
    a
}

/// One notification: an order's id and number, and the Status the message carries.
type Note = (String, String, &'static str);

/// The book's messages for one wave: each order's notification, grouped into messages of 1 to
/// 100 notifications (mostly few, as Salesforce batches them).
fn messages_for(rng: &mut fastrand::Rng, what: &'static str, mut notes: Vec<Note>) -> Vec<Message> {
    rng.shuffle(&mut notes);
    let mut out = Vec::new();
    while !notes.is_empty() {
        let size = match rng.u32(0..100) {
            0..=79 => rng.usize(1..=3),
            80..=96 => rng.usize(4..=20),
            _ => rng.usize(21..=100),
        }
        .min(notes.len());
        let chunk: Vec<Note> = notes.drain(..size).collect();
        out.push(Message {
            body: outbound_message_with_status(
                chunk
                    .iter()
                    .map(|(id, number, status)| (id.as_str(), number.as_str(), *status)),
            ),
            orders: chunk.iter().map(|(id, _, _)| id.clone()).collect(),
            notifications: chunk.len(),
            what,
        });
    }
    out
}

fn note(order_id: &str, number: &str, status: &'static str) -> Note {
    (order_id.to_owned(), number.to_owned(), status)
}

/// The three waves, delivered one after another, each spread over its share of the fault phase.
fn run_waves(
    book: &Book,
    standins: &Standins,
    traffic: &Arc<Traffic>,
    seed: u64,
    fault_phase: Duration,
    workers: usize,
    give_up_at: Instant,
) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x0da7_a5e7);
    let activations = book
        .orders
        .iter()
        .map(|o| note(&o.id, &o.number, "Activated"))
        .collect();
    let wave = messages_for(&mut rng, "activate", activations);
    deliver_wave(
        traffic,
        wave,
        fault_phase.mul_f64(0.55),
        workers,
        give_up_at,
        seed,
    );

    let cancelled: Vec<&Order> = book.orders.iter().filter(|o| o.cancelled).collect();
    for o in &cancelled {
        standins.set_order_status(&o.id, "Cancelled");
    }
    let mut wave = messages_for(
        &mut rng,
        "cancel",
        cancelled
            .iter()
            .map(|o| note(&o.id, &o.number, "Cancelled"))
            .collect(),
    );
    let reductions = book
        .orders
        .iter()
        .filter_map(|o| {
            o.reduction
                .as_ref()
                .map(|r| note(&r.0, &format!("R{}", o.number), "Activated"))
        })
        .collect();
    wave.extend(messages_for(&mut rng, "reduce", reductions));
    let renewals = book
        .orders
        .iter()
        .filter_map(|o| {
            o.renewal
                .as_ref()
                .map(|r| note(&r.0, &format!("N{}", o.number), "Activated"))
        })
        .collect();
    wave.extend(messages_for(&mut rng, "renew", renewals));
    rng.shuffle(&mut wave);
    deliver_wave(
        traffic,
        wave,
        fault_phase.mul_f64(0.25),
        workers,
        give_up_at,
        seed + 100,
    );

    let reactivated: Vec<&Order> = book.orders.iter().filter(|o| o.reactivated).collect();
    for o in &reactivated {
        standins.set_order_status(&o.id, "Activated");
    }
    let wave = messages_for(
        &mut rng,
        "reactivate",
        reactivated
            .iter()
            .map(|o| note(&o.id, &o.number, "Activated"))
            .collect(),
    );
    deliver_wave(
        traffic,
        wave,
        fault_phase.mul_f64(0.1),
        workers,
        give_up_at,
        seed + 200,
    );
}

fn main() {
    let a = args();
    let fault_phase = Duration::from_secs_f64(a.minutes * 60.0);
    let mut rng = fastrand::Rng::with_seed(a.seed);
    // About 300 orders (900 lines, ~70 messages) a minute: what a 2-core machine carries with
    // every fault on.
    let orders = ((a.minutes * 300.0) as usize).max(40);
    let book = Book::generate(&mut rng, orders);
    let dir = std::env::temp_dir().join(format!("keygate-soak-{}-{}", std::process::id(), a.seed));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let orders_path = dir.join("orders.json");
    book.write_orders_file(&orders_path)
        .unwrap_or_else(|e| panic!("{}: {e}", orders_path.display()));

    let mut etcd = a.etcd.then(|| EtcdCluster::start(3));
    let mut options = GatewayOptions::default().patch(book::soak_patch());
    options.standins = StandinsConfig {
        orders_path,
        ..StandinsConfig::default()
    };
    if let Some(e) = &etcd {
        options = options.etcd(&e.client_ports());
    }
    let first = Gateway::start(options);
    let mut gateways: Vec<Option<Gateway>> = vec![Some(first)];
    if a.replicas == 2 {
        let replica = gateways[0].as_ref().map(Gateway::replica);
        gateways.push(replica);
    }
    let standins = Arc::clone(&gateways[0].as_ref().expect("a gateway").standins);
    let ceiling = figures::license_ceiling();
    let targets = gateways.iter().flatten().map(|g| g.gateway_addr).collect();
    let traffic = Traffic::new(targets);
    let mut memory = memory::Memory::default();
    memory.sample(&gateways, 0.0, 0);
    println!(
        "keygate-soak: seed {}, {} min of faults, {} ledger, {} Envoy(s); {} orders, {} lines",
        a.seed,
        a.minutes,
        if a.etcd { "etcd" } else { "shared-data" },
        a.replicas,
        book.orders.len(),
        book.line_count()
    );

    let schedule = faults::schedule(a.seed, fault_phase.as_millis() as u64, a.replicas, a.etcd);
    let give_up_at = Instant::now() + fault_phase + SETTLE;
    let sim = {
        let (traffic, standins) = (Arc::clone(&traffic), Arc::clone(&standins));
        let book_orders = book.orders.clone();
        let (seed, workers) = (a.seed, a.workers);
        std::thread::spawn(move || {
            let book = Book {
                orders: book_orders,
            };
            run_waves(
                &book,
                &standins,
                &traffic,
                seed,
                fault_phase,
                workers,
                give_up_at,
            );
        })
    };

    // The fault phase, on this thread (it owns the Envoys it restarts and the etcd it kills).
    let started = Instant::now();
    let mut injected: std::collections::BTreeMap<&'static str, u32> = Default::default();
    let mut last_sample = Instant::now();
    let mut sample = |gateways: &[Option<Gateway>], force: bool| {
        if force || last_sample.elapsed() >= Duration::from_secs(5) {
            last_sample = Instant::now();
            let acks = traffic.acks.load(Ordering::SeqCst);
            memory.sample(gateways, started.elapsed().as_secs_f64(), acks);
        }
    };
    for s in &schedule {
        let at = Duration::from_millis(s.at_ms);
        while started.elapsed() < at {
            std::thread::sleep(Duration::from_millis(20));
            sample(&gateways, false);
        }
        match &s.event {
            Event::Standin(f) => {
                let _ = standins.inject_fault(f.clone());
            }
            Event::ExpireTokens => standins.expire_tokens(),
            Event::HangUps(n) => {
                traffic.hangups.fetch_add(*n, Ordering::SeqCst);
            }
            Event::RestartEnvoy(i) => {
                // The process's last sample before it goes.
                sample(&gateways, true);
                if let Some(gw) = gateways.get_mut(*i).and_then(Option::take) {
                    gateways[*i] = Some(gw.restart_envoy());
                }
            }
            Event::KillEtcd(m) => {
                if let Some(e) = etcd.as_mut() {
                    e.kill(*m);
                }
            }
            Event::ReviveEtcd(m) => {
                if let Some(e) = etcd.as_mut() {
                    e.restart(*m);
                }
            }
        }
        *injected.entry(s.kind).or_default() += 1;
    }
    while started.elapsed() < fault_phase {
        std::thread::sleep(Duration::from_millis(50));
        sample(&gateways, false);
    }
    let acks_in_fault_phase = traffic.acks.load(Ordering::SeqCst);
    // Faults stop: the etcd cluster whole again, the stand-ins' queued faults dropped.
    if let Some(e) = etcd.as_mut() {
        e.restart_all();
    }
    standins.clear_faults();
    println!(
        "keygate-soak: faults stopped after {:.0} s; settling",
        started.elapsed().as_secs_f64()
    );
    while !sim.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        sample(&gateways, false);
    }
    let _ = sim.join();
    let settled_s = started.elapsed().as_secs_f64();
    // Delayed stand-in replies (slow-but-issues) finish before the end state is read.
    std::thread::sleep(Duration::from_secs(2));
    sample(&gateways, true);

    let etcd_claims = etcd.as_ref().map(|e| e.keys("keygate/claim/").len());
    let etcd_keys = etcd.as_ref().map(|e| e.keys("keygate/").len());
    let verdict = invariants::check(&book, &standins, &traffic, etcd_claims);
    let report = figures::Report {
        seed: a.seed,
        minutes: a.minutes,
        ledger: if a.etcd { "etcd" } else { "shared_data" },
        replicas: a.replicas,
        book: &book,
        traffic: &traffic,
        injected: &injected,
        acks_in_fault_phase,
        fault_phase_s: fault_phase.as_secs_f64(),
        settled_s,
        memory: &memory,
        etcd_keys,
        license_max_in_flight: standins.license_max_in_flight(),
        license_ceiling: ceiling,
        key_counts: invariants::key_counts(&book, &standins),
        verdict: &verdict,
    };
    let json = report.to_json();
    report.print();
    let path = a.json.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "soak-results/soak-{}-{}-{}.json",
            report.ledger, a.replicas, a.seed
        ))
    });
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match serde_json::to_vec_pretty(&json).map(|b| std::fs::write(&path, b)) {
        Ok(Ok(())) => println!("keygate-soak: figures written to {}", path.display()),
        _ => eprintln!("keygate-soak: could not write {}", path.display()),
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop(gateways);
    let ceiling_held = ceiling.is_none_or(|c| report.license_max_in_flight <= c);
    let mut violations = verdict.violations.clone();
    if let (Some(keys), bound) = (etcd_keys, book.etcd_line_bound()) {
        if keys > bound {
            violations.push(format!("{keys} keys in etcd, over the bound of {bound} (one per line keygate licensed or changed)"));
        }
    }
    if let Some(g) = memory
        .max_growth_per_10k_kib()
        .filter(|g| *g > RSS_GROWTH_BOUND_KIB_PER_10K)
    {
        violations.push(format!(
            "an Envoy's memory grew {g:.0} KiB per 10 000 messages, over the bound of {RSS_GROWTH_BOUND_KIB_PER_10K:.0}"
        ));
    }
    let grown = memory.max_growth_kib();
    if grown > RSS_GROWTH_BOUND_KIB {
        violations.push(format!(
            "an Envoy's memory grew {grown} KiB after its warm-up, over the bound of {RSS_GROWTH_BOUND_KIB}"
        ));
    }
    if !violations.is_empty() || !ceiling_held {
        for v in &violations {
            eprintln!("VIOLATION {v}");
        }
        if !ceiling_held {
            eprintln!(
                "VIOLATION the license server saw {} calls at once, over the ceiling {:?}",
                report.license_max_in_flight, ceiling
            );
        }
        std::process::exit(1);
    }
    println!("keygate-soak: every invariant held");
}
