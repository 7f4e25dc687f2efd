//! Writing a peer's queue to its socket: the drain loop that the deliverer and a peer's writer
//! thread share, the writer thread, a joiner's first sends, a closed peer's last bytes, and the
//! socket calls they make (non-blocking sends, coalesced `writev`s).
//!
//! The deliverer writes without waiting for anyone. Only when a peer's socket is full is the
//! rest of its queue handed to a writer thread that drains it with blocking, coalesced writes.
//! The writer exits as soon as the queue is empty, so an idle client costs one thread (its
//! reader), not two: threads cost memory mappings and Linux caps a process near 16,000 threads
//! (`vm.max_map_count`).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, MutexGuard};
use std::thread;
use std::time::Instant;

use log::{debug, warn};
use socket2::SockRef;

use super::live::LIVE_TICK;
use super::{Peer, Role, State};
use crate::delivery::chunk::{Chunk, Format};
use crate::delivery::deliverer::{Backlog, MAX_DELIVERER_ROUNDS};
use crate::delivery::notice::Departure;
use crate::delivery::ws_frame;
use crate::sync::lock;
use crate::sys;

/// A writer hands the kernel at most this much per call, so that progress (and so the
/// waiting senders) moves in steps the size of a socket buffer, not of the whole backlog.
const WRITE_BATCH: usize = 64 * 1024;
/// Well under Linux's `IOV_MAX` of 1024.
const MAX_SLICES: usize = 256;

/// Queue slots an empty queue keeps; more are given back.
const KEEP_SLOTS: usize = 16;

/// A writer's frames are shallow: it only copies slices and calls `writev`.
const WRITER_STACK: usize = 64 * 1024;

/// Whether the thread writing to a peer's socket may wait for the client to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Writes {
    /// It may, up to `--write-timeout`: the peer's writer thread, which exists to block on this
    /// one client.
    Blocking,
    /// It never waits, and leaves what the socket does not take at once to a thread that may:
    /// the deliverer, which has every other peer to serve (the one thread that drains queues
    /// this way), and any thread that writes a peer's first or last bytes on its way (a
    /// joiner's own in `start_sending`, whoever closes a peer that nobody drains).
    NonBlocking,
}

/// Where what was sent to a peer so far stops, for a notice sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cut {
    AtLineEnd,
    /// A TCP peer's last byte sent was not a `\n`.
    MidLine,
    /// A WebSocket peer's last write stopped inside a frame: the rest of that frame.
    MidFrame(Vec<u8>),
}

impl State {
    /// Where what was sent so far stops: a notice sent now must start on a line (or in a
    /// frame) of its own.
    pub(super) fn cut(&mut self) -> Cut {
        if !self.frame_rest.is_empty() {
            Cut::MidFrame(std::mem::take(&mut self.frame_rest))
        } else if self.mid_line {
            Cut::MidLine
        } else {
            Cut::AtLineEnd
        }
    }
}

impl Peer {
    /// Sends what [`Peer::queue_quietly`] held back: directly while the socket takes it, and
    /// by a writer thread for the rest, as the deliverer does.
    pub(crate) fn start_sending(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        if st.role != Role::Held {
            return;
        }
        if st.closed.is_some() {
            st.role = Role::Idle;
            return;
        }
        while let Some(front) = st.queue.front() {
            let front = Chunk::clone(front);
            match send_dontwait(&self.sock, &self.wire(&front)[st.head..]) {
                Ok(n) if n > 0 => self.advance(&mut st, n),
                Err(e) if !sys::timed_out(&e) && e.kind() != io::ErrorKind::Interrupted => {
                    debug!("client {}: send failed: {e}", self.id);
                    self.mark_closed(&mut st, Departure::SendFailed(e.to_string()));
                    self.finish_close(st, Writes::NonBlocking);
                    return;
                }
                _ => break,
            }
        }
        if st.queue.is_empty() {
            st.role = Role::Idle;
            self.notify(&st);
            return;
        }
        st.role = Role::Writer;
        drop(st);
        self.start_writer();
    }

    /// The deliverer's share of a turn at this peer's queue: see `drain`.
    pub(in crate::delivery) fn deliver(self: &Arc<Self>) {
        self.drain(Writes::NonBlocking);
    }

    /// Starts the writer thread for a peer whose role is already [`Role::Writer`].
    fn start_writer(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name(format!("writer-{}", self.id))
            .stack_size(WRITER_STACK)
            .spawn(move || me.drain(Writes::Blocking));
        if let Err(e) = spawned {
            warn!("client {}: cannot start a writer thread: {e}", self.id);
            let mut st = lock(&self.state);
            if st.closed.is_none() {
                self.mark_closed(&mut st, Departure::OutOfThreads);
                st.notice = self.notices.farewell(&Departure::OutOfThreads);
            }
            self.finish_close(st, Writes::NonBlocking);
        }
    }

    /// Drains the queue with coalesced writes (up to `WRITE_BATCH` bytes a call), then gives
    /// the role back. Run by the peer's writer thread (`Writes::Blocking`) or by the deliverer
    /// (`Writes::NonBlocking`), which hands the rest to a writer thread when the socket is
    /// full, and after `MAX_DELIVERER_ROUNDS` calls puts the peer back at the end of its run
    /// list, so that one busy peer does not hold up the others.
    fn drain(self: &Arc<Self>, writes: Writes) {
        let mut batch: Vec<Chunk> = Vec::new();
        let mut rounds = 0;
        let mut progress = Instant::now();
        loop {
            let (head, live) = {
                let mut st = lock(&self.state);
                if st.closed.is_some() {
                    self.finish_close(st, writes);
                    return;
                }
                let live = st.live.is_some();
                if live {
                    let stale =
                        st.drop_stale(self.format, self.live_limits.max_age, Instant::now());
                    self.count_dropped(stale);
                }
                if st.queue.is_empty() {
                    st.role = Role::Idle;
                    if st.queue.capacity() > KEEP_SLOTS {
                        // A burst's slots are not kept for the life of an idle connection.
                        st.queue = VecDeque::new();
                    }
                    self.notify(&st);
                    return;
                }
                if writes == Writes::NonBlocking && rounds == MAX_DELIVERER_ROUNDS {
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
                (st.head, live)
            };
            rounds += 1;
            // A live peer's writer never blocks on a batch chosen before the wait: it waits
            // for room in short steps and chooses again, without what went stale meanwhile.
            let live_wait = live && writes == Writes::Blocking;
            if live_wait && !sys::wait_writable(&self.sock, LIVE_TICK) {
                batch.clear();
                if progress.elapsed() >= self.write_timeout {
                    self.time_out(&mut lock(&self.state));
                }
                continue;
            }
            let mode = if live_wait {
                Writes::NonBlocking
            } else {
                writes
            };
            let (attempted, result) = write_batch(&self.sock, &batch, head, self.format, mode);
            let mut st = lock(&self.state);
            match result {
                Ok(n) if self.format.websocket() && n > 0 && st.closed.is_some() => {
                    // Closed while this write was in flight: the queue is gone, and the frame
                    // it stopped in is finished from here (see `send_last`).
                    st.frame_rest = unsent_frame(&batch, head + n, self.format);
                }
                Ok(n) if !self.format.websocket() => {
                    st.mid_line = ends_mid_line(&batch, head, n).unwrap_or(st.mid_line);
                }
                _ => {}
            }
            batch.clear();
            if st.closed.is_some() {
                continue;
            }
            match result {
                Ok(n) if n > 0 => {
                    if live_wait {
                        progress = Instant::now();
                    }
                    self.advance(&mut st, n);
                    self.notify(&st);
                    if writes == Writes::NonBlocking && n < attempted {
                        drop(st);
                        self.hand_to_writer();
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if sys::timed_out(&e) && writes == Writes::NonBlocking => {
                    drop(st);
                    self.hand_to_writer();
                    return;
                }
                Err(e) if sys::timed_out(&e) && live_wait => {
                    if progress.elapsed() >= self.write_timeout {
                        self.time_out(&mut st);
                    }
                }
                Err(e) if sys::timed_out(&e) => {
                    // SO_SNDTIMEO (`--write-timeout`) expired without the peer taking a byte.
                    self.time_out(&mut st);
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

    /// Closes a peer whose socket took nothing for `--write-timeout`.
    fn time_out(&self, st: &mut State) {
        let pending = st.pending;
        warn!(
            "client {}: write timed out, {pending} bytes pending: disconnected",
            self.id
        );
        let why = Departure::WriteTimeout { pending };
        st.notice = self.notices.farewell(&why);
        self.mark_closed(st, why);
        self.notify(st);
    }

    /// The deliverer gives the rest of the queue to a writer thread, which may block.
    fn hand_to_writer(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            self.finish_close(st, Writes::NonBlocking);
            return;
        }
        st.role = Role::Writer;
        // Senders waiting for the deliverer now wait for a full socket, by the usual rules.
        self.notify(&st);
        drop(st);
        self.start_writer();
    }

    /// The queue owner's last act on a closed peer: now that no write of its own is in
    /// flight, the notice can go out (after a line end if a line was cut short), then the
    /// socket is shut. The writer thread exists to block on this peer, so it may wait for
    /// room for the notice (up to --write-timeout); the deliverer and other threads may not.
    fn finish_close(&self, mut st: MutexGuard<'_, State>, writes: Writes) {
        st.role = Role::Idle;
        let notice = st.notice.take();
        let cut = st.cut();
        let why = st.closed.clone().unwrap_or(Departure::Shutdown);
        self.notify(&st);
        drop(st);
        self.send_last(notice.as_ref(), &why, cut, writes);
    }

    /// Writes a closed peer's last bytes — the farewell `notice`, after a line end if a line
    /// was cut short, and for a WebSocket peer after the rest of a frame cut short and
    /// followed by the close frame — then shuts the socket.
    pub(super) fn send_last(
        &self,
        notice: Option<&Chunk>,
        why: &Departure,
        cut: Cut,
        writes: Writes,
    ) {
        let last = if self.format.websocket() {
            let code = why.ws_close_code();
            // A frame cut short would swallow the bytes after it: the browser would see its
            // connection fail (1006), not why it was closed. So it is finished first.
            (notice.is_some() || code.is_some()).then(|| {
                let mut last = match cut {
                    Cut::MidFrame(rest) => rest,
                    Cut::AtLineEnd | Cut::MidLine => Vec::new(),
                };
                if let Some(notice) = notice {
                    last.extend_from_slice(notice.wire(self.format));
                }
                if let Some(code) = code {
                    last.extend_from_slice(&ws_frame::close(code, &why.to_string()));
                }
                last
            })
        } else {
            notice.map(|notice| match cut {
                Cut::MidLine => [self.notices.eol().as_bytes(), notice].concat(),
                Cut::AtLineEnd | Cut::MidFrame(_) => notice.to_vec(),
            })
        };
        if let Some(notice) = last.filter(|l| !l.is_empty()) {
            match writes {
                Writes::Blocking => {
                    let _ = (&*self.sock).write_all(&notice);
                }
                Writes::NonBlocking => {
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
    format: Format,
    writes: Writes,
) -> (usize, io::Result<usize>) {
    let mut budget = WRITE_BATCH;
    let mut slices = Vec::with_capacity(batch.len());
    for (i, chunk) in batch.iter().enumerate() {
        let wire = chunk.wire(format);
        let bytes = if i == 0 { &wire[head..] } else { wire };
        let bytes = &bytes[..bytes.len().min(budget)];
        budget -= bytes.len();
        slices.push(IoSlice::new(bytes));
        if budget == 0 {
            break;
        }
    }
    let attempted = WRITE_BATCH - budget;
    let result = match writes {
        Writes::Blocking => {
            let mut sock = sock;
            sock.write_vectored(&slices)
        }
        Writes::NonBlocking => SockRef::from(sock)
            .send_vectored_with_flags(&slices, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL),
    };
    (attempted, result)
}

/// Whether the last of the `n` bytes written from `batch` (starting `head` bytes into its
/// first chunk) to a TCP peer left a line unfinished. `None` if nothing was written.
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

/// For a WebSocket peer whose writes stopped `at` bytes into `chunks` (its queue, or the batch
/// of the write in flight, from where that batch starts): the rest of the frame they stopped
/// in, not sent yet; empty if they stopped between frames. A chunk holds whole frames.
pub(super) fn unsent_frame<'a>(
    chunks: impl IntoIterator<Item = &'a Chunk>,
    mut at: usize,
    format: Format,
) -> Vec<u8> {
    for chunk in chunks {
        let wire = chunk.wire(format);
        if at < wire.len() {
            return wire[at..ws_frame::frame_end(wire, at)].to_vec();
        }
        at -= wire.len();
    }
    Vec::new()
}
