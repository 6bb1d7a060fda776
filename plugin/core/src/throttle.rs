//! A license server's rate limit, shared by every worker of this Envoy: when the server throttles
//! the account (Keygen's 429), no worker calls it again until the time it gave. Kept in shared
//! data under `{state_prefix}/throttle/{cluster}` as the Unix time in milliseconds.

use crate::store::Store;

fn key(prefix: &str, cluster: &str) -> String {
    format!("{prefix}/throttle/{cluster}")
}

/// Until when calls to `cluster` wait; `None`: they may go now.
pub fn until(store: &dyn Store, prefix: &str, cluster: &str, now_ms: u64) -> Option<u64> {
    let (value, _) = store.get(&key(prefix, cluster))?;
    let until = std::str::from_utf8(&value).ok()?.parse::<u64>().ok()?;
    (until > now_ms).then_some(until)
}

/// Calls to `cluster` wait until `until_ms` (or a later time another worker recorded).
pub fn record(store: &mut dyn Store, prefix: &str, cluster: &str, until_ms: u64) {
    let key = key(prefix, cluster);
    // Two workers throttled at once: the later time stays. A lost race leaves the other's time,
    // which the next 429 corrects; never worth more than a few tries.
    for _ in 0..4 {
        let current = store.get(&key);
        let (known, cas) = match &current {
            Some((v, cas)) => (
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0),
                Some(*cas),
            ),
            None => (0, None),
        };
        if known >= until_ms {
            return;
        }
        if store
            .set(&key, until_ms.to_string().as_bytes(), cas)
            .is_ok()
        {
            return;
        }
    }
}
