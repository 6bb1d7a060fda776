//! The seeded fault schedule: every part at once, for the whole fault phase. Salesforce's 5xx,
//! 401 `INVALID_SESSION_ID` (every token expired), slow replies and timeouts; the license server's
//! 5xx, slow-but-issues (past keygate's timeout), resets before and after issuing, one-word
//! replies, oversize replies, rate limiting (429); clients hanging up mid-message; Envoy restarts
//! of a replica; an etcd member killed and brought back. The same seed gives the same schedule.
//!
//! Envoy restarts stop after the first 60 % of the phase, so that the rest is one process lifetime
//! long enough to measure Envoy's memory growth under the remaining faults.
//!
//! Hot restarts are not in it: the harness runs each Envoy with its own base id and no
//! `--restart-epoch`, so a deploy here is a stop and a start (the harder case for the ledger).

use keygate_standins::{Endpoint, Fault, FaultKind};

/// One fault, at `at_ms` from the start of the fault phase.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub at_ms: u64,
    /// What it is, for the figures (`license 5xx`, `Envoy restart`, …).
    pub kind: &'static str,
    pub event: Event,
}

#[derive(Debug, Clone)]
pub enum Event {
    Standin(Fault),
    ExpireTokens,
    HangUps(u32),
    RestartEnvoy(usize),
    KillEtcd(usize),
    ReviveEtcd(usize),
}

/// The schedule for `duration_ms` of faults, for `replicas` Envoys and (with etcd) 3 members.
pub fn schedule(seed: u64, duration_ms: u64, replicas: usize, etcd: bool) -> Vec<Scheduled> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_fa17);
    let mut out = Vec::new();
    let mut t = 1_000;
    let mut next_restart = rng.u64(15_000..30_000);
    let mut next_etcd = rng.u64(20_000..40_000);
    let f = Fault::new;
    while t < duration_ms {
        let times = rng.u32(1..=3);
        let (kind, event) = match rng.u32(0..15) {
            0 => (
                "salesforce 5xx",
                Event::Standin(
                    f(
                        *pick(
                            &mut rng,
                            &[Endpoint::Query, Endpoint::Composite, Endpoint::Token],
                        ),
                        FaultKind::Status,
                    )
                    .status(*pick(&mut rng, &[500, 503]))
                    .times(times),
                ),
            ),
            1 => ("salesforce 401", Event::ExpireTokens),
            2 => (
                "salesforce slow",
                Event::Standin(
                    f(Endpoint::Query, FaultKind::Delay)
                        .delay_ms(rng.u64(300..3_000))
                        .times(times),
                ),
            ),
            3 => (
                "salesforce timeout",
                Event::Standin(
                    f(
                        *pick(&mut rng, &[Endpoint::Query, Endpoint::Composite]),
                        FaultKind::Delay,
                    )
                    .delay_ms(11_000),
                ),
            ),
            4 | 5 => (
                "license 5xx",
                Event::Standin(
                    f(Endpoint::License, FaultKind::Status)
                        .status(*pick(&mut rng, &[500, 502, 503]))
                        .times(times),
                ),
            ),
            6 => (
                "license slow but issues",
                Event::Standin(
                    f(Endpoint::License, FaultKind::IssueThenDelay)
                        .delay_ms(rng.u64(10_500..13_000)),
                ),
            ),
            7 => (
                "license reset",
                Event::Standin(f(Endpoint::License, FaultKind::Reset).times(times)),
            ),
            8 => (
                "license issues then resets",
                Event::Standin(f(Endpoint::License, FaultKind::IssueThenReset)),
            ),
            9 => (
                "license one-word reply",
                Event::Standin(f(Endpoint::License, FaultKind::Word).times(times)),
            ),
            10 => (
                "license oversize reply",
                Event::Standin(f(
                    *pick(&mut rng, &[Endpoint::License, Endpoint::Retrieve]),
                    FaultKind::Oversize,
                )),
            ),
            11 => (
                "license rate limited",
                Event::Standin(
                    f(
                        *pick(
                            &mut rng,
                            &[Endpoint::License, Endpoint::Retrieve, Endpoint::Revoke],
                        ),
                        FaultKind::Status,
                    )
                    .status(429)
                    .times(times),
                ),
            ),
            12 => (
                "lookup 5xx",
                Event::Standin(
                    f(Endpoint::Retrieve, FaultKind::Status)
                        .status(503)
                        .times(times),
                ),
            ),
            13 => (
                "license garbage",
                Event::Standin(f(Endpoint::License, FaultKind::Garbage)),
            ),
            _ => ("client hang-up", Event::HangUps(times)),
        };
        out.push(Scheduled {
            at_ms: t,
            kind,
            event,
        });
        // Restarts in the first 60 % only: the rest is one Envoy lifetime whose memory is measured.
        if t >= next_restart && t * 10 < duration_ms * 6 {
            out.push(Scheduled {
                at_ms: t,
                kind: "Envoy restart",
                event: Event::RestartEnvoy(rng.usize(0..replicas)),
            });
            next_restart = t + rng.u64(25_000..50_000);
        }
        if etcd && t >= next_etcd {
            let member = rng.usize(0..3);
            out.push(Scheduled {
                at_ms: t,
                kind: "etcd member killed",
                event: Event::KillEtcd(member),
            });
            out.push(Scheduled {
                at_ms: t + rng.u64(5_000..15_000),
                kind: "etcd member back",
                event: Event::ReviveEtcd(member),
            });
            next_etcd = t + rng.u64(30_000..60_000);
        }
        t += rng.u64(1_500..4_000);
    }
    out.sort_by_key(|s| s.at_ms);
    out
}

fn pick<'a, T>(rng: &mut fastrand::Rng, from: &'a [T]) -> &'a T {
    &from[rng.usize(0..from.len())]
}
