//! Whether the cluster link is up, and making its connections: the publisher and the
//! subscriber each connect with back-off, and report here each time their connection comes up
//! or goes down, so that `redis_connected` says whether both are up and each outage is logged
//! once going down and once coming back.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::cluster::Shared;
use crate::sync::lock;

/// Reconnection back-off: from this...
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ...doubling up to this, so a node notices a restarted Redis within seconds without
/// hammering a dead one.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long connecting, and one publish round trip, may take before the link counts as down.
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether each connection is up, for `redis_connected` and for logging each outage once.
pub(super) struct Link {
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
pub(super) enum Side {
    Publisher,
    Subscriber,
}

impl Link {
    /// Down since now: the node starts without the link, and has never had it.
    pub(super) fn new() -> Link {
        Link {
            publisher: false,
            subscriber: false,
            down_since: Some(Instant::now()),
            warned: false,
            ever_up: false,
        }
    }
}

impl Shared {
    /// Records that one side's connection came up or went down, and logs the link's
    /// transitions: one line when it goes down (or is not there at start), one when it is
    /// back, saying for how long it was down.
    pub(super) fn set(&self, side: Side, up: bool, why: Option<&redis::RedisError>) {
        let mut link = lock(&self.link);
        if self.has_left() {
            // Not an outage: nothing is logged, and nothing brings the link back.
            self.stats.redis_connected.store(0, Ordering::Relaxed);
            return;
        }
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

    /// Connects, with back-off between failed attempts; `None` once stopping, or once the
    /// node has left the cluster.
    pub(super) fn connect(&self, side: Side) -> Option<redis::Connection> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.stopping() || self.has_left() {
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
}
