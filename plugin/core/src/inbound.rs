//! The gate in front of the parser: which requests are ours, and whether they may go on.
//! Everything here runs on request headers, before a byte of the body is buffered.

use crate::config::Config;
use crate::reply::{FaultKind, Reply};
use crate::soap::OutboundMessage;

/// The request line and the headers the gate looks at.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// `:path`, query string included.
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub content_length: Option<u64>,
    /// The value of the configured secret header, if the request has it.
    pub secret_header: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadDecision {
    /// Not our route: continue untouched.
    PassThrough,
    /// Refuse now, without reading the body.
    Reply(Reply),
    /// Ours and acceptable so far: buffer the body and parse it.
    ReadBody,
}

/// Is this the webhook route? The last path segment, query ignored, compared without regard to
/// ASCII case (QLM's ASMX endpoint on IIS is case-insensitive, so existing URLs keep working).
/// The path is first read the way a web server behind us would read it — percent-decoded, `\\`
/// as `/`, `.` and `..` segments resolved, `;params` and surrounding spaces dropped — so that no
/// spelling of the handler's path can slip past the gate to the upstream.
pub fn is_webhook_path(cfg: &Config, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let plain = !path
        .bytes()
        .any(|b| matches!(b, b'%' | b'.' | b'\\' | b';') || b <= b' ' || b >= 0x7f);
    if plain {
        // The common case, no allocation: nothing in the path needs decoding or resolving.
        let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        return last.eq_ignore_ascii_case(&cfg.handler_name);
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split(['/', '\\']) {
        match seg.split(';').next().unwrap_or("").trim() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    segments
        .last()
        .is_some_and(|s| s.eq_ignore_ascii_case(&cfg.handler_name))
}

pub fn on_headers(cfg: &Config, head: &RequestHead<'_>) -> HeadDecision {
    if !is_webhook_path(cfg, head.path) {
        return HeadDecision::PassThrough;
    }
    if head.method != "POST" {
        return HeadDecision::Reply(Reply::fault(
            405,
            FaultKind::Client,
            &format!(
                "method {} not allowed: Outbound Messages are POSTed",
                short(head.method)
            ),
        ));
    }
    if let Err(reason) = check_secret(cfg, head) {
        return HeadDecision::Reply(Reply::fault(401, FaultKind::Auth, reason));
    }
    if let Err(reason) = check_content_type(head.content_type) {
        return HeadDecision::Reply(Reply::fault(415, FaultKind::Client, &reason));
    }
    if let Some(len) = head.content_length {
        if len > cfg.max_body_bytes as u64 {
            return HeadDecision::Reply(too_large(cfg));
        }
    }
    HeadDecision::ReadBody
}

pub fn too_large(cfg: &Config) -> Reply {
    Reply::fault(
        413,
        FaultKind::Client,
        &format!("request body larger than {} bytes", cfg.max_body_bytes),
    )
}

fn short(s: &str) -> String {
    crate::text::excerpt(s)
}

fn check_content_type(ct: Option<&str>) -> Result<(), String> {
    let Some(ct) = ct else {
        return Err("missing content type: expected text/xml".into());
    };
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("text/xml")
        && !media.eq_ignore_ascii_case("application/soap+xml")
    {
        return Err(format!(
            "content type {} not supported: expected text/xml",
            short(media)
        ));
    }
    for param in parts {
        if let Some((k, v)) = param.split_once('=') {
            if k.trim().eq_ignore_ascii_case("charset") {
                let v = v.trim().trim_matches('"');
                if !v.eq_ignore_ascii_case("utf-8") && !v.eq_ignore_ascii_case("utf8") {
                    return Err(format!(
                        "charset {} not supported: expected UTF-8",
                        short(v)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// QLM's form (`is_user`/`is_pwd` in the query, so an existing Outbound Message URL keeps
/// working) or the configured header. Every comparison is constant-time; a present but wrong
/// value fails even when the other form is right.
fn check_secret(cfg: &Config, head: &RequestHead<'_>) -> Result<(), &'static str> {
    let Some(secret) = &cfg.inbound_secret else {
        return Ok(());
    };
    let mut presented = false;
    let mut ok = true;
    if let Some(h) = head.secret_header {
        presented = true;
        ok &= secret.password.matches(h);
    }
    if let Some((_, query)) = head.path.split_once('?') {
        let mut user = None;
        let mut pwd = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "is_pwd" => pwd = Some(v),
                "is_user" => user = Some(v),
                _ => {}
            }
        }
        if let Some(p) = pwd {
            presented = true;
            ok &= secret.password.matches(&p);
            if let Some(u) = &secret.user {
                ok &= u.matches(user.as_deref().unwrap_or(""));
            }
        }
    }
    match (presented, ok) {
        (false, _) => {
            Err("credentials missing: pass is_user/is_pwd in the endpoint URL or the secret header")
        }
        (true, false) => Err("credentials not accepted"),
        (true, true) => Ok(()),
    }
}

/// The message must come from an allowed organization (15- and 18-character ids match).
pub fn check_org(cfg: &Config, msg: &OutboundMessage) -> Result<(), Reply> {
    if cfg
        .allowed_orgs
        .iter()
        .any(|o| o.same_record(&msg.organization_id))
    {
        Ok(())
    } else {
        Err(Reply::fault(
            403,
            FaultKind::Auth,
            &format!("organization {} is not allowed", msg.organization_id),
        ))
    }
}
