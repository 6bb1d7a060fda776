//! A deliberately small HTTP/1.1 server: one thread per connection, keep-alive (Envoy pools its
//! upstream connections), `Content-Length` and chunked request bodies, `Expect: 100-continue`.
//! Anything malformed gets a 400 and the connection is closed; nothing here may panic the process.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Request line plus headers; bigger is an attack or a bug, not a test.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A parsed request. `path` and `query` are raw (not percent-decoded).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub path: String,
    pub query: String,
    /// HTTP/1.x minor version.
    pub minor_version: u8,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The peer's address (set by the connection loop; `None` when parsed from bytes alone).
    pub peer: Option<SocketAddr>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query_pairs(&self) -> Vec<(String, String)> {
        parse_form(self.query.as_bytes())
    }

    /// True for `application/x-www-form-urlencoded` bodies (any parameters, any case).
    pub fn is_form(&self) -> bool {
        self.header("content-type").is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    }

    fn keep_alive(&self) -> bool {
        let tokens = |v: &str| {
            v.split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let conn: Vec<String> = self
            .headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| tokens(v))
            .collect();
        if self.minor_version == 0 {
            conn.iter().any(|t| t == "keep-alive")
        } else {
            !conn.iter().any(|t| t == "close")
        }
    }
}

/// `application/x-www-form-urlencoded` (also query strings): `+` is a space, `%XX` decoded.
pub fn parse_form(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Headers besides content-type, content-length, connection and server (Keygen's
    /// `X-RateLimit-*`, `Retry-After`, `WWW-Authenticate`, `Location`).
    pub headers: Vec<(String, String)>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: content_type.to_owned(),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// The same response with one more header (CR and LF are dropped from the value).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        let value: String = value
            .into()
            .chars()
            .filter(|c| *c != '\r' && *c != '\n')
            .collect();
        self.headers.push((name.to_owned(), value));
        self
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(
            status,
            "application/json;charset=UTF-8",
            value.to_string().into_bytes(),
        )
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(
            status,
            "text/plain; charset=utf-8",
            body.into().into_bytes(),
        )
    }
}

/// What a handler wants done with a request.
#[derive(Debug)]
pub enum Outcome {
    Reply(Response),
    /// Close the connection without answering.
    Reset,
}

/// The per-listener request handler.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Outcome;
    /// A request that could not be parsed; it is answered with `status` and the connection closed.
    fn bad_request(&self, status: u16, reason: &str);
    /// A request whose head arrived and whose body never did (the peer closed).
    fn truncated(&self, _head: &Request) {}
}

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (or the socket broke) between requests or mid-request: nothing to answer.
    Closed,
    /// Unparseable request: answer `status` and close.
    Bad(u16, String),
    /// The head arrived whole, then the peer closed before the body did (a proxy that gave up
    /// on the request): nothing to answer, but what arrived is worth recording.
    Truncated(Box<Request>),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> ReadError {
        ReadError::Closed
    }
}

fn bad(status: u16, msg: impl Into<String>) -> ReadError {
    ReadError::Bad(status, msg.into())
}

/// Reads one line (up to and including `\n`), failing once more than `max` bytes arrive.
/// Returns the line without its line ending (`\r\n` or a bare `\n`).
fn read_line<R: BufRead>(
    r: &mut R,
    max: usize,
    eof_ok: bool,
) -> Result<Option<Vec<u8>>, ReadError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            if line.is_empty() && eof_ok {
                return Ok(None);
            }
            return Err(ReadError::Closed);
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (buf.get(..=i).unwrap_or(buf), true),
            None => (buf, false),
        };
        if line.len() + chunk.len() > max {
            return Err(bad(431, "request line or header too long"));
        }
        line.extend_from_slice(chunk);
        let n = chunk.len();
        r.consume(n);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads one request. `send_continue` is called once before the body is read when the client
/// asked for `Expect: 100-continue`.
pub fn read_request<R: BufRead>(
    r: &mut R,
    send_continue: &mut dyn FnMut() -> io::Result<()>,
) -> Result<Request, ReadError> {
    // Tolerate stray empty lines between pipelined requests (RFC 9112 §2.2).
    let mut budget = MAX_HEAD_BYTES;
    let line = loop {
        match read_line(r, budget, true)? {
            None => return Err(ReadError::Closed),
            Some(l) if l.is_empty() => budget = budget.saturating_sub(2),
            Some(l) => break l,
        }
        if budget == 0 {
            return Err(bad(400, "too many empty lines"));
        }
    };
    budget = budget.saturating_sub(line.len());
    let line = String::from_utf8(line).map_err(|_| bad(400, "request line is not UTF-8"))?;
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(bad(400, "malformed request line")),
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(bad(400, "malformed method"));
    }
    // Absolute form (`http://host/path`) is what a proxy-style client sends; servers must take it.
    let target = match target.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/")
        }
        _ => target,
    };
    if !(target.starts_with('/') || target == "*") || target.bytes().any(|b| b <= b' ' || b == 0x7f)
    {
        return Err(bad(400, "malformed request target"));
    }
    let minor_version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ if version.starts_with("HTTP/") => return Err(bad(505, "HTTP version not supported")),
        _ => return Err(bad(400, "malformed HTTP version")),
    };

    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(r, budget.max(1), false)? else {
            return Err(ReadError::Closed);
        };
        budget = budget.saturating_sub(line.len() + 2);
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(bad(431, "too many headers"));
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(bad(400, "obsolete header line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| bad(400, "header without a colon"))?;
        let (name, value) = line.split_at(colon);
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(bad(400, "malformed header name"));
        }
        let value = value.get(1..).unwrap_or_default();
        if value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
            return Err(bad(400, "control character in header value"));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = String::from_utf8_lossy(value).trim().to_owned();
        headers.push((name, value));
    }

    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.to_owned(), String::new()),
    };
    let mut req = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        path,
        query,
        minor_version,
        headers,
        body: Vec::new(),
        peer: None,
    };

    let chunked = body_is_chunked(&req)?;
    let length = content_length(&req)?;
    if !chunked && length.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(bad(413, "body too large"));
    }
    let has_body = chunked || length.is_some_and(|n| n > 0);
    let expects_continue = req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if has_body && expects_continue && minor_version == 1 {
        send_continue()?;
    }
    let body = if chunked {
        decode_chunked(r, MAX_BODY_BYTES)
    } else if let Some(n) = length {
        let mut body = vec![0; n];
        r.read_exact(&mut body)
            .map(|()| body)
            .map_err(ReadError::from)
    } else {
        Ok(Vec::new())
    };
    match body {
        Ok(body) => req.body = body,
        Err(ReadError::Closed) => return Err(ReadError::Truncated(Box::new(req))),
        Err(e) => return Err(e),
    }
    Ok(req)
}

/// `Transfer-Encoding` wins over `Content-Length` (RFC 9112 §6.3); only `chunked` is understood.
fn body_is_chunked(req: &Request) -> Result<bool, ReadError> {
    let codings: Vec<String> = req
        .headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .flat_map(|(_, v)| v.split(',').map(|c| c.trim().to_ascii_lowercase()))
        .filter(|c| !c.is_empty())
        .collect();
    match codings.as_slice() {
        [] => Ok(false),
        [only] if only == "chunked" => Ok(true),
        _ => Err(bad(501, "unsupported transfer-encoding")),
    }
}

fn content_length(req: &Request) -> Result<Option<usize>, ReadError> {
    let mut found: Option<usize> = None;
    for (_, v) in req.headers.iter().filter(|(n, _)| n == "content-length") {
        for part in v.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(400, "malformed content-length"));
            }
            let n: usize = part
                .parse()
                .map_err(|_| bad(413, "content-length too large"))?;
            if found.is_some_and(|f| f != n) {
                return Err(bad(400, "conflicting content-length"));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Decodes a chunked body (chunk extensions ignored, trailers read and dropped).
pub fn decode_chunked<R: BufRead>(r: &mut R, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r, 4096, false)?.ok_or(ReadError::Closed)?;
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = String::from_utf8_lossy(size_text);
        let size_text = size_text.trim_matches(|c| c == ' ' || c == '\t');
        if size_text.is_empty()
            || size_text.len() > 15
            || !size_text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad(400, "malformed chunk size"));
        }
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| bad(400, "malformed chunk size"))?;
        if size == 0 {
            // Trailer section: header lines until an empty line.
            let mut budget = MAX_HEAD_BYTES;
            loop {
                let t = read_line(r, budget.max(1), false)?.ok_or(ReadError::Closed)?;
                if t.is_empty() {
                    return Ok(body);
                }
                budget = budget.saturating_sub(t.len() + 2);
                if budget == 0 {
                    return Err(bad(431, "trailers too long"));
                }
            }
        }
        if body.len() + size > max {
            return Err(bad(413, "body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        if let Some(dst) = body.get_mut(start..) {
            r.read_exact(dst)?;
        }
        expect_line_end(r)?;
    }
}

/// The CRLF (or bare LF) that must follow chunk data.
fn expect_line_end<R: BufRead>(r: &mut R) -> Result<(), ReadError> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    if b == *b"\r" {
        r.read_exact(&mut b)?;
    }
    if b == *b"\n" {
        Ok(())
    } else {
        Err(bad(400, "chunk data not followed by CRLF"))
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// Serialises head and body into one buffer: one write, so TCP_NODELAY sends one segment train.
pub fn encode_response(resp: &Response, keep_alive: bool, head_only: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: {}\r\nserver: keygate-standins\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in &resp.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    out
}

type Connections = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// One listening socket with its accept thread. Dropping it stops accepting and closes every
/// open connection.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Connections,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(
        listener: TcpListener,
        name: &str,
        handler: Arc<dyn Handler>,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Connections = Arc::new(Mutex::new(HashMap::new()));
        let accept = {
            let (stop, conns, name) = (stop.clone(), conns.clone(), name.to_owned());
            thread::Builder::new()
                .name(format!("{name}-accept"))
                .spawn(move || accept_loop(listener, &name, handler, stop, conns))?
        };
        Ok(Server {
            addr,
            stop,
            conns,
            accept: Some(accept),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // accept() has no timeout in std: a throwaway connection wakes it up to see `stop`.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = accept.join();
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in conns.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: TcpListener,
    name: &str,
    handler: Arc<dyn Handler>,
    stop: Arc<AtomicBool>,
    conns: Connections,
) {
    let ids = AtomicU64::new(0);
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // EMFILE and friends: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, clone);
        }
        let (handler, mine) = (handler.clone(), conns.clone());
        let spawned = thread::Builder::new()
            .name(format!("{name}-conn-{id}"))
            .spawn(move || {
                serve_connection(stream, handler.as_ref());
                mine.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        if spawned.is_err() {
            conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        }
    }
}

fn serve_connection(stream: TcpStream, handler: &dyn Handler) {
    // Small request/response exchanges: don't let Nagle hold back the reply.
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut send_continue = || writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        let req = match read_request(&mut reader, &mut send_continue) {
            Ok(mut req) => {
                req.peer = peer;
                req
            }
            Err(ReadError::Closed) => return,
            Err(ReadError::Truncated(head)) => {
                handler.truncated(&head);
                return;
            }
            Err(ReadError::Bad(status, reason)) => {
                handler.bad_request(status, &reason);
                let resp = Response::text(status, format!("bad request: {reason}\n"));
                let _ = writer.write_all(&encode_response(&resp, false, false));
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        };
        let keep_alive = req.keep_alive();
        // A handler bug must cost one request, not the server.
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(&req)))
                .unwrap_or_else(|_| {
                    Outcome::Reply(Response::text(500, "stand-in handler panicked\n"))
                });
        match outcome {
            Outcome::Reset => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Outcome::Reply(resp) => {
                let bytes = encode_response(&resp, keep_alive, req.method == "HEAD");
                if writer
                    .write_all(&bytes)
                    .and_then(|_| writer.flush())
                    .is_err()
                    || !keep_alive
                {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse(raw: &[u8]) -> Result<Request, ReadError> {
        let mut r = Cursor::new(raw.to_vec());
        read_request(&mut r, &mut || Ok(()))
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: y\r\n\r\nNEXT";
        let mut r = Cursor::new(raw.to_vec());
        let body = decode_chunked(&mut r, 1024).unwrap();
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        // The reader stops exactly after the message: the next request's bytes are untouched.
        assert_eq!(&r.get_ref()[r.position() as usize..], b"NEXT");
    }

    #[test]
    fn chunked_body_errors() {
        for raw in [
            &b"zz\r\nab\r\n0\r\n\r\n"[..],
            b"2\r\nabc\r\n0\r\n\r\n",
            b"\r\n",
            b"1234567890abcdef0\r\n",
        ] {
            let mut r = Cursor::new(raw.to_vec());
            assert!(
                matches!(decode_chunked(&mut r, 1024), Err(ReadError::Bad(400, _))),
                "{raw:?}"
            );
        }
        let mut r = Cursor::new(b"10\r\n0123456789abcdef\r\n0\r\n\r\n".to_vec());
        assert!(matches!(
            decode_chunked(&mut r, 8),
            Err(ReadError::Bad(413, _))
        ));
        let mut r = Cursor::new(b"5\r\nab".to_vec());
        assert!(matches!(decode_chunked(&mut r, 64), Err(ReadError::Closed)));
    }

    #[test]
    fn request_with_chunked_body_and_expect() {
        let raw = b"POST /x?a=1 HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let mut continued = false;
        let mut r = Cursor::new(raw.to_vec());
        let req = read_request(&mut r, &mut || {
            continued = true;
            Ok(())
        });
        let req = req.unwrap();
        assert!(continued);
        assert_eq!(req.body, b"abc");
        assert_eq!((req.path.as_str(), req.query.as_str()), ("/x", "a=1"));
        assert_eq!(req.header("host"), Some("h"));
        assert!(req.keep_alive());
    }

    #[test]
    fn malformed_requests_are_rejected_not_panicked() {
        let cases: &[&[u8]] = &[
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET noslash HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
        ];
        for raw in cases {
            assert!(matches!(parse(raw), Err(ReadError::Bad(..))), "{raw:?}");
        }
        assert!(matches!(parse(b""), Err(ReadError::Closed)));
        // The head arrived, the body did not: kept for the record.
        assert!(matches!(
            parse(b"POST /x?q=1 HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc"),
            Err(ReadError::Truncated(head)) if head.path == "/x" && head.query == "q=1" && head.body.is_empty()
        ));
    }

    #[test]
    fn connection_semantics() {
        let req = |raw: &[u8]| {
            parse(raw)
                .map(|r| r.keep_alive())
                .map_err(|e| format!("{e:?}"))
        };
        assert_eq!(req(b"GET / HTTP/1.1\r\n\r\n"), Ok(true));
        assert_eq!(
            req(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"),
            Ok(false)
        );
        assert_eq!(req(b"GET / HTTP/1.0\r\n\r\n"), Ok(false));
        assert_eq!(
            req(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            Ok(true)
        );
        let abs = parse(b"GET http://example.com/a/b?c=d HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((abs.path.as_str(), abs.query.as_str()), ("/a/b", "c=d"));
    }

    #[test]
    fn form_parsing_decodes_plus_and_percent() {
        let pairs = parse_form(b"grant_type=password&username=integration%40example.com&is_emailtemplate=1.+New+Order&empty=&flag");
        let expect: Vec<(String, String)> = [
            ("grant_type", "password"),
            ("username", "integration@example.com"),
            ("is_emailtemplate", "1. New Order"),
            ("empty", ""),
            ("flag", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(pairs, expect);
    }
}
