//! A peer's outbound side: everything between "this chunk is for you" and the peer's socket.
//!
//! Why it looks the way it does:
//! - Most deliveries go to a peer that has nothing queued. Those are sent straight from the
//!   sender's thread with a non-blocking `send` (`MSG_DONTWAIT`): one syscall, no thread
//!   switch, so latency stays a syscall rather than a context switch.
//! - Only when the peer's socket is full is the rest queued, and a writer thread is started to
//!   drain the queue with blocking, coalesced writes. It exits as soon as the queue is empty, so
//!   an idle client costs one thread (its reader), not two: threads cost memory mappings and
//!   Linux caps a process near 16,000 threads (`vm.max_map_count`).
//! - Per-peer order is kept by one rule: a direct send happens only when the queue is empty and
//!   no writer is running. Everything else goes to the back of the queue.
//! - The queue is bounded in bytes (`--max-pending`). A sender that finds no room may wait for
//!   it (`offer_until`), and a peer that stays full is cut off by whoever gave up on it.
//!
//! Nothing here knows what kind of connection the peer is: it needs a socket to write bytes to,
//! and it is handed chunks of whole lines, already encoded.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};
use socket2::SockRef;

use crate::config::Config;
use crate::sync::lock;

/// One or more whole lines, shared by every peer it is delivered to (never copied per peer).
pub type Chunk = Arc<[u8]>;

/// A client's number, unique for the life of the process.
pub type PeerId = u64;

/// A writer hands the kernel at most this much per call, so that progress (and so the
/// waiting senders) moves in steps the size of a socket buffer, not of the whole backlog.
const WRITE_BATCH: usize = 64 * 1024;
/// Well under Linux's `IOV_MAX` of 1024.
const MAX_SLICES: usize = 256;
/// How many non-blocking sends a sender's thread makes for one peer's queue before it hands
/// the rest to a writer thread: enough to take what other senders piled up meanwhile, few
/// enough that its own line reaches its other peers soon.
const MAX_SENDER_ROUNDS: usize = 64;
/// A writer's frames are shallow: it only copies slices and calls `writev`.
const WRITER_STACK: usize = 64 * 1024;

pub struct Outbound {
    id: PeerId,
    sock: Arc<TcpStream>,
    max_pending: usize,
    stall_timeout: Duration,
    state: Mutex<State>,
    /// Signalled whenever `pending` shrinks or the peer closes: senders waiting for room and
    /// flushes waiting for an empty queue sleep on it.
    changed: Condvar,
    /// Lines this client sent and lines relayed to it, for the operator's `clients` list.
    /// Atomics, so that counting costs a sender no lock.
    lines_in: AtomicU64,
    lines_out: AtomicU64,
}

struct State {
    queue: VecDeque<Chunk>,
    /// Bytes of `queue[0]` already handed to the kernel.
    head: usize,
    /// Bytes in `queue` not yet handed to the kernel (including a batch being written now).
    pending: usize,
    /// A writer thread is draining `queue`, with blocking writes.
    writer: bool,
    /// A sender's thread is draining `queue` with non-blocking sends (see `hand_over`).
    /// Invariant: `queue` is non-empty only while `writer` or `sending` is set (or `held`),
    /// except after `closed`, when the owner may still be finishing its last call.
    sending: bool,
    /// Why the peer was closed, once it is.
    closed: Option<String>,
    /// It was closed because its connection failed under a send, not by the daemon's choice.
    failed: bool,
    /// The last byte handed to the kernel was not a `\n`: a notice sent now would land
    /// inside someone's line.
    mid_line: bool,
    /// A notice for the writer to send once its write in flight returns (see `close`).
    notice: Option<Vec<u8>>,
    /// When the queue last got shorter (or started): a peer whose queue has not moved for
    /// `stall_timeout` is stuck, not slow.
    last_progress: Instant,
    /// `queue_quietly` claimed the writer role and nothing is sending yet: `start_sending`
    /// will.
    held: bool,
}

/// What became of a chunk handed to [`Outbound::offer_until`].
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Sent, queued, or dropped because the peer is already closed.
    Taken,
    /// No room before the deadline (or the peer is stuck); the caller decides its fate.
    Full,
}

impl Outbound {
    pub fn new(id: PeerId, sock: Arc<TcpStream>, config: &Config) -> Arc<Outbound> {
        Arc::new(Outbound {
            id,
            sock,
            max_pending: config.max_pending,
            stall_timeout: config.stall_timeout,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                head: 0,
                pending: 0,
                writer: false,
                sending: false,
                closed: None,
                failed: false,
                mid_line: false,
                notice: None,
                last_progress: Instant::now(),
                held: false,
            }),
            changed: Condvar::new(),
            lines_in: AtomicU64::new(0),
            lines_out: AtomicU64::new(0),
        })
    }

    /// Counts `n` lines read from this client.
    pub fn count_in(&self, n: u64) {
        self.lines_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` lines relayed to this client.
    pub fn count_out(&self, n: u64) {
        self.lines_out.fetch_add(n, Ordering::Relaxed);
    }

    /// `(lines in, lines out)` so far.
    pub fn line_counts(&self) -> (u64, u64) {
        (
            self.lines_in.load(Ordering::Relaxed),
            self.lines_out.load(Ordering::Relaxed),
        )
    }

    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Bytes queued for this peer that its socket has not taken yet.
    pub fn pending(&self) -> usize {
        lock(&self.state).pending
    }

    /// Why this peer was closed, if it was.
    pub fn closed_reason(&self) -> Option<String> {
        lock(&self.state).closed.clone()
    }

    /// Why the daemon cut this peer off (too slow, kicked, shutdown), if it did; `None` also
    /// when its connection merely failed under a send, which is the client leaving.
    pub fn cut_off_reason(&self) -> Option<String> {
        let st = lock(&self.state);
        st.closed.clone().filter(|_| !st.failed)
    }

    /// Hands `chunk` to this peer if there is room, waiting for room until `deadline`
    /// (`None`: not at all). "Room" means the chunk fits under `--max-pending`, or nothing is
    /// queued at all, so a chunk larger than the limit still gets through to a healthy peer.
    /// A peer whose queue has not moved for `--stall-timeout` is reported `Full` at once.
    pub fn offer_until(self: &Arc<Self>, chunk: &Chunk, deadline: Option<Instant>) -> Offer {
        let mut st = lock(&self.state);
        loop {
            if st.closed.is_some() {
                return Offer::Taken;
            }
            if st.pending == 0 || st.pending + chunk.len() <= self.max_pending {
                self.hand_over(st, chunk);
                return Offer::Taken;
            }
            let now = Instant::now();
            let stuck_at = st.last_progress + self.stall_timeout;
            let until = match deadline {
                Some(d) => d.min(stuck_at),
                None => return Offer::Full,
            };
            if now >= until {
                return Offer::Full;
            }
            st = self
                .changed
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Queues a line from the daemon itself (a notice for this client), regardless of
    /// `--max-pending`: notices are few and short, and must not be lost to a full queue.
    pub fn push_notice(self: &Arc<Self>, line: &[u8]) {
        let st = lock(&self.state);
        if st.closed.is_none() {
            self.hand_over(st, &Chunk::from(line));
        }
    }

    /// Queues `chunks` without sending anything yet, regardless of `--max-pending`, and holds
    /// back every later chunk behind them until [`Outbound::start_sending`].
    ///
    /// This is for the lines a client gets on entering a room (welcome, history replay): they
    /// are queued under the registry lock, so they land before any live line, with no gap or
    /// duplicate; but no socket I/O (and no thread start) may happen under that lock, so the
    /// sending is left to `start_sending`, called once the lock is released. Claiming the
    /// writer role (`writer = true`) is what holds back direct sends meanwhile.
    pub fn queue_quietly(&self, chunks: &[Chunk]) {
        let mut st = lock(&self.state);
        if st.closed.is_some() || chunks.is_empty() {
            return;
        }
        for chunk in chunks {
            st.queue.push_back(Chunk::clone(chunk));
            st.pending += chunk.len();
        }
        if !st.writer && !st.sending {
            st.writer = true;
            st.held = true;
            st.last_progress = Instant::now();
        }
    }

    /// Sends what [`Outbound::queue_quietly`] held back: directly while the socket takes it,
    /// and by a writer thread for the rest, as `hand_over` does.
    pub fn start_sending(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        if !st.held {
            return;
        }
        st.held = false;
        if st.closed.is_some() {
            st.writer = false;
            return;
        }
        while let Some(front) = st.queue.front() {
            let front = Chunk::clone(front);
            match send_dontwait(&self.sock, &front[st.head..]) {
                Ok(n) if n > 0 => self.advance(&mut st, n),
                Err(e) if !is_would_block(&e) && e.kind() != io::ErrorKind::Interrupted => {
                    debug!("client {}: send failed: {e}", self.id);
                    st.writer = false;
                    drop(st);
                    self.close(&format!("send failed: {e}"), None);
                    return;
                }
                _ => break,
            }
        }
        if st.queue.is_empty() {
            st.writer = false;
            self.changed.notify_all();
            return;
        }
        drop(st);
        self.start_writer();
    }

    /// Sends directly when nothing is queued, else appends to the queue.
    ///
    /// The send happens outside the peer's lock: a sender that finds another thread already
    /// sending to this peer appends its chunk and moves on to the next peer instead of
    /// waiting, and whoever is sending takes what piled up meanwhile in the same `sendmsg`.
    /// Under load from many senders this coalesces their deliveries to one peer into fewer
    /// syscalls, and no sender sleeps on a lock that is held across a syscall.
    fn hand_over(self: &Arc<Self>, mut st: MutexGuard<'_, State>, chunk: &Chunk) {
        if st.writer || st.sending || !st.queue.is_empty() {
            if st.pending == 0 {
                // The backlog starts now: "no progress for --stall-timeout" counts from here,
                // not from whenever this peer's queue last moved.
                st.last_progress = Instant::now();
            }
            st.queue.push_back(Arc::clone(chunk));
            st.pending += chunk.len();
            return;
        }
        st.sending = true;
        drop(st);
        let result = send_dontwait(&self.sock, chunk);
        let mut st = lock(&self.state);
        let sent = match result {
            Ok(n) => n,
            Err(e) if is_would_block(&e) || e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                // The reader sees the same broken socket and reports it; only stop writing.
                debug!("client {}: send failed: {e}", self.id);
                if st.closed.is_none() {
                    Self::mark_closed(&mut st, &format!("send failed: {e}"));
                    st.failed = true;
                }
                self.finish_close(st, false);
                return;
            }
        };
        if sent > 0 {
            st.mid_line = chunk[sent - 1] != b'\n';
            st.last_progress = Instant::now();
        }
        if st.closed.is_some() {
            self.finish_close(st, false);
            return;
        }
        if sent < chunk.len() {
            // Ahead of whatever other senders appended while this one was sending.
            st.queue.push_front(Arc::clone(chunk));
            st.head = sent;
            st.pending += chunk.len() - sent;
        }
        if st.queue.is_empty() {
            st.sending = false;
            return;
        }
        drop(st);
        self.drain(false);
    }

    fn start_writer(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name(format!("writer-{}", self.id))
            .stack_size(WRITER_STACK)
            .spawn(move || me.drain(true));
        if let Err(e) = spawned {
            warn!("client {}: cannot start a writer thread: {e}", self.id);
            let mut st = lock(&self.state);
            st.writer = false;
            if st.closed.is_none() {
                Self::mark_closed(&mut st, "out of threads");
            }
            drop(st);
            self.send_notice_and_shut(Some(b"relayd: server out of resources\n"), true, false);
        }
    }

    /// Drains the queue with coalesced writes (up to `WRITE_BATCH` bytes a call), then
    /// gives up the role. `blocking`: this is the writer thread, whose writes may wait for the
    /// peer (up to `--write-timeout`). Otherwise it is a sender's thread, whose sends never
    /// wait: when the socket is full, or after `MAX_SENDER_ROUNDS` calls (a sender has its
    /// own line to deliver to other peers), it hands the rest to a writer thread.
    fn drain(self: &Arc<Self>, blocking: bool) {
        let mut batch: Vec<Chunk> = Vec::new();
        let mut rounds = 0;
        loop {
            let head = {
                let mut st = lock(&self.state);
                if st.closed.is_some() {
                    self.finish_close(st, blocking);
                    return;
                }
                if st.queue.is_empty() {
                    st.writer = false;
                    st.sending = false;
                    self.changed.notify_all();
                    return;
                }
                if !blocking && rounds == MAX_SENDER_ROUNDS {
                    drop(st);
                    self.hand_to_writer();
                    return;
                }
                let mut total = 0;
                for chunk in &st.queue {
                    batch.push(Arc::clone(chunk));
                    total += chunk.len();
                    if total - st.head >= WRITE_BATCH || batch.len() == MAX_SLICES {
                        break;
                    }
                }
                st.head
            };
            rounds += 1;
            let (attempted, result) = write_batch(&self.sock, &batch, head, blocking);
            let mut st = lock(&self.state);
            if let Ok(n) = result {
                st.mid_line = ends_mid_line(&batch, head, n).unwrap_or(st.mid_line);
            }
            batch.clear();
            if st.closed.is_some() {
                continue;
            }
            match result {
                Ok(n) if n > 0 => {
                    self.advance(&mut st, n);
                    self.changed.notify_all();
                    if !blocking && n < attempted {
                        drop(st);
                        self.hand_to_writer();
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_would_block(&e) && !blocking => {
                    drop(st);
                    self.hand_to_writer();
                    return;
                }
                Err(e) if is_would_block(&e) => {
                    // SO_SNDTIMEO (`--write-timeout`) expired without the peer taking a byte.
                    let pending = st.pending;
                    warn!(
                        "client {}: write timed out, {pending} bytes pending: disconnected",
                        self.id
                    );
                    let notice =
                        format!("relayd: disconnected: too slow ({pending} bytes pending)\n");
                    Self::mark_closed(
                        &mut st,
                        &format!("too slow (write timeout, {pending} bytes pending)"),
                    );
                    st.notice = Some(notice.into_bytes());
                    self.changed.notify_all();
                }
                Ok(_) | Err(_) => {
                    let why = match result {
                        Err(e) => format!("write failed: {e}"),
                        Ok(_) => "write failed: wrote zero bytes".to_string(),
                    };
                    Self::mark_closed(&mut st, &why);
                    st.failed = true;
                    self.changed.notify_all();
                }
            }
        }
    }

    /// A sender's thread gives the rest of the queue to a writer thread, which may block.
    fn hand_to_writer(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        st.sending = false;
        if st.closed.is_some() {
            self.finish_close(st, false);
            return;
        }
        st.writer = true;
        drop(st);
        self.start_writer();
    }

    /// The queue owner's last act on a closed peer: now that no write of its own is in
    /// flight, the notice can go out (after a `\n` if a line was cut short), then the socket
    /// is shut. The writer thread exists to block on this peer, so it may wait for room for
    /// the notice (up to --write-timeout); a sender's thread may not.
    fn finish_close(&self, mut st: MutexGuard<'_, State>, may_block: bool) {
        st.writer = false;
        st.sending = false;
        let notice = st.notice.take();
        let mid_line = st.mid_line;
        self.changed.notify_all();
        drop(st);
        self.send_notice_and_shut(notice.as_deref(), mid_line, may_block);
    }

    /// Accounts for `n` bytes taken by the kernel from the front of the queue.
    fn advance(&self, st: &mut State, mut n: usize) {
        st.pending -= n;
        st.last_progress = Instant::now();
        while n > 0 {
            let front = &st.queue[0];
            let left = front.len() - st.head;
            if n < left {
                st.head += n;
                return;
            }
            n -= left;
            st.queue.pop_front();
            st.head = 0;
        }
    }

    /// Waits until everything queued has reached the kernel, the peer closed, or `deadline`.
    /// Returns whether the queue was drained.
    pub fn flush(&self, deadline: Instant) -> bool {
        let mut st = lock(&self.state);
        loop {
            if st.closed.is_some() {
                return false;
            }
            if !st.writer && !st.sending && st.queue.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Closes the peer: drops its backlog (freeing the memory at once), sends `notice`, and
    /// shuts the socket down, which also wakes the peer's reader thread. Returns false if it
    /// was already closed.
    ///
    /// If a writer is blocked in `write` right now, the notice cannot be sent without landing
    /// inside its bytes, so only reading is shut down here (the client's slot is freed as
    /// usual) and the writer sends the notice and closes the socket when its write returns —
    /// at once if the client reads again, after `--write-timeout` if it never does. Either
    /// way the notice is best effort: a client cut off for not reading may have no room for it.
    pub fn close(&self, reason: &str, notice: Option<&[u8]>) -> bool {
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return false;
        }
        Self::mark_closed(&mut st, reason);
        self.changed.notify_all();
        if st.writer || st.sending {
            st.notice = notice.map(<[u8]>::to_vec);
            drop(st);
            let _ = self.sock.shutdown(Shutdown::Read);
        } else {
            let mid_line = st.mid_line;
            drop(st);
            self.send_notice_and_shut(notice, mid_line, false);
        }
        true
    }

    fn mark_closed(st: &mut State, reason: &str) {
        st.closed = Some(reason.to_string());
        st.queue = VecDeque::new();
        st.head = 0;
        st.pending = 0;
    }

    fn send_notice_and_shut(&self, notice: Option<&[u8]>, mid_line: bool, may_block: bool) {
        if let Some(notice) = notice {
            let notice = if mid_line {
                [b"\n", notice].concat()
            } else {
                notice.to_vec()
            };
            if may_block {
                let _ = (&*self.sock).write_all(&notice);
            } else {
                let _ = send_dontwait(&self.sock, &notice);
            }
        }
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    /// Stops reading from the peer (its reader thread sees end of input) while leaving its
    /// outbound side open, so that what is queued can still be flushed.
    pub fn shutdown_read(&self) {
        let _ = self.sock.shutdown(Shutdown::Read);
    }

    /// For a peer about to be closed for good: reads and throws away whatever it has sent,
    /// and returns how many bytes the kernel still holds for it, unsent or unacknowledged
    /// (see `server::linger` for why).
    pub fn discard_input_and_unsent(&self) -> usize {
        let mut scratch = [MaybeUninit::<u8>::uninit(); 4096];
        let sock = SockRef::from(&*self.sock);
        // Ends at EAGAIN, at end of input, or on an error (nothing more will arrive then).
        while matches!(sock.recv_with_flags(&mut scratch, libc::MSG_DONTWAIT), Ok(n) if n > 0) {}
        if is_reset(&self.sock) {
            // The kernel has dropped the connection: nothing more will be delivered (and the
            // count below no longer shrinks).
            return 0;
        }
        let mut unsent: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int, into `unsent`.
        let ok = unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::TIOCOUTQ, &mut unsent) } == 0;
        if ok { unsent.max(0) as usize } else { 0 }
    }
}

/// One non-blocking `send`: hands the kernel what fits, never waits.
pub fn send_dontwait(sock: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    SockRef::from(sock).send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}

/// Writes `batch` (from `head` bytes into its first chunk, at most `WRITE_BATCH` bytes) in
/// one call. Returns how many bytes it tried to write, and the call's result.
fn write_batch(
    sock: &TcpStream,
    batch: &[Chunk],
    head: usize,
    blocking: bool,
) -> (usize, io::Result<usize>) {
    let mut budget = WRITE_BATCH;
    let mut slices = Vec::with_capacity(batch.len());
    for (i, chunk) in batch.iter().enumerate() {
        let bytes = if i == 0 { &chunk[head..] } else { &chunk[..] };
        let bytes = &bytes[..bytes.len().min(budget)];
        budget -= bytes.len();
        slices.push(IoSlice::new(bytes));
        if budget == 0 {
            break;
        }
    }
    let attempted = WRITE_BATCH - budget;
    let result = if blocking {
        let mut sock = sock;
        sock.write_vectored(&slices)
    } else {
        SockRef::from(sock)
            .send_vectored_with_flags(&slices, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    (attempted, result)
}

/// Whether the last of the `n` bytes written from `batch` (starting `head` bytes into its
/// first chunk) left a line unfinished. `None` if nothing was written.
fn ends_mid_line(batch: &[Chunk], head: usize, n: usize) -> Option<bool> {
    let mut end = head + n;
    for chunk in batch {
        if end <= chunk.len() {
            return (end > 0).then(|| chunk[end - 1] != b'\n');
        }
        end -= chunk.len();
    }
    None
}

/// Whether the connection is gone in the kernel (TCP state CLOSE: reset, or timed out).
fn is_reset(sock: &TcpStream) -> bool {
    /// `TCP_CLOSE` in Linux's `enum tcp_state`.
    const TCP_CLOSE: u8 = 7;
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        rc != 0 || info.tcpi_state == TCP_CLOSE
    }
}

fn is_would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
