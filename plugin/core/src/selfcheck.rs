//! The start-up self-check: once a configuration is loaded, and again with backoff while anything
//! is not ready, the plugin asks each upstream what a delivery will ask of it, and says in one
//! log line per problem what to change. It never blocks traffic: messages are handled as usual
//! meanwhile, and fail (and are redelivered) for the same reasons.
//!
//! One round, sans-IO like the flow (events in, [`Command`]s out):
//! - a QLM license server: `PingHttp` (reachable, the path right), and
//!   `RetrieveActivationKeyHttp` signed as deliveries sign it, for a reference no line can have
//!   (credentials, strict authentication, the method enabled, the gateway's address allowed);
//! - a Keygen license server: `GET /me` (the token valid, the account reachable) and
//!   `GET /policies/{id}` for each policy a product maps to (it exists, the token may read it);
//! - Salesforce: a token request (the app and its credentials). The token is not kept: the
//!   self-check only observes, so what a delivery does never depends on whether a round ran
//!   first. A refused login is not tried again for [`LOGIN_REFUSED_PAUSE_MS`], so a wrong
//!   password never locks the user out.
//!
//! Every call of a round carries [`PROBE_HEADER`], so an upstream's logs (and the stand-ins)
//! can tell the self-check's traffic from deliveries'.
//!
//! Each upstream's gauge (`keygate_upstream_ready{upstream}`) is 1 after a round it passed, 0
//! otherwise. Every worker's VM ticks; a schedule in shared data (claimed with compare-and-swap)
//! lets one of them run each round.

use std::rc::Rc;

use crate::config::{Config, Issuing, KeygenConfig, LicenseServer, QlmConfig};
use crate::flow::{Call, Command, Env, Level, Response};
use crate::license::{self, HttpRequest, LicenseError, Refusal};
use crate::metrics::Gauge;
use crate::salesforce::{self, SalesforceError};
use crate::store::StoreError;

/// The reference the signed lookup asks for: not a Salesforce id, so no line has it.
pub const PROBE_REFERENCE: &str = "keygate-self-check";
/// Sent with every self-check call (`x-keygate-self-check: 1`); outside the strict-auth hash,
/// which covers only `X-Qlm…` headers.
pub const PROBE_HEADER: &str = "x-keygate-self-check";
/// The first retry after a failed round; doubled after each failure up to [`MAX_BACKOFF_MS`].
pub const FIRST_BACKOFF_MS: u64 = 5_000;
pub const MAX_BACKOFF_MS: u64 = 300_000;
/// After a round that passed: checked again this much later (an upstream can change).
pub const RECHECK_MS: u64 = 3_600_000;
/// A refused Salesforce login is not tried again before this (lock-out policies count failures).
pub const LOGIN_REFUSED_PAUSE_MS: u64 = 300_000;

/// When the next round is due, shared by every worker (shared data, `{state_prefix}:selfcheck`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Schedule {
    pub due_ms: u64,
    pub backoff_ms: u64,
    /// No Salesforce login before this (the last one was refused).
    pub login_after_ms: u64,
}

impl Schedule {
    fn key(cfg: &Config) -> String {
        format!("{}:selfcheck", cfg.state_prefix)
    }

    fn encode(&self) -> String {
        format!(
            "{} {} {}",
            self.due_ms, self.backoff_ms, self.login_after_ms
        )
    }

    fn decode(bytes: &[u8]) -> Option<Schedule> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut n = text.split(' ').map(|v| v.parse::<u64>().ok());
        Some(Schedule {
            due_ms: n.next()??,
            backoff_ms: n.next()??,
            login_after_ms: n.next()??,
        })
    }

    /// The schedule as the shared data holds it.
    pub fn read(cfg: &Config, env: &Env<'_>) -> Option<Schedule> {
        env.store
            .get(&Schedule::key(cfg))
            .and_then(|(v, _)| Schedule::decode(&v))
    }
}

/// What one probe is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    Ping,
    Lookup,
    /// Keygen's `GET /me`.
    Me,
    /// Keygen's `GET /policies/{id}`, for the products that map to it.
    Policy {
        id: String,
        codes: Vec<String>,
    },
    Login,
}

/// One round of the self-check.
pub struct SelfCheck {
    cfg: Rc<Config>,
    schedule: Schedule,
    next_id: u32,
    pending: Vec<(u32, Probe)>,
    /// What the license server's answers showed wrong so far.
    license_problems: Vec<String>,
    /// `None` while not asked or not answered; `Some(problem)` (`None` inside: passed).
    login: Option<Option<String>>,
    login_refused: bool,
    out: Vec<Command>,
}

/// Make the schedule exist, so that the first round is claimed with compare-and-swap.
pub fn init(cfg: &Config, env: &mut Env<'_>) {
    let key = Schedule::key(cfg);
    if env.store.get(&key).is_none() {
        let _ = env
            .store
            .set(&key, Schedule::default().encode().as_bytes(), None);
    }
}

/// A worker's tick: starts a round when one is due and this worker claims it. The round's
/// calls are in the commands; its responses go to [`SelfCheck::on_response`].
pub fn tick(cfg: &Rc<Config>, env: &mut Env<'_>) -> Option<(SelfCheck, Vec<Command>)> {
    let issuing = cfg.issuing.as_ref()?;
    let key = Schedule::key(cfg);
    let (bytes, cas) = env.store.get(&key)?;
    let schedule = Schedule::decode(&bytes).unwrap_or_default();
    if env.now_ms < schedule.due_ms {
        return None;
    }
    // Claimed until every call of the round can have timed out; the round's end sets the next.
    let lease = issuing
        .license
        .timeout_ms
        .max(issuing.salesforce.timeout_ms)
        .saturating_mul(2)
        .saturating_add(5_000);
    let claimed = Schedule {
        due_ms: env.now_ms.saturating_add(lease),
        ..schedule
    };
    match env.store.set(&key, claimed.encode().as_bytes(), Some(cas)) {
        Ok(()) => {}
        Err(StoreError::CasMismatch | StoreError::Unavailable | StoreError::Full) => return None,
    }
    let mut check = SelfCheck {
        cfg: Rc::clone(cfg),
        schedule,
        next_id: 1,
        pending: Vec::new(),
        license_problems: Vec::new(),
        login: None,
        login_refused: false,
        out: Vec::new(),
    };
    check.start(issuing, env);
    let out = std::mem::take(&mut check.out);
    Some((check, out))
}

impl SelfCheck {
    fn start(&mut self, issuing: &Issuing, env: &mut Env<'_>) {
        let lic = &issuing.license;
        let probes: Vec<(Probe, HttpRequest)> = match &lic.server {
            LicenseServer::Qlm(qlm) => vec![
                (Probe::Ping, license::ping().to_http(qlm, env.now_ms)),
                (
                    Probe::Lookup,
                    license::lookup(qlm, PROBE_REFERENCE).to_http(qlm, env.now_ms),
                ),
            ],
            LicenseServer::Keygen(keygen) => {
                let mut probes = vec![(Probe::Me, license::Keygen { cfg: keygen }.me())];
                // One call per policy, naming every product that maps to it.
                let mut policies: Vec<(String, Vec<String>)> = Vec::new();
                for (code, product) in &issuing.products {
                    let Some(terms) = product.keygen() else {
                        continue;
                    };
                    match policies.iter_mut().find(|(id, _)| *id == terms.policy) {
                        Some((_, codes)) => codes.push(code.clone()),
                        None => policies.push((terms.policy.clone(), vec![code.clone()])),
                    }
                }
                for (id, codes) in policies {
                    let http = license::Keygen { cfg: keygen }.policy(&id);
                    probes.push((Probe::Policy { id, codes }, http));
                }
                probes
            }
        };
        for (probe, http) in probes {
            self.dispatch(
                probe,
                Call {
                    id: 0,
                    cluster: lic.cluster.clone(),
                    method: http.verb,
                    path: http.path,
                    authority: lic.authority.clone(),
                    headers: http.headers,
                    body: http.body,
                    timeout_ms: lic.timeout_ms,
                    reply_headers: &["content-type"],
                },
            );
        }
        let sf = &issuing.salesforce;
        if env.now_ms < self.schedule.login_after_ms {
            self.login = Some(Some(format!(
                "Salesforce: the last login was refused; not tried again for {} s, so that a wrong password never locks the user out",
                (self.schedule.login_after_ms - env.now_ms).div_ceil(1000)
            )));
            self.login_refused = true;
        } else {
            self.dispatch(
                Probe::Login,
                Call {
                    id: 0,
                    cluster: sf.cluster.clone(),
                    method: "POST",
                    path: salesforce::TOKEN_PATH.to_owned(),
                    authority: sf.authority.clone(),
                    headers: vec![
                        (
                            "content-type",
                            "application/x-www-form-urlencoded".to_owned(),
                        ),
                        ("accept", "application/json".to_owned()),
                    ],
                    body: salesforce::token_request_body(sf).into_bytes(),
                    timeout_ms: sf.timeout_ms,
                    reply_headers: &[],
                },
            );
        }
    }

    fn dispatch(&mut self, probe: Probe, mut call: Call) {
        call.headers.push((PROBE_HEADER, "1".to_owned()));
        call.id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.pending.push((call.id, probe));
        self.out.push(Command::Dispatch(call));
    }

    pub fn is_finished(&self) -> bool {
        self.pending.is_empty()
    }

    /// The response of call `id` (a refused dispatch too, as a response without status).
    pub fn on_response(&mut self, id: u32, resp: Response, env: &mut Env<'_>) -> Vec<Command> {
        let Some(pos) = self.pending.iter().position(|(i, _)| *i == id) else {
            return Vec::new();
        };
        let (_, probe) = self.pending.swap_remove(pos);
        let problem = match probe {
            Probe::Ping => self.on_ping(&resp),
            Probe::Lookup => self.on_lookup(&resp),
            Probe::Me => self.on_keygen(&resp, "GET /me", &[]),
            Probe::Policy { id, codes } => self.on_keygen(&resp, &format!("policy {id}"), &codes),
            Probe::Login => {
                self.login = Some(self.on_login(&resp));
                None
            }
        };
        self.license_problems.extend(problem);
        if self.pending.is_empty() {
            self.finish(env);
        }
        std::mem::take(&mut self.out)
    }

    fn license_cfg(&self) -> Option<&crate::config::LicenseConfig> {
        self.cfg.issuing.as_ref().map(|i| &i.license)
    }

    fn qlm_cfg(&self) -> Option<&QlmConfig> {
        self.license_cfg().and_then(|l| l.qlm())
    }

    fn keygen_cfg(&self) -> Option<&KeygenConfig> {
        self.license_cfg().and_then(|l| l.keygen())
    }

    /// A Keygen probe's answer: `what` is the call, `codes` the products mapped to the policy.
    fn on_keygen(&mut self, resp: &Response, what: &str, codes: &[String]) -> Option<String> {
        let cluster = self.license_cfg().map_or("", |l| l.cluster.as_str());
        // The self-check reads no time off a reply.
        let Some(reply) = resp.license_reply(0) else {
            return Some(format!(
                "license server unreachable: Keygen's {what} got no answer through cluster '{cluster}' (is the cluster defined, its address and TLS right, the server up?)"
            ));
        };
        let status = reply.status;
        let refused = license::keygen_read_policy(&reply).err()?;
        let (token_env, account) = self
            .keygen_cfg()
            .map_or(("", ""), |k| (k.token_env.as_str(), k.account.as_str()));
        Some(match (status, codes.is_empty()) {
            (401 | 403, _) => format!(
                "license server: Keygen refused the token for {what} ({refused}): check the variable {token_env} holds a product, environment or admin token of account {account}"
            ),
            (404, true) => format!(
                "license server: Keygen's account {account} not found ({refused}): check license_server.account"
            ),
            (404, false) => format!(
                "license server: Keygen has no {what} ({refused}): products {} map to it; check the policy's id (and that the token's product owns it)",
                codes.join(", ")
            ),
            (s @ 502..=504, _) => format!(
                "license server unreachable: Keygen's {what} answered HTTP {s} through cluster '{cluster}'"
            ),
            _ => format!("license server: Keygen's {what}: {refused}"),
        })
    }

    fn on_ping(&mut self, resp: &Response) -> Option<String> {
        let cluster = self.license_cfg().map_or("", |l| l.cluster.as_str());
        let Some(status) = resp.status else {
            return Some(format!(
                "license server unreachable: PingHttp got no answer through cluster '{cluster}' (is the cluster defined, its address right, the server up?)"
            ));
        };
        match license::parse_ping(status, &resp.body) {
            Ok(version) => {
                self.log(
                    Level::Info,
                    format!("self-check: license server reachable (QLM {version})"),
                );
                None
            }
            Err(LicenseError::Status(s @ (502..=504))) => Some(format!(
                "license server unreachable: PingHttp answered HTTP {s} through cluster '{cluster}' (is the server up and the cluster's address right?)"
            )),
            Err(LicenseError::Status(404)) => Some(
                "license server: PingHttp not found (HTTP 404): check license_server.path_prefix (/qlmLicenseServer/qlmservice.asmx, or /Qlm/QlmLicenseServerNetCore/api/v1/QlmApi for the .NET Core server)".into(),
            ),
            Err(e) => Some(self.advice("PingHttp", &e)),
        }
    }

    fn on_lookup(&mut self, resp: &Response) -> Option<String> {
        let Some(status) = resp.status else {
            return Some(
                "license server: RetrieveActivationKeyHttp got no answer (reset or timeout)".into(),
            );
        };
        match license::parse_keys(status, &resp.body) {
            Ok(_) => None,
            Err(e) => Some(self.advice(license::QLM_LOOKUP, &e)),
        }
    }

    /// What to change, for a refused or failed license call.
    fn advice(&self, method: &str, e: &LicenseError) -> String {
        let Some(lic) = self.qlm_cfg() else {
            return format!("license server: {method}: {e}");
        };
        let LicenseError::Refused(text) = e else {
            return format!("license server: {method}: {e}");
        };
        match Refusal::of(text) {
            Refusal::StrictAuthentication => match &lic.strict_auth {
                None => format!(
                    "license server: {method} requires strict authentication ({text}): set license_server.strict_auth with the API key of the 3rd-party extension '{}' (QLM console: Manage Keys > 3rd party extensions)",
                    lic.vendor
                ),
                Some(s) => format!(
                    "license server: strict authentication refused for {method} ({text}): check the API key in the variable license_server.strict_auth.api_key_env names against the 3rd-party extension '{}', strict_auth.url_base (signed as {}; the server hashes the URL it sees), and this host's clock (UTC, within the server's security/strictAuthenticationTimestampTolerance)",
                    lic.vendor, s.url_base
                ),
            },
            Refusal::MethodDisabled => format!(
                "license server: {method} is disabled ({text}): set the server property {} to true",
                license::server_property(method)
            ),
            Refusal::AddressNotAllowed => format!(
                "license server: this gateway's address is not allowed to call {method} ({text}): add the gateway's egress address to the server's allowed IP addresses (server property httpAdminMethodsAllowedIPAddresses)"
            ),
            Refusal::Credentials => format!(
                "license server: credentials refused for {method} ({text}): check the variables license_server.user_env and password_env name against the user and password of the 3rd-party extension '{}'",
                lic.vendor
            ),
            Refusal::UnknownKey | Refusal::Other => {
                format!("license server: {method} refused: {text}")
            }
        }
    }

    fn on_login(&mut self, resp: &Response) -> Option<String> {
        let Some(status) = resp.status else {
            return Some(format!(
                "Salesforce unreachable: the token request got no answer through cluster '{}'",
                self.cfg
                    .issuing
                    .as_ref()
                    .map_or("", |i| i.salesforce.cluster.as_str())
            ));
        };
        match salesforce::parse_token(status, &resp.body) {
            Ok(_) => None,
            Err(SalesforceError::LoginRefused { error, description }) => {
                self.login_refused = true;
                Some(format!(
                    "Salesforce login refused ({error}: {description}): check salesforce.grant and the variables its *_env fields name against the External Client App (consumer key and secret, Client Credentials Flow enabled, a Run As user) and salesforce.authority (your My Domain host); not tried again for {} s",
                    LOGIN_REFUSED_PAUSE_MS / 1000
                ))
            }
            Err(e) => Some(format!("Salesforce token request failed: {e}")),
        }
    }

    fn finish(&mut self, env: &mut Env<'_>) {
        let license_problems = std::mem::take(&mut self.license_problems);
        let login_problem = self.login.take().flatten();
        let license_ready = license_problems.is_empty();
        let salesforce_ready = login_problem.is_none();
        for problem in license_problems.iter().chain(login_problem.iter()) {
            self.log(Level::Error, format!("self-check: {problem}"));
        }
        self.out.push(Command::Gauge(
            Gauge::LicenseReady,
            u64::from(license_ready),
        ));
        self.out.push(Command::Gauge(
            Gauge::SalesforceReady,
            u64::from(salesforce_ready),
        ));
        let ready = license_ready && salesforce_ready;
        let backoff_ms = if ready {
            0
        } else {
            self.schedule
                .backoff_ms
                .saturating_mul(2)
                .clamp(FIRST_BACKOFF_MS, MAX_BACKOFF_MS)
        };
        let next = Schedule {
            due_ms: env
                .now_ms
                .saturating_add(if ready { RECHECK_MS } else { backoff_ms }),
            backoff_ms,
            login_after_ms: if self.login_refused {
                self.schedule
                    .login_after_ms
                    .max(env.now_ms.saturating_add(LOGIN_REFUSED_PAUSE_MS))
            } else {
                0
            },
        };
        if ready {
            self.log(
                Level::Info,
                "self-check: Salesforce and the license server are ready".into(),
            );
        } else {
            self.log(
                Level::Warn,
                format!(
                    "self-check: not ready; checked again in {} s",
                    (next.due_ms - env.now_ms) / 1000
                ),
            );
        }
        let _ = env
            .store
            .set(&Schedule::key(&self.cfg), next.encode().as_bytes(), None);
    }

    fn log(&mut self, level: Level, msg: String) {
        self.out.push(Command::Log(level, excerpt_line(msg)));
    }
}

/// One log line stays one line (the server's words are already cut by `excerpt`).
fn excerpt_line(msg: String) -> String {
    if msg.contains(['\n', '\r']) {
        msg.replace(['\n', '\r'], " ")
    } else {
        msg
    }
}
