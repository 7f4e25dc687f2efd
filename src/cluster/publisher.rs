//! The publisher thread: sends what the `Cluster` handle and the heartbeat queued to Redis,
//! in order and in pipelined batches, over a connection of its own. While Redis is slow or
//! gone the queue fills, and what does not fit is dropped (see `Shared::enqueue`); a batch
//! taken and not known to be sent is dropped and counted too, so that nothing is sent twice.

use std::sync::atomic::Ordering;

use crate::cluster::link::{IO_TIMEOUT, Side};
use crate::cluster::{HISTORY_IDLE, Item, RELEASE, Shared};
use crate::stats::add;
use crate::sync::{self, lock};

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
            self.set(Side::Publisher, true, None);
            let e = self.publish_queued(&mut con, outages);
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
    ) -> Option<redis::RedisError> {
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
            let mut pipe = redis::pipe();
            // Streams given their expiry in this batch: once each, after its first entry.
            let mut expiring: Vec<&str> = Vec::new();
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
                            if !expiring.contains(&room.as_str()) {
                                expiring.push(room);
                                pipe.cmd("EXPIRE")
                                    .arg(self.history_key(room))
                                    .arg(HISTORY_IDLE.as_secs())
                                    .ignore();
                            }
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
}
