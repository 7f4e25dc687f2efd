//! The WebSocket transport (RFC 6455): the handshake, once the HTTP front (`http.rs`) has
//! seen an upgrade request, and then how a browser's messages come in. What goes out is the
//! peer's business, as for TCP clients: relayed lines are queued as chunks, and the peer
//! writes each one's WebSocket form, built once for all WebSocket recipients (`chunk.rs`,
//! `ws_frame.rs`).
//!
//! Why the reader and the writer are split this way: a tungstenite `WebSocket` cannot be read
//! on one thread while it is written on another, because reading queues replies (a pong for
//! a ping, a close frame for a close) that it then writes itself. So the client's own thread
//! owns the `WebSocket` and is its only user, for reading; it is never used to send a line.
//! Its write side is a [`Duplex`] that puts whatever tungstenite writes (its pongs and close
//! replies, each whole frames) into the peer's queue, behind and before relayed lines, so
//! the one drainer of that queue (deliverer or writer) is the only thread that writes to the
//! socket, and frames never interleave. Lines for the client go into the same queue as
//! pre-built frames; relayd's own pings too.

use std::cell::{Cell, RefCell};
use std::io::{self, Cursor, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::{HeaderValue, StatusCode, Uri};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::OpCode;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Error, Message, WebSocket};

use crate::config::Config;
use crate::daemon::Daemon;
use crate::delivery::chunk::{Chunk, Format};
use crate::delivery::notice::Departure;
use crate::delivery::peer::Peer;
use crate::delivery::ws_frame;
use crate::framing::without_line_end;
use crate::transport::ReadError;

/// What tungstenite reads into; it is zeroed and so resident once used, so it is kept small
/// (its default is 128 KiB): an idle browser must cost little more than an idle `nc`. 1 KiB
/// holds a browser's chat line and costs 3 KiB less per idle viewer than 4 KiB did (measured
/// with relay-bench danmaku); a longer message is read in 1 KiB steps and the buffer is
/// rebuilt afterwards (see [`Frames`]).
const READ_BUFFER: usize = 1024;

/// How long a frame header can be (RFC 6455, 5.2): 2 bytes, 8 of length, 4 of mask.
const MAX_HEADER: usize = 14;

/// Where the bytes handed to tungstenite stand in the stream of frames, followed with
/// tungstenite's own header parser (payloads are only counted).
///
/// Why: tungstenite's input buffer grows to hold the longest frame it has read and never
/// shrinks, so a browser that once sent a long message would keep that much memory for the
/// rest of its life. tungstenite offers no way to shrink it, nor to take out what it has
/// buffered; it can only be rebuilt around the same stream, and that is safe only when it
/// holds nothing: when it asks for more bytes although those handed so far end at a frame's
/// end and no message is unfinished (it never asks while a whole frame is buffered).
#[derive(Default)]
struct Frames {
    /// Bytes of the HTTP request head still to be handed (the handshake's): not frames.
    request: usize,
    /// The start of a frame header whose rest has not been handed yet.
    header: Vec<u8>,
    /// Payload bytes of the current frame not handed yet.
    payload: u64,
    /// A fragmented data message has not had its final frame.
    fragmented: bool,
    /// A frame longer than [`READ_BUFFER`] was handed since tungstenite was (re)built: its
    /// buffer has grown.
    grown: bool,
    /// A header the parser refused: tungstenite fails the connection on it; nothing is
    /// rebuilt.
    broken: bool,
}

impl Frames {
    /// Follows `bytes`, just handed to tungstenite.
    fn handed(&mut self, mut bytes: &[u8]) {
        let request = self.request.min(bytes.len());
        self.request -= request;
        bytes = &bytes[request..];
        while !bytes.is_empty() && !self.broken {
            if self.payload > 0 {
                let n = self.payload.min(bytes.len() as u64) as usize;
                self.payload -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let had = self.header.len();
            let take = (MAX_HEADER - had).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            let mut cursor = Cursor::new(self.header.as_slice());
            match FrameHeader::parse(&mut cursor) {
                Ok(Some((header, len))) => {
                    bytes = &bytes[cursor.position() as usize - had..];
                    self.header.clear();
                    self.payload = len;
                    if let OpCode::Data(_) = header.opcode {
                        self.fragmented = !header.is_final;
                    }
                    self.grown |= len > READ_BUFFER as u64;
                }
                Ok(None) => bytes = &bytes[take..],
                Err(_) => self.broken = true,
            }
        }
    }

    /// Whether tungstenite, asking for more bytes now, holds a buffer grown for a long frame
    /// and nothing in it.
    fn drained_after_long_frame(&self) -> bool {
        self.grown
            && self.request == 0
            && self.header.is_empty()
            && self.payload == 0
            && !self.fragmented
            && !self.broken
    }
}

/// The stream under the reader's `WebSocket` (see the module's note).
pub(crate) struct Duplex {
    sock: Arc<TcpStream>,
    /// The request head the HTTP front already read, for tungstenite to read again.
    head: Vec<u8>,
    at: usize,
    /// Once the client is admitted: where tungstenite's writes go.
    queue: Option<(Arc<Daemon>, Arc<Peer>)>,
    /// When a read from the socket must give up (a ping is due, or the client's timeout):
    /// set just before the socket is read, not for each message, since tungstenite often
    /// has the next message buffered already.
    wake: Option<Instant>,
    frames: Frames,
    /// Set when a read was refused so that the `WebSocket` is rebuilt (see [`Frames`]).
    rebuild: bool,
}

impl Duplex {
    /// Everything of this one, left in its place in a Duplex on the same socket that is to
    /// be dropped.
    fn take(&mut self) -> Duplex {
        let empty = Duplex {
            sock: Arc::clone(&self.sock),
            head: Vec::new(),
            at: 0,
            queue: None,
            wake: None,
            frames: Frames::default(),
            rebuild: false,
        };
        std::mem::replace(self, empty)
    }

    /// The head's bytes first, then the socket's.
    fn read_on(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.head.len() {
            let n = buf.len().min(self.head.len() - self.at);
            buf[..n].copy_from_slice(&self.head[self.at..self.at + n]);
            self.at += n;
            if self.at == self.head.len() {
                self.head = Vec::new();
                self.at = 0;
            }
            return Ok(n);
        }
        if let Some(wake) = self.wake {
            let wait = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let _ = self.sock.set_read_timeout(Some(wait));
        }
        (&*self.sock).read(buf)
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.frames.drained_after_long_frame() {
            self.rebuild = true;
            return Err(io::Error::other("the read buffer is to be given back"));
        }
        let n = self.read_on(buf)?;
        self.frames.handed(&buf[..n]);
        Ok(n)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.queue {
            // The handshake's answer, before anything can be queued for the client.
            None => (&*self.sock).write(buf),
            // Pongs and close replies: the client's own doing, like a command's answer.
            Some((daemon, peer)) => {
                daemon.reply(peer, &Chunk::frames(buf));
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a handshake did not complete.
pub(crate) enum Refused {
    /// Refused with an HTTP answer already written (a wrong origin).
    Answered(String),
    /// Not a valid WebSocket request: nothing was answered.
    Failed(String),
}

/// Checks one `--ws-origin`, for a one-line startup error. The check in `handshake` compares
/// the browser's `Origin` header byte for byte, and a browser spells an origin one way only:
/// `http` or `https`, `://`, the host in lower case, and a port only if not the scheme's
/// default. An entry spelt otherwise (`foo`, a trailing `/`, a path) would match no page and
/// refuse every browser without a word, so it is refused at startup instead.
pub fn check_origin(origin: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "--ws-origin {origin:?}: {why} (an origin is SCHEME://HOST[:PORT], e.g. https://chat.example.org)"
        ))
    };
    let Ok(uri) = origin.parse::<Uri>() else {
        return bad("not an origin");
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return bad("not an origin");
    };
    if !matches!(scheme, "http" | "https") {
        return bad("the scheme must be http or https");
    }
    if authority.as_str().contains('@') {
        return bad("an origin has no user name");
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    if authority.port_u16() == Some(default_port) {
        return bad("browsers leave the scheme's default port out");
    }
    if format!("{scheme}://{authority}") != origin {
        return bad("an origin has no path, query or trailing /");
    }
    if authority.host().bytes().any(|b| b.is_ascii_uppercase()) {
        return bad("browsers send the host in lower case");
    }
    Ok(())
}

/// The subprotocol a browser asks for to speak JSON (see `json_event.rs`, `client/json.rs`).
pub(crate) const JSON_PROTOCOL: &str = "relayd.v1.json";

/// Whether a request's `Sec-WebSocket-Protocol` headers (each a comma-separated list) offer
/// [`JSON_PROTOCOL`].
fn offers_json(request: &Request) -> bool {
    request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == JSON_PROTOCOL)
}

/// Completes the WebSocket handshake on `sock`, whose request head `head` the HTTP front has
/// read (and found to be an upgrade), and says how the client is to be written: a client
/// that offers [`JSON_PROTOCOL`] gets it confirmed and speaks JSON; any other is a plain
/// WebSocket client, as before the subprotocol existed. With `--ws-origin`, a request from any other origin
/// (or none) is refused with 403: a page on another site could otherwise open a WebSocket
/// to relayd with its visitor's browser (cross-site WebSocket hijacking).
pub(crate) fn handshake(
    sock: Arc<TcpStream>,
    head: Vec<u8>,
    config: &Config,
) -> Result<(WebSocket<Duplex>, Format), Refused> {
    let origins = &config.ws_origins;
    let seen = RefCell::new(None);
    let format = Cell::new(Format::WebSocket);
    // tungstenite's callback signature, which is not ours to change.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        if offers_json(request) {
            format.set(Format::Json);
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(JSON_PROTOCOL),
            );
        }
        let origin = request
            .headers()
            .get("origin")
            .and_then(|o| o.to_str().ok());
        seen.replace(origin.map(str::to_string));
        if origins.is_empty() || origin.is_some_and(|o| origins.iter().any(|a| a == o)) {
            return Ok(response);
        }
        let body = "relayd: origin not allowed\n";
        let mut refusal = ErrorResponse::new(Some(body.into()));
        *refusal.status_mut() = StatusCode::FORBIDDEN;
        let headers = refusal.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.insert("content-length", HeaderValue::from(body.len()));
        headers.insert("connection", HeaderValue::from_static("close"));
        Err(refusal)
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(config.max_line))
        .max_frame_size(Some(config.max_line));
    // What follows the request head in it is the client's first frames.
    let request = super::http::parse(&head)
        .ok()
        .flatten()
        .map_or(head.len(), |r| r.len);
    let duplex = Duplex {
        sock,
        head,
        at: 0,
        queue: None,
        wake: None,
        frames: Frames {
            request,
            ..Frames::default()
        },
        rebuild: false,
    };
    match tungstenite::accept_hdr_with_config(duplex, check, Some(ws_config)) {
        Ok(socket) => Ok((socket, format.get())),
        Err(HandshakeError::Failure(Error::Http(response))) => Err(Refused::Answered(format!(
            "{} (origin {})",
            response.status(),
            seen.take().as_deref().unwrap_or("none")
        ))),
        Err(HandshakeError::Failure(e)) => Err(Refused::Failed(e.to_string())),
        Err(HandshakeError::Interrupted(_)) => Err(Refused::Failed("timed out".into())),
    }
}

/// A WebSocket client's inbound side, on the client's own thread.
pub(crate) struct Ws {
    socket: WebSocket<Duplex>,
    /// How long a read may wait for a message: `None` for ever.
    timeout: Option<Duration>,
    /// When a quiet client is pinged, and how long it has to answer.
    ping_interval: Duration,
    pong_timeout: Duration,
    /// When the client last sent a frame, of any kind.
    heard: Instant,
    /// When relayd pinged it, if it has not answered yet.
    pinged: Option<Instant>,
    /// Bytes the kernel held for it unacknowledged when its pong was last overdue (see
    /// `still_reading`).
    unacked: Option<usize>,
    /// It speaks `relayd.v1.json`: a message is one JSON object, not lines.
    json: bool,
}

impl Ws {
    /// The transport of an admitted client: from now on, what tungstenite writes goes into
    /// `peer`'s queue.
    pub(crate) fn new(mut socket: WebSocket<Duplex>, daemon: Arc<Daemon>, peer: Arc<Peer>) -> Ws {
        let config = daemon.config();
        let (ping_interval, pong_timeout) = (config.ws_ping_interval, config.write_timeout);
        let timeout = config.idle_timeout;
        let json = peer.format() == Format::Json;
        socket.get_mut().queue = Some((daemon, peer));
        Ws {
            socket,
            timeout,
            ping_interval,
            pong_timeout,
            heard: Instant::now(),
            pinged: None,
            unacked: None,
            json,
        }
    }

    /// Waits for the next text message and leaves its lines in `buf`, each ending with `\n`
    /// (a trailing `\r` dropped); a JSON client's message as it is, with a `\n` after it.
    /// Returns how many bytes: 0 when the client closed. Pings are
    /// answered, and a quiet client pinged, meanwhile; a binary message, one too long, a
    /// protocol error or no answer to a ping is a [`ReadError::Departure`].
    pub(crate) fn read(&mut self, buf: &mut Vec<u8>) -> Result<usize, ReadError> {
        buf.clear();
        let deadline = self.timeout.map(|t| Instant::now() + t);
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(ReadError::Io(io::ErrorKind::TimedOut.into()));
            }
            let ping_due = match self.pinged.as_ref().copied() {
                // A client still being sent what was queued before the ping cannot have read
                // the ping yet: while it makes progress, the pong's clock starts again.
                Some(at) if now >= at + self.pong_timeout && self.still_reading() => {
                    self.pinged = Some(now);
                    continue;
                }
                Some(at) if now >= at + self.pong_timeout => {
                    info!("websocket client: no answer to a ping");
                    return Err(ReadError::Departure(Departure::NoPong));
                }
                Some(at) => at + self.pong_timeout,
                None if now >= self.heard + self.ping_interval => {
                    self.pinged = Some(now);
                    self.ping();
                    continue;
                }
                None => self.heard + self.ping_interval,
            };
            self.socket.get_mut().wake = Some(deadline.map_or(ping_due, |d| d.min(ping_due)));
            let message = match self.socket.read() {
                Ok(message) => message,
                Err(Error::Io(_)) if self.socket.get_ref().rebuild => {
                    self.rebuild();
                    continue;
                }
                Err(Error::Io(e))
                    if crate::sys::timed_out(&e) || e.kind() == io::ErrorKind::Interrupted =>
                {
                    continue;
                }
                Err(e) => return self.failed(e),
            };
            self.heard = Instant::now();
            match message {
                Message::Text(text) if self.json => {
                    buf.extend_from_slice(text.as_bytes());
                    buf.push(b'\n');
                    return Ok(buf.len());
                }
                Message::Text(text) => {
                    for line in text.as_bytes().split_inclusive(|&b| b == b'\n') {
                        buf.extend_from_slice(without_line_end(line));
                        buf.push(b'\n');
                    }
                    if !buf.is_empty() {
                        return Ok(buf.len());
                    }
                }
                Message::Binary(_) => return Err(ReadError::Departure(Departure::BinaryMessage)),
                Message::Pong(_) => {
                    self.pinged = None;
                    self.unacked = None;
                }
                Message::Close(_) => {
                    // Sends tungstenite's reply to the close, queued by the read.
                    let _ = self.socket.flush();
                    return Ok(0);
                }
                // Answered by tungstenite (the pong is queued by the read, sent by the flush).
                Message::Ping(_) => {
                    let _ = self.socket.flush();
                }
                Message::Frame(_) => {}
            }
        }
    }

    /// Whether it speaks `relayd.v1.json`.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// A fresh `WebSocket` on the same stream, with a buffer of [`READ_BUFFER`] again, in
    /// place of one that holds nothing but has grown for a long frame (see [`Frames`]).
    fn rebuild(&mut self) {
        let config = *self.socket.get_config();
        let mut duplex = self.socket.get_mut().take();
        duplex.frames.grown = false;
        duplex.rebuild = false;
        debug!("websocket: read buffer given back after a long frame");
        self.socket = WebSocket::from_raw_socket(duplex, Role::Server, Some(config));
    }

    /// How long a read may wait for a message: `None` for ever.
    pub(crate) fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Whether the client, not having answered a ping, is still reading what came before
    /// it: relayd still has bytes queued for it (a client that stops reading is then cut
    /// off by `--write-timeout` or as a slow consumer), or the kernel holds fewer of them
    /// unacknowledged than at the last look (one that does not is not reading).
    fn still_reading(&mut self) -> bool {
        let duplex = self.socket.get_ref();
        if duplex
            .queue
            .as_ref()
            .is_some_and(|(_, peer)| peer.pending() > 0)
        {
            self.unacked = None;
            return true;
        }
        let now = crate::sys::unacknowledged(&duplex.sock).unwrap_or(0);
        let before = self.unacked.replace(now);
        now > 0 && before.is_none_or(|b| now < b)
    }

    fn ping(&mut self) {
        if let Some((daemon, peer)) = &self.socket.get_ref().queue {
            daemon.send_to(peer, &Chunk::frames(&ws_frame::ping()), 0);
        }
    }

    /// What a failed tungstenite read means for the client.
    fn failed(&self, e: Error) -> Result<usize, ReadError> {
        debug!("websocket read: {e}");
        let why = match e {
            Error::ConnectionClosed | Error::AlreadyClosed => return Ok(0),
            Error::Io(e) => return Err(ReadError::Io(e)),
            Error::Capacity(_) => {
                let max = self.socket.get_config().max_message_size.unwrap_or(0);
                Departure::MessageTooLong(max)
            }
            Error::Utf8(what) => Departure::Protocol { utf8: true, what },
            e => Departure::Protocol {
                utf8: false,
                what: e.to_string(),
            },
        };
        Err(ReadError::Departure(why))
    }
}

#[cfg(test)]
mod origin_tests {
    use super::check_origin;

    #[test]
    fn origins_as_browsers_spell_them() {
        for good in [
            "https://chat.example.org",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "https://example.org:8443",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "foo",
            "chat.example.org",
            "https://chat.example.org/",
            "https://chat.example.org/page",
            "https://Chat.example.org",
            "https://example.org:443",
            "ftp://example.org",
            "https://user@example.org",
            "null",
            "",
        ] {
            let err = check_origin(bad).unwrap_err();
            assert!(err.starts_with("--ws-origin "), "{bad}: {err}");
        }
    }
}

#[cfg(test)]
mod frames_tests {
    use super::{Frames, READ_BUFFER};

    /// A client's (masked) frame: `first` is FIN and the opcode.
    fn frame(first: u8, len: usize) -> Vec<u8> {
        let mut f = vec![first];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.resize(f.len() + len, b'a');
        f
    }

    /// Hands `stream` over in pieces of `step` bytes; returns after which bytes (their
    /// count) tungstenite would hold nothing but a grown buffer.
    fn drained_at(request: usize, stream: &[u8], step: usize) -> Vec<usize> {
        let mut frames = Frames {
            request,
            ..Frames::default()
        };
        let mut at = Vec::new();
        for (i, piece) in stream.chunks(step).enumerate() {
            frames.handed(piece);
            if frames.drained_after_long_frame() {
                at.push(i * step + piece.len());
            }
        }
        at
    }

    #[test]
    fn drained_only_at_the_end_of_a_message_after_a_long_frame() {
        let head = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let short = frame(0x81, 5);
        let long = frame(0x81, READ_BUFFER + 1);
        let huge = frame(0x81, 70_000);
        let ping = frame(0x89, 3);
        let (fragment, last) = (frame(0x01, READ_BUFFER * 2), frame(0x80, 10));
        for step in [1, 3, 7, 14, 4096, usize::MAX] {
            let stream = [&head[..], &short, &long, &ping].concat();
            let end = stream.len();
            // The head is the handshake's, not a frame, whatever its bytes look like.
            let after_long = head.len() + short.len() + long.len();
            let want: Vec<usize> = [after_long, end]
                .into_iter()
                .filter(|&n| n % step.min(end) == 0 || n == end)
                .collect();
            assert_eq!(drained_at(head.len(), &stream, step), want, "step {step}");

            // Never while a fragmented message is unfinished, pings between its frames or not.
            let stream = [&fragment[..], &ping, &last].concat();
            assert_eq!(drained_at(0, &stream, step), [stream.len()], "step {step}");

            // Nothing is drained before a long frame, nor after short ones.
            let stream = [&short[..], &short].concat();
            assert!(drained_at(0, &stream, step).is_empty(), "step {step}");
            assert_eq!(drained_at(0, &huge, step), [huge.len()], "step {step}");
        }
    }
}
