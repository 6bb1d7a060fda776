//! The write-back: each licensed line's keys (and, when configured, its state) on OrderItem
//! fields, in one sObject Collections update per message, and the per-record results of that call.

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::SalesforceError;
use crate::ids::SfId;
use crate::text::excerpt;

/// sObject Collections accepts at most 200 records per call.
pub const WRITEBACK_BATCH: usize = 200;

pub fn writeback_path(api_version: &str) -> String {
    format!("/services/data/{api_version}/composite/sobjects")
}

/// The value written back for a line: its keys, one per line of a long text field.
pub fn writeback_value(keys: &[String]) -> String {
    keys.join("\n")
}

#[derive(Serialize)]
struct Update<'a> {
    #[serde(rename = "allOrNone")]
    all_or_none: bool,
    records: Vec<Record<'a>>,
}

/// One line's update: its keys and the state they are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBack {
    pub item: SfId,
    pub keys: Vec<String>,
    /// `Issued`, `Revoked`, `Restored`, `Reduced to N`, `Renewed +365 d`.
    pub state: String,
}

/// The OrderItem fields a write-back sets (at least one of them).
#[derive(Debug, Clone, Copy)]
pub struct WriteBackFields<'a> {
    pub keys: Option<&'a str>,
    pub state: Option<&'a str>,
}

/// `{"attributes":{"type":"OrderItem"},"id":…,"<field>":…}`: the fields' names are configured,
/// so this one map is serialized by hand through serde's map API.
struct Record<'a> {
    fields: WriteBackFields<'a>,
    line: &'a WriteBack,
}

#[derive(Serialize)]
struct Attributes {
    #[serde(rename = "type")]
    kind: &'static str,
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("attributes", &Attributes { kind: "OrderItem" })?;
        map.serialize_entry("id", self.line.item.as_str())?;
        if let Some(f) = self.fields.keys {
            map.serialize_entry(f, &writeback_value(&self.line.keys))?;
        }
        if let Some(f) = self.fields.state {
            map.serialize_entry(f, &self.line.state)?;
        }
        map.end()
    }
}

/// Body of one sObject Collections update (`allOrNone: false`: each record stands alone).
pub fn writeback_body(fields: WriteBackFields<'_>, lines: &[WriteBack]) -> String {
    let update = Update {
        all_or_none: false,
        records: lines.iter().map(|line| Record { fields, line }).collect(),
    };
    // Strings only: serializing them cannot fail.
    serde_json::to_string(&update).unwrap_or_default()
}

#[derive(Deserialize)]
struct RecordResult {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<super::RestError>,
}

/// A record of a write-back that Salesforce refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// Position of the record in the request: results come back in request order, and a
    /// failed record's result has no `id`.
    pub index: usize,
    /// Salesforce's error code (`FIELD_CUSTOM_VALIDATION_EXCEPTION`, …).
    pub code: String,
}

/// Per-record results of a write-back of `sent` records: the ones that failed. A reply with
/// another number of results cannot be matched to the records and is an error as a whole.
pub fn parse_writeback(
    status: u16,
    body: &[u8],
    sent: usize,
) -> Result<Vec<RecordFailure>, SalesforceError> {
    let results: Vec<RecordResult> = super::read_reply(status, body, "write-back reply")?;
    if results.len() != sent {
        return Err(SalesforceError::Unparseable(format!(
            "write-back reply has {} results for {sent} records",
            results.len()
        )));
    }
    Ok(results
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !r.success)
        .map(|(index, r)| {
            let code = r
                .errors
                .into_iter()
                .next()
                .and_then(|e| e.status_code)
                .unwrap_or_else(|| "UNKNOWN".to_owned());
            RecordFailure {
                index,
                code: excerpt(&code),
            }
        })
        .collect())
}
