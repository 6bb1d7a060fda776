//! Why a message was refused. Each variant is one distinct, named failure. Its `faultstring`
//! (`keygate_core::soap::Reason`) is written in keygate-core, compiled for size: it only runs
//! for refused messages.

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
