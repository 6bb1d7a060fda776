//! An accepted message written back out as a plain Outbound Message (fixed prefixes, every value
//! escaped), for the round-trip property: whatever the parser accepts must parse again, from this
//! rendering, to the same message.

use keygate_core::soap::{OutboundMessage, ENVELOPE_NS, OUTBOUND_NS, SOBJECT_NS, XSI_NS};

/// Text content: `&`, `<`, `>` and CR escaped (CR would otherwise be normalised away).
fn text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\r', "&#13;")
}

pub fn render(m: &OutboundMessage<'_>) -> String {
    let mut out = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{ENVELOPE_NS}" xmlns:xsi="{XSI_NS}"><soapenv:Body><notifications xmlns="{OUTBOUND_NS}"><OrganizationId>{}</OrganizationId><ActionId>{}</ActionId>"#,
        m.organization_id.as_str(),
        m.action_id.as_str()
    );
    match &m.session_id {
        Some(s) => out.push_str(&format!("<SessionId>{}</SessionId>", text(s))),
        None => out.push_str(r#"<SessionId xsi:nil="true"/>"#),
    }
    out.push_str(&format!(
        "<EnterpriseUrl>{}</EnterpriseUrl><PartnerUrl>{}</PartnerUrl>",
        text(&m.enterprise_url),
        text(&m.partner_url)
    ));
    for n in &m.notifications {
        out.push_str(&format!(
            r#"<Notification><Id>{}</Id><sObject xsi:type="sf:Order" xmlns:sf="{SOBJECT_NS}">"#,
            n.id.as_str()
        ));
        for (name, value) in &n.order.fields {
            match value {
                Some(v) => out.push_str(&format!("<sf:{name}>{}</sf:{name}>", text(v))),
                None => out.push_str(&format!(r#"<sf:{name} xsi:nil="true"/>"#)),
            }
        }
        out.push_str("</sObject></Notification>");
    }
    out.push_str("</notifications></soapenv:Body></soapenv:Envelope>");
    out
}
