//! The idempotency ledger in Envoy shared data (the default; `crate::etcd` is the fleet's) (one per Envoy, seen by every worker):
//!
//! - **Lines**: per OrderItem, `P` + the time until which the license server may still be working
//!   on a call for it (pending: the outcome is uncertain until recorded), `I` + keys (issued),
//!   `W` + keys (issued and written back to Salesforce). A line is marked `P` *before* the call
//!   goes out, so a request cancelled mid-call (Salesforce hung up) still leaves a trace: until
//!   that time a redelivery is told "busy", after it the line is looked up before any re-issue.
//!   `R` + keys: the keys were revoked because the order was cancelled (an activated order
//!   restores them). A reduction or renewal line records `I`/`W` + the key it changed.
//! - **Claims**: per Order, who is working on it and until when. Taken with compare-and-swap, so
//!   two deliveries of one order on two workers cannot both issue keys. Claims expire.
//!
//! Shared data is volatile: a restart empties it, and another Envoy has its own. So a line this
//! ledger does not know may still have been issued, and the flow looks every such line up before
//! issuing it (the etcd ledger, `crate::etcd`, is durable and shared by a fleet). That is also what makes eviction safe.
//!
//! Bounded: at most `max_lines` lines, in a FIFO ring of slots: the oldest recorded line is evicted
//! first, except a pending line whose call may still be running at the license server; when a run
//! of slots holds only such lines, recording a new line fails (the message faults and is retried)
//! rather than forget one.

use crate::config::LedgerConfig;
use crate::ids::SfId;
use crate::store::{Store, StoreError};

/// Claims live in a fixed set of slots created at configure time, because a CAS write to a key
/// that does not exist yet is unconditional in proxy-wasm and so cannot arbitrate a race.
pub const CLAIM_SLOTS: u64 = 64;
const CAS_RETRIES: usize = 8;
/// Slots tried past unfinished lines before recording a new line gives up.
const EVICTION_PROBES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineState {
    Unknown,
    /// A license call was started and its outcome never recorded; the license server may still
    /// be working on it until `busy_until_ms`.
    Pending {
        busy_until_ms: u64,
        /// A renewal line's key expiry before its call: a later expiry proves the renewal was
        /// applied, so an uncertain renewal is never repeated blindly.
        expiry_before: Option<String>,
    },
    Issued(Vec<String>),
    WrittenBack(Vec<String>),
    /// Revoked by a cancellation (written back or not).
    Revoked(Vec<String>),
}

impl LineState {
    /// The stored form, the same in shared data and etcd: a tag line (`P`, `I`, `W`), then the
    /// busy-until time or one key per line.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, rest): (&str, &[String]) = match self {
            LineState::Unknown => return Vec::new(),
            LineState::Pending {
                busy_until_ms,
                expiry_before,
            } => {
                let mut v = format!("P\n{busy_until_ms}");
                if let Some(e) = expiry_before {
                    v.push_str("\n=");
                    v.push_str(e);
                }
                return v.into_bytes();
            }
            LineState::Issued(keys) => ("I", keys),
            LineState::WrittenBack(keys) => ("W", keys),
            LineState::Revoked(keys) => ("R", keys),
        };
        let mut v = String::from(tag);
        for k in rest {
            v.push('\n');
            v.push_str(k);
        }
        v.into_bytes()
    }

    /// Anything unreadable (an empty value is a deleted one) is `Unknown`: looked up, never
    /// trusted.
    pub fn decode(v: &[u8]) -> LineState {
        let s = String::from_utf8_lossy(v);
        let mut parts = s.split('\n');
        let tag = parts.next().unwrap_or("");
        let keys: Vec<String> = parts.filter(|k| !k.is_empty()).map(str::to_owned).collect();
        match tag {
            "P" => LineState::Pending {
                busy_until_ms: keys.first().and_then(|t| t.parse().ok()).unwrap_or(0),
                expiry_before: keys
                    .get(1)
                    .and_then(|e| e.strip_prefix('='))
                    .map(str::to_owned),
            },
            "I" if !keys.is_empty() => LineState::Issued(keys),
            "W" if !keys.is_empty() => LineState::WrittenBack(keys),
            "R" if !keys.is_empty() => LineState::Revoked(keys),
            _ => LineState::Unknown,
        }
    }
}

/// One Envoy's lifetime, as its ledger names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub started_at_ms: u64,
    /// 16 hex digits.
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// Another live request holds the order.
    Busy,
    /// Shared data refused or kept changing under us.
    Unavailable,
}

pub struct Ledger<'a> {
    prefix: &'a str,
    cfg: LedgerConfig,
}

impl<'a> Ledger<'a> {
    pub fn new(prefix: &'a str, cfg: LedgerConfig) -> Ledger<'a> {
        Ledger { prefix, cfg }
    }

    /// Until when a call started at `now_ms` with `timeout_ms` may still be running at the
    /// license server.
    pub fn busy_until(&self, now_ms: u64, timeout_ms: u64) -> u64 {
        now_ms
            .saturating_add(timeout_ms)
            .saturating_add(self.cfg.pending_grace_ms)
    }

    /// Create the keys that must exist before any CAS on them, and name this ledger: when it
    /// began (`now_ms`, the Envoy's start) and a random `nonce` (an Envoy's lifetime, told apart
    /// from the one before a restart and from a replica's). Idempotent: never overwrites.
    pub fn init(&self, store: &mut dyn Store, now_ms: u64, nonce: u64) {
        let key = self.instance_key();
        if store.get(&key).is_none() {
            let _ = store.set(&key, format!("{now_ms} {nonce:016x}").as_bytes(), None);
        }
        for slot in 0..CLAIM_SLOTS {
            let key = self.claim_key(slot);
            if store.get(&key).is_none() {
                let _ = store.set(&key, b"-", None);
            }
        }
        let seq = self.seq_key();
        if store.get(&seq).is_none() {
            let _ = store.set(&seq, b"0", None);
        }
    }

    /// This ledger's name ([`Ledger::init`]): when it began (what a restart forgot was in flight
    /// up to then) and which Envoy's lifetime it is. `None` before `init`.
    pub fn instance(&self, store: &dyn Store) -> Option<Instance> {
        let (v, _) = store.get(&self.instance_key())?;
        let text = std::str::from_utf8(&v).ok()?;
        let (started, id) = text.split_once(' ')?;
        Some(Instance {
            started_at_ms: started.parse().ok()?,
            id: id.to_owned(),
        })
    }

    fn instance_key(&self) -> String {
        format!("{}:instance", self.prefix)
    }

    fn line_key(&self, item: &SfId) -> String {
        format!("{}:line:{}", self.prefix, item.to_18())
    }
    fn ring_key(&self, slot: u64) -> String {
        format!("{}:ring:{slot}", self.prefix)
    }
    fn seq_key(&self) -> String {
        format!("{}:seq", self.prefix)
    }
    fn claim_key(&self, slot: u64) -> String {
        format!("{}:claims:{slot}", self.prefix)
    }

    pub fn line(&self, store: &dyn Store, item: &SfId) -> LineState {
        self.line_at(store, &self.line_key(item))
    }

    fn line_at(&self, store: &dyn Store, key: &str) -> LineState {
        match store.get(key) {
            Some((v, _)) => LineState::decode(&v),
            None => LineState::Unknown,
        }
    }

    /// May this line be forgotten? Yes, unless a call for it may still be running: a forgotten
    /// line is looked up before it is issued again, which finds what an earlier call issued
    /// (and a pending line's call, once it is over).
    fn evictable(&self, store: &dyn Store, key: &str, now_ms: u64) -> bool {
        match self.line_at(store, key) {
            LineState::Pending { busy_until_ms, .. } => busy_until_ms <= now_ms,
            _ => true,
        }
    }

    /// Record, before a license call goes out, that its outcome is uncertain until `busy_until_ms`
    /// (the call's end when it has answered: then only a lookup is needed, no waiting).
    pub fn mark_pending(
        &self,
        store: &mut dyn Store,
        item: &SfId,
        busy_until_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let state = LineState::Pending {
            busy_until_ms,
            expiry_before: None,
        };
        self.set(store, item, &state, now_ms)
    }

    pub fn record_issued(
        &self,
        store: &mut dyn Store,
        item: &SfId,
        keys: &[String],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.set(store, item, &LineState::Issued(keys.to_vec()), now_ms)
    }

    pub fn mark_written(
        &self,
        store: &mut dyn Store,
        item: &SfId,
        keys: &[String],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.set(store, item, &LineState::WrittenBack(keys.to_vec()), now_ms)
    }

    /// Record any state of a line (also a renewal's pending mark, a revocation).
    pub fn set(
        &self,
        store: &mut dyn Store,
        item: &SfId,
        state: &LineState,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let key = self.line_key(item);
        if self.line_at(store, &key) == LineState::Unknown {
            self.make_room(store, &key, now_ms)?;
        }
        store.set(&key, &state.encode(), None)
    }

    /// Take the next ring slot for the new line `me` (its key), evicting the line that held it
    /// when that is safe.
    fn make_room(&self, store: &mut dyn Store, me: &str, now_ms: u64) -> Result<(), StoreError> {
        for _ in 0..EVICTION_PROBES {
            let n = self.next_seq(store)?;
            let ring = self.ring_key(n % self.cfg.max_lines as u64);
            let old = store
                .get(&ring)
                .map(|(v, _)| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            if !old.is_empty() && old != me {
                if !self.evictable(store, &old, now_ms) {
                    continue;
                }
                store.set(&old, b"", None)?;
            }
            return store.set(&ring, me.as_bytes(), None);
        }
        Err(StoreError::Full)
    }

    /// Atomically take the next sequence number (CAS increment shared by every worker).
    fn next_seq(&self, store: &mut dyn Store) -> Result<u64, StoreError> {
        let seq_key = self.seq_key();
        for _ in 0..CAS_RETRIES {
            let (v, cas) = store.get(&seq_key).unwrap_or_else(|| (b"0".to_vec(), 0));
            let n: u64 = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let cas = (cas != 0).then_some(cas);
            match store.set(&seq_key, (n + 1).to_string().as_bytes(), cas) {
                Ok(()) => return Ok(n),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::CasMismatch)
    }

    fn slot_of(order: &SfId) -> u64 {
        // FNV-1a: stable across workers and builds (RandomState would not be).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in order.to_18().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % CLAIM_SLOTS
    }

    /// Claim `order` for `owner` until `now + claim_ttl`. Expired claims are taken over.
    pub fn claim(
        &self,
        store: &mut dyn Store,
        order: &SfId,
        owner: u64,
        now_ms: u64,
    ) -> Result<(), ClaimError> {
        let order18 = order.to_18();
        let key = self.claim_key(Self::slot_of(order));
        for _ in 0..CAS_RETRIES {
            let Some((v, cas)) = store.get(&key) else {
                // Normally created by `init` at configure time; create it late rather than never.
                store
                    .set(&key, b"-", None)
                    .map_err(|_| ClaimError::Unavailable)?;
                continue;
            };
            let mut entries = parse_claims(&v, now_ms);
            if entries
                .iter()
                .any(|c| c.order == order18 && c.owner != owner)
            {
                return Err(ClaimError::Busy);
            }
            entries.retain(|c| c.order != order18);
            entries.push(Claim {
                order: order18.clone(),
                owner,
                expires_ms: now_ms.saturating_add(self.cfg.claim_ttl_ms),
            });
            match store.set(&key, &render_claims(&entries), Some(cas)) {
                Ok(()) => return Ok(()),
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Unavailable | StoreError::Full) => {
                    return Err(ClaimError::Unavailable)
                }
            }
        }
        Err(ClaimError::Unavailable)
    }

    /// Drop `owner`'s claim on `order` (best effort: an unreleased claim simply expires).
    pub fn release(&self, store: &mut dyn Store, order: &SfId, owner: u64, now_ms: u64) {
        let order18 = order.to_18();
        let key = self.claim_key(Self::slot_of(order));
        for _ in 0..CAS_RETRIES {
            let Some((v, cas)) = store.get(&key) else {
                return;
            };
            let mut entries = parse_claims(&v, now_ms);
            let before = entries.len();
            entries.retain(|c| !(c.order == order18 && c.owner == owner));
            if entries.len() == before {
                return;
            }
            match store.set(&key, &render_claims(&entries), Some(cas)) {
                Err(StoreError::CasMismatch) => continue,
                _ => return,
            }
        }
    }
}

struct Claim {
    order: String,
    owner: u64,
    expires_ms: u64,
}

/// Live claims of one slot (expired ones are dropped on read).
fn parse_claims(v: &[u8], now_ms: u64) -> Vec<Claim> {
    String::from_utf8_lossy(v)
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            let order = p.next()?.to_owned();
            let owner = p.next()?.parse().ok()?;
            let expires_ms = p.next()?.parse().ok()?;
            (expires_ms > now_ms).then_some(Claim {
                order,
                owner,
                expires_ms,
            })
        })
        .collect()
}

fn render_claims(entries: &[Claim]) -> Vec<u8> {
    if entries.is_empty() {
        return b"-".to_vec();
    }
    let mut s = String::new();
    for c in entries {
        s.push_str(&format!("{} {} {}\n", c.order, c.owner, c.expires_ms));
    }
    s.into_bytes()
}
