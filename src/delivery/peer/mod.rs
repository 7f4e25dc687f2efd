//! A peer: a connected client as the rest of the daemon sends to it — its bounded queue, who
//! may drain it (its [`Role`]), the slow-consumer policy, and closing it. How the queue gets
//! to the socket is in `write.rs`; the thread that serves every peer in turn is
//! `delivery/deliverer.rs`.
//!
//! Why it looks the way it does:
//! - Per-peer order is kept by one rule: one drainer at a time (the deliverer, a writer, or a
//!   joiner's own thread sending its welcome: the peer's [`Role`]), and everything else goes
//!   to the back of the queue.
//! - The queue is bounded (`--max-pending`), and everything in it counts: relayed lines,
//!   relayd's own notices and replies, history replays, and [`CHUNK_COST`] of bookkeeping per
//!   queued chunk, so that neither a client's own commands nor a stream of tiny lines can make
//!   it hold more than the limit says. A sender that finds no room may wait for it (`offer`),
//!   and a peer that stays full is cut off by whoever gave up on it. Long chunks leave an
//!   eighth of the limit to short ones ([`Peer::fits`]), so a flood into a stuck queue does
//!   not make every chat line wait with it.
//! - What a client causes for itself (replies to its commands, notices about its own lines,
//!   pongs, a room's welcome and replay) may take only [`OWN_SHARE`] of the limit, and never
//!   the reserve ([`Peer::reply`]): a client that never reads its replies is cut off on its
//!   own account, and everybody else's lines still fit.
//! - A peer remembers which room membership a chunk was meant for (its `epoch`): a sender that
//!   picked its recipients before a wait hands a room's line only to those still in the same
//!   stay in that room, so a line reaches a member at most once and never after it left.
//!
//! What kind of client the peer is matters in one way only: a WebSocket peer is written each
//! chunk's WebSocket form (one text frame per line, see `chunk.rs`) instead of its bytes, and
//! everything counted for it (`--max-pending`, progress, where a write stopped) counts those
//! frames, which are what is really queued. Its farewell finishes a frame that a write left
//! unfinished and ends with a close frame.

mod live;
pub(crate) mod write;

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::config::Config;
use crate::delivery::chunk::{Chunk, Format};
use crate::delivery::deliverer::{Backlog, Deliverer};
use crate::delivery::notice::{Departure, Notices};
use crate::stats::Stats;
use crate::sync::{self, lock};
use crate::sys;

use self::live::RoomDrops;
pub(crate) use self::live::{Gate, Limits};
use self::write::Writes;

/// A client's number, unique for the life of the process.
pub(crate) type PeerId = u64;

/// What a queued chunk is charged against `--max-pending` beyond its bytes on the wire. It
/// stands for the chunk's slot in the queue (8 bytes: a chunk is a pointer) and a share of the
/// chunk itself, which every recipient's queue points to: a 64-byte header and the bytes, in
/// two allocations, about 130 bytes in all for a 2-byte line. A peer pays all of that only
/// while it alone still holds the chunk, so 48 is a share, not a bound: a lagging peer's queue
/// of tiny lines that every other recipient has sent may take about three times the limit.
/// Counted by their bytes alone, such lines let it take dozens of times the limit.
pub(crate) const CHUNK_COST: usize = 48;

/// A chunk this short (a chat line or a few) may use the part of `--max-pending` that longer
/// chunks leave free, one `RESERVE_SHARE`th of it: see [`Peer::fits`].
const SHORT_CHUNK: usize = 1024;
const RESERVE_SHARE: usize = 8;

/// What a client causes for itself may take up to one `OWN_SHARE`th of its `--max-pending`,
/// never more: see [`Peer::reply`]. Half, so that others' lines up to `--max-line` still fit
/// beside it, below the reserve, when `--max-line` is at most 3/8 of `--max-pending` (64 KiB of
/// 8 MiB by default).
const OWN_SHARE: usize = 2;

/// How long a sender lets the deliverer take to come round to a peer whose queue only waits
/// for it before it judges the peer by the slow-consumer policy: see [`Peer::gives_up_at`].
const DELIVERER_TURN: Duration = Duration::from_secs(1);

pub(crate) struct Peer {
    id: PeerId,
    sock: Arc<TcpStream>,
    /// How it is written: lines, WebSocket frames of lines, or `relayd.v1.json` events.
    format: Format,
    deliverer: Arc<Deliverer>,
    /// Where the time relayed lines waited is recorded.
    stats: Arc<Stats>,
    max_pending: usize,
    stall_timeout: Duration,
    /// How long a live peer's writer may make no progress (a lossless peer's blocking writes
    /// have it as their socket's timeout).
    write_timeout: Duration,
    live_limits: Limits,
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
    /// Relayed lines dropped for this peer in live rooms.
    dropped: AtomicU64,
}

struct State {
    queue: VecDeque<Chunk>,
    /// Bytes of `queue[0]` already handed to the kernel.
    head: usize,
    /// Bytes in `queue` not yet handed to the kernel (including a batch being written now).
    pending: usize,
    /// What the chunks in `queue` that the client caused for itself ([`Chunk::own`]) cost
    /// against `--max-pending`, counted as [`State::cost`] counts, until each leaves the queue.
    own: usize,
    /// Who drains `queue`.
    role: Role,
    /// Why the peer was closed, once it is.
    closed: Option<Departure>,
    /// A TCP peer's last byte handed to the kernel was not a `\n`: a notice sent now would
    /// land inside someone's line.
    mid_line: bool,
    /// A notice for the queue's owner to send once its write in flight returns (see `close`).
    notice: Option<Chunk>,
    /// A closed WebSocket peer's last write stopped inside a frame: the rest of that frame
    /// (at most a frame: a line's, or a pong), sent before the farewell so that the browser
    /// can read the farewell and the close frame. Kept when the queue is dropped.
    frame_rest: Vec<u8>,
    /// When the queue last got shorter, or the backlog started: a peer whose queue has not
    /// moved for `stall_timeout` is stuck, not slow.
    last_progress: Instant,
    /// Which stay in a room this is: bumped each time the peer enters or leaves one.
    epoch: u64,
    /// Threads waiting on `changed` (for room, or for a flush).
    waiters: usize,
    /// In a live room (see `live.rs`): its share of the room's drops; `None` in a lossless
    /// room.
    live: Option<RoomDrops>,
    /// The send buffer the socket had before it entered a live room.
    lossless_sndbuf: Option<usize>,
}

/// Who owns a peer's queue: the one thread that may take from it, which is what keeps the
/// peer's bytes in order. Whoever queues onto an `Idle` peer gives the queue an owner, and the
/// owner gives it back (under the state lock) only once the queue is empty or the peer is
/// closed: a peer with something queued is never `Idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Nothing queued, and no one draining.
    Idle,
    /// A room's welcome and history are queued ([`Peer::queue_quietly`]) and wait for the
    /// joiner's own thread to send them ([`Peer::start_sending`]) once it is out of the
    /// registry lock; until then nothing is sent, and everything else queues behind them.
    Held,
    /// The deliverer owns the queue: the peer is on its run list, or the deliverer is
    /// draining it with non-blocking writes. What is queued waits for its turn, not for the
    /// client.
    Deliverer,
    /// A writer thread owns the queue and drains it with blocking writes: the client's socket
    /// was found full. Set just before the thread is started.
    Writer,
}

impl State {
    /// Whether what is queued only waits for the deliverer's turn: the socket was not found
    /// full, so the peer is not slow, only not served yet.
    fn awaits_deliverer(&self) -> bool {
        self.role == Role::Deliverer
    }

    /// What the queue costs against `--max-pending`.
    fn cost(&self) -> usize {
        self.pending + CHUNK_COST * self.queue.len()
    }

    /// Appends `chunk` to the queue. A backlog that starts now is not stuck: "no progress for
    /// --stall-timeout" counts from here, not from whenever this peer's queue last moved.
    fn enqueue(&mut self, chunk: &Chunk, format: Format) {
        if self.pending == 0 {
            self.last_progress = Instant::now();
        }
        self.queue.push_back(Chunk::clone(chunk));
        let len = chunk.wire(format).len();
        self.pending += len;
        if chunk.is_own() {
            self.own += len + CHUNK_COST;
        }
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

/// How much of its queue [`Peer::wait_room`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Share {
    /// What the client caused for itself within [`OWN_SHARE`] of `--max-pending`: before it
    /// causes more.
    Own,
    /// Everything queued within `--max-pending`.
    All,
}

/// How long a sender waits in [`Peer::offer`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wait {
    /// When the sender began waiting for this peer, from which its patience is counted.
    pub(crate) since: Instant,
    /// When this call returns `Full` if there is still no room.
    pub(crate) until: Instant,
}

impl Peer {
    pub(crate) fn new(
        id: PeerId,
        sock: Arc<TcpStream>,
        format: Format,
        config: &Config,
        deliverer: &Arc<Deliverer>,
        stats: &Arc<Stats>,
    ) -> Arc<Peer> {
        Arc::new(Peer {
            id,
            sock,
            format,
            deliverer: Arc::clone(deliverer),
            stats: Arc::clone(stats),
            max_pending: config.max_pending,
            stall_timeout: config.stall_timeout,
            write_timeout: config.write_timeout,
            live_limits: Limits::new(config),
            notices: Notices::new(config),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                head: 0,
                pending: 0,
                own: 0,
                role: Role::Idle,
                closed: None,
                mid_line: false,
                notice: None,
                frame_rest: Vec::new(),
                last_progress: Instant::now(),
                epoch: 0,
                waiters: 0,
                live: None,
                lossless_sndbuf: None,
            }),
            changed: Condvar::new(),
            lines_in: AtomicU64::new(0),
            lines_out: AtomicU64::new(0),
            is_closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        })
    }

    pub(crate) fn id(&self) -> PeerId {
        self.id
    }

    /// How the client is connected, for the operator's `clients` list.
    pub(crate) fn transport(&self) -> &'static str {
        if self.format.websocket() { "ws" } else { "tcp" }
    }

    /// How it is written to.
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// What `chunk` puts on this peer's wire.
    fn wire<'a>(&self, chunk: &'a Chunk) -> &'a [u8] {
        chunk.wire(self.format)
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
    /// this waits, so that nothing it sent reaches anyone after its leave notice. `now`: when
    /// the offer is made (read once for a whole fanout), against which a live viewer's queue is
    /// checked for stale lines.
    pub(crate) fn offer(
        self: &Arc<Self>,
        chunk: &Chunk,
        wait: Option<Wait>,
        epoch: Option<u64>,
        sender: Option<&Peer>,
        now: Instant,
    ) -> Offer {
        let mut st = lock(&self.state);
        loop {
            if st.closed.is_some()
                || epoch.is_some_and(|e| e != st.epoch)
                || sender.is_some_and(Peer::is_closed)
            {
                return Offer::Taken;
            }
            if st.live.is_some() {
                self.offer_live(st, chunk, now);
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

    /// Queues `chunk`, which the client caused for itself (a reply to its command, a notice
    /// about its own line, a pong), once it fits: what the client caused for itself and is
    /// still queued stays within [`OWN_SHARE`] of `--max-pending`, and the whole queue out of
    /// the eighth kept for short lines (or the queue is empty). Only the client's own thread
    /// calls this, and it waits for that as a sender would (see [`Peer::gives_up_at`]),
    /// reading nothing from the client meanwhile; returns false if the slow-consumer policy
    /// gives up first, and the caller cuts the client off. Without the share, a client that
    /// sends commands and never reads the answers filled its queue with them, reserve and
    /// all, and every line for it from anyone else then waited for it, up to
    /// `--stall-timeout` (`/help` 20,000 times held its room's lines ~2 s at a time). Counting
    /// only its own chunks against the share, not everything queued, leaves a healthy reader
    /// that others' lines keep busy free to use commands.
    pub(crate) fn reply(self: &Arc<Self>, chunk: &Chunk) -> bool {
        let chunk = chunk.own();
        let cost = self.wire(&chunk).len() + CHUNK_COST;
        let own = self.max_pending / OWN_SHARE;
        let all = self.max_pending - self.max_pending / RESERVE_SHARE;
        let fits =
            |st: &State| st.pending == 0 || (st.own + cost <= own && st.cost() + cost <= all);
        let Some(st) = self.wait_until(fits) else {
            return false;
        };
        if st.closed.is_none() {
            self.hand_over(st, &chunk);
        }
        true
    }

    /// Waits until this peer's queue is within `share` (it may exceed even `--max-pending` by
    /// what [`Peer::queue_quietly`] added), or the slow-consumer policy gives up on it.
    /// Returns whether it is.
    pub(crate) fn wait_room(&self, share: Share) -> bool {
        match share {
            Share::Own => {
                let own = self.max_pending / OWN_SHARE;
                self.wait_until(|st| st.own <= own).is_some()
            }
            Share::All => self
                .wait_until(|st| st.cost() <= self.max_pending)
                .is_some(),
        }
    }

    /// Waits, from now, until `ready` holds for the queue or the peer is closed, and returns
    /// the state locked; `None` once the slow-consumer policy gives up on the peer.
    fn wait_until(&self, ready: impl Fn(&State) -> bool) -> Option<MutexGuard<'_, State>> {
        let since = Instant::now();
        let mut st = lock(&self.state);
        loop {
            if st.closed.is_some() || ready(&st) {
                return Some(st);
            }
            let now = Instant::now();
            let give_up = self.gives_up_at(&st, since);
            if now >= give_up {
                return None;
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
    /// sending is left to `start_sending`, called once the lock is released. Holding the queue
    /// ([`Role::Held`], unless someone drains it already) keeps the deliverer off it meanwhile.
    pub(crate) fn queue_quietly(&self, chunks: &[Chunk]) {
        let mut st = lock(&self.state);
        if st.closed.is_some() || chunks.is_empty() {
            return;
        }
        for chunk in chunks {
            st.enqueue(&chunk.own(), self.format);
        }
        if st.role == Role::Idle {
            st.role = Role::Held;
        }
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
        st.enqueue(chunk, self.format);
        if st.role != Role::Idle {
            return;
        }
        st.role = Role::Deliverer;
        drop(st);
        self.deliverer.schedule(Arc::clone(self), Backlog::Fresh);
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
            if front.is_own() {
                st.own -= self.wire(front).len() + CHUNK_COST;
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
            if st.role == Role::Idle && st.queue.is_empty() {
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
    /// If someone owns the queue (see [`Role`]), a write of theirs may be in flight, and the
    /// notice cannot be sent without landing inside its bytes, so only reading is shut down
    /// here (the reader leaves as usual) and the owner sends the notice and closes the socket
    /// when its write returns — at once if the client reads again, after `--write-timeout` if
    /// it never does. (A queue [`Role::Held`] for a joiner is the exception: `start_sending`
    /// finds the peer closed and sends nothing.) Either way the notice is best effort: a client
    /// cut off for not reading may have no room for it.
    pub(crate) fn close(&self, why: Departure) -> bool {
        let notice = self.notices.farewell(&why);
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return false;
        }
        self.mark_closed(&mut st, why.clone());
        self.notify(&st);
        if st.role != Role::Idle {
            st.notice = notice;
            drop(st);
            let _ = self.sock.shutdown(Shutdown::Read);
        } else {
            let cut = st.cut();
            drop(st);
            self.send_last(notice.as_ref(), &why, cut, Writes::NonBlocking);
        }
        true
    }

    fn mark_closed(&self, st: &mut State, why: Departure) {
        self.is_closed.store(true, Ordering::Release);
        st.closed = Some(why);
        if self.format.websocket() {
            // Where the write in flight started, if one is: its owner moves this on when it
            // returns (see `drain`).
            st.frame_rest = write::unsent_frame(st.queue.front(), st.head, self.format);
        }
        st.queue = VecDeque::new();
        st.head = 0;
        st.pending = 0;
        st.own = 0;
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

#[cfg(test)]
pub(crate) mod tests {
    use std::net::TcpListener;
    use std::thread;

    use super::write::send_dontwait;
    use super::*;

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
            Format::Text,
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
        assert_eq!(
            peer.offer(&chunk, None, None, None, Instant::now()),
            Offer::Taken
        );
        let start = Instant::now();
        let wait = Wait {
            since: start,
            until: start + Duration::from_secs(5),
        };
        assert_eq!(
            peer.offer(&chunk, Some(wait), None, None, Instant::now()),
            Offer::Stuck
        );
        let waited = start.elapsed();
        assert!(
            waited >= stall - Duration::from_millis(50),
            "a fresh backlog was treated as stuck after {waited:?}"
        );
    }

    /// What a client causes for itself is held to its own share, counted apart from what
    /// others sent it: with others' lines queued as well, replies still go in at once up to
    /// half of the limit; the next one waits and gives up (the caller then cuts the client
    /// off), and meanwhile others' lines, short and long, still fit.
    #[test]
    fn own_replies_are_held_to_their_share_and_others_still_fit() {
        let (server, _client) = connection();
        let config = Config {
            max_pending: 64 * 1024,
            stall_timeout: Duration::from_millis(200),
            ..Config::default()
        };
        let peer = tcp_peer(server, &config);
        let filler = [b'x'; 65536];
        while send_dontwait(&peer.sock, &filler).is_ok() {}
        let others = Chunk::from(&[b'o'; 1000][..]);
        while peer.pending() < 12 * 1024 {
            assert_eq!(
                peer.offer(&others, None, None, None, Instant::now()),
                Offer::Taken
            );
        }
        let reply = Chunk::from(&b"* a reply\n"[..]);
        let start = Instant::now();
        while lock(&peer.state).own + reply.len() + CHUNK_COST <= config.max_pending / OWN_SHARE {
            assert!(peer.reply(&reply));
        }
        assert!(
            start.elapsed() < Duration::from_millis(150),
            "replies within the share waited {:?}",
            start.elapsed()
        );
        assert!(!peer.reply(&reply), "a reply past the share was queued");
        assert!(lock(&peer.state).own <= config.max_pending / OWN_SHARE);
        assert_eq!(
            peer.offer(&others, None, None, None, Instant::now()),
            Offer::Taken
        );
        let long = Chunk::from(&[b'l'; 4000][..]);
        assert_eq!(
            peer.offer(&long, None, None, None, Instant::now()),
            Offer::Taken
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
        while peer.offer(&tiny, None, None, None, Instant::now()) == Offer::Taken {
            taken += 1;
            assert!(taken < 100, "a 2-byte chunk is counted as 2 bytes");
        }
        assert!((5..=10).contains(&taken), "{taken} tiny chunks fit");
    }
}
