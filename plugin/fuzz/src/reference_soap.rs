//! An independent reference parser for the `soap_parse` fuzz target, on quick-xml's namespace
//! reader (`NsReader`) rather than keygate's own namespace stack: what keygate's parser accepts,
//! this one must accept with the same result.
//!
//! Elements are matched by namespace URI + local name, never by prefix. The reader never expands
//! entities: a DOCTYPE is refused outright and only the five predefined entities and character
//! references are accepted, so XXE and entity-expansion attacks have nothing to work with.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{QName, ResolveResult};
use quick_xml::reader::NsReader;

use keygate_core::ids::SfId;
use keygate_core::soap::{Limits, SoapError, ENVELOPE_NS, OUTBOUND_NS, SOBJECT_NS, XSI_NS};

/// The message model as it was (owned strings), so the parser below stays as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub organization_id: SfId,
    pub action_id: SfId,
    pub session_id: Option<String>,
    pub enterprise_url: String,
    pub partner_url: String,
    pub notifications: Vec<Notification>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub id: SfId,
    pub order: OrderFields,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrderFields {
    pub fields: Vec<(String, Option<String>)>,
}

impl OrderFields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Does keygate's message say exactly what this parser's says?
pub fn same_message(
    ours: &keygate_core::soap::OutboundMessage<'_>,
    theirs: &OutboundMessage,
) -> bool {
    ours.organization_id == theirs.organization_id
        && ours.action_id == theirs.action_id
        && ours.session_id.as_deref() == theirs.session_id.as_deref()
        && ours.enterprise_url == theirs.enterprise_url.as_str()
        && ours.partner_url == theirs.partner_url.as_str()
        && ours.notifications.len() == theirs.notifications.len()
        && ours
            .notifications
            .iter()
            .zip(&theirs.notifications)
            .all(|(a, b)| {
                a.id == b.id
                    && a.order.fields.len() == b.order.fields.len()
                    && a.order
                        .fields
                        .iter()
                        .zip(&b.order.fields)
                        .all(|((an, av), (bn, bv))| {
                            *an == bn.as_str() && av.as_deref() == bv.as_deref()
                        })
            })
}

/// Which namespace an element is in, reduced to the ones we care about.
#[derive(Debug, PartialEq)]
enum Ns {
    Envelope,
    Outbound,
    SObject,
    Other(String),
    None,
}

impl Ns {
    fn of(r: &ResolveResult<'_>) -> Ns {
        match r {
            ResolveResult::Bound(ns) => match ns.as_ref() {
                ENVELOPE_NS => Ns::Envelope,
                OUTBOUND_NS => Ns::Outbound,
                SOBJECT_NS => Ns::SObject,
                other => Ns::Other(other.to_owned()),
            },
            ResolveResult::Unbound => Ns::None,
            ResolveResult::Unknown(p) => Ns::Other(format!("undeclared prefix {p}")),
        }
    }

    fn describe(&self) -> String {
        match self {
            Ns::Envelope => ENVELOPE_NS.to_owned(),
            Ns::Outbound => OUTBOUND_NS.to_owned(),
            Ns::SObject => SOBJECT_NS.to_owned(),
            Ns::Other(s) => s.clone(),
            Ns::None => "(no namespace)".to_owned(),
        }
    }
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

enum Frame {
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
        name: String,
    },
}

#[derive(Default)]
struct Header {
    organization_id: Option<SfId>,
    action_id: Option<SfId>,
    session_id: Option<Option<String>>,
    enterprise_url: Option<String>,
    partner_url: Option<String>,
}

#[derive(Default)]
struct Seen {
    header: bool,
    body: bool,
    notifications: bool,
    root_done: bool,
}

#[derive(Default)]
struct PendingNotification {
    id: Option<SfId>,
    order: Option<OrderFields>,
}

struct Parser {
    limits: Limits,
    stack: Vec<Frame>,
    text: String,
    seen: Seen,
    header: Header,
    notifications: Vec<Notification>,
    /// 18-character forms seen so far, sorted (at most 100; binary search).
    notification_ids: Vec<[u8; 15]>,
    current: PendingNotification,
    fields: OrderFields,
}

/// Parse and validate an Outbound Message for Orders.
pub fn parse(body: &[u8], limits: &Limits) -> Result<OutboundMessage, SoapError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(SoapError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|_| SoapError::InvalidUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_end_names = true;
    reader.config_mut().check_comments = true;
    // A message declares a handful of prefixes; thousands is an attack on the resolver.
    reader.resolver_mut().set_max_namespace_bindings(64);

    let mut p = Parser {
        limits: *limits,
        stack: Vec::with_capacity(8),
        text: String::new(),
        seen: Seen::default(),
        header: Header::default(),
        notifications: Vec::new(),
        notification_ids: Vec::new(),
        current: PendingNotification::default(),
        fields: OrderFields::default(),
    };

    loop {
        let event = reader
            .read_event()
            .map_err(|e| SoapError::Malformed(e.to_string()))?;
        match event {
            Event::Decl(d) => {
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|e| SoapError::Malformed(e.to_string()))?;
                    if !enc.eq_ignore_ascii_case("utf-8") && !enc.eq_ignore_ascii_case("utf8") {
                        return Err(SoapError::UnsupportedEncoding(enc.into_owned()));
                    }
                }
            }
            Event::DocType(_) => return Err(SoapError::Doctype),
            Event::PI(_) => {
                return Err(SoapError::Malformed(
                    "processing instructions are not allowed".into(),
                ))
            }
            Event::Comment(_) => {}
            Event::Start(e) => {
                let (ns, local) = resolve_element(&reader, &e);
                p.start(&reader, &e, ns, local)?;
            }
            Event::Empty(e) => {
                let (ns, local) = resolve_element(&reader, &e);
                p.start(&reader, &e, ns, local)?;
                p.end()?;
            }
            Event::End(_) => p.end()?,
            // Whitespace between elements is most of the text events: dismiss it on the raw bytes.
            Event::Text(t) if !p.in_leaf() && t.bytes().all(|b| b.is_ascii_whitespace()) => {}
            Event::Text(t) => p.text(&t.xml10_content())?,
            Event::CData(t) => p.text(&t.xml10_content())?,
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| SoapError::Malformed(e.to_string()))?
                        .ok_or_else(|| SoapError::Malformed("bad character reference".into()))?
                } else {
                    predefined_entity(&r.xml10_content())
                        .ok_or_else(|| SoapError::EntityReference(r.xml10_content().into_owned()))?
                };
                let mut buf = [0u8; 4];
                p.text(c.encode_utf8(&mut buf))?;
            }
            Event::Eof => break,
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

fn resolve_element<'e>(reader: &NsReader<&[u8]>, e: &'e BytesStart<'_>) -> (Ns, &'e str) {
    let (ns, local) = reader.resolver().resolve_element(e.name());
    (Ns::of(&ns), local.into_inner())
}

fn predefined_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// Reads `xsi:nil` and `xsi:type` (resolved through the prefix in scope) off an element.
struct XsiAttrs {
    nil: bool,
    /// (namespace, local name) of the type QName.
    type_name: Option<(Ns, String)>,
}

fn xsi_attrs(reader: &NsReader<&[u8]>, e: &BytesStart<'_>) -> Result<XsiAttrs, SoapError> {
    let mut out = XsiAttrs {
        nil: false,
        type_name: None,
    };
    if e.attributes_raw().trim_ascii().is_empty() {
        return Ok(out);
    }
    for attr in e.attributes() {
        let attr = attr.map_err(|e| SoapError::Malformed(e.to_string()))?;
        let (ns, local) = reader.resolver().resolve_attribute(attr.key);
        let in_xsi = matches!(&ns, ResolveResult::Bound(n) if n.as_ref() == XSI_NS);
        if !in_xsi {
            continue;
        }
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| SoapError::Malformed(e.to_string()))?;
        match local.as_ref() {
            "nil" => out.nil = matches!(value.trim(), "true" | "1"),
            "type" => {
                let qname = QName(value.trim());
                let (tlocal, prefix) = qname.decompose();
                let tns = Ns::of(&reader.resolver().resolve_prefix(prefix, true));
                out.type_name = Some((tns, tlocal.as_ref().to_owned()));
            }
            _ => {}
        }
    }
    Ok(out)
}

impl Parser {
    fn start(
        &mut self,
        reader: &NsReader<&[u8]>,
        e: &BytesStart<'_>,
        ns: Ns,
        local: &str,
    ) -> Result<(), SoapError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(SoapError::TooDeep(self.limits.max_depth));
        }
        // `<sf:/>` is not a name (XML Namespaces: a QName's local part is never empty); the
        // reader lets it through, so it is refused here rather than becoming a nameless field.
        if local.is_empty() {
            return Err(SoapError::Malformed(format!(
                "element '{}' has no local name",
                qname_of(e)
            )));
        }
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
                    _ => return Err(SoapError::WrongRoot(qname_of(e))),
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
                    return Err(SoapError::DuplicateElement(qname_of(e)))
                }
                _ => return Err(SoapError::UnexpectedElement(qname_of(e))),
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
                _ => return Err(SoapError::UnexpectedElement(qname_of(e))),
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
                    _ => return Err(SoapError::UnexpectedElement(qname_of(e))),
                };
                if self.header_has(kind) {
                    return Err(SoapError::DuplicateElement(kind.name().into()));
                }
                self.leaf(reader, e, kind, local)?
            }
            Some(Frame::Notification) => match (ns, local) {
                (Ns::Outbound, "Id") if self.current.id.is_none() => {
                    self.leaf(reader, e, Leaf::NotificationId, local)?
                }
                (Ns::Outbound, "sObject") if self.current.order.is_none() => {
                    let attrs = xsi_attrs(reader, e)?;
                    match attrs.type_name {
                        Some((Ns::SObject, t)) if t == "Order" => {}
                        Some((tns, t)) => {
                            let shown = if tns == Ns::SObject {
                                t
                            } else {
                                format!("{{{}}}{t}", tns.describe())
                            };
                            return Err(SoapError::NotAnOrder(shown));
                        }
                        None => return Err(SoapError::MissingType),
                    }
                    self.fields = OrderFields::default();
                    Frame::SObject
                }
                (Ns::Outbound, "Id" | "sObject") => {
                    return Err(SoapError::DuplicateElement(format!("Notification/{local}")))
                }
                _ => return Err(SoapError::UnexpectedElement(qname_of(e))),
            },
            Some(Frame::SObject) => match ns {
                Ns::SObject => {
                    if self.fields.fields.iter().any(|(n, _)| n == local) {
                        return Err(SoapError::DuplicateElement(format!("sObject/{local}")));
                    }
                    if self.fields.fields.len() >= self.limits.max_fields {
                        return Err(SoapError::UnexpectedElement(format!(
                            "sObject/{local} (more than {} fields)",
                            self.limits.max_fields
                        )));
                    }
                    self.leaf(reader, e, Leaf::Field, local)?
                }
                _ => return Err(SoapError::UnexpectedElement(qname_of(e))),
            },
            Some(Frame::Leaf { name, .. }) => {
                return Err(SoapError::UnexpectedElement(format!(
                    "{} inside {name}",
                    qname_of(e)
                )))
            }
        };
        self.stack.push(frame);
        Ok(())
    }

    fn leaf(
        &mut self,
        reader: &NsReader<&[u8]>,
        e: &BytesStart<'_>,
        kind: Leaf,
        local: &str,
    ) -> Result<Frame, SoapError> {
        let nil = xsi_attrs(reader, e)?.nil;
        self.text.clear();
        Ok(Frame::Leaf {
            kind,
            nil,
            name: local.to_owned(),
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

    fn text(&mut self, s: &str) -> Result<(), SoapError> {
        match self.stack.last() {
            Some(Frame::Leaf { name, .. }) => {
                if self.text.len() + s.len() > self.limits.max_value_len {
                    return Err(SoapError::ValueTooLong(name.clone()));
                }
                self.text.push_str(s);
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
            Some(Frame::Leaf { name, .. }) => name.clone(),
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
                let value = self.text.trim();
                let value = if nil && value.is_empty() {
                    None
                } else {
                    Some(value.to_owned())
                };
                self.store_leaf(kind, name, value)?;
            }
        }
        Ok(())
    }

    fn store_leaf(
        &mut self,
        kind: Leaf,
        name: String,
        value: Option<String>,
    ) -> Result<(), SoapError> {
        let id = |element: &'static str, v: &Option<String>| {
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

    fn finish(self) -> Result<OutboundMessage, SoapError> {
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

fn qname_of(e: &BytesStart<'_>) -> String {
    e.name().as_ref().to_owned()
}
