//! Loopback stand-ins for Salesforce and the license server (plus an echo upstream), for the
//! end-to-end tests and the demo. The HTTP contract is in `docs/architecture.md` ("Stand-ins HTTP
//! contract"); the wire formats follow `wire-formats.md` §2, §3 and §5.
//!
//! The license listener serves two license servers: QLM (`/qlmLicenseServer/qlmservice.asmx/…`)
//! and Keygen's JSON:API (`/v1/accounts/{account}/…`, account [`KEYGEN_ACCOUNT`], product token
//! [`KEYGEN_TOKEN`], policies [`KEYGEN_POLICY_PERPETUAL`] and [`KEYGEN_POLICY_ANNUAL`]), as
//! `keygen-sh/keygen-api`'s source answers: licenses created, looked up by metadata, read,
//! updated, suspended, reinstated and renewed; `GET /policies/{id}`, `GET /me`; Keygen's error
//! documents; Rack::Attack's throttle once [`Standins::set_keygen_rate_limit`] switches it on.
//! Documented reply shapes and their sources are in `testdata/keygen/`; what a test leaves
//! behind is [`Standins::keygen_licenses`].
//!
//! ```no_run
//! use keygate_standins::{Standins, StandinsConfig, Fault, FaultKind, Endpoint};
//! let standins = Standins::start(StandinsConfig::default())?;
//! standins.inject_fault(Fault::new(Endpoint::License, FaultKind::Reset))?;
//! println!("salesforce at {}", standins.salesforce_url());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clock;
mod faults;
mod http;
mod ids;
mod keygen;
mod license;
mod record;
mod salesforce;
mod state;
mod strict;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

pub use faults::{Fault, FaultKind};
pub use ids::{family_item_id, family_order_id, sf_id18, FAMILY_SIZE};
pub use keygen::{
    expiry_after as keygen_expiry_after, KeygenLicense, KeygenRateLimit, ACCOUNT as KEYGEN_ACCOUNT,
    ACCOUNT_ID as KEYGEN_ACCOUNT_ID, ANNUAL_DURATION_S as KEYGEN_ANNUAL_DURATION_S,
    CONTENT_TYPE as KEYGEN_CONTENT_TYPE, POLICY_ANNUAL as KEYGEN_POLICY_ANNUAL,
    POLICY_PERPETUAL as KEYGEN_POLICY_PERPETUAL, PRODUCT_ID as KEYGEN_PRODUCT_ID,
    TOKEN as KEYGEN_TOKEN, TOKEN_ID as KEYGEN_TOKEN_ID,
};
pub use license::{
    KeyState, PATH_PREFIX as LICENSE_PATH_PREFIX, QLM_API_KEY, QLM_PASSWORD, QLM_USER,
};
pub use record::{Endpoint, EndpointStats, RecordedRequest, Service};
pub use salesforce::{CLIENT_ID, CLIENT_SECRET, ISSUING_MARK, ORG_ID, PASSWORD, USERNAME};
pub use state::{OVERSIZE_BYTES, SELF_CHECK_HEADER, TRUNCATED_BODY};
/// Written-back fields of one order product, by field name.
pub type FieldMap = serde_json::Map<String, serde_json::Value>;

use http::Server;
use state::{Listener, Shared};

/// The demo order: Activated, Acme, BillToContact Jane Doe, one line of product `001` × 3.
pub const DEMO_ORDER_ID: &str = "8015Y000001AbCdQAK";
/// Its one order product.
pub const DEMO_ITEM_ID: &str = "8025Y00000AbCdEQAV";
/// Activated, three lines (`001` × 1, `002` × 2, unmapped `999` × 5), CustomerAuthorizedBy set,
/// BillToContact null.
pub const MULTI_LINE_ORDER_ID: &str = "8015Y000001MuLtQAK";
/// Its order products, in line order (`001`, `002`, `999`).
pub const MULTI_LINE_ITEM_IDS: [&str; 3] = [
    "8025Y000001MuL1QAK",
    "8025Y000001MuL2QAK",
    "8025Y000001MuL3QAK",
];
/// Status `Draft`, one line of `001` × 1.
pub const DRAFT_ORDER_ID: &str = "8015Y000001DrAfQAK";
/// Activated, `OrderItems: null` (no order products).
pub const NO_ITEMS_ORDER_ID: &str = "8015Y000001NoItQAK";
/// A reduction order of the demo order (`IsReductionOrder`): one line reducing the demo line by
/// 1 (`Quantity` −1, `OriginalOrderItem` 3 → `AvailableQuantity` 2).
pub const REDUCTION_ORDER_ID: &str = "8015Y00000ReDuCQAV";
pub const REDUCTION_ITEM_ID: &str = "8025Y00000ReDu1QAF";
/// A subscription: one line of `002` × 1.
pub const SUBSCRIPTION_ORDER_ID: &str = "8015Y00000SuBsCQAV";
pub const SUBSCRIPTION_ITEM_ID: &str = "8025Y00000SuBs1QAF";
/// Its renewal: one line of `002-RENEW` × 1 whose `Renews__c` names the subscription's line.
pub const RENEWAL_ORDER_ID: &str = "8015Y00000ReNeWQAV";
pub const RENEWAL_ITEM_ID: &str = "8025Y00000ReNe1QAF";

/// Where `testdata/salesforce/orders.json` is in this workspace (resolved at compile time, so
/// in-process users do not depend on their working directory).
pub fn default_orders_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("testdata")
        .join("salesforce")
        .join("orders.json")
}

#[derive(Debug, Clone)]
pub struct StandinsConfig {
    pub salesforce_addr: SocketAddr,
    pub license_addr: SocketAddr,
    pub upstream_addr: SocketAddr,
    pub orders_path: PathBuf,
    /// Records per query page (Salesforce's default is 2000); at least 1.
    pub page_size: usize,
    /// Answer `GetActivationKeyWithExpiryDate` with the bare key(s) instead of QLM's XML.
    pub plain_text_keys: bool,
    /// The OrderItem field `writebacks()` reports (any `__c` field can be written).
    pub writeback_field: String,
    /// Print one line per request to stdout (secrets masked).
    pub log_requests: bool,
}

impl Default for StandinsConfig {
    /// Ephemeral loopback ports, the workspace fixture, page size 2000, XML keys, no logging.
    fn default() -> StandinsConfig {
        let ephemeral = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        StandinsConfig {
            salesforce_addr: ephemeral,
            license_addr: ephemeral,
            upstream_addr: ephemeral,
            orders_path: default_orders_path(),
            page_size: 2000,
            plain_text_keys: false,
            writeback_field: "License_Keys__c".to_owned(),
            log_requests: false,
        }
    }
}

/// The running stand-ins. Dropping it (or `shutdown`) closes the listeners and connections.
pub struct Standins {
    shared: Arc<Shared>,
    salesforce: Server,
    license: Server,
    upstream: Server,
}

fn bind(what: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{what} stand-in: cannot bind {addr}: {e}"),
        )
    })
}

/// `http://ADDR` for a bound address; an unspecified IP is reached through loopback.
fn url_of(mut addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

impl Standins {
    /// Loads the fixture, binds the three listeners and starts serving.
    pub fn start(config: StandinsConfig) -> io::Result<Standins> {
        let orders = salesforce::Orders::load(&config.orders_path)?;
        let sf_listener = bind("salesforce", config.salesforce_addr)?;
        let license_listener = bind("license", config.license_addr)?;
        let upstream_listener = bind("upstream", config.upstream_addr)?;
        let shared = Arc::new(Shared::new(
            orders,
            url_of(sf_listener.local_addr()?),
            config.page_size,
            config.plain_text_keys,
            config.writeback_field,
            config.log_requests,
        ));
        let start = |listener, service| {
            let handler = Arc::new(Listener {
                shared: shared.clone(),
                service,
            });
            Server::start(listener, service.as_str(), handler)
        };
        Ok(Standins {
            salesforce: start(sf_listener, Service::Salesforce)?,
            license: start(license_listener, Service::License)?,
            upstream: start(upstream_listener, Service::Upstream)?,
            shared,
        })
    }

    pub fn salesforce_addr(&self) -> SocketAddr {
        self.salesforce.local_addr()
    }

    pub fn license_addr(&self) -> SocketAddr {
        self.license.local_addr()
    }

    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream.local_addr()
    }

    /// The Salesforce stand-in's base URL, as the token reply's `instance_url` gives it.
    pub fn salesforce_url(&self) -> String {
        self.shared.salesforce_url.clone()
    }

    pub fn license_url(&self) -> String {
        url_of(self.license_addr())
    }

    pub fn upstream_url(&self) -> String {
        url_of(self.upstream_addr())
    }

    /// The Keygen stand-in's account URL: `http://ADDR/v1/accounts/acme` (the license listener).
    pub fn keygen_url(&self) -> String {
        format!("{}/v1/accounts/{KEYGEN_ACCOUNT}", self.license_url())
    }

    /// Ids of every order in the fixture.
    pub fn order_ids(&self) -> Vec<String> {
        self.shared.orders.ids()
    }

    /// Every request so far (control requests excluded), in arrival order.
    pub fn record(&self) -> Vec<RecordedRequest> {
        self.shared.record()
    }

    /// License-server calls being served right now (the self-check's left out).
    pub fn license_in_flight(&self) -> u64 {
        self.shared.license_in_flight()
    }

    /// The most license-server calls served at once (keygate's deliveries; the self-check's
    /// left out) since the start or the last reset.
    pub fn license_max_in_flight(&self) -> u64 {
        self.shared.license_max_in_flight()
    }

    /// keygate's start-up self-check calls (header `x-keygate-self-check`), kept out of
    /// `record` and the stats, and never given an injected fault.
    pub fn probes(&self) -> Vec<RecordedRequest> {
        self.shared.probes()
    }

    /// `is_userdata1` (the reference keygate sends) → keys issued under it, in issue order.
    pub fn issued(&self) -> BTreeMap<String, Vec<String>> {
        self.shared.issued()
    }

    /// Key → what the license server holds for it (revoked, activations, expiry).
    pub fn keys(&self) -> BTreeMap<String, KeyState> {
        self.shared.keys()
    }

    /// OrderItem id → written value of the configured write-back field.
    pub fn writebacks(&self) -> BTreeMap<String, String> {
        self.shared.writebacks()
    }

    /// OrderItem id → every field written to it.
    pub fn writeback_fields(&self) -> BTreeMap<String, FieldMap> {
        self.shared.writeback_fields()
    }

    pub fn stats(&self) -> BTreeMap<String, EndpointStats> {
        self.shared.stats()
    }

    /// Key → what the Keygen stand-in holds for each license created since the start or the
    /// last reset (suspension, expiry, seats, metadata as the API answers it, renewals).
    pub fn keygen_licenses(&self) -> BTreeMap<String, KeygenLicense> {
        self.shared.keygen_licenses()
    }

    /// Keygen's throttle (Rack::Attack): `Some((limit, window_s))` allows `limit` Keygen calls
    /// per fixed window of `window_s` seconds (0 is taken as 1); the next call gets 429
    /// `TOO_MANY_REQUESTS` with `X-RateLimit-*` and `Retry-After` and does nothing. While on,
    /// every Keygen reply carries the `X-RateLimit-*` headers. `None` (the default): off.
    /// Setting it starts the count over.
    pub fn set_keygen_rate_limit(&self, limit: Option<(u32, u64)>) {
        self.shared.set_keygen_rate_limit(
            limit.map(|(limit, window_s)| KeygenRateLimit { limit, window_s }),
        );
    }

    /// Forgets record, stats, issued keys, write-backs, faults, tokens, query cursors and the
    /// Keygen licenses, and restores the configured page size and key format and every
    /// license-server switch (strict authentication, disabled methods, allowed IPs,
    /// `issue_keeps_orderid`, the Keygen throttle).
    pub fn reset(&self) {
        self.shared.reset()
    }

    /// Queues a fault; rejects `issue_then_*` outside the license-server calls that change state, and `other`.
    pub fn inject_fault(&self, fault: Fault) -> Result<(), String> {
        self.shared.inject_fault(fault)
    }

    /// Faults not yet used up.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.shared.pending_faults()
    }

    /// Drops every fault not yet used up (the stand-ins behave from now on).
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Every token issued so far now gets 401 INVALID_SESSION_ID.
    pub fn expire_tokens(&self) {
        self.shared.expire_tokens()
    }

    /// Records per query page; 0 is treated as 1.
    pub fn set_page_size(&self, n: usize) {
        self.shared.set_page_size(n)
    }

    pub fn set_plain_text_keys(&self, on: bool) {
        self.shared.set_plain_text_keys(on)
    }

    /// OrderItems per page of an order's OrderItems subquery; 0 is treated as 1.
    pub fn set_items_page_size(&self, n: usize) {
        self.shared.lock().items_page_size = n.max(1);
    }

    /// From now on, a write-back of keys to these OrderItems (15 or 18 characters) fails with
    /// `FIELD_CUSTOM_VALIDATION_EXCEPTION` (keygate's issuing marks still pass); an empty list
    /// accepts every write again.
    pub fn refuse_writeback(&self, items: &[&str]) {
        let full = items
            .iter()
            .map(|i| self.shared.orders.item_id18(i))
            .collect();
        self.shared.lock().refuse_writeback = full;
    }

    /// From now on, keygate's issuing mark on these OrderItems fails with
    /// `FIELD_CUSTOM_VALIDATION_EXCEPTION`; an empty list accepts them again.
    pub fn refuse_marks(&self, items: &[&str]) {
        let full = items
            .iter()
            .map(|i| self.shared.orders.item_id18(i))
            .collect();
        self.shared.lock().refuse_marks = full;
    }

    /// Off: the lifecycle methods (RevokeLicenseHttp, UpdateLicenseHttp, RenewSubscriptionHttp)
    /// are refused as QLM refuses them when their server property (`enableRevokeLicense`, …) is
    /// not enabled; on: they are taken out of [`set_disabled_methods`](Self::set_disabled_methods)'s
    /// list. `reset` turns them back on.
    pub fn set_lifecycle_enabled(&self, on: bool) {
        self.shared.lock().license.set_lifecycle_enabled(on);
    }

    /// The methods whose `enable…` server property is off (replacing the list): a call gets
    /// `Error: This feature is disabled. Set the server property enable… to true.` Default none.
    pub fn set_disabled_methods(&self, methods: &[&str]) {
        self.shared.lock().license.disabled_methods =
            methods.iter().map(|m| (*m).to_owned()).collect();
    }

    /// `security/strictAuthenticationHttpMethods` (replacing the list). Default
    /// `["RetrieveActivationKeyHttp"]`, as QLM's; `&[]` switches strict authentication off.
    pub fn set_strict_auth_methods(&self, methods: &[&str]) {
        self.shared.lock().license.strict_auth_methods =
            methods.iter().map(|m| (*m).to_owned()).collect();
    }

    /// The URL base strict authentication hashes (`{base}/{Method}?{query}`). `None` (the
    /// default): `https://{Host header}/qlmLicenseServer/qlmservice.asmx`.
    pub fn set_strict_url_base(&self, base: Option<&str>) {
        self.shared.lock().license.strict_url_base = base.map(str::to_owned);
    }

    /// `security/strictAuthenticationTimestampTolerance` in seconds (default 300; QLM's own
    /// default is not documented).
    pub fn set_strict_timestamp_tolerance_s(&self, secs: u64) {
        self.shared.lock().license.strict_timestamp_tolerance_s = secs;
    }

    /// `httpAdminMethodsAllowedIPAddresses`: addresses or CIDR blocks allowed to call every
    /// method but PingHttp; `None` (the default) allows every caller. Err for an entry that is
    /// neither (nothing changes then).
    pub fn set_allowed_ips(&self, ips: Option<&[&str]>) -> Result<(), String> {
        let list = ips.map(|l| l.iter().map(|s| (*s).to_owned()).collect());
        self.shared.lock().license.set_allowed_ips(list)
    }

    /// On: issue records `is_orderid` with the keys, so the lookup can match it. Off (the
    /// default): dropped, as a stock server is assumed to (not a documented argument of
    /// GetActivationKeyWithExpiryDate).
    pub fn set_issue_keeps_orderid(&self, on: bool) {
        self.shared.lock().license.issue_keeps_orderid = on;
    }

    /// From now on the query answers `status` as the Status of `order` (15 or 18 characters), as
    /// when an admin cancels or reactivates it; `reset` restores the fixture's.
    pub fn set_order_status(&self, order: &str, status: &str) {
        let mut state = self.shared.lock();
        if let Some(id) = self.shared.orders.order_id18(order) {
            state.order_status.insert(id, status.to_owned());
        }
    }

    /// Stops accepting and closes open connections. Idempotent; `Drop` calls it.
    pub fn shutdown(&mut self) {
        self.salesforce.shutdown();
        self.license.shutdown();
        self.upstream.shutdown();
    }
}

impl Drop for Standins {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The strict-authentication headers for a call to `url` (`https://host/…/Method?query`, the
/// query exactly as it will be sent) at `timestamp` (`yyyy-MM-dd HH:mm:ss`, UTC), signed with
/// [`QLM_API_KEY`], version 2, under the C# sample's header names. For callers of the stand-in
/// that are not keygate (the plugin computes its own).
pub fn strict_auth_headers(url: &str, timestamp: &str) -> [(&'static str, String); 3] {
    let hash = strict::hmac_hex(QLM_API_KEY, &strict::message(url, timestamp, "2", ':'));
    [
        ("X-Qlm-Authentication-Token", hash),
        ("X-Qlm-Timestamp", timestamp.to_owned()),
        ("X-Qlm-Authentication-Version", "2".to_owned()),
    ]
}

/// Now, UTC, as `X-Qlm-Timestamp` carries it (`yyyy-MM-dd HH:mm:ss`).
pub fn qlm_timestamp_now() -> String {
    clock::datetime(clock::now())
}
