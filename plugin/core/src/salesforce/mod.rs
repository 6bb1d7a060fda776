//! Salesforce: OAuth 2.0 login (`token`), the SOQL order query and its pages (`query`), and the
//! sObject Collections write-back (`writeback`). Pure functions over bytes; the flow decides
//! when to call them. Replies are read with serde derive into structs of the fields keygate
//! uses; every field is optional and every other key is ignored.

mod query;
mod token;
mod writeback;

use serde::Deserialize;

use crate::text::excerpt;

pub use query::{
    build_soql, checked_next_url, parse_items_page, parse_query, query_path, Fields, ItemsPage,
    Order, OrderItem, OriginalItem, QueryPage,
};
pub use token::{parse_token, token_key, token_request_body, Token, TOKEN_PATH};
pub use writeback::{
    parse_writeback, writeback_body, writeback_path, writeback_value, RecordFailure, WriteBack,
    WriteBackFields, WRITEBACK_BATCH,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SalesforceError {
    /// The token endpoint refused the credentials (`invalid_grant`, `invalid_client`, …).
    LoginRefused { error: String, description: String },
    /// 401 with `errorCode` `INVALID_SESSION_ID`: log in again once.
    SessionInvalid,
    /// Any other non-success status, with Salesforce's `errorCode` when it gave one.
    Status { status: u16, error_code: String },
    /// A success status whose body is not what the API documents.
    Unparseable(String),
}

impl std::fmt::Display for SalesforceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SalesforceError::LoginRefused { error, description } => {
                write!(f, "Salesforce login refused: {error} ({description})")
            }
            SalesforceError::SessionInvalid => write!(f, "Salesforce session expired or invalid"),
            SalesforceError::Status { status, error_code } if error_code.is_empty() => {
                write!(f, "Salesforce answered HTTP {status}")
            }
            SalesforceError::Status { status, error_code } => {
                write!(f, "Salesforce answered HTTP {status} {error_code}")
            }
            SalesforceError::Unparseable(m) => write!(f, "Salesforce reply not understood: {m}"),
        }
    }
}

/// One entry of a REST error body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestError {
    error_code: Option<String>,
    /// A failed record of a write-back names its error `statusCode` (one type reads both).
    status_code: Option<String>,
}

/// A REST reply read into `T` when its status is 2xx (any other status is [`classify_error`]'s);
/// `what` names the reply in the error.
fn read_reply<'a, T: Deserialize<'a>>(
    status: u16,
    body: &'a [u8],
    what: &str,
) -> Result<T, SalesforceError> {
    if !(200..300).contains(&status) {
        return Err(classify_error(status, body));
    }
    serde_json::from_slice(body).map_err(|e| json_error(what, &e))
}

/// Why JSON from Salesforce was refused: not JSON at all, or not the shape expected.
fn json_error(what: &str, e: &serde_json::Error) -> SalesforceError {
    SalesforceError::Unparseable(if e.is_syntax() || e.is_eof() {
        format!("{what} is not JSON")
    } else {
        format!("{what} not understood: {}", excerpt(&e.to_string()))
    })
}

/// A REST error body is `[{"message":…,"errorCode":…}]`; match on `errorCode`, never `message`.
pub fn classify_error(status: u16, body: &[u8]) -> SalesforceError {
    let code = serde_json::from_slice::<Vec<RestError>>(body)
        .ok()
        .and_then(|errors| errors.into_iter().next()?.error_code.map(|c| excerpt(&c)))
        .unwrap_or_default();
    if status == 401 && code == "INVALID_SESSION_ID" {
        SalesforceError::SessionInvalid
    } else {
        SalesforceError::Status {
            status,
            error_code: code,
        }
    }
}
