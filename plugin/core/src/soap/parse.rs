//! One pass over the body with the plugin's own XML reader (`crate::xml`), namespaces resolved
//! here (`Namespaces`).
//!
//! Elements are matched by namespace URI + local name, never by prefix. Nothing is ever expanded:
//! a DOCTYPE is refused outright and only the five predefined entities and character references
//! are accepted, so XXE and entity-expansion attacks have nothing to work with. Names and values
//! are borrowed from the body; only what the message keeps is copied.

use std::borrow::Cow;

use super::error::SoapError;
use super::{
    Notification, OrderFields, OutboundMessage, ENVELOPE_NS, OUTBOUND_NS, SOBJECT_NS, XSI_NS,
};
use crate::ids::SfId;
use crate::xml::{split_qname, AttrValue, Attrs, Reader, Token, XmlError};

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";
/// A message declares a handful of prefixes; thousands would be an attack on resolution.
const MAX_BINDINGS: usize = 64;

/// Bounds on what one message may contain.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Salesforce sends at most 100 notifications per message (WSDL `maxOccurs="100"`).
    pub max_notifications: usize,
    /// The real structure is 6 deep; anything far deeper is an attack or a mistake.
    pub max_depth: usize,
    /// Longest accepted text of one element.
    pub max_value_len: usize,
    /// Most selected fields accepted on one sObject.
    pub max_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_notifications: 100,
            max_depth: 16,
            max_value_len: 32 * 1024,
            max_fields: 500,
        }
    }
}

/// Which namespace an element is in, reduced to the ones we care about.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ns<'b> {
    Envelope,
    Outbound,
    SObject,
    Xsi,
    Other(&'b str),
    Undeclared(&'b str),
    None,
}

impl Ns<'_> {
    fn describe(&self) -> String {
        match self {
            Ns::Envelope => ENVELOPE_NS.to_owned(),
            Ns::Outbound => OUTBOUND_NS.to_owned(),
            Ns::SObject => SOBJECT_NS.to_owned(),
            Ns::Xsi => XSI_NS.to_owned(),
            Ns::Other(s) => (*s).to_owned(),
            Ns::Undeclared(p) => format!("undeclared prefix {p}"),
            Ns::None => "(no namespace)".to_owned(),
        }
    }
}

/// A namespace URI, classified once when it is declared (not at every element).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Known {
    Envelope,
    Outbound,
    SObject,
    Xsi,
    Other,
    /// `xmlns=""`: no default namespace.
    Empty,
}

struct Binding<'a> {
    prefix: &'a str,
    known: Known,
    uri: Cow<'a, str>,
}

/// The namespace declarations in scope: a stack of bindings, unwound at each end tag.
#[derive(Default)]
struct Namespaces<'a> {
    bindings: Vec<Binding<'a>>,
    marks: Vec<usize>,
    /// The current start tag's prefixed `nil` / `type` attributes (prefix, local, value): the
    /// `xsi:` candidates, resolved once all of the tag's declarations are in scope.
    xsi_candidates: Vec<(&'a str, &'a str, AttrValue<'a>)>,
}

impl<'a> Namespaces<'a> {
    /// Take the `xmlns` / `xmlns:p` declarations of a start tag into scope.
    fn enter(&mut self, attrs: Attrs<'a>) -> Result<(), SoapError> {
        self.marks.push(self.bindings.len());
        self.xsi_candidates.clear();
        if attrs.is_empty() {
            return Ok(());
        }
        for (name, value) in attrs {
            let declared = match name.strip_prefix("xmlns") {
                Some("") => Some(""),
                Some(p) => match p.strip_prefix(':') {
                    Some(p) if !p.is_empty() && !p.contains(':') => Some(p),
                    Some(_) => return Err(ns_error("malformed namespace declaration")),
                    None => None, // e.g. `xmlnsfoo`: an ordinary name
                },
                None => None,
            };
            let Some(prefix) = declared else {
                // Unprefixed attributes are in no namespace, so never `xsi:`.
                if let Some((prefix, local @ ("nil" | "type"))) = name.split_once(':') {
                    self.xsi_candidates.push((prefix, local, value));
                }
                continue;
            };
            let uri = value.value();
            let reserved = uri == XML_NS || uri == XMLNS_NS;
            match prefix {
                "xml" if uri == XML_NS => continue,
                "xml" | "xmlns" => return Err(ns_error("reserved prefix redeclared")),
                _ if reserved => return Err(ns_error("reserved namespace bound to a prefix")),
                p if !p.is_empty() && uri.is_empty() => {
                    return Err(ns_error("prefix bound to the empty namespace"))
                }
                _ => {}
            }
            if self.bindings.len() >= MAX_BINDINGS {
                return Err(ns_error("too many namespace declarations"));
            }
            let known = match uri.as_ref() {
                ENVELOPE_NS => Known::Envelope,
                OUTBOUND_NS => Known::Outbound,
                SOBJECT_NS => Known::SObject,
                XSI_NS => Known::Xsi,
                "" => Known::Empty,
                _ => Known::Other,
            };
            self.bindings.push(Binding { prefix, known, uri });
        }
        Ok(())
    }

    fn leave(&mut self) {
        if let Some(mark) = self.marks.pop() {
            self.bindings.truncate(mark);
        }
    }

    /// The namespace of a prefix (`""`: the default namespace, for element names).
    fn resolve<'s>(&'s self, prefix: &'s str) -> Ns<'s> {
        match self.bindings.iter().rev().find(|b| b.prefix == prefix) {
            Some(b) => match b.known {
                Known::Envelope => Ns::Envelope,
                Known::Outbound => Ns::Outbound,
                Known::SObject => Ns::SObject,
                Known::Xsi => Ns::Xsi,
                Known::Other => Ns::Other(&b.uri),
                Known::Empty => Ns::None,
            },
            None if prefix.is_empty() => Ns::None,
            None if prefix == "xml" => Ns::Other(XML_NS),
            None => Ns::Undeclared(prefix),
        }
    }
}

fn ns_error(what: &str) -> SoapError {
    SoapError::Malformed(format!("{what} (XML Namespaces)"))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaf {
    OrganizationId,
    ActionId,
    SessionId,
    EnterpriseUrl,
    PartnerUrl,
    NotificationId,
    Field,
}

impl Leaf {
    fn name(self) -> &'static str {
        match self {
            Leaf::OrganizationId => "OrganizationId",
            Leaf::ActionId => "ActionId",
            Leaf::SessionId => "SessionId",
            Leaf::EnterpriseUrl => "EnterpriseUrl",
            Leaf::PartnerUrl => "PartnerUrl",
            Leaf::NotificationId => "Notification/Id",
            Leaf::Field => "sObject field",
        }
    }
}

enum Frame<'a> {
    Envelope,
    /// SOAP Header content is not used by Salesforce; it is skipped (still depth-bounded).
    Skip,
    Body,
    Notifications,
    Notification,
    SObject,
    Leaf {
        kind: Leaf,
        nil: bool,
        name: &'a str,
    },
}

#[derive(Default)]
struct Header<'a> {
    organization_id: Option<SfId>,
    action_id: Option<SfId>,
    session_id: Option<Option<Cow<'a, str>>>,
    enterprise_url: Option<Cow<'a, str>>,
    partner_url: Option<Cow<'a, str>>,
}

#[derive(Default)]
struct Seen {
    header: bool,
    body: bool,
    notifications: bool,
    root_done: bool,
}

#[derive(Default)]
struct PendingNotification<'a> {
    id: Option<SfId>,
    order: Option<OrderFields<'a>>,
}

/// The text of the leaf being read: borrowed from the body while it is one plain run (the
/// common case), copied once it needs assembling.
enum LeafText<'a> {
    Empty,
    Borrowed(&'a str),
    Owned(String),
}

impl<'a> LeafText<'a> {
    fn len(&self) -> usize {
        match self {
            LeafText::Empty => 0,
            LeafText::Borrowed(s) => s.len(),
            LeafText::Owned(s) => s.len(),
        }
    }

    fn push(&mut self, more: Cow<'a, str>) {
        *self = match (std::mem::replace(self, LeafText::Empty), more) {
            (LeafText::Empty, Cow::Borrowed(s)) => LeafText::Borrowed(s),
            (LeafText::Empty, Cow::Owned(s)) => LeafText::Owned(s),
            (LeafText::Borrowed(a), b) => LeafText::Owned(format!("{a}{b}")),
            (LeafText::Owned(mut a), b) => {
                a.push_str(&b);
                LeafText::Owned(a)
            }
        }
    }

    /// The trimmed value.
    fn take(&mut self) -> Cow<'a, str> {
        match std::mem::replace(self, LeafText::Empty) {
            LeafText::Empty => Cow::Borrowed(""),
            LeafText::Borrowed(s) => Cow::Borrowed(s.trim()),
            LeafText::Owned(s) if s.trim().len() == s.len() => Cow::Owned(s),
            LeafText::Owned(s) => Cow::Owned(s.trim().to_owned()),
        }
    }
}

struct Parser<'a> {
    limits: Limits,
    stack: Vec<Frame<'a>>,
    text: LeafText<'a>,
    seen: Seen,
    header: Header<'a>,
    notifications: Vec<Notification<'a>>,
    /// 18-character forms seen so far, sorted (at most 100; binary search).
    notification_ids: Vec<[u8; 15]>,
    current: PendingNotification<'a>,
    fields: OrderFields<'a>,
    /// The current sObject's field names, sorted: duplicates found in O(log n), not O(n).
    field_names: Vec<&'a str>,
}

/// Parse and validate an Outbound Message for Orders.
pub fn parse<'a>(body: &'a [u8], limits: &Limits) -> Result<OutboundMessage<'a>, SoapError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(SoapError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|_| SoapError::InvalidUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    // One more level than the parser allows, so that its own TooDeep answer comes first.
    let mut reader = Reader::new(text, limits.max_depth.saturating_add(1));
    let mut ns = Namespaces::default();

    // Sized from the body once (a notification takes a few hundred bytes): growing a Vec of
    // notifications one by one cost more than the rest of their parse.
    let expected = (body.len() / 256).clamp(1, limits.max_notifications);
    let mut p = Parser {
        limits: *limits,
        stack: Vec::with_capacity(8),
        text: LeafText::Empty,
        seen: Seen::default(),
        header: Header::default(),
        notifications: Vec::with_capacity(expected),
        notification_ids: Vec::with_capacity(expected),
        current: PendingNotification::default(),
        fields: OrderFields::default(),
        field_names: Vec::new(),
    };

    loop {
        match reader.next_token().map_err(xml_error)? {
            Token::Decl(attrs) => {
                for (name, value) in attrs {
                    let enc = value.value();
                    if name == "encoding"
                        && !enc.eq_ignore_ascii_case("utf-8")
                        && !enc.eq_ignore_ascii_case("utf8")
                    {
                        return Err(SoapError::UnsupportedEncoding(enc.into_owned()));
                    }
                }
            }
            Token::Doctype => return Err(SoapError::Doctype),
            Token::ProcessingInstruction => {
                return Err(SoapError::Malformed(
                    "processing instructions are not allowed".into(),
                ))
            }
            Token::Comment => {}
            Token::Start { name, attrs, empty } => {
                ns.enter(attrs)?;
                p.start(&ns, name)?;
                if empty {
                    p.end()?;
                    ns.leave();
                }
            }
            Token::End { .. } => {
                p.end()?;
                ns.leave();
            }
            // Whitespace between elements is most of the text: dismiss it on the raw bytes.
            Token::Text(t) if !p.in_leaf() && t.is_whitespace() => {}
            Token::Text(t) | Token::CData(t) => p.text(t.content())?,
            Token::Eof => break,
        }
    }

    if !p.stack.is_empty() {
        return Err(SoapError::Malformed("unexpected end of document".into()));
    }
    if !p.seen.root_done {
        return Err(SoapError::MissingElement("soapenv:Envelope"));
    }
    p.finish()
}

fn xml_error(e: XmlError) -> SoapError {
    match e {
        XmlError::UndefinedEntity(name) => SoapError::EntityReference(name),
        other => SoapError::Malformed(other.to_string()),
    }
}

/// `xsi:nil` and `xsi:type` (resolved through the prefixes in scope) of an element.
struct XsiAttrs {
    nil: bool,
    /// The type QName: is it in the sObject namespace, and its local name (prefixed with
    /// `{namespace}` when it is not).
    type_name: Option<(bool, Cow<'static, str>)>,
}

/// Of the current start tag (its candidates were collected by `Namespaces::enter`).
fn xsi_attrs(ns: &Namespaces<'_>) -> Result<XsiAttrs, SoapError> {
    let mut out = XsiAttrs {
        nil: false,
        type_name: None,
    };
    let (mut seen_nil, mut seen_type) = (false, false);
    for (prefix, local, value) in &ns.xsi_candidates {
        if ns.resolve(prefix) != Ns::Xsi {
            continue;
        }
        let seen = if *local == "nil" {
            &mut seen_nil
        } else {
            &mut seen_type
        };
        if std::mem::replace(seen, true) {
            return Err(SoapError::DuplicateElement(format!(
                "attribute xsi:{local}"
            )));
        }
        let value = value.value();
        let value = value.trim();
        if *local == "nil" {
            out.nil = matches!(value, "true" | "1");
        } else {
            let (tprefix, tlocal) = split_qname(value).ok_or_else(|| {
                SoapError::Malformed(format!("xsi:type '{value}' is not a qualified name"))
            })?;
            out.type_name = Some(match ns.resolve(tprefix) {
                // The one accepted type, without an allocation.
                Ns::SObject if tlocal == "Order" => (true, Cow::Borrowed("Order")),
                Ns::SObject => (true, Cow::Owned(tlocal.to_owned())),
                other => (
                    false,
                    Cow::Owned(format!("{{{}}}{tlocal}", other.describe())),
                ),
            });
        }
    }
    Ok(out)
}

impl<'a> Parser<'a> {
    fn start(&mut self, namespaces: &Namespaces<'a>, qname: &'a str) -> Result<(), SoapError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(SoapError::TooDeep(self.limits.max_depth));
        }
        // `<sf:/>` is not a name (XML Namespaces: a QName's local part is never empty), and it
        // must not become a nameless field.
        let Some((prefix, local)) = split_qname(qname) else {
            let why = if qname.ends_with(':') {
                "has no local name"
            } else {
                "is not a qualified name"
            };
            return Err(SoapError::Malformed(format!("element '{qname}' {why}")));
        };
        let ns = namespaces.resolve(prefix);
        let frame = match self.stack.last() {
            None => {
                if self.seen.root_done {
                    return Err(SoapError::TrailingContent);
                }
                match (ns, local) {
                    (Ns::Envelope, "Envelope") => Frame::Envelope,
                    (other, "Envelope") => {
                        return Err(SoapError::WrongEnvelopeNamespace(other.describe()))
                    }
                    _ => return Err(SoapError::WrongRoot(qname.to_owned())),
                }
            }
            Some(Frame::Envelope) => match (ns, local) {
                (Ns::Envelope, "Header") if !self.seen.header && !self.seen.body => {
                    self.seen.header = true;
                    Frame::Skip
                }
                (Ns::Envelope, "Body") if !self.seen.body => {
                    self.seen.body = true;
                    Frame::Body
                }
                (Ns::Envelope, "Header" | "Body") => {
                    return Err(SoapError::DuplicateElement(qname.to_owned()))
                }
                _ => return Err(SoapError::UnexpectedElement(qname.to_owned())),
            },
            Some(Frame::Skip) => Frame::Skip,
            Some(Frame::Body) => match (ns, local) {
                (Ns::Outbound, "notifications") if !self.seen.notifications => {
                    self.seen.notifications = true;
                    Frame::Notifications
                }
                (Ns::Outbound, "notifications") => {
                    return Err(SoapError::DuplicateElement("notifications".into()))
                }
                (other, "notifications") => {
                    return Err(SoapError::WrongNotificationsNamespace(other.describe()))
                }
                _ => return Err(SoapError::UnexpectedElement(qname.to_owned())),
            },
            Some(Frame::Notifications) => {
                let kind = match (ns, local) {
                    (Ns::Outbound, "OrganizationId") => Leaf::OrganizationId,
                    (Ns::Outbound, "ActionId") => Leaf::ActionId,
                    (Ns::Outbound, "SessionId") => Leaf::SessionId,
                    (Ns::Outbound, "EnterpriseUrl") => Leaf::EnterpriseUrl,
                    (Ns::Outbound, "PartnerUrl") => Leaf::PartnerUrl,
                    (Ns::Outbound, "Notification") => {
                        if self.notifications.len() >= self.limits.max_notifications {
                            return Err(SoapError::TooManyNotifications(
                                self.limits.max_notifications,
                            ));
                        }
                        self.current = PendingNotification::default();
                        self.stack.push(Frame::Notification);
                        return Ok(());
                    }
                    _ => return Err(SoapError::UnexpectedElement(qname.to_owned())),
                };
                if self.header_has(kind) {
                    return Err(SoapError::DuplicateElement(kind.name().into()));
                }
                self.leaf(namespaces, kind, local)?
            }
            Some(Frame::Notification) => match (ns, local) {
                (Ns::Outbound, "Id") if self.current.id.is_none() => {
                    self.leaf(namespaces, Leaf::NotificationId, local)?
                }
                (Ns::Outbound, "sObject") if self.current.order.is_none() => {
                    let xsi = xsi_attrs(namespaces)?;
                    match xsi.type_name {
                        Some((true, t)) if t == "Order" => {}
                        Some((_, shown)) => return Err(SoapError::NotAnOrder(shown.into_owned())),
                        None => return Err(SoapError::MissingType),
                    }
                    self.fields = OrderFields {
                        fields: Vec::with_capacity(4),
                    };
                    self.field_names.clear();
                    Frame::SObject
                }
                (Ns::Outbound, "Id" | "sObject") => {
                    return Err(SoapError::DuplicateElement(format!("Notification/{local}")))
                }
                _ => return Err(SoapError::UnexpectedElement(qname.to_owned())),
            },
            Some(Frame::SObject) => match ns {
                Ns::SObject => {
                    match self.field_names.binary_search(&local) {
                        Ok(_) => {
                            return Err(SoapError::DuplicateElement(format!("sObject/{local}")))
                        }
                        Err(at) => self.field_names.insert(at, local),
                    }
                    if self.fields.fields.len() >= self.limits.max_fields {
                        return Err(SoapError::UnexpectedElement(format!(
                            "sObject/{local} (more than {} fields)",
                            self.limits.max_fields
                        )));
                    }
                    self.leaf(namespaces, Leaf::Field, local)?
                }
                _ => return Err(SoapError::UnexpectedElement(qname.to_owned())),
            },
            Some(Frame::Leaf { name, .. }) => {
                return Err(SoapError::UnexpectedElement(format!(
                    "{} inside {name}",
                    qname.to_owned()
                )))
            }
        };
        self.stack.push(frame);
        Ok(())
    }

    fn leaf(
        &mut self,
        namespaces: &Namespaces<'a>,
        kind: Leaf,
        local: &'a str,
    ) -> Result<Frame<'a>, SoapError> {
        let nil = xsi_attrs(namespaces)?.nil;
        self.text = LeafText::Empty;
        Ok(Frame::Leaf {
            kind,
            nil,
            name: local,
        })
    }

    fn header_has(&self, kind: Leaf) -> bool {
        match kind {
            Leaf::OrganizationId => self.header.organization_id.is_some(),
            Leaf::ActionId => self.header.action_id.is_some(),
            Leaf::SessionId => self.header.session_id.is_some(),
            Leaf::EnterpriseUrl => self.header.enterprise_url.is_some(),
            Leaf::PartnerUrl => self.header.partner_url.is_some(),
            Leaf::NotificationId | Leaf::Field => false,
        }
    }

    fn in_leaf(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Leaf { .. }))
    }

    fn text(&mut self, s: Cow<'a, str>) -> Result<(), SoapError> {
        match self.stack.last() {
            Some(Frame::Leaf { name, .. }) => {
                if self.text.len() + s.len() > self.limits.max_value_len {
                    return Err(SoapError::ValueTooLong((*name).to_owned()));
                }
                self.text.push(s);
                Ok(())
            }
            Some(Frame::Skip) => Ok(()),
            _ if s.trim().is_empty() => Ok(()),
            None if self.seen.root_done => Err(SoapError::TrailingContent),
            None => Err(SoapError::Malformed("text before the root element".into())),
            Some(_) => Err(SoapError::UnexpectedText(self.frame_name())),
        }
    }

    fn frame_name(&self) -> String {
        match self.stack.last() {
            Some(Frame::Envelope) => "Envelope".into(),
            Some(Frame::Body) => "Body".into(),
            Some(Frame::Notifications) => "notifications".into(),
            Some(Frame::Notification) => "Notification".into(),
            Some(Frame::SObject) => "sObject".into(),
            Some(Frame::Leaf { name, .. }) => (*name).to_owned(),
            Some(Frame::Skip) | None => String::new(),
        }
    }

    fn end(&mut self) -> Result<(), SoapError> {
        let Some(frame) = self.stack.pop() else {
            return Err(SoapError::Malformed("unmatched end tag".into()));
        };
        match frame {
            Frame::Envelope => {
                if !self.seen.body {
                    return Err(SoapError::MissingElement("soapenv:Body"));
                }
                self.seen.root_done = true;
            }
            Frame::Body => {
                if !self.seen.notifications {
                    return Err(SoapError::MissingElement("notifications"));
                }
            }
            Frame::Skip | Frame::Notifications => {}
            Frame::Notification => {
                let pending = std::mem::take(&mut self.current);
                let id = pending
                    .id
                    .ok_or(SoapError::MissingElement("Notification/Id"))?;
                let order = pending
                    .order
                    .ok_or(SoapError::MissingElement("Notification/sObject"))?;
                let key = id.record_key();
                match self.notification_ids.binary_search(&key) {
                    Ok(_) => return Err(SoapError::DuplicateNotificationId(id.to_string())),
                    Err(at) => self.notification_ids.insert(at, key),
                }
                self.notifications.push(Notification { id, order });
            }
            Frame::SObject => {
                let fields = std::mem::take(&mut self.fields);
                if let Some(raw) = fields.get("Id") {
                    let id = SfId::parse(raw).ok_or_else(|| SoapError::InvalidId {
                        element: "sObject Id",
                        value: raw.to_owned(),
                    })?;
                    if id.key_prefix() != "801" {
                        return Err(SoapError::NotAnOrderId(raw.to_owned()));
                    }
                }
                self.current.order = Some(fields);
            }
            Frame::Leaf { kind, nil, name } => {
                let value = self.text.take();
                let value = if nil && value.is_empty() {
                    None
                } else {
                    Some(value)
                };
                self.store_leaf(kind, name, value)?;
            }
        }
        Ok(())
    }

    fn store_leaf(
        &mut self,
        kind: Leaf,
        name: &'a str,
        value: Option<Cow<'a, str>>,
    ) -> Result<(), SoapError> {
        let id = |element: &'static str, v: &Option<Cow<'a, str>>| {
            let raw = v.as_deref().unwrap_or("");
            SfId::parse(raw).ok_or_else(|| SoapError::InvalidId {
                element,
                value: raw.to_owned(),
            })
        };
        match kind {
            Leaf::OrganizationId => {
                self.header.organization_id = Some(id("OrganizationId", &value)?)
            }
            Leaf::ActionId => self.header.action_id = Some(id("ActionId", &value)?),
            Leaf::NotificationId => self.current.id = Some(id("Notification Id", &value)?),
            Leaf::SessionId => self.header.session_id = Some(value.filter(|v| !v.is_empty())),
            Leaf::EnterpriseUrl => self.header.enterprise_url = Some(value.unwrap_or_default()),
            Leaf::PartnerUrl => self.header.partner_url = Some(value.unwrap_or_default()),
            Leaf::Field => self.fields.fields.push((name, value)),
        }
        Ok(())
    }

    fn finish(self) -> Result<OutboundMessage<'a>, SoapError> {
        let h = self.header;
        let msg = OutboundMessage {
            organization_id: h
                .organization_id
                .ok_or(SoapError::MissingElement("OrganizationId"))?,
            action_id: h.action_id.ok_or(SoapError::MissingElement("ActionId"))?,
            session_id: h.session_id.ok_or(SoapError::MissingElement("SessionId"))?,
            enterprise_url: h
                .enterprise_url
                .ok_or(SoapError::MissingElement("EnterpriseUrl"))?,
            partner_url: h
                .partner_url
                .ok_or(SoapError::MissingElement("PartnerUrl"))?,
            notifications: self.notifications,
        };
        if msg.notifications.is_empty() {
            return Err(SoapError::NoNotifications);
        }
        Ok(msg)
    }
}
