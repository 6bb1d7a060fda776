//! Delivery guarantees end to end (README, "Delivery guarantees"): a fault matrix over every callout
//! of a real Envoy running keygate.wasm against the stand-ins.
//!
//! Every case: inject the fault, deliver, check the first reply (a SOAP fault, or the ack where the
//! plugin absorbs the failure), let the fault play out (a delayed stand-in reply finishes, and may
//! still issue its key, after the plugin gave up), redeliver the SAME message, and then check from
//! the stand-ins' record that
//! - each delivery made exactly the expected calls (token, query, license, retrieve, composite);
//! - every line was looked up (QLM's RetrieveActivationKeyHttp, Keygen's metadata filter)
//!   before its first issue, as shared data cannot vouch for a line it does not know;
//! - the redelivery looked up exactly the lines whose license call failed or never went out, and
//!   issued only lines the license server had no key for;
//! - every order line of the message has exactly one key, issued once and written back;
//! - no secret reached Envoy's log.
//!
//! Timeouts are short (Salesforce and license server 500 ms, stand-in delays 1 s) so a case
//! takes about a second. Each case has its own gateway: the plugin's ledger lives in Envoy's shared
//! data, so a fresh Envoy is a fresh ledger.
//!
//! `cargo test -p keygate-e2e --test delivery -- --test-threads=2 --nocapture` prints one line per case.

use keygate_e2e::envoy::keygen_patches;
use keygate_e2e::exactly_once::{
    assert_one_key_per_line, assert_one_license_per_line, family_message, order_ref, refs_of,
    settle, Calls,
};
use keygate_e2e::soap_reply::{assert_ack_from, assert_no_leaks, assert_server_fault};
use keygate_e2e::{json, testdata, webhook_path_with_secret, Gateway, GatewayOptions, Response};
use keygate_standins::{
    family_item_id, sf_id18, Endpoint, Fault, FaultKind, RecordedRequest, DEMO_ITEM_ID,
    MULTI_LINE_ITEM_IDS,
};
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Plugin call timeouts for the matrix; the deadline stays far away (10 s).
const SF_TIMEOUT_MS: u64 = 500;
const LICENSE_TIMEOUT_MS: u64 = 500;
/// Longer than either timeout: the plugin gives up first, the stand-in answers later.
const SLOW_MS: u64 = 1000;
/// How long after a license call's timeout a line stays busy (the matrix waits it out before
/// redelivering; busy replies have their own tests).
const PENDING_GRACE_MS: u64 = 200;
/// The family order whose message warms the token cache before an `expire_tokens`.
const WARM_UP_ORDER: usize = 99;

// ---------------------------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------------------------

/// Which message a case delivers (twice).
#[derive(Clone, Copy, Debug)]
enum Message {
    /// testdata several.xml: the demo order (1 line) + the multi-line order (lines `001`, `002`
    /// mapped, `999` not) + a Draft order: 3 license calls, in this order with max_concurrency 1.
    Several,
    /// testdata hundred.xml: 100 family orders, one line each.
    Hundred,
}

impl Message {
    fn body(self) -> String {
        match self {
            Message::Several => testdata("soap/valid/several.xml"),
            Message::Hundred => testdata("soap/valid/hundred.xml"),
        }
    }

    /// The order lines that must end with exactly one key each (the mapped lines of the
    /// Activated orders), in license-call order.
    fn lines(self) -> Vec<String> {
        match self {
            Message::Several => several_lines(),
            Message::Hundred => (0..100).map(family_item_id).collect(),
        }
    }
}

fn several_lines() -> Vec<String> {
    vec![
        DEMO_ITEM_ID.to_owned(),
        MULTI_LINE_ITEM_IDS[0].to_owned(),
        MULTI_LINE_ITEM_IDS[1].to_owned(),
    ]
}

/// What the first delivery must answer.
#[derive(Clone, Debug)]
enum First {
    /// HTTP 500, `soapenv:Server`, a faultstring mentioning each of these.
    Fault(Vec<String>),
    /// The documented ack: the plugin absorbed the failure (one re-login after a 401).
    Ack,
}

fn fault_mentioning(words: &[&str]) -> First {
    First::Fault(words.iter().map(|w| w.to_string()).collect())
}

/// The license server a case runs against: the same matrix, the same guarantee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Qlm,
    Keygen,
}

impl Server {
    /// The call that issues a line's key.
    fn issue(self) -> Endpoint {
        match self {
            Server::Qlm => Endpoint::License,
            Server::Keygen => Endpoint::KeygenCreate,
        }
    }

    /// The lookup by the line's reference.
    fn lookup(self) -> Endpoint {
        match self {
            Server::Qlm => Endpoint::Retrieve,
            Server::Keygen => Endpoint::KeygenList,
        }
    }
}

struct Case {
    name: String,
    server: Server,
    message: Message,
    max_concurrency: u32,
    /// Deliver another message first (so a token is cached), then expire every token.
    expire_cached_token: bool,
    faults: Vec<Fault>,
    first: First,
    /// Calls of the first delivery, and of the redelivery (which must ack).
    first_calls: Calls,
    redelivery_calls: Calls,
}

/// One license-server misbehaviour of the matrix. `key_issued`: the stand-in issued the key
/// although the plugin never got it, so the redelivery must find it with
/// RetrieveActivationKeyHttp rather than issue a second one.
struct LicenseFault {
    name: &'static str,
    kind: FaultKind,
    delay_ms: u64,
    key_issued: bool,
}

const fn lf(name: &'static str, kind: FaultKind, delay_ms: u64, key_issued: bool) -> LicenseFault {
    LicenseFault {
        name,
        kind,
        delay_ms,
        key_issued,
    }
}

#[rustfmt::skip]
const LICENSE_FAULTS: [LicenseFault; 6] = [
    //  name                  kind                         delay     key issued anyway
    lf("status 500",          FaultKind::Status,           0,        false),
    // `delay` answers (and issues) once the delay is over: after the plugin timed out.
    lf("timeout",             FaultKind::Delay,            SLOW_MS,  true),
    lf("reset",               FaultKind::Reset,            0,        false),
    lf("garbage",             FaultKind::Garbage,          0,        false),
    lf("issue then timeout",  FaultKind::IssueThenDelay,   SLOW_MS,  true),
    lf("issue then reset",    FaultKind::IssueThenReset,   0,        true),
];

/// Which license call of several.xml fails (`skip` clean calls first; max_concurrency 1).
const POSITIONS: [(&str, u32); 3] = [("first", 0), ("middle", 1), ("last", 2)];

/// The whole matrix. `c(token, query, license, retrieve, composite)`: the calls each delivery
/// must make.
#[rustfmt::skip]
fn matrix() -> Vec<Case> {
    use Endpoint::{Composite, License, Query, Token};
    use FaultKind::{Delay, Garbage, Reset, Status};
    let f = Fault::new;
    let c = Calls::new;
    let case = |name: &str, faults: Vec<Fault>, first: First, first_calls, redelivery_calls| Case {
        name: name.to_owned(), server: Server::Qlm, message: Message::Several, max_concurrency: 1,
        expire_cached_token: false, faults, first, first_calls, redelivery_calls,
    };
    let ack = || First::Ack;
    let mentioning = fault_mentioning;
    let mut cases = Vec::new();

    // License server: every kind of failure at the first, a middle and the last call. Every line
    // is marked in Salesforce, then looked up before its first issue (shared data cannot vouch
    // for a line it does not know): two sObject Collections calls, the marks and the keys.
    // The other two lines are issued and written back; the failed one is looked up again on
    // redelivery and issued only if the license server has nothing for it.
    // The same for Keygen (its create and its metadata lookup in place of QLM's two methods).
    for (server, prefix) in [(Server::Qlm, "license"), (Server::Keygen, "keygen")] {
        for lic in &LICENSE_FAULTS {
            for (position, skip) in POSITIONS {
                let line = &several_lines()[skip as usize];
                cases.push(Case {
                    server,
                    ..case(
                        &format!("{prefix} {} at the {position} call", lic.name),
                        vec![f(server.issue(), lic.kind).skip(skip).delay_ms(lic.delay_ms)],
                        mentioning(&["license call", line]),
                        c(1, 1, 3, 3, 2),
                        c(0, 1, if lic.key_issued { 0 } else { 1 }, 1, 2),
                    )
                });
            }
        }
    }

    cases.extend([
        //    name                        faults                                        first reply                        first delivery    redelivery (ack)
        // Token endpoint down: nothing else happens; the redelivery logs in and does it all.
        case("token 503",                 vec![f(Token, Status).status(503)],           mentioning(&["Salesforce"]),       c(1, 0, 0, 0, 0), c(1, 1, 3, 3, 2)),
        case("token reset",               vec![f(Token, Reset)],                        mentioning(&["Salesforce"]),       c(1, 0, 0, 0, 0), c(1, 1, 3, 3, 2)),
        case("token timeout",             vec![f(Token, Delay).delay_ms(SLOW_MS)],      mentioning(&["Salesforce"]),       c(1, 0, 0, 0, 0), c(1, 1, 3, 3, 2)),
        // Query failed: not one license call.
        case("query 500",                 vec![f(Query, Status)],                       mentioning(&["order query"]),      c(1, 1, 0, 0, 0), c(0, 1, 3, 3, 2)),
        case("query reset",               vec![f(Query, Reset)],                        mentioning(&["order query"]),      c(1, 1, 0, 0, 0), c(0, 1, 3, 3, 2)),
        case("query timeout",             vec![f(Query, Delay).delay_ms(SLOW_MS)],      mentioning(&["order query"]),      c(1, 1, 0, 0, 0), c(0, 1, 3, 3, 2)),
        case("query garbage",             vec![f(Query, Garbage)],                      mentioning(&["order query"]),      c(1, 1, 0, 0, 0), c(0, 1, 3, 3, 2)),
        // The issuing marks refused: not one license call (nothing may go out unmarked).
        case("issuing marks 500",         vec![f(Composite, Status)],                   mentioning(&["could not mark line"]), c(1, 1, 0, 0, 1), c(0, 1, 3, 3, 2)),
        case("issuing marks reset",       vec![f(Composite, Reset)],                    mentioning(&["could not mark line"]), c(1, 1, 0, 0, 1), c(0, 1, 3, 3, 2)),
        // Write-back of the keys failed (the marks passed): the keys are recorded; the redelivery
        // only writes them back.
        case("write-back 500",            vec![f(Composite, Status).skip(1)],           mentioning(&["write-back"]),       c(1, 1, 3, 3, 2), c(0, 1, 0, 0, 1)),
        case("write-back reset",          vec![f(Composite, Reset).skip(1)],            mentioning(&["write-back"]),       c(1, 1, 3, 3, 2), c(0, 1, 0, 0, 1)),
        // The late write-back lands in Salesforce: the redelivery sees the keys there, writes nothing.
        case("write-back timeout",        vec![f(Composite, Delay).skip(1).delay_ms(SLOW_MS)], mentioning(&["write-back"]), c(1, 1, 3, 3, 2), c(0, 1, 0, 0, 0)),
        // 401 INVALID_SESSION_ID (the stand-in's body for an injected 401) in the middle of the
        // message: one re-login, the call retried once, ack.
        case("401 on the write-back",     vec![f(Composite, Status).status(401).skip(1)], ack(),                           c(2, 1, 3, 3, 3), c(0, 1, 0, 0, 0)),
        case("401 on the query",          vec![f(Query, Status).status(401)],           ack(),                             c(2, 2, 3, 3, 2), c(0, 1, 0, 0, 0)),
        // Still 401 after the re-login: no second re-login, a fault; the redelivery logs in afresh.
        case("401 on the query, twice",   vec![f(Query, Status).status(401).times(2)],  mentioning(&["session"]),          c(2, 2, 0, 0, 0), c(1, 1, 3, 3, 2)),
    ]);
    // The cached token expired between two deliveries (expire_tokens): one re-login, ack.
    cases.push(Case {
        expire_cached_token: true,
        ..case("401 from an expired cached token", vec![], ack(), c(1, 2, 3, 3, 2), c(0, 1, 0, 0, 0))
    });
    // 100 notifications, license calls 41..=46 fail (4 in flight): 94 keys written back at once,
    // the redelivery looks up the 6 and issues them.
    cases.push(Case {
        message: Message::Hundred,
        max_concurrency: 4,
        ..case(
            "100 notifications, license 500 on calls 41-46",
            vec![f(License, Status).skip(40).times(6)],
            mentioning(&["license call", "and 3 more"]),
            c(1, 1, 100, 100, 2),
            c(0, 1, 6, 6, 2),
        )
    });
    cases
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

fn options(server: Server, max_concurrency: u32) -> GatewayOptions {
    let mut options = GatewayOptions::default();
    if server == Server::Keygen {
        for patch in keygen_patches() {
            options = options.patch(patch);
        }
    }
    options.patch(json!({
        "deadline_ms": 10000,
        "salesforce": { "timeout_ms": SF_TIMEOUT_MS },
        "license_server": { "timeout_ms": LICENSE_TIMEOUT_MS, "max_concurrency": max_concurrency },
        "ledger": { "pending_grace_ms": PENDING_GRACE_MS },
    }))
}

/// Lines whose issuing call misbehaved (the stand-in recorded a fault on it).
fn faulted_license_lines(server: Server, record: &[RecordedRequest]) -> BTreeSet<String> {
    record
        .iter()
        .filter(|r| r.endpoint == server.issue() && r.fault.is_some())
        .filter_map(order_ref)
        .collect()
}

fn run_case(case: &Case) {
    let started = Instant::now();
    let gw = Gateway::start(options(case.server, case.max_concurrency));
    let (issue, lookup) = (case.server.issue(), case.server.lookup());
    let standins = &gw.standins;
    let body = case.message.body();
    let mut lines = case.message.lines();
    if case.expire_cached_token {
        assert_ack_from(&gw.post_webhook(family_message([WARM_UP_ORDER])), &gw);
        standins.expire_tokens();
        lines.push(family_item_id(WARM_UP_ORDER));
    }

    // 1. Fault, first delivery.
    let mark = standins.record().len();
    for f in &case.faults {
        standins.inject_fault(f.clone()).expect("fault accepted");
    }
    let sent = Instant::now();
    let first = gw.post_webhook(&body);
    let first_ms = sent.elapsed().as_millis();
    let first_text = match &case.first {
        First::Ack => {
            assert_ack_from(&first, &gw);
            "ack".to_owned()
        }
        First::Fault(mentions) => {
            let faultstring = assert_server_fault(&first);
            for m in mentions {
                assert!(
                    faultstring.contains(m.as_str()),
                    "faultstring does not mention {m:?}: {faultstring}"
                );
            }
            assert_eq!(
                gw.counter("keygate_messages_faulted_upstream"),
                1,
                "stats: {:?}",
                gw.stats()
            );
            "fault".to_owned()
        }
    };

    // 2. Heal: every injected fault used up, delayed replies finished.
    let fired: u32 = case.faults.iter().map(|f| f.times).sum();
    settle(standins, fired as usize);
    let record = standins.record();
    let first_record = record[mark..].to_vec();
    let first_calls = Calls::of(&first_record);
    let uncertain = faulted_license_lines(case.server, &first_record);
    // A line whose license call got no answer is busy for timeout + grace after the call began.
    if !uncertain.is_empty() {
        std::thread::sleep(Duration::from_millis(LICENSE_TIMEOUT_MS + PENDING_GRACE_MS));
    }
    // Lines the first delivery never tried are unknown to the ledger: looked up before issuing.
    let tried: BTreeSet<String> = refs_of(&first_record, issue).into_iter().collect();
    let must_look_up: BTreeSet<String> = case
        .message
        .lines()
        .into_iter()
        .filter(|l| uncertain.contains(l) || !tried.contains(l))
        .collect();

    // 3. Redelivery of the same message: ack.
    let mark = record.len();
    let recovered_before = gw.counter("keygate_licenses_recovered");
    let second = gw.post_webhook(&body);
    assert_ack_from(&second, &gw);
    let record = standins.record();
    let second_record = &record[mark..];
    let redelivery_calls = Calls::of(second_record);

    // 4. The guarantee: exactly one key per line, written back; nothing leaked.
    match case.server {
        Server::Qlm => assert_one_key_per_line(standins, &lines),
        Server::Keygen => assert_one_license_per_line(standins, &lines),
    };
    assert_no_leaks(&gw);

    // 5. How it got there: the calls of each delivery.
    assert_eq!(
        first_calls, case.first_calls,
        "first delivery: unexpected calls\nrecord: {first_record:#?}"
    );
    assert_eq!(
        redelivery_calls, case.redelivery_calls,
        "redelivery: unexpected calls\nrecord: {second_record:#?}"
    );
    // Exactly the lines whose license call misbehaved or never went out are looked up, each
    // before it is issued, and issued only when the lookup found nothing; each one found counts
    // as recovered.
    let looked_up: BTreeSet<String> = refs_of(second_record, lookup).into_iter().collect();
    assert_eq!(
        looked_up, must_look_up,
        "redelivery looked up other lines than the failed and untried ones: {second_record:#?}"
    );
    let reissued: Vec<String> = refs_of(second_record, issue);
    for line in &reissued {
        let position = |endpoint| {
            second_record
                .iter()
                .position(|r| r.endpoint == endpoint && order_ref(r).as_ref() == Some(line))
        };
        let (looked, issued) = (position(lookup), position(issue));
        assert!(
            looked.is_some() && looked < issued,
            "line {line} issued again without a lookup first: {second_record:#?}"
        );
    }
    assert_eq!(
        gw.counter("keygate_licenses_recovered") - recovered_before,
        (looked_up.len() - reissued.len()) as u64,
        "stats: {:?}",
        gw.stats()
    );
    println!(
        "{:<42} first: {first_text} in {first_ms} ms [{first_calls}]; redelivery: ack [{redelivery_calls}]; {} line(s), one key each ({} ms)",
        case.name,
        lines.len(),
        started.elapsed().as_millis()
    );
}

/// Runs every matrix case whose name starts with `prefix` (each even if an earlier one failed),
/// then fails listing the failed ones.
fn run_matrix(prefix: &str) {
    let cases: Vec<Case> = matrix()
        .into_iter()
        .filter(|c| c.name.starts_with(prefix))
        .collect();
    assert!(!cases.is_empty(), "no matrix case named {prefix:?}…");
    let failed: Vec<&str> = cases
        .iter()
        .filter(|case| catch_unwind(AssertUnwindSafe(|| run_case(case))).is_err())
        .map(|case| case.name.as_str())
        .collect();
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}

/// Keygen under the same license faults at the same three positions (18 cases): the same
/// calls, the same lookups, one license per line.
#[test]
fn keygen_faults_at_first_middle_last() {
    run_matrix("keygen ");
}

#[test]
fn license_status_500_at_first_middle_last() {
    run_matrix("license status 500 ");
}

#[test]
fn license_timeout_at_first_middle_last() {
    run_matrix("license timeout ");
}

#[test]
fn license_reset_at_first_middle_last() {
    run_matrix("license reset ");
}

#[test]
fn license_garbage_at_first_middle_last() {
    run_matrix("license garbage ");
}

#[test]
fn license_issue_then_timeout_is_found_not_reissued() {
    run_matrix("license issue then timeout ");
}

#[test]
fn license_issue_then_reset_is_found_not_reissued() {
    run_matrix("license issue then reset ");
}

#[test]
fn token_endpoint_down() {
    run_matrix("token ");
}

#[test]
fn query_failures() {
    run_matrix("query ");
}

#[test]
fn write_back_failures() {
    run_matrix("write-back ");
}

#[test]
fn issuing_mark_failures() {
    run_matrix("issuing marks ");
}

#[test]
fn invalid_session_relogs_in_once() {
    run_matrix("401 ");
}

#[test]
fn hundred_notifications_after_a_partial_failure() {
    run_matrix("100 notifications");
}

// ---------------------------------------------------------------------------------------------
// Cases that need their own choreography
// ---------------------------------------------------------------------------------------------

/// deadline_ms 1000, license calls of 600 ms one at a time: the first line is licensed, the second
/// call is cut by the deadline (outcome unknown: the stand-in issues its key after), the third
/// never starts, nor the write-back. The fault comes at ~1 s; the redelivery finishes the job.
#[test]
fn deadline_cuts_a_slow_message_and_the_redelivery_finishes_it() {
    let started = Instant::now();
    // No grace: the cut call's stand-in answer (600 ms) comes after its cut timeout (~400 ms).
    let gw = Gateway::start(GatewayOptions::default().patch(json!({
        "deadline_ms": 1000,
        "license_server": { "timeout_ms": 5000, "max_concurrency": 1 },
        "ledger": { "pending_grace_ms": 0 },
    })));
    let standins = &gw.standins;
    let lines = several_lines();
    standins
        .inject_fault(
            Fault::new(Endpoint::License, FaultKind::Delay)
                .times(2)
                .delay_ms(600),
        )
        .unwrap();

    let sent = Instant::now();
    let first = gw.post_webhook(testdata("soap/valid/several.xml"));
    let took = sent.elapsed();
    let faultstring = assert_server_fault(&first);
    assert!(
        faultstring.contains("deadline"),
        "faultstring does not mention the deadline: {faultstring}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the deadline fault took {took:?}"
    );
    assert_eq!(
        gw.counter("keygate_messages_faulted_deadline"),
        1,
        "stats: {:?}",
        gw.stats()
    );

    println!(
        "{:<42} first: fault in {} ms: {faultstring}",
        "deadline 1000 ms, license 600 ms each",
        took.as_millis()
    );

    settle(standins, 2);
    let record = standins.record();
    assert_eq!(
        Calls::of(&record),
        Calls::new(1, 1, 2, 2, 1),
        "first delivery (the issuing marks, no write-back): {record:#?}"
    );
    assert_eq!(refs_of(&record, Endpoint::License), lines[..2].to_vec());
    assert_eq!(refs_of(&record, Endpoint::Retrieve), lines[..2].to_vec());

    let mark = record.len();
    assert_ack_from(&gw.post_webhook(testdata("soap/valid/several.xml")), &gw);
    let record = standins.record();
    let second = &record[mark..];
    assert_one_key_per_line(standins, &lines);
    assert_no_leaks(&gw);
    // The cut line is looked up (and found); the line whose call never started is looked up
    // like any line the ledger does not know (not busy: it was never marked pending), found
    // nothing, issued; the first line is only written back.
    assert_eq!(
        refs_of(second, Endpoint::Retrieve),
        lines[1..].to_vec(),
        "redelivery looked up other lines than the cut one and the never started one"
    );
    assert_eq!(
        Calls::of(second),
        Calls::new(0, 1, 1, 2, 2),
        "redelivery: {second:#?}"
    );
    assert_eq!(refs_of(second, Endpoint::License), vec![lines[2].clone()]);
    assert_eq!(gw.counter("keygate_licenses_recovered"), 1);
    println!(
        "{:<42} redelivery: ack [{}]; 3 line(s), one key each ({} ms)",
        "deadline 1000 ms, license 600 ms each",
        Calls::of(second),
        started.elapsed().as_millis()
    );
}

/// Salesforce hangs up (client timeout 300 ms) while a license call is in flight; that call
/// issues its key and answers 1.5 s later. A redelivery while that call may still be running
/// (its 2 s timeout, no grace here) is told "busy"; the one after it finds the key instead of
/// issuing again.
#[test]
fn client_hanging_up_mid_call_leaves_a_key_the_redelivery_finds() {
    let started = Instant::now();
    let gw = Gateway::start(GatewayOptions::default().patch(json!({
        "license_server": { "timeout_ms": 2000 },
        "ledger": { "pending_grace_ms": 0 },
    })));
    let standins = &gw.standins;
    let lines = several_lines();
    let body = testdata("soap/valid/several.xml");
    standins
        .inject_fault(Fault::new(Endpoint::License, FaultKind::IssueThenDelay).delay_ms(1500))
        .unwrap();

    let headers = [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", "\"\""),
    ];
    let hung_up = gw.request_with_timeout(
        "POST",
        &webhook_path_with_secret(),
        &headers,
        body.as_bytes(),
        Duration::from_millis(300),
    );
    assert!(
        hung_up.is_err(),
        "the gateway answered before the client gave up: {hung_up:?}"
    );
    let until = Instant::now() + Duration::from_secs(5);
    while !gw.envoy_log().contains("downstream went away") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        gw.envoy_log().contains("downstream went away"),
        "the plugin did not notice the hang-up:\n{}",
        gw.log_tail(20)
    );

    settle(standins, 1);
    let record = standins.record();
    assert_eq!(
        Calls::of(&record),
        Calls::new(1, 1, 3, 3, 1),
        "abandoned delivery (the issuing marks, no write-back): {record:#?}"
    );
    let slow_line: Vec<String> = faulted_license_lines(Server::Qlm, &record)
        .into_iter()
        .collect();
    assert_eq!(slow_line.len(), 1);
    assert_eq!(
        standins.issued().len(),
        3,
        "every line has a key on the license server already"
    );

    // At once: the slow line is busy (Envoy cancelled its call, so the plugin cannot know it
    // ended); the other two are written back.
    let mark = record.len();
    let busy = assert_server_fault(&gw.post_webhook(&body));
    assert!(
        busy.contains(&format!(
            "line {}: an earlier license call may still be running",
            slow_line[0]
        )),
        "{busy}"
    );
    assert_eq!(gw.counter("keygate_messages_faulted_busy"), 1);
    assert_eq!(gw.counter("keygate_lines_busy"), 1);
    let record = standins.record();
    assert_eq!(
        Calls::of(&record[mark..]),
        Calls::new(0, 1, 0, 0, 1),
        "busy redelivery"
    );

    std::thread::sleep(Duration::from_millis(600));
    let mark = record.len();
    assert_ack_from(&gw.post_webhook(&body), &gw);
    let record = standins.record();
    let second = &record[mark..];
    assert_one_key_per_line(standins, &lines);
    assert_no_leaks(&gw);
    assert_eq!(
        Calls::of(second),
        Calls::new(0, 1, 0, 1, 2),
        "redelivery (the slow line marked again, looked up, written back): {second:#?}"
    );
    assert_eq!(refs_of(second, Endpoint::Retrieve), slow_line);
    assert_eq!(gw.counter("keygate_licenses_recovered"), 1);
    println!(
        "{:<42} first: client gone after 300 ms; redelivery: ack, {} found; 3 line(s), one key each ({} ms)",
        "client hangs up mid license call",
        slow_line[0],
        started.elapsed().as_millis()
    );
}

/// The lookup itself fails on the redelivery (RetrieveActivationKeyHttp 500, reset, garbage,
/// timeout): the plugin must not issue blind. A fault, the line stays pending, and the third
/// delivery finds the key issued (unseen) by the first.
#[test]
fn failed_lookup_keeps_the_line_pending() {
    const LOOKUP_FAULTS: [(&str, FaultKind, u64); 4] = [
        ("status 500", FaultKind::Status, 0),
        ("reset", FaultKind::Reset, 0),
        ("garbage", FaultKind::Garbage, 0),
        ("timeout", FaultKind::Delay, SLOW_MS),
    ];
    let failed: Vec<&str> = LOOKUP_FAULTS
        .iter()
        .filter(|(name, kind, delay_ms)| {
            catch_unwind(AssertUnwindSafe(|| {
                failed_lookup_case(name, *kind, *delay_ms)
            }))
            .is_err()
        })
        .map(|(name, _, _)| *name)
        .collect();
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}

fn failed_lookup_case(name: &str, kind: FaultKind, delay_ms: u64) {
    let started = Instant::now();
    let gw = Gateway::start(options(Server::Qlm, 1));
    let standins = &gw.standins;
    let lines = several_lines();
    let body = testdata("soap/valid/several.xml");
    // First delivery: the first line's key is issued, the reply lost.
    standins
        .inject_fault(Fault::new(Endpoint::License, FaultKind::IssueThenReset))
        .unwrap();
    assert_server_fault(&gw.post_webhook(&body));
    settle(standins, 1);

    // Second delivery: the lookup of that line fails.
    standins
        .inject_fault(Fault::new(Endpoint::Retrieve, kind).delay_ms(delay_ms))
        .unwrap();
    let mark = standins.record().len();
    let faultstring = assert_server_fault(&gw.post_webhook(&body));
    assert!(
        faultstring.contains("could not check for keys already issued"),
        "{faultstring}"
    );
    settle(standins, 2);
    let record = standins.record();
    let second = Calls::of(&record[mark..]);

    // Third delivery: the lookup works and finds the key.
    let mark = record.len();
    assert_ack_from(&gw.post_webhook(&body), &gw);
    let record = standins.record();
    let third = Calls::of(&record[mark..]);
    assert_one_key_per_line(standins, &lines);
    assert_no_leaks(&gw);
    assert_eq!(
        second,
        Calls::new(0, 1, 0, 1, 1),
        "delivery with the failed lookup (its line marked first)"
    );
    assert_eq!(third, Calls::new(0, 1, 0, 1, 2), "delivery after it");
    assert_eq!(
        refs_of(&record[mark..], Endpoint::Retrieve),
        vec![lines[0].clone()]
    );
    println!(
        "{:<42} fault [{second}]; then ack [{third}]; 3 line(s), one key each ({} ms)",
        format!("lookup {name} on redelivery"),
        started.elapsed().as_millis()
    );
}

/// The ledger is bounded (`ledger.max_lines`, FIFO). A line whose license call may still be
/// running (pending, within its call's timeout + grace) is never evicted; any other line may be,
/// because a line the ledger does not know is looked up before it is issued. Here max_lines is 4
/// and 3 other lines are licensed between the failed delivery and its redelivery.
#[test]
fn lines_pushed_out_of_the_ledger_are_not_licensed_twice() {
    // A ledger of 4 lines. The 3 lines of several.xml are left unfinished in two ways, then a
    // message of 3 newer lines arrives and pushes the oldest lines out.
    // (case, fault on the first delivery, lines looked up on redelivery, redelivery calls)
    #[rustfmt::skip]
    let cases = [
        // The pending line (key issued, reply lost) stays; the two written-back lines make room.
        ("pending line kept in a full ledger",
         Fault::new(Endpoint::License, FaultKind::IssueThenReset), vec![DEMO_ITEM_ID.to_owned()], Calls::new(0, 1, 0, 1, 2)),
        // Issued, not written back (the marks passed, the keys' write-back failed): the two oldest
        // are pushed out, and found again by lookup (this Envoy's own marks: no wait).
        ("unwritten lines pushed out are found again",
         Fault::new(Endpoint::Composite, FaultKind::Status).skip(1), several_lines()[..2].to_vec(), Calls::new(0, 1, 0, 2, 2)),
    ];
    let failed: Vec<&str> = cases
        .iter()
        .filter(|(name, fault, looked_up, calls)| {
            catch_unwind(AssertUnwindSafe(|| {
                evicted_case(name, fault.clone(), looked_up, *calls)
            }))
            .is_err()
        })
        .map(|(name, ..)| *name)
        .collect();
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}

fn evicted_case(name: &str, fault: Fault, looked_up: &[String], calls: Calls) {
    let started = Instant::now();
    let gw = Gateway::start(options(Server::Qlm, 1).patch(json!({ "ledger": { "max_lines": 4 } })));
    let standins = &gw.standins;
    let body = testdata("soap/valid/several.xml");
    let newer = family_message(0..3);
    standins.inject_fault(fault).unwrap();
    assert_server_fault(&gw.post_webhook(&body));
    settle(standins, 1);
    // Other orders come: three newer lines want room in the ledger.
    assert_ack_from(&gw.post_webhook(&newer), &gw);

    // Past the pending line's busy window (its call's timeout + grace).
    std::thread::sleep(Duration::from_millis(LICENSE_TIMEOUT_MS + PENDING_GRACE_MS));
    let mark = standins.record().len();
    assert_ack_from(&gw.post_webhook(&body), &gw);
    let record = standins.record();
    let redelivery = Calls::of(&record[mark..]);
    let mut lines = several_lines();
    lines.extend((0..3).map(family_item_id));
    assert_one_key_per_line(standins, &lines);
    assert_no_leaks(&gw);
    assert_eq!(refs_of(&record[mark..], Endpoint::Retrieve), looked_up);
    assert_eq!(redelivery, calls);
    println!(
        "{name:<42} redelivery: ack [{redelivery}]; 6 line(s), one key each ({} ms)",
        started.elapsed().as_millis()
    );
}

/// How one of two simultaneous deliveries ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ack,
    Busy,
}

fn ack_or_busy(r: &Response) -> Outcome {
    if r.status == 200 {
        assert!(r.text().contains("<Ack>true</Ack>"), "{}", r.text());
        return Outcome::Ack;
    }
    let faultstring = assert_server_fault(r);
    assert!(
        faultstring.contains("being processed by another request"),
        "neither an ack nor a busy fault: {faultstring}"
    );
    Outcome::Busy
}

/// Posts every body at once (one thread each, released together) and returns the replies.
fn post_at_once(gw: &Gateway, bodies: &[&str]) -> Vec<Response> {
    let barrier = Barrier::new(bodies.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|body| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    gw.post_webhook(body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Redelivers each busy message (the other delivery has finished): each must ack without
/// licensing anything.
fn redeliver_busy(gw: &Gateway, bodies: &[&str], outcomes: &[Outcome]) {
    for (body, outcome) in bodies.iter().zip(outcomes) {
        if *outcome == Outcome::Busy {
            let mark = gw.standins.record().len();
            assert_ack_from(&gw.post_webhook(body), gw);
            let record = gw.standins.record();
            assert_eq!(
                Calls::of(&record[mark..]),
                Calls::new(0, 1, 0, 0, 0),
                "redelivery after busy"
            );
        }
    }
}

/// The same message twice at once on two Envoy workers, with a slow license server so both
/// overlap: one is licensed, the other gets the busy fault; one set of keys. Five rounds, each on
/// fresh orders, to give the race room to show.
#[test]
fn the_same_message_twice_at_once_is_licensed_once() {
    const ROUNDS: usize = 5;
    const ORDERS_PER_ROUND: usize = 3;
    let started = Instant::now();
    let gw = Gateway::start(
        GatewayOptions::default()
            .concurrency(2)
            .patch(json!({ "license_server": { "timeout_ms": 3000 } })),
    );
    let standins = &gw.standins;
    let mut all_lines = Vec::new();
    let mut busy = 0;
    for round in 0..ROUNDS {
        let orders = round * ORDERS_PER_ROUND..(round + 1) * ORDERS_PER_ROUND;
        let lines: Vec<String> = orders.clone().map(family_item_id).collect();
        let body = family_message(orders);
        standins
            .inject_fault(
                Fault::new(Endpoint::License, FaultKind::Delay)
                    .times(ORDERS_PER_ROUND as u32)
                    .delay_ms(300),
            )
            .unwrap();
        let mark = standins.record().len();
        let bodies = [body.as_str(), body.as_str()];
        let outcomes: Vec<Outcome> = post_at_once(&gw, &bodies).iter().map(ack_or_busy).collect();
        assert!(
            outcomes.contains(&Outcome::Ack),
            "round {round}: neither delivery acked: {outcomes:?}"
        );
        busy += outcomes.iter().filter(|o| **o == Outcome::Busy).count();
        settle(standins, (round + 1) * ORDERS_PER_ROUND);
        redeliver_busy(&gw, &bodies, &outcomes);

        let record = standins.record();
        let mut licensed = refs_of(&record[mark..], Endpoint::License);
        licensed.sort();
        assert_eq!(licensed, lines, "round {round}: one license call per line");
        all_lines.extend(lines);
        assert_one_key_per_line(standins, &all_lines);
        println!(
            "{:<42} round {round}: {outcomes:?}; one key per line",
            "same message twice at once"
        );
    }
    assert_eq!(
        gw.counter("keygate_messages_faulted_busy"),
        busy as u64,
        "stats: {:?}",
        gw.stats()
    );
    assert!(
        busy > 0,
        "the two deliveries never overlapped in {ROUNDS} rounds (busy fault never seen)"
    );
    assert_no_leaks(&gw);
    println!(
        "{:<42} {busy} busy fault(s) in {ROUNDS} rounds; {} line(s), one key each ({} ms)",
        "same message twice at once",
        all_lines.len(),
        started.elapsed().as_millis()
    );
}

/// The demo order in two different messages (different Notification Id), at once and then again
/// one after the other: one key.
#[test]
fn the_same_order_in_two_messages_is_licensed_once() {
    let started = Instant::now();
    let gw = Gateway::start(
        GatewayOptions::default()
            .concurrency(2)
            .patch(json!({ "license_server": { "timeout_ms": 3000 } })),
    );
    let standins = &gw.standins;
    let one = testdata("soap/valid/activated_one.xml");
    let other_id = sf_id18("04l5Y00002lRDRZ");
    let other = one.replace("04l5Y00002lRDRNQA4", &other_id);
    assert_ne!(
        one, other,
        "fixture no longer has notification 04l5Y00002lRDRNQA4"
    );

    standins
        .inject_fault(Fault::new(Endpoint::License, FaultKind::Delay).delay_ms(300))
        .unwrap();
    let bodies = [one.as_str(), other.as_str()];
    let outcomes: Vec<Outcome> = post_at_once(&gw, &bodies).iter().map(ack_or_busy).collect();
    assert!(
        outcomes.contains(&Outcome::Ack),
        "neither message acked: {outcomes:?}"
    );
    settle(standins, 1);
    redeliver_busy(&gw, &bodies, &outcomes);

    // Salesforce redelivers both later: nothing more to license.
    let mark = standins.record().len();
    for body in bodies {
        assert_ack_from(&gw.post_webhook(body), &gw);
    }
    let record = standins.record();
    assert_one_key_per_line(standins, &[DEMO_ITEM_ID.to_owned()]);
    assert_no_leaks(&gw);
    assert_eq!(Calls::of(&record[mark..]), Calls::new(0, 2, 0, 0, 0));
    assert_eq!(
        refs_of(&record, Endpoint::License),
        vec![DEMO_ITEM_ID.to_owned()]
    );
    println!(
        "{:<42} at once: {outcomes:?}; then both again: ack, ack; 1 line, one key ({} ms)",
        "same order in two messages",
        started.elapsed().as_millis()
    );
}
