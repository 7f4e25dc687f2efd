//! `--metrics ADDR`: the Prometheus endpoint, parsed with a Prometheus text-format parser
//! (the `prometheus-parse` crate), its counters checked against traffic and against the admin
//! `stats`, and a scraper that never reads shown not to slow relaying.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{
    self, Daemon, admin_command, connect_small_rcvbuf, eventually_within, http, numbered_lines,
    temp_path,
};
use prometheus_parse::{LineInfo, Scrape, Value};

/// A daemon with `--metrics` on a free port (and `args`), and that port.
fn with_metrics(args: &[&str]) -> (Daemon, SocketAddr) {
    let metrics = Daemon::free_addr();
    let d = Daemon::spawn(&[&["--metrics", &metrics], args].concat());
    (d, metrics.parse().unwrap())
}

/// Scrapes and parses `/metrics`: each sample by name (a histogram's buckets as one).
/// Fails if the parser skipped any line, so a malformed line cannot pass unnoticed.
fn scrape(addr: SocketAddr) -> HashMap<String, Value> {
    let (status, body) = http(addr, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for line in body.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored | LineInfo::Empty),
            "the parser cannot read {line:?}"
        );
    }
    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    parsed
        .samples
        .into_iter()
        .map(|s| (s.metric, s.value))
        .collect()
}

fn counter(m: &HashMap<String, Value>, name: &str) -> f64 {
    match m.get(name) {
        Some(Value::Counter(v)) => *v,
        other => panic!("{name} is not a counter: {other:?}"),
    }
}

/// The number of observations in histogram `name` (its `+Inf` bucket).
fn histogram_count(m: &HashMap<String, Value>, name: &str) -> f64 {
    match m.get(name) {
        Some(Value::Histogram(buckets)) => buckets.last().map_or(0.0, |b| b.count),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

fn gauge(m: &HashMap<String, Value>, name: &str) -> f64 {
    match m.get(name) {
        Some(Value::Gauge(v)) => *v,
        other => panic!("{name} is not a gauge: {other:?}"),
    }
}

/// Proves: the exposition parses; every admin `stats` figure is there under its Prometheus
/// name with the same value; counters moved by exactly the traffic sent; the gauges, the
/// histogram, and the answers to other paths and methods.
#[test]
fn metrics_parse_match_stats_and_move_with_traffic() {
    let admin = temp_path("metrics-admin");
    let (d, addr) = with_metrics(&["--admin", admin.to_str().unwrap(), "--max-clients", "50"]);
    let before = scrape(addr);
    assert_eq!(counter(&before, "relayd_received_lines_total"), 0.0);
    assert_eq!(gauge(&before, "relayd_max_clients"), 50.0);

    let mut a = d.connect();
    let mut b = d.connect();
    // The last to connect sends: the daemon admits in connection order, so a and b are in
    // by the time its first line is relayed.
    let mut c = d.connect();
    for i in 0..10 {
        c.send(format!("line {i}\n").as_bytes());
    }
    for i in 0..10 {
        a.expect(format!("line {i}\n").as_bytes());
        b.expect(format!("line {i}\n").as_bytes());
    }
    // Each line's wait is recorded once its recipient's socket has taken it, which may be a
    // moment after the recipient has read it.
    let mut after = HashMap::new();
    eventually_within(
        "the 20 line waits in /metrics",
        Duration::from_secs(5),
        || {
            after = scrape(addr);
            histogram_count(&after, "relayd_line_wait_seconds") == 20.0
        },
    );
    assert_eq!(counter(&after, "relayd_received_lines_total"), 10.0);
    assert_eq!(counter(&after, "relayd_queued_lines_total"), 20.0);
    assert_eq!(counter(&after, "relayd_received_bytes_total"), 70.0);
    assert_eq!(counter(&after, "relayd_queued_bytes_total"), 140.0);
    assert_eq!(counter(&after, "relayd_connections_accepted_total"), 3.0);
    assert_eq!(gauge(&after, "relayd_clients"), 3.0);
    assert_eq!(gauge(&after, "relayd_rooms"), 1.0);
    assert_eq!(gauge(&after, "relayd_pending_bytes"), 0.0);
    match after.get("relayd_line_wait_seconds") {
        Some(Value::Histogram(buckets)) => {
            assert_eq!(buckets.len(), 18, "{buckets:?}");
            assert!(buckets.last().unwrap().less_than.is_infinite());
            assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
            // One observation per line per recipient: 10 lines to 2 clients.
            assert_eq!(buckets.last().unwrap().count, 20.0, "{buckets:?}");
        }
        other => panic!("no histogram: {other:?}"),
    }

    // Every figure of the admin `stats`, under its Prometheus name, with the same value.
    let stats = admin_command(&admin, "stats");
    let metrics = scrape(addr);
    let names = [
        ("clients", "relayd_clients"),
        ("peak_clients", "relayd_peak_clients"),
        ("accepted", "relayd_connections_accepted_total"),
        ("refused_full", "relayd_connections_refused_full_total"),
        ("lines_in", "relayd_received_lines_total"),
        ("lines_out", "relayd_queued_lines_total"),
        ("bytes_in", "relayd_received_bytes_total"),
        ("bytes_out", "relayd_queued_bytes_total"),
        ("dropped_rate_limit", "relayd_rate_limited_lines_total"),
        ("too_long", "relayd_too_long_lines_total"),
        ("filtered_dropped", "relayd_filtered_dropped_lines_total"),
        ("filtered_masked", "relayd_filtered_masked_lines_total"),
        ("refused_banned", "relayd_refused_banned_total"),
        ("dropped_muted", "relayd_muted_dropped_lines_total"),
        ("dropped_slow", "relayd_slow_mode_dropped_lines_total"),
        (
            "slow_consumer_kicks",
            "relayd_slow_consumer_disconnects_total",
        ),
        ("idle_kicks", "relayd_idle_disconnects_total"),
        ("rooms", "relayd_rooms"),
        ("redis_connected", "relayd_redis_connected"),
        ("cluster_published", "relayd_cluster_published_lines_total"),
        ("cluster_received", "relayd_cluster_received_lines_total"),
        ("cluster_dropped", "relayd_cluster_dropped_lines_total"),
        ("cluster_queue_bytes", "relayd_cluster_queue_bytes"),
        ("tokens_accepted", "relayd_tokens_accepted_total"),
        ("live_dropped", "relayd_live_dropped_lines_total"),
    ];
    // `tokens_refused` is the sum of the labeled `relayd_tokens_refused_total` (see
    // tests/integration/signed_in.rs).
    assert_eq!(
        stats.lines().count(),
        names.len() + 2,
        "a stats figure without a metric (uptime aside): {stats}"
    );
    for (key, name) in names {
        let value = match metrics.get(name) {
            Some(Value::Counter(v) | Value::Gauge(v)) => *v,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(
            value,
            common::stat_in(&stats, key) as f64,
            "{key} vs {name}"
        );
        assert_eq!(
            name.ends_with("_total"),
            matches!(metrics[name], Value::Counter(_)),
            "{name}: counters and only counters end in _total"
        );
    }
    let uptime = gauge(&metrics, "relayd_uptime_seconds");
    assert!((uptime - common::stat_in(&stats, "uptime_seconds") as f64).abs() <= 1.0);

    let (status, body) = http(addr, "GET", "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body, "only /metrics is served here\n");
    let (status, _) = http(addr, "POST", "/metrics");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
}

/// Proves: scrapers that connect and never send a request, and scrapers that send one and
/// never read the answer (their receive buffer a few KiB), neither slow relaying between
/// clients nor keep a well-behaved scraper out.
#[test]
fn a_scraper_that_never_reads_does_not_slow_relaying() {
    let (d, addr) = with_metrics(&[]);
    let mut stuck = Vec::new();
    for i in 0..8 {
        let mut s = connect_small_rcvbuf(addr, 2048);
        if i % 2 == 0 {
            s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        }
        stuck.push(s);
    }
    let mut a = d.connect();
    let mut b = d.connect();
    let lines = numbered_lines(2000);
    let start = Instant::now();
    let writer = {
        let mut w = b.stream.try_clone().unwrap();
        let lines = lines.clone();
        std::thread::spawn(move || w.write_all(&lines).unwrap())
    };
    assert_eq!(a.bytes(lines.len()), lines);
    writer.join().unwrap();
    let took = start.elapsed();
    // Unhindered this takes milliseconds; a scrape holding up relaying would hold it for its
    // 2 s request or 5 s write timeout.
    assert!(took < Duration::from_secs(1), "2 MB took {took:?} to relay");

    let start = Instant::now();
    let m = scrape(addr);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "a scrape beside stuck ones took {:?}",
        start.elapsed()
    );
    assert_eq!(counter(&m, "relayd_received_lines_total"), 2000.0);
    drop(stuck);
    // Still relaying afterwards, and the stuck scrapers cost nothing lasting.
    b.send(b"after\n");
    a.expect(b"after\n");
    assert!(TcpStream::connect(addr).is_ok());
}
