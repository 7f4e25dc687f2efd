//! The cluster link: this node's connections to Redis, through which relayd nodes share their
//! clients' lines, notices and presence with pub/sub (`PUBLISH`/`SUBSCRIBE` on the channel
//! `<cluster>:lines`), hold chat names cluster-wide (a key per name), and keep each room's
//! history (a stream per room).
//!
//! Three threads and three connections, so that neither a client's reader nor the delivery
//! of remote lines ever waits on the other direction:
//! - the publisher sends what [`Cluster`]'s `publish_*` methods queued. The queue is bounded
//!   in bytes (like a peer's): a reader only appends to it, and what does not fit while Redis
//!   is slow or gone is dropped and counted, never waited for.
//! - the subscriber receives the other nodes' messages and hands them to the `deliver` hook
//!   given at start. It skips this node's own messages, and nothing it delivers is published
//!   again, so nothing loops.
//! - the heartbeat (no connection of its own) queues this node's clients every third of `ttl`
//!   (so other nodes forget a node that went silent, and its clients, after `ttl`), and
//!   renews the name keys this node holds, which expire `ttl` after the last renewal: a dead
//!   node's names come free.
//! - the query connection, shared under a lock by the few commands that need Redis's answer:
//!   renewing names, claiming one (`/nick`) and reading a room's history when the first
//!   client here enters it. The last two run on that client's own thread.
//!
//! The publisher and subscriber reconnect on their own with back-off; the link is "up"
//! (`redis_connected 1`) while both are connected. This module knows nothing of the daemon:
//! the daemon owns the [`Cluster`] handle and passes in its hooks, so dependencies run one way.
//!
//! What goes over the channel, and how each kind of message is built and read, is in `wire`
//! (see [`Event`] for the kinds).

pub(crate) mod presence;
mod wire;

pub(crate) use wire::{Direct, Event};

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::cluster::presence::Present;
use crate::config::{ClusterConfig, is_token};
use crate::delivery::chunk::Chunk;
use crate::delivery::history::Entry;
use crate::stats::{Stats, add};
use crate::sync::{self, lock, wait_while_until};

/// Bytes queued for Redis before further lines are dropped: as much as one peer may have
/// pending by default, a few seconds of a busy node's traffic.
const QUEUE_LIMIT: usize = 8 << 20;
/// Reconnection back-off: from this...
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ...doubling up to this, so a node notices a restarted Redis within seconds without
/// hammering a dead one.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long connecting, and one publish round trip, may take before the link counts as down.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client's thread may wait for Redis's answer (a name claim, a room's history):
/// a slow Redis costs that client a pause, not its place.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// A subscriber that hears nothing for this long pings Redis, so a link that died silently
/// (a partition, a host gone without a reset) is noticed within two of these.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Messages sent in one pipelined round trip at most.
const BATCH: usize = 256;

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
/// Frees a name key if this node's client still holds it.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

/// This node's clients, for the heartbeat.
pub(crate) struct Local {
    pub(crate) clients: Vec<Present>,
    /// The names to keep in Redis (a guest name is unique by construction): id, name.
    pub(crate) names: Vec<(u64, String)>,
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

/// Checks `--cluster` and `--node-id`, for a one-line startup error: they go into guest
/// names (`guest7@NODE`), the operator's space-separated `clients` list and Redis keys.
pub fn check_names(cluster: &str, node_id: &str) -> Result<(), String> {
    for (flag, value) in [("--cluster", cluster), ("--node-id", node_id)] {
        if !is_token(value, 64) {
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
    /// `--history`: lines kept per room in Redis.
    history: usize,
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
    query: Mutex<Option<redis::Connection>>,
    stop: AtomicBool,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
    /// The publisher has taken a batch and not finished sending it.
    sending: bool,
}

enum Item {
    /// A message for the channel; `room`: also appended to that room's history.
    Publish {
        message: Vec<u8>,
        lines: u64,
        room: Option<String>,
    },
    /// Frees a name key that this value (`node \0 id`) holds.
    Release { key: String, value: Vec<u8> },
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Publish { message, .. } => message.len(),
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

#[derive(Default)]
struct Wake {
    /// The subscriber has just (re)subscribed: say hello, so the others answer with their
    /// clients, and re-register this node's names.
    hello: bool,
    /// Another node said hello: answer with this node's clients.
    answer: bool,
}

/// Whether each connection is up, for `redis_connected` and for logging each outage once.
struct Link {
    publisher: bool,
    subscriber: bool,
    /// When the link went down (or the node started without it); `None` while up.
    down_since: Option<Instant>,
    /// Whether the current outage has been logged.
    warned: bool,
    /// Whether the link has ever been up (the first "up" line says so differently).
    ever_up: bool,
}

#[derive(Clone, Copy)]
enum Side {
    Publisher,
    Subscriber,
}

impl Cluster {
    /// Starts the publisher, subscriber and heartbeat threads. They connect in the
    /// background: a Redis that is not there yet costs one log line, not the node's start.
    pub(crate) fn start(
        config: &ClusterConfig,
        history: usize,
        stats: Arc<Stats>,
        hooks: Hooks,
    ) -> io::Result<Cluster> {
        let shared = Arc::new(Shared::new(config, history, stats, hooks)?);
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

    /// Queues local client `from`'s lines (`seq`: this node's number for them) for the other
    /// nodes, and for the room's history in Redis; drops them (counted) if the queue is full.
    /// Never blocks on Redis.
    pub(crate) fn publish_lines(
        &self,
        room: &str,
        seq: u64,
        from: u64,
        bytes: &[u8],
        lines: usize,
    ) {
        let m = wire::lines(&self.shared.node, room, seq, from, bytes, lines);
        let history = (self.shared.history > 0).then(|| room.to_string());
        self.shared.push(m, lines as u64, history);
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
        let cmd = s.claim_cmd(id, name, old);
        match s.query(|con| cmd.query::<i64>(con)) {
            Some(1) => Ok(()),
            Some(_) => Err(ClaimError::Taken),
            None => Err(ClaimError::Unreachable),
        }
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

    /// The last `--history` lines of `room` as Redis keeps them, oldest first; `None` if
    /// Redis cannot say. Runs on a client's thread, at most [`QUERY_TIMEOUT`].
    pub(crate) fn history(&self, room: &str) -> Option<Vec<Entry>> {
        let s = &self.shared;
        if s.history == 0 || !self.is_up() {
            return None;
        }
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(s.history_key(room))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(s.history);
        let entries: Vec<(String, Vec<Vec<u8>>)> = s.query(|con| cmd.query(con))?;
        let mut out = Vec::with_capacity(entries.len());
        for (_, fields) in entries.into_iter().rev() {
            let Some(message) = fields.get(1) else {
                continue;
            };
            if let Some((
                _,
                Event::Lines {
                    id, lines, bytes, ..
                },
            )) = wire::decode(message)
            {
                out.push(Entry {
                    chunk: Chunk::from(bytes),
                    lines,
                    id: Some(id),
                });
            }
        }
        Some(out)
    }
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
        history: usize,
        stats: Arc<Stats>,
        hooks: Hooks,
    ) -> io::Result<Shared> {
        let client = client(&config.url)
            .map_err(|e| io::Error::other(format!("--redis {}: {e}", config.url)))?;
        Ok(Shared {
            node: Arc::from(config.node_id.as_str()),
            name: config.name.clone(),
            channel: format!("{}:lines", config.name),
            url: config.url.clone(),
            client,
            ttl: config.ttl,
            history,
            stats,
            hooks,
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            sent: Condvar::new(),
            link: Mutex::new(Link {
                publisher: false,
                subscriber: false,
                down_since: Some(Instant::now()),
                warned: false,
                ever_up: false,
            }),
            wake: Mutex::new(Wake::default()),
            woken: Condvar::new(),
            query: Mutex::new(None),
            outages: AtomicU64::new(0),
            stop: AtomicBool::new(false),
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

    /// Queues a message, or drops it (its lines counted) if the queue is full.
    fn push(&self, message: Vec<u8>, lines: u64, room: Option<String>) {
        let mut queue = lock(&self.queue);
        self.enqueue(&mut queue, message, lines, room);
        drop(queue);
        self.queued.notify_one();
    }

    /// Queues freeing a name: tiny and bounded by the number of leaving clients, so never
    /// dropped, or the name would stay taken until it expires.
    fn enqueue_release(&self, queue: &mut Queue, id: u64, name: &str) {
        let item = Item::Release {
            key: self.name_key(name),
            value: self.owner(id),
        };
        queue.bytes += item.len();
        queue.items.push_back(item);
    }

    fn enqueue(&self, queue: &mut Queue, message: Vec<u8>, lines: u64, room: Option<String>) {
        let item = Item::Publish {
            message,
            lines,
            room,
        };
        if queue.bytes + item.len() > QUEUE_LIMIT {
            add(&self.stats.cluster_dropped, lines);
            return;
        }
        queue.bytes += item.len();
        self.stats
            .cluster_queue_bytes
            .store(queue.bytes as u64, Ordering::Relaxed);
        queue.items.push_back(item);
    }

    /// Runs `f` on the query connection, connecting it first if needed; `None` (and the
    /// connection dropped, to be made again next time) if Redis did not answer. A connection
    /// kept from before may have died with a restarted Redis: then `f` is tried once more on
    /// a new one (every query is safe to repeat).
    fn query<T>(
        &self,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        let mut query = lock(&self.query);
        for _ in 0..2 {
            let kept = query.is_some();
            let con = match query.take() {
                Some(con) => con,
                None => match self.query_connection() {
                    Ok(con) => con,
                    Err(e) => {
                        debug!("cluster: query connection: {e}");
                        return None;
                    }
                },
            };
            let con = query.insert(con);
            match f(con) {
                Ok(v) => return Some(v),
                Err(e) => {
                    // After a timeout a late answer would be read as the next command's: the
                    // connection goes either way.
                    debug!("cluster: query failed: {e}");
                    *query = None;
                    if !kept {
                        return None;
                    }
                }
            }
        }
        None
    }

    fn query_connection(&self) -> redis::RedisResult<redis::Connection> {
        let con = self.client.get_connection_with_timeout(QUERY_TIMEOUT)?;
        con.set_read_timeout(Some(QUERY_TIMEOUT))?;
        con.set_write_timeout(Some(QUERY_TIMEOUT))?;
        Ok(con)
    }

    /// Records that one side's connection came up or went down, and logs the link's
    /// transitions: one line when it goes down (or is not there at start), one when it is
    /// back, saying for how long it was down.
    fn set(&self, side: Side, up: bool, why: Option<&redis::RedisError>) {
        let mut link = lock(&self.link);
        match side {
            Side::Publisher => link.publisher = up,
            Side::Subscriber => link.subscriber = up,
        }
        let both = link.publisher && link.subscriber;
        self.stats
            .redis_connected
            .store(u64::from(both), Ordering::Relaxed);
        if both {
            let down = link.down_since.take().map(|t| t.elapsed());
            if link.ever_up {
                let down = down.unwrap_or_default();
                info!(
                    "cluster: link to redis {} back after {:.1}s down",
                    self.url,
                    down.as_secs_f64()
                );
            } else {
                let after = match (link.warned, down) {
                    (true, Some(down)) => format!(" after {:.1}s unreachable", down.as_secs_f64()),
                    _ => String::new(),
                };
                info!(
                    "cluster: linked to redis {} as node {} on channel {}{after}",
                    self.url, self.node, self.channel
                );
            }
            link.ever_up = true;
            link.warned = false;
        } else if !up {
            if link.down_since.is_none() {
                link.down_since = Some(Instant::now());
            }
            if !link.warned {
                link.warned = true;
                let why = why.map_or_else(String::new, |e| format!(": {e}"));
                if link.ever_up {
                    warn!(
                        "cluster: lost redis {}{why}; relaying locally, dropping cluster lines \
                         that do not fit the queue, reconnecting",
                        self.url
                    );
                } else {
                    warn!(
                        "cluster: redis {} unreachable{why}; serving local clients, retrying",
                        self.url
                    );
                }
            }
        }
    }

    /// Connects, with back-off between failed attempts; `None` once stopping.
    fn connect(&self, side: Side) -> Option<redis::Connection> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.stopping() {
                return None;
            }
            match self.client.get_connection_with_timeout(IO_TIMEOUT) {
                Ok(con) => return Some(con),
                Err(e) => {
                    self.set(side, false, Some(&e));
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn publisher(&self) {
        loop {
            // Taken before connecting: an outage that the subscriber sees from here on is
            // one this connection may not have survived.
            let outages = self.outages.load(Ordering::Relaxed);
            let Some(mut con) = self.connect(Side::Publisher) else {
                return;
            };
            // A Redis that stops answering must not hold the queue forever: it fills, and
            // further lines are dropped and counted.
            let timeouts = con
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| con.set_write_timeout(Some(IO_TIMEOUT)));
            if let Err(e) = timeouts {
                self.set(Side::Publisher, false, Some(&e));
                continue;
            }
            self.set(Side::Publisher, true, None);
            let e = self.publish_queued(&mut con, outages);
            self.set(Side::Publisher, false, e.as_ref());
            if self.stopping() {
                return;
            }
        }
    }

    /// Publishes what is queued, in order, until the connection fails (its error), the
    /// subscriber has lost Redis since `outages` was read, or the daemon stops (`None`).
    fn publish_queued(
        &self,
        con: &mut redis::Connection,
        outages: u64,
    ) -> Option<redis::RedisError> {
        loop {
            let batch: Vec<Item> = {
                let mut queue = lock(&self.queue);
                loop {
                    if self.outages.load(Ordering::Relaxed) != outages {
                        return None;
                    }
                    if !queue.items.is_empty() {
                        break;
                    }
                    if self.stopping() {
                        return None;
                    }
                    queue = sync::wait(&self.queued, queue);
                }
                let n = queue.items.len().min(BATCH);
                queue.sending = true;
                let batch: Vec<Item> = queue.items.drain(..n).collect();
                queue.bytes -= batch.iter().map(Item::len).sum::<usize>();
                self.stats
                    .cluster_queue_bytes
                    .store(queue.bytes as u64, Ordering::Relaxed);
                batch
            };
            let mut pipe = redis::pipe();
            for item in &batch {
                match item {
                    Item::Publish { message, room, .. } => {
                        if let Some(room) = room {
                            // Approximate trimming (`~`) keeps at least `history` entries, each
                            // at least one line, at a fraction of exact trimming's cost.
                            pipe.cmd("XADD")
                                .arg(self.history_key(room))
                                .arg("MAXLEN")
                                .arg("~")
                                .arg(self.history)
                                .arg("*")
                                .arg("m")
                                .arg(message.as_slice())
                                .ignore();
                        }
                        pipe.cmd("PUBLISH")
                            .arg(&self.channel)
                            .arg(message.as_slice())
                            .ignore();
                    }
                    Item::Release { key, value } => {
                        pipe.cmd("EVAL")
                            .arg(RELEASE)
                            .arg(1)
                            .arg(key)
                            .arg(value.as_slice())
                            .ignore();
                    }
                }
            }
            let lines: u64 = batch.iter().map(Item::lines).sum();
            let result = pipe.exec(con);
            lock(&self.queue).sending = false;
            self.sent.notify_all();
            if let Err(e) = result {
                // Whether Redis took them is unknown: dropped, so none is sent twice.
                add(&self.stats.cluster_dropped, lines);
                return Some(e);
            }
            add(&self.stats.cluster_published, lines);
        }
    }

    fn subscriber(&self) {
        while let Some(mut con) = self.connect(Side::Subscriber) {
            let mut pubsub = con.as_pubsub();
            let subscribed = pubsub
                .set_read_timeout(Some(KEEPALIVE))
                .and_then(|()| pubsub.subscribe(&self.channel));
            if let Err(e) = subscribed {
                self.set(Side::Subscriber, false, Some(&e));
                continue;
            }
            self.set(Side::Subscriber, true, None);
            // Whatever the others said while this node was not listening is lost: ask them.
            self.wake(|w| w.hello = true);
            let e = loop {
                match pubsub.get_message() {
                    Ok(msg) => self.receive(msg.get_payload_bytes()),
                    // Quiet, not necessarily gone: a ping tells (its answer waits at most
                    // KEEPALIVE too).
                    Err(e) if e.is_timeout() => {
                        if let Err(e) = pubsub.ping::<redis::Value>() {
                            break e;
                        }
                    }
                    Err(e) => break e,
                }
            };
            drop(pubsub);
            self.set(Side::Subscriber, false, Some(&e));
            if self.stopping() {
                return;
            }
            // The publisher makes its connection again too (see `outages`). The queue's lock
            // is taken between the count and the wake-up, so that a publisher about to wait
            // has either seen the new count or is waiting when woken.
            self.outages.fetch_add(1, Ordering::Relaxed);
            drop(lock(&self.queue));
            self.queued.notify_all();
        }
    }

    fn receive(&self, message: &[u8]) {
        let Some((node, event)) = wire::decode(message) else {
            warn!("cluster: malformed message on {}", self.channel);
            return;
        };
        if node == &*self.node {
            return;
        }
        match event {
            Event::Lines { lines, .. } => add(&self.stats.cluster_received, lines as u64),
            Event::Direct { to, .. } if to != &*self.node => return,
            Event::Snapshot { hello: true, .. } => self.wake(|w| w.answer = true),
            _ => {}
        }
        (self.hooks.deliver)(node, event);
    }

    fn wake(&self, f: impl FnOnce(&mut Wake)) {
        f(&mut lock(&self.wake));
        self.woken.notify_all();
    }

    /// Every third of the ttl, or when asked: publishes this node's clients and renews its
    /// names in Redis.
    fn heartbeat(&self) {
        let interval = self.ttl / 3;
        loop {
            let wake = {
                let deadline = Instant::now() + interval;
                let mut wake = wait_while_until(&self.woken, lock(&self.wake), deadline, |w| {
                    !w.hello && !w.answer && !self.stopping()
                });
                std::mem::take(&mut *wake)
            };
            if self.stopping() {
                return;
            }
            let local = (self.hooks.local)();
            let m = wire::snapshot(&self.node, wake.hello, &local.clients);
            // Checked under the queue's lock: once `farewell` has queued its empty snapshot,
            // none with clients follows it.
            let mut queue = lock(&self.queue);
            if self.stopping() {
                return;
            }
            self.enqueue(&mut queue, m, 0, None);
            drop(queue);
            self.queued.notify_one();
            self.renew(&local.names);
        }
    }

    /// Renews (or, after an outage, claims again) the names this node's clients hold; those
    /// another node took meanwhile go to the `lost_name` hook.
    fn renew(&self, names: &[(u64, String)]) {
        // Not waiting for the whole link: right after Redis comes back, the names are
        // claimed again before anyone else's node can take them.
        if names.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (id, name) in names {
            pipe.add_command(self.claim_cmd(*id, name, None));
        }
        let Some(held) = self.query(|con| pipe.query::<Vec<i64>>(con)) else {
            return;
        };
        for ((id, name), held) in names.iter().zip(held) {
            if held == 0 {
                warn!("cluster: name {name} of client {id} was taken by another node meanwhile");
                (self.hooks.lost_name)(*id, name);
            }
        }
    }
}
