//! The receiving side: one thread, one epoll set, every client socket of the run. Each line
//! is checked (see [`crate::payload`]) for loss, order, duplication and corruption, and its
//! latency is taken against one clock reading per `read`, not per line.
//!
//! One thread serves thousands of sockets because the relay under test needs the machine's
//! other core; a thread per client here would measure the scheduler, not the relay.
//!
//! A WebSocket client (`--ws`) is read the same way as a TCP one, after its handshake
//! (tungstenite's, see `scenario.rs`): one `read` of the raw socket into the same buffer,
//! behind what the last read left unfinished, then the buffer's frames are walked in place.
//! Each frame's header is parsed by tungstenite's [`FrameHeader::parse`] (nothing here parses
//! a header by hand; a header byte for byte the same as the last line's is taken to be the
//! same header), and a text frame's payload is a line without its `\n`: it goes, as a
//! slice of the buffer, through the same checks as a TCP line. No message is allocated and no
//! payload copied or checked as UTF-8 (the line check rejects what is not a line); going
//! through tungstenite's `WebSocket::read` for this cost the receiving thread three times
//! what the TCP path does, and made the bench, not the relay, the limit of `--ws` runs.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use memchr::memchr;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::histogram::Histogram;
use crate::payload::{self, Line, now_ns};
use crate::sys::{self, Epoll};

/// What the sending side and the receiving side share while a run is under way.
pub struct Progress {
    /// Measured lines sent so far, per sender.
    pub sent: Vec<AtomicU64>,
    /// Every sender has sent its last measured line.
    pub done_sending: AtomicBool,
    /// Clients that have seen a probe line: the relay has registered them.
    pub ready: AtomicUsize,
    /// When the first measured line was built (see [`payload::now_ns`]); 0 before.
    pub start_ns: AtomicU64,
    /// When the senders finished (see [`payload::now_ns`]); 0 before.
    pub done_ns: AtomicU64,
    /// The receiver has finished (all lines in, or it gave up): senders stop too.
    pub stop: AtomicBool,
    /// The relayd node (`--nodes`) each sender is connected to: a line delivered on another
    /// node crossed Redis, and its latency is counted apart.
    pub sender_node: Vec<u16>,
}

impl Progress {
    /// Marks the measured sending as over, and when.
    pub fn finish_sending(&self) {
        self.done_ns.store(now_ns(), Ordering::SeqCst);
        self.done_sending.store(true, Ordering::SeqCst);
    }

    /// Every sender on node 0 (the only node, but with `--nodes`).
    pub fn new(senders: usize) -> Arc<Progress> {
        Progress::on_nodes(vec![0; senders])
    }

    /// One sender per entry of `sender_node`, each connected to the node it names.
    pub fn on_nodes(sender_node: Vec<u16>) -> Arc<Progress> {
        Arc::new(Progress {
            sent: sender_node.iter().map(|_| AtomicU64::new(0)).collect(),
            done_sending: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            start_ns: AtomicU64::new(0),
            done_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            sender_node,
        })
    }
}

/// A client socket as tungstenite's stream during the handshake: it needs an owned
/// `Read + Write`, and `&TcpStream` is both, so the `Arc` is shared with whoever else holds
/// the socket. Everything read is kept in `seen`: tungstenite may read past the response,
/// and those bytes (the start of the first frames) belong to the receiver, which reads the
/// socket itself once the handshake is done (see [`Shared::tail`]).
#[derive(Debug)]
pub struct Shared {
    pub sock: Arc<TcpStream>,
    seen: Vec<u8>,
}

impl Shared {
    pub fn new(sock: Arc<TcpStream>) -> Shared {
        Shared {
            sock,
            seen: Vec::new(),
        }
    }

    /// What the handshake read after the HTTP response's head: frames already sent. The
    /// head's end is found by httparse, as tungstenite finds it.
    pub fn tail(&self) -> Result<Vec<u8>, String> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&self.seen) {
            Ok(httparse::Status::Complete(head)) => Ok(self.seen[head..].to_vec()),
            Ok(httparse::Status::Partial) => Err("handshake response incomplete".into()),
            Err(e) => Err(format!("handshake response: {e}")),
        }
    }
}

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&*self.sock).read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.sock).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.sock).flush()
    }
}

/// One socket the receiver reads.
pub struct RxConn {
    pub sock: Arc<TcpStream>,
    /// Set for a WebSocket client (its handshake done): the bytes the handshake read past
    /// the response, to be walked as frames before anything read from `sock`.
    pub ws: Option<Vec<u8>>,
    /// The sender number this client sends as, if it does: the relay must not echo its lines
    /// back, and it is not owed them.
    pub own: Option<u16>,
    /// Counts as registered without seeing a probe (it is the one sending them).
    pub prober: bool,
    /// The relayd node (`--nodes`) it is connected to.
    pub node: u16,
    /// A `danmaku` viewer: its own figures are kept (see [`ViewerStats`]).
    pub viewer: bool,
}

/// One viewer's own figures (`danmaku`), kept apart from the run's totals, which also count
/// the senders hearing each other.
pub struct ViewerStats {
    /// Measured lines it received in order.
    pub delivered: u64,
    /// The age of each of them: receive time minus send time (coarse, see `Histogram`).
    pub age: Histogram,
    /// When its last measured line arrived (payload clock), 0 if none did.
    pub last_ns: u64,
    /// The server closed it before the end (counted in `RxReport::disconnected` too).
    pub cut: bool,
}

impl RxConn {
    /// A client that only listens.
    pub fn listener(sock: Arc<TcpStream>) -> RxConn {
        RxConn {
            sock,
            ws: None,
            own: None,
            prober: false,
            node: 0,
            viewer: false,
        }
    }
}

/// When the receiver stops waiting.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Hard end of the run.
    pub deadline: Instant,
    /// After the senders finish, give up once no line has arrived for this long.
    pub drain: Duration,
}

/// What the receiver saw.
pub struct RxReport {
    /// Measured lines received in order (each counted once).
    pub delivered: u64,
    /// Measured lines the clients were owed: sent × receivers of each sender.
    pub expected: u64,
    /// Lines that arrived with a sequence number lower than one already seen (duplicated or
    /// reordered).
    pub out_of_order: u64,
    /// Lines that failed the format check, including lines echoed back to their sender.
    pub corrupt: u64,
    /// Lines from the server itself.
    pub notices: u64,
    /// Clients whose connection the server closed before the end.
    pub disconnected: usize,
    pub bytes: u64,
    /// Latency of lines delivered on the node their sender is connected to (every line, on
    /// one node)...
    pub local_latency: Histogram,
    /// ...and of lines that crossed Redis to another node (`--nodes`).
    pub remote_latency: Histogram,
    /// Nanoseconds (payload clock) of the first and last measured delivery.
    pub first_ns: u64,
    pub last_ns: u64,
    /// The run ended at its deadline rather than by itself.
    pub timed_out: bool,
    /// `danmaku`: each viewer's figures (in no particular order)...
    pub viewers: Vec<ViewerStats>,
    /// ...and the age of every delivery to a viewer, at full precision.
    pub viewer_age: Histogram,
}

struct Conn {
    sock: Arc<TcpStream>,
    /// A WebSocket client: `partial` holds the start of a frame, not of a line.
    ws: bool,
    own: Option<u16>,
    node: u16,
    /// The start of a line whose newline has not arrived yet (WebSocket: of a frame).
    partial: Vec<u8>,
    /// WebSocket: the text so far of a message sent in fragments (relayd sends none).
    fragments: Option<Vec<u8>>,
    /// WebSocket: reply frames (pong, close) the socket did not take whole yet.
    out: Vec<u8>,
    /// Next sequence number expected from each sender.
    next: Vec<u64>,
    /// A `danmaku` viewer's own figures.
    viewer: Option<Box<ViewerStats>>,
    ready: bool,
    open: bool,
}

const READ_BUF: usize = 256 * 1024;
const MAX_EVENTS: usize = 1024;

/// Reads every connection until all measured lines have arrived, the drain or the deadline
/// expires, or every connection is closed. Runs on its own thread.
pub fn receive(
    conns: Vec<RxConn>,
    size: usize,
    progress: Arc<Progress>,
    limits: Limits,
) -> io::Result<RxReport> {
    let senders = progress.sent.len();
    let epoll = Epoll::new()?;
    let mut conns: Vec<Conn> = conns
        .into_iter()
        .map(|c| {
            if c.prober {
                progress.ready.fetch_add(1, Ordering::SeqCst);
            }
            Conn {
                sock: c.sock,
                ws: c.ws.is_some(),
                own: c.own,
                node: c.node,
                partial: c.ws.unwrap_or_default(),
                fragments: None,
                out: Vec::new(),
                next: vec![0; senders],
                viewer: c.viewer.then(|| {
                    Box::new(ViewerStats {
                        delivered: 0,
                        age: Histogram::coarse(),
                        last_ns: 0,
                        cut: false,
                    })
                }),
                ready: c.prober,
                open: true,
            }
        })
        .collect();
    for (i, c) in conns.iter().enumerate() {
        c.sock.set_nonblocking(true)?;
        epoll.add(c.sock.as_raw_fd(), i as u64)?;
    }
    let mut rep = RxReport::empty();
    let mut buf = vec![0u8; READ_BUF];
    let mut events = vec![sys::empty_event(); MAX_EVENTS];
    let mut open = conns.len();
    // Sum over connections and senders of `next`: measured lines received or skipped.
    let mut advanced = 0u64;
    let mut expected = None;
    let mut last_progress = Instant::now();
    loop {
        let n = epoll.wait(&mut events, Duration::from_millis(20))?;
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            let c = &mut conns[i];
            let before = advanced;
            if !read_once(c, &mut buf, size, &progress, &mut rep, &mut advanced) {
                epoll.remove(c.sock.as_raw_fd());
                c.open = false;
                open -= 1;
                if !progress.done_sending.load(Ordering::SeqCst) || expected != Some(advanced) {
                    rep.disconnected += 1;
                    if let Some(v) = &mut c.viewer {
                        v.cut = true;
                    }
                }
            }
            if advanced != before {
                last_progress = Instant::now();
            }
        }
        if expected.is_none() && progress.done_sending.load(Ordering::SeqCst) {
            expected = Some(sent_so_far(&progress, &conns));
            last_progress = Instant::now();
        }
        if let Some(e) = expected
            && (advanced >= e || last_progress.elapsed() >= limits.drain)
        {
            rep.expected = e;
            // Done, or the drain expired: the senders have finished, and other receiver
            // threads (--rx-threads) still wait for their own lines, so stop no one.
            return Ok(with_viewers(rep, conns));
        }
        if open == 0 || progress.stop.load(Ordering::SeqCst) {
            rep.expected = expected.unwrap_or(advanced);
            break;
        }
        if Instant::now() >= limits.deadline {
            rep.timed_out = true;
            rep.expected = expected.unwrap_or_else(|| sent_so_far(&progress, &conns));
            break;
        }
    }
    // Given up: the senders and any other receiver thread stop too.
    progress.stop.store(true, Ordering::SeqCst);
    Ok(with_viewers(rep, conns))
}

/// `rep` with the viewers' own figures moved into it.
fn with_viewers(mut rep: RxReport, conns: Vec<Conn>) -> RxReport {
    rep.viewers
        .extend(conns.into_iter().filter_map(|c| c.viewer.map(|v| *v)));
    rep
}

impl RxReport {
    /// Nothing seen yet.
    fn empty() -> RxReport {
        RxReport {
            delivered: 0,
            expected: 0,
            out_of_order: 0,
            corrupt: 0,
            notices: 0,
            disconnected: 0,
            bytes: 0,
            local_latency: Histogram::new(),
            remote_latency: Histogram::new(),
            first_ns: 0,
            last_ns: 0,
            timed_out: false,
            viewers: Vec::new(),
            viewer_age: Histogram::new(),
        }
    }

    /// The latency of every delivery, local and remote.
    pub fn latency(&self) -> Histogram {
        let mut all = Histogram::new();
        all.merge(&self.local_latency);
        all.merge(&self.remote_latency);
        all
    }

    /// Adds what another receiver thread saw (its own connections) to this report.
    pub fn merge(&mut self, o: RxReport) {
        self.delivered += o.delivered;
        self.expected += o.expected;
        self.out_of_order += o.out_of_order;
        self.corrupt += o.corrupt;
        self.notices += o.notices;
        self.disconnected += o.disconnected;
        self.bytes += o.bytes;
        self.local_latency.merge(&o.local_latency);
        self.remote_latency.merge(&o.remote_latency);
        if o.first_ns != 0 && (self.first_ns == 0 || o.first_ns < self.first_ns) {
            self.first_ns = o.first_ns;
        }
        self.last_ns = self.last_ns.max(o.last_ns);
        self.timed_out |= o.timed_out;
        self.viewers.extend(o.viewers);
        self.viewer_age.merge(&o.viewer_age);
    }
}

/// The measured lines `conns` are owed for what has been sent so far: every sender's lines,
/// to each connection but the sender's own.
fn sent_so_far(progress: &Progress, conns: &[Conn]) -> u64 {
    let sent: Vec<u64> = progress
        .sent
        .iter()
        .map(|s| s.load(Ordering::SeqCst))
        .collect();
    let total: u64 = sent.iter().sum();
    conns
        .iter()
        .map(|c| total - c.own.map_or(0, |s| sent[s as usize]))
        .sum()
}

/// One `read` on a ready connection and the lines it completes. Returns false once the
/// connection is finished (end of stream or error).
fn read_once(
    c: &mut Conn,
    buf: &mut [u8],
    size: usize,
    progress: &Progress,
    rep: &mut RxReport,
    advanced: &mut u64,
) -> bool {
    if !c.open {
        return false;
    }
    if !c.out.is_empty() && !send_pending(c) {
        return false;
    }
    let keep = c.partial.len();
    buf[..keep].copy_from_slice(&c.partial);
    let n = match (&*c.sock).read(&mut buf[keep..]) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(e) if sys::retryable(&e) => return true,
        Err(_) => return false,
    };
    let now = now_ns();
    let data = &buf[..keep + n];
    if c.ws {
        return walk_frames(c, data, now, size, progress, rep, advanced);
    }
    rep.bytes += n as u64;
    let mut pos = 0;
    loop {
        // A generated line is the run's size, and `decode` checks each of its bytes, so one
        // that decodes holds no newline but its last: where the byte a line of that size
        // would end on is a newline and the line decodes, there is no need to scan for it.
        // That scan was most of what a TCP delivery cost the receiver beyond a WebSocket
        // one (whose frame says its length). Anything else (notices, chat names, damage) is
        // found by scanning, as before.
        let end = pos + size - 1;
        if end < data.len() && data[end] == b'\n' {
            let line = payload::decode(&data[pos..end], size);
            if matches!(line, Line::Data { .. } | Line::Probe) {
                count_line(c, line, now, progress, rep, advanced);
                pos = end + 1;
                continue;
            }
        }
        let Some(nl) = memchr(b'\n', &data[pos..]) else {
            break;
        };
        let line = &data[pos..pos + nl];
        pos += nl + 1;
        check_line(c, line, now, size, progress, rep, advanced);
    }
    c.partial.clear();
    if pos < data.len() {
        if data.len() - pos >= payload::MAX_SIZE {
            // Something that never ends in a newline: count it once, do not hoard it.
            rep.corrupt += 1;
        } else {
            c.partial.extend_from_slice(&data[pos..]);
        }
    }
    true
}

/// Walks the WebSocket frames in `data` (what `partial` held, then one `read`), each header
/// parsed by tungstenite, payloads left where they are; keeps an unfinished last frame in
/// `partial`. Returns false once the connection is finished: a close frame, or a frame no
/// server may send (masked, malformed, a reserved opcode), as tungstenite would fail it.
fn walk_frames(
    c: &mut Conn,
    data: &[u8],
    now: u64,
    size: usize,
    progress: &Progress,
    rep: &mut RxReport,
    advanced: &mut u64,
) -> bool {
    let mut cur = io::Cursor::new(data);
    let mut pos = 0;
    // The last whole line's frame in `data`: where its header began, the header's length and
    // the payload's. relayd sends runs of lines of one length, and a header that is byte for
    // byte the same as that one is the same header: a final, unmasked text frame of that
    // length. Comparing those few bytes costs the receiver far less than asking tungstenite
    // again, which is what made it pay more per WebSocket delivery than per TCP one.
    let mut line_frame: Option<(usize, usize, usize)> = None;
    let open = loop {
        if let Some((at, head, len)) = line_frame
            && data.len() >= pos + head
            && data[pos..pos + head] == data[at..at + head]
        {
            let (start, end) = (pos + head, pos + head + len);
            if end > data.len() {
                break true;
            }
            rep.bytes += len as u64 + 1;
            check_line(c, &data[start..end], now, size, progress, rep, advanced);
            pos = end;
            continue;
        }
        cur.set_position(pos as u64);
        let (header, len) = match FrameHeader::parse(&mut cur) {
            Ok(Some(h)) => h,
            Ok(None) => break true,
            Err(_) => break false,
        };
        let start = cur.position() as usize;
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e - pos <= READ_BUF / 2)
        else {
            // A frame larger than the buffer could ever hold: no line is that long.
            rep.corrupt += 1;
            break false;
        };
        if end > data.len() {
            break true;
        }
        let header_at = pos;
        pos = end;
        let payload = &data[start..end];
        if header.mask.is_some() || header.rsv1 || header.rsv2 || header.rsv3 {
            break false;
        }
        match header.opcode {
            OpCode::Data(Data::Text) if header.is_final && c.fragments.is_none() => {
                // As for TCP, the bytes of the line with its newline.
                rep.bytes += payload.len() as u64 + 1;
                check_line(c, payload, now, size, progress, rep, advanced);
                line_frame = Some((header_at, start - header_at, payload.len()));
            }
            OpCode::Data(Data::Text) if c.fragments.is_none() => {
                c.fragments = Some(payload.to_vec());
            }
            OpCode::Data(Data::Continue) if c.fragments.is_some() => {
                let mut text = c.fragments.take().unwrap_or_default();
                text.extend_from_slice(payload);
                if text.len() > payload::MAX_SIZE + 64 {
                    rep.corrupt += 1;
                } else if header.is_final {
                    rep.bytes += text.len() as u64 + 1;
                    check_line(c, &text, now, size, progress, rep, advanced);
                } else {
                    c.fragments = Some(text);
                }
            }
            // A message of bytes is no line.
            OpCode::Data(Data::Binary) if c.fragments.is_none() => rep.corrupt += 1,
            // relayd pings a client that has been quiet a while: answer, or be cut off.
            OpCode::Control(Control::Ping) if header.is_final => {
                if !reply(c, Frame::pong(payload.to_vec())) {
                    break false;
                }
            }
            OpCode::Control(Control::Pong) if header.is_final => {}
            OpCode::Control(Control::Close) => {
                // Echoed as tungstenite would, as far as the socket takes it, then done.
                let _ = reply(c, Frame::close(None));
                break false;
            }
            // Out of sequence or reserved: tungstenite would fail the connection.
            _ => break false,
        }
    };
    c.partial.clear();
    if open {
        c.partial.extend_from_slice(&data[pos..]);
    }
    open
}

/// Sends a frame of the client's own, masked as a client's frames must be, behind any reply
/// still pending. Returns false if the socket failed.
fn reply(c: &mut Conn, mut frame: Frame) -> bool {
    frame.header_mut().mask = Some(mask());
    // Formatting into a Vec cannot fail.
    let _ = frame.format(&mut c.out);
    send_pending(c)
}

/// Writes what the socket takes of `c.out`. Returns false if the socket failed.
fn send_pending(c: &mut Conn) -> bool {
    while !c.out.is_empty() {
        match (&*c.sock).write(&c.out) {
            Ok(0) => return false,
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if sys::retryable(&e) => return true,
            Err(_) => return false,
        }
    }
    true
}

/// A fresh mask for a client frame (tungstenite's own generator is not public): the
/// randomly keyed std hasher, which is unpredictable enough for a mask.
pub fn mask() -> [u8; 4] {
    use std::hash::{BuildHasher, Hasher};
    let h = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (h as u32).to_ne_bytes()
}

/// Checks one line (without its newline) that arrived at `now` and counts it.
fn check_line(
    c: &mut Conn,
    line: &[u8],
    now: u64,
    size: usize,
    progress: &Progress,
    rep: &mut RxReport,
    advanced: &mut u64,
) {
    count_line(c, payload::decode(line, size), now, progress, rep, advanced);
}

/// Counts one line that arrived at `now`, as `decode` found it.
fn count_line(
    c: &mut Conn,
    line: Line,
    now: u64,
    progress: &Progress,
    rep: &mut RxReport,
    advanced: &mut u64,
) {
    match line {
        Line::Data { sender, seq, ts } => {
            let s = sender as usize;
            if s >= c.next.len() || c.own == Some(sender) {
                rep.corrupt += 1;
                return;
            }
            let next = c.next[s];
            if seq < next {
                rep.out_of_order += 1;
                return;
            }
            *advanced += seq + 1 - next;
            c.next[s] = seq + 1;
            rep.delivered += 1;
            let latency = if progress.sender_node[s] == c.node {
                &mut rep.local_latency
            } else {
                &mut rep.remote_latency
            };
            let age = now.saturating_sub(ts);
            latency.record(age);
            if let Some(v) = &mut c.viewer {
                v.delivered += 1;
                v.age.record(age);
                v.last_ns = now;
                rep.viewer_age.record(age);
            }
            if rep.first_ns == 0 {
                rep.first_ns = now;
            }
            rep.last_ns = now;
        }
        Line::Probe => {
            if !c.ready {
                c.ready = true;
                progress.ready.fetch_add(1, Ordering::SeqCst);
            }
        }
        Line::Notice => rep.notices += 1,
        Line::Corrupt => rep.corrupt += 1,
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    const SIZE: usize = 64;

    /// A WebSocket client's connection on a real loopback socket, and the server's end of it
    /// (where the client's replies arrive).
    fn ws_conn() -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let conn = Conn {
            sock: Arc::new(client),
            ws: true,
            own: None,
            node: 0,
            partial: Vec::new(),
            fragments: None,
            out: Vec::new(),
            next: vec![0],
            viewer: None,
            ready: true,
            open: true,
        };
        (conn, server)
    }

    fn frame(payload: &[u8], opcode: OpCode) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::message(payload.to_vec(), opcode, true)
            .format(&mut out)
            .unwrap();
        out
    }

    /// Sender 0's line number `seq`, as relayd frames it: a text frame without the newline.
    fn line(seq: u64) -> Vec<u8> {
        frame(&tcp_line(seq)[..SIZE - 1], OpCode::Data(Data::Text))
    }

    /// Walks `reads` one after another, as `read_once` would, what one left unfinished before
    /// the next. Returns what was counted and whether the connection is still open.
    fn walk(c: &mut Conn, reads: &[Vec<u8>]) -> (RxReport, bool) {
        let progress = Progress::new(1);
        let mut rep = RxReport::empty();
        let mut advanced = 0;
        let mut open = true;
        for read in reads {
            let mut data = std::mem::take(&mut c.partial);
            data.extend_from_slice(read);
            open = walk_frames(c, &data, now_ns(), SIZE, &progress, &mut rep, &mut advanced);
            if !open {
                break;
            }
        }
        (rep, open)
    }

    /// Sender 0's line number `seq`, as a TCP client gets it.
    fn tcp_line(seq: u64) -> Vec<u8> {
        let mut text = Vec::new();
        payload::encode(&mut text, false, 0, seq, now_ns(), SIZE);
        text
    }

    #[test]
    fn each_tcp_line_is_counted_once_whether_it_is_the_run_s_size_or_not() {
        let (mut c, mut server) = ws_conn();
        c.ws = false;
        c.sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut damaged = tcp_line(3);
        damaged[40] ^= 1;
        // A notice, a chat name in front of a line, and a notice as long as a line: each is
        // found by scanning, not taken for a line of the run's size.
        let long_notice = [&b"relayd: "[..], &[b'x'; SIZE - 9], b"\n"].concat();
        let four = tcp_line(4);
        let first = [
            &tcp_line(0)[..],
            b"relayd: a notice\n",
            &[&b"<bob> "[..], &tcp_line(1)].concat(),
            &long_notice,
            &tcp_line(2),
            &damaged,
            &four[..SIZE / 2],
        ]
        .concat();
        let second = [&four[SIZE / 2..], &tcp_line(5)].concat();
        let progress = Progress::new(1);
        let mut rep = RxReport::empty();
        let (mut advanced, mut buf) = (0, vec![0; READ_BUF]);
        for read in [first, second] {
            server.write_all(&read).unwrap();
            assert!(read_once(
                &mut c,
                &mut buf,
                SIZE,
                &progress,
                &mut rep,
                &mut advanced
            ));
        }
        assert_eq!(rep.delivered, 5);
        assert_eq!((rep.notices, rep.corrupt, rep.out_of_order), (2, 1, 0));
        assert!(c.partial.is_empty());
    }

    #[test]
    fn each_frame_is_counted_once_whether_its_header_repeats_or_not() {
        let (mut c, mut server) = ws_conn();
        let notice = frame(b"relayd: a notice", OpCode::Data(Data::Text));
        let ping = {
            let mut out = Vec::new();
            Frame::ping(b"hi".to_vec()).format(&mut out).unwrap();
            out
        };
        let mut first = [line(0), line(1), notice, line(2), ping, line(3)].concat();
        // Line 4 ends in the next read, its header too: the read boundary falls inside it.
        let four = line(4);
        first.extend_from_slice(&four[..1]);
        let second = [&four[1..], &line(5)[..], &line(6)[..]].concat();
        let (rep, open) = walk(&mut c, &[first, second]);
        assert!(open);
        assert_eq!(rep.delivered, 7);
        assert_eq!((rep.notices, rep.corrupt, rep.out_of_order), (1, 0, 0));
        assert_eq!(
            rep.bytes,
            7 * SIZE as u64 + b"relayd: a notice\n".len() as u64
        );
        assert!(c.partial.is_empty());
        // The ping was answered with a pong of the same payload, masked as a client's must be.
        let mut pong = [0u8; 8];
        server.read_exact(&mut pong).unwrap();
        assert_eq!(pong[..2], [0x8a, 0x80 | 2]);
        let mask = &pong[2..6];
        assert_eq!([pong[6] ^ mask[0], pong[7] ^ mask[1]], *b"hi");
    }

    #[test]
    fn a_frame_like_the_last_line_but_for_its_header_is_not_taken_for_one() {
        // The same length, but bytes: no line.
        let (mut c, _server) = ws_conn();
        let text = tcp_line(1);
        let binary = frame(&text[..SIZE - 1], OpCode::Data(Data::Binary));
        let (rep, open) = walk(&mut c, &[[line(0), binary, line(2)].concat()]);
        assert!(open);
        assert_eq!((rep.delivered, rep.corrupt), (2, 1));
        // The same length, but masked, which no server may send: the connection is done.
        let (mut c, _server) = ws_conn();
        let mut masked = Frame::message(text[..SIZE - 1].to_vec(), OpCode::Data(Data::Text), true);
        masked.header_mut().mask = Some([1, 2, 3, 4]);
        let mut bytes = Vec::new();
        masked.format(&mut bytes).unwrap();
        let (rep, open) = walk(&mut c, &[[line(0), bytes, line(2)].concat()]);
        assert!(!open);
        assert_eq!(rep.delivered, 1);
    }
}
