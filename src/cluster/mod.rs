//! The cluster link: this node's connections to Redis, through which relayd nodes share their
//! clients' lines, notices and presence with pub/sub (`PUBLISH`/`SUBSCRIBE` on the channel
//! `<cluster>:lines`), hold chat names cluster-wide (a key per name), and keep each room's
//! history (a stream per room).
//!
//! Three threads with a connection each, so that neither a client's reader nor the delivery
//! of remote lines ever waits on the other direction:
//! - the publisher (`publisher.rs`) sends what [`Cluster`]'s `publish_*` methods queued. The
//!   queue is bounded in bytes (like a peer's): a reader only appends to it, and what does
//!   not fit while Redis is slow or gone is dropped and counted, never waited for.
//! - the subscriber (`subscriber.rs`) receives the other nodes' messages and hands them to
//!   the `deliver` hook given at start. It skips this node's own messages but its lines,
//!   which come back from Redis with their ids in the room's history stream (the publisher
//!   appends and publishes them in one script), and nothing it delivers is published again,
//!   so nothing loops.
//! - the heartbeat (`heartbeat.rs`) queues this node's clients every third of `ttl` (so
//!   other nodes forget a node that went silent, and its clients, after `ttl`), and renews
//!   over a connection of its own this node's id (`node.rs`), the name keys its clients
//!   hold, which expire `ttl` after the last renewal (a dead node's names come free), and
//!   the history streams of the rooms they are in (see [`HISTORY_IDLE`]).
//!
//! A client's thread that needs Redis's answer, claiming a name (`/nick`) or reading a
//! room's history when the first client here enters it, takes a connection of its own from
//! a small pool (`query.rs`), so that a slow Redis costs it at most [`QUERY_TIMEOUT`] and
//! never queues it behind another.
//!
//! The publisher and subscriber reconnect on their own with back-off; the link is "up"
//! (`redis_connected 1`) while both are connected (`link.rs`). This file holds the handle,
//! what its threads share with it (the queue, the query connection, the name keys), and
//! their start and stop. It knows nothing of the daemon: the daemon owns the [`Cluster`]
//! handle and passes in its hooks, so dependencies run one way.
//!
//! What goes over the channel, and how each kind of message is built and read, is in
//! `wire.rs` (see [`Event`] for the kinds); who is on the other nodes, in `presence.rs`.

mod heartbeat;
mod link;
mod moderation;
mod node;
pub(crate) mod presence;
mod publisher;
mod query;
mod subscriber;
mod wire;

pub(crate) use wire::{Direct, Event, Stamp};

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::cluster::heartbeat::Wake;
use crate::cluster::link::{IO_TIMEOUT, Link};
use crate::cluster::node::NodeKey;
use crate::cluster::presence::Present;
use crate::cluster::query::Pool;
use crate::config::{ClusterConfig, is_token};
use crate::delivery::chunk::{Chunk, Placed, Sender};
use crate::delivery::history::{Entry, RECOVERY_LINES};
use crate::delivery::line_id::LineId;
use crate::stats::{Stats, add};
use crate::sync::{self, lock};

/// Bytes queued for Redis before further lines are dropped: as much as one peer may have
/// pending by default, a few seconds of a busy node's traffic.
const QUEUE_LIMIT: usize = 8 << 20;
/// How long a client's thread may wait for Redis's answer (a name claim, a room's history),
/// connecting included: a slow Redis costs that client a pause, not its place.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections for clients' queries at most; a client that finds them all busy is answered
/// as if Redis were unreachable, at once.
const QUERIES: usize = 16;
/// How long a room's history stream outlives the last line written to it and the last
/// heartbeat of a node with a client in the room. A node forgets a room's history as soon
/// as its last member leaves; Redis keeps it for an hour more, so that a room everyone left
/// for a moment (a restart of every node, a lunch break) still has its history, while a
/// room nobody comes back to costs Redis nothing after an hour.
pub(crate) const HISTORY_IDLE: Duration = Duration::from_secs(3600);

/// Claims a name key for `ARGV[1]` (`node \0 id`) for `ARGV[2]` ms, or renews it if it holds
/// that value already, and then frees `KEYS[2]` (the old name) if it held that value; 0 if
/// someone else holds the name. One script, so that a name is never briefly nobody's, or
/// stolen between a check and a set.
const CLAIM: &str = "local v = redis.call('GET', KEYS[1]) \
    if v and v ~= ARGV[1] then return 0 end \
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
    if KEYS[2] ~= KEYS[1] and redis.call('GET', KEYS[2]) == ARGV[1] then \
    redis.call('DEL', KEYS[2]) end \
    return 1";
/// Takes a name key for a signed-in user (`ARGV[1]`, a [`Shared::user_owner`]): from
/// nobody, from itself (its connection on another node), or from a guest who picked the name
/// (whose node's heartbeat then finds it lost); never from another user.
const TAKE: &str = "local v = redis.call('GET', KEYS[1]) \
    if v and v ~= ARGV[1] and string.byte(v, 1) == 0 then return 0 end \
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
    return 1";
/// Frees a name key if this node's client still holds it.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

/// This node's clients, for the heartbeat.
pub(crate) struct Local {
    pub(crate) clients: Vec<Present>,
    /// The names to keep in Redis (a guest name is unique by construction): id, name.
    pub(crate) names: Vec<(u64, String)>,
    /// The names signed-in users here hold, once each: sub, name.
    pub(crate) users: Vec<(String, String)>,
}

/// Called with each message from another node: its id, and what it says.
type DeliverHook = Box<dyn Fn(&str, Event<'_>) + Send + Sync>;
/// Called with a client's id and the name it lost.
type LostNameHook = Box<dyn Fn(u64, &str) + Send + Sync>;

/// What the cluster calls back into the daemon with.
pub(crate) struct Hooks {
    /// A message from another node (its id, what it says), on the subscriber's thread.
    pub(crate) deliver: DeliverHook,
    /// Each heartbeat: this node's clients now.
    pub(crate) local: Box<dyn Fn() -> Local + Send + Sync>,
    /// Client `id`'s name was taken by another node's client while the link was down.
    pub(crate) lost_name: LostNameHook,
}

/// Why a name could not be claimed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// Another node's client holds it.
    Taken,
    /// Redis did not answer: the name's owner cannot be known.
    Unreachable,
}

/// Checks a `--redis` URL without connecting, for a one-line startup error.
pub fn check_url(url: &str) -> Result<(), String> {
    client(url)
        .map(drop)
        .map_err(|e| format!("--redis {url}: {e}"))
}

/// Longest `--cluster` and `--node-id`, in characters.
pub(crate) const MAX_NODE_ID: usize = 64;

/// Checks `--cluster` and `--node-id`, for a one-line startup error: they go into guest
/// names (`guest7@NODE`), the operator's space-separated `clients` list and Redis keys.
pub fn check_names(cluster: &str, node_id: &str) -> Result<(), String> {
    for (flag, value) in [("--cluster", cluster), ("--node-id", node_id)] {
        if !is_token(value, MAX_NODE_ID) {
            return Err(format!(
                "{flag} {value:?}: must be 1-64 letters, digits, _ - ."
            ));
        }
    }
    Ok(())
}

/// A client for `url` whose TCP connections send at once. redis-rs leaves Nagle's algorithm
/// on by default, which may hold a small pipeline written while an earlier one is still
/// unacknowledged until Redis's (possibly delayed) ACK: tens of milliseconds on a hop the
/// cluster promises to keep within one.
fn client(url: &str) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let info = url
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)
}

/// `client` for the queries' pools (`query.rs`): it does not tell Redis its name on
/// connecting, two answers to wait for, each up to the whole timeout, before a client's
/// query. (The publisher and subscriber keep that exchange: it tells them, before they count
/// the link as up, that the Redis they reached answers.)
fn query_client(client: &redis::Client) -> redis::RedisResult<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    redis::Client::open(info.set_redis_settings(settings))
}

/// The daemon's handle on the cluster link.
pub(crate) struct Cluster {
    shared: Arc<Shared>,
}

struct Shared {
    node: Arc<str>,
    /// `--cluster`: the prefix of every key and channel.
    name: String,
    channel: String,
    url: String,
    client: redis::Client,
    ttl: Duration,
    /// Entries a room's history stream keeps at least (`MAXLEN ~`): what a room keeps,
    /// `max(--history, RECOVERY_LINES)` lines with `--history-age`, else `--history`'s
    /// (each entry holds one line or more; one at least, whose id every line needs).
    keep: usize,
    /// `--history-age`: older entries are trimmed too (`MINID ~`); `None`: 0, no recovery.
    age: Option<Duration>,
    stats: Arc<Stats>,
    hooks: Hooks,
    queue: Mutex<Queue>,
    queued: Condvar,
    /// The publisher has finished sending a batch (for [`Cluster::farewell`]).
    sent: Condvar,
    link: Mutex<Link>,
    /// How many times the subscriber has lost its connection. Both connections go to one
    /// Redis: when one finds it gone, the publisher's (idle, perhaps, and so not yet told)
    /// is taken for gone too and made again, so that an outage is logged once and its end
    /// once, not a second time when the publisher next writes into its dead socket.
    outages: AtomicU64,
    /// Heartbeats asked for before their time.
    wake: Mutex<Wake>,
    woken: Condvar,
    /// Clients' queries (see `query.rs`).
    queries: Pool,
    /// The heartbeat's connection, so that its renewals never wait behind a client's query
    /// nor make one wait.
    beat: Pool,
    /// This node's id in Redis (see `node.rs`).
    node_key: Mutex<NodeKey>,
    stop: AtomicBool,
    /// Another instance holds this node's id: the node has left the cluster for good.
    left: AtomicBool,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
    /// The publisher has taken a batch and not finished sending it.
    sending: bool,
}

enum Item {
    /// A message for the channel; `stream`: lines, appended to their room's history stream
    /// first and published stamped with their entry's id.
    Publish {
        message: Vec<u8>,
        lines: u64,
        stream: Option<Stream>,
    },
    /// Frees a name key that this value (`node \0 id`) holds.
    Release { key: String, value: Vec<u8> },
}

/// Where lines go in Redis: their room's stream, with who sent them.
struct Stream {
    room: String,
    /// `wire::sender`'s bytes.
    sender: Vec<u8>,
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Publish {
                message, stream, ..
            } => message.len() + stream.as_ref().map_or(0, |s| s.room.len() + s.sender.len()),
            Item::Release { key, value } => key.len() + value.len(),
        }
    }

    fn lines(&self) -> u64 {
        match self {
            Item::Publish { lines, .. } => *lines,
            Item::Release { .. } => 0,
        }
    }
}

impl Cluster {
    /// Starts the publisher, subscriber and heartbeat threads. They connect in the
    /// background: a Redis that is not there yet costs one log line, not the node's start.
    pub(crate) fn start(
        config: &ClusterConfig,
        history: (usize, Duration),
        stats: Arc<Stats>,
        hooks: Hooks,
    ) -> io::Result<Cluster> {
        let shared = Arc::new(Shared::new(config, history, stats, hooks)?);
        shared.claim_node_at_start().map_err(io::Error::other)?;
        for (name, run) in [
            ("cluster-pub", Shared::publisher as fn(&Shared)),
            ("cluster-sub", Shared::subscriber),
            ("cluster-beat", Shared::heartbeat),
        ] {
            let s = Arc::clone(&shared);
            thread::Builder::new()
                .name(name.into())
                .spawn(move || run(&s))?;
        }
        Ok(Cluster { shared })
    }

    /// This node's id.
    pub(crate) fn node(&self) -> &Arc<str> {
        &self.shared.node
    }

    /// Whether both connections to Redis are up.
    pub(crate) fn is_up(&self) -> bool {
        self.shared.stats.redis_connected.load(Ordering::Relaxed) == 1
    }

    /// Whether the node has left the cluster for good (another instance has its id).
    pub(crate) fn has_left(&self) -> bool {
        self.shared.has_left()
    }

    /// Queues local client `from`'s lines (`seq`: this node's number for them; `from` 0: the
    /// operator's) for the room's history stream in Redis and, stamped with their entry's id,
    /// for every node, this one included (see `publisher.rs`); drops them (counted) if the
    /// queue is full. Never blocks on Redis.
    pub(crate) fn publish_lines(
        &self,
        room: &str,
        seq: u64,
        from: u64,
        bytes: &[u8],
        lines: usize,
        sender: Option<&Sender>,
    ) {
        let m = wire::lines(&self.shared.node, room, seq, from, bytes, lines);
        let stream = Stream {
            room: room.to_string(),
            sender: wire::sender(sender),
        };
        self.shared.push(m, lines as u64, Some(stream));
    }

    /// Queues a notice for everyone in `room` on the other nodes.
    pub(crate) fn publish_notice(&self, room: &str, chunk: &Chunk) {
        let m = wire::notice(&self.shared.node, room, chunk);
        self.shared.push(m, 0, None);
    }

    /// Tells the other nodes a client of this one entered a room, moved, or was renamed.
    pub(crate) fn publish_enter(&self, client: &Present) {
        let m = wire::enter(&self.shared.node, client);
        self.shared.push(m, 0, None);
    }

    /// Tells the other nodes a client of this one left.
    pub(crate) fn publish_leave(&self, id: u64) {
        let m = wire::leave(&self.shared.node, id);
        self.shared.push(m, 0, None);
    }

    /// Sends something to client `id` of `node`.
    pub(crate) fn publish_direct(&self, node: &str, id: u64, what: Direct, text: &[u8]) {
        let m = wire::direct(&self.shared.node, node, id, what, text);
        let lines = u64::from(what == Direct::Private);
        self.shared.push(m, lines, None);
    }

    /// Tells the other nodes that the operator made `room` live or lossless.
    pub(crate) fn publish_recall(&self, room: &str, id: &str) {
        let m = wire::recall(&self.shared.node, room, id);
        self.shared.push(m, 0, None);
    }

    /// Tells the other nodes the operator made `room` live or lossless.
    pub(crate) fn publish_live(&self, room: &str, live: bool) {
        let m = wire::live(&self.shared.node, room, live);
        self.shared.push(m, 0, None);
    }

    /// Pushes the operator's text to every client of the other nodes.
    pub(crate) fn publish_broadcast(&self, text: &str) {
        let m = wire::broadcast(&self.shared.node, text.as_bytes());
        self.shared.push(m, 0, None);
    }

    /// Claims `name` cluster-wide for this node's client `id`, freeing `old` (its current
    /// name, if it held one in Redis) in the same step. Runs on the client's thread and waits
    /// for Redis, at most [`QUERY_TIMEOUT`].
    pub(crate) fn claim(&self, id: u64, name: &str, old: Option<&str>) -> Result<(), ClaimError> {
        let s = &self.shared;
        if !self.is_up() {
            return Err(ClaimError::Unreachable);
        }
        match s.query::<i64>(&s.claim_cmd(id, name, old)) {
            Some(1) => Ok(()),
            Some(_) => Err(ClaimError::Taken),
            None => Err(ClaimError::Unreachable),
        }
    }

    /// Takes `name` for signed-in user `sub` cluster-wide (see [`TAKE`]).
    pub(crate) fn take_for_user(&self, sub: &str, name: &str) -> Result<(), ClaimError> {
        let s = &self.shared;
        if !self.is_up() {
            return Err(ClaimError::Unreachable);
        }
        match s.query::<i64>(&s.take_cmd(sub, name)) {
            Some(1) => Ok(()),
            Some(_) => Err(ClaimError::Taken),
            None => Err(ClaimError::Unreachable),
        }
    }

    /// Frees `name`, held by user `sub`, once its last connection here has left (a
    /// connection of it on another node takes it again at that node's next heartbeat).
    pub(crate) fn release_user(&self, sub: &str, name: &str) {
        let s = &self.shared;
        let mut queue = lock(&s.queue);
        s.enqueue_freeing(&mut queue, s.name_key(name), s.user_owner(sub));
        drop(queue);
        s.queued.notify_one();
    }

    /// Frees `name`, held by this node's client `id`, once what is queued before is sent.
    pub(crate) fn release(&self, id: u64, name: &str) {
        let s = &self.shared;
        s.enqueue_release(&mut lock(&s.queue), id, name);
        s.queued.notify_one();
    }

    /// Tells the other nodes, as this one stops, that its clients are gone, frees the names
    /// they held, and waits until that is sent or `until`.
    pub(crate) fn farewell(&self, names: &[(u64, String)], until: Instant) {
        let s = &self.shared;
        let m = wire::snapshot(&s.node, false, &[]);
        // Stopping, and all of the farewell, in one critical section: no heartbeat is queued
        // after it to bring the clients back (see `heartbeat`), and the publisher, which
        // ends once stopping with nothing queued, sends all of it first.
        let mut queue = lock(&s.queue);
        s.stop.store(true, Ordering::Relaxed);
        s.enqueue(&mut queue, m, 0, None);
        for (id, name) in names {
            s.enqueue_release(&mut queue, *id, name);
        }
        s.enqueue_release_node(&mut queue);
        s.queued.notify_all();
        s.woken.notify_all();
        while (!queue.items.is_empty() || queue.sending) && self.is_up() {
            let now = Instant::now();
            if now >= until {
                break;
            }
            // Woken by the publisher, or within a tenth of a second to see whether the link
            // fell meanwhile.
            let wait = (until - now).min(Duration::from_millis(100));
            queue = sync::wait_timeout(&s.sent, queue, wait);
        }
    }

    /// What Redis keeps of `room`'s history (the last [`Shared::keep`] entries), oldest
    /// first, each placed with its stream id; `None` if Redis cannot say. Runs on a client's
    /// thread, at most [`QUERY_TIMEOUT`].
    pub(crate) fn history(&self, room: &str) -> Option<Vec<Entry>> {
        let s = &self.shared;
        if !self.is_up() {
            return None;
        }
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(s.history_key(room))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(s.keep);
        let entries: Vec<(String, Vec<Vec<u8>>)> = s.query(&cmd)?;
        let name: Arc<str> = Arc::from(room);
        let mut out = Vec::with_capacity(entries.len());
        for (id, fields) in entries.into_iter().rev() {
            // Fields `m` (the `L` message) and `s` (its sender; none from a relayd before
            // line ids), in that order.
            let (Some(message), Some(id)) = (fields.get(1), LineId::parse(&id)) else {
                continue;
            };
            let Some((_, Event::Lines { lines, bytes, .. })) = wire::decode(message) else {
                continue;
            };
            let sender = fields
                .get(3)
                .and_then(|s| wire::decode_sender(s))
                .and_then(|(author, _)| author.map(sender_of));
            let chunk = match &sender {
                Some(sender) => Chunk::relayed_from(bytes, lines, sender).unstamped(),
                None => Chunk::from(bytes),
            };
            chunk.place(Placed {
                room: Arc::clone(&name),
                first: id,
                numbered: false,
            });
            out.push(Entry {
                chunk,
                lines,
                id: Some(id),
            });
        }
        Some(out)
    }
}

impl Cluster {
    /// The lines of `room` recalled while Redis kept its history, so that a node reading
    /// that history leaves them out; none if Redis cannot say. At most [`QUERY_TIMEOUT`].
    pub(crate) fn recalled(&self, room: &str) -> Vec<LineId> {
        if !self.is_up() {
            return Vec::new();
        }
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.shared.recalled_key(room));
        let ids: Vec<String> = self.shared.query(&cmd).unwrap_or_default();
        ids.iter().filter_map(|id| LineId::parse(id)).collect()
    }

    /// Remembers in Redis that line `id` of `room` was recalled, for as long as the room's
    /// stream may hold it ([`Cluster::recalled`]). At most [`QUERY_TIMEOUT`]; `false` if
    /// Redis did not take it.
    pub(crate) fn remember_recall(&self, room: &str, id: &str) -> bool {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REMEMBER_RECALL)
            .arg(1)
            .arg(self.shared.recalled_key(room))
            .arg(id)
            .arg(HISTORY_IDLE.as_secs());
        self.shared.query::<i64>(&cmd).is_some()
    }
}

/// Adds a recalled id to the room's set and gives the set the stream's idle expiry.
const REMEMBER_RECALL: &str = "redis.call('SADD', KEYS[1], ARGV[1]) \
    return redis.call('EXPIRE', KEYS[1], ARGV[2])";

/// A sender as the chunks of its lines hold it.
pub(crate) fn sender_of(author: wire::Author<'_>) -> Arc<Sender> {
    Arc::new(Sender {
        name: Arc::from(author.name),
        user: author.user.map(Arc::from),
        prefix: author.prefix,
        me: author.me,
    })
}

impl Drop for Cluster {
    /// Ends the publisher and the heartbeat. The subscriber is blocked reading its socket and
    /// ends with the process; it holds no client's state.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.queued.notify_all();
        self.shared.woken.notify_all();
    }
}

impl Shared {
    fn new(
        config: &ClusterConfig,
        (history, age): (usize, Duration),
        stats: Arc<Stats>,
        hooks: Hooks,
    ) -> io::Result<Shared> {
        let age = (!age.is_zero()).then_some(age);
        let keep = match age {
            Some(_) => history.max(RECOVERY_LINES),
            None => history,
        };
        let bad_url = |e| io::Error::other(format!("--redis {}: {e}", config.url));
        let client = client(&config.url).map_err(bad_url)?;
        let queries = query_client(&client).map_err(bad_url)?;
        Ok(Shared {
            node: Arc::from(config.node_id.as_str()),
            name: config.name.clone(),
            channel: format!("{}:lines", config.name),
            url: config.url.clone(),
            client,
            ttl: config.ttl,
            keep: keep.max(1),
            age,
            stats,
            hooks,
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            sent: Condvar::new(),
            link: Mutex::new(Link::new()),
            wake: Mutex::new(Wake::default()),
            woken: Condvar::new(),
            queries: Pool::new("query", QUERIES, QUERY_TIMEOUT, queries.clone()),
            beat: Pool::new("heartbeat", 1, IO_TIMEOUT, queries),
            node_key: Mutex::new(NodeKey::new()),
            outages: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            left: AtomicBool::new(false),
        })
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn name_key(&self, name: &str) -> String {
        format!("{}:name:{}", self.name, name.to_lowercase())
    }

    fn history_key(&self, room: &str) -> String {
        format!("{}:history:{room}", self.name)
    }

    fn recalled_key(&self, room: &str) -> String {
        format!("{}:recalled:{room}", self.name)
    }

    /// [`CLAIM`] of `name` for client `id`, freeing `old`.
    fn claim_cmd(&self, id: u64, name: &str, old: Option<&str>) -> redis::Cmd {
        let key = self.name_key(name);
        let old = old.map_or_else(|| key.clone(), |old| self.name_key(old));
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM)
            .arg(2)
            .arg(key)
            .arg(old)
            .arg(self.owner(id))
            .arg(self.ttl.as_millis() as u64);
        cmd
    }

    /// A name key's value: who holds it.
    fn owner(&self, id: u64) -> Vec<u8> {
        format!("{}\0{id}", self.node).into_bytes()
    }

    /// A name key's value when a signed-in user holds it, on whichever nodes: it starts with
    /// a NUL, which no node id does.
    fn user_owner(&self, sub: &str) -> Vec<u8> {
        format!("\0user\0{sub}").into_bytes()
    }

    /// [`TAKE`] of `name` for user `sub`.
    fn take_cmd(&self, sub: &str, name: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(TAKE)
            .arg(1)
            .arg(self.name_key(name))
            .arg(self.user_owner(sub))
            .arg(self.ttl.as_millis() as u64);
        cmd
    }

    /// Queues a message, or drops it (its lines counted) if the queue is full.
    fn push(&self, message: Vec<u8>, lines: u64, stream: Option<Stream>) {
        let mut queue = lock(&self.queue);
        self.enqueue(&mut queue, message, lines, stream);
        drop(queue);
        self.queued.notify_one();
    }

    /// Queues freeing a name.
    fn enqueue_release(&self, queue: &mut Queue, id: u64, name: &str) {
        self.enqueue_freeing(queue, self.name_key(name), self.owner(id));
    }

    /// Queues freeing `key` if it holds `value`: tiny and bounded by the number of leaving
    /// clients, so never dropped, or the key would stay taken until it expires.
    fn enqueue_freeing(&self, queue: &mut Queue, key: String, value: Vec<u8>) {
        if self.has_left() {
            return;
        }
        let item = Item::Release { key, value };
        queue.bytes += item.len();
        queue.items.push_back(item);
    }

    fn enqueue(&self, queue: &mut Queue, message: Vec<u8>, lines: u64, stream: Option<Stream>) {
        let item = Item::Publish {
            message,
            lines,
            stream,
        };
        if self.has_left() || queue.bytes + item.len() > QUEUE_LIMIT {
            add(&self.stats.cluster_dropped, lines);
            return;
        }
        queue.bytes += item.len();
        self.stats
            .cluster_queue_bytes
            .store(queue.bytes as u64, Ordering::Relaxed);
        queue.items.push_back(item);
    }

    /// Sends `cmd` for a client's thread, on a connection of its own (see `query.rs`);
    /// `None` if Redis did not answer within [`QUERY_TIMEOUT`].
    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        self.queries.one(cmd)
    }
}
