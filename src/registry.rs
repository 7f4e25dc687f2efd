//! The registry of connected clients, their names and rooms, and delivery to them.
//!
//! Each room's member list is kept as a shared, copy-on-write snapshot: a sender clones one
//! `Arc` under the lock and does all its socket work after releasing it, so the lock is held
//! for microseconds and never across I/O. Joins, leaves, renames and room changes (rare next
//! to lines) pay for the copy.
//!
//! The same lock orders delivery against joining a room: [`Registry::deliver`] picks the
//! recipients and appends to the room's history in one critical section, and a joiner takes
//! the history snapshot and becomes a member in one critical section, so every line reaches a
//! joiner exactly once, either replayed or live. The replay is only *queued* under the lock
//! ([`Outbound::queue_quietly`]); the caller sends it after releasing it.
//!
//! [`Registry::deliver`] is the single way a chunk of relayed lines reaches local peers; a
//! future remote feed (another node's lines arriving over pub/sub) calls it with `from: None`.
//! Raw mode has one room, [`LOBBY`], so it pays for rooms with one map lookup per read.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::warn;

use crate::config::Config;
use crate::history::History;
use crate::outbound::{Chunk, Offer, Outbound, PeerId};
use crate::stats::{Stats, add};
use crate::sync::lock;

pub type Peers = Arc<Vec<Arc<Outbound>>>;

/// The room everyone starts in (and the only one in raw mode).
pub const LOBBY: &str = "lobby";

pub struct Registry {
    inner: Mutex<Inner>,
    max_clients: usize,
    stall_timeout: Duration,
    history: usize,
    /// Line end of the daemon's own notices (`--crlf`).
    eol: &'static str,
    stats: Arc<Stats>,
}

struct Inner {
    /// By id, so listings come out in connection order.
    clients: BTreeMap<PeerId, Client>,
    /// Lower-cased name to id: names are unique case-insensitively.
    names: HashMap<String, PeerId>,
    rooms: BTreeMap<String, Room>,
}

struct Client {
    peer: Arc<Outbound>,
    name: String,
    room: String,
    addr: SocketAddr,
    since: Instant,
}

struct Room {
    members: Peers,
    history: History,
}

/// One row of the operator's `clients` list.
pub struct ClientInfo {
    pub id: PeerId,
    pub addr: SocketAddr,
    pub name: String,
    pub room: String,
    pub connected: Duration,
    pub peer: Arc<Outbound>,
}

/// A room's members just after someone entered or left it: who is told about it. Taken in
/// the same critical section as the change, so the notice reaches exactly those who were
/// there, and none who arrive later.
pub struct Members {
    pub room: String,
    pub peers: Peers,
}

impl Members {
    /// How many are in the room.
    pub fn online(&self) -> usize {
        self.peers.len()
    }
}

/// What [`Registry::leave`] removed.
pub struct Left {
    pub name: String,
    /// Who is still in the room it left.
    pub members: Members,
}

/// Why a rename was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RenameError {
    Taken,
    Gone,
}

impl Registry {
    pub fn new(config: &Config, stats: Arc<Stats>) -> Registry {
        Registry {
            inner: Mutex::new(Inner {
                clients: BTreeMap::new(),
                names: HashMap::new(),
                rooms: BTreeMap::new(),
            }),
            max_clients: config.max_clients,
            stall_timeout: config.stall_timeout,
            history: config.history,
            eol: config.eol(),
            stats,
        }
    }

    /// Adds a client named `guest<ID>` to [`LOBBY`] unless `--max-clients` are already
    /// connected. `greet(name, members)` returns the lines it gets first (welcome, motd);
    /// they and the lobby's history are queued for it before any live line. Returns the
    /// lobby's members, or the limit when full. The caller must call
    /// [`Outbound::start_sending`] afterwards.
    pub fn join(
        &self,
        peer: Arc<Outbound>,
        addr: SocketAddr,
        greet: impl FnOnce(&str, usize) -> Vec<Chunk>,
    ) -> Result<Members, usize> {
        let mut inner = lock(&self.inner);
        if inner.clients.len() >= self.max_clients {
            return Err(self.max_clients);
        }
        let id = peer.id();
        let name = format!("guest{id}");
        inner.names.insert(name.to_lowercase(), id);
        inner.clients.insert(
            id,
            Client {
                peer: Arc::clone(&peer),
                name: name.clone(),
                room: LOBBY.to_string(),
                addr,
                since: Instant::now(),
            },
        );
        let total = inner.clients.len() as u64;
        self.stats
            .peak_clients
            .fetch_max(total, std::sync::atomic::Ordering::Relaxed);
        Ok(self.enter_room(&mut inner, &peer, &name, LOBBY, greet))
    }

    /// Moves a client to `room` (created on demand), queuing `greet`'s lines and the room's
    /// history for it as [`Registry::join`] does. Returns the members of the old room and
    /// of the new one, or `None` if the client is gone or already there.
    pub fn change_room(
        &self,
        id: PeerId,
        room: &str,
        greet: impl FnOnce(&str, usize) -> Vec<Chunk>,
    ) -> Option<(Members, Members)> {
        let mut inner = lock(&self.inner);
        let client = inner.clients.get_mut(&id)?;
        if client.room == room {
            return None;
        }
        let old = std::mem::replace(&mut client.room, room.to_string());
        let (peer, name) = (Arc::clone(&client.peer), client.name.clone());
        let left = self.leave_room(&mut inner, id, &old);
        let joined = self.enter_room(&mut inner, &peer, &name, room, greet);
        Some((left, joined))
    }

    fn enter_room(
        &self,
        inner: &mut Inner,
        peer: &Arc<Outbound>,
        name: &str,
        room: &str,
        greet: impl FnOnce(&str, usize) -> Vec<Chunk>,
    ) -> Members {
        let history = self.history;
        let name_of_room = room;
        let room = inner.rooms.entry(room.to_string()).or_insert_with(|| Room {
            members: Arc::new(Vec::new()),
            history: History::new(history),
        });
        Arc::make_mut(&mut room.members).push(Arc::clone(peer));
        let mut lines = greet(name, room.members.len());
        lines.extend(room.history.replay());
        peer.queue_quietly(&lines);
        Members {
            room: name_of_room.to_string(),
            peers: Arc::clone(&room.members),
        }
    }

    /// Removes `id` from `room`'s members and returns those left. Rooms other than the lobby
    /// go away when their last member leaves, so that rooms cannot pile up.
    fn leave_room(&self, inner: &mut Inner, id: PeerId, room: &str) -> Members {
        let mut left = Members {
            room: room.to_string(),
            peers: Arc::new(Vec::new()),
        };
        let Some(r) = inner.rooms.get_mut(room) else {
            return left;
        };
        Arc::make_mut(&mut r.members).retain(|p| p.id() != id);
        left.peers = Arc::clone(&r.members);
        if r.members.is_empty() && room != LOBBY {
            inner.rooms.remove(room);
        }
        left
    }

    /// Removes a client (if present).
    pub fn leave(&self, id: PeerId) -> Option<Left> {
        let mut inner = lock(&self.inner);
        let client = inner.clients.remove(&id)?;
        inner.names.remove(&client.name.to_lowercase());
        let members = self.leave_room(&mut inner, id, &client.room);
        Some(Left {
            name: client.name,
            members,
        })
    }

    /// Renames a client; `Ok` holds the old name.
    pub fn rename(&self, id: PeerId, new: &str) -> Result<String, RenameError> {
        let mut inner = lock(&self.inner);
        let key = new.to_lowercase();
        if inner.names.get(&key).is_some_and(|&owner| owner != id) {
            return Err(RenameError::Taken);
        }
        let client = inner.clients.get_mut(&id).ok_or(RenameError::Gone)?;
        let old = std::mem::replace(&mut client.name, new.to_string());
        inner.names.remove(&old.to_lowercase());
        inner.names.insert(key, id);
        Ok(old)
    }

    /// The client with this id, or else this name (case-insensitively): its name and peer.
    pub fn find(&self, id_or_name: &str) -> Option<(String, Arc<Outbound>)> {
        let inner = lock(&self.inner);
        let id = id_or_name
            .parse::<PeerId>()
            .ok()
            .filter(|id| inner.clients.contains_key(id))
            .or_else(|| inner.names.get(&id_or_name.to_lowercase()).copied())?;
        let client = inner.clients.get(&id)?;
        Some((client.name.clone(), Arc::clone(&client.peer)))
    }

    /// The client with this name (case-insensitively): its name and peer.
    pub fn find_name(&self, name: &str) -> Option<(String, Arc<Outbound>)> {
        let inner = lock(&self.inner);
        let id = inner.names.get(&name.to_lowercase())?;
        let client = inner.clients.get(id)?;
        Some((client.name.clone(), Arc::clone(&client.peer)))
    }

    /// The members of `room` now.
    pub fn members(&self, room: &str) -> Members {
        let peers = match lock(&self.inner).rooms.get(room) {
            Some(r) => Arc::clone(&r.members),
            None => Arc::new(Vec::new()),
        };
        Members {
            room: room.to_string(),
            peers,
        }
    }

    /// Names of the members of `room`, in order of arrival.
    pub fn names_in(&self, room: &str) -> Vec<String> {
        let inner = lock(&self.inner);
        let Some(r) = inner.rooms.get(room) else {
            return Vec::new();
        };
        r.members
            .iter()
            .filter_map(|p| inner.clients.get(&p.id()).map(|c| c.name.clone()))
            .collect()
    }

    /// Rooms with members, with their member counts, by name.
    pub fn rooms(&self) -> Vec<(String, usize)> {
        lock(&self.inner)
            .rooms
            .iter()
            .filter(|(_, r)| !r.members.is_empty())
            .map(|(name, r)| (name.clone(), r.members.len()))
            .collect()
    }

    pub fn clients(&self) -> Vec<ClientInfo> {
        let inner = lock(&self.inner);
        let now = Instant::now();
        inner
            .clients
            .iter()
            .map(|(&id, c)| ClientInfo {
                id,
                addr: c.addr,
                name: c.name.clone(),
                room: c.room.clone(),
                connected: now.saturating_duration_since(c.since),
                peer: Arc::clone(&c.peer),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every connected peer.
    pub fn peers(&self) -> Vec<Arc<Outbound>> {
        let inner = lock(&self.inner);
        inner
            .clients
            .values()
            .map(|c| Arc::clone(&c.peer))
            .collect()
    }

    /// Delivers `chunk`, which holds `lines` relayed lines, to every member of `room` except
    /// `from`, and remembers it in the room's history.
    ///
    /// Peers with room take it at once. If some are full, the caller waits for all of them
    /// together, against one deadline `--stall-timeout` from now, so N stuck peers cost one
    /// stall, not N. While it waits its own thread reads nothing more, which is how TCP
    /// backpressure reaches a sender that outruns its slowest reader. Peers still full at the
    /// deadline are cut off as slow consumers.
    pub fn deliver(&self, room: &str, from: Option<PeerId>, chunk: &Chunk, lines: usize) {
        let members = {
            let mut inner = lock(&self.inner);
            let Some(r) = inner.rooms.get_mut(room) else {
                return;
            };
            r.history.push(chunk, lines);
            Arc::clone(&r.members)
        };
        self.offer_all(&members, from, chunk, lines as u64);
    }

    /// Delivers a notice from the daemon (someone joined, left, was renamed) to `members`
    /// except `from`. Unlike [`Registry::deliver`] it is not kept in the history.
    pub fn notify(&self, members: &Members, from: Option<PeerId>, chunk: &Chunk) {
        self.offer_all(&members.peers, from, chunk, 0);
    }

    /// Delivers `chunk` (`lines` relayed lines) to one peer, with the same patience as
    /// [`Registry::deliver`].
    pub fn deliver_to(&self, peer: &Arc<Outbound>, chunk: &Chunk, lines: usize) {
        self.offer_all(std::slice::from_ref(peer), None, chunk, lines as u64);
    }

    /// Offers `chunk`, holding `lines` relayed lines, to `peers` except `from` (see
    /// [`Registry::deliver`]). Counted before it is sent, so that a reader who has it can
    /// rely on the counters.
    fn offer_all(&self, peers: &[Arc<Outbound>], from: Option<PeerId>, chunk: &Chunk, lines: u64) {
        let to = (peers.len() - usize::from(peers.iter().any(|p| Some(p.id()) == from))) as u64;
        add(&self.stats.lines_out, lines * to);
        add(&self.stats.bytes_out, chunk.len() as u64 * to);
        let mut full = Vec::new();
        for peer in peers {
            if Some(peer.id()) == from {
                continue;
            }
            if lines > 0 {
                peer.count_out(lines);
            }
            if peer.offer_until(chunk, None) == Offer::Full {
                full.push(peer);
            }
        }
        if full.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.stall_timeout;
        for peer in full {
            if peer.offer_until(chunk, Some(deadline)) == Offer::Full {
                let pending = peer.pending();
                let eol = self.eol;
                let notice =
                    format!("relayd: disconnected: too slow ({pending} bytes pending){eol}");
                let reason = format!("too slow ({pending} bytes pending)");
                if peer.close(&reason, Some(notice.as_bytes())) {
                    add(&self.stats.slow_consumer_kicks, 1);
                    warn!(
                        "client {}: slow consumer, {pending} bytes pending: disconnected",
                        peer.id()
                    );
                }
            }
        }
    }
}
