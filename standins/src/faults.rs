//! Injected misbehaviour. Faults for one endpoint are queued and consumed in order: the head of
//! the queue lets `skip` calls through cleanly, then shapes the next `times` calls, then is gone.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::record::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Reply with `status` and a plausible error body for that service.
    Status,
    /// Sleep `delay_ms`, then answer normally.
    Delay,
    /// Close the connection without answering (nothing is processed).
    Reset,
    /// 200 with a body no parser should accept.
    Garbage,
    /// 200 `text/plain` `Unauthorized`: one word, nothing issued (a proxy or a misconfigured
    /// server in front of the license server).
    Word,
    /// The normal answer (keys really issued), padded to 8 MiB with white space: a reply no
    /// client should read whole.
    Oversize,
    /// License server only (QLM's issue, revoke, update, renew; Keygen's create, update,
    /// suspend, reinstate, renew): really do it and record the outcome, then close without
    /// answering.
    IssueThenReset,
    /// License server only (the calls of `IssueThenReset`): really do it and record the
    /// outcome, then sleep `delay_ms` before answering.
    IssueThenDelay,
    /// The normal answer (the call really done), served as `text/html; charset=utf-8`: a proxy
    /// or a misconfigured server relabelling the reply.
    WrongContentType,
}

/// A fault request, as `POST /_standin/fault` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub endpoint: Endpoint,
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub times: u32,
    #[serde(default)]
    pub skip: u32,
    #[serde(default = "internal_error")]
    pub status: u16,
    #[serde(default)]
    pub delay_ms: u64,
}

fn one() -> u32 {
    1
}

fn internal_error() -> u16 {
    500
}

impl Fault {
    /// A fault of `kind` on the next call of `endpoint` (times 1, skip 0, status 500, no delay).
    pub fn new(endpoint: Endpoint, kind: FaultKind) -> Fault {
        Fault {
            endpoint,
            kind,
            times: 1,
            skip: 0,
            status: 500,
            delay_ms: 0,
        }
    }

    pub fn times(mut self, times: u32) -> Fault {
        self.times = times;
        self
    }

    pub fn skip(mut self, skip: u32) -> Fault {
        self.skip = skip;
        self
    }

    pub fn status(mut self, status: u16) -> Fault {
        self.status = status;
        self
    }

    pub fn delay_ms(mut self, delay_ms: u64) -> Fault {
        self.delay_ms = delay_ms;
        self
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.endpoint == Endpoint::Other {
            return Err("faults need a named endpoint".into());
        }
        if matches!(
            self.kind,
            FaultKind::IssueThenReset | FaultKind::IssueThenDelay
        ) && !matches!(
            self.endpoint,
            Endpoint::License
                | Endpoint::Revoke
                | Endpoint::Update
                | Endpoint::Renew
                | Endpoint::KeygenCreate
                | Endpoint::KeygenUpdate
                | Endpoint::KeygenSuspend
                | Endpoint::KeygenReinstate
                | Endpoint::KeygenRenew
        ) {
            return Err(format!(
                "{:?} applies to license-server calls that change state only",
                self.kind
            ));
        }
        if self.kind == FaultKind::Status && !(100..=599).contains(&self.status) {
            return Err(format!("status {} is not an HTTP status", self.status));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    queue: VecDeque<Fault>,
}

impl Faults {
    pub fn push(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.queue.push_back(fault);
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// The fault that applies to this call of `endpoint`, consuming one use of it.
    pub fn take(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let idx = self.queue.iter().position(|f| f.endpoint == endpoint)?;
        let head = self.queue.get_mut(idx)?;
        if head.skip > 0 {
            head.skip -= 1;
            return None;
        }
        head.times = head.times.saturating_sub(1);
        let fired = head.clone();
        if head.times == 0 {
            self.queue.remove(idx);
        }
        Some(fired)
    }

    pub fn pending(&self) -> Vec<Fault> {
        self.queue.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_then_times_then_next_in_order() {
        let mut f = Faults::default();
        f.push(
            Fault::new(Endpoint::License, FaultKind::Status)
                .skip(1)
                .times(2),
        );
        f.push(Fault::new(Endpoint::License, FaultKind::Reset));
        f.push(Fault::new(Endpoint::Token, FaultKind::Garbage));
        let kinds: Vec<Option<FaultKind>> = (0..5)
            .map(|_| f.take(Endpoint::License).map(|x| x.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                None,
                Some(FaultKind::Status),
                Some(FaultKind::Status),
                Some(FaultKind::Reset),
                None
            ]
        );
        assert_eq!(f.take(Endpoint::Query), None);
        assert_eq!(
            f.take(Endpoint::Token).map(|x| x.kind),
            Some(FaultKind::Garbage)
        );
        assert!(f.pending().is_empty());
    }

    #[test]
    fn validation_and_json_defaults() {
        let f: Fault =
            serde_json::from_str(r#"{"endpoint":"query_more","kind":"delay","delay_ms":5}"#)
                .unwrap();
        assert_eq!(
            f,
            Fault::new(Endpoint::QueryMore, FaultKind::Delay).delay_ms(5)
        );
        assert!(Fault::new(Endpoint::Query, FaultKind::IssueThenReset)
            .validate()
            .is_err());
        assert!(Fault::new(Endpoint::Validate, FaultKind::IssueThenReset)
            .validate()
            .is_err());
        assert!(Fault::new(Endpoint::Renew, FaultKind::IssueThenReset)
            .validate()
            .is_ok());
        assert!(Fault::new(Endpoint::License, FaultKind::IssueThenDelay)
            .validate()
            .is_ok());
        assert!(Fault::new(Endpoint::KeygenRenew, FaultKind::IssueThenReset)
            .validate()
            .is_ok());
        assert!(Fault::new(Endpoint::KeygenList, FaultKind::IssueThenDelay)
            .validate()
            .is_err());
        let f: Fault =
            serde_json::from_str(r#"{"endpoint":"keygen_create","kind":"wrong_content_type"}"#)
                .unwrap();
        assert_eq!(
            f,
            Fault::new(Endpoint::KeygenCreate, FaultKind::WrongContentType)
        );
        assert!(Fault::new(Endpoint::Other, FaultKind::Reset)
            .validate()
            .is_err());
        assert!(serde_json::from_str::<Fault>(
            r#"{"endpoint":"license","kind":"reset","tmies":2}"#
        )
        .is_err());
    }
}
