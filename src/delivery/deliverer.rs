//! The daemon's one delivery thread: it sends what senders queued for peers, serving the peers
//! in turn.
//!
//! A sender's thread only queues: it appends its chunk to each recipient's queue and, for a
//! recipient that was idle, puts it on this thread's run list; the thread sends with
//! non-blocking, coalesced `writev`s. Everything a peer was handed since the deliverer last
//! served it goes out in one call, whichever senders it came from. Why not send from the
//! sender's thread, as relayd first did: with 50 chatting clients that was 50 threads each
//! making 49 `sendmsg` calls per line, twice ncat's CPU, and with the CPU scarce (daemon pinned
//! to one core) a sender preempted while it held a peer's sending role held up every other
//! sender's lines for that peer: p99 16 times ncat's. One thread that serves peers in turn is
//! what a single-threaded relay does, and when it falls behind it batches more per call
//! instead of making more calls, so it degrades gracefully. It also starts a turn at most once
//! a millisecond, so that under load every peer gets what piled up in one call. See the note
//! on [`Deliverer`] for the figures.
//!
//! The deliverer never waits for a client: a peer whose socket is full is handed to a writer
//! thread of its own (see `peer/write.rs`).

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::delivery::peer::Peer;
use crate::sync::{self, lock};

/// The deliverer starts a turn at most this often. A turn that follows the last one closely is
/// put off until this much after it, so that what senders hand over meanwhile goes out in the
/// same `writev` per peer: with 50 clients chatting at 100 lines/s each, that took the server's
/// CPU per delivery from about ncat's to about half of it, for under a millisecond of p50.
/// A line after a quiet spell goes out at once, and a turn that itself takes longer (a wide
/// fanout) is never delayed.
const TURN_INTERVAL: Duration = Duration::from_millis(1);

/// How many non-blocking writes (of up to `WRITE_BATCH` each, see `peer/write.rs`) the
/// deliverer makes for one peer's queue in a row before it serves the others and comes back to
/// this one. Small, so that a turn over 50 busy peers stays a few megabytes: with 16, a client
/// that connected during a full-speed stream waited 15–34 ms for its first line
/// (`relay-bench slow`).
pub(super) const MAX_DELIVERER_ROUNDS: usize = 2;

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

/// Why a peer goes on the deliverer's run list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backlog {
    /// It had nothing queued until now.
    Fresh,
    /// It had its share of the last turn and has more.
    Remains,
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

    /// Puts `peer`, whose queue the deliverer now owns (its role is `Role::Deliverer`), on the
    /// run list.
    pub(super) fn schedule(&self, peer: Arc<Peer>, backlog: Backlog) {
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
                peer.deliver();
            }
        }
    }

    /// Serves the peers scheduled fresh since this was last called.
    fn serve_fresh(&self, fresh: &mut Vec<Arc<Peer>>) {
        std::mem::swap(fresh, &mut lock(&self.run).fresh);
        for peer in fresh.drain(..) {
            peer.deliver();
        }
    }
}
