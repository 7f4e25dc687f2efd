//! The HTTP front of a `--ws-bind` listener: reads one request head, and serves the page at
//! `/`, hands a WebSocket upgrade on to `ws.rs`, or refuses anything else with a plain HTTP
//! error. One request per connection: every answer closes it.
//!
//! The head is parsed with `httparse` only to route it; the handshake itself is tungstenite's,
//! which reads the same head again.

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

/// Where a WebSocket may be opened: `/`, and `/ws`, which the page uses.
const WS_PATHS: [&str; 2] = ["/", "/ws"];

/// Reads the request head on `sock` and answers it unless it asks for a WebSocket. Returns
/// what was read (the head, and anything the client sent after it) for the handshake, or
/// `None` once the request was answered or dropped.
pub(crate) fn front(sock: &TcpStream, addr: SocketAddr) -> Option<Vec<u8>> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEAD {
            return refuse(sock, addr, 431, "request head too large");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            info!("http {addr}: request head not complete within {HEAD_TIMEOUT:?}, closed");
            return None;
        }
        let _ = sock.set_read_timeout(Some(left));
        match (&*sock).read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if crate::sys::timed_out(&e) => {
                info!("http {addr}: request head not complete within {HEAD_TIMEOUT:?}, closed");
                return None;
            }
            Err(_) => return None,
        }
    };
    if end > MAX_HEAD {
        return refuse(sock, addr, 431, "request head too large");
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return refuse(sock, addr, 431, "too many headers");
        }
        _ => return refuse(sock, addr, 400, "not an HTTP request"),
    }
    let target = request.path.unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    if request.method != Some("GET") {
        return refuse(sock, addr, 405, "only GET is served");
    }
    let upgrade = request.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && String::from_utf8_lossy(h.value).eq_ignore_ascii_case("websocket")
    });
    match (upgrade, path) {
        (true, p) if WS_PATHS.contains(&p) => Some(buf),
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
