//! The cluster link: this node's connections to Redis, which relays lines between relayd
//! nodes with pub/sub (`PUBLISH`/`SUBSCRIBE` on the channel `<cluster>:lines`).
//!
//! Two threads, each with its own connection, so that neither a client's reader nor the
//! delivery of remote lines ever waits on the other direction:
//! - the publisher sends what [`Cluster::publish`] queued. The queue is bounded in bytes
//!   (like a peer's): a reader only appends to it, and what does not fit while Redis is slow
//!   or gone is dropped and counted, never waited for.
//! - the subscriber receives the other nodes' lines and hands them to the `Deliver` function
//!   given at start, which delivers them the way local lines are delivered. It skips this
//!   node's own messages, and nothing it delivers is published again, so lines cannot loop.
//!
//! Both threads reconnect on their own with back-off; the link is "up" (`redis_connected 1`)
//! while both are connected. This module knows nothing of the daemon: the daemon owns the
//! [`Cluster`] handle and passes in the callback, so dependencies run one way.
//!
//! A message is `node \0 room \0 lines (u32, big-endian) bytes`: node ids and room names
//! never hold a NUL (checked at startup and by the chat parser respectively).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::ClusterConfig;
use crate::stats::{Stats, add};
use crate::sync::lock;

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
/// A subscriber that hears nothing for this long pings Redis, so a link that died silently
/// (a partition, a host gone without a reset) is noticed within two of these.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Messages sent in one pipelined round trip at most.
const BATCH: usize = 256;

/// What the subscriber calls with each remote line: room, bytes, how many lines.
pub(crate) type Deliver = Box<dyn Fn(&str, &[u8], usize) + Send>;

/// Checks a `--redis` URL without connecting, for a one-line startup error.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("--redis {url}: {e}"))
}

/// The daemon's handle on the cluster link.
pub(crate) struct Cluster {
    shared: Arc<Shared>,
}

struct Shared {
    node: String,
    channel: String,
    url: String,
    stats: Arc<Stats>,
    queue: Mutex<Queue>,
    queued: Condvar,
    link: Mutex<Link>,
    stop: AtomicBool,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Vec<u8>>,
    bytes: usize,
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
    /// Starts the publisher and subscriber threads. They connect in the background: a
    /// Redis that is not there yet costs one log line, not the node's start.
    pub(crate) fn start(
        config: &ClusterConfig,
        stats: Arc<Stats>,
        deliver: Deliver,
    ) -> io::Result<Cluster> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| io::Error::other(format!("--redis {}: {e}", config.url)))?;
        let shared = Arc::new(Shared {
            node: config.node_id.clone(),
            channel: format!("{}:lines", config.name),
            url: config.url.clone(),
            stats,
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            link: Mutex::new(Link {
                publisher: false,
                subscriber: false,
                down_since: Some(Instant::now()),
                warned: false,
                ever_up: false,
            }),
            stop: AtomicBool::new(false),
        });
        let (s, c) = (Arc::clone(&shared), client.clone());
        thread::Builder::new()
            .name("cluster-pub".into())
            .spawn(move || s.publisher(&c))?;
        let s = Arc::clone(&shared);
        thread::Builder::new()
            .name("cluster-sub".into())
            .spawn(move || s.subscriber(&client, &deliver))?;
        Ok(Cluster { shared })
    }

    /// Queues a local client's lines for the other nodes; drops them (counted) if the queue
    /// is full. Never blocks on Redis.
    pub(crate) fn publish(&self, room: &str, bytes: &[u8], lines: usize) {
        let s = &self.shared;
        let mut message = Vec::with_capacity(s.node.len() + room.len() + 6 + bytes.len());
        message.extend_from_slice(s.node.as_bytes());
        message.push(0);
        message.extend_from_slice(room.as_bytes());
        message.push(0);
        message.extend_from_slice(&u32::try_from(lines).unwrap_or(u32::MAX).to_be_bytes());
        message.extend_from_slice(bytes);
        let mut queue = lock(&s.queue);
        if queue.bytes + message.len() > QUEUE_LIMIT {
            drop(queue);
            add(&s.stats.cluster_dropped, lines as u64);
            return;
        }
        queue.bytes += message.len();
        s.stats
            .cluster_queue_bytes
            .store(queue.bytes as u64, Ordering::Relaxed);
        queue.messages.push_back(message);
        drop(queue);
        s.queued.notify_one();
    }
}

impl Drop for Cluster {
    /// Ends the publisher. The subscriber is blocked reading its socket and ends with the
    /// process; it holds no client's state.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.queued.notify_all();
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
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
    fn connect(&self, client: &redis::Client, side: Side) -> Option<redis::Connection> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.stopping() {
                return None;
            }
            match client.get_connection_with_timeout(IO_TIMEOUT) {
                Ok(con) => return Some(con),
                Err(e) => {
                    self.set(side, false, Some(&e));
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn publisher(&self, client: &redis::Client) {
        while let Some(mut con) = self.connect(client, Side::Publisher) {
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
            let e = self.publish_queued(&mut con);
            self.set(Side::Publisher, false, e.as_ref());
        }
    }

    /// Publishes what is queued, in order, until the connection fails (its error) or the
    /// daemon stops (`None`).
    fn publish_queued(&self, con: &mut redis::Connection) -> Option<redis::RedisError> {
        loop {
            let batch: Vec<Vec<u8>> = {
                let mut queue = lock(&self.queue);
                while queue.messages.is_empty() {
                    if self.stopping() {
                        return None;
                    }
                    queue = self.queued.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
                let n = queue.messages.len().min(BATCH);
                let batch: Vec<Vec<u8>> = queue.messages.drain(..n).collect();
                queue.bytes -= batch.iter().map(Vec::len).sum::<usize>();
                self.stats
                    .cluster_queue_bytes
                    .store(queue.bytes as u64, Ordering::Relaxed);
                batch
            };
            let mut pipe = redis::pipe();
            for message in &batch {
                pipe.cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(message.as_slice())
                    .ignore();
            }
            let lines = |batch: &[Vec<u8>]| -> u64 {
                batch
                    .iter()
                    .filter_map(|m| parse(m))
                    .map(|m| m.lines as u64)
                    .sum()
            };
            if let Err(e) = pipe.exec(con) {
                // Whether Redis took them is unknown: dropped, so none is sent twice.
                add(&self.stats.cluster_dropped, lines(&batch));
                return Some(e);
            }
            add(&self.stats.cluster_published, lines(&batch));
        }
    }

    fn subscriber(&self, client: &redis::Client, deliver: &Deliver) {
        while let Some(mut con) = self.connect(client, Side::Subscriber) {
            let mut pubsub = con.as_pubsub();
            let subscribed = pubsub
                .set_read_timeout(Some(KEEPALIVE))
                .and_then(|()| pubsub.subscribe(&self.channel));
            if let Err(e) = subscribed {
                self.set(Side::Subscriber, false, Some(&e));
                continue;
            }
            self.set(Side::Subscriber, true, None);
            let e = loop {
                match pubsub.get_message() {
                    Ok(msg) => {
                        let Some(m) = parse(msg.get_payload_bytes()) else {
                            warn!("cluster: malformed message on {}", self.channel);
                            continue;
                        };
                        if m.node == self.node.as_bytes() {
                            continue;
                        }
                        let Ok(room) = std::str::from_utf8(m.room) else {
                            continue;
                        };
                        add(&self.stats.cluster_received, m.lines as u64);
                        deliver(room, m.bytes, m.lines);
                    }
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
        }
    }
}

struct Message<'a> {
    node: &'a [u8],
    room: &'a [u8],
    lines: usize,
    bytes: &'a [u8],
}

fn parse(message: &[u8]) -> Option<Message<'_>> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let node = parts.next()?;
    let room = parts.next()?;
    let rest = parts.next()?;
    let (lines, bytes) = rest.split_first_chunk::<4>()?;
    Some(Message {
        node,
        room,
        lines: u32::from_be_bytes(*lines) as usize,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_publish_builds() {
        let mut m = b"node-1\0lobby\0".to_vec();
        m.extend_from_slice(&2u32.to_be_bytes());
        m.extend_from_slice(b"a\0b\nc\n");
        let p = parse(&m).unwrap();
        assert_eq!(
            (p.node, p.room, p.lines),
            (&b"node-1"[..], &b"lobby"[..], 2)
        );
        assert_eq!(p.bytes, b"a\0b\nc\n");
        assert!(parse(b"node\0room").is_none());
        assert!(parse(b"node\0room\0ab").is_none());
    }
}
