//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`.
//!
//! Why not `ureq`/`reqwest`: the tests need exactly one request per connection with a hard overall
//! timeout (curl's `-m`), raw control over headers (wrong content types, missing `Content-Length`,
//! secret headers), and they must see every status as data, not as an error. That is ~100 lines
//! here, with no dependency and no TLS stack to compile.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Default overall timeout of one request (connect + send + full reply), like `curl -m 30`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A complete HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request with `Connection: close` and reads the whole reply, all within `timeout`.
///
/// `Content-Length` is added unless the caller passes one, or the body is empty on GET/HEAD.
/// A failed write (the server answered early and closed) is not an error: the reply is read anyway.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(timeout))?;

    let mut head =
        format!("{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let has_length = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    let bodiless_get = body.is_empty() && matches!(method, "GET" | "HEAD");
    if !has_length && !bodiless_get {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let sent = stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body));

    // Stop as soon as the reply is complete: after `Connection: close` Envoy waits for the client
    // to close first (delayed_close_timeout, 1 s), so reading until EOF costs a second per request.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no complete reply within {timeout:?}"),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if let Some(response) = parse_response(&raw, false)? {
                    return Ok(response);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            // A reset after some reply bytes (early answer to an unread body): parse what came.
            Err(_) if !raw.is_empty() => break,
            Err(e) => return Err(sent.err().unwrap_or(e)),
        }
    }
    parse_response(&raw, true)?.ok_or_else(|| {
        bad(format!(
            "incomplete reply: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The status line and headers at the start of `raw` (body empty), and where the body starts;
/// `None` until the head is complete, `Some(Err(line))` for a status line that is not one.
pub(crate) fn parse_head(raw: &[u8]) -> Option<Result<(Response, usize), String>> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let Some(status) = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()) else {
        return Some(Err(status_line.to_string()));
    };
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Ok((
        Response {
            status,
            headers,
            body: Vec::new(),
        },
        end + 4,
    )))
}

/// The body after `head` per its framing (chunked, Content-Length, or up to `eof`); `None`
/// while more is to come.
pub(crate) fn framed_body(head: &Response, rest: &[u8], eof: bool) -> Option<Vec<u8>> {
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = head
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    if chunked {
        dechunk(rest)
    } else if let Some(len) = length {
        rest.get(..len).map(<[u8]>::to_vec)
    } else if head.status == 204 || head.status == 304 {
        Some(Vec::new())
    } else if eof {
        Some(rest.to_vec())
    } else {
        None
    }
}

/// The reply in `raw`, or `None` while its framing says more is to come. At `eof`, a reply
/// without length or chunking ends where `raw` ends.
fn parse_response(raw: &[u8], eof: bool) -> io::Result<Option<Response>> {
    let (mut response, start) = match parse_head(raw) {
        None => return Ok(None),
        Some(Err(line)) => return Err(bad(format!("bad status line {line:?}"))),
        Some(Ok(head)) => head,
    };
    match framed_body(&response, &raw[start..], eof) {
        Some(body) => {
            response.body = body;
            Ok(Some(response))
        }
        None if eof => Err(bad(format!(
            "reply body cut short: {:?}",
            String::from_utf8_lossy(raw)
        ))),
        None => Ok(None),
    }
}

/// The decoded body, or `None` while the last chunk has not arrived.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = find(rest, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_framing() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhixx",
            false,
        );
        let r = r.unwrap().unwrap();
        assert_eq!(
            (r.status, r.text().as_str(), r.header("x-a")),
            (200, "hi", Some("b"))
        );
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1;x=y\r\nc\r\n0\r\n\r\n";
        let r = parse_response(chunked, false).unwrap().unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "abc"));
    }

    #[test]
    fn waits_for_the_rest() {
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi", false)
                .unwrap()
                .is_none()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi", true).is_err());
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
            false
        )
        .unwrap()
        .is_none());
        let eof_delimited = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert!(parse_response(eof_delimited, false).unwrap().is_none());
        assert_eq!(
            parse_response(eof_delimited, true).unwrap().unwrap().text(),
            "all of it"
        );
    }
}
