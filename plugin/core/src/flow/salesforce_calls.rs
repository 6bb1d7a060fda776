//! The Salesforce side of the flow: the shared token, login, the REST calls (order query, further
//! OrderItems pages, write-back) and what their replies mean for the message.

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

    pub(super) fn on_login(&mut self, then: SfCall, resp: Response, env: &mut Env<'_>) {
        let Some(status) = resp.status else {
            return self.sf_failed(
                "Salesforce login failed: no response (connection reset or refused)".into(),
            );
        };
        match salesforce::parse_token(status, &resp.body) {
            Ok(token) => {
                self.count(Metric::Logins, 1);
                let key = self.token_key();
                let _ = env.store.set(&key, &token.to_shared(), None);
                self.salesforce.token_cas = env.store.get(&key).map(|(_, cas)| cas);
                self.dispatch_sf(then, &token, env);
            }
            Err(e) => {
                let msg = format!("{e}");
                match e {
                    SalesforceError::LoginRefused { .. } => self.log(
                        Level::Error,
                        format!("{msg}; check the Salesforce app and credentials"),
                    ),
                    _ => self.log(Level::Warn, format!("Salesforce login failed: {msg}")),
                }
                self.sf_failed(msg);
            }
        }
    }

    pub(super) fn sf_failed(&mut self, reason: String) {
        self.count(Metric::CalloutsFailedSalesforce, 1);
        self.outcome.failures.push(reason);
    }

    pub(super) fn on_sf(&mut self, call: SfCall, resp: Response, env: &mut Env<'_>) {
        let Some(status) = resp.status else {
            let what = match call {
                SfCall::Query { .. } => "order query",
                SfCall::Items { .. } => "order products query",
                SfCall::WriteBack {
                    mark_for: Some(line),
                    ..
                } => return self.mark_failed(line, "no response (reset or timeout)", env),
                SfCall::WriteBack { .. } => "write-back",
                SfCall::IssueMarks { marks, rest } => {
                    let why = "no response (reset or timeout)".to_owned();
                    return self.on_issue_marks(marks, rest, Err(why), env);
                }
            };
            return self.sf_failed(format!(
                "Salesforce {what} failed: no response (reset or timeout)"
            ));
        };
        if status == 401
            && salesforce::classify_error(status, &resp.body) == SalesforceError::SessionInvalid
        {
            // The cached token expired: forget it (only if it is still the one used here: CAS),
            // then retry this call once, with the token another worker stored meanwhile or
            // after a new login.
            if let Some(cas) = self.salesforce.token_cas.take() {
                let _ = env.store.set(&self.token_key(), b"", Some(cas));
            }
            if self.salesforce.relogged {
                return self.sf_failed("Salesforce session invalid right after a new login".into());
            }
            self.salesforce.relogged = true;
            return self.sf_call(call, env);
        }
        match call {
            SfCall::Query { .. } => self.on_query_page(status, &resp.body, env),
            SfCall::Items { order, .. } => self.on_items_page(&order, status, &resp.body, env),
            SfCall::WriteBack {
                lines,
                mark_for: None,
            } => self.on_writeback(status, &resp.body, lines, env),
            SfCall::WriteBack {
                mark_for: Some(line),
                ..
            } => match salesforce::parse_writeback(status, &resp.body, 1) {
                Ok(failed) if failed.is_empty() => {
                    self.work.in_flight = self.work.in_flight.saturating_sub(1);
                    if !self.send_marked(line, env) {
                        self.call_over(line, env);
                    }
                    self.pump(env);
                }
                Ok(failed) => {
                    let code = failed.first().map(|f| f.code.clone()).unwrap_or_default();
                    self.mark_failed(line, &format!("refused: {code}"), env)
                }
                Err(e) => self.mark_failed(line, &e.to_string(), env),
            },
            SfCall::IssueMarks { marks, rest } => {
                let result = salesforce::parse_writeback(status, &resp.body, marks.len())
                    .map(|failed| failed.into_iter().map(|f| (f.index, f.code)).collect())
                    .map_err(|e| e.to_string());
                self.on_issue_marks(marks, rest, result, env)
            }
        }
    }

    /// A renewal's mark did not reach Salesforce: the renewal is not sent (its ledger mark is
    /// over, so the redelivery does not wait for a call that never ran).
    pub(super) fn mark_failed(&mut self, idx: usize, why: &str, env: &mut Env<'_>) {
        self.work.in_flight = self.work.in_flight.saturating_sub(1);
        self.call_over(idx, env);
        let item = self.line_item(idx);
        self.sf_failed(format!(
            "Salesforce write-back of renewal line {item}'s mark failed: {why}"
        ));
        self.pump(env);
    }

    pub(super) fn on_query_page(&mut self, status: u16, body: &[u8], env: &mut Env<'_>) {
        let cfg = Rc::clone(&self.cfg);
        let Some(i) = cfg.issuing.as_ref() else {
            return;
        };
        match salesforce::parse_query(status, body, &salesforce::Fields::of(i)) {
            Err(e) => self.sf_failed(format!("Salesforce order query failed: {e}")),
            Ok(page) => {
                self.salesforce.fetched.extend(page.orders);
                match page.next_records_url {
                    Some(next) => self.sf_call(SfCall::Query { path: next }, env),
                    None => self.next_items_page(env),
                }
            }
        }
    }

    /// Fetch the next further page of OrderItems of any order that has one; plan when none do.
    pub(super) fn next_items_page(&mut self, env: &mut Env<'_>) {
        let next = self
            .salesforce
            .fetched
            .iter_mut()
            .find_map(|o| Some((o.id, o.items_next.take()?)));
        match next {
            Some((order, path)) => self.sf_call(SfCall::Items { order, path }, env),
            None => self.plan(env),
        }
    }

    pub(super) fn on_items_page(
        &mut self,
        order: &SfId,
        status: u16,
        body: &[u8],
        env: &mut Env<'_>,
    ) {
        let cfg = Rc::clone(&self.cfg);
        let Some(i) = cfg.issuing.as_ref() else {
            return;
        };
        match salesforce::parse_items_page(status, body, &salesforce::Fields::of(i)) {
            Err(e) => self.sf_failed(format!("Salesforce order products query failed: {e}")),
            Ok(page) => {
                if let Some(o) = self
                    .salesforce
                    .fetched
                    .iter_mut()
                    .find(|o| o.id.same_record(order))
                {
                    o.items.extend(page.items);
                    o.items_next = page.next_records_url;
                }
                self.next_items_page(env);
            }
        }
    }

    pub(super) fn on_writeback(
        &mut self,
        status: u16,
        body: &[u8],
        lines: Vec<WriteBack>,
        env: &mut Env<'_>,
    ) {
        match salesforce::parse_writeback(status, body, lines.len()) {
            Err(e) => self.sf_failed(format!("write-back to Salesforce failed: {e}")),
            Ok(failed) => {
                for (i, w) in lines.iter().enumerate() {
                    if failed.iter().any(|f| f.index == i) {
                        continue;
                    }
                    self.ledger_written(w, env);
                }
                for f in failed {
                    let id = lines.get(f.index).map(|w| w.item.to_string());
                    self.sf_failed(format!(
                        "write-back of line {} refused: {}",
                        id.unwrap_or_default(),
                        f.code
                    ));
                }
            }
        }
    }
}
