//! What the plugin answers Salesforce, and which counter each answer bumps.

use crate::metrics::Metric;
use crate::soap::{ack, fault, FaultCode};

/// Why a message was not acked; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The request or message is wrong (4xx other than auth).
    Client,
    /// Missing/wrong secret or an organization that is not allowed.
    Auth,
    /// Licensing is not configured (503: Salesforce keeps the message).
    Unconfigured,
    /// Salesforce or the license server failed; Salesforce will redeliver.
    Upstream,
    /// The per-message deadline was reached before everything was done.
    Deadline,
    /// Another request is working on one of the orders right now.
    Busy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Acked,
    Faulted(FaultKind),
}

/// A complete local reply (always `text/xml; charset=utf-8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub outcome: Outcome,
}

pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

impl Reply {
    pub fn ack() -> Reply {
        Reply {
            status: 200,
            body: ack().to_owned(),
            outcome: Outcome::Acked,
        }
    }

    /// A fault. 4xx statuses are `soapenv:Client`, 5xx `soapenv:Server`.
    pub fn fault(status: u16, kind: FaultKind, reason: &str) -> Reply {
        let code = if status >= 500 {
            FaultCode::Server
        } else {
            FaultCode::Client
        };
        Reply {
            status,
            body: fault(code, reason),
            outcome: Outcome::Faulted(kind),
        }
    }

    pub fn is_ack(&self) -> bool {
        self.outcome == Outcome::Acked
    }
}

/// The counter a reply adds to.
pub fn outcome_metric(o: &Outcome) -> Metric {
    match o {
        Outcome::Acked => Metric::MessagesAcked,
        Outcome::Faulted(FaultKind::Client) => Metric::FaultedClient,
        Outcome::Faulted(FaultKind::Auth) => Metric::FaultedAuth,
        Outcome::Faulted(FaultKind::Unconfigured) => Metric::FaultedUnconfigured,
        Outcome::Faulted(FaultKind::Upstream) => Metric::FaultedUpstream,
        Outcome::Faulted(FaultKind::Deadline) => Metric::FaultedDeadline,
        Outcome::Faulted(FaultKind::Busy) => Metric::FaultedBusy,
    }
}
