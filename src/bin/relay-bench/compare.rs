//! `--compare` and `--compare-nodes`: two targets' runs paired in the order they ran, and for
//! every figure both medians and the ratio of each pair, as a table or as JSON lines.

use std::fmt::Write as _;

use crate::json::{json_fine, json_num, json_str};
use crate::report::{Latency, Measure, Outcome, opt, per_m, truncate};
use crate::viewers::Viewers;

/// A figure compared across targets: its name, and how to read it from an outcome.
struct Figure {
    name: &'static str,
    get: fn(&Outcome) -> Option<f64>,
    /// Shown with three significant digits rather than one decimal (values well below 1).
    fine: bool,
}

impl Figure {
    fn new(name: &'static str, get: fn(&Outcome) -> Option<f64>) -> Figure {
        Figure {
            name,
            get,
            fine: false,
        }
    }

    fn fine(name: &'static str, get: fn(&Outcome) -> Option<f64>) -> Figure {
        Figure {
            name,
            get,
            fine: true,
        }
    }

    fn text(&self, v: f64) -> String {
        if self.fine { per_m(v) } else { short(v) }
    }

    fn json(&self, v: Option<f64>) -> String {
        if self.fine { json_fine(v) } else { json_num(v) }
    }
}

fn figures() -> Vec<Figure> {
    fn m(o: &Outcome) -> Option<&Measure> {
        o.main.as_ref()
    }
    fn l(o: &Outcome) -> Option<&Latency> {
        m(o)?.latency.as_ref()
    }
    fn r(o: &Outcome) -> Option<&Latency> {
        m(o)?.remote_latency.as_ref()
    }
    fn v(o: &Outcome) -> Option<&Viewers> {
        o.viewers.as_ref()
    }
    vec![
        Figure::new("deliveries/s", |o| m(o).map(|m| m.per_sec)),
        Figure::new("lost", |o| m(o).map(|m| m.lost as f64)),
        Figure::new("p50 (us)", |o| l(o).map(|l| l.p50)),
        Figure::new("p99 (us)", |o| l(o).map(|l| l.p99)),
        Figure::new("p99.9 (us)", |o| l(o).map(|l| l.p999)),
        Figure::new("max (us)", |o| l(o).map(|l| l.max)),
        Figure::new("across Redis: p50 (us)", |o| r(o).map(|l| l.p50)),
        Figure::new("across Redis: p99 (us)", |o| r(o).map(|l| l.p99)),
        Figure::new("server CPU %", |o| m(o).and_then(|m| m.server_cpu)),
        Figure::fine("server CPU-s / M deliveries", |o| {
            m(o).and_then(Measure::server_cpu_per_m)
        }),
        Figure::new("server peak RSS (KiB)", |o| {
            o.server.as_ref()?.peak_rss_kib.map(|k| k as f64)
        }),
        Figure::new("generator CPU %", |o| m(o).map(|m| m.gen_cpu)),
        Figure::new("slow: kept % of baseline", Outcome::kept_pct),
        Figure::new("slow: fresh first line (ms)", Outcome::fresh_ms),
        Figure::new("danmaku: senders % offered", |o| v(o)?.achieved_pct()),
        Figure::new("danmaku: median rate", |o| Some(v(o)?.rate?[1])),
        Figure::new("danmaku: age p99 (us)", |o| Some(v(o)?.age?[1])),
        Figure::new("danmaku: worst p99 (us)", |o| v(o)?.worst_p99),
        Figure::new("danmaku: drops", |o| Some(v(o)?.drops() as f64)),
        Figure::new("danmaku: viewers cut off", |o| Some(v(o)?.cut as f64)),
        Figure::new("danmaku: KiB per idle viewer", |o| {
            v(o)?.idle_rss_per_viewer_kib()
        }),
    ]
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Each of the per-pair values `v` shown by `show`, separated by `sep`.
fn joined(v: &[Option<f64>], sep: &str, show: impl Fn(Option<f64>) -> String) -> String {
    v.iter().map(|&x| show(x)).collect::<Vec<_>>().join(sep)
}

fn short(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

/// The comparison of `a` (relayd) against `b` (the peer), runs paired in the order they ran:
/// per figure, each side's median and the median of the per-pair ratios a/b, then each ratio.
pub fn compare(a: &[Outcome], b: &[Outcome], json: bool) -> String {
    let (an, bn) = (
        a.first().map_or("A".into(), |o| o.target.clone()),
        b.first().map_or("B".into(), |o| o.target.clone()),
    );
    let mut s = String::new();
    if !json {
        let _ = writeln!(
            s,
            "\n{:<28} {:>10} {:>10}  {:>12}  per pair",
            "figure",
            truncate(&an, 10),
            truncate(&bn, 10),
            "ratio median"
        );
    }
    for f in figures() {
        let va: Vec<Option<f64>> = a.iter().map(f.get).collect();
        let vb: Vec<Option<f64>> = b.iter().map(f.get).collect();
        if va.iter().chain(&vb).all(Option::is_none) {
            continue;
        }
        let ratios: Vec<Option<f64>> = va
            .iter()
            .zip(&vb)
            .map(|(x, y)| match (x, y) {
                (Some(x), Some(y)) if *y != 0.0 => Some(x / y),
                _ => None,
            })
            .collect();
        let ma = median(va.iter().flatten().copied().collect());
        let mb = median(vb.iter().flatten().copied().collect());
        let mr = median(ratios.iter().flatten().copied().collect());
        if json {
            let list = joined(&ratios, ",", json_num);
            let _ = writeln!(
                s,
                "{{\"compare\":{},\"a\":{},\"b\":{},\"a_median\":{},\"b_median\":{},\
                 \"ratio_median\":{},\"ratios\":[{}]}}",
                json_str(f.name),
                json_str(&an),
                json_str(&bn),
                f.json(ma),
                f.json(mb),
                json_num(mr),
                list
            );
        } else {
            let list = joined(&ratios, " ", |r| opt(r, |r| format!("{r:.2}x")));
            let _ = writeln!(
                s,
                "{:<28} {:>10} {:>10}  {:>12}  {}",
                f.name,
                opt(ma, |v| f.text(v)),
                opt(mb, |v| f.text(v)),
                opt(mr, |r| format!("{r:.2}x")),
                list
            );
        }
    }
    s + &added(a, b, json)
}

/// When one side ran on several nodes and the other on one (`--compare-nodes`): what the
/// Redis hop added, pair by pair, as the latency across Redis on the one side minus the
/// latency of the single node in the same pair. Empty otherwise.
fn added(a: &[Outcome], b: &[Outcome], json: bool) -> String {
    let nodes = |o: &[Outcome]| o.first().map_or(1, |o| o.nodes);
    let (multi, single) = match (nodes(a), nodes(b)) {
        (x, 1) if x > 1 => (a, b),
        (1, y) if y > 1 => (b, a),
        _ => return String::new(),
    };
    let name = |o: &[Outcome]| o.first().map_or(String::new(), |o| o.target.clone());
    let mut s = String::new();
    if !json {
        let _ = writeln!(
            s,
            "\nadded by the Redis hop: {} across Redis minus {}, pair by pair",
            name(multi),
            name(single)
        );
    }
    type Pick = fn(&Latency) -> f64;
    let figures: [(&str, Pick); 2] = [("p50 (us)", |l| l.p50), ("p99 (us)", |l| l.p99)];
    for (fig, get) in figures {
        let diffs: Vec<Option<f64>> = multi
            .iter()
            .zip(single)
            .map(|(m, o)| {
                let remote = m.main.as_ref()?.remote_latency.as_ref()?;
                let one = o.main.as_ref()?.latency.as_ref()?;
                Some(get(remote) - get(one))
            })
            .collect();
        let med = median(diffs.iter().flatten().copied().collect());
        if json {
            let list = joined(&diffs, ",", json_num);
            let _ = writeln!(
                s,
                "{{\"added\":{},\"nodes\":{},\"single\":{},\"median\":{},\"pairs\":[{}]}}",
                json_str(fig),
                json_str(&name(multi)),
                json_str(&name(single)),
                json_num(med),
                list
            );
        } else {
            let list = joined(&diffs, " ", |d| opt(d, |d| format!("{d:+.0}")));
            let _ = writeln!(
                s,
                "{:<28} {:>10}  per pair {}",
                fig,
                opt(med, |d| format!("{d:+.0}")),
                list
            );
        }
    }
    s
}
