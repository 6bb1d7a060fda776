//! What Salesforce's replies mean for the message: the login, the order query and its further
//! pages, the OrderItems pages, the write-back and the issuing marks. Sending them is
//! `salesforce_requests`.

use super::*;

impl Flow {
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
