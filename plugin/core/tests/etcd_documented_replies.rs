//! etcd's own documented replies (testdata/etcd, see testdata/README.md) as the etcd ledger reads
//! them: the revision a compare-and-swap now holds, a transaction that succeeded, its ranges, a
//! token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// Under Node through wasm-bindgen on wasm32-unknown-unknown; plain libtest natively and on
// wasm32-wasip1 (under Node's WASI: scripts/run-wasi.mjs).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use keygate_core::etcd::{self, Claimed, Keys};

const TXN_PUT: &[u8] = include_bytes!("../../../testdata/etcd/txn_put_succeeded.json");
const TXN_RANGE: &[u8] = include_bytes!("../../../testdata/etcd/txn_range_succeeded.json");
const AUTHENTICATE: &[u8] = include_bytes!("../../../testdata/etcd/authenticate.json");

#[test]
fn a_documented_transaction_that_succeeded_gives_its_revision() {
    // A line's compare-and-swap: the revision the line now has.
    assert_eq!(etcd::parse_cas(200, TXN_PUT), Ok(Some(3)));
    // The last transaction: the claims were still ours and are released.
    assert_eq!(etcd::parse_final(200, TXN_PUT), Ok(true));
}

#[test]
fn a_documented_range_in_a_transaction_is_read_as_the_claim_s_answer() {
    // As the answer to one claim: the claims held at revision 6; the range is the claim's own
    // read, so no line follows it.
    let keys = Keys { prefix: "keygate/" };
    assert_eq!(
        etcd::parse_claim(200, TXN_RANGE, &keys, 1),
        Ok(Claimed::Taken {
            revision: 6,
            lines: Vec::new()
        })
    );
    // Read as a line record it is refused: `foo` names no order line under the prefix.
    let err = etcd::parse_claim(200, TXN_RANGE, &keys, 0).unwrap_err();
    assert!(err.to_string().contains("names no order line"), "{err}");
}

#[test]
fn the_documented_authentication_reply_gives_the_token() {
    assert_eq!(
        etcd::parse_auth(200, AUTHENTICATE).as_deref(),
        Ok("sssvIpwfnLAcWAQH.9")
    );
}
