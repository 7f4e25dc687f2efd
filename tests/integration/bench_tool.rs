//! relay-bench checks itself: a small fanout through the real relayd must report every line
//! delivered, in order, uncorrupted. A correctness test only; no speed is asserted.
//! The `--nodes` test needs `redis-server` (Debian's redis-server package), which relay-bench
//! starts and stops itself.

use std::fs;
use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs relay-bench with `args` and a 20 s run timeout, killing it if it outlives 30 s.
/// Returns its JSON result line.
fn run_bench(args: &[&str]) -> String {
    let (_, out) = run_bench_all(args);
    out.lines().next().expect("one JSON result").to_string()
}

/// As `run_bench`, but returns relay-bench's PID and all it printed.
fn run_bench_all(args: &[&str]) -> (u32, String) {
    let limit = Duration::from_secs(30);
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-bench"))
        .args(args)
        .args(["--json", "--timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start relay-bench");
    let pid = child.id();
    let until = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for relay-bench") {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("relay-bench did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.success(),
        "relay-bench failed: {status}\n{out}\n{err}"
    );
    (pid, out)
}

/// The integer after `"key":` in a JSON object printed on one line.
fn field(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not an integer in {json}"))
}

/// `run_bench` of a short chatter: 3 clients at 50 lines/s for 0.4 s (20 lines each), plus
/// `extra` options.
fn run_chatter(extra: &[&str]) -> String {
    let mut args = vec![
        "chatter",
        "--clients",
        "3",
        "--rate",
        "50",
        "--duration",
        "0.4",
    ];
    args.extend_from_slice(extra);
    run_bench(&args)
}

/// Asserts that the run of JSON result `line` completed and delivered every one of the
/// `owed` lines it owed, in order, uncorrupted, with no receiver cut off.
fn assert_all_delivered(line: &str, owed: u64) {
    assert!(line.contains("\"error\":null"), "{line}");
    assert_eq!(field(line, "expected"), owed, "{line}");
    assert_eq!(field(line, "deliveries"), owed, "{line}");
    assert_eq!(field(line, "lost"), 0, "{line}");
    assert_eq!(field(line, "out_of_order"), 0, "{line}");
    assert_eq!(field(line, "corrupt"), 0, "{line}");
    assert_eq!(field(line, "disconnected"), 0, "{line}");
}

#[test]
fn fanout_through_relayd_delivers_every_line_in_order() {
    let line = &run_bench(&["fanout", "--clients", "4", "--lines", "2000"]);
    assert!(line.contains("\"target\":\"relayd\""), "{line}");
    assert_all_delivered(line, 4 * 2000);
}

#[test]
fn chatter_through_relayd_reaches_every_other_client() {
    let line = &run_chatter(&[]);
    // 3 clients × 20 lines, each line owed to the 2 others.
    assert_eq!(field(line, "expected"), 3 * 20 * 2, "{line}");
    assert_eq!(field(line, "deliveries"), 3 * 20 * 2, "{line}");
    assert_eq!(field(line, "corrupt"), 0, "{line}");
}

#[test]
fn bad_options_fail_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_relay-bench"))
        .args(["fanout", "--connect", "10.1.2.3:9"])
        .output()
        .expect("run relay-bench");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("relay-bench: "), "{err}");
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn cpu_placement_is_applied_and_reported() {
    let line = &run_chatter(&["--server-cpus", "0", "--client-cpus", "0"]);
    assert_eq!(field(line, "deliveries"), 3 * 20 * 2, "{line}");
    // Read back from the server's /proc/PID/status, so this is where it really ran.
    assert!(line.contains("\"server_cpus\":\"0\""), "{line}");
    assert!(line.contains("\"client_cpus\":\"0\""), "{line}");
    assert!(
        line.contains("\"server_cpu_s_per_m_deliveries\":"),
        "{line}"
    );
}

#[test]
fn bad_cpu_lists_fail_with_one_line() {
    for (flag, list, says) in [
        ("--server-cpus", "0-x", "not a CPU number"),
        ("--client-cpus", "1-0", "backwards"),
        ("--server-cpus", "1023", "no CPU 1023"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_relay-bench"))
            .args(["chatter", flag, list])
            .output()
            .expect("run relay-bench");
        assert_eq!(out.status.code(), Some(2), "{flag} {list}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("relay-bench: "), "{err}");
        assert!(err.contains(flag) && err.contains(says), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn fanout_to_websocket_receivers_delivers_every_line() {
    let line = &run_bench(&["fanout", "--ws", "--clients", "4", "--lines", "2000"]);
    assert!(line.contains("\"target\":\"relayd/ws\""), "{line}");
    assert!(line.contains("\"transport\":\"ws\""), "{line}");
    assert_all_delivered(line, 4 * 2000);
}

#[test]
fn several_paced_senders_reach_websocket_receivers_and_each_other() {
    // 3 TCP senders × 10 lines at 50 lines/s each, 4 WebSocket receivers, read by 2 threads.
    let line = &run_bench(&[
        "fanout",
        "--ws",
        "--clients",
        "4",
        "--senders",
        "3",
        "--rate",
        "50",
        "--lines",
        "10",
        "--rx-threads",
        "2",
    ]);
    assert!(line.contains("\"senders\":3"), "{line}");
    // Each line is owed to the 4 receivers and the 2 other senders.
    assert_eq!(field(line, "expected"), 3 * 10 * (4 + 2), "{line}");
    assert_eq!(field(line, "deliveries"), 3 * 10 * (4 + 2), "{line}");
    assert_eq!(field(line, "lost"), 0, "{line}");
    assert_eq!(field(line, "corrupt"), 0, "{line}");
}

/// Processes whose command line or working directory names `tag`: relayd nodes carry it in
/// `--cluster`, redis-server runs in a directory of that name.
fn processes_naming(tag: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let proc_dir = entry.path();
        let cmdline = fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        let cwd = fs::read_link(proc_dir.join("cwd")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(tag) || cwd.to_string_lossy().contains(tag) {
            found.push(format!("{}: {cmdline}", proc_dir.display()));
        }
    }
    found
}

/// A number (or null) after `"key":`.
fn number(json: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    let text: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    text.parse().ok()
}

#[test]
fn fanout_over_three_nodes_crosses_redis_and_compares_with_one_node() {
    // 6 receivers dealt over 3 nodes, 2 each; the sender is on node 0, so the 4 receivers
    // on nodes 1 and 2 get its 2000 lines through the run's own redis-server. Then the same
    // on one node (--compare-nodes 1), everything on CPU 0.
    let (pid, out) = run_bench_all(&[
        "fanout",
        "--nodes",
        "3",
        "--compare-nodes",
        "1",
        "--repeat",
        "1",
        "--clients",
        "6",
        "--lines",
        "2000",
        "--server-cpus",
        "0",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    let (three, one) = (lines[0], lines[1]);
    assert!(three.contains("\"target\":\"relayd/3n\""), "{three}");
    assert_eq!(field(three, "nodes"), 3, "{three}");
    assert_all_delivered(three, 6 * 2000);
    assert_eq!(field(three, "remote_deliveries"), 4 * 2000, "{three}");
    let remote = number(three, "remote_p50_us").expect("latency across Redis");
    let local = number(three, "local_p50_us").expect("latency on node 0");
    assert!(remote > 0.0 && local > 0.0, "{three}");
    // Read back from /proc: all three nodes and Redis ran on CPU 0, not just one of them.
    assert!(three.contains("\"server_cpus\":\"0\""), "{three}");

    assert!(one.contains("\"target\":\"relayd\""), "{one}");
    assert_eq!(field(one, "nodes"), 1, "{one}");
    assert_all_delivered(one, 6 * 2000);
    assert_eq!(field(one, "remote_deliveries"), 0, "{one}");
    assert!(one.contains("\"remote_p50_us\":null"), "{one}");

    for fig in ["p50 (us)", "p99 (us)"] {
        let want = format!("{{\"added\":\"{fig}\",\"nodes\":\"relayd/3n\",\"single\":\"relayd\"");
        let added = lines.iter().find(|l| l.starts_with(&want));
        let added = added.unwrap_or_else(|| panic!("no {want} in\n{out}"));
        assert!(number(added, "median").is_some(), "{added}");
    }

    // Nothing of the run is left: no node, no redis-server, no directory.
    let tag = format!("relay-bench-{pid}-");
    assert_eq!(processes_naming(&tag), Vec::<String>::new());
    let tmp = std::env::temp_dir();
    let dirs: Vec<_> = fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&tag))
        .collect();
    assert!(dirs.is_empty(), "left in {}: {dirs:?}", tmp.display());
}

/// `run_bench` of danmaku: 2 TCP senders for 2 s, plus `extra`.
fn run_danmaku(extra: &[&str]) -> String {
    let mut args = vec!["danmaku", "--senders", "2", "--duration", "2"];
    args.extend_from_slice(extra);
    run_bench(&args)
}

#[test]
fn danmaku_counts_every_viewer_served_in_a_lossless_room_and_a_stalled_one() {
    // 20 viewers, every other one WebSocket, and one more that never reads.
    let line = &run_danmaku(&[
        "--viewers",
        "20",
        "--transport",
        "mix",
        "--rate",
        "200",
        "--slow",
        "1",
    ]);
    assert!(line.contains("\"target\":\"relayd/mix\""), "{line}");
    assert!(line.contains("\"transport\":\"mix\""), "{line}");
    let sent = field(line, "sent");
    // 400 offered; the senders are only late if this machine is badly overloaded.
    assert!(sent >= 380, "{line}");
    assert!(number(line, "achieved_pct").unwrap() >= 95.0, "{line}");
    // Lossless, nobody slow among them: every viewer got every line.
    assert_eq!(field(line, "viewers"), 20, "{line}");
    assert_eq!(field(line, "received"), sent * 20, "{line}");
    assert_eq!(field(line, "drops"), 0, "{line}");
    assert_eq!(field(line, "cut"), 0, "{line}");
    // Each received lines/s over the 2 s, or up to its last line if that came later.
    let each = sent as f64 / 2.0;
    for key in ["rate_min", "rate_median", "rate_max"] {
        let rate = number(line, key).unwrap();
        assert!(rate > 0.9 * each && rate <= each, "{key}: {line}");
    }
    let (p50, p99) = (number(line, "age_p50_us"), number(line, "age_p99_us"));
    let worst = number(line, "worst_viewer_p99_us").unwrap();
    assert!(p50.unwrap() > 0.0 && p50 <= p99, "{line}");
    assert!(worst > 0.0 && worst < 2e6, "{line}");
    assert!(
        number(line, "idle_rss_per_viewer_kib").unwrap() > 0.0,
        "{line}"
    );
    // 25 KiB is far from filling its socket buffers: it was stalled, never cut off, and
    // every line for it was still waiting to be read.
    assert_eq!(field(line, "slow"), 1, "{line}");
    assert_eq!(field(line, "slow_cut"), 0, "{line}");
    assert_eq!(field(line, "slow_connected"), 1, "{line}");
    assert!(field(line, "slow_bytes_waiting") >= sent * 64, "{line}");
}

#[test]
fn danmaku_reports_a_slow_viewer_cut_off_by_the_server() {
    // 16 KiB lines fill a never-read socket's buffers (some 4 MiB on loopback) within the
    // run; then relayd waits 200 ms for it (pacing the senders) and cuts it off.
    let line = &run_danmaku(&[
        "--viewers",
        "2",
        "--transport",
        "tcp",
        "--rate",
        "500",
        "--size",
        "16384",
        "--slow",
        "1",
        "--relayd-args",
        "--max-pending 262144 --stall-timeout 200",
    ]);
    assert_eq!(field(line, "slow_cut"), 1, "{line}");
    assert_eq!(field(line, "slow_connected"), 0, "{line}");
    // The viewers that read lost nothing; they only waited with the senders.
    assert_eq!(field(line, "drops"), 0, "{line}");
    assert_eq!(field(line, "cut"), 0, "{line}");
}
