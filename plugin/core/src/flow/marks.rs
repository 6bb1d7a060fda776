//! What keygate writes into a line's Salesforce fields while the line is in progress, and reads
//! back from them: a new line's issuing mark (until when its delivery's calls may run, and which
//! Envoy wrote it), a renewal's write-ahead mark (the key's expiry before the renewal), and the
//! state of a revoked line. `licensing` writes them, `plan` reads them.

/// The state field's value for a revoked line (see [`Flow::state_label`]).
pub(super) const REVOKED: &str = "Revoked";
/// A renewal line's state while its renewal is under way: the write-ahead mark in Salesforce.
const RENEWING: &str = "Renewing; expiry before: ";
const NO_EXPIRY: &str = "none";

/// A new line's mark in Salesforce before its license calls (shared-data ledger): until when a
/// call of that delivery may still be running at the license server. Durable where shared data
/// is not, so an Envoy restarted mid-call (a deploy) still knows not to look the line up, and
/// issue again, before the license server has finished.
const ISSUING: &str = "Issuing; busy until ";

/// The text of an issuing mark: the time for a person; the milliseconds and the Envoy that wrote
/// it (its ledger's instance) for keygate.
pub(super) fn issuing_mark(until_ms: u64, instance: &str) -> String {
    format!(
        "{ISSUING}{} UTC ({until_ms}, gateway {instance})",
        crate::text::utc_datetime(until_ms)
    )
}

/// An issuing mark read back: until when its delivery's calls may run, and who wrote it.
pub(super) struct IssuingMark {
    pub(super) until_ms: u64,
    pub(super) instance: String,
}

pub(super) fn issuing_marked(field: &str) -> Option<IssuingMark> {
    let rest = field.trim().strip_prefix(ISSUING)?;
    let (_, inner) = rest.rsplit_once('(')?;
    let (ms, instance) = inner.strip_suffix(')')?.split_once(", gateway ")?;
    Some(IssuingMark {
        until_ms: ms.parse().ok()?,
        instance: instance.to_owned(),
    })
}

/// The state field's mark before a renewal: the key's expiry as the license server showed it.
pub(super) fn renewing_mark(expiry: Option<&str>) -> String {
    format!("{RENEWING}{}", expiry.unwrap_or(NO_EXPIRY))
}

/// The expiry a renewal mark recorded (`Some(None)`: the key had none).
pub(super) fn renewing_marked(state: &str) -> Option<Option<String>> {
    let e = state.strip_prefix(RENEWING)?;
    Some((e != NO_EXPIRY).then(|| e.to_owned()))
}
