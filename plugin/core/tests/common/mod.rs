//! Helpers shared by the core's test files (each test file is its own crate, so not all use all).
#![allow(dead_code)]

use serde_json::Value;

pub mod etcd_model;
pub mod keygen_model;
pub mod orders;
pub mod world;

/// The full example configuration every test starts from.
pub const FULL: &str = include_str!("../../../../testdata/config/full.json");

/// JSON merge patch (RFC 7386): objects merge, `null` removes a key, anything else replaces.
pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p,
    }
}

/// FULL with `patch` applied, as JSON text.
pub fn patched_full(patch: Value) -> String {
    let mut base: Value = serde_json::from_str(FULL).unwrap_or(Value::Null);
    merge(&mut base, patch);
    base.to_string()
}
