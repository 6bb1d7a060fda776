//! The Salesforce calls the flow sends: the shared token (a login first when there is none) and
//! each REST call with it. What their replies mean is `salesforce_calls`.

use super::*;

impl Flow {
    pub(super) fn token_key(&self) -> String {
        salesforce::token_key(&self.cfg.state_prefix)
    }

    /// A Salesforce REST call with the shared token, or a login first when there is none.
    pub(super) fn sf_call(&mut self, call: SfCall, env: &mut Env<'_>) {
        let token = env
            .store
            .get(&self.token_key())
            .and_then(|(v, cas)| Some((Token::from_shared(&v)?, cas)));
        match token {
            Some((t, cas)) => {
                self.salesforce.token_cas = Some(cas);
                self.dispatch_sf(call, &t, env);
            }
            None => self.login(call, env),
        }
    }

    pub(super) fn login(&mut self, then: SfCall, env: &mut Env<'_>) {
        let Some(i) = self.issuing() else { return };
        let sf = &i.salesforce;
        let (cluster, authority, timeout) =
            (sf.cluster.clone(), sf.authority.clone(), sf.timeout_ms);
        let body = salesforce::token_request_body(sf).into_bytes();
        let headers = vec![
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("accept", "application/json".to_owned()),
        ];
        self.dispatch(
            Awaiting::Login { then },
            Call {
                id: 0,
                cluster,
                method: "POST",
                path: salesforce::TOKEN_PATH.to_owned(),
                authority,
                headers,
                body,
                timeout_ms: timeout,
                reply_headers: &[],
            },
            env,
        );
    }

    pub(super) fn dispatch_sf(&mut self, call: SfCall, token: &Token, env: &mut Env<'_>) {
        let Some(i) = self.issuing() else { return };
        let sf = &i.salesforce;
        let (cluster, timeout) = (sf.cluster.clone(), sf.timeout_ms);
        let mut headers = vec![
            (
                "authorization",
                format!("Bearer {}", token.access_token.expose()),
            ),
            ("accept", "application/json".to_owned()),
        ];
        let (method, path, body) = match &call {
            SfCall::Query { path } | SfCall::Items { path, .. } => {
                ("GET", path.clone(), Vec::new())
            }
            SfCall::WriteBack { lines, mark_for } => {
                let fields = salesforce::WriteBackFields {
                    keys: sf.writeback_field.as_deref().filter(|_| mark_for.is_none()),
                    state: sf.state_field.as_deref(),
                };
                headers.push(("content-type", "application/json".to_owned()));
                (
                    "PATCH",
                    salesforce::writeback_path(&sf.api_version),
                    salesforce::writeback_body(fields, lines).into_bytes(),
                )
            }
            SfCall::IssueMarks { marks, .. } => {
                // The state field when there is one, else the write-back field (`mark_field`).
                let fields = match sf.state_field.as_deref() {
                    Some(state) => salesforce::WriteBackFields {
                        keys: None,
                        state: Some(state),
                    },
                    None => salesforce::WriteBackFields {
                        keys: sf.writeback_field.as_deref(),
                        state: None,
                    },
                };
                let lines: Vec<WriteBack> = marks.iter().map(|(_, m)| m.clone()).collect();
                headers.push(("content-type", "application/json".to_owned()));
                (
                    "PATCH",
                    salesforce::writeback_path(&sf.api_version),
                    salesforce::writeback_body(fields, &lines).into_bytes(),
                )
            }
        };
        let authority = token.instance_authority.clone();
        self.dispatch(
            Awaiting::Sf(call),
            Call {
                id: 0,
                cluster,
                method,
                path,
                authority,
                headers,
                body,
                timeout_ms: timeout,
                reply_headers: &[],
            },
            env,
        );
    }

    pub(super) fn sf_failed(&mut self, reason: String) {
        self.count(Metric::CalloutsFailedSalesforce, 1);
        self.outcome.failures.push(reason);
    }
}
