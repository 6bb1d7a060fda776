//! What the replies to the calls that change a key mean (`lifecycle`): revoke and restore (every
//! key of the line, one call each), a reduction's new seat count, a renewal, and the expiry read
//! that makes a renewal happen once: before its call the key's expiry is recorded with the
//! pending mark, and when that call's outcome is unknown a later expiry proves it was applied.
//! The calls themselves are sent by `licensing`.

use super::licensing::license_backend;
use super::*;

impl Flow {
    pub(super) fn on_change(&mut self, idx: usize, resp: Response, env: &mut Env<'_>) {
        self.work.in_flight = self.work.in_flight.saturating_sub(1);
        if resp.never_sent() {
            return self.license_call_not_sent(idx, env);
        }
        let cfg = Rc::clone(&self.cfg);
        let Some(backend) = license_backend(&cfg) else {
            return;
        };
        let change = self.key_change(idx).map(|(c, _)| c);
        let name = change.as_ref().map_or("", |c| backend.name_of(c));
        let answered = resp.status.is_some_and(|s| s != 504);
        let result = match (change, resp.license_reply(env.now_ms)) {
            // A renewal may still be applied: the line stays pending until its time is up.
            (_, None) => Err("no response (reset or refused); outcome unknown".to_owned()),
            (_, Some(r)) if r.status == 504 => Err("timed out; outcome unknown".to_owned()),
            (None, Some(_)) => Err("the line has no key left to change".to_owned()),
            (Some(change), Some(r)) => match backend.change_applied(&change, &r) {
                Ok(()) => Ok(()),
                Err(LicenseError::UnknownKey(_)) => Err(String::new()),
                Err(e @ LicenseError::Throttled { until_ms }) => {
                    self.throttled(until_ms, env);
                    return self.license_call_refused(idx, &format!("{name}: {e}"), env);
                }
                // What to check on the server: only for a refusal.
                Err(LicenseError::Refused(m)) => {
                    Err(format!("{m}; {}", backend.refusal_hint(&change)))
                }
                Err(other) => Err(other.to_string()),
            },
        };
        match result {
            Ok(()) => {
                let Some(line) = self.work.lines.get_mut(idx) else {
                    return;
                };
                line.keys_done += 1;
                if line.keys_done < line.keys.len() {
                    self.work.queue.push_front((idx, Step::Act));
                } else {
                    let keys = line.keys.clone();
                    let metric = match line.intent {
                        Intent::Revoke | Intent::Reduce(0) => Metric::LicensesRevoked,
                        Intent::Restore => Metric::LicensesRestored,
                        Intent::Reduce(_) => Metric::LicensesReduced,
                        Intent::Renew | Intent::Issue => Metric::LicensesRenewed,
                    };
                    self.line_licensed(idx, keys, metric, env);
                }
            }
            Err(why) if why.is_empty() => {
                self.skip_unknown_key(idx, "is unknown to the license server")
            }
            Err(why) => {
                // An answer means the call is over: a renewal's expiry then settles it.
                if answered {
                    self.call_over(idx, env);
                }
                self.license_failed(idx, &format!("{name}: {why}"));
            }
        }
        self.pump(env);
    }

    /// The expiry of a renewal line's key: proof of an earlier renewal, or the mark before this one.
    pub(super) fn on_validate(&mut self, idx: usize, resp: Response, env: &mut Env<'_>) {
        self.work.in_flight = self.work.in_flight.saturating_sub(1);
        if resp.never_sent() {
            self.license_failed(idx, &format!("expiry read {}", super::licensing::NOT_SENT));
            return self.pump(env);
        }
        let cfg = Rc::clone(&self.cfg);
        let Some(backend) = license_backend(&cfg) else {
            return;
        };
        let expiry = match resp.license_reply(env.now_ms) {
            None => Err(LicenseError::Unparseable("no response".into())),
            Some(r) => backend.expiry(&r),
        };
        if let Err(LicenseError::Throttled { until_ms }) = expiry {
            self.throttled(until_ms, env);
        }
        match expiry {
            Err(LicenseError::UnknownKey(_)) => {
                self.skip_unknown_key(idx, "is unknown to the license server")
            }
            Err(e) => {
                self.count(Metric::CalloutsFailedLicense, 1);
                let item = self.line_item(idx);
                self.outcome.failures.push(format!(
                    "could not read the expiry of the key renewal line {item} renews: {e}"
                ));
            }
            Ok(now) => {
                let Some(line) = self.work.lines.get_mut(idx) else {
                    return;
                };
                match &line.expiry_recorded {
                    // The expiry moved since the mark: the earlier, uncertain renewal was applied.
                    Some(before) if *before != now => {
                        let keys = line.keys.clone();
                        self.line_licensed(idx, keys, Metric::LicensesRecovered, env);
                    }
                    _ => {
                        line.expiry_now = now;
                        self.work.queue.push_front((idx, Step::Act));
                    }
                }
            }
        }
        self.pump(env);
    }
}
