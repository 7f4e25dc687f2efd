//! A latency histogram with fixed buckets, for `/metrics`: how long relayed lines waited in
//! relayd, from being read to being written to a recipient's socket.
//!
//! Lock-free: two relaxed atomic adds (a bucket, the sum) per observation, on the delivery path, where a
//! lock shared by every sender would cost more than the delivery. A scrape may see an
//! observation in one field and not yet in another; Prometheus tolerates that, and the next
//! scrape agrees again.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: from a direct send on an idle machine (tens
/// of µs) to the longest a line can wait for a slow peer (`--stall-timeout`, then
/// `--write-timeout`: seconds).
const BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

#[derive(Debug)]
pub(crate) struct Histogram {
    /// Observations per bucket, not cumulative; the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records `lines` lines that each waited `waited` (the lines of one chunk, read at
    /// once and written to one recipient at once).
    // Called by the delivery path, where a chunk's last byte reaches a recipient's socket.
    pub(crate) fn observe(&self, waited: Duration, lines: u64) {
        if lines == 0 {
            return;
        }
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[i].fetch_add(lines, Ordering::Relaxed);
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns
            .fetch_add(ns.saturating_mul(lines), Ordering::Relaxed);
    }

    /// Appends the histogram in the Prometheus text format (0.0.4), in seconds, as `name`.
    pub(crate) fn expose(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match BOUNDS_US.get(i) {
                Some(&us) => {
                    let le = us as f64 / 1e6;
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        // The count is the +Inf bucket, so that the two always agree.
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50), 2);
        h.observe(Duration::from_micros(51), 1);
        h.observe(Duration::from_secs(60), 1);
        h.observe(Duration::from_secs(1), 0);
        let mut out = String::new();
        h.expose("w_seconds", "waits", &mut out);
        assert!(
            out.contains("w_seconds_bucket{le=\"0.00005\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("w_seconds_bucket{le=\"0.0001\"} 3\n"), "{out}");
        assert!(out.contains("w_seconds_bucket{le=\"10\"} 3\n"), "{out}");
        assert!(out.contains("w_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("w_seconds_count 4\n"), "{out}");
        assert!(out.contains("w_seconds_sum 60.000151\n"), "{out}");
        assert!(out.starts_with("# HELP w_seconds waits\n# TYPE w_seconds histogram\n"));
    }
}
