//! The `faultstring` of a refused message: built only from our own words and short, escaped
//! excerpts of the input. Here rather than beside `SoapError` in keygate-soap so that it is
//! compiled for size: it only runs on the way out of a refusal.

use std::fmt;

use keygate_soap::soap::{SoapError, ENVELOPE_NS, OUTBOUND_NS};

use crate::text::excerpt;

/// `SoapError::reason()`: the fault text Salesforce shows for a refused message.
pub trait Reason {
    fn reason(&self) -> String;
}

impl Reason for SoapError {
    fn reason(&self) -> String {
        Text(self).to_string()
    }
}

struct Text<'a>(&'a SoapError);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let f: &mut fmt::Formatter<'_> = f;
        match self.0 {
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
