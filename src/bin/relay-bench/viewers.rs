//! `danmaku`'s figures about the crowd, from each viewer's own counts: what each viewer got
//! and how old it was, what the senders managed against what they were asked, what stalled
//! and cut-off viewers cost; shown as notes under the table row and as one JSON object.

use std::sync::atomic::Ordering;

use crate::histogram::Histogram;
use crate::json::{json_num, json_str};
use crate::params::Params;
use crate::receiver::{Progress, RxReport};

/// What became of the `--slow` viewers, read at the end of the run.
#[derive(Clone, Debug)]
pub struct Slow {
    pub count: usize,
    /// Closed by the server (the others were still connected, stalled).
    pub cut: usize,
    /// Bytes that were waiting for them, all together (in their sockets' buffers and, for a
    /// viewer still connected, in the server's queue).
    pub bytes_waiting: u64,
}

/// The crowd's figures.
#[derive(Clone, Debug)]
pub struct Viewers {
    pub transport: &'static str,
    /// Viewers that read (`--viewers`), not counting `--slow` ones.
    pub viewers: usize,
    pub senders: usize,
    /// Lines/s asked of the senders, all together.
    pub offered: f64,
    /// Measured lines the senders handed to the kernel within `--duration` (and the grace
    /// for the last ones).
    pub sent: u64,
    /// `--duration`, seconds: the window rates are counted over.
    pub secs: f64,
    /// Measured lines the viewers received, all together.
    pub received: u64,
    /// Each viewer's received lines/s: min, median, max. Over `--duration`, or up to its last
    /// line if that came later: lines that arrive late lower the rate, as they would on
    /// screen.
    pub rate: Option<[f64; 3]>,
    /// Age of every delivery to a viewer (µs): p50, p99...
    pub age: Option<[f64; 2]>,
    /// ...and the worst viewer's own p99 (µs).
    pub worst_p99: Option<f64>,
    /// Viewers the server closed.
    pub cut: usize,
    pub slow: Slow,
    /// Server RSS (KiB) before any viewer connected and once every one was registered.
    pub idle_rss_kib: Option<(u64, u64)>,
}

impl Viewers {
    pub fn new(
        p: &Params,
        rep: RxReport,
        progress: &Progress,
        slow: Slow,
        idle_rss_kib: Option<(u64, u64)>,
    ) -> Viewers {
        let secs = p.duration.as_secs_f64();
        let sent = progress.sent.iter().map(|s| s.load(Ordering::SeqCst)).sum();
        let start = progress.start_ns.load(Ordering::SeqCst);
        let mut rates: Vec<f64> = rep
            .viewers
            .iter()
            .map(|v| {
                let span = v.last_ns.saturating_sub(start) as f64 / 1e9;
                v.delivered as f64 / span.max(secs)
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        let rate = (!rates.is_empty()).then(|| {
            let mid = rates.len() / 2;
            let median = if rates.len() % 2 == 1 {
                rates[mid]
            } else {
                (rates[mid - 1] + rates[mid]) / 2.0
            };
            [rates[0], median, rates[rates.len() - 1]]
        });
        let us = |h: &Histogram, q: f64| h.quantile(q).map(|ns| ns as f64 / 1e3);
        let age = us(&rep.viewer_age, 0.5).zip(us(&rep.viewer_age, 0.99));
        let worst_p99 = rep
            .viewers
            .iter()
            .filter_map(|v| us(&v.age, 0.99))
            .max_by(f64::total_cmp);
        Viewers {
            transport: p.transport.name(),
            viewers: rep.viewers.len(),
            senders: p.senders,
            offered: p.rate.unwrap_or(0.0),
            sent,
            secs,
            received: rep.viewers.iter().map(|v| v.delivered).sum(),
            rate,
            age: age.map(|(a, b)| [a, b]),
            worst_p99,
            cut: rep.viewers.iter().filter(|v| v.cut).count(),
            slow,
            idle_rss_kib,
        }
    }

    /// Lines/s the senders handed to the kernel, all together.
    pub fn achieved(&self) -> f64 {
        self.sent as f64 / self.secs
    }

    /// Achieved as a percentage of the offered rate.
    pub fn achieved_pct(&self) -> Option<f64> {
        (self.offered > 0.0).then(|| 100.0 * self.achieved() / self.offered)
    }

    /// Lines sent × viewers − lines received: what the viewers did not get.
    pub fn drops(&self) -> u64 {
        (self.sent * self.viewers as u64).saturating_sub(self.received)
    }

    /// What each viewer, slow ones included, added to the server's resident memory while
    /// connected and idle.
    pub fn idle_rss_per_viewer_kib(&self) -> Option<f64> {
        let (before, after) = self.idle_rss_kib?;
        let n = (self.viewers + self.slow.count).max(1);
        Some(after.saturating_sub(before) as f64 / n as f64)
    }

    /// The notes under the table row.
    pub fn notes(&self) -> Vec<String> {
        let ms = |us: f64| format!("{:.1}ms", us / 1e3);
        let mut n = vec![format!(
            "{} {} viewers: each received {} lines/s (min/median/max), age p50 {} p99 {} \
             (worst viewer's p99 {}), {} drops, {} cut off",
            self.viewers,
            self.transport,
            self.rate
                .map_or("-".into(), |[a, b, c]| format!("{a:.0}/{b:.0}/{c:.0}")),
            self.age.map_or("-".into(), |[a, _]| ms(a)),
            self.age.map_or("-".into(), |[_, b]| ms(b)),
            self.worst_p99.map_or("-".into(), ms),
            self.drops(),
            self.cut,
        )];
        n.push(format!(
            "{} senders achieved {:.0} of {:.0} lines/s offered ({})",
            self.senders,
            self.achieved(),
            self.offered,
            self.achieved_pct()
                .map_or("-".into(), |p| format!("{p:.1}%")),
        ));
        if let Some(k) = self.idle_rss_per_viewer_kib() {
            n.push(format!("server RSS {k:.1} KiB per idle viewer"));
        }
        if self.slow.count > 0 {
            n.push(format!(
                "{} slow viewers: {} cut off, {} still connected; {:.0} KiB had waited for each",
                self.slow.count,
                self.slow.cut,
                self.slow.count - self.slow.cut,
                self.slow.bytes_waiting as f64 / 1024.0 / self.slow.count as f64,
            ));
        }
        n
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        let three = |i: usize| json_num(self.rate.map(|r| r[i]));
        format!(
            "{{\"transport\":{},\"viewers\":{},\"senders\":{},\"offered_per_sec\":{},\"sent\":{},\
             \"achieved_per_sec\":{},\"achieved_pct\":{},\"received\":{},\"drops\":{},\"cut\":{},\
             \"rate_min\":{},\"rate_median\":{},\"rate_max\":{},\"age_p50_us\":{},\
             \"age_p99_us\":{},\"worst_viewer_p99_us\":{},\"slow\":{},\"slow_cut\":{},\
             \"slow_connected\":{},\"slow_bytes_waiting\":{},\"idle_rss_per_viewer_kib\":{}}}",
            json_str(self.transport),
            self.viewers,
            self.senders,
            json_num(Some(self.offered)),
            self.sent,
            json_num(Some(self.achieved())),
            json_num(self.achieved_pct()),
            self.received,
            self.drops(),
            self.cut,
            three(0),
            three(1),
            three(2),
            json_num(self.age.map(|a| a[0])),
            json_num(self.age.map(|a| a[1])),
            json_num(self.worst_p99),
            self.slow.count,
            self.slow.cut,
            self.slow.count - self.slow.cut,
            self.slow.bytes_waiting,
            json_num(self.idle_rss_per_viewer_kib()),
        )
    }
}
