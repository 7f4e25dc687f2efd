//! The receiving side: one thread, one epoll set, every client socket of the run. Each line
//! is checked (see [`crate::payload`]) for loss, order, duplication and corruption, and its
//! latency is taken against one clock reading per `read`, not per line.
//!
//! One thread serves thousands of sockets because the relay under test needs the machine's
//! other core; a thread per client here would measure the scheduler, not the relay.
//!
//! A WebSocket client (`--ws`) is read the same way: its socket is non-blocking in the same
//! epoll set, and tungstenite's `WebSocket` (which owns the framing; nothing here parses a
//! frame) is read until it would block. Each text message is one line without its `\n` and
//! goes through the same checks as a TCP line.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use memchr::memchr;
use tungstenite::{Message, WebSocket};

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
}

impl Progress {
    /// Marks the measured sending as over, and when.
    pub fn finish_sending(&self) {
        self.done_ns.store(now_ns(), Ordering::SeqCst);
        self.done_sending.store(true, Ordering::SeqCst);
    }

    pub fn new(senders: usize) -> Arc<Progress> {
        Arc::new(Progress {
            sent: (0..senders).map(|_| AtomicU64::new(0)).collect(),
            done_sending: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            start_ns: AtomicU64::new(0),
            done_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }
}

/// A client socket as tungstenite's stream: it needs an owned `Read + Write`, and
/// `&TcpStream` is both, so the `Arc` is shared with whoever else holds the socket.
#[derive(Debug)]
pub struct Shared(pub Arc<TcpStream>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// A WebSocket client connection, after its handshake.
pub type Ws = WebSocket<Shared>;

/// One socket the receiver reads.
pub struct RxConn {
    pub sock: Arc<TcpStream>,
    /// Set for a WebSocket client: its messages are read through this, not from `sock`.
    pub ws: Option<Ws>,
    /// The sender number this client sends as, if it does: the relay must not echo its lines
    /// back, and it is not owed them.
    pub own: Option<u16>,
    /// Counts as registered without seeing a probe (it is the one sending them).
    pub prober: bool,
}

impl RxConn {
    /// A client that only listens.
    pub fn listener(sock: Arc<TcpStream>) -> RxConn {
        RxConn {
            sock,
            ws: None,
            own: None,
            prober: false,
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
    pub latency: Histogram,
    /// Nanoseconds (payload clock) of the first and last measured delivery.
    pub first_ns: u64,
    pub last_ns: u64,
    /// The run ended at its deadline rather than by itself.
    pub timed_out: bool,
}

struct Conn {
    sock: Arc<TcpStream>,
    ws: Option<Ws>,
    own: Option<u16>,
    /// The start of a line whose newline has not arrived yet.
    partial: Vec<u8>,
    /// Next sequence number expected from each sender.
    next: Vec<u64>,
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
                ws: c.ws,
                own: c.own,
                partial: Vec::new(),
                next: vec![0; senders],
                ready: c.prober,
                open: true,
            }
        })
        .collect();
    for (i, c) in conns.iter().enumerate() {
        c.sock.set_nonblocking(true)?;
        epoll.add(c.sock.as_raw_fd(), i as u64)?;
    }
    let mut rep = RxReport {
        delivered: 0,
        expected: 0,
        out_of_order: 0,
        corrupt: 0,
        notices: 0,
        disconnected: 0,
        bytes: 0,
        latency: Histogram::new(),
        first_ns: 0,
        last_ns: 0,
        timed_out: false,
    };
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
            return Ok(rep);
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
    Ok(rep)
}

impl RxReport {
    /// Adds what another receiver thread saw (its own connections) to this report.
    pub fn merge(&mut self, o: RxReport) {
        self.delivered += o.delivered;
        self.expected += o.expected;
        self.out_of_order += o.out_of_order;
        self.corrupt += o.corrupt;
        self.notices += o.notices;
        self.disconnected += o.disconnected;
        self.bytes += o.bytes;
        self.latency.merge(&o.latency);
        if o.first_ns != 0 && (self.first_ns == 0 || o.first_ns < self.first_ns) {
            self.first_ns = o.first_ns;
        }
        self.last_ns = self.last_ns.max(o.last_ns);
        self.timed_out |= o.timed_out;
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
    if let Some(mut ws) = c.ws.take() {
        let open = read_ws(&mut ws, c, size, progress, rep, advanced);
        c.ws = Some(ws);
        return open;
    }
    let keep = c.partial.len();
    buf[..keep].copy_from_slice(&c.partial);
    let n = match (&*c.sock).read(&mut buf[keep..]) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(e) if sys::retryable(&e) => return true,
        Err(_) => return false,
    };
    rep.bytes += n as u64;
    let now = now_ns();
    let data = &buf[..keep + n];
    let mut pos = 0;
    while let Some(nl) = memchr(b'\n', &data[pos..]) {
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

/// Reads a ready WebSocket connection until it would block. The epoll set is level-triggered
/// on the socket, so messages already in tungstenite's buffer would get no event: stopping
/// before `WouldBlock` could strand them. Returns false once the connection is finished.
fn read_ws(
    ws: &mut Ws,
    c: &mut Conn,
    size: usize,
    progress: &Progress,
    rep: &mut RxReport,
    advanced: &mut u64,
) -> bool {
    // One clock reading per drain, taken when its first message is in, as TCP takes one per
    // `read`: a reading per message cost a tenth of this thread's time at full speed.
    let mut now = None;
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                // As for TCP, the bytes of the line with its newline.
                rep.bytes += text.len() as u64 + 1;
                let at = *now.get_or_insert_with(now_ns);
                check_line(c, text.as_bytes(), at, size, progress, rep, advanced);
            }
            Ok(Message::Binary(_)) => rep.corrupt += 1,
            // Pings are answered (and a close echoed) by tungstenite itself, on a later read
            // or the flush below.
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if sys::retryable(&e) => {
                let _ = ws.flush();
                return true;
            }
            Err(_) => return false,
        }
    }
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
    match payload::decode(line, size) {
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
            rep.latency.record(now.saturating_sub(ts));
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
