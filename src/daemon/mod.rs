//! The daemon's state, shared by every thread behind one cheap handle (`Arc<Daemon>`): the
//! configuration, the registry, the counters, the admission limits and the shutdown flag.
//!
//! Its fields are private. Clients, the operator's socket and the console reach it through
//! what they mean to do — admit a client, relay a line, reply, broadcast, kick — so each rule
//! (who may connect, who hears what, what a push looks like) lives in one place.
//!
//! A client's hold on the daemon is a [`Slot`]: taken at admission, released by its `Drop`,
//! however the client's thread ends (return, early return, panic), so no path can leak a
//! `--max-clients` slot, a `--max-per-ip` count or the shutdown's count of running readers.
//!
//! Here: the state, admission, and what a client's thread asks for (relay, notices, rooms,
//! names, private messages). [`slot`]: a client's `Slot` and what its `Drop` gives back;
//! [`operator`]: the operator's commands (clients, stats, send, broadcast, kick), on any node;
//! [`remote`]: what the other nodes of the cluster tell this one; [`users`]: signed-in users
//! (a client taking on its token's name, and every connection of one user); [`moderation`]:
//! bans and mutes, and the checks that enforce them; [`rooms`]: a room's moderators, its bans,
//! mutes and slow mode; [`live`]: a room's delivery policy, as the operator sets it.

mod live;
mod moderation;
mod operator;
mod recall;
mod remote;
mod rooms;
mod slot;
mod turns;
mod users;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::Instant;

use log::{info, warn};

use crate::cluster::presence::{Presence, Present};
use crate::cluster::{ClaimError, Cluster, Direct};
use crate::config::Config;
use crate::delivery::chunk::{Chunk, Format};
use crate::delivery::deliverer::Deliverer;
use crate::delivery::echo::Echo;
use crate::delivery::line_id::LineId;
use crate::delivery::notice::{Departure, Notices};
use crate::delivery::peer::{Peer, PeerId, Share};
use crate::delivery::registry::{LOBBY, Members, Origin, Registry, Seed, Which};
use crate::policy::access::PerAddress;
use crate::policy::moderation::Moderation;
use crate::policy::rooms::RoomRules;
use crate::policy::settings::Settings;
use crate::policy::state::Store;
use crate::shutdown::Shutdown;
use crate::stats::{Stats, add};
use crate::sync::{self, lock, wait_while_until};
use crate::systemd::Notifier;

pub(crate) use moderation::ModerationError;
pub(crate) use operator::{Found, NoSuchClient};
pub(crate) use recall::RecallError;
pub(crate) use slot::Slot;
use turns::{Turn, Turns};

pub(crate) struct Daemon {
    config: Config,
    notices: Notices,
    registry: Registry,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    /// Open connections per client address, for `--max-per-ip`.
    per_address: PerAddress,
    next_id: AtomicU64,
    /// Client threads still running (each counted by its `Slot`); shutdown waits for them to
    /// hand over their last lines.
    readers: Mutex<usize>,
    readers_done: Condvar,
    /// Clients that have left and are still flushing what was queued for them, each counted
    /// by a guard (`slot::Flushing`).
    flushing: AtomicUsize,
    /// `--console`'s stdout.
    echo: Option<Echo>,
    /// The thread that sends what is queued for peers.
    deliverer: Arc<Deliverer>,
    /// The rules, secret and motd in force; a reload swaps them whole. Admission holds the
    /// read lock from its rules check until the client is registered, so once a reload has
    /// swapped them, every client admitted under the old rules is in the registry, where
    /// the reload checks it against the new ones.
    settings: RwLock<Arc<Settings>>,
    /// The service manager's notifications (readiness, status, watchdog).
    notifier: Notifier,
    /// `--redis`: the link to the other nodes, and who is connected to them; `None` for a
    /// node alone.
    cluster: Option<Cluster>,
    presence: Presence,
    /// This node's number for the next relayed chunk, which with the node's id tells it
    /// from every other in the cluster.
    next_seq: AtomicU64,
    /// Names the cluster took back from clients here (another node's client claimed them
    /// while this node was cut off): the new name each client's thread is to take on, so
    /// that its chat state follows. `renames_pending` spares the read path the lock.
    renames: Mutex<HashMap<PeerId, String>>,
    renames_pending: AtomicUsize,
    /// Bans and mutes in force, and `--state-dir`'s file that keeps them.
    moderation: Moderation,
    store: Option<Store>,
    /// Slow modes and the moderators the operator made, by room.
    room_rules: Arc<RoomRules>,
    /// Clients a room's moderator moved to the lobby (kicked or banned from their room): the
    /// room each client's thread is to take on at its next read, as `renames`.
    moves: Mutex<HashMap<PeerId, String>>,
    moves_pending: AtomicUsize,
    /// Clients admitted whose own threads enter the lobby, so that they enter in the order
    /// they were admitted.
    turns: Arc<Turns>,
}

/// Why a connection is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not allowed by `--allow`/`--deny`: it is told nothing at all.
    NotAllowed,
    TooManyFromAddress,
    Full,
    /// Its address is banned: what it is told, after `relayd: `.
    Banned(String),
}

/// Why a `/nick` did not take.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NameError {
    Taken,
    /// In a cluster whose Redis does not answer: whether the name is free cannot be known.
    Unavailable,
}

impl Daemon {
    pub(crate) fn new(config: Config, shutdown: Shutdown) -> io::Result<Arc<Daemon>> {
        let (store, saved) = match &config.state_dir {
            Some(dir) => {
                let (store, saved) = Store::open(dir).map_err(io::Error::other)?;
                (Some(store), Some(saved))
            }
            None => (None, None),
        };
        let (saved, room_rules) = match saved {
            Some(s) => (s.moderation, RoomRules::new(s.slow_modes, s.moderators)),
            None => (Vec::new(), RoomRules::default()),
        };
        let room_rules = Arc::new(room_rules);
        let stats = Arc::new(Stats::default());
        let echo = if config.console {
            Some(Echo::start()?)
        } else {
            None
        };
        let deliverer = Deliverer::start()?;
        let cluster_config = config.cluster.clone();
        let ttl = cluster_config.as_ref().map(|c| c.ttl).unwrap_or_default();
        // The cluster calls back through a weak handle: the daemon owns the link, and the
        // link keeps no daemon alive.
        let mut failed = None;
        let daemon = Arc::new_cyclic(|weak: &Weak<Daemon>| {
            let cluster = cluster_config.and_then(|c| {
                Cluster::start(
                    &c,
                    (config.history, config.history_age),
                    Arc::clone(&stats),
                    remote::hooks(weak),
                )
                .map_err(|e| failed = Some(e))
                .ok()
            });
            Daemon {
                notices: Notices::new(&config),
                registry: Registry::new(&config, Arc::clone(&stats), Arc::clone(&room_rules)),
                stats,
                shutdown,
                per_address: PerAddress::default(),
                next_id: AtomicU64::new(1),
                readers: Mutex::new(0),
                readers_done: Condvar::new(),
                flushing: AtomicUsize::new(0),
                echo,
                deliverer,
                settings: RwLock::new(Arc::new(Settings {
                    rules: config.rules.clone(),
                    secret: config.secret.clone(),
                    motd: config.motd.clone(),
                    keys: config.token_keys.clone(),
                    api_key: config.api_key.clone(),
                    filter: config.filter.clone(),
                })),
                notifier: Notifier::from_env(),
                config,
                cluster,
                presence: Presence::new(ttl),
                next_seq: AtomicU64::new(1),
                renames: Mutex::new(HashMap::new()),
                renames_pending: AtomicUsize::new(0),
                moderation: Moderation::new(saved),
                store,
                room_rules,
                moves: Mutex::new(HashMap::new()),
                moves_pending: AtomicUsize::new(0),
                turns: Arc::default(),
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(daemon),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn notices(&self) -> Notices {
        self.notices
    }

    /// The counters, for the paths that bump them.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// Admits a new connection, or says why not (`token`: a browser came with `?token=`).
    /// Without `--secret-file` or a token to check first, the client is in the lobby when
    /// this returns (its welcome and the lobby's history queued), so clients
    /// are registered in the order they connected; unless the lobby's history is first to be
    /// read from Redis, which may take up to the cluster's query timeout: the client's own
    /// thread enters it then (see [`Slot::take_lobby`]), so that this, on the accept loop,
    /// never waits for Redis, and so do those admitted after it until it has (`turns.rs`),
    /// which keeps the order; or a JSON client's upgrade URL asked to recover the lobby's
    /// lines (`recovers`): its thread enters with its `since`, in turn too.
    pub(crate) fn admit(
        self: &Arc<Self>,
        sock: Arc<TcpStream>,
        addr: SocketAddr,
        format: Format,
        token: bool,
        recovers: bool,
    ) -> Result<Slot, Refusal> {
        let config = &self.config;
        let settings = sync::read(&self.settings);
        if !settings.rules.permits(addr.ip()) {
            return Err(Refusal::NotAllowed);
        }
        if let Some(ban) = self.banned_addr(addr.ip()) {
            add(&self.stats.refused_banned, 1);
            return Err(Refusal::Banned(ban.banned_text()));
        }
        if !self.per_address.try_add(addr.ip(), config.max_per_ip) {
            return Err(Refusal::TooManyFromAddress);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let peer = Peer::new(id, sock, format, config, &self.deliverer, &self.stats);
        if self
            .registry
            .admit(Arc::clone(&peer), addr, self.guest_name(id))
            .is_err()
        {
            self.per_address.remove(addr.ip());
            add(&self.stats.refused_full, 1);
            return Err(Refusal::Full);
        }
        add(&self.stats.accepted, 1);
        let mut slot = Slot::new(Arc::clone(self), peer, addr);
        let secret = settings.secret.is_some();
        drop(settings);
        if !secret && !self.awaits_token(token) {
            if self.reads_redis(LOBBY) || recovers || self.turns.any() {
                slot.wait_turn(Turns::take(&self.turns, id));
            } else {
                slot.enter_lobby();
            }
        }
        Ok(slot)
    }

    /// Whether a client enters the lobby only once its token is checked: with
    /// `--require-token`, or a browser's `?token=` (`token`), so that it enters by its name.
    pub(crate) fn awaits_token(&self, token: bool) -> bool {
        self.config.require_token || token
    }

    /// Puts an admitted client into the lobby; in chat mode its welcome (and any history) is
    /// queued under the registry lock and sent once the lock is free, so nothing relayed can
    /// come between them. Returns the lobby's members, itself included.
    /// `turn`: the client's place among those whose threads enter (see [`Daemon::admit`]),
    /// awaited once the lobby's history is read.
    pub(crate) fn enter(
        &self,
        peer: &Arc<Peer>,
        since: Option<LineId>,
        turn: Option<&Turn>,
    ) -> Option<Members> {
        let (notices, config) = (self.notices, &self.config);
        let seed = self.seed(LOBBY);
        if let Some(turn) = turn {
            turn.wait();
        }
        let settings = self.settings();
        let elsewhere = if config.chat {
            self.presence.count_in(LOBBY, &HashSet::new())
        } else {
            0
        };
        let mut named = None;
        let members = self.registry.enter(peer.id(), seed, since, |name, online| {
            named = Some(name.to_string());
            if config.chat {
                vec![notices.welcome(name, online + elsewhere, &settings.motd, LOBBY)]
            } else {
                Vec::new()
            }
        });
        // A fresh socket's buffer is empty, so this does not block the accept loop.
        peer.start_sending();
        // In raw mode; in chat mode the client's thread does, after the lobby's notice
        // (`Chat::announce`, and see `present`).
        if let (false, Some(name)) = (config.chat, named) {
            self.present(peer.id(), &name, LOBBY);
        }
        members
    }

    /// Tells the other nodes that client `id` is `name`, in `room`: after it entered a room,
    /// moved or was renamed, and after the notice about it, so that a node whose `/who`
    /// shows the change has delivered the notice already (they travel in order).
    pub(crate) fn present(&self, id: PeerId, name: &str, room: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.publish_enter(&Present {
                id,
                name: name.into(),
                room: room.into(),
                user: self.registry.user_of(id).map(|sub| sub.to_string()),
            });
        }
    }

    /// Whether entering `room` now would read its history from Redis first.
    fn reads_redis(&self, room: &str) -> bool {
        self.cluster.is_some() && self.registry.needs_seed(room)
    }

    /// In a cluster with `--history`, before the first client here enters `room`: what Redis
    /// keeps of its history, to merge into this node's (see [`Registry::needs_seed`]).
    fn seed(&self, room: &str) -> Option<Seed> {
        let cluster = self.cluster.as_ref()?;
        if !self.registry.needs_seed(room) {
            return None;
        }
        let reading = self.registry.seeding();
        let asked = Instant::now();
        let entries = cluster.history(room)?;
        let recalled = cluster.recalled(room);
        Some(Seed {
            entries,
            recalled,
            asked,
            _reading: reading,
        })
    }

    /// A client's name until it picks one: `guest<ID>`, and in a cluster
    /// `guest<ID>@<NODE>`, which no other node hands out and nobody can pick.
    pub(crate) fn guest_name(&self, id: PeerId) -> String {
        match &self.cluster {
            Some(cluster) => format!("guest{id}@{}", cluster.node()),
            None => format!("guest{id}"),
        }
    }

    /// How many are in `room` across the cluster, given its `members` here.
    pub(crate) fn online(&self, room: &str, members: &Members) -> usize {
        members.online() + self.presence.count_in(room, &members.users())
    }

    /// Moves a client to `room`; see [`Registry::change_room`]. What the move queues for it
    /// is its own doing: its own thread first waits until what it caused for itself is within
    /// its share, as for a reply, and then for room for what was queued; it is cut off if
    /// none comes.
    pub(crate) fn change_room(
        &self,
        peer: &Arc<Peer>,
        room: &str,
        since: Option<LineId>,
        greet: impl FnOnce(usize) -> Vec<Chunk>,
    ) -> Option<(Members, Members)> {
        self.registry.settle(peer, Share::Own);
        let seed = self.seed(room);
        let elsewhere = self.presence.count_in(room, &HashSet::new());
        let moved = self
            .registry
            .change_room(peer.id(), room, seed, since, |_, online| {
                greet(online + elsewhere)
            });
        peer.start_sending();
        self.settle(peer);
        moved
    }

    /// Waits, on the client's own thread, until what the daemon queued for it on its own
    /// account fits its `--max-pending` again; see [`Registry::settle`].
    pub(crate) fn settle(&self, peer: &Arc<Peer>) {
        self.registry.settle(peer, Share::All);
    }

    /// Relays `chunk` (`lines` lines) from `from` to the others in `room`, and, with
    /// `--redis`, queues it for Redis (after the local delivery, so one sender's lines are
    /// queued in its order), which stamps it with its id and hands it back to every node.
    pub(crate) fn relay(&self, room: &str, from: PeerId, chunk: &Chunk, lines: usize) {
        let (origin, seq) = self.origin();
        if self
            .registry
            .deliver(room, Some(from), false, chunk, lines, origin)
        {
            if let (Some(cluster), Some(seq)) = (&self.cluster, seq) {
                cluster.publish_lines(room, seq, from, chunk, lines, chunk.sender());
            }
            if let Some(echo) = &self.echo {
                echo.echo(from, chunk);
            }
        }
    }

    /// Where a line relayed here now comes from: in a cluster, this node's next number for
    /// it, which Redis hands back with its id.
    fn origin(&self) -> (Origin, Option<u64>) {
        match &self.cluster {
            Some(_) => {
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                (Origin::Sent(seq), Some(seq))
            }
            None => (Origin::Here, None),
        }
    }

    /// Tells `members` of `room`, except `about`, a notice, and with `--redis` everyone in
    /// `room` on the other nodes.
    pub(crate) fn notify(&self, room: &str, members: &Members, about: PeerId, chunk: &Chunk) {
        self.registry.notify(members, Some(about), chunk);
        if let Some(cluster) = &self.cluster {
            cluster.publish_notice(room, chunk);
        }
    }

    /// Sends `chunk` to one client from someone else: a private message (`lines` 1), an
    /// operator's push or relayd's ping (`lines` 0). The sender waits for room as for a line.
    pub(crate) fn send_to(&self, peer: &Arc<Peer>, chunk: &Chunk, lines: usize) {
        self.registry
            .deliver_to(std::slice::from_ref(peer), chunk, lines);
    }

    /// Sends `chunk`, which the client caused for itself (a reply to its command, a notice
    /// about its own line, a pong), to it alone, on its own thread: it may wait, or be cut
    /// off, but nobody else waits for it (see [`Registry::reply`]).
    pub(crate) fn reply(&self, peer: &Arc<Peer>, chunk: &Chunk) {
        self.registry.reply(peer, chunk);
    }

    /// Renames client `id` to `new`; `Ok` holds the old name. In a cluster the name is
    /// claimed in Redis first, which makes it the client's on every node (the caller then
    /// tells the room, and [`Daemon::present`] the other nodes).
    pub(crate) fn rename(&self, id: PeerId, new: &str) -> Result<String, NameError> {
        // A node that left the cluster (another has its id) names its clients on its own.
        let Some(cluster) = self.cluster.as_ref().filter(|c| !c.has_left()) else {
            return self.registry.rename(id, new).map_err(|_| NameError::Taken);
        };
        let here = self.registry.find(new).map(|(_, p)| p.id());
        if here.is_some_and(|owner| owner != id) || self.presence.find(new).is_some() {
            return Err(NameError::Taken);
        }
        let old = self.registry.client(id).map(|(name, ..)| name);
        let held = old.as_deref().filter(|old| claimed(old));
        cluster.claim(id, new, held).map_err(|e| match e {
            ClaimError::Taken => NameError::Taken,
            ClaimError::Unreachable => NameError::Unavailable,
        })?;
        self.registry.rename(id, new).map_err(|_| {
            cluster.release(id, new);
            NameError::Taken
        })
    }

    /// Client `id`'s name now.
    pub(crate) fn name_of(&self, id: PeerId) -> String {
        self.registry
            .client(id)
            .map_or_else(|| self.guest_name(id), |(name, ..)| name)
    }

    /// The client of this node with this id or name: its name and peer.
    pub(crate) fn find(&self, id_or_name: &str) -> Option<(String, Arc<Peer>)> {
        self.registry.find(id_or_name)
    }

    /// A client by name on another node of the cluster.
    fn find_elsewhere(&self, name: &str) -> Option<(&Cluster, crate::cluster::presence::Remote)> {
        let cluster = self.cluster.as_ref()?;
        Some((cluster, self.presence.find(name)?))
    }

    /// Sends a private message (`line`, formatted) to the client named `to`, on any node:
    /// to each of a user's connections, here and on the other nodes.
    pub(crate) fn private(&self, to: &str, line: &Chunk) -> Result<(), NoSuchClient> {
        let here = self.registry.find_all(to);
        for (_, peer) in &here {
            self.send_to(peer, line, 1);
        }
        let user = here
            .first()
            .and_then(|(_, p)| self.registry.user_of(p.id()));
        if let (Some(cluster), Some(sub)) = (&self.cluster, &user) {
            for (node, id) in self.presence.user_clients(sub) {
                cluster.publish_direct(&node, id, Direct::Private, line);
            }
        }
        if !here.is_empty() {
            return Ok(());
        }
        let (cluster, remote) = self.find_elsewhere(to).ok_or(NoSuchClient)?;
        match self.presence.user_of(&remote.node, remote.id) {
            Some(sub) => {
                for (node, id) in self.presence.user_clients(&sub) {
                    cluster.publish_direct(&node, id, Direct::Private, line);
                }
            }
            None => cluster.publish_direct(&remote.node, remote.id, Direct::Private, line),
        }
        Ok(())
    }

    pub(crate) fn members(&self, room: &str) -> Members {
        self.registry.members(room)
    }

    /// Who is in `room`: here first, in order of arrival, then on the other nodes.
    pub(crate) fn names_in(&self, room: &str) -> Vec<String> {
        let mut names = self.registry.names_in(room);
        // A user on this node and another is one name.
        for name in self.presence.names_in(room) {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
                names.push(name);
            }
        }
        names
    }

    /// Rooms with members on any node, with how many, by name.
    pub(crate) fn rooms(&self) -> Vec<(String, usize)> {
        let mut rooms = self.presence.rooms();
        for (room, n) in self.registry.rooms() {
            *rooms.entry(room).or_insert(0) += n;
        }
        rooms.into_iter().collect()
    }

    /// Rooms with members on this node, for `stats` and `/metrics`.
    pub(crate) fn room_count(&self) -> usize {
        self.registry.rooms().len()
    }

    /// The rules, secret, motd and token keys in force.
    pub(crate) fn settings(&self) -> Arc<Settings> {
        Arc::clone(&sync::read(&self.settings))
    }

    /// Puts `settings` in force for whoever connects from now on, and disconnects the
    /// connected clients its rules refuse (`relayd: no longer allowed`); returns how many.
    /// Clients that are still allowed stay, whatever else changed: a new secret or motd is
    /// for new clients.
    pub(crate) fn apply(&self, settings: Settings) -> usize {
        let rules = settings.rules.clone();
        *sync::write(&self.settings) = Arc::new(settings);
        let mut refused = 0;
        for client in self.registry.clients() {
            if !rules.permits(client.addr.ip())
                && self.expel(&client.peer, Departure::NoLongerAllowed).is_ok()
            {
                info!("client {} {}: no longer allowed", client.id, client.addr);
                refused += 1;
            }
        }
        refused
    }

    /// The service manager's notifications.
    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Every client holding a slot, for the shutdown sequence.
    pub(crate) fn all_peers(&self) -> Vec<Arc<Peer>> {
        self.registry.peers(Which::All)
    }

    /// Waits until every client thread has ended, or `deadline`.
    pub(crate) fn wait_readers(&self, deadline: Instant) {
        let readers = lock(&self.readers);
        let readers = wait_while_until(&self.readers_done, readers, deadline, |&n| n > 0);
        if *readers > 0 {
            warn!("{} client threads still busy at shutdown", *readers);
        }
    }

    /// Tells the other nodes of the cluster that this node's clients are gone and frees
    /// their names, at shutdown, once no reader relays anything more.
    pub(crate) fn leave_cluster(&self, until: Instant) {
        if let Some(cluster) = &self.cluster {
            cluster.farewell(&self.local().names, until);
        }
    }

    /// Ends the delivery thread once it has sent what it has: after every peer is closed.
    pub(crate) fn stop_delivering(&self) {
        self.deliverer.stop();
    }

    /// Clients holding a slot.
    pub(crate) fn client_count(&self) -> usize {
        self.registry.len()
    }
}

impl Drop for Daemon {
    /// Lets the delivery thread end when no shutdown sequence stopped it: when `new` fails
    /// after starting it (the cluster cannot start, say). Stopping twice is harmless.
    fn drop(&mut self) {
        self.deliverer.stop();
    }
}

/// Whether a name is held in Redis: every name but a guest's (`guest<ID>@<NODE>`, unique by
/// construction).
fn claimed(name: &str) -> bool {
    !name.contains('@')
}
