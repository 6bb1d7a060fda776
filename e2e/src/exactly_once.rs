//! Helpers for delivery-guarantee tests: build Outbound Messages for the stand-ins' orders, wait
//! until injected faults have fully played out, count the calls of one delivery, and check from the
//! stand-ins' record that every order line got exactly one key, written back.
//!
//! ```no_run
//! use keygate_e2e::exactly_once::{assert_one_key_per_line, family_message, settle};
//! use keygate_e2e::{Gateway, GatewayOptions};
//! let gw = Gateway::start(GatewayOptions::default());
//! gw.post_webhook(family_message(0..3));
//! settle(&gw.standins, 0);
//! let lines: Vec<String> = (0..3).map(keygate_standins::family_item_id).collect();
//! assert_one_key_per_line(&gw.standins, &lines);
//! ```

use keygate_standins::{family_order_id, sf_id18, Endpoint, RecordedRequest, Standins, ORG_ID};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long `settle` waits for injected faults to fire and for delayed stand-in replies to finish.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// One Outbound Message with one Activated Order notification per `(order id, order number)`.
/// Notification ids are `04l5Y00000N` + index (4 digits), with their real suffix.
pub fn outbound_message<'a>(orders: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    outbound_message_with_status(
        orders
            .into_iter()
            .map(|(id, number)| (id, number, "Activated")),
    )
}

/// As [`outbound_message`], each notification with the Status it carries (`Cancelled` for a
/// revoking change, …): `(order id, order number, status)`.
pub fn outbound_message_with_status<'a>(
    orders: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> String {
    let mut notifications = String::new();
    for (i, (order_id, order_number, status)) in orders.into_iter().enumerate() {
        let notification_id = sf_id18(&format!("04l5Y00000N{:04}", i % 10_000));
        notifications.push_str(&format!(
            r#"   <Notification>
    <Id>{notification_id}</Id>
    <sObject xsi:type="sf:Order" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>{order_id}</sf:Id>
     <sf:OrderNumber>{order_number}</sf:OrderNumber>
     <sf:Status>{status}</sf:Status>
    </sObject>
   </Notification>
"#
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{ORG_ID}</OrganizationId>
   <ActionId>04k5Y0000008Q1hQAE</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://mydomain.my.salesforce.com/services/Soap/c/51.0/00D5Y000001MPM7</EnterpriseUrl>
   <PartnerUrl>https://mydomain.my.salesforce.com/services/Soap/u/51.0/00D5Y000001MPM7</PartnerUrl>
{notifications}  </notifications>
 </soapenv:Body>
</soapenv:Envelope>
"#
    )
}

/// A message for family orders `n` (see testdata/README.md): one line of `001` × 1 each.
pub fn family_message(orders: impl IntoIterator<Item = usize>) -> String {
    let orders: Vec<(String, String)> = orders
        .into_iter()
        .map(|n| (family_order_id(n), format!("{:08}", 1000 + n)))
        .collect();
    outbound_message(orders.iter().map(|(id, num)| (id.as_str(), num.as_str())))
}

/// The line reference of a license-server request, from its form or query: QLM's
/// `is_userdata1`, else `is_orderid` (keygate sends both on issue and looks up by the one
/// `license_server.line_reference` names); Keygen's `salesforceOrderItemId` metadata (in a
/// create's body, in a lookup's `metadata[…]` filter).
pub fn order_ref(r: &RecordedRequest) -> Option<String> {
    const KEYGEN_REFERENCE: &str = "salesforceOrderItemId";
    match r.endpoint {
        Endpoint::KeygenCreate => {
            let body: serde_json::Value = serde_json::from_str(&r.body).ok()?;
            let item = &body["data"]["attributes"]["metadata"][KEYGEN_REFERENCE];
            return item.as_str().map(str::to_owned);
        }
        Endpoint::KeygenList => {
            let filter = format!("metadata[{KEYGEN_REFERENCE}]");
            return form_urlencoded::parse(r.query.as_bytes())
                .find(|(k, _)| *k == filter)
                .map(|(_, v)| v.into_owned());
        }
        _ => {}
    }
    ["is_userdata1", "is_orderid"].iter().find_map(|name| {
        r.form.get(*name).cloned().or_else(|| {
            form_urlencoded::parse(r.query.as_bytes())
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.into_owned())
        })
    })
}

/// `is_orderid`s of the requests to `endpoint` in `record`, in arrival order.
pub fn refs_of(record: &[RecordedRequest], endpoint: Endpoint) -> Vec<String> {
    record
        .iter()
        .filter(|r| r.endpoint == endpoint)
        .filter_map(order_ref)
        .collect()
}

/// Calls the stand-ins saw, per endpoint (everything but the pass-through echo). `license` is
/// an issue (QLM's `GetActivationKeyWithExpiryDate`, Keygen's `POST /licenses`), `retrieve` a
/// lookup (`RetrieveActivationKeyHttp`, `GET /licenses?metadata…`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub token: usize,
    pub query: usize,
    pub license: usize,
    pub retrieve: usize,
    pub composite: usize,
    /// `query_more` and anything unrouted.
    pub other: usize,
}

impl Calls {
    /// Token, query, license, retrieve, composite; nothing else.
    pub const fn new(
        token: usize,
        query: usize,
        license: usize,
        retrieve: usize,
        composite: usize,
    ) -> Calls {
        Calls {
            token,
            query,
            license,
            retrieve,
            composite,
            other: 0,
        }
    }

    /// The plugin's calls to Salesforce and the license server in `record` (the route's
    /// upstream is not one of them).
    pub fn of(record: &[RecordedRequest]) -> Calls {
        let mut c = Calls::default();
        for r in record.iter().filter(|r| r.service != "upstream") {
            match r.endpoint {
                Endpoint::Token => c.token += 1,
                Endpoint::Query => c.query += 1,
                Endpoint::License | Endpoint::KeygenCreate => c.license += 1,
                Endpoint::Retrieve | Endpoint::KeygenList => c.retrieve += 1,
                Endpoint::Composite => c.composite += 1,
                Endpoint::Echo => {}
                Endpoint::QueryMore
                | Endpoint::Revoke
                | Endpoint::Update
                | Endpoint::Renew
                | Endpoint::Validate
                | Endpoint::Ping
                | Endpoint::KeygenRead
                | Endpoint::KeygenUpdate
                | Endpoint::KeygenSuspend
                | Endpoint::KeygenReinstate
                | Endpoint::KeygenRenew
                | Endpoint::KeygenPolicy
                | Endpoint::KeygenMe
                | Endpoint::Other => c.other += 1,
            }
        }
        c
    }
}

impl std::fmt::Display for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "token {} query {} license {} retrieve {} composite {}",
            self.token, self.query, self.license, self.retrieve, self.composite
        )?;
        if self.other > 0 {
            write!(f, " other {}", self.other)?;
        }
        Ok(())
    }
}

/// Waits until every injected fault has been used up and the stand-ins have recorded at least
/// `fired` faulted requests (a delayed reply is recorded only when its delay is over, and a
/// `delay` fault issues its key only then). Panics after [`SETTLE_TIMEOUT`].
pub fn settle(standins: &Standins, fired: usize) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let pending = standins.pending_faults();
        let recorded = standins
            .record()
            .iter()
            .filter(|r| r.fault.is_some())
            .count();
        if pending.is_empty() && recorded >= fired {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "faults did not play out within {SETTLE_TIMEOUT:?}: still pending {pending:?}, \
                 {recorded} of {fired} faulted requests recorded"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that exactly `lines` (OrderItem ids) have keys: one key each, issued once, and that
/// exactly these lines were written back, each with its key. Returns line → key.
pub fn assert_one_key_per_line(standins: &Standins, lines: &[String]) -> BTreeMap<String, String> {
    assert_one_key_each(&standins.issued(), standins, lines)
}

/// What the Keygen stand-in holds, as line → keys: each license by the OrderItem id keygate puts
/// in its metadata, in creation order.
pub fn keygen_issued(standins: &Standins) -> BTreeMap<String, Vec<String>> {
    let mut licenses: Vec<_> = standins.keygen_licenses().into_values().collect();
    licenses.sort_by_key(|l| l.created_seq);
    let mut issued: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in licenses {
        let line = l
            .metadata
            .get("salesforceOrderItemId")
            .and_then(|v| v.as_str());
        issued
            .entry(line.unwrap_or("").to_owned())
            .or_default()
            .push(l.key);
    }
    issued
}

/// [`assert_one_key_per_line`] against the Keygen stand-in: one license per line.
pub fn assert_one_license_per_line(
    standins: &Standins,
    lines: &[String],
) -> BTreeMap<String, String> {
    assert_one_key_each(&keygen_issued(standins), standins, lines)
}

fn assert_one_key_each(
    issued: &BTreeMap<String, Vec<String>>,
    standins: &Standins,
    lines: &[String],
) -> BTreeMap<String, String> {
    let writebacks = standins.writebacks();
    let wanted: BTreeSet<&str> = lines.iter().map(String::as_str).collect();

    let unexpected: Vec<_> = issued
        .iter()
        .filter(|(id, _)| !wanted.contains(id.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "keys issued for lines that should have none: {unexpected:?}"
    );
    let missing: Vec<_> = wanted
        .iter()
        .filter(|id| issued.get(**id).is_none_or(|k| k.is_empty()))
        .collect();
    assert!(missing.is_empty(), "lines without a key: {missing:?}");
    let duplicated: Vec<_> = issued.iter().filter(|(_, keys)| keys.len() != 1).collect();
    assert!(
        duplicated.is_empty(),
        "lines with more than one key issued (duplicate licensing): {duplicated:?}"
    );

    let mut keys = BTreeMap::new();
    for line in lines {
        let key = &issued[line][0];
        assert_eq!(
            writebacks.get(line),
            Some(key),
            "line {line}: written-back value is not its one key (all write-backs: {writebacks:?})"
        );
        keys.insert(line.clone(), key.clone());
    }
    let stray: Vec<_> = writebacks
        .keys()
        .filter(|id| !wanted.contains(id.as_str()))
        .collect();
    assert!(
        stray.is_empty(),
        "write-backs to unexpected lines: {stray:?}"
    );
    keys
}

/// A plugin-configuration patch under which a delivery's issuing marks (deadline + grace) expire
/// [`SHORT_MARK`] after it starts: for tests that restart Envoy and redeliver (a new Envoy waits
/// out another's unexpired mark as "busy").
pub fn short_issuing_marks() -> serde_json::Value {
    serde_json::json!({
        "deadline_ms": 3000,
        "license_server": {"timeout_ms": 2000},
        "ledger": {"pending_grace_ms": 500, "claim_ttl_ms": 13000},
    })
}

/// How long after its start a delivery's issuing mark holds under [`short_issuing_marks`].
pub const SHORT_MARK: std::time::Duration = std::time::Duration::from_millis(3500);

/// Salesforce's write-back field values that are keys (keygate's issuing marks left out).
pub fn keys_written_back(
    standins: &keygate_standins::Standins,
) -> std::collections::BTreeMap<String, String> {
    standins
        .writebacks()
        .into_iter()
        .filter(|(_, v)| !v.starts_with(keygate_standins::ISSUING_MARK))
        .collect()
}

/// Calls to `endpoint` the stand-ins saw.
pub fn count(standins: &Standins, endpoint: Endpoint) -> usize {
    standins
        .record()
        .iter()
        .filter(|r| r.endpoint == endpoint)
        .count()
}

/// The value Salesforce holds in `field` of order product `item` (the state field, say).
pub fn field_written(standins: &Standins, item: &str, field: &str) -> Option<String> {
    standins
        .writeback_fields()
        .get(item)?
        .get(field)?
        .as_str()
        .map(str::to_owned)
}

/// Delivers `message` as Salesforce does: to one replica, then after every fault again, to
/// whichever replica is next, until it is acked (or `limit` passes). Returns the faults seen.
pub fn deliver_until_acked(
    replicas: &[&crate::Gateway],
    message: &str,
    limit: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut faults = Vec::new();
    for gw in replicas.iter().cycle() {
        let r = gw.post_webhook(message);
        if crate::soap_reply::is_ack(&r) {
            break;
        }
        faults.push(crate::soap_reply::assert_server_fault(&r));
        assert!(
            Instant::now() < deadline,
            "not acked within {limit:?}; faults: {faults:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    faults
}

/// The etcd ledger's end state: every line written back with its key, no claim left behind.
pub fn assert_ledger_holds(etcd: &crate::etcd::EtcdCluster, keys: &BTreeMap<String, String>) {
    let held = etcd.keys("keygate/line/");
    assert_eq!(held.len(), keys.len(), "{held:?}");
    for (line, key) in keys {
        let value = held
            .iter()
            .find(|(k, _)| k.ends_with(line.as_str()))
            .map(|(_, v)| v.as_str());
        assert_eq!(value, Some(format!("W\n{key}").as_str()), "line {line}");
    }
    assert!(etcd.keys("keygate/claim/").is_empty(), "a claim was left");
}
