//! The two replies Salesforce understands: the `notificationsResponse` ack and a SOAP 1.1 fault.

/// The ack of the Outbound Messaging WSDL. One ack covers every notification in the message.
pub fn ack() -> &'static str {
    concat!(
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
        r#"<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#,
        r#"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#
    )
}

/// SOAP 1.1 fault codes: `Client` = the message is wrong, `Server` = we could not process it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    Client,
    Server,
}

/// A SOAP 1.1 fault. `reason` must already be free of secrets; it is XML-escaped here.
pub fn fault(code: FaultCode, reason: &str) -> String {
    let code = match code {
        FaultCode::Client => "soapenv:Client",
        FaultCode::Server => "soapenv:Server",
    };
    let mut out = String::with_capacity(300 + reason.len());
    out.push_str(concat!(
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
        r#"<soapenv:Body><soapenv:Fault><faultcode>"#
    ));
    out.push_str(code);
    out.push_str("</faultcode><faultstring>");
    escape_into(&mut out, reason);
    out.push_str("</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>");
    out
}

/// Escape text content for XML; characters XML 1.0 does not allow (controls other than tab and
/// newline, U+FFFE, U+FFFF) become U+FFFD.
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            // Not XML 1.0 characters (or discouraged ones): the fault must stay well-formed.
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}
