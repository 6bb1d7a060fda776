//! An in-memory etcd answering the v3 JSON gateway calls the etcd ledger makes (lease grant, txn
//! with CREATE/MOD/LEASE compares, put/range/delete, authenticate), with etcd's semantics:
//! one revision per write transaction, keys that vanish with their lease, `succeeded` left out
//! when a compare fails. The e2e tests run the real etcd; this one runs inside `cargo test`.

#![allow(clippy::panic, clippy::expect_used)]

use std::collections::BTreeMap;

use base64ct::{Base64, Encoding as _};
use keygate_core::flow::{Call, Response};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

#[derive(Default)]
pub struct EtcdModel {
    pub kv: BTreeMap<Vec<u8>, Entry>,
    pub revision: i64,
    pub leases: Vec<i64>,
    next_lease: i64,
    /// `Some((user, password))`: authentication is enabled.
    pub auth: Option<(String, String)>,
    pub tokens: Vec<String>,
    pub txns: usize,
    /// Calls served so far (any path).
    pub calls: usize,
    /// From this call on (1-based), etcd is unreachable: every call gets no response.
    pub down_from_call: Option<usize>,
    /// These calls (1-based) get Envoy's reply for a member it could not connect to.
    pub unreachable_calls: Vec<usize>,
    /// These calls are carried out, but their reply is lost (the member died before answering).
    pub lost_reply_calls: Vec<usize>,
    /// Right after serving this call, every lease runs out (a delivery that outlived its claim).
    pub expire_after_call: Option<usize>,
    /// Right after serving this call, every claim is written anew by another delivery on the
    /// same lease (another worker of the same Envoy took over claims it found expired).
    pub retake_after_call: Option<usize>,
}

fn b64d(v: &Value) -> Vec<u8> {
    Base64::decode_vec(v.as_str().unwrap_or("")).expect("base64")
}

fn num(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().expect("a number as a string"),
        Value::Number(n) => n.as_i64().expect("an integer"),
        _ => 0,
    }
}

fn reply(v: Value) -> Response {
    Response {
        status: Some(200),
        headers: Vec::new(),
        body: v.to_string().into_bytes(),
    }
}

impl EtcdModel {
    /// The value of `key` as text, if present.
    pub fn get(&self, key: &str) -> Option<String> {
        self.kv
            .get(key.as_bytes())
            .map(|e| String::from_utf8_lossy(&e.value).into_owned())
    }

    /// Keys under `prefix`, as text.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.kv
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .filter(|k| k.starts_with(prefix))
            .collect()
    }

    /// A claim on `order` as another delivery left it: `value`, on `lease` (0: none).
    pub fn put_claim(&mut self, order: &str, value: &str, lease: i64) {
        self.revision += 1;
        self.kv.insert(
            format!("keygate/claim/{order}").into_bytes(),
            Entry {
                value: value.as_bytes().to_vec(),
                create_revision: self.revision,
                mod_revision: self.revision,
                lease,
            },
        );
    }

    /// Every lease runs out (time passed beyond the claim TTL): their keys go with them.
    pub fn expire_leases(&mut self) {
        self.leases.clear();
        self.kv.retain(|_, e| e.lease == 0);
    }

    pub fn serve(&mut self, call: &Call) -> Response {
        self.calls += 1;
        if self.down_from_call.is_some_and(|n| self.calls >= n) {
            return Response {
                status: None,
                headers: Vec::new(),
                body: Vec::new(),
            };
        }
        if self.unreachable_calls.contains(&self.calls) {
            return Response {
                status: Some(503),
                headers: Vec::new(),
                body: b"upstream connect error or disconnect/reset before headers. reset reason: connection failure".to_vec(),
            };
        }
        let r = self.answer(call);
        if self.expire_after_call == Some(self.calls) {
            self.expire_leases();
        }
        if self.retake_after_call == Some(self.calls) {
            self.revision += 1;
            let rev = self.revision;
            for (k, e) in self.kv.iter_mut() {
                if k.starts_with(b"keygate/claim/") {
                    e.value = b"12345 99999999999999".to_vec();
                    e.mod_revision = rev;
                }
            }
        }
        if self.lost_reply_calls.contains(&self.calls) {
            return Response {
                status: None,
                headers: Vec::new(),
                body: Vec::new(),
            };
        }
        r
    }

    fn answer(&mut self, call: &Call) -> Response {
        let body: Value = serde_json::from_slice(&call.body).expect("etcd request is JSON");
        let header = || json!({"revision": self.revision.to_string()});
        if call.path == "/v3/auth/authenticate" {
            return match &self.auth {
                Some((u, p)) if body["name"] == *u && body["password"] == *p => {
                    let t = format!("etcdtok{}", self.tokens.len() + 1);
                    self.tokens.push(t.clone());
                    reply(json!({"header": header(), "token": t}))
                }
                _ => Response {
                    status: Some(400),
                    headers: Vec::new(),
                    body: br#"{"error":"etcdserver: authentication failed, invalid user ID or password","code":3}"#.to_vec(),
                },
            };
        }
        if self.auth.is_some() {
            let token = call
                .headers
                .iter()
                .find(|(k, _)| *k == "authorization")
                .map(|(_, v)| v.clone());
            if !token.is_some_and(|t| self.tokens.contains(&t)) {
                return Response {
                    status: Some(401),
                    headers: Vec::new(),
                    body: br#"{"error":"etcdserver: invalid auth token","code":16}"#.to_vec(),
                };
            }
        }
        match call.path.as_str() {
            "/v3/lease/grant" => {
                self.next_lease += 1;
                let id = 7_000_000_000_000_000_000 + self.next_lease;
                self.leases.push(id);
                reply(json!({"header": header(), "ID": id.to_string(), "TTL": body["TTL"].clone()}))
            }
            "/v3/kv/txn" => self.txn(&body),
            other => Response {
                status: Some(404),
                headers: Vec::new(),
                body: format!("no {other} here").into_bytes(),
            },
        }
    }

    fn holds(&self, c: &Value) -> bool {
        let key = b64d(&c["key"]);
        let e = self.kv.get(&key);
        assert_eq!(
            c["result"], "EQUAL",
            "the ledger only compares for equality"
        );
        match c["target"].as_str() {
            Some("CREATE") => e.map_or(0, |e| e.create_revision) == num(&c["create_revision"]),
            Some("MOD") => e.map_or(0, |e| e.mod_revision) == num(&c["mod_revision"]),
            Some("LEASE") => e.map_or(0, |e| e.lease) == num(&c["lease"]),
            other => panic!("compare target {other:?} not modelled"),
        }
    }

    fn txn(&mut self, body: &Value) -> Response {
        self.txns += 1;
        // etcd's --max-txn-ops default.
        let too_many = ["compare", "success", "failure"]
            .iter()
            .any(|k| body[*k].as_array().is_some_and(|a| a.len() > 128));
        if too_many {
            return Response {
                status: Some(400),
                headers: Vec::new(),
                body: br#"{"error":"etcdserver: too many operations in txn request","message":"etcdserver: too many operations in txn request","code":3}"#.to_vec(),
            };
        }
        let compares = body["compare"].as_array().cloned().unwrap_or_default();
        let ok = compares.iter().all(|c| self.holds(c));
        let ops = body[if ok { "success" } else { "failure" }]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let writes = ops
            .iter()
            .any(|o| o.get("request_put").is_some() || o.get("request_delete_range").is_some());
        if writes {
            self.revision += 1;
        }
        let rev = self.revision;
        let mut responses = Vec::new();
        for op in &ops {
            if let Some(p) = op.get("request_put") {
                let key = b64d(&p["key"]);
                let lease = p.get("lease").map(num).unwrap_or(0);
                if lease != 0 && !self.leases.contains(&lease) {
                    return Response {
                        status: Some(404),
                        headers: Vec::new(),
                        body: br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#
                            .to_vec(),
                    };
                }
                let create = self.kv.get(&key).map_or(rev, |e| e.create_revision);
                self.kv.insert(
                    key,
                    Entry {
                        value: b64d(&p["value"]),
                        create_revision: create,
                        mod_revision: rev,
                        lease,
                    },
                );
                responses.push(json!({"response_put": {"header": {"revision": rev.to_string()}}}));
            } else if let Some(r) = op.get("request_range") {
                let start = b64d(&r["key"]);
                let end = r.get("range_end").map(b64d);
                let kvs: Vec<(Vec<u8>, Entry)> = self
                    .kv
                    .iter()
                    .filter(|(k, _)| match &end {
                        Some(end) => **k >= start && *k < end,
                        None => **k == start,
                    })
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect();
                let mut range = json!({"header": {"revision": rev.to_string()}});
                if !kvs.is_empty() {
                    range["count"] = json!(kvs.len().to_string());
                }
                if r.get("count_only") != Some(&json!(true)) && !kvs.is_empty() {
                    range["kvs"] = kvs
                        .iter()
                        .map(|(k, e)| {
                            json!({"key": Base64::encode_string(k), "value": Base64::encode_string(&e.value),
                                   "create_revision": e.create_revision.to_string(),
                                   "mod_revision": e.mod_revision.to_string(), "version": "1",
                                   "lease": e.lease.to_string()})
                        })
                        .collect();
                }
                responses.push(json!({ "response_range": range }));
            } else if let Some(d) = op.get("request_delete_range") {
                self.kv.remove(&b64d(&d["key"]));
                responses.push(
                    json!({"response_delete_range": {"header": {"revision": rev.to_string()}}}),
                );
            }
        }
        let mut out = json!({"header": {"revision": rev.to_string()}, "responses": responses});
        if ok {
            out["succeeded"] = json!(true);
        }
        reply(out)
    }
}
