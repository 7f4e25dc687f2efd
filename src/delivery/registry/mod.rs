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
//! ([`Peer::enter_room`]); the caller sends it after releasing it. In a cluster (`--redis`) a
//! room's history is in the order of its Redis stream, with the stream's ids, and also holds
//! what Redis keeps of it, merged in when the first client here enters the room; the ids
//! keep that seam exact too (`stream.rs`, [`Inner::recent`]). A snapshot remembers each
//! member's stay in the room (its epoch), so a sender that waits for a full member before
//! handing it a line cannot hand it to one that left, or left and came back, meanwhile.
//!
//! Every line for a client from anyone else goes through [`Registry::offer_all`], with the
//! same patience and the same slow-consumer policy, whoever sends it: relayed lines
//! ([`Registry::deliver`]), notices to a room ([`Registry::notify`]), and lines for one client
//! (private messages, operator pushes: [`Registry::deliver_to`]). What a client causes for
//! itself (replies, notices about its own lines, pongs) takes a path of its own,
//! [`Registry::reply`], which only ever makes the client itself wait.
//!
//! A client is in the registry from admission (holding a `--max-clients` slot) to its leaving;
//! until it has authenticated it is in no room, so it neither hears nor is heard. A client
//! the daemon cuts off ([`Registry::expel`]) is taken out at once, so its slot is free and
//! nothing more it sent is delivered; what its room is told is kept for its own thread to
//! say, after the last line it relayed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::warn;

use crate::config::Config;
use crate::delivery::chunk::{Chunk, Format, Placed};
use crate::delivery::history::{Entry as HistoryEntry, History};
use crate::delivery::line_id::{LineId, now_ms};
use crate::delivery::notice::{Departure, Notices};
use crate::delivery::peer::{Offer, Peer, PeerId, Share, Wait};
use crate::policy::rooms::RoomRules;
use crate::policy::token::Role;
use crate::stats::{Stats, add};
use crate::sync::lock;

mod empty;
mod live;
mod presence;
mod recall;
mod recovery;
mod stream;
mod users;

use empty::Emptied;
use live::{Gated, LiveRoom, LiveRooms};
use recovery::Place;
use stream::{Order, remember_recent};

pub(crate) use presence::{Members, member};
pub(crate) use recall::Recalled;
pub(crate) use stream::{Echo, Origin};
pub(crate) use users::{Displaced, Identified, OtherUser, User};
use users::{add_name, remove_name};

/// The room everyone starts in (and the only one in raw mode).
pub(crate) const LOBBY: &str = "lobby";

/// How long a sender waits for one full member before it looks at the others again.
const WAIT_STEP: Duration = Duration::from_millis(5);

pub(crate) struct Registry {
    inner: Mutex<Inner>,
    max_clients: usize,
    /// `--history` and `--history-age`.
    history: (usize, Duration),
    stats: Arc<Stats>,
    /// In chat mode: how relayd's own lines are written (a live room's busy notice).
    notices: Option<Notices>,
    /// The same in any mode (a recovery's error).
    said: Notices,
    /// The moderators the operator made for rooms: part of who a room's members are, for
    /// JSON clients.
    rules: Arc<RoomRules>,
    /// Seeds being read from Redis now: only while there are any is [`Inner::recent`] kept,
    /// since only a seed asked for before a line arrived can need it.
    seeding: Arc<AtomicUsize>,
}

struct Inner {
    /// By id, so listings come out in connection order.
    clients: BTreeMap<PeerId, Entry>,
    /// Lower-cased name to its holders: names are unique case-insensitively, held by one
    /// guest or by every connection of one signed-in user.
    names: HashMap<String, Vec<PeerId>>,
    rooms: BTreeMap<String, Room>,
    /// Rooms nobody is in, kept for their history (see `empty.rs`).
    emptied: Emptied,
    /// Clients taken out by [`Registry::expel`] whose threads have not left yet: where they
    /// were, for the leave notice.
    expelled: HashMap<PeerId, Left>,
    /// In a cluster with `--history`, while a seed is read ([`Registry::seeding`]): the other
    /// nodes' latest lines for rooms nobody here is in, oldest first, so that a room's first member here gets those that reached this node
    /// after it read the room's history from Redis and before it entered (see
    /// [`stream::RECENT`]).
    recent: VecDeque<(String, HistoryEntry, Instant)>,
    live: LiveRooms,
}

struct Entry {
    peer: Arc<Peer>,
    name: String,
    /// Who its signed token says it is; `None` for a guest.
    user: Option<User>,
    /// `None` until the client has authenticated.
    room: Option<String>,
    addr: SocketAddr,
    since: Instant,
}

struct Room {
    /// Its name, shared with the lines placed in it.
    name: Arc<str>,
    members: Arc<Vec<Member>>,
    /// When this life of the room began (ms since the Unix epoch), and how many lines it
    /// has given ids: its lines' ids (see `line_id.rs`).
    life: u64,
    numbered: u64,
    history: History,
    /// In a cluster: whether the room's history in Redis has been merged into `history`.
    seeded: bool,
    /// In a cluster: where the room is in its Redis stream (see `stream.rs`).
    order: Order,
    /// Its delivery is live (see `live.rs`), not lossless: its state then.
    live: Option<LiveRoom>,
}

/// A member of a room, during one stay in it.
#[derive(Clone)]
struct Member {
    peer: Arc<Peer>,
    /// The peer's id, kept here so that finding the sender among 10,000 members reads this
    /// list alone, not each member's peer (a cache miss apiece, for every line).
    id: PeerId,
    /// Its user's `sub`: a user's connections in one room count as one.
    user: Option<Arc<str>>,
    epoch: u64,
    /// Joined before the room's history was merged from Redis (see `stream.rs`).
    before_seed: bool,
}

/// A room's history as Redis kept it, oldest first, and when Redis was asked for it.
pub(crate) struct Seed {
    pub(crate) entries: Vec<HistoryEntry>,
    /// Lines of it recalled meanwhile, to leave out.
    pub(crate) recalled: Vec<LineId>,
    pub(crate) asked: Instant,
    /// Taken before `asked`; held for its `Drop`.
    pub(crate) _reading: Seeding,
}

/// A seed being read ([`Registry::seeding`]).
pub(crate) struct Seeding(Arc<AtomicUsize>);

impl Drop for Seeding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One row of the operator's `clients` list.
pub(crate) struct ClientInfo {
    pub(crate) id: PeerId,
    pub(crate) addr: SocketAddr,
    pub(crate) name: String,
    /// `None`: not authenticated yet.
    pub(crate) room: Option<String>,
    /// Its user, if it presented a signed token.
    pub(crate) user: Option<User>,
    pub(crate) connected: Duration,
    pub(crate) peer: Arc<Peer>,
}

/// Where a client was when it left.
pub(crate) struct Left {
    pub(crate) name: String,
    /// Its user's `sub`, if it had one.
    pub(crate) user: Option<Arc<str>>,
    /// Its token's role, if it had one.
    pub(crate) role: Option<Role>,
    /// The room it left; `None` if it never entered one.
    pub(crate) room: Option<String>,
    /// Who is still in the room it left; `None` if it never entered one.
    pub(crate) members: Option<Members>,
}

impl Registry {
    pub(crate) fn new(config: &Config, stats: Arc<Stats>, rules: Arc<RoomRules>) -> Registry {
        Registry {
            inner: Mutex::new(Inner {
                clients: BTreeMap::new(),
                names: HashMap::new(),
                rooms: BTreeMap::new(),
                emptied: Emptied::default(),
                expelled: HashMap::new(),
                recent: VecDeque::new(),
                live: LiveRooms::new(config),
            }),
            max_clients: config.max_clients,
            history: (config.history, config.history_age),
            stats,
            notices: config.chat.then(|| Notices::new(config)),
            said: Notices::new(config),
            rules,
            seeding: Arc::default(),
        }
    }

    /// Marks a seed as being read, until the returned guard (kept in the [`Seed`]) drops.
    pub(crate) fn seeding(&self) -> Seeding {
        self.seeding.fetch_add(1, Ordering::SeqCst);
        Seeding(Arc::clone(&self.seeding))
    }

    /// Gives a client, named `name` (its guest name), one of the `--max-clients` slots, in
    /// no room yet. Returns the limit if every slot is taken.
    pub(crate) fn admit(
        &self,
        peer: Arc<Peer>,
        addr: SocketAddr,
        name: String,
    ) -> Result<(), usize> {
        let mut inner = lock(&self.inner);
        if inner.clients.len() >= self.max_clients {
            return Err(self.max_clients);
        }
        inner.clients.insert(
            peer.id(),
            Entry {
                name,
                user: None,
                peer,
                room: None,
                addr,
                since: Instant::now(),
            },
        );
        let total = inner.clients.len() as u64;
        self.stats.peak_clients.fetch_max(total, Ordering::Relaxed);
        Ok(())
    }

    /// Puts an admitted client into [`LOBBY`]. `greet(name, online)` returns the lines it gets
    /// first (welcome, motd); they and the lobby's history are queued for it before any live
    /// line. Returns the lobby's members, or `None` if the client is gone. The caller must
    /// call [`Peer::start_sending`] afterwards.
    pub(crate) fn enter(
        &self,
        id: PeerId,
        seed: Option<Seed>,
        since: Option<LineId>,
        greet: impl FnOnce(&str, usize) -> Vec<Chunk>,
    ) -> Option<Members> {
        let mut inner = lock(&self.inner);
        let entry = inner.clients.get_mut(&id)?;
        entry.room = Some(LOBBY.to_string());
        let (peer, name) = (Arc::clone(&entry.peer), entry.name.clone());
        let user = entry.user.as_ref().map(|u| Arc::clone(&u.sub));
        add_name(&mut inner.names, &name, id);
        let place = Place {
            room: LOBBY,
            seed,
            since,
        };
        Some(self.enter_room(&mut inner, &peer, &name, user, place, greet))
    }

    /// Moves a client to `room` (created on demand), queuing `greet`'s lines and the room's
    /// history for it as [`Registry::enter`] does. Returns the members of the old room and
    /// of the new one, or `None` if the client is gone or already there.
    pub(crate) fn change_room(
        &self,
        id: PeerId,
        room: &str,
        seed: Option<Seed>,
        since: Option<LineId>,
        greet: impl FnOnce(&str, usize) -> Vec<Chunk>,
    ) -> Option<(Members, Members)> {
        let mut inner = lock(&self.inner);
        let entry = inner.clients.get_mut(&id)?;
        let old = entry.room.replace(room.to_string())?;
        if old == room {
            return None;
        }
        let (peer, name) = (Arc::clone(&entry.peer), entry.name.clone());
        let user = entry.user.as_ref().map(|u| Arc::clone(&u.sub));
        let left = self.leave_room(&mut inner, &peer, &old);
        let place = Place { room, seed, since };
        let joined = self.enter_room(&mut inner, &peer, &name, user, place, greet);
        Some((left, joined))
    }

    /// Whether `room`'s history still lacks what Redis keeps of it: in a cluster with
    /// `--history`, the daemon reads that before the first client here enters the room, and
    /// hands it to [`Registry::enter`] or [`Registry::change_room`].
    pub(crate) fn needs_seed(&self, room: &str) -> bool {
        let keeps = self.history.0 > 0 || !self.history.1.is_zero();
        keeps && lock(&self.inner).rooms.get(room).is_none_or(|r| !r.seeded)
    }

    fn enter_room(
        &self,
        inner: &mut Inner,
        peer: &Arc<Peer>,
        name: &str,
        user: Option<Arc<str>>,
        Place { room, seed, since }: Place<'_>,
        greet: impl FnOnce(&str, usize) -> Vec<Chunk>,
    ) -> Members {
        let history = self.history;
        let Inner {
            rooms,
            emptied,
            recent,
            live,
            clients,
            ..
        } = inner;
        emptied.refill(room, rooms);
        let room_name = room;
        let room = rooms.entry(room.to_string()).or_insert_with(|| Room {
            name: Arc::from(room_name),
            members: Arc::new(Vec::new()),
            life: now_ms(),
            numbered: 0,
            history: History::new(history.0, history.1),
            seeded: false,
            order: Order::default(),
            live: live.for_room(room_name),
        });
        // What has aged out goes before anything is replayed or recovered.
        room.history.expire();
        if let Some(Seed {
            mut entries,
            asked,
            recalled,
            ..
        }) = seed.filter(|_| !room.seeded)
        {
            room.seeded = true;
            // What reached this node for the room since Redis was asked, before anyone here
            // was in it: either in `entries` already, or newer than all of them.
            for (_, entry, _) in recent
                .iter()
                .filter(|(r, _, at)| r == room_name && *at >= asked)
            {
                entries.push(entry.clone());
            }
            room.seed(entries);
            for id in recalled {
                room.history.recall(id);
            }
        }
        let online = {
            let before = Members {
                list: Arc::clone(&room.members),
            };
            let new = user
                .as_deref()
                .is_none_or(|sub| !before.has_user(sub, peer.id()));
            before.online() + usize::from(new)
        };
        let mut lines = greet(name, online);
        let joiner = Member {
            peer: Arc::clone(peer),
            id: peer.id(),
            user,
            epoch: 0,
            before_seed: false,
        };
        lines.extend(self.arrival(clients, room, &joiner, since));
        peer.set_live(room.live.as_ref().map(|l| &l.drops));
        let epoch = peer.enter_room(&lines);
        Arc::make_mut(&mut room.members).push(Member { epoch, ..joiner });
        Members {
            list: Arc::clone(&room.members),
        }
    }

    /// Removes `peer` from `room`'s members and returns those left. A room other than the
    /// lobby that its last member leaves is kept while its history is (`empty.rs`).
    fn leave_room(&self, inner: &mut Inner, peer: &Peer, room: &str) -> Members {
        peer.leave_room();
        peer.set_live(None);
        let Some(r) = inner.rooms.get_mut(room) else {
            return Members {
                list: Arc::new(Vec::new()),
            };
        };
        Arc::make_mut(&mut r.members).retain(|m| m.id != peer.id());
        let left = Members {
            list: Arc::clone(&r.members),
        };
        if r.members.is_empty() && room != LOBBY {
            inner.emptied.keep(room, &mut inner.rooms);
        }
        left
    }

    fn remove(&self, inner: &mut Inner, id: PeerId) -> Option<(Arc<Peer>, Left)> {
        let entry = inner.clients.remove(&id)?;
        remove_name(&mut inner.names, &entry.name, id);
        let members = entry
            .room
            .as_ref()
            .map(|room| self.leave_room(inner, &entry.peer, room));
        let left = Left {
            name: entry.name,
            role: entry.user.as_ref().map(|u| u.role),
            user: entry.user.map(|u| u.sub),
            room: entry.room,
            members,
        };
        Some((entry.peer, left))
    }

    /// Takes a client the daemon cut off out at once: its slot is free, and nothing more it
    /// sends is delivered. Its thread's [`Registry::leave`] then says where it was. Returns
    /// its peer, or `None` if it is gone already.
    pub(crate) fn expel(&self, id: PeerId) -> Option<Arc<Peer>> {
        let mut inner = lock(&self.inner);
        let (peer, left) = self.remove(&mut inner, id)?;
        inner.expelled.insert(id, left);
        Some(peer)
    }

    /// Removes a client for good, whether it is still here or was expelled. Returns where it
    /// was, or `None` if it has left already.
    pub(crate) fn leave(&self, id: PeerId) -> Option<Left> {
        let mut inner = lock(&self.inner);
        if let Some(left) = inner.expelled.remove(&id) {
            return Some(left);
        }
        self.remove(&mut inner, id).map(|(_, left)| left)
    }

    /// Client `id`: its name, peer and room (`None`: not authenticated yet).
    pub(crate) fn client(&self, id: PeerId) -> Option<(String, Arc<Peer>, Option<String>)> {
        let inner = lock(&self.inner);
        let entry = inner.clients.get(&id)?;
        Some((
            entry.name.clone(),
            Arc::clone(&entry.peer),
            entry.room.clone(),
        ))
    }

    /// The members of `room` now.
    pub(crate) fn members(&self, room: &str) -> Members {
        let list = match lock(&self.inner).rooms.get(room) {
            Some(r) => Arc::clone(&r.members),
            None => Arc::new(Vec::new()),
        };
        Members { list }
    }

    /// Names of the members of `room`, in order of arrival, each once (a user's
    /// connections share theirs).
    pub(crate) fn names_in(&self, room: &str) -> Vec<String> {
        let inner = lock(&self.inner);
        let Some(r) = inner.rooms.get(room) else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        r.members
            .iter()
            .filter_map(|m| inner.clients.get(&m.id).map(|c| c.name.clone()))
            .filter(|name| seen.insert(name.to_lowercase()))
            .collect()
    }

    /// Every line `room`'s history keeps here, oldest first (none for a room that went
    /// with its last member).
    pub(crate) fn history(&self, room: &str) -> Vec<Chunk> {
        lock(&self.inner)
            .rooms
            .get_mut(room)
            .map(|r| r.history.kept())
            .unwrap_or_default()
    }

    /// Rooms with members, with their member counts, by name.
    pub(crate) fn rooms(&self) -> Vec<(String, usize)> {
        lock(&self.inner)
            .rooms
            .iter()
            .filter(|(_, r)| !r.members.is_empty())
            .map(|(name, r)| {
                let members = Members {
                    list: Arc::clone(&r.members),
                };
                (name.clone(), members.online())
            })
            .collect()
    }

    pub(crate) fn clients(&self) -> Vec<ClientInfo> {
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
                user: c.user.clone(),
                connected: now.saturating_duration_since(c.since),
                peer: Arc::clone(&c.peer),
            })
            .collect()
    }

    /// Clients holding a slot, authenticated or not.
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).clients.len()
    }

    /// Every client holding a slot: `joined` only those in a room, else all.
    pub(crate) fn peers(&self, which: Which) -> Vec<Arc<Peer>> {
        let inner = lock(&self.inner);
        inner
            .clients
            .values()
            .filter(|c| which == Which::All || c.room.is_some())
            .map(|c| Arc::clone(&c.peer))
            .collect()
    }

    /// Delivers `chunk`, which holds `lines` relayed lines, to every member of `room` except
    /// `from` (`None`: another node's client), gives them their ids and remembers them in
    /// the room's history; in a cluster, when and to whom as their `origin` says (see
    /// `stream.rs`). Nothing is delivered for a sender that is no longer registered (kicked
    /// or cut off), and no line from the stream is delivered to anyone twice.
    ///
    /// Peers with room take it at once. If some are full, the caller waits for all of them
    /// together, against one deadline `--stall-timeout` from now, so N stuck peers cost one
    /// stall, not N. While it waits its own thread reads nothing more, which is how TCP
    /// backpressure reaches a sender that outruns its slowest reader. Peers still full at the
    /// deadline are cut off as slow consumers.
    ///
    /// In a live room nobody waits and nobody is cut off: each viewer is handed what its
    /// limits let through (see `peer/live.rs`), and lines from the `operator` or from a
    /// moderator (a token's role `mod`) all of it.
    ///
    /// Returns whether the sender was still registered.
    pub(crate) fn deliver(
        &self,
        room: &str,
        from: Option<PeerId>,
        operator: bool,
        chunk: &Chunk,
        lines: usize,
        origin: Origin,
    ) -> bool {
        let (members, kept, shown) = {
            let mut inner = lock(&self.inner);
            // The sender's role, and whether it is among the members handed the line (in its
            // room, and for a line of this node's not yet back from Redis, not a JSON client:
            // see `Room::sent`), so that nobody counts it by walking the members.
            let (sender, listed) = match from {
                Some(id) => match inner.clients.get(&id) {
                    Some(entry) => (
                        entry.user.as_ref().map(|u| u.role),
                        entry.room.as_deref() == Some(room)
                            && !(matches!(origin, Origin::Sent(_))
                                && entry.peer.format() == Format::Json),
                    ),
                    None => return false,
                },
                None => (None, false),
            };
            let kept = operator || sender == Some(Role::Mod);
            let Some(r) = inner.rooms.get_mut(room) else {
                if let (Origin::Stream { id, echo: None }, true) =
                    (origin, self.seeding.load(Ordering::SeqCst) > 0)
                {
                    remember_recent(&mut inner.recent, room, chunk, lines, id);
                }
                return true;
            };
            let members = match origin {
                Origin::Here => {
                    chunk.place(Placed {
                        room: Arc::clone(&r.name),
                        first: LineId::new(r.life, r.numbered + 1),
                        numbered: true,
                    });
                    r.numbered += lines as u64;
                    r.history.push(chunk, lines, None);
                    Arc::clone(&r.members)
                }
                Origin::Sent(seq) => r.sent(seq),
                Origin::Stream { id, echo } => r.stamped(chunk, lines, id, echo),
            };
            let gated = match r.live.as_mut() {
                Some(live) if !kept => {
                    Some(self.gate(room, live, members.len(), listed, chunk, lines))
                }
                _ => None,
            };
            (members, kept && r.live.is_some(), gated)
        };
        match shown {
            Some(Gated { shown, busy, first }) => {
                if let Some(busy) = busy {
                    self.offer_all(&members, None, &busy, 0);
                }
                if let Some(shown) = shown {
                    let n = shown.relayed_lines().map_or(0, |(_, n)| n);
                    self.offer(&members, first, from, &shown, n, Epochs::Check);
                }
            }
            None if kept => self.offer_all(&members, from, &chunk.kept(), lines as u64),
            None => self.offer_all(&members, from, chunk, lines as u64),
        }
        true
    }

    /// Delivers a notice from the daemon (someone joined, left, was renamed) to `members`
    /// except `about`. Unlike [`Registry::deliver`] it is not kept in the history.
    pub(crate) fn notify(&self, members: &Members, about: Option<PeerId>, chunk: &Chunk) {
        self.offer_all(&members.list, about, chunk, 0);
    }

    /// Delivers `chunk` (`lines` relayed lines) to `peers`, whatever room they are in, with
    /// the same patience as [`Registry::deliver`].
    pub(crate) fn deliver_to(&self, peers: &[Arc<Peer>], chunk: &Chunk, lines: usize) {
        let members: Vec<Member> = peers
            .iter()
            .map(|peer| Member {
                peer: Arc::clone(peer),
                id: peer.id(),
                user: None,
                epoch: 0,
                before_seed: false,
            })
            .collect();
        self.offer(&members, 0, None, chunk, lines as u64, Epochs::Ignore);
    }

    fn offer_all(&self, members: &[Member], from: Option<PeerId>, chunk: &Chunk, lines: u64) {
        self.offer(members, 0, from, chunk, lines, Epochs::Check);
    }

    /// Offers `chunk`, holding `lines` relayed lines, to `members` except `from` (see
    /// [`Registry::deliver`]), starting with the one at `first` (a live room's viewers
    /// take turns at being first). Counted before it is sent, so that a reader who has it
    /// can rely on the counters.
    fn offer(
        &self,
        members: &[Member],
        first: usize,
        from: Option<PeerId>,
        chunk: &Chunk,
        lines: u64,
        epochs: Epochs,
    ) {
        let to = members.len() - usize::from(members.iter().any(|m| Some(m.id) == from));
        add(&self.stats.lines_out, lines * to as u64);
        add(&self.stats.bytes_out, (chunk.len() * to) as u64);
        let epoch = |m: &Member| (epochs == Epochs::Check).then_some(m.epoch);
        let mut full = Vec::new();
        let mut sender = None;
        // One clock reading for every member: a live viewer's queue is checked for stale
        // lines at each offer, and reading the clock per viewer was a tenth of the fanout.
        let now = Instant::now();
        let first = first.min(members.len());
        for m in members[first..].iter().chain(&members[..first]) {
            if Some(m.id) == from {
                sender = Some(&*m.peer);
                continue;
            }
            if lines > 0 {
                m.peer.count_out(lines);
            }
            if m.peer.offer(chunk, None, epoch(m), None, now) == Offer::Full {
                full.push(m);
            }
        }
        // The full ones are waited for together, not one after another: a stuck member, who
        // may hold the sender for up to --stall-timeout, must not hold up a line for another
        // member that is only briefly full. So each wait is short, in turn, and a member that
        // has room meanwhile gets the chunk on the next round.
        let since = Instant::now();
        let mut turn = 0;
        while !full.is_empty() {
            let i = turn % full.len();
            let m = full[i];
            let wait = Wait {
                since,
                until: Instant::now() + WAIT_STEP,
            };
            match m
                .peer
                .offer(chunk, Some(wait), epoch(m), sender, Instant::now())
            {
                Offer::Taken => {
                    full.remove(i);
                }
                Offer::Stuck => {
                    self.cut_off_slow(&m.peer);
                    full.remove(i);
                }
                Offer::Full => turn += 1,
            }
        }
    }

    /// Cuts off a peer that stayed full for `--stall-timeout`.
    fn cut_off_slow(&self, peer: &Arc<Peer>) {
        let pending = peer.pending();
        if peer.close(Departure::TooSlow { pending }) {
            add(&self.stats.slow_consumer_kicks, 1);
            warn!(
                "client {}: slow consumer, {pending} bytes pending: disconnected",
                peer.id()
            );
            self.expel(peer.id());
        }
    }

    /// Queues `chunk`, which `peer` caused for itself, for it alone (see [`Peer::reply`]), on
    /// its own thread: it is cut off as too slow if the chunk does not fit its share in time.
    /// Nobody else waits for it.
    pub(crate) fn reply(&self, peer: &Arc<Peer>, chunk: &Chunk) {
        add(&self.stats.bytes_out, chunk.len() as u64);
        if !peer.reply(chunk) {
            self.cut_off_slow(peer);
        }
    }

    /// Waits, up to `--stall-timeout`, for a peer's queue to be within `share` and cuts it off
    /// as too slow if it is not. Called on the peer's own thread, before the daemon queues
    /// lines for it on its own account ([`Share::Own`]: a room's welcome on `/join`) and after
    /// ([`Share::All`]: the welcome and history replay it just queued): a client that never
    /// reads pays for its own commands with its connection, not with the daemon's memory or
    /// its room's time.
    pub(crate) fn settle(&self, peer: &Arc<Peer>, share: Share) {
        if !peer.wait_room(share) {
            self.cut_off_slow(peer);
        }
    }
}

/// Whether `s` reads as a client id (all digits), which a name never does.
pub(crate) fn is_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Which clients [`Registry::peers`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// Those that have authenticated and are in a room.
    Joined,
    /// Everyone holding a slot.
    All,
}

/// Whether an offer is for a room stay, and so dropped for members who left it meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Epochs {
    Check,
    Ignore,
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpStream;

    use super::*;
    use crate::delivery::peer::tests::{connection, numbered_peer};

    fn line(seq: u64, text: &str) -> HistoryEntry {
        HistoryEntry {
            chunk: Chunk::from(text.as_bytes()),
            lines: 1,
            id: Some(LineId::new(17, seq)),
        }
    }

    /// Another node's line, arriving through the subscriber.
    fn arrive(registry: &Registry, room: &str, entry: &HistoryEntry) {
        let origin = Origin::Stream {
            id: entry.id.unwrap(),
            echo: None,
        };
        registry.deliver(room, None, false, &entry.chunk, 1, origin);
    }

    /// A client in the lobby, and the socket it reads.
    fn client(registry: &Registry, id: PeerId, config: &Config) -> (Arc<Peer>, TcpStream) {
        let (server, client) = connection();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let peer = numbered_peer(id, server, config);
        let addr = client.local_addr().unwrap();
        registry
            .admit(Arc::clone(&peer), addr, format!("guest{id}"))
            .unwrap();
        registry.enter(id, None, None, |_, _| Vec::new());
        (peer, client)
    }

    /// A registry whose rooms keep 10 lines, and its config.
    fn keeping_ten() -> (Config, Registry) {
        let config = Config {
            history: 10,
            ..Config::default()
        };
        let registry = Registry::new(&config, Arc::default(), Arc::default());
        (config, registry)
    }

    fn read_exactly(sock: &mut TcpStream, n: usize) -> String {
        let mut buf = vec![0; n];
        sock.read_exact(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// Every relayed line gets the next id of its room, kept with it in the history, and a
    /// replay that starts within a chunk starts with the id of its first line.
    #[test]
    fn lines_are_numbered_in_their_room_and_replayed_with_their_ids() {
        // No recovery: the history keeps the 3 lines it replays.
        let config = Config {
            history: 3,
            history_age: Duration::ZERO,
            ..Config::default()
        };
        let registry = Registry::new(&config, Arc::new(Stats::default()), Arc::default());
        let (_a, _sock) = client(&registry, 1, &config);
        let two = Chunk::relayed(b"a\nb\n", 2);
        let one = Chunk::relayed(b"c\n", 1);
        let more = Chunk::relayed(b"d\n", 1);
        for (chunk, n) in [(&two, 2), (&one, 1), (&more, 1)] {
            assert!(registry.deliver(LOBBY, Some(1), false, chunk, n, Origin::Here));
        }
        let first = two.placed().unwrap().first;
        assert_eq!(first.b, 1);
        assert_eq!(&*two.placed().unwrap().room, LOBBY);
        assert_eq!(one.placed().unwrap().first, first.nth(2, true));
        assert_eq!(more.placed().unwrap().first, first.nth(3, true));
        // History 3: b, c, d; the replay of the first chunk starts at b, with b's id.
        let replay = registry.history(LOBBY);
        assert_eq!(&replay[0][..], b"b\n");
        assert_eq!(replay[0].placed().unwrap().first, first.nth(1, true));
        assert_eq!(replay[2].placed().unwrap().first, first.nth(3, true));
    }

    /// A room its last member left keeps its history and its numbering while it has lines,
    /// and at most [`empty::EMPTY_ROOMS`] such rooms are kept, the longest empty going first.
    #[test]
    fn empty_rooms_are_kept_for_their_history_up_to_a_bound() {
        let config = Config {
            history: 2,
            ..Config::default()
        };
        let registry = Registry::new(&config, Arc::new(Stats::default()), Arc::default());
        let (_peer, _sock) = client(&registry, 1, &config);
        let say = |room: &str| {
            let chunk = Chunk::relayed(b"x\n", 1);
            assert!(registry.deliver(room, Some(1), false, &chunk, 1, Origin::Here));
            chunk.placed().unwrap().first
        };
        let mut first = Vec::new();
        for i in 0..=empty::EMPTY_ROOMS {
            let room = format!("r{i}");
            registry.change_room(1, &room, None, None, |_, _| Vec::new());
            first.push(say(&room));
        }
        assert_eq!(lock(&registry.inner).emptied.len(), empty::EMPTY_ROOMS);
        assert_eq!(registry.history("r0").len(), 1);
        registry.change_room(1, LOBBY, None, None, |_, _| Vec::new());
        assert_eq!(lock(&registry.inner).emptied.len(), empty::EMPTY_ROOMS);
        assert!(registry.history("r0").is_empty(), "the longest empty went");
        assert_eq!(registry.history("r1").len(), 1);
        // Back in r1: the same life of the room, its numbering going on.
        registry.change_room(1, "r1", None, None, |_, _| Vec::new());
        assert_eq!(say("r1"), first[1].nth(1, true));
        assert_eq!(lock(&registry.inner).emptied.len(), empty::EMPTY_ROOMS - 1);
        // A room without lines is not kept.
        registry.change_room(1, "quiet", None, None, |_, _| Vec::new());
        registry.change_room(1, LOBBY, None, None, |_, _| Vec::new());
        assert!(!lock(&registry.inner).rooms.contains_key("quiet"));
    }

    /// The seams of a room's history across the cluster: what Redis had, what reached this
    /// node while nobody here was in the room, and what arrives late through pub/sub. Each
    /// line reaches the joiner once, in order.
    #[test]
    fn a_seeded_room_replays_each_line_once() {
        let (config, registry) = keeping_ten();
        let (peer, mut sock) = client(&registry, 1, &config);
        let (a, b, c, d) = (
            line(1, "a\n"),
            line(2, "b\n"),
            line(3, "c\n"),
            line(4, "d\n"),
        );
        // Another joiner's seed is being read already, so lines for the room are kept.
        let earlier = registry.seeding();
        // Before Redis was asked: too old for its answer (past --history there), so not
        // replayed after what it has.
        arrive(&registry, "games", &line(0, "z\n"));
        arrive(&registry, "games", &a); // before Redis was asked: in its answer
        let reading = registry.seeding();
        let asked = Instant::now();
        drop(earlier);
        arrive(&registry, "games", &b); // in Redis's answer too, and arrived after the ask
        arrive(&registry, "games", &c); // after Redis answered, before the joiner entered
        let seed = Seed {
            recalled: Vec::new(),
            entries: vec![a.clone(), b.clone()],
            asked,
            _reading: reading,
        };
        registry.change_room(1, "games", Some(seed), None, |_, _| Vec::new());
        peer.start_sending();
        arrive(&registry, "games", &b); // pub/sub later than Redis's answer: not again
        arrive(&registry, "games", &d);
        assert_eq!(read_exactly(&mut sock, 8), "a\nb\nc\nd\n");
        assert!(!registry.needs_seed("games"));
    }

    /// A room that was entered while Redis could not be read (not seeded) and is seeded by a
    /// later joiner: a line merged from Redis that arrives live afterwards reaches only the
    /// member who was there before, since the joiner had it replayed.
    #[test]
    fn a_line_merged_from_redis_arriving_late_goes_only_to_earlier_members() {
        let (config, registry) = keeping_ten();
        let (first, mut first_sock) = client(&registry, 1, &config);
        let (second, mut second_sock) = client(&registry, 2, &config);
        registry.change_room(1, "games", None, None, |_, _| Vec::new());
        first.start_sending();
        assert!(registry.needs_seed("games"));
        let (a, b) = (line(1, "a\n"), line(2, "b\n"));
        let seed = Seed {
            recalled: Vec::new(),
            entries: vec![a.clone()],
            asked: Instant::now(),
            _reading: registry.seeding(),
        };
        registry.change_room(2, "games", Some(seed), None, |_, _| Vec::new());
        second.start_sending();
        arrive(&registry, "games", &a);
        arrive(&registry, "games", &b);
        assert_eq!(read_exactly(&mut first_sock, 4), "a\nb\n");
        assert_eq!(read_exactly(&mut second_sock, 4), "a\nb\n");
        // Nothing more for either: the next line is the next thing each reads.
        arrive(&registry, "games", &line(3, "c\n"));
        assert_eq!(read_exactly(&mut first_sock, 2), "c\n");
        assert_eq!(read_exactly(&mut second_sock, 2), "c\n");
    }

    /// In a cluster, a line from a client here goes at once to the members here who were
    /// there, and, when Redis hands it back with its id, to whoever entered meanwhile; it
    /// enters the history then, with its stream id, in the stream's order.
    #[test]
    fn a_line_sent_here_reaches_who_came_before_its_id_came_back_once() {
        let (config, registry) = keeping_ten();
        let (sender, mut sender_sock) = client(&registry, 1, &config);
        let (early, mut early_sock) = client(&registry, 2, &config);
        for peer in [&sender, &early] {
            peer.start_sending();
        }
        let sent = Chunk::relayed(b"a\n", 1);
        assert!(registry.deliver(LOBBY, Some(1), false, &sent, 1, Origin::Sent(7)));
        assert!(
            registry.history(LOBBY).is_empty(),
            "kept before its id came"
        );
        let (late, mut late_sock) = client(&registry, 3, &config);
        late.start_sending();
        let back = line(5, "a\n");
        let echo = Echo {
            seq: 7,
            from: Some(1),
        };
        let origin = Origin::Stream {
            id: back.id.unwrap(),
            echo: Some(echo),
        };
        registry.deliver(LOBBY, None, false, &back.chunk, 1, origin);
        arrive(&registry, LOBBY, &line(6, "b\n"));
        assert_eq!(read_exactly(&mut early_sock, 4), "a\nb\n");
        assert_eq!(read_exactly(&mut late_sock, 4), "a\nb\n");
        assert_eq!(read_exactly(&mut sender_sock, 2), "b\n");
        let replay = registry.history(LOBBY);
        let ids: Vec<String> = replay
            .iter()
            .map(|c| c.placed().unwrap().first.to_string())
            .collect();
        assert_eq!(ids, ["17-5", "17-6"]);
    }
}
