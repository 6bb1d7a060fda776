//! A full-duplex variant of `http::request` for requests whose body the server may refuse before
//! it has read it (a 413 on a 10 MB body): the body is written from a second thread while this one
//! reads, so the early reply is seen as soon as it arrives, and a reset or broken pipe on the
//! writing side afterwards is reported, not fatal. A reply that never arrives is an error.

use crate::http::Response;
use crate::http::{framed_body, parse_head};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// What happened on one connection.
#[derive(Debug)]
pub struct Exchange {
    pub response: Response,
    /// False when the connection ended after the status line but before the body's framing said
    /// it was complete (the body is then whatever arrived).
    pub complete: bool,
    /// How sending the request ended, when it did not end well (the server answered early and
    /// closed: broken pipe, reset). `None` when every byte was written.
    pub write_error: Option<io::Error>,
    /// From connecting until the reply was complete (or the connection ended).
    pub elapsed: Duration,
}

/// Sends one request (`Connection: close`, `Content-Length` added unless given) while reading the
/// reply, all within `timeout`. `Err` only when no status line arrived (or connect failed).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Exchange> {
    let started = Instant::now();
    let deadline = started + timeout;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;

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

    let mut writer = stream.try_clone()?;
    writer.set_write_timeout(Some(timeout))?;
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let sender = thread::spawn(move || -> io::Result<()> {
        // Small slices, so a shutdown from the reader interrupts a blocked write promptly.
        for chunk in bytes.chunks(64 * 1024) {
            writer.write_all(chunk)?;
        }
        writer.flush()
    });

    let mut reader = stream;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut read_error = None;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break None;
        }
        reader.set_read_timeout(Some(left))?;
        match reader.read(&mut buf) {
            Ok(0) => break parse(&raw, true),
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if let Some(done) = parse(&raw, false) {
                    break Some(done);
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
            Err(e) => {
                read_error = Some(e);
                break parse(&raw, true);
            }
        }
    };
    // Done reading: stop the sender if it is still blocked on a server that no longer reads.
    let _ = reader.shutdown(Shutdown::Both);
    let write_error = match sender.join() {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(io::Error::other("request writer panicked")),
    };
    let elapsed = started.elapsed();
    match result {
        Some((response, complete)) => Ok(Exchange {
            response,
            complete,
            write_error,
            elapsed,
        }),
        None => {
            let why = match (read_error, &write_error) {
                (Some(e), _) => format!("reading: {e}"),
                (None, _) if elapsed >= timeout => format!("no reply within {timeout:?}"),
                (None, _) => "connection closed".to_string(),
            };
            Err(io::Error::other(format!(
                "no HTTP status received ({why}; write: {write_error:?}); got {} bytes: {:?}",
                raw.len(),
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            )))
        }
    }
}

/// The reply in `raw` and whether it is complete. Before `eof`, `None` until it is complete; at
/// `eof`, whatever arrived after a status line (incomplete) or `None` without one.
fn parse(raw: &[u8], eof: bool) -> Option<(Response, bool)> {
    let (mut response, start) = parse_head(raw)?.ok()?;
    let rest = &raw[start..];
    match framed_body(&response, rest, eof) {
        Some(body) => {
            response.body = body;
            Some((response, true))
        }
        None if eof => {
            response.body = rest.to_vec();
            Some((response, false))
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::find;
    use std::net::TcpListener;

    /// A server that answers 413 after reading only the head, then closes with most of a large
    /// body unread (the kernel sends a reset): the reply is still seen.
    #[test]
    fn early_reply_to_an_unread_body_is_seen() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let mut seen = Vec::new();
            while find(&seen, b"\r\n\r\n").is_none() {
                let n = s.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
                .unwrap();
            thread::sleep(Duration::from_millis(50));
            drop(s);
        });
        let body = vec![b'x'; 8 * 1024 * 1024];
        let ex = request(addr, "POST", "/", &[], &body, Duration::from_secs(10)).unwrap();
        server.join().unwrap();
        assert_eq!(
            (ex.response.status, ex.response.text().as_str()),
            (413, "big")
        );
        assert!(ex.complete);
        assert!(
            ex.write_error.is_some(),
            "8 MB cannot all have been written"
        );
    }

    #[test]
    fn no_status_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            drop(s);
        });
        let r = request(addr, "POST", "/", &[], b"hello", Duration::from_secs(5));
        server.join().unwrap();
        assert!(r.is_err(), "{r:?}");
    }
}
