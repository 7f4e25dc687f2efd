//! Daemon-wide counters for the operator's `stats` command and `/metrics`.
//!
//! Plain relaxed atomics: each is bumped on its own path, nothing reads two of them expecting
//! them to agree, and a relaxed add costs the hot path next to nothing (no lock, no fence).

pub(crate) mod latency;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::stats::latency::Histogram;

#[derive(Debug)]
pub(crate) struct Stats {
    pub started: Instant,
    pub peak_clients: AtomicU64,
    pub accepted: AtomicU64,
    pub refused_full: AtomicU64,
    pub lines_in: AtomicU64,
    pub lines_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dropped_rate_limit: AtomicU64,
    pub too_long: AtomicU64,
    /// Lines the word filter dropped, and lines it masked (one each, however many words).
    pub filtered_dropped: AtomicU64,
    pub filtered_masked: AtomicU64,
    /// Connections and `/auth`s refused for a ban, and `/join`s refused for a ban from the
    /// room; lines dropped for a mute, and for a room's slow mode.
    pub refused_banned: AtomicU64,
    pub dropped_muted: AtomicU64,
    pub dropped_slow: AtomicU64,
    pub slow_consumer_kicks: AtomicU64,
    pub idle_kicks: AtomicU64,
    /// Relayed lines dropped for viewers of live rooms (over `--live-rate`, older than
    /// `--live-max-age`, or not fitting `--max-pending`).
    pub live_dropped: AtomicU64,
    /// 1 while both connections to the cluster's Redis are up, else 0 (a gauge).
    pub redis_connected: AtomicU64,
    /// Lines published to the cluster, received from other nodes, and dropped (the publish
    /// queue full, or a publish that failed).
    pub cluster_published: AtomicU64,
    pub cluster_received: AtomicU64,
    pub cluster_dropped: AtomicU64,
    /// Bytes waiting to be published (a gauge).
    pub cluster_queue_bytes: AtomicU64,
    /// Signed tokens accepted (a client identified or refreshed), and refused, by reason
    /// (in the order of `TokenError::REASONS`).
    pub tokens_accepted: AtomicU64,
    pub tokens_refused: [AtomicU64; 5],
    /// How long relayed lines waited in relayd, from read to written to a recipient's socket.
    pub line_wait: Histogram,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            started: Instant::now(),
            peak_clients: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            lines_in: AtomicU64::new(0),
            lines_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            dropped_rate_limit: AtomicU64::new(0),
            too_long: AtomicU64::new(0),
            filtered_dropped: AtomicU64::new(0),
            filtered_masked: AtomicU64::new(0),
            refused_banned: AtomicU64::new(0),
            dropped_muted: AtomicU64::new(0),
            dropped_slow: AtomicU64::new(0),
            slow_consumer_kicks: AtomicU64::new(0),
            idle_kicks: AtomicU64::new(0),
            live_dropped: AtomicU64::new(0),
            redis_connected: AtomicU64::new(0),
            cluster_published: AtomicU64::new(0),
            cluster_received: AtomicU64::new(0),
            cluster_dropped: AtomicU64::new(0),
            cluster_queue_bytes: AtomicU64::new(0),
            tokens_accepted: AtomicU64::new(0),
            tokens_refused: Default::default(),
            line_wait: Histogram::default(),
        }
    }
}

/// `counter += n`, relaxed.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Stats {
    /// The `stats` answer: one `key value` line each, in a fixed order. `clients` and `rooms`
    /// are the registry's, passed in because they are not counters.
    pub(crate) fn report(&self, clients: usize, rooms: usize) -> String {
        let mut out = String::new();
        for (key, value) in self.rows(clients, rooms) {
            out.push_str(&format!("{key} {value}\n"));
        }
        out
    }

    /// Every counter by name, in the `stats` order: the control socket's lines and the API's
    /// JSON are both made from these.
    pub(crate) fn rows(&self, clients: usize, rooms: usize) -> [(&'static str, u64); 27] {
        let refused = self.tokens_refused.iter().map(get).sum();
        [
            ("uptime_seconds", self.started.elapsed().as_secs()),
            ("clients", clients as u64),
            ("peak_clients", get(&self.peak_clients)),
            ("accepted", get(&self.accepted)),
            ("refused_full", get(&self.refused_full)),
            ("lines_in", get(&self.lines_in)),
            ("lines_out", get(&self.lines_out)),
            ("bytes_in", get(&self.bytes_in)),
            ("bytes_out", get(&self.bytes_out)),
            ("dropped_rate_limit", get(&self.dropped_rate_limit)),
            ("too_long", get(&self.too_long)),
            ("filtered_dropped", get(&self.filtered_dropped)),
            ("filtered_masked", get(&self.filtered_masked)),
            ("refused_banned", get(&self.refused_banned)),
            ("dropped_muted", get(&self.dropped_muted)),
            ("dropped_slow", get(&self.dropped_slow)),
            ("slow_consumer_kicks", get(&self.slow_consumer_kicks)),
            ("idle_kicks", get(&self.idle_kicks)),
            ("rooms", rooms as u64),
            ("redis_connected", get(&self.redis_connected)),
            ("cluster_published", get(&self.cluster_published)),
            ("cluster_received", get(&self.cluster_received)),
            ("cluster_dropped", get(&self.cluster_dropped)),
            ("cluster_queue_bytes", get(&self.cluster_queue_bytes)),
            ("tokens_accepted", get(&self.tokens_accepted)),
            ("tokens_refused", refused),
            ("live_dropped", get(&self.live_dropped)),
        ]
    }
}
