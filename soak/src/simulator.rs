//! The Salesforce simulator: delivers Outbound Messages as Salesforce does. Many concurrent
//! connections; each message redelivered on a compressed version of Salesforce's backoff until it
//! is acked; duplicates of acked messages and any order of arrival; a client that hangs up
//! mid-message when the fault schedule says so. Every attempt is kept, for the figures and for
//! the history a violation prints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keygate_e2e::http;

/// Salesforce gives up on a request after 60 s; the plugin answers by its deadline (45 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A client that hangs up mid-message gives up this soon.
const HANGUP_TIMEOUT: Duration = Duration::from_millis(300);
/// Salesforce's backoff (minutes to hours) compressed: 250 ms doubling to 8 s, ±25 %.
const FIRST_RETRY_MS: u64 = 250;
const MAX_RETRY_MS: u64 = 8_000;
/// Of the acked messages, this share is delivered once more (Salesforce sends duplicates).
const DUPLICATE_PERCENT: u32 = 5;

#[derive(Debug, Clone)]
pub struct Message {
    pub body: String,
    pub orders: Vec<String>,
    pub notifications: usize,
    /// What the message is for (`activate`, `cancel`, `reduce`, …), for histories.
    pub what: &'static str,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    /// Since the soak began.
    pub at_ms: u64,
    pub replica: usize,
    pub duplicate: bool,
    /// `ack`, `fault 500: …`, `hang-up`, `error: …`.
    pub outcome: String,
}

#[derive(Debug, Default)]
pub struct Delivery {
    pub attempts: Vec<Attempt>,
    pub acked: bool,
}

/// Shared between the simulator's workers, the fault schedule and the figures.
pub struct Traffic {
    pub targets: Vec<SocketAddr>,
    pub started: Instant,
    /// Hang-ups the fault schedule asked for and no worker has taken yet.
    pub hangups: AtomicU32,
    pub stop: AtomicBool,
    messages: Mutex<Vec<Message>>,
    deliveries: Mutex<Vec<Delivery>>,
    pub acks: AtomicUsize,
}

impl Traffic {
    pub fn new(targets: Vec<SocketAddr>) -> Arc<Traffic> {
        Arc::new(Traffic {
            targets,
            started: Instant::now(),
            hangups: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            messages: Mutex::new(Vec::new()),
            deliveries: Mutex::new(Vec::new()),
            acks: AtomicUsize::new(0),
        })
    }

    /// The messages sent so far (a poisoned lock still holds them: a worker's panic loses none).
    pub fn messages(&self) -> MutexGuard<'_, Vec<Message>> {
        self.messages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each message's attempts so far, by message index.
    pub fn deliveries(&self) -> MutexGuard<'_, Vec<Delivery>> {
        self.deliveries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One send waiting in the queue.
#[derive(Clone, Copy)]
struct Send {
    message: usize,
    at: Instant,
    attempt: u32,
    duplicate: bool,
}

/// Delivers `batch` (each released at its offset from now, spread over `release_over`) with
/// `workers` connections until every message is acked or `give_up_at` passes. Returns the indexes
/// of the batch's messages in `traffic.messages`.
pub fn deliver_wave(
    traffic: &Arc<Traffic>,
    batch: Vec<Message>,
    release_over: Duration,
    workers: usize,
    give_up_at: Instant,
    seed: u64,
) -> Vec<usize> {
    let (first, count) = {
        let mut messages = traffic.messages();
        let mut deliveries = traffic.deliveries();
        let first = messages.len();
        let count = batch.len();
        for m in batch {
            messages.push(m);
            deliveries.push(Delivery::default());
        }
        (first, count)
    };
    let now = Instant::now();
    let step = release_over / u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let queue: Arc<Mutex<Vec<Send>>> = Arc::new(Mutex::new(
        (0..count)
            .map(|i| Send {
                message: first + i,
                at: now + step * u32::try_from(i).unwrap_or(u32::MAX),
                attempt: 0,
                duplicate: false,
            })
            .collect(),
    ));
    let unacked = Arc::new(AtomicUsize::new(count));
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (traffic, queue, unacked) = (
                Arc::clone(traffic),
                Arc::clone(&queue),
                Arc::clone(&unacked),
            );
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(w as u64));
            std::thread::spawn(move || worker(&traffic, &queue, &unacked, give_up_at, &mut rng))
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    (first..first + count).collect()
}

fn worker(
    traffic: &Traffic,
    queue: &Mutex<Vec<Send>>,
    unacked: &AtomicUsize,
    give_up_at: Instant,
    rng: &mut fastrand::Rng,
) {
    let path = keygate_e2e::webhook_path_with_secret();
    let headers = [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", "\"\""),
    ];
    loop {
        if Instant::now() > give_up_at || traffic.stop.load(Ordering::SeqCst) {
            return;
        }
        let next = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.is_empty() && unacked.load(Ordering::SeqCst) == 0 {
                return;
            }
            let now = Instant::now();
            // Any due send, in random order (Salesforce promises none).
            let due: Vec<usize> = (0..q.len()).filter(|&i| q[i].at <= now).collect();
            (!due.is_empty()).then(|| q.swap_remove(due[rng.usize(0..due.len())]))
        };
        let Some(send) = next else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let body = traffic.messages()[send.message].body.clone();
        let replica = rng.usize(0..traffic.targets.len());
        let hang_up = traffic
            .hangups
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let timeout = if hang_up {
            HANGUP_TIMEOUT
        } else {
            REQUEST_TIMEOUT
        };
        let at_ms = traffic.elapsed_ms();
        let result = http::request(
            traffic.targets[replica],
            "POST",
            &path,
            &headers,
            body.as_bytes(),
            timeout,
        );
        let (acked, outcome) = match result {
            Ok(r) if r.status == 200 && r.text().contains("<Ack>true</Ack>") => {
                (true, "ack".to_owned())
            }
            Ok(r) => {
                let text = r.text();
                let reason = text
                    .split("<faultstring>")
                    .nth(1)
                    .and_then(|t| t.split("</faultstring>").next())
                    .unwrap_or("")
                    .chars()
                    .take(400)
                    .collect::<String>();
                (false, format!("fault {}: {reason}", r.status))
            }
            Err(_) if hang_up => (false, "hang-up".to_owned()),
            Err(e) => (false, format!("error: {e}")),
        };
        let mut first_ack = false;
        {
            let mut d = traffic.deliveries();
            let delivery = &mut d[send.message];
            delivery.attempts.push(Attempt {
                at_ms,
                replica,
                duplicate: send.duplicate,
                outcome,
            });
            if acked && !delivery.acked {
                delivery.acked = true;
                first_ack = true;
            }
        }
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        if first_ack {
            traffic.acks.fetch_add(1, Ordering::SeqCst);
            unacked.fetch_sub(1, Ordering::SeqCst);
            if rng.u32(0..100) < DUPLICATE_PERCENT {
                let later = Duration::from_millis(rng.u64(100..3_000));
                q.push(Send {
                    at: Instant::now() + later,
                    attempt: 0,
                    duplicate: true,
                    ..send
                });
            }
        } else if !acked && !send.duplicate {
            let backoff = (FIRST_RETRY_MS << send.attempt.min(10)).min(MAX_RETRY_MS);
            let jitter = rng.u64(backoff * 3 / 4..=backoff * 5 / 4);
            q.push(Send {
                at: Instant::now() + Duration::from_millis(jitter),
                attempt: send.attempt + 1,
                ..send
            });
        }
    }
}
