//! The publisher thread: sends what the `Cluster` handle and the heartbeat queued to Redis,
//! in order and in pipelined batches, over a connection of its own. While Redis is slow or
//! gone the queue fills, and what does not fit is dropped (see `Shared::enqueue`); a batch
//! taken and not known to be sent is dropped and counted too, so that nothing is sent twice.
//!
//! Lines go through one script, [`STAMP`], that appends them to their room's history stream
//! and publishes them with the stream entry's id: Redis runs a script whole, so the channel
//! carries every room's lines in its stream's order, each with its id, to every node (this
//! one too, which delivers its own lines to its JSON clients then: see `daemon/remote.rs`).
//! A node of a relayd before line ids reads the `K` messages this publishes as malformed
//! (logged and dropped), and its own `L` messages reach this one without ids: a cluster is
//! upgraded all at once.

use std::sync::atomic::Ordering;

use crate::cluster::link::{IO_TIMEOUT, Side};
use crate::cluster::wire::STAMPED;
use crate::cluster::{HISTORY_IDLE, Item, RELEASE, Shared};
use crate::delivery::line_id::now_ms;
use crate::stats::add;
use crate::sync::{self, lock};

/// Appends lines to their room's history stream (`KEYS[1]`), keeping about `ARGV[1]`
/// entries and, if `ARGV[5]` is not empty, none older than that id, as fields `m` (the `L`
/// message, `ARGV[2]`) and `s` (its sender, `ARGV[3]`), and publishes them on the channel
/// (`KEYS[2]`) stamped with the new entry's id: `ARGV[4]` (the node and the kind `K`, as long
/// as the `L` message's start it replaces), the id, a NUL, the sender, the rest of the `L`
/// message (see `wire.rs`). Returns the id.
pub(super) const STAMP: &str = "local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], \
    '*', 'm', ARGV[2], 's', ARGV[3]) \
    if ARGV[5] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[5]) end \
    redis.call('PUBLISH', KEYS[2], \
    ARGV[4] .. id .. '\\0' .. ARGV[3] .. string.sub(ARGV[2], string.len(ARGV[4]) + 1)) \
    return id";

/// Messages sent in one pipelined round trip at most.
const BATCH: usize = 256;

impl Shared {
    pub(super) fn publisher(&self) {
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
            // Loaded on each connection: a Redis that restarted has forgotten it.
            let loaded = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(STAMP)
                .query::<String>(&mut con);
            let stamp = match loaded {
                Ok(sha) => sha,
                Err(e) => {
                    self.set(Side::Publisher, false, Some(&e));
                    continue;
                }
            };
            self.set(Side::Publisher, true, None);
            let e = self.publish_queued(&mut con, outages, &stamp);
            self.set(Side::Publisher, false, e.as_ref());
            if self.stopping() || self.has_left() {
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
        stamp: &str,
    ) -> Option<redis::RedisError> {
        let kind = [0, STAMPED];
        loop {
            let batch: Vec<Item> = {
                let mut queue = lock(&self.queue);
                loop {
                    // Having left the cluster, the node sends nothing more, queued or not.
                    if self.outages.load(Ordering::Relaxed) != outages || self.has_left() {
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
            // The oldest id a stream keeps, by `--history-age` (this node's clock, which the
            // stream's ids, Redis's clock, are close to).
            let oldest = self.age.map_or_else(String::new, |age| {
                let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                format!("{}-0", now_ms().saturating_sub(ms))
            });
            let mut pipe = redis::pipe();
            // Streams given their expiry in this batch: once each, after its first entry.
            let mut expiring: Vec<&str> = Vec::new();
            for item in &batch {
                match item {
                    Item::Publish {
                        message,
                        stream: Some(stream),
                        ..
                    } => {
                        let room = &stream.room;
                        // Approximate trimming (`~`) keeps at least `keep` entries, each at
                        // least one line, at a fraction of exact trimming's cost.
                        pipe.cmd("EVALSHA")
                            .arg(stamp)
                            .arg(2)
                            .arg(self.history_key(room))
                            .arg(&self.channel)
                            .arg(self.keep)
                            .arg(message.as_slice())
                            .arg(stream.sender.as_slice())
                            .arg([self.node.as_bytes(), &kind].concat())
                            .arg(&oldest)
                            .ignore();
                        if !expiring.contains(&room.as_str()) {
                            expiring.push(room);
                            pipe.cmd("EXPIRE")
                                .arg(self.history_key(room))
                                .arg(HISTORY_IDLE.as_secs())
                                .ignore();
                        }
                    }
                    Item::Publish { message, .. } => {
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
}
