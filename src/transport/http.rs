//! HTTP, one request per connection: its head read within a size and a time bound, and the
//! `--ws-bind` front's answer to it.
//!
//! [`read_head`] serves the front here, `--metrics` and `--api` (which answer on their own). The front
//! serves the page at `/`, hands a WebSocket upgrade on to `ws.rs`, or refuses anything else
//! with a plain HTTP error; every answer closes the connection.
//!
//! A head is parsed with `httparse` only, to find where it ends and to route it; the
//! WebSocket handshake itself is tungstenite's, which reads the same head again.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use log::info;

/// The page: HTML, CSS and JavaScript in one file, nothing loaded from anywhere else.
const PAGE: &str = include_str!("page.html");

/// A request head larger than this is refused (431).
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// A request head that takes longer than this to arrive is dropped.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// More headers than this are refused (431): a browser's upgrade request sends about 15.
const MAX_HEADERS: usize = 64;

/// Where a WebSocket may be opened: `/`, and `/ws`, which the page uses.
const WS_PATHS: [&str; 2] = ["/", "/ws"];

/// Why no request head was read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The client ended its side before the head was complete.
    Closed,
    /// The socket failed.
    Failed(io::Error),
    /// The head was not complete within the time allowed.
    TimedOut,
    /// The head is longer than allowed.
    TooLarge,
    /// The head has more than [`MAX_HEADERS`] headers.
    TooManyHeaders,
    /// What came is not an HTTP request.
    NotHttp,
}

/// What a request asks for: enough to route it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    /// The target without its query.
    pub(crate) path: &'a str,
    /// What follows the `?` in the target, if anything (it may hold a token: never logged).
    pub(crate) query: &'a str,
    /// Every header, in order, as sent.
    pub(crate) headers: Vec<(&'a str, &'a [u8])>,
    /// Whether it asks for a WebSocket (`Upgrade: websocket`).
    pub(crate) upgrade: bool,
    /// How many bytes the head takes: what follows is the client's next bytes.
    pub(crate) len: usize,
}

/// Parses the request head at the start of `bytes`: `Ok(None)` while it is not complete.
pub(crate) fn parse(bytes: &[u8]) -> Result<Option<Request<'_>>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::NotHttp),
    };
    let target = request.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let upgrade = request.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && String::from_utf8_lossy(h.value).eq_ignore_ascii_case("websocket")
    });
    Ok(Some(Request {
        method: request.method.unwrap_or(""),
        path,
        query,
        headers: request.headers.iter().map(|h| (h.name, h.value)).collect(),
        upgrade,
        len,
    }))
}

/// The value of parameter `name` in `query` (`a=1&b=2`), decoded as a browser's form
/// encoding is (`%XX`, `+`), by the url crate's own decoder; the first if there are several.
pub(crate) fn param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

impl Request<'_> {
    /// The values of header `name` (any case), in order.
    pub(crate) fn header<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Reads a request head from `sock`: at most `max` bytes of it, all within `timeout`.
/// Returns what was read, the head first and then anything the client sent after it (for
/// [`parse`] to route, and for a WebSocket handshake to read again).
pub(crate) fn read_head(
    sock: &TcpStream,
    max: usize,
    timeout: Duration,
) -> Result<Vec<u8>, HeadError> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(request) = parse(&buf)? {
            if request.len > max {
                return Err(HeadError::TooLarge);
            }
            return Ok(buf);
        }
        if buf.len() > max {
            return Err(HeadError::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        let _ = sock.set_read_timeout(Some(left));
        match (&*sock).read(&mut chunk) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if crate::sys::timed_out(&e) => return Err(HeadError::TimedOut),
            Err(e) => return Err(HeadError::Failed(e)),
        }
    }
}

/// Reads the request head on `sock` and answers it unless it asks for a WebSocket. Returns
/// what was read (the head, and anything the client sent after it) for the handshake, or
/// `None` once the request was answered or dropped.
pub(crate) fn front(sock: &TcpStream, addr: SocketAddr) -> Option<Vec<u8>> {
    let head = match read_head(sock, MAX_HEAD, HEAD_TIMEOUT) {
        Ok(head) => head,
        Err(HeadError::TimedOut) => {
            info!("http {addr}: request head not complete within {HEAD_TIMEOUT:?}, closed");
            return None;
        }
        Err(HeadError::Closed | HeadError::Failed(_)) => return None,
        Err(HeadError::TooLarge) => return refuse(sock, addr, 431, "request head too large"),
        Err(HeadError::TooManyHeaders) => return refuse(sock, addr, 431, "too many headers"),
        Err(HeadError::NotHttp) => return refuse(sock, addr, 400, "not an HTTP request"),
    };
    // Parsed again, now that it is complete, to borrow from it: once per connection.
    let Ok(Some(request)) = parse(&head) else {
        return refuse(sock, addr, 400, "not an HTTP request");
    };
    if request.method != "GET" {
        return refuse(sock, addr, 405, "only GET is served");
    }
    match (request.upgrade, request.path) {
        (true, p) if WS_PATHS.contains(&p) => Some(head),
        (false, "/") => {
            respond(sock, 200, "text/html; charset=utf-8", PAGE.as_bytes());
            None
        }
        _ => refuse(sock, addr, 404, "not found"),
    }
}

/// Answers with an HTTP error and a line in the log.
fn refuse(sock: &TcpStream, addr: SocketAddr, status: u16, why: &str) -> Option<Vec<u8>> {
    info!("http {addr}: {status} {why}");
    respond(
        sock,
        status,
        "text/plain; charset=utf-8",
        format!("relayd: {why}\n").as_bytes(),
    );
    None
}

/// A bad handshake that tungstenite refused without answering.
pub(crate) fn bad_request(sock: &TcpStream, addr: SocketAddr, why: &str) {
    refuse(sock, addr, 400, why);
}

fn respond(sock: &TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    // The page may talk to its own origin only, and nothing it shows is ever run as script
    // (the CSP forbids loading anything; its text is inserted as text, never HTML).
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
         style-src 'unsafe-inline'; connect-src 'self'\r\n{}Connection: close\r\n\r\n",
        body.len(),
        if status == 405 { "Allow: GET\r\n" } else { "" },
    );
    let mut out = sock;
    let _ = out
        .write_all(head.as_bytes())
        .and_then(|()| out.write_all(body));
    let _ = sock.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn reads_a_query_parameter() {
        assert_eq!(
            param("token=a.b-c_d&x=1", "token").as_deref(),
            Some("a.b-c_d")
        );
        assert_eq!(
            param("x=1&token=a%2Eb%2", "token").as_deref(),
            Some("a.b%2")
        );
        assert_eq!(param("tokens=a", "token"), None);
        assert_eq!(param("", "token"), None);
        assert_eq!(param("token=", "token").as_deref(), Some(""));
    }

    #[test]
    fn parses_a_head_to_route_it() {
        let head = b"GET /ws?x=1 HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\r\nafter";
        let request = parse(head).unwrap().unwrap();
        assert_eq!((request.method, request.path), ("GET", "/ws"));
        assert_eq!(request.query, "x=1");
        assert_eq!(request.header("HOST").collect::<Vec<_>>(), [b"x"]);
        assert!(request.upgrade);
        assert_eq!(&head[request.len..], b"after");
        // Bare line feeds are accepted as line ends, as by tungstenite's handshake.
        let request = parse(b"POST /metrics HTTP/1.0\n\n").unwrap().unwrap();
        assert_eq!((request.method, request.path), ("POST", "/metrics"));
        assert!(!request.upgrade);
        assert!(parse(b"").unwrap().is_none());
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert!(matches!(
            parse(b"hello there\r\n\r\n"),
            Err(HeadError::NotHttp)
        ));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(
            parse(many.as_bytes()),
            Err(HeadError::TooManyHeaders)
        ));
    }

    /// What `read_head` makes of `sent`, with `max` bytes and 200 ms allowed; the client's
    /// side stays open unless `close`.
    fn read_sent(sent: &[u8], max: usize, close: bool) -> Result<Vec<u8>, HeadError> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.write_all(sent).unwrap();
        if close {
            client.shutdown(Shutdown::Write).unwrap();
        }
        read_head(&server, max, Duration::from_millis(200))
    }

    #[test]
    fn reads_a_head_within_its_bounds() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nnext";
        assert_eq!(read_sent(head, 64, false).unwrap(), head);
        assert!(matches!(
            read_sent(head, 16, false),
            Err(HeadError::TooLarge)
        ));
        let long = format!("GET / HTTP/1.1\r\nX: {}", "y".repeat(3000));
        assert!(matches!(
            read_sent(long.as_bytes(), 2048, false),
            Err(HeadError::TooLarge)
        ));
        let start = Instant::now();
        assert!(matches!(
            read_sent(b"GET / HTTP/1.1\r\n", 64, false),
            Err(HeadError::TimedOut)
        ));
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert!(matches!(
            read_sent(b"GET / HTTP/1.1\r\n", 64, true),
            Err(HeadError::Closed)
        ));
        assert!(matches!(
            read_sent(b"hello there\r\n\r\n", 64, false),
            Err(HeadError::NotHttp)
        ));
    }
}
