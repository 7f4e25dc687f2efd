//! `--api ADDR`: the HTTP API a web application's backend drives relayd with — publish to a
//! room, broadcast, send to or kick a user, who is in a room, the rooms, a room's history,
//! the counters, and `/metrics` — JSON in and out, on a listener of its own.
//!
//! Every request must carry `Authorization: Bearer KEY` (`--api-key-file`; compared in
//! constant time); without a key file `main` serves it on a loopback address only.
//!
//! One request per connection, answered with `Connection: close`: a backend makes a handful
//! of calls, and a connection that cannot be kept open cannot be kept idle either. Each
//! request gets a thread, as each client does; at most [`MAX_REQUESTS`] at once (and
//! `--max-per-ip` from one address), and its head and body must arrive within
//! [`REQUEST_TIMEOUT`] of the connection, so that connections that never finish a request
//! cannot pile up threads. The head is read by the one HTTP request reader,
//! `transport/http.rs`, as for the `--ws-bind` front and `--metrics`: tiny_http, the
//! well-kept blocking server, has no deadline for a request head and starts a thread for
//! every connection it holds, with no bound — the two limits this listener needs most.
//!
//! Here: the listener, its threads and limits, reading a request; `routes`: each endpoint
//! and the daemon's commands it calls; `json`: the request and answer types.

mod json;
mod routes;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown as SocketShutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::daemon::Daemon;
use crate::ops::listening::{self, Listening};
use crate::policy::access::PerAddress;
use crate::sync::Counted;
use crate::transport::http::{self, HeadError, MAX_HEAD};

use routes::{Answer, Endpoint};

/// Requests served at once; more are answered 503 at once.
const MAX_REQUESTS: usize = 64;
/// Longest request body (the JSON), far above any real one (a line is at most
/// `--max-line`): 413 beyond it.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// How long a request, head and body, may take to arrive; a backend sends it at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the answer may take to be taken.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request's thread waits, after the answer, for the client to close.
const LINGER: Duration = Duration::from_secs(1);
/// A request thread's stack, as a client's: the JSON is on the heap.
const REQUEST_STACK: usize = 128 * 1024;

/// Serves `listener` on a thread of its own until it is stopped.
pub(crate) fn start(daemon: Arc<Daemon>, listener: TcpListener) -> io::Result<Listening> {
    info!("HTTP API on http://{}/api/", listener.local_addr()?);
    listening::start("api", listener, move |l| accept_loop(&daemon, l))
}

/// The requests being served: how many, and from which addresses.
#[derive(Default)]
struct Places {
    total: Arc<AtomicUsize>,
    per_address: Arc<PerAddress>,
}

/// A request's place, given back when dropped, however its thread ends.
struct Place {
    _total: Counted,
    per_address: Arc<PerAddress>,
    ip: IpAddr,
}

impl Places {
    fn enter(&self, ip: IpAddr, max_per_ip: usize) -> Option<Place> {
        let total = Counted::take(&self.total, MAX_REQUESTS)?;
        if !self.per_address.try_add(ip, max_per_ip) {
            return None;
        }
        Some(Place {
            _total: total,
            per_address: Arc::clone(&self.per_address),
            ip,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.per_address.remove(self.ip);
    }
}

fn accept_loop(daemon: &Arc<Daemon>, listener: &TcpListener) {
    let places = Places::default();
    loop {
        let accepted = listener.accept();
        if daemon.is_stopping() {
            return;
        }
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!("api accept: {e}");
                // Out of descriptors, say: the relay matters more than an API call.
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Some(place) = places.enter(addr.ip(), daemon.config().max_per_ip) else {
            info!("api {addr}: 503 too many requests being served");
            // A fresh socket's buffer is empty: this does not block the accept loop.
            let busy = Answer::error(503, "too many requests at once, try again");
            let _ = (&stream).write_all(&response(&busy));
            continue;
        };
        let daemon = Arc::clone(daemon);
        let spawned = thread::Builder::new()
            .name("api-request".into())
            .stack_size(REQUEST_STACK)
            .spawn(move || {
                let _place = place;
                serve(&daemon, &stream, addr);
            });
        if let Err(e) = spawned {
            warn!("api {addr}: cannot start a thread: {e}");
        }
    }
}

/// Reads one request, answers it, and closes the connection.
fn serve(daemon: &Daemon, stream: &TcpStream, addr: SocketAddr) {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let Some((answer, route)) = answer(daemon, stream, deadline, addr) else {
        return;
    };
    let status = answer.status;
    if status < 300 {
        debug!("api {addr}: {route} {status}");
    } else {
        info!("api {addr}: {route} {status} {}", answer.body);
    }
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut out = stream;
    if let Err(e) = out.write_all(&response(&answer)) {
        debug!("api {addr}: answer not taken: {e}");
    }
    let _ = stream.shutdown(SocketShutdown::Write);
    linger(stream);
}

/// Before the socket is closed: reads what the client still sends (a body refused unread, a
/// 413's), for a moment, so that closing with unread input does not reset the connection and
/// destroy the answer before the client has read it.
fn linger(mut stream: &TcpStream) {
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut left = MAX_BODY * 2;
    while left > 0 {
        let wait = until.saturating_duration_since(Instant::now());
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// The answer to the request on `stream`, and the request's method and path for the log;
/// `None` if there is no one to answer (the head never came).
fn answer(
    daemon: &Daemon,
    stream: &TcpStream,
    deadline: Instant,
    addr: SocketAddr,
) -> Option<(Answer, String)> {
    let head = match http::read_head(stream, MAX_HEAD, REQUEST_TIMEOUT) {
        Ok(head) => head,
        Err(HeadError::TimedOut) => {
            info!("api {addr}: request head not complete within {REQUEST_TIMEOUT:?}, closed");
            return None;
        }
        Err(HeadError::Closed | HeadError::Failed(_)) => return None,
        Err(HeadError::TooLarge | HeadError::TooManyHeaders) => {
            return Some((Answer::error(431, "request head too large"), "-".into()));
        }
        Err(HeadError::NotHttp) => {
            return Some((Answer::error(400, "not an HTTP request"), "-".into()));
        }
    };
    let Ok(Some(request)) = http::parse(&head) else {
        return Some((Answer::error(400, "not an HTTP request"), "-".into()));
    };
    let route = format!("{} {}", request.method, request.path);
    // Before anything else, so that without the key nothing at all can be learnt here.
    if !authorized(daemon, &request) {
        return Some((Answer::error(401, "a valid API key is required"), route));
    }
    let Some(endpoint) = Endpoint::at(request.path) else {
        return Some((Answer::error(404, "no such endpoint"), route));
    };
    let answer = match (request.method, endpoint.method()) {
        ("GET", "GET") => routes::get(daemon, endpoint, request.query),
        ("POST", "POST") => match body(stream, &request, &head[request.len..], deadline) {
            Ok(body) => routes::post(daemon, endpoint, &body),
            Err(answer) => answer,
        },
        (_, allowed) => Answer::not_allowed(allowed),
    };
    Some((answer, route))
}

/// Whether the request carries the API key (any request does, without `--api-key-file`).
fn authorized(daemon: &Daemon, request: &http::Request<'_>) -> bool {
    let Some(key) = daemon.settings().api_key.clone() else {
        return true;
    };
    let mut values = request.header("authorization");
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    // The scheme is case-insensitive (RFC 9110, 11.1); the key is not.
    match value.split_at_checked(7) {
        Some((scheme, presented)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
            key.matches(presented)
        }
        _ => false,
    }
}

/// Reads a POST's body: `Content-Length` bytes, at most [`MAX_BODY`], by `deadline`;
/// `read` is what came with the head.
fn body(
    stream: &TcpStream,
    request: &http::Request<'_>,
    read: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, Answer> {
    if request.header("transfer-encoding").next().is_some() {
        return Err(Answer::error(411, "send the body with a Content-Length"));
    }
    let mut lengths = request.header("content-length");
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => return Err(Answer::error(411, "Content-Length is required")),
        (Some(value), None) => std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| Answer::error(400, "bad Content-Length"))?,
        (Some(_), Some(_)) => return Err(Answer::error(400, "more than one Content-Length")),
    };
    if length > MAX_BODY {
        return Err(Answer::error(
            413,
            &format!("the body is larger than {MAX_BODY} bytes"),
        ));
    }
    let mut body = read[..read.len().min(length)].to_vec();
    // curl asks first for a body over 1 KiB, and waits a second for the go-ahead.
    let expects = request
        .header("expect")
        .any(|v| v.eq_ignore_ascii_case(b"100-continue"));
    if expects && body.len() < length {
        let _ = (&*stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut chunk = [0u8; 4096];
    while body.len() < length {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Answer::error(408, "the body did not arrive in time"));
        }
        let _ = stream.set_read_timeout(Some(left));
        let want = (length - body.len()).min(chunk.len());
        match (&*stream).read(&mut chunk[..want]) {
            Ok(0) => return Err(Answer::error(400, "the body ended early")),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if crate::sys::timed_out(&e) => {
                return Err(Answer::error(408, "the body did not arrive in time"));
            }
            Err(_) => return Err(Answer::error(400, "the body could not be read")),
        }
    }
    Ok(body)
}

/// The bytes of `answer`.
fn response(answer: &Answer) -> Vec<u8> {
    let reason = match answer.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{}",
        answer.status,
        answer.content_type,
        answer.body.len(),
        answer.headers,
        answer.body,
    )
    .into_bytes()
}
