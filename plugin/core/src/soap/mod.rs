//! SOAP 1.1 Outbound Message: the model, its parser (`parse`), why a message is refused
//! (`error`: each failure and its `faultstring`) and the replies Salesforce expects (`render`).

mod error;
mod parse;
mod render;

pub use error::SoapError;
pub use parse::{parse, Limits};
pub use render::{ack, escape_into, fault, FaultCode};

use std::borrow::Cow;

use crate::ids::SfId;

pub const ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
pub const SOBJECT_NS: &str = "urn:sobject.enterprise.soap.sforce.com";
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// A validated `notifications` message. Names and values borrow from the request body; a value
/// is copied only when the body spells it with references or CR line ends.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage<'a> {
    pub organization_id: SfId,
    pub action_id: SfId,
    /// Present when "Send Session ID" is on. A credential: never logged, never used.
    pub session_id: Option<Cow<'a, str>>,
    pub enterprise_url: Cow<'a, str>,
    pub partner_url: Cow<'a, str>,
    pub notifications: Vec<Notification<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notification<'a> {
    pub id: SfId,
    pub order: OrderFields<'a>,
}

/// The selected fields of the Order, by local name, in document order. `None` is
/// `xsi:nil="true"`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrderFields<'a> {
    pub fields: Vec<(&'a str, Option<Cow<'a, str>>)>,
}

impl OrderFields<'_> {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The Order id. `None` for a record deleted before delivery ("the notification contains no data").
    pub fn id(&self) -> Option<SfId> {
        self.get("Id").and_then(SfId::parse)
    }

    pub fn status(&self) -> Option<&str> {
        self.get("Status")
    }

    pub fn is_activated(&self) -> bool {
        self.status() == Some("Activated")
    }
}
