//! One run's results and how they are shown: a table for people, one JSON object per line
//! for scripts. Comparing two targets' runs is compare.rs's job.

use std::fmt::Write as _;
use std::time::Duration;

use crate::histogram::Histogram;
use crate::json::{json_fine, json_num, json_str};
use crate::params::{Kind, Params};
use crate::receiver::RxReport;
use crate::target::Spec;
use crate::viewers::Viewers;

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// The percentiles of `h`, None if it is empty.
    fn of(h: &Histogram) -> Option<Latency> {
        let us = |q: f64| h.quantile(q).unwrap_or(0) as f64 / 1e3;
        (h.count() > 0).then(|| Latency {
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
            max: h.max() as f64 / 1e3,
        })
    }
}

/// The figures of one measured phase.
#[derive(Clone, Debug)]
pub struct Measure {
    pub delivered: u64,
    pub expected: u64,
    pub lost: u64,
    pub out_of_order: u64,
    pub corrupt: u64,
    pub notices: u64,
    pub disconnected: usize,
    pub timed_out: bool,
    /// From the first measured line sent to the last one received (or to the end of
    /// sending, if that came later).
    pub secs: f64,
    pub per_sec: f64,
    pub mb_per_sec: f64,
    pub latency: Option<Latency>,
    /// `--nodes`: deliveries on another node than their sender's, which crossed Redis...
    pub remote_delivered: u64,
    /// ...their latency...
    pub remote_latency: Option<Latency>,
    /// ...and that of the deliveries on the sender's own node (all of them, on one node).
    pub local_latency: Option<Latency>,
    /// Percent of one core, over the measured phase.
    pub gen_cpu: f64,
    pub server_cpu: Option<f64>,
    /// Server CPU seconds (user + system) over the measured phase.
    pub server_cpu_secs: Option<f64>,
}

impl Measure {
    pub fn new(
        rep: &RxReport,
        start_ns: u64,
        done_ns: u64,
        size: usize,
        gen_cpu: f64,
        server_cpu: Option<f64>,
        server_cpu_secs: Option<f64>,
    ) -> Measure {
        // Up to the last delivery, but never before the sender finished: a relay that froze
        // and delivered nothing more must not look fast for the little it did deliver.
        let end = rep.last_ns.max(done_ns);
        let secs = end.saturating_sub(start_ns) as f64 / 1e9;
        let per_sec = if secs > 0.0 {
            rep.delivered as f64 / secs
        } else {
            0.0
        };
        Measure {
            delivered: rep.delivered,
            expected: rep.expected,
            lost: rep.expected.saturating_sub(rep.delivered),
            out_of_order: rep.out_of_order,
            corrupt: rep.corrupt,
            notices: rep.notices,
            disconnected: rep.disconnected,
            timed_out: rep.timed_out,
            secs,
            per_sec,
            mb_per_sec: per_sec * size as f64 / 1e6,
            latency: Latency::of(&rep.latency()),
            remote_delivered: rep.remote_latency.count(),
            remote_latency: Latency::of(&rep.remote_latency),
            local_latency: Latency::of(&rep.local_latency),
            gen_cpu,
            server_cpu,
            server_cpu_secs,
        }
    }

    /// Server CPU seconds per million deliveries: what the relay spent per line it handed
    /// on, apart from how fast or late it did so.
    pub fn server_cpu_per_m(&self) -> Option<f64> {
        let secs = self.server_cpu_secs?;
        (self.delivered > 0).then(|| secs / self.delivered as f64 * 1e6)
    }
}

/// CPU-s per million deliveries with three significant digits: full-speed fanout costs
/// hundredths of a second, chatter whole seconds.
pub fn per_m(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[derive(Clone, Debug)]
pub struct ServerCost {
    pub peak_rss_kib: Option<u64>,
    pub threads_max: u64,
    /// Its `Cpus_allowed_list` at the end of the run.
    pub cpus_allowed: Option<String>,
}

/// How a client that connects during the stalled run fared.
#[derive(Clone, Debug)]
pub enum Fresh {
    FirstLine(Duration),
    Failed(String),
}

/// One run of one scenario against one target.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub target: String,
    /// How the receivers connect: "tcp", or "ws" with --ws (danmaku: --transport, "mix" too).
    pub transport: &'static str,
    pub senders: usize,
    /// relayd nodes (`--nodes`), 1 for any other server.
    pub nodes: usize,
    pub scenario: Kind,
    pub run: usize,
    pub clients: usize,
    pub lines: u64,
    pub size: usize,
    pub main: Option<Measure>,
    /// slow: the same fanout without the stalled client, on the same server.
    pub baseline: Option<Measure>,
    pub fresh: Option<Fresh>,
    pub server: Option<ServerCost>,
    /// connscale: the server's resident memory (KiB) before the clients connected, and once
    /// all of them were registered, before any measured line.
    pub idle_rss_kib: Option<(u64, u64)>,
    /// danmaku: the crowd's figures.
    pub viewers: Option<Viewers>,
    /// --client-cpus, if given.
    pub client_cpus: Option<String>,
    /// Whether --server-cpus or --client-cpus placed the processes.
    pub pinned: bool,
    pub error: Option<String>,
}

impl Outcome {
    pub fn new(p: &Params, spec: &Spec, run: usize) -> Outcome {
        Outcome {
            target: if p.kind == Kind::Ceiling {
                "loopback".into()
            } else if p.ws {
                format!("{}/{}", spec.label(), p.transport.name())
            } else {
                spec.label()
            },
            transport: p.transport.name(),
            senders: p.senders,
            nodes: spec.nodes(),
            scenario: p.kind,
            run,
            clients: p.clients,
            lines: p.lines,
            size: p.size,
            main: None,
            baseline: None,
            fresh: None,
            server: None,
            idle_rss_kib: None,
            viewers: None,
            client_cpus: p.client_cpus.as_ref().map(ToString::to_string),
            pinned: p.server_cpus.is_some() || p.client_cpus.is_some(),
            error: None,
        }
    }

    /// slow: the stalled run's deliveries/s as a percentage of the baseline's.
    pub fn kept_pct(&self) -> Option<f64> {
        let (m, b) = (self.main.as_ref()?, self.baseline.as_ref()?);
        (b.per_sec > 0.0).then(|| 100.0 * m.per_sec / b.per_sec)
    }

    pub fn fresh_ms(&self) -> Option<f64> {
        match &self.fresh {
            Some(Fresh::FirstLine(d)) => Some(d.as_secs_f64() * 1e3),
            _ => None,
        }
    }

    /// connscale: what each idle connection added to the server's resident memory.
    pub fn idle_rss_per_conn_kib(&self) -> Option<f64> {
        let (before, after) = self.idle_rss_kib?;
        Some(after.saturating_sub(before) as f64 / self.clients.max(1) as f64)
    }

    pub fn rss_per_conn_kib(&self) -> Option<f64> {
        let rss = self.server.as_ref()?.peak_rss_kib? as f64;
        Some(rss / self.clients.max(1) as f64)
    }
}

fn lat(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}us")
    } else if us < 1e6 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

pub fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

pub const TABLE_HEAD: &str = "target       scenario  run  deliveries/s      MB/s  lost  ooo  bad  disc     p50     p99   p99.9     max  srvCPU%  srvRSS  thr  genCPU%";

fn row(name: &str, o: &Outcome, m: &Measure) -> String {
    let l = m.latency.as_ref();
    let srv = o.server.as_ref();
    format!(
        "{:<12} {:<9} {:>3} {:>13.0} {:>9.1} {:>5} {:>4} {:>4} {:>5} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>4} {:>8.0}",
        truncate(&o.target, 12),
        name,
        o.run,
        m.per_sec,
        m.mb_per_sec,
        m.lost,
        m.out_of_order,
        m.corrupt,
        m.disconnected,
        opt(l, |l| lat(l.p50)),
        opt(l, |l| lat(l.p99)),
        opt(l, |l| lat(l.p999)),
        opt(l, |l| lat(l.max)),
        opt(m.server_cpu, |c| format!("{c:.0}")),
        opt(srv.and_then(|s| s.peak_rss_kib), |k| format!(
            "{:.1}M",
            k as f64 / 1024.0
        )),
        opt(srv.map(|s| s.threads_max), |t| t.to_string()),
        m.gen_cpu,
    )
}

pub fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The table rows (and remarks) for one outcome.
pub fn table(o: &Outcome) -> String {
    let mut s = String::new();
    if let Some(e) = &o.error {
        let _ = writeln!(
            s,
            "{:<12} {:<9} {:>3} FAILED: {e}",
            truncate(&o.target, 12),
            o.scenario.name(),
            o.run
        );
    }
    if let Some(b) = &o.baseline {
        let _ = writeln!(s, "{}", row("slow:base", o, b));
    }
    if let Some(m) = &o.main {
        let _ = writeln!(s, "{}", row(o.scenario.name(), o, m));
        let mut notes = Vec::new();
        if m.timed_out {
            notes.push("hit --timeout".to_string());
        }
        if m.notices > 0 {
            notes.push(format!("{} server notices", m.notices));
        }
        if let Some(k) = o.kept_pct() {
            notes.push(format!(
                "stalled run kept {k:.0}% of the baseline's deliveries/s"
            ));
        }
        match &o.fresh {
            Some(Fresh::FirstLine(d)) => notes.push(format!(
                "fresh client's first line after {:.1} ms",
                d.as_secs_f64() * 1e3
            )),
            Some(Fresh::Failed(why)) => notes.push(format!("fresh client: {why}")),
            None => {}
        }
        if o.scenario == Kind::Connscale
            && let Some(k) = o.rss_per_conn_kib()
        {
            notes.push(format!("server peak RSS {k:.1} KiB per connection"));
        }
        if let Some(k) = o.idle_rss_per_conn_kib() {
            notes.push(format!("{k:.1} KiB RSS added per idle connection"));
        }
        if let Some(r) = &m.remote_latency {
            let local = m.local_latency.as_ref();
            notes.push(format!(
                "{} deliveries across Redis: p50 {} p99 {}; on the sender's node: p50 {} p99 {}",
                m.remote_delivered,
                lat(r.p50),
                lat(r.p99),
                opt(local, |l| lat(l.p50)),
                opt(local, |l| lat(l.p99)),
            ));
        }
        if let Some(c) = m.server_cpu_per_m() {
            notes.push(format!("server {} CPU-s per M deliveries", per_m(c)));
        }

        if o.pinned {
            let srv = o.server.as_ref().and_then(|s| s.cpus_allowed.as_deref());
            notes.push(format!(
                "CPUs: server {}, generator {}",
                srv.unwrap_or("?"),
                o.client_cpus.as_deref().unwrap_or("any")
            ));
        }
        if !notes.is_empty() {
            let _ = writeln!(s, "{:>31} {}", "", notes.join("; "));
        }
        // The crowd's figures are many: a line each.
        for note in o.viewers.iter().flat_map(Viewers::notes) {
            let _ = writeln!(s, "{:>31} {note}", "");
        }
    }
    s
}

fn measure_json(m: &Measure) -> String {
    let l = m.latency.as_ref();
    let (r, local) = (m.remote_latency.as_ref(), m.local_latency.as_ref());
    format!(
        "{{\"deliveries\":{},\"expected\":{},\"lost\":{},\"out_of_order\":{},\"corrupt\":{},\
         \"notices\":{},\"disconnected\":{},\"timed_out\":{},\"secs\":{},\"deliveries_per_sec\":{},\
         \"mb_per_sec\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\
         \"remote_deliveries\":{},\"remote_p50_us\":{},\"remote_p99_us\":{},\"remote_max_us\":{},\
         \"local_p50_us\":{},\"local_p99_us\":{},\"generator_cpu_pct\":{},\"server_cpu_pct\":{},\"server_cpu_secs\":{},\
         \"server_cpu_s_per_m_deliveries\":{}}}",
        m.delivered,
        m.expected,
        m.lost,
        m.out_of_order,
        m.corrupt,
        m.notices,
        m.disconnected,
        m.timed_out,
        json_num(Some(m.secs)),
        json_num(Some(m.per_sec)),
        json_num(Some(m.mb_per_sec)),
        json_num(l.map(|l| l.p50)),
        json_num(l.map(|l| l.p99)),
        json_num(l.map(|l| l.p999)),
        json_num(l.map(|l| l.max)),
        m.remote_delivered,
        json_num(r.map(|l| l.p50)),
        json_num(r.map(|l| l.p99)),
        json_num(r.map(|l| l.max)),
        json_num(local.map(|l| l.p50)),
        json_num(local.map(|l| l.p99)),
        json_num(Some(m.gen_cpu)),
        json_num(m.server_cpu),
        json_num(m.server_cpu_secs),
        json_fine(m.server_cpu_per_m()),
    )
}

/// One JSON object, on one line, for one outcome.
pub fn json(o: &Outcome) -> String {
    let srv = o.server.as_ref();
    format!(
        "{{\"target\":{},\"transport\":{},\"scenario\":{},\"run\":{},\"clients\":{},\"senders\":{},\"nodes\":{},\"lines\":{},\"size\":{},\
         \"result\":{},\"baseline\":{},\"kept_pct\":{},\"fresh_first_line_ms\":{},\
         \"fresh_error\":{},\"server_peak_rss_kib\":{},\"server_rss_per_conn_kib\":{},\"server_idle_rss_per_conn_kib\":{},\
         \"server_threads_max\":{},\"server_cpus\":{},\"client_cpus\":{},\"danmaku\":{},\"error\":{}}}",
        json_str(&o.target),
        json_str(o.transport),
        json_str(o.scenario.name()),
        o.run,
        o.clients,
        o.senders,
        o.nodes,
        o.lines,
        o.size,
        o.main.as_ref().map_or("null".into(), measure_json),
        o.baseline.as_ref().map_or("null".into(), measure_json),
        json_num(o.kept_pct()),
        json_num(o.fresh_ms()),
        match &o.fresh {
            Some(Fresh::Failed(why)) => json_str(why),
            _ => "null".into(),
        },
        srv.and_then(|s| s.peak_rss_kib)
            .map_or("null".into(), |k| k.to_string()),
        json_num(o.rss_per_conn_kib()),
        json_num(o.idle_rss_per_conn_kib()),
        srv.map_or("null".into(), |s| s.threads_max.to_string()),
        srv.and_then(|s| s.cpus_allowed.as_deref())
            .map_or("null".into(), json_str),
        o.client_cpus.as_deref().map_or("null".into(), json_str),
        o.viewers.as_ref().map_or("null".into(), Viewers::json),
        o.error.as_ref().map_or("null".into(), |e| json_str(e)),
    )
}
