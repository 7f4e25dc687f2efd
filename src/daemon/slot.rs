//! A client's [`Slot`]: its hold on the daemon from admission to the end of its thread, and
//! everything its `Drop` gives back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use log::{debug, info};

use crate::delivery::line_id::LineId;
use crate::delivery::notice::Departure;
use crate::delivery::peer::Peer;
use crate::delivery::registry::Members;
use crate::stats::add;
use crate::sync::lock;

use super::{Daemon, Turn, claimed};

/// A client's hold on the daemon, from admission to the end of its thread. Dropping it takes
/// the client out (telling its room), flushes and closes its peer, and frees its slot, its
/// `--max-per-ip` count and its place among the running readers.
pub(crate) struct Slot {
    /// Given back after everything else: fields are dropped after `Drop::drop` has run, even
    /// one that panicked.
    _reader: Reader,
    daemon: Arc<Daemon>,
    peer: Arc<Peer>,
    addr: SocketAddr,
    /// `Some` once the client entered the lobby at admission: who was there then, for its
    /// arrival notice.
    lobby: Option<Option<Members>>,
    /// Until its own thread has entered the lobby, if that was left to it: its place among
    /// those that do (`turns.rs`).
    turn: Option<Turn>,
    /// Why the client is leaving, as its own thread saw it; a cut-off recorded on the peer
    /// (kick, too slow) takes precedence. Until the thread sets it, leaving is a panic.
    departure: Departure,
}

impl Slot {
    /// The slot of a client the registry has just admitted, counted among the running readers
    /// from now on.
    pub(super) fn new(daemon: Arc<Daemon>, peer: Arc<Peer>, addr: SocketAddr) -> Slot {
        Slot {
            _reader: Reader::count(&daemon),
            daemon,
            peer,
            addr,
            lobby: None,
            turn: None,
            departure: Departure::Panicked,
        }
    }

    /// Puts the client into the lobby at admission, keeping who was there for its arrival
    /// notice.
    pub(super) fn enter_lobby(&mut self) {
        self.lobby = Some(self.daemon.enter(&self.peer, None, None));
    }

    pub(crate) fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }

    /// The lobby as it was when the client entered it, once: at admission, or now, on the
    /// client's own thread, if admission left that to it (the lobby's history was to be read
    /// from Redis first, which the accept loop must not wait for, or a JSON client recovers
    /// the lobby's lines after `since`).
    pub(crate) fn take_lobby(&mut self, since: Option<LineId>) -> Option<Members> {
        match self.lobby.take() {
            Some(lobby) => lobby,
            None => {
                let lobby = self.daemon.enter(&self.peer, since, self.turn.as_ref());
                self.turn = None;
                lobby
            }
        }
    }

    /// Leaves entering the lobby to the client's own thread, after those admitted before it
    /// ([`Slot::take_lobby`]).
    pub(super) fn wait_turn(&mut self, turn: Turn) {
        self.turn = Some(turn);
    }

    /// Gives up the client's turn: it enters the lobby only once it has authenticated (a
    /// reload set `--secret-file` after it was admitted), and those admitted after it must
    /// not wait for that.
    pub(crate) fn give_up_turn(&mut self) {
        self.turn = None;
    }

    pub(crate) fn set_departure(&mut self, why: Departure) {
        self.departure = why;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let daemon = &*self.daemon;
        let why = self
            .peer
            .cut_off()
            .unwrap_or_else(|| self.departure.clone());
        match why {
            Departure::IdleTimeout => add(&daemon.stats.idle_kicks, 1),
            // Cut off by its own writer; those cut off by a sender are counted there.
            Departure::WriteTimeout { .. } => add(&daemon.stats.slow_consumer_kicks, 1),
            _ => {}
        }
        if daemon.is_stopping() {
            // The server's shutdown sequence flushes, notifies and closes every registered
            // peer itself, and lines other readers relay until it does must still reach this
            // one: it stays registered.
            daemon.per_address.remove(self.addr.ip());
        } else {
            // The `--max-clients` slot is free before the flush, so whoever pressed Ctrl-C
            // can reconnect at once.
            let left = daemon.registry.leave(self.peer.id());
            daemon.take_rename(self.peer.id());
            if let (Some(cluster), Some(left)) = (&daemon.cluster, &left)
                && left.room.is_some()
            {
                cluster.publish_leave(self.peer.id());
                match &left.user {
                    // Its last connection here: the name is the user's while it is on
                    // another node, whose heartbeat takes it again.
                    Some(sub) if daemon.registry.user_peers(sub).is_empty() => {
                        cluster.release_user(sub, &left.name);
                    }
                    Some(_) => {}
                    None if claimed(&left.name) => cluster.release(self.peer.id(), &left.name),
                    None => {}
                }
            }
            // A user's other connection still in the room: for the room, it has not left.
            if let (true, Some(left)) = (daemon.config.chat, left)
                && let (Some(members), Some(room)) = (left.members, left.room)
                && !left
                    .user
                    .as_deref()
                    .is_some_and(|sub| members.has_user(sub, self.peer.id()))
            {
                let online = daemon.online(&room, &members);
                let member = daemon.member_as(&left.name, left.user.as_deref(), left.role, &room);
                let notice = daemon.notices.left(member, &why, online, &room);
                daemon.notify(&room, &members, self.peer.id(), &notice);
            }
            // The flush still holds a socket and threads, so it counts against the address's
            // `--max-per-ip` until it ends (the count is free by the time the client sees its
            // connection close), and at most `--max-clients` leaving clients flush at once:
            // clients that connect, half-close and never read cannot pile up threads.
            let flushing = Flushing::start(&daemon.flushing);
            if flushing.before < daemon.config.max_clients {
                self.peer
                    .flush(Instant::now() + daemon.config.write_timeout);
            } else {
                debug!(
                    "client {}: {} clients already flushing, closing without flush",
                    self.peer.id(),
                    flushing.before
                );
            }
            drop(flushing);
            daemon.per_address.remove(self.addr.ip());
            self.peer.close(why.clone());
        }
        info!(
            "client {} {} disconnected: {why} ({} clients)",
            self.peer.id(),
            self.addr,
            daemon.registry.len()
        );
    }
}

/// A client's thread, counted in the daemon's running readers (which the shutdown waits for)
/// until this is dropped.
struct Reader(Arc<Daemon>);

impl Reader {
    fn count(daemon: &Arc<Daemon>) -> Reader {
        *lock(&daemon.readers) += 1;
        Reader(Arc::clone(daemon))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut readers = lock(&self.0.readers);
        *readers -= 1;
        self.0.readers_done.notify_all();
    }
}

/// A leaving client counted in the daemon's `flushing` while it flushes; dropping this gives
/// the count back, so a panic in the flush cannot leak it.
struct Flushing<'a> {
    count: &'a AtomicUsize,
    /// How many were flushing already when this one started.
    before: usize,
}

impl<'a> Flushing<'a> {
    fn start(count: &'a AtomicUsize) -> Flushing<'a> {
        let before = count.fetch_add(1, Ordering::Relaxed);
        Flushing { count, before }
    }
}

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}
