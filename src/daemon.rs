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

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use log::{debug, info, warn};

use crate::access::PerAddress;
use crate::chunk::Chunk;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::echo::Echo;
use crate::notice::{Departure, Notices, clean};
use crate::peer::{Deliverer, Peer, PeerId};
use crate::registry::{ClientInfo, Members, Registry, RenameError, Which};
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::stats::{Stats, add};
use crate::sync::lock;
use crate::systemd::Notifier;

pub(crate) struct Daemon {
    config: Config,
    notices: Notices,
    registry: Registry,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    /// Open connections per client address, for `--max-per-ip`.
    per_address: PerAddress,
    next_id: AtomicU64,
    /// Client threads still running; shutdown waits for them to hand over their last lines.
    readers: Mutex<usize>,
    readers_done: Condvar,
    /// Clients that have left and are still flushing what was queued for them.
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
    /// `--redis`: the link to the other nodes; `None` for a node alone.
    cluster: Option<Cluster>,
}

/// Why a connection is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not allowed by `--allow`/`--deny`: it is told nothing at all.
    NotAllowed,
    TooManyFromAddress,
    Full,
}

/// Why an operator's command found no one.
#[derive(Debug)]
pub(crate) struct NoSuchClient;

impl Daemon {
    pub(crate) fn new(config: Config, shutdown: Shutdown) -> io::Result<Arc<Daemon>> {
        let stats = Arc::new(Stats::default());
        let echo = if config.console {
            Some(Echo::start()?)
        } else {
            None
        };
        let deliverer = Deliverer::start()?;
        let cluster_config = config.cluster.clone();
        // The subscriber calls back through a weak handle: the daemon owns the link, and the
        // link keeps no daemon alive.
        let mut failed = None;
        let daemon = Arc::new_cyclic(|weak: &std::sync::Weak<Daemon>| {
            let cluster = cluster_config.and_then(|c| {
                let weak = weak.clone();
                let deliver = Box::new(move |room: &str, bytes: &[u8], lines: usize| {
                    if let Some(daemon) = weak.upgrade() {
                        daemon.relay_remote(room, bytes, lines);
                    }
                });
                Cluster::start(&c, Arc::clone(&stats), deliver)
                    .map_err(|e| failed = Some(e))
                    .ok()
            });
            Daemon {
                notices: Notices::new(&config),
                registry: Registry::new(&config, Arc::clone(&stats)),
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
                })),
                notifier: Notifier::from_env(),
                config,
                cluster,
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

    /// Admits a new connection, or says why not. Without `--secret-file` the client is in
    /// the lobby when this returns (its welcome and the lobby's history queued), so clients
    /// are registered in the order they connected.
    pub(crate) fn admit(
        self: &Arc<Self>,
        sock: Arc<TcpStream>,
        addr: SocketAddr,
        websocket: bool,
    ) -> Result<Slot, Refusal> {
        let config = &self.config;
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        if !settings.rules.permits(addr.ip()) {
            return Err(Refusal::NotAllowed);
        }
        if !self.per_address.try_add(addr.ip(), config.max_per_ip) {
            return Err(Refusal::TooManyFromAddress);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let peer = Peer::new(id, sock, websocket, config, &self.deliverer, &self.stats);
        if self.registry.admit(Arc::clone(&peer), addr).is_err() {
            self.per_address.remove(addr.ip());
            add(&self.stats.refused_full, 1);
            return Err(Refusal::Full);
        }
        add(&self.stats.accepted, 1);
        *lock(&self.readers) += 1;
        let secret = settings.secret.is_some();
        drop(settings);
        let lobby = if secret { None } else { self.enter(&peer) };
        Ok(Slot {
            daemon: Arc::clone(self),
            peer,
            addr,
            lobby,
            departure: Departure::Panicked,
        })
    }

    /// Puts an admitted client into the lobby; in chat mode its welcome (and any history) is
    /// queued under the registry lock and sent once the lock is free, so nothing relayed can
    /// come between them. Returns the lobby's members, itself included.
    pub(crate) fn enter(&self, peer: &Arc<Peer>) -> Option<Members> {
        let (notices, config) = (self.notices, &self.config);
        let settings = self.settings();
        let members = self.registry.enter(peer.id(), |name, online| {
            if config.chat {
                vec![notices.welcome(name, online, &settings.motd)]
            } else {
                Vec::new()
            }
        });
        // A fresh socket's buffer is empty, so this does not block the accept loop.
        peer.start_sending();
        members
    }

    /// Moves a client to `room`; see [`Registry::change_room`]. Its own thread then waits
    /// for room for what was queued for it, and it is cut off if none comes.
    pub(crate) fn change_room(
        &self,
        peer: &Arc<Peer>,
        room: &str,
        greet: impl FnOnce(&str, usize) -> Vec<Chunk>,
    ) -> Option<(Members, Members)> {
        let moved = self.registry.change_room(peer.id(), room, greet);
        peer.start_sending();
        self.settle(peer);
        moved
    }

    /// Waits, on the client's own thread, until what the daemon queued for it on its own
    /// account fits its `--max-pending` again; see [`Registry::settle`].
    pub(crate) fn settle(&self, peer: &Arc<Peer>) {
        self.registry.settle(peer);
    }

    /// Relays `chunk` (`lines` lines) from `from` to the others in `room`, and, with
    /// `--redis`, queues it for the other nodes (after the local delivery, so one sender's
    /// lines are queued in its order).
    pub(crate) fn relay(&self, room: &str, from: PeerId, chunk: &Chunk, lines: usize) {
        if self.registry.deliver(room, Some(from), chunk, lines) {
            if let Some(cluster) = &self.cluster {
                cluster.publish(room, chunk, lines);
            }
            if let Some(echo) = &self.echo {
                echo.echo(from, chunk);
            }
        }
    }

    /// Delivers lines another node relayed to everyone in `room` here. Never published
    /// again: only the origin node publishes a line, so none loops.
    fn relay_remote(&self, room: &str, bytes: &[u8], lines: usize) {
        self.registry
            .deliver(room, None, &Chunk::relayed(bytes, lines), lines);
    }

    /// Tells `members`, except `about`, a notice.
    pub(crate) fn notify(&self, members: &Members, about: PeerId, chunk: &Chunk) {
        self.registry.notify(members, Some(about), chunk);
    }

    /// Sends `chunk` to one client: a reply (`lines` 0) or a private message.
    pub(crate) fn send_to(&self, peer: &Arc<Peer>, chunk: &Chunk, lines: usize) {
        self.registry
            .deliver_to(std::slice::from_ref(peer), chunk, lines);
    }

    pub(crate) fn rename(&self, id: PeerId, new: &str) -> Result<String, RenameError> {
        self.registry.rename(id, new)
    }

    /// The client with this id or name: its name and peer.
    pub(crate) fn find(&self, id_or_name: &str) -> Option<(String, Arc<Peer>)> {
        self.registry.find(id_or_name)
    }

    pub(crate) fn members(&self, room: &str) -> Members {
        self.registry.members(room)
    }

    pub(crate) fn names_in(&self, room: &str) -> Vec<String> {
        self.registry.names_in(room)
    }

    pub(crate) fn rooms(&self) -> Vec<(String, usize)> {
        self.registry.rooms()
    }

    pub(crate) fn clients(&self) -> Vec<ClientInfo> {
        self.registry.clients()
    }

    /// The operator's `stats` answer.
    pub(crate) fn stats_report(&self) -> String {
        self.stats
            .report(self.registry.len(), self.registry.rooms().len())
    }

    /// Pushes `text` to every client that has joined, as a server line; returns to how many.
    pub(crate) fn broadcast(&self, text: &str) -> usize {
        let chunk = self.notices.push(self.config.chat, text);
        let peers = self.registry.peers(Which::Joined);
        self.registry.deliver_to(&peers, &chunk, 0);
        peers.len()
    }

    /// Pushes `text` to one client, as a server line.
    pub(crate) fn push_to(&self, id_or_name: &str, text: &str) -> Result<(), NoSuchClient> {
        let (_, peer) = self.find(id_or_name).ok_or(NoSuchClient)?;
        let chunk = self.notices.push(self.config.chat, text);
        self.send_to(&peer, &chunk, 0);
        Ok(())
    }

    /// Disconnects a client for the operator. Once this returns, its slot is free and nothing
    /// more it sent is relayed; its thread tells its room it left, after any line it was
    /// relaying at that moment. Returns its id and name.
    pub(crate) fn kick(
        &self,
        id_or_name: &str,
        reason: Option<&str>,
    ) -> Result<(PeerId, String), NoSuchClient> {
        let (name, peer) = self.find(id_or_name).ok_or(NoSuchClient)?;
        // The reason reaches the client and its room: cleaned like any chat line.
        let why = Departure::Kicked(reason.map(|r| clean(r.as_bytes())));
        self.expel(&peer, why)?;
        Ok((peer.id(), name))
    }

    /// Disconnects a client on the daemon's own account, as [`Daemon::kick`] does.
    fn expel(&self, peer: &Arc<Peer>, why: Departure) -> Result<(), NoSuchClient> {
        self.registry.expel(peer.id()).ok_or(NoSuchClient)?;
        peer.close(why);
        Ok(())
    }

    /// The rules, secret and motd in force.
    pub(crate) fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `settings` in force for whoever connects from now on, and disconnects the
    /// connected clients its rules refuse (`relayd: no longer allowed`); returns how many.
    /// Clients that are still allowed stay, whatever else changed: a new secret or motd is
    /// for new clients.
    pub(crate) fn apply(&self, settings: Settings) -> usize {
        let rules = settings.rules.clone();
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
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
        let mut readers = lock(&self.readers);
        while *readers > 0 {
            let now = Instant::now();
            if now >= deadline {
                warn!("{} client threads still busy at shutdown", *readers);
                return;
            }
            readers = self
                .readers_done
                .wait_timeout(readers, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
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

/// A client's hold on the daemon, from admission to the end of its thread. Dropping it takes
/// the client out (telling its room), flushes and closes its peer, and frees its slot and
/// its `--max-per-ip` count.
pub(crate) struct Slot {
    daemon: Arc<Daemon>,
    peer: Arc<Peer>,
    addr: SocketAddr,
    /// Who was in the lobby when it entered at admission, for its arrival notice.
    lobby: Option<Members>,
    /// Why the client is leaving, as its own thread saw it; a cut-off recorded on the peer
    /// (kick, too slow) takes precedence. Until the thread sets it, leaving is a panic.
    departure: Departure,
}

impl Slot {
    pub(crate) fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }

    /// The lobby as it was when the client entered at admission, once.
    pub(crate) fn take_lobby(&mut self) -> Option<Members> {
        self.lobby.take()
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
            if let (true, Some(left)) = (daemon.config.chat, left)
                && let Some(members) = left.members
            {
                let notice = daemon.notices.left(&left.name, &why, members.online());
                daemon.registry.notify(&members, None, &notice);
            }
            // The flush still holds a socket and threads, so it counts against the address's
            // `--max-per-ip` until it ends (the count is free by the time the client sees its
            // connection close), and at most `--max-clients` leaving clients flush at once:
            // clients that connect, half-close and never read cannot pile up threads.
            let flushing = daemon.flushing.fetch_add(1, Ordering::Relaxed);
            if flushing < daemon.config.max_clients {
                self.peer
                    .flush(Instant::now() + daemon.config.write_timeout);
            } else {
                debug!(
                    "client {}: {flushing} clients already flushing, closing without flush",
                    self.peer.id()
                );
            }
            daemon.flushing.fetch_sub(1, Ordering::Relaxed);
            daemon.per_address.remove(self.addr.ip());
            self.peer.close(why.clone());
        }
        info!(
            "client {} {} disconnected: {why} ({} clients)",
            self.peer.id(),
            self.addr,
            daemon.registry.len()
        );
        let mut readers = lock(&daemon.readers);
        *readers -= 1;
        daemon.readers_done.notify_all();
    }
}
