//! A keep-alive HTTP/1.1 client for the closed-loop full-flow driver: one connection, one request
//! at a time, replies framed by `Content-Length` (what Envoy sends for the plugin's local reply).
//! The e2e client (`keygate_e2e::http`) closes the connection after every request, which would
//! put a TCP handshake into every measured latency.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_ack(&self) -> bool {
        self.status == 200 && contains(&self.body, b"<Ack>true</Ack>")
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            s.set_write_timeout(Some(Duration::from_secs(60)))?;
            self.stream = Some(s);
        }
        self.stream.as_mut().ok_or_else(|| bad("no connection"))
    }

    /// POSTs a SOAP message and reads the whole reply. The connection is kept unless the reply
    /// says `connection: close`; a failed request drops it (the next one reconnects).
    pub fn post_soap(&mut self, path: &str, body: &[u8]) -> io::Result<Reply> {
        let result = self.exchange(path, body);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self, path: &str, body: &[u8]) -> io::Result<Reply> {
        let addr = self.addr;
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"\"\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.stream()?.write_all(&req)?;

        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = self.stream()?.read(&mut chunk)?;
            if n == 0 {
                return Err(bad("connection closed before the reply was complete"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some((reply, close)) = parse(&self.buf)? {
                if close {
                    self.stream = None;
                }
                return Ok(reply);
            }
        }
    }
}

/// A complete reply in `raw` (and whether the server closes the connection), or `None` while
/// more is to come.
fn parse(raw: &[u8]) -> io::Result<Option<(Reply, bool)>> {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut length = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "transfer-encoding" => return Err(bad("chunked replies are not expected here")),
            _ => {}
        }
    }
    let length = length.ok_or_else(|| bad("reply without content-length"))?;
    let body = &raw[end + 4..];
    if body.len() < length {
        return Ok(None);
    }
    Ok(Some((
        Reply {
            status,
            body: body[..length].to_vec(),
        },
        close,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_by_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhel";
        assert!(parse(raw).unwrap().is_none());
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
        let (reply, close) = parse(raw).unwrap().unwrap();
        assert_eq!(
            (reply.status, reply.body.as_slice(), close),
            (200, &b"hello"[..], true)
        );
        assert!(parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }
}
