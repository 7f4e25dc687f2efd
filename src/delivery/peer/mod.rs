//! A peer: a connected client as the rest of the daemon sends to it — its queue, its writer,
//! and the slow-consumer policy. Everything between "this chunk is for you" and its socket.
//!
//! Why it looks the way it does:
//! - A sender's thread only queues: it appends its chunk to each recipient's queue and, for a
//!   recipient that was idle, puts it on the run list of the daemon's one [`Deliverer`]
//!   thread, which sends with non-blocking, coalesced `writev`s. Everything a peer was handed
//!   since the deliverer last served it goes out in one call, whichever senders it came from.
//!   Why not send from the sender's thread, as relayd first did: with 50 chatting clients that
//!   was 50 threads each making 49 `sendmsg` calls per line, twice ncat's CPU, and with the CPU
//!   scarce (daemon pinned to one core) a sender preempted while it held a peer's sending role
//!   held up every other sender's lines for that peer: p99 16 times ncat's. One thread that
//!   serves peers in turn is what a single-threaded relay does, and when it falls behind it
//!   batches more per call instead of making more calls, so it degrades gracefully. It also
//!   starts a turn at most once a millisecond, so that under load every peer gets what
//!   piled up in one call. See the note on [`Deliverer`] for the figures.
//! - Only when the peer's socket is full is the rest handed to a writer thread that drains the
//!   queue with blocking, coalesced writes. It exits as soon as the queue is empty, so an idle
//!   client costs one thread (its reader), not two: threads cost memory mappings and Linux caps
//!   a process near 16,000 threads (`vm.max_map_count`).
//! - Per-peer order is kept by one rule: one drainer at a time (the deliverer, a writer, or a
//!   joiner's own thread sending its welcome), and everything else goes to the back of the
//!   queue.
//! - The queue is bounded (`--max-pending`), and everything in it counts: relayed lines,
//!   relayd's own notices and replies, history replays, and [`CHUNK_COST`] of bookkeeping per
//!   queued chunk, so that neither a client's own commands nor a stream of tiny lines can make
//!   it hold more than the limit says. A sender that finds no room may wait for it (`offer`),
//!   and a peer that stays full is cut off by whoever gave up on it. Long chunks leave an
//!   eighth of the limit to short ones ([`Peer::fits`]), so a flood into a stuck queue does
//!   not make every chat line wait with it.
//! - A peer remembers which room membership a chunk was meant for (its `epoch`): a sender that
//!   picked its recipients before a wait hands a room's line only to those still in the same
//!   stay in that room, so a line reaches a member at most once and never after it left.
//!
//! What kind of client the peer is matters in one way only: a WebSocket peer is written each
//! chunk's WebSocket form (one text frame per line, see `chunk.rs`) instead of its bytes, and
//! everything counted for it (`--max-pending`, progress, where a write stopped) counts those
//! frames, which are what is really queued. Its farewell ends with a close frame.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};
use socket2::SockRef;

use crate::config::Config;
use crate::delivery::notice::{Departure, Notices};
use crate::stats::Stats;
use crate::sync::{self, lock};
use crate::sys;

use crate::delivery::chunk::Chunk;
use crate::delivery::ws_frame;

/// A client's number, unique for the life of the process.
pub(crate) type PeerId = u64;

/// What a queued chunk costs beyond its bytes, counted against `--max-pending`: its slot in
/// the queue (16 bytes) and, when no one else holds it, the allocation's reference counts and
/// rounding (16 to 32 bytes). Without it a stream of 2-byte lines made a lagging peer hold
/// about 24 times its limit.
pub(crate) const CHUNK_COST: usize = 48;

/// The deliverer starts a turn at most this often. A turn that follows the last one closely is
/// put off until this much after it, so that what senders hand over meanwhile goes out in the
/// same `writev` per peer: with 50 clients chatting at 100 lines/s each, that took the server's
/// CPU per delivery from about ncat's to about half of it, for under a millisecond of p50.
/// A line after a quiet spell goes out at once, and a turn that itself takes longer (a wide
/// fanout) is never delayed.
const TURN_INTERVAL: Duration = Duration::from_millis(1);

/// A chunk this short (a chat line or a few) may use the part of `--max-pending` that longer
/// chunks leave free, one `RESERVE_SHARE`th of it: see [`Peer::fits`].
const SHORT_CHUNK: usize = 1024;
const RESERVE_SHARE: usize = 8;

/// A writer hands the kernel at most this much per call, so that progress (and so the
/// waiting senders) moves in steps the size of a socket buffer, not of the whole backlog.
const WRITE_BATCH: usize = 64 * 1024;
/// Well under Linux's `IOV_MAX` of 1024.
const MAX_SLICES: usize = 256;
/// How many non-blocking writes (of up to `WRITE_BATCH` each) the deliverer makes for one
/// peer's queue in a row before it serves the others and comes back to this one. Small, so
/// that a turn over 50 busy peers stays a few megabytes: with 16, a client that connected
/// during a full-speed stream waited 15–34 ms for its first line (`relay-bench slow`).
const MAX_SENDER_ROUNDS: usize = 2;
/// How long a sender waits for the deliverer to serve a peer whose queue is over
/// `--max-pending` before judging the peer by the slow-consumer policy. The deliverer never
/// blocks, so this is a bound, not an expected wait; without it, a sender's line queued a
/// moment before the deliverer's turn would count as the peer being slow (and with
/// `--stall-timeout 0` cut it off).
const DELIVERER_TURN: Duration = Duration::from_secs(1);

/// Queue slots an empty queue keeps; more are given back.
const KEEP_SLOTS: usize = 16;

/// A writer's frames are shallow: it only copies slices and calls `writev`.
const WRITER_STACK: usize = 64 * 1024;

pub(crate) struct Peer {
    id: PeerId,
    sock: Arc<TcpStream>,
    /// A WebSocket client: it is written frames, not lines.
    websocket: bool,
    deliverer: Arc<Deliverer>,
    /// Where the time relayed lines waited is recorded.
    stats: Arc<Stats>,
    max_pending: usize,
    stall_timeout: Duration,
    notices: Notices,
    state: Mutex<State>,
    /// Signalled whenever the queue shrinks, a send ends or the peer closes: senders waiting
    /// for room and flushes waiting for an empty queue sleep on it.
    changed: Condvar,
    /// Lines this client sent and lines relayed to it, for the operator's `clients` list.
    /// Atomics, so that counting costs a sender no lock.
    lines_in: AtomicU64,
    lines_out: AtomicU64,
    /// Set once `closed` is: read without the lock by senders waiting on *other* peers, to
    /// give up on a line whose sender was cut off meanwhile.
    is_closed: AtomicBool,
}

struct State {
    queue: VecDeque<Chunk>,
    /// Bytes of `queue[0]` already handed to the kernel.
    head: usize,
    /// Bytes in `queue` not yet handed to the kernel (including a batch being written now).
    pending: usize,
    /// A writer thread is draining `queue`, with blocking writes.
    writer: bool,
    /// The deliverer has this peer on its run list, or is draining its queue with
    /// non-blocking writes (see `hand_over`); or a joiner's own thread is, in `start_sending`.
    /// Invariant: `queue` is non-empty only while `writer` or `sending` is set (or `held`),
    /// except after `closed`, when the owner may still be finishing its last call.
    sending: bool,
    /// Why the peer was closed, once it is.
    closed: Option<Departure>,
    /// The last byte handed to the kernel was not a `\n`: a notice sent now would land
    /// inside someone's line.
    mid_line: bool,
    /// A notice for the writer to send once its write in flight returns (see `close`).
    notice: Option<Chunk>,
    /// When the queue last got shorter, or the backlog started: a peer whose queue has not
    /// moved for `stall_timeout` is stuck, not slow.
    last_progress: Instant,
    /// `queue_quietly` claimed the writer role and nothing is sending yet: `start_sending`
    /// will.
    held: bool,
    /// Which stay in a room this is: bumped each time the peer enters or leaves one.
    epoch: u64,
    /// Threads waiting on `changed` (for room, or for a flush).
    waiters: usize,
}

impl State {
    /// Whether what is queued only waits for the deliverer's turn: the socket was not found
    /// full, so the peer is not slow, only not served yet.
    fn awaits_deliverer(&self) -> bool {
        self.sending && !self.writer
    }

    /// What the queue costs against `--max-pending`.
    fn cost(&self) -> usize {
        self.pending + CHUNK_COST * self.queue.len()
    }

    /// Appends `chunk` to the queue. A backlog that starts now is not stuck: "no progress for
    /// --stall-timeout" counts from here, not from whenever this peer's queue last moved.
    fn enqueue(&mut self, chunk: &Chunk, websocket: bool) {
        if self.pending == 0 {
            self.last_progress = Instant::now();
        }
        self.queue.push_back(Chunk::clone(chunk));
        self.pending += chunk.wire(websocket).len();
    }
}

/// What became of a chunk handed to [`Peer::offer`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Sent, queued, or dropped because the peer is closed or no longer in the room the chunk
    /// was for.
    Taken,
    /// No room (yet): the caller may wait again, or serve others first.
    Full,
    /// The slow-consumer policy gives up on the peer: the caller cuts it off.
    Stuck,
}

/// How long a sender waits in [`Peer::offer`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wait {
    /// When the sender began waiting for this peer, from which its patience is counted.
    pub(crate) since: Instant,
    /// When this call returns `Full` if there is still no room.
    pub(crate) until: Instant,
}

/// Who is draining a peer's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drainer {
    /// The peer's writer thread: its writes may wait for the peer, up to `--write-timeout`.
    Writer,
    /// The deliverer, which has other peers to serve: its writes never wait.
    Sender,
}

/// Whether the bytes already sent to a peer end inside a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    AtLineEnd,
    MidLine,
}

impl Peer {
    pub(crate) fn new(
        id: PeerId,
        sock: Arc<TcpStream>,
        websocket: bool,
        config: &Config,
        deliverer: &Arc<Deliverer>,
        stats: &Arc<Stats>,
    ) -> Arc<Peer> {
        Arc::new(Peer {
            id,
            sock,
            websocket,
            deliverer: Arc::clone(deliverer),
            stats: Arc::clone(stats),
            max_pending: config.max_pending,
            stall_timeout: config.stall_timeout,
            notices: Notices::new(config),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                head: 0,
                pending: 0,
                writer: false,
                sending: false,
                closed: None,
                mid_line: false,
                notice: None,
                last_progress: Instant::now(),
                held: false,
                epoch: 0,
                waiters: 0,
            }),
            changed: Condvar::new(),
            lines_in: AtomicU64::new(0),
            lines_out: AtomicU64::new(0),
            is_closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn id(&self) -> PeerId {
        self.id
    }

    /// How the client is connected, for the operator's `clients` list.
    pub(crate) fn transport(&self) -> &'static str {
        if self.websocket { "ws" } else { "tcp" }
    }

    /// What `chunk` puts on this peer's wire.
    fn wire<'a>(&self, chunk: &'a Chunk) -> &'a [u8] {
        chunk.wire(self.websocket)
    }

    /// Counts `n` lines read from this client.
    pub(crate) fn count_in(&self, n: u64) {
        self.lines_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` lines relayed to this client.
    pub(crate) fn count_out(&self, n: u64) {
        self.lines_out.fetch_add(n, Ordering::Relaxed);
    }

    /// `(lines in, lines out)` so far.
    pub(crate) fn line_counts(&self) -> (u64, u64) {
        (
            self.lines_in.load(Ordering::Relaxed),
            self.lines_out.load(Ordering::Relaxed),
        )
    }

    /// Bytes queued for this peer that its socket has not taken yet.
    pub(crate) fn pending(&self) -> usize {
        lock(&self.state).pending
    }

    /// Why this peer was closed, if it was.
    pub(crate) fn closed(&self) -> Option<Departure> {
        lock(&self.state).closed.clone()
    }

    /// Whether this peer was closed; no lock taken.
    pub(crate) fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Acquire)
    }

    /// Why the daemon cut this peer off (too slow, kicked, shutdown), if it did; `None` also
    /// when its connection merely failed under a send, which is the client leaving.
    pub(crate) fn cut_off(&self) -> Option<Departure> {
        // Asked by the client's reader after every read: the common answer costs no lock (the
        // state lock is the one every sender to this peer takes).
        if !self.is_closed() {
            return None;
        }
        self.closed().filter(Departure::by_daemon)
    }

    /// Hands `chunk` to this peer if there is room; with `wait`, waits for room until
    /// `wait.until`. "Room" means the chunk fits under `--max-pending`, or nothing is queued
    /// at all, so a chunk larger than the limit still gets through to a healthy peer.
    /// Without `wait` it never blocks and never judges the peer: no room is `Full`. With it,
    /// a peer the slow-consumer policy gives up on (see [`Peer::gives_up_at`]) is `Stuck`.
    /// With `epoch`, the chunk is for the room stay it names and is dropped if the peer has
    /// moved on since; with `sender`, it is dropped if the sender is cut off (kicked) while
    /// this waits, so that nothing it sent reaches anyone after its leave notice.
    pub(crate) fn offer(
        self: &Arc<Self>,
        chunk: &Chunk,
        wait: Option<Wait>,
        epoch: Option<u64>,
        sender: Option<&Peer>,
    ) -> Offer {
        let mut st = lock(&self.state);
        loop {
            if st.closed.is_some()
                || epoch.is_some_and(|e| e != st.epoch)
                || sender.is_some_and(Peer::is_closed)
            {
                return Offer::Taken;
            }
            if self.fits(&st, chunk) {
                self.hand_over(st, chunk);
                return Offer::Taken;
            }
            let Some(wait) = wait else {
                return Offer::Full;
            };
            let now = Instant::now();
            let give_up = self.gives_up_at(&st, wait.since);
            if now >= give_up {
                return Offer::Stuck;
            }
            if now >= wait.until {
                return Offer::Full;
            }
            st = self.wait(st, give_up.min(wait.until) - now);
        }
    }

    /// Whether `chunk` may join the queue: if it is empty, or the chunk fits under the limit.
    /// A chunk of more than [`SHORT_CHUNK`] bytes must leave [`RESERVE_SHARE`] of the limit
    /// free: a client flooding a peer that stopped reading fills its queue with 16 KiB reads,
    /// and without a reserve a short line from anyone else found no room and waited with the
    /// flood, up to `--stall-timeout` (whether it fitted depended on how the 16 KiB chunks
    /// happened to add up to the limit: `faults.rs`'s probe test failed 1 run in 10).
    fn fits(&self, st: &State, chunk: &Chunk) -> bool {
        let len = self.wire(chunk).len();
        let limit = if len <= SHORT_CHUNK {
            self.max_pending
        } else {
            self.max_pending - self.max_pending / RESERVE_SHARE
        };
        st.pending == 0 || st.cost() + len + CHUNK_COST <= limit
    }

    /// When a sender that began waiting for room at `since` gives up on this peer: once its
    /// queue has not moved for `--stall-timeout`, or the sender has waited that long,
    /// whichever comes first, but never before the deliverer has had a turn at a queue that
    /// only waits for it. The deliverer never blocks, so that turn is a bound, not an
    /// expected wait; without it, a line queued a moment before the deliverer came by would
    /// count as the peer being slow (and with `--stall-timeout 0` cut it off).
    fn gives_up_at(&self, st: &State, since: Instant) -> Instant {
        let at = (st.last_progress + self.stall_timeout).min(since + self.stall_timeout);
        if st.awaits_deliverer() {
            at.max(since + DELIVERER_TURN)
        } else {
            at
        }
    }

    /// Waits until this peer's queue is within `--max-pending` again (it may exceed it by
    /// what [`Peer::queue_quietly`] added), or the slow-consumer policy gives up on it.
    /// Returns whether it is.
    pub(crate) fn wait_room(&self) -> bool {
        let since = Instant::now();
        let mut st = lock(&self.state);
        loop {
            if st.closed.is_some() || st.cost() <= self.max_pending {
                return true;
            }
            let now = Instant::now();
            let give_up = self.gives_up_at(&st, since);
            if now >= give_up {
                return false;
            }
            st = self.wait(st, give_up - now);
        }
    }

    fn wait<'a>(&self, mut st: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        st.waiters += 1;
        let mut st = sync::wait_timeout(&self.changed, st, timeout);
        st.waiters -= 1;
        st
    }

    /// Wakes whoever waits on this peer (for room, or for a flush), if anyone does: a wake-up
    /// is a system call, and most changes (every delivery) have no one waiting.
    fn notify(&self, st: &State) {
        if st.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Starts a new stay in a room and returns its epoch: chunks offered for an earlier stay
    /// are dropped from now on. Then queues `chunks` (the room's welcome and history) as
    /// [`Peer::queue_quietly`] does. Called under the registry lock, which orders it against
    /// every delivery to the room.
    pub(crate) fn enter_room(&self, chunks: &[Chunk]) -> u64 {
        let mut st = lock(&self.state);
        st.epoch += 1;
        let epoch = st.epoch;
        drop(st);
        self.queue_quietly(chunks);
        epoch
    }

    /// Ends the peer's stay in its room: chunks offered for it are dropped from now on.
    pub(crate) fn leave_room(&self) {
        lock(&self.state).epoch += 1;
    }

    /// Queues `chunks` without sending anything yet, whatever room is left under
    /// `--max-pending` (the overshoot is bounded by a welcome and a room's history, and the
    /// joiner's thread then waits for room with [`Peer::wait_room`]), and holds back every
    /// later chunk behind them until [`Peer::start_sending`].
    ///
    /// This is for the lines a client gets on entering a room (welcome, history replay): they
    /// are queued under the registry lock, so they land before any live line, with no gap or
    /// duplicate; but no socket I/O (and no thread start) may happen under that lock, so the
    /// sending is left to `start_sending`, called once the lock is released. Claiming the
    /// writer role (`writer = true`) is what keeps the deliverer off the queue meanwhile.
    pub(crate) fn queue_quietly(&self, chunks: &[Chunk]) {
        let mut st = lock(&self.state);
        if st.closed.is_some() || chunks.is_empty() {
            return;
        }
        for chunk in chunks {
            st.enqueue(chunk, self.websocket);
        }
        if !st.writer && !st.sending {
            st.writer = true;
            st.held = true;
        }
    }

    /// Sends what [`Peer::queue_quietly`] held back: directly while the socket takes it, and
    /// by a writer thread for the rest, as `hand_over` does.
    pub(crate) fn start_sending(self: &Arc<Self>) {
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
            match send_dontwait(&self.sock, &self.wire(&front)[st.head..]) {
                Ok(n) if n > 0 => self.advance(&mut st, n),
                Err(e) if !crate::sys::timed_out(&e) && e.kind() != io::ErrorKind::Interrupted => {
                    debug!("client {}: send failed: {e}", self.id);
                    self.mark_closed(&mut st, Departure::SendFailed(e.to_string()));
                    self.finish_close(st, Drainer::Sender);
                    return;
                }
                _ => break,
            }
        }
        if st.queue.is_empty() {
            st.writer = false;
            self.notify(&st);
            return;
        }
        drop(st);
        self.start_writer();
    }

    /// Queues one last line (the shutdown notice), whatever the limit: nothing more follows.
    pub(crate) fn push_last(self: &Arc<Self>, chunk: &Chunk) {
        let st = lock(&self.state);
        if st.closed.is_none() {
            self.hand_over(st, chunk);
        }
    }

    /// Appends `chunk` to the queue and, if no one is draining it, puts the peer on the
    /// deliverer's run list.
    fn hand_over(self: &Arc<Self>, mut st: MutexGuard<'_, State>, chunk: &Chunk) {
        st.enqueue(chunk, self.websocket);
        if st.writer || st.sending {
            return;
        }
        st.sending = true;
        drop(st);
        self.deliverer.schedule(Arc::clone(self), Backlog::Fresh);
    }

    fn start_writer(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name(format!("writer-{}", self.id))
            .stack_size(WRITER_STACK)
            .spawn(move || me.drain(Drainer::Writer));
        if let Err(e) = spawned {
            warn!("client {}: cannot start a writer thread: {e}", self.id);
            let mut st = lock(&self.state);
            if st.closed.is_none() {
                self.mark_closed(&mut st, Departure::OutOfThreads);
                st.notice = self.notices.farewell(&Departure::OutOfThreads);
            }
            self.finish_close(st, Drainer::Sender);
        }
    }

    /// Drains the queue with coalesced writes (up to `WRITE_BATCH` bytes a call), then gives
    /// up the role. The deliverer hands the rest to a writer thread when the socket is full,
    /// and after `MAX_SENDER_ROUNDS` calls puts the peer back at the end of its run list, so
    /// that one busy peer does not hold up the others.
    fn drain(self: &Arc<Self>, by: Drainer) {
        let mut batch: Vec<Chunk> = Vec::new();
        let mut rounds = 0;
        loop {
            let head = {
                let mut st = lock(&self.state);
                if st.closed.is_some() {
                    self.finish_close(st, by);
                    return;
                }
                if st.queue.is_empty() {
                    st.writer = false;
                    st.sending = false;
                    if st.queue.capacity() > KEEP_SLOTS {
                        // A burst's slots are not kept for the life of an idle connection.
                        st.queue = VecDeque::new();
                    }
                    self.notify(&st);
                    return;
                }
                if by == Drainer::Sender && rounds == MAX_SENDER_ROUNDS {
                    drop(st);
                    self.deliverer.schedule(Arc::clone(self), Backlog::Remains);
                    return;
                }
                let mut total = 0;
                for chunk in &st.queue {
                    batch.push(Chunk::clone(chunk));
                    total += self.wire(chunk).len();
                    if total - st.head >= WRITE_BATCH || batch.len() == MAX_SLICES {
                        break;
                    }
                }
                st.head
            };
            rounds += 1;
            let (attempted, result) = write_batch(&self.sock, &batch, head, self.websocket, by);
            let mut st = lock(&self.state);
            if let Ok(n) = result {
                st.mid_line = ends_mid_line(&batch, head, n, self.websocket).unwrap_or(st.mid_line);
            }
            batch.clear();
            if st.closed.is_some() {
                continue;
            }
            match result {
                Ok(n) if n > 0 => {
                    self.advance(&mut st, n);
                    self.notify(&st);
                    if by == Drainer::Sender && n < attempted {
                        drop(st);
                        self.hand_to_writer();
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if crate::sys::timed_out(&e) && by == Drainer::Sender => {
                    drop(st);
                    self.hand_to_writer();
                    return;
                }
                Err(e) if crate::sys::timed_out(&e) => {
                    // SO_SNDTIMEO (`--write-timeout`) expired without the peer taking a byte.
                    let pending = st.pending;
                    warn!(
                        "client {}: write timed out, {pending} bytes pending: disconnected",
                        self.id
                    );
                    let why = Departure::WriteTimeout { pending };
                    st.notice = self.notices.farewell(&why);
                    self.mark_closed(&mut st, why);
                    self.notify(&st);
                }
                Ok(_) | Err(_) => {
                    let why = match result {
                        Err(e) => format!("write failed: {e}"),
                        Ok(_) => "write failed: wrote zero bytes".to_string(),
                    };
                    self.mark_closed(&mut st, Departure::SendFailed(why));
                    self.notify(&st);
                }
            }
        }
    }

    /// The deliverer gives the rest of the queue to a writer thread, which may block.
    fn hand_to_writer(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        st.sending = false;
        if st.closed.is_some() {
            self.finish_close(st, Drainer::Sender);
            return;
        }
        st.writer = true;
        // Senders waiting for the deliverer now wait for a full socket, by the usual rules.
        self.notify(&st);
        drop(st);
        self.start_writer();
    }

    /// The queue owner's last act on a closed peer: now that no write of its own is in
    /// flight, the notice can go out (after a line end if a line was cut short), then the
    /// socket is shut. The writer thread exists to block on this peer, so it may wait for
    /// room for the notice (up to --write-timeout); the deliverer and other threads may not.
    fn finish_close(&self, mut st: MutexGuard<'_, State>, by: Drainer) {
        st.writer = false;
        st.sending = false;
        let notice = st.notice.take();
        let cut = if st.mid_line {
            Cut::MidLine
        } else {
            Cut::AtLineEnd
        };
        let why = st.closed.clone().unwrap_or(Departure::Shutdown);
        self.notify(&st);
        drop(st);
        self.send_last(notice.as_ref(), &why, cut, by);
    }

    /// Accounts for `n` bytes taken by the kernel from the front of the queue.
    /// A chunk of relayed lines whose last byte the kernel took is one observation of how
    /// long those lines waited in relayd (`/metrics`).
    fn advance(&self, st: &mut State, mut n: usize) {
        let now = Instant::now();
        st.pending -= n;
        st.last_progress = now;
        while n > 0 {
            let front = &st.queue[0];
            let left = self.wire(front).len() - st.head;
            if n < left {
                st.head += n;
                return;
            }
            n -= left;
            if let Some((read_at, lines)) = front.relayed_lines() {
                let waited = now.saturating_duration_since(read_at);
                self.stats.line_wait.observe(waited, lines);
            }
            st.queue.pop_front();
            st.head = 0;
        }
    }

    /// Waits until everything queued has reached the kernel, the peer closed, or `deadline`.
    /// Returns whether the queue was drained.
    pub(crate) fn flush(&self, deadline: Instant) -> bool {
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
            st = self.wait(st, deadline - now);
        }
    }

    /// Closes the peer for `why`: drops its backlog (freeing the memory at once), sends the
    /// farewell notice that goes with `why`, if any, and shuts the socket down, which also
    /// wakes the peer's reader thread. Returns false if it was already closed.
    ///
    /// If a write is in flight right now, the notice cannot be sent without landing inside its
    /// bytes, so only reading is shut down here (the reader leaves as usual) and whoever owns
    /// the write sends the notice and closes the socket when it returns — at once if the
    /// client reads again, after `--write-timeout` if it never does. Either way the notice is
    /// best effort: a client cut off for not reading may have no room for it.
    pub(crate) fn close(&self, why: Departure) -> bool {
        let notice = self.notices.farewell(&why);
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return false;
        }
        self.mark_closed(&mut st, why.clone());
        self.notify(&st);
        if st.writer || st.sending {
            st.notice = notice;
            drop(st);
            let _ = self.sock.shutdown(Shutdown::Read);
        } else {
            let cut = if st.mid_line {
                Cut::MidLine
            } else {
                Cut::AtLineEnd
            };
            drop(st);
            self.send_last(notice.as_ref(), &why, cut, Drainer::Sender);
        }
        true
    }

    fn mark_closed(&self, st: &mut State, why: Departure) {
        self.is_closed.store(true, Ordering::Release);
        st.closed = Some(why);
        st.queue = VecDeque::new();
        st.head = 0;
        st.pending = 0;
    }

    fn send_last(&self, notice: Option<&Chunk>, why: &Departure, cut: Cut, by: Drainer) {
        let last = if self.websocket {
            // A frame cut short cannot be finished with anything that makes sense to the
            // client: it gets no farewell, only the end of the connection.
            (cut == Cut::AtLineEnd).then(|| {
                let mut last = notice.map_or_else(Vec::new, |n| n.wire(true).to_vec());
                if let Some(code) = why.ws_close_code() {
                    last.extend_from_slice(&ws_frame::close(code, &why.to_string()));
                }
                last
            })
        } else {
            notice.map(|notice| match cut {
                Cut::MidLine => [self.notices.eol().as_bytes(), notice].concat(),
                Cut::AtLineEnd => notice.to_vec(),
            })
        };
        if let Some(notice) = last.filter(|l| !l.is_empty()) {
            match by {
                Drainer::Writer => {
                    let _ = (&*self.sock).write_all(&notice);
                }
                Drainer::Sender => {
                    let sent = send_dontwait(&self.sock, &notice).unwrap_or(0);
                    if sent < notice.len() && self.finish_later(notice[sent..].to_vec()) {
                        return;
                    }
                }
            }
        }
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    /// Writes the rest of a farewell on a thread of its own, then shuts the socket: whoever
    /// closed the peer has others to serve and may not wait, but a farewell cut short would
    /// leave half a line (or half a WebSocket frame) as the client's last bytes. Like a
    /// writer's, the write waits for room up to `--write-timeout`. Reading is shut at once, so
    /// the client's own thread leaves now. Returns false if no thread could be started.
    fn finish_later(&self, rest: Vec<u8>) -> bool {
        let _ = self.sock.shutdown(Shutdown::Read);
        let sock = Arc::clone(&self.sock);
        thread::Builder::new()
            .name(format!("farewell-{}", self.id))
            .stack_size(WRITER_STACK)
            .spawn(move || {
                let _ = (&*sock).write_all(&rest);
                let _ = sock.shutdown(Shutdown::Both);
            })
            .is_ok()
    }

    /// Stops reading from the peer (its reader thread sees end of input) while leaving its
    /// outbound side open, so that what is queued can still be flushed.
    pub(crate) fn shutdown_read(&self) {
        let _ = self.sock.shutdown(Shutdown::Read);
    }

    /// For a peer about to be closed for good: reads and throws away whatever it has sent,
    /// and returns how many bytes the kernel still holds for it, unsent or unacknowledged
    /// (see `server::linger` for why).
    pub(crate) fn discard_input_and_unsent(&self) -> usize {
        let mut scratch = [MaybeUninit::<u8>::uninit(); 4096];
        let sock = SockRef::from(&*self.sock);
        // Ends at EAGAIN, at end of input, or on an error (nothing more will arrive then).
        while matches!(sock.recv_with_flags(&mut scratch, libc::MSG_DONTWAIT), Ok(n) if n > 0) {}
        if sys::is_reset(&self.sock) {
            // The kernel has dropped the connection: nothing more will be delivered (and the
            // count below no longer shrinks).
            return 0;
        }
        sys::unacknowledged(&self.sock).unwrap_or(0)
    }
}

/// The daemon's delivery thread: serves, in turn, every peer that has something queued and
/// nobody draining it, with one non-blocking coalesced `writev` per peer per turn, and starts
/// a turn at most every [`TURN_INTERVAL`].
///
/// Chosen by `relay-bench chatter --clients 50 --rate 100 --repeat 3` beside `ncat --broker`,
/// as is and with the daemon pinned to one core (`--server-cpus 0 --client-cpus 1`; figures of
/// 2026-12-03, README.md, Performance). Tried and rejected:
/// - sending from each sender's own thread (relayd's first design): a `sendmsg` per delivery
///   from 50 threads on 2 cores, 1.6–2.1× ncat's CPU per delivery as is, and p99 2.5–16×
///   ncat's pinned, where 50 runnable threads take turns in 3 ms slices;
/// - handing a peer's sending role between senders without blocking (the design just before
///   this one): it coalesced only what piled up during one `sendmsg`, and a role holder that
///   was preempted still held everyone's lines for that peer;
/// - this thread without the turn interval: p99 0.1–0.3× ncat's, but CPU 0.95–1.6× ncat's,
///   one `sendmsg` per delivery again because at 5,000 lines/s it was idle between lines;
///   with turns at most every 0.3 ms CPU was 0.8×, every 1 ms 0.5× (p50 0.7 ms, ncat's 5 ms);
/// - one deliverer per core: peers split among them, and nothing to gain on a 2-core
///   machine where the readers need the other core.
///
/// The reader threads stay: they read, frame and queue, and a sender that outruns a slow
/// peer still waits in its own thread (`Peer::offer`), so TCP backpressure works as before.
pub(crate) struct Deliverer {
    run: Mutex<RunList>,
    wake: Condvar,
}

struct RunList {
    /// Peers that had nothing queued: served first, also in the middle of a turn, so that a
    /// chat line or a fresh client's first line does not wait behind a turn over every busy
    /// peer of a full-speed stream.
    fresh: Vec<Arc<Peer>>,
    /// Peers with more left after their share of the last turn.
    busy: Vec<Arc<Peer>>,
    /// The thread is waiting for work: the next `schedule` must wake it. Kept so that a busy
    /// deliverer costs its schedulers no wake-up call.
    idle: bool,
    stopping: bool,
}

impl Deliverer {
    /// Starts the delivery thread.
    pub(crate) fn start() -> io::Result<Arc<Deliverer>> {
        let deliverer = Arc::new(Deliverer {
            run: Mutex::new(RunList {
                fresh: Vec::new(),
                busy: Vec::new(),
                idle: false,
                stopping: false,
            }),
            wake: Condvar::new(),
        });
        let me = Arc::clone(&deliverer);
        thread::Builder::new()
            .name("deliverer".into())
            .spawn(move || me.serve())?;
        Ok(deliverer)
    }

    /// Puts `peer`, which has its `sending` role set, on the run list.
    fn schedule(&self, peer: Arc<Peer>, backlog: Backlog) {
        let mut run = lock(&self.run);
        match backlog {
            Backlog::Fresh => run.fresh.push(peer),
            Backlog::Remains => run.busy.push(peer),
        }
        if run.idle {
            run.idle = false;
            self.wake.notify_one();
        }
    }

    /// Lets the thread end once its run list is empty. Call when no peer will be handed
    /// anything more.
    pub(crate) fn stop(&self) {
        lock(&self.run).stopping = true;
        self.wake.notify_one();
    }

    fn serve(&self) {
        let (mut fresh, mut busy) = (Vec::new(), Vec::new());
        let mut last_start: Option<Instant> = None;
        loop {
            {
                let mut run = lock(&self.run);
                while run.fresh.is_empty() && run.busy.is_empty() {
                    if run.stopping {
                        return;
                    }
                    run.idle = true;
                    run = sync::wait(&self.wake, run);
                }
            }
            if let Some(due) = last_start.map(|t| t + TURN_INTERVAL) {
                let now = Instant::now();
                if now < due {
                    thread::sleep(due - now);
                }
            }
            last_start = Some(Instant::now());
            std::mem::swap(&mut busy, &mut lock(&self.run).busy);
            self.serve_fresh(&mut fresh);
            for peer in busy.drain(..) {
                self.serve_fresh(&mut fresh);
                peer.drain(Drainer::Sender);
            }
        }
    }

    /// Serves the peers scheduled fresh since this was last called.
    fn serve_fresh(&self, fresh: &mut Vec<Arc<Peer>>) {
        std::mem::swap(fresh, &mut lock(&self.run).fresh);
        for peer in fresh.drain(..) {
            peer.drain(Drainer::Sender);
        }
    }
}

/// Why a peer goes on the deliverer's run list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backlog {
    /// It had nothing queued until now.
    Fresh,
    /// It had its share of the last turn and has more.
    Remains,
}

/// One non-blocking `send`: hands the kernel what fits, never waits.
pub(crate) fn send_dontwait(sock: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    SockRef::from(sock).send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}

/// Writes `batch` (from `head` bytes into its first chunk, at most `WRITE_BATCH` bytes) in
/// one call. Returns how many bytes it tried to write, and the call's result.
fn write_batch(
    sock: &TcpStream,
    batch: &[Chunk],
    head: usize,
    websocket: bool,
    by: Drainer,
) -> (usize, io::Result<usize>) {
    let mut budget = WRITE_BATCH;
    let mut slices = Vec::with_capacity(batch.len());
    for (i, chunk) in batch.iter().enumerate() {
        let wire = chunk.wire(websocket);
        let bytes = if i == 0 { &wire[head..] } else { wire };
        let bytes = &bytes[..bytes.len().min(budget)];
        budget -= bytes.len();
        slices.push(IoSlice::new(bytes));
        if budget == 0 {
            break;
        }
    }
    let attempted = WRITE_BATCH - budget;
    let result = match by {
        Drainer::Writer => {
            let mut sock = sock;
            sock.write_vectored(&slices)
        }
        Drainer::Sender => SockRef::from(sock)
            .send_vectored_with_flags(&slices, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL),
    };
    (attempted, result)
}

/// Whether the last of the `n` bytes written from `batch` (starting `head` bytes into its
/// first chunk) left a line unfinished. `None` if nothing was written. For a WebSocket peer
/// only a chunk's end is known to end a frame: a write that stopped inside a chunk counts as
/// stopping inside a frame.
fn ends_mid_line(batch: &[Chunk], head: usize, n: usize, websocket: bool) -> Option<bool> {
    let mut end = head + n;
    for chunk in batch {
        let wire = chunk.wire(websocket);
        if end <= wire.len() {
            return (end > 0).then(|| {
                if websocket {
                    end != wire.len()
                } else {
                    wire[end - 1] != b'\n'
                }
            });
        }
        end -= wire.len();
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::TcpListener;

    use super::*;

    /// Both ends of a loopback connection: the daemon's side first.
    /// The two ends of a loopback TCP connection: the daemon's, then the client's.
    pub(crate) fn connection() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        (server, client)
    }

    /// A TCP peer on the daemon's side of `server`, with a deliverer of its own.
    fn tcp_peer(server: TcpStream, config: &Config) -> Arc<Peer> {
        numbered_peer(1, server, config)
    }

    /// [`tcp_peer`] with id `id`.
    pub(crate) fn numbered_peer(id: PeerId, server: TcpStream, config: &Config) -> Arc<Peer> {
        let deliverer = Deliverer::start().unwrap();
        Peer::new(
            id,
            Arc::new(server),
            false,
            config,
            &deliverer,
            &Arc::default(),
        )
    }

    /// A backlog's stall clock starts when the backlog does, also when the socket took
    /// nothing of the first chunk: a client idle for longer than --stall-timeout whose socket
    /// happens to be full gets the whole --stall-timeout before it is cut off. (It used to be
    /// cut off at once, the clock reading from its last progress long before.)
    #[test]
    fn a_backlog_that_starts_on_a_full_socket_gets_the_whole_stall_timeout() {
        let (server, _client) = connection();
        let stall = Duration::from_millis(300);
        let config = Config {
            max_pending: 4096,
            stall_timeout: stall,
            ..Config::default()
        };
        let peer = tcp_peer(server, &config);
        // Time passes, as for any quiet client: the clock under test, not a synchronisation.
        thread::sleep(stall + Duration::from_millis(100));
        // Fill the socket behind the peer's back, the way earlier deliveries would have.
        let filler = [b'x'; 65536];
        while send_dontwait(&peer.sock, &filler).is_ok() {}
        let chunk = Chunk::from(&[b'y'; 3000][..]);
        assert_eq!(peer.offer(&chunk, None, None, None), Offer::Taken);
        let start = Instant::now();
        let wait = Wait {
            since: start,
            until: start + Duration::from_secs(5),
        };
        assert_eq!(peer.offer(&chunk, Some(wait), None, None), Offer::Stuck);
        let waited = start.elapsed();
        assert!(
            waited >= stall - Duration::from_millis(50),
            "a fresh backlog was treated as stuck after {waited:?}"
        );
    }

    /// Everything queued counts, with its bookkeeping: tiny chunks fill the limit long before
    /// their bytes alone would.
    #[test]
    fn tiny_chunks_count_their_bookkeeping() {
        let (server, _client) = connection();
        let config = Config {
            max_pending: 10 * CHUNK_COST,
            ..Config::default()
        };
        let peer = tcp_peer(server, &config);
        let filler = [b'x'; 65536];
        while send_dontwait(&peer.sock, &filler).is_ok() {}
        let tiny = Chunk::from(&b"a\n"[..]);
        let mut taken = 0;
        while peer.offer(&tiny, None, None, None) == Offer::Taken {
            taken += 1;
            assert!(taken < 100, "a 2-byte chunk is counted as 2 bytes");
        }
        assert!((5..=10).contains(&taken), "{taken} tiny chunks fit");
    }
}
