//! Why a message was refused. Each variant is one distinct, named failure; its `Display` is the
//! `faultstring` Salesforce shows, built only from our own words and short, escaped excerpts of
//! the input.

use std::fmt;

use super::{ENVELOPE_NS, OUTBOUND_NS};
use crate::text::excerpt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoapError {
    Empty,
    InvalidUtf8,
    UnsupportedEncoding(String),
    Malformed(String),
    Doctype,
    EntityReference(String),
    TooDeep(usize),
    WrongRoot(String),
    WrongEnvelopeNamespace(String),
    WrongNotificationsNamespace(String),
    MissingElement(&'static str),
    DuplicateElement(String),
    UnexpectedElement(String),
    UnexpectedText(String),
    TrailingContent,
    TooManyNotifications(usize),
    NoNotifications,
    NotAnOrder(String),
    MissingType,
    InvalidId {
        element: &'static str,
        value: String,
    },
    NotAnOrderId(String),
    DuplicateNotificationId(String),
    ValueTooLong(String),
}

impl SoapError {
    /// A stable short name, for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            SoapError::Empty => "empty_body",
            SoapError::InvalidUtf8 => "invalid_utf8",
            SoapError::UnsupportedEncoding(_) => "unsupported_encoding",
            SoapError::Malformed(_) => "malformed_xml",
            SoapError::Doctype => "doctype",
            SoapError::EntityReference(_) => "entity_reference",
            SoapError::TooDeep(_) => "too_deep",
            SoapError::WrongRoot(_) => "wrong_root",
            SoapError::WrongEnvelopeNamespace(_) => "wrong_envelope_namespace",
            SoapError::WrongNotificationsNamespace(_) => "wrong_notifications_namespace",
            SoapError::MissingElement(_) => "missing_element",
            SoapError::DuplicateElement(_) => "duplicate_element",
            SoapError::UnexpectedElement(_) => "unexpected_element",
            SoapError::UnexpectedText(_) => "unexpected_text",
            SoapError::TrailingContent => "trailing_content",
            SoapError::TooManyNotifications(_) => "too_many_notifications",
            SoapError::NoNotifications => "no_notifications",
            SoapError::NotAnOrder(_) => "not_an_order",
            SoapError::MissingType => "missing_type",
            SoapError::InvalidId { .. } => "invalid_id",
            SoapError::NotAnOrderId(_) => "not_an_order_id",
            SoapError::DuplicateNotificationId(_) => "duplicate_notification_id",
            SoapError::ValueTooLong(_) => "value_too_long",
        }
    }
}

impl fmt::Display for SoapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SoapError::Empty => write!(f, "empty request body: expected a SOAP envelope"),
            SoapError::InvalidUtf8 => write!(f, "request body is not valid UTF-8"),
            SoapError::UnsupportedEncoding(e) => {
                write!(
                    f,
                    "unsupported XML encoding '{}': only UTF-8 is accepted",
                    excerpt(e)
                )
            }
            SoapError::Malformed(m) => write!(f, "malformed XML: {}", excerpt(m)),
            SoapError::Doctype => write!(f, "DOCTYPE declarations are not allowed"),
            SoapError::EntityReference(e) => {
                write!(
                    f,
                    "undefined entity reference '&{};' (entities are not allowed)",
                    excerpt(e)
                )
            }
            SoapError::TooDeep(d) => write!(f, "XML nested deeper than {d} levels"),
            SoapError::WrongRoot(n) => write!(
                f,
                "root element is '{}', expected soapenv:Envelope",
                excerpt(n)
            ),
            SoapError::WrongEnvelopeNamespace(ns) => write!(
                f,
                "Envelope is in namespace '{}', expected SOAP 1.1 '{}'",
                excerpt(ns),
                ENVELOPE_NS
            ),
            SoapError::WrongNotificationsNamespace(ns) => write!(
                f,
                "notifications is in namespace '{}', expected '{}'",
                excerpt(ns),
                OUTBOUND_NS
            ),
            SoapError::MissingElement(n) => write!(f, "missing required element {n}"),
            SoapError::DuplicateElement(n) => {
                write!(f, "element {} appears more than once", excerpt(n))
            }
            SoapError::UnexpectedElement(n) => write!(f, "unexpected element {}", excerpt(n)),
            SoapError::UnexpectedText(n) => write!(f, "unexpected text inside {}", excerpt(n)),
            SoapError::TrailingContent => write!(f, "content after the end of the Envelope"),
            SoapError::TooManyNotifications(max) => {
                write!(f, "more than {max} Notification elements in one message")
            }
            SoapError::NoNotifications => write!(f, "notifications contains no Notification"),
            SoapError::NotAnOrder(t) => {
                write!(
                    f,
                    "sObject xsi:type is '{}', this endpoint accepts only Order",
                    excerpt(t)
                )
            }
            SoapError::MissingType => write!(f, "sObject has no xsi:type"),
            SoapError::InvalidId { element, value } => write!(
                f,
                "{element} '{}' is not a Salesforce id (15 or 18 letters and digits)",
                excerpt(value)
            ),
            SoapError::NotAnOrderId(v) => {
                write!(f, "sObject Id '{}' is not an Order id (801…)", excerpt(v))
            }
            SoapError::DuplicateNotificationId(v) => {
                write!(f, "notification id {} appears more than once", excerpt(v))
            }
            SoapError::ValueTooLong(n) => write!(f, "value of {} is too long", excerpt(n)),
        }
    }
}
