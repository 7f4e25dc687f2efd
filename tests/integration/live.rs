//! Live rooms (issue 23): `--live-room`, `--live-rate`, `--live-max-age`, the operator's
//! `live ROOM on|off` and `POST /api/live`, on the real binary over real sockets. A viewer
//! that never reads slows no sender and is not cut off, the other viewers get at most
//! `--live-rate` lines a second, nothing stale is written, moderators' and the operator's
//! lines all arrive, and a lossless room beside a live one behaves as it always did.
//! How fast is relay-bench's (`danmaku`), not these tests'.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::api::{post, with_api};
use crate::common::chat::Client;
use crate::common::cluster::{Node, Redis};
use crate::common::tokens::{SECRET, connect, mint, moderated, now, until};
use crate::common::{Daemon, admin_command, connect_small_rcvbuf, eventually, stat_in, temp_path};

/// A guest in `room`, having read its welcome and its entry.
fn viewer(d: &Daemon, room: &str) -> Client {
    let mut c = connect(d.addrs[0]);
    until(&mut c, "* welcome to relayd, you are guest");
    c.send(&format!("/join {room}\n"));
    until(&mut c, &format!("* you are now in {room} "));
    c
}

/// A guest in `room` whose receive buffer is tiny and who never reads a byte.
fn stuck_viewer(d: &Daemon, room: &str) -> TcpStream {
    let mut s = connect_small_rcvbuf(d.addrs[0], 2048);
    s.write_all(format!("/join {room}\n").as_bytes()).unwrap();
    s
}

/// Waits until `room` has `n` members.
fn wait_members(admin: &Path, room: &str, n: usize) {
    let want = format!("{room} {n}");
    eventually(&format!("{n} in {room}"), || {
        admin_command(admin, "rooms").lines().any(|l| l == want)
    });
}

/// The `clients` rows, split into columns.
fn clients(admin: &Path) -> Vec<Vec<String>> {
    admin_command(admin, "clients")
        .lines()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect()
}

/// `dropped`, the last column of `clients`, of the client named `name`.
fn dropped(admin: &Path, name: &str) -> u64 {
    let rows = clients(admin);
    let row = rows
        .iter()
        .find(|cols| cols[2] == name)
        .unwrap_or_else(|| panic!("{name} not in {rows:?}"));
    assert_eq!(row.len(), 11, "{row:?}");
    row[10].parse().unwrap()
}

/// `n` lines of about 1,000 bytes, numbered: 5,000 of them are more than a stuck viewer's
/// --max-pending and what the kernel takes for it (loopback's send buffer grows to 4 MiB).
fn flood(n: usize) -> String {
    (0..n)
        .map(|i| format!("line {i:05} {}\n", "x".repeat(990)))
        .collect()
}

/// Reads `c`'s lines until the operator's `* [server] {end}`, returning the relayed ones
/// (`<NAME> ...`).
fn relayed_until(c: &mut Client, end: &str) -> Vec<String> {
    let end = format!("* [server] {end}\n");
    let mut got = Vec::new();
    loop {
        let line = c.line();
        if line == end {
            return got;
        }
        if line.starts_with('<') {
            got.push(line);
        }
    }
}

/// A live room with a viewer that never reads: the sender's 3,000 lines (5 MB, far more
/// than the stuck viewer's --max-pending and socket hold) are all read by relayd at once
/// (with lossless delivery the sender waits --stall-timeout, 30 s, for the stuck viewer);
/// the stuck viewer is not cut off; the reading viewer gets at most --live-rate lines a
/// second (plus the bucket's burst) and both are counted as having dropped the rest.
#[test]
fn a_viewer_that_never_reads_slows_no_sender_and_others_get_the_live_rate() {
    let (d, admin) = moderated(&[
        "--live-room",
        "live*",
        "--live-rate",
        "20",
        "--stall-timeout",
        "30000",
        "--max-pending",
        "65536",
    ]);
    let _stuck = stuck_viewer(&d, "live1");
    let mut reader = viewer(&d, "live1");
    let mut sender = viewer(&d, "live1");
    wait_members(&admin, "live1", 3);
    let start = Instant::now();
    sender.send(&flood(5000));
    eventually("relayd to read every line", || {
        stat_in(&admin_command(&admin, "stats"), "lines_in") >= 5000
    });
    assert_eq!(admin_command(&admin, "publish live1 end"), "ok\n");
    let got = relayed_until(&mut reader, "end");
    let elapsed = start.elapsed().as_secs_f64();
    // 20 a second, after a burst of a quarter of that.
    let most = (5.0 + 20.0 * elapsed).ceil() as usize;
    assert!(
        !got.is_empty() && got.len() <= most,
        "{} lines in {elapsed:.2} s",
        got.len()
    );
    let stats = admin_command(&admin, "stats");
    assert_eq!(stat_in(&stats, "slow_consumer_kicks"), 0, "{stats}");
    // Each of the two viewers misses at most all 5,000; the sender is not counted.
    let dropped_in_all = stat_in(&stats, "live_dropped");
    assert!(
        (2 * 5000 - 2 * most as u64..=2 * 5000).contains(&dropped_in_all),
        "{stats}"
    );
    assert_eq!(dropped(&admin, "guest2") as usize, 5000 - got.len());
    // The stuck viewer is still there, having missed lines, not cut off.
    assert!(dropped(&admin, "guest1") > 0);
    assert_eq!(clients(&admin).len(), 3);
    // A second after the flood, the room tells its viewers how much they were shown: the
    // next line after that second brings the notice. A line every 50 ms, within the rate.
    let trickle = Sending::start(&sender, Duration::from_millis(50), || "one more\n".into());
    let busy = loop {
        let line = reader.line();
        if line.starts_with("* live: ") {
            break line;
        }
    };
    trickle.stop();
    let counts: Vec<u64> = busy
        .strip_prefix("* live: showing ")
        .and_then(|rest| rest.strip_suffix(" lines/s\n"))
        .and_then(|rest| rest.split(" of ").map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| panic!("{busy:?}"));
    assert!(counts[0] < counts[1], "{busy:?}");
}

/// A thread sending `client` a line made by `line` every `every`, until stopped.
struct Sending {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

impl Sending {
    fn start(
        client: &Client,
        every: Duration,
        line: impl Fn() -> String + Send + 'static,
    ) -> Sending {
        let stop = Arc::new(AtomicBool::new(false));
        let mut stream = client.stream().try_clone().unwrap();
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                stream.write_all(line().as_bytes()).unwrap();
                thread::sleep(every);
            }
        });
        Sending { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// Microseconds since the first call, in this process: the send time a line carries.
fn micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A viewer that stops reading for a second while a sender keeps sending: when it reads
/// again, what it reads older than --live-max-age (300 ms) is at most what the kernel held
/// for it (relayd's small send buffer for a live viewer, and the viewer's own receive
/// buffer), never relayd's backlog of that second; once that is read, every line is fresh.
/// With lossless delivery it reads the whole second of backlog, 200 KB.
#[test]
fn a_line_older_than_max_age_is_never_written() {
    let (d, admin) = moderated(&[
        "--live-room",
        "live*",
        "--live-rate",
        "100000",
        "--live-max-age",
        "300",
    ]);
    let mut paused = Client::new(connect_small_rcvbuf(d.addrs[0], 2048));
    until(&mut paused, "* welcome to relayd, you are guest");
    paused.send("/join live2\n");
    until(&mut paused, "* you are now in live2 ");
    let sender = viewer(&d, "live2");
    wait_members(&admin, "live2", 2);
    // About 200 bytes a millisecond, 200 KB/s.
    let sending = Sending::start(&sender, Duration::from_millis(1), || {
        format!("{} {}\n", micros(), "y".repeat(180))
    });
    let age = |line: &str| -> Option<Duration> {
        let sent: u64 = line
            .strip_prefix("<guest2> ")?
            .split(' ')
            .next()?
            .parse()
            .ok()?;
        Some(Duration::from_micros(micros().saturating_sub(sent)))
    };
    let max_age = Duration::from_millis(300);
    // Reading, then not reading (a viewer's tab in the background), then reading again.
    let reading = Instant::now();
    while reading.elapsed() < Duration::from_millis(300) {
        paused.line();
    }
    thread::sleep(Duration::from_secs(1));
    let (mut stale_bytes, mut fresh, mut stale_after_fresh) = (0, 0, 0);
    while fresh < 200 {
        let line = paused.line();
        let Some(age) = age(&line) else { continue };
        // Slack for a loaded machine: this thread may read late.
        if age > max_age + Duration::from_millis(200) {
            stale_bytes += line.len();
            if fresh > 0 {
                stale_after_fresh += 1;
            }
        } else {
            fresh += 1;
        }
    }
    sending.stop();
    assert!(
        stale_bytes <= 24 * 1024,
        "{stale_bytes} bytes of stale lines read"
    );
    assert_eq!(stale_after_fresh, 0);
    assert!(stat_in(&admin_command(&admin, "stats"), "live_dropped") > 0);
    drop(sender);
}

/// A moderator's lines (a token's role `mod`) and the operator's all reach a viewer whose
/// --live-rate (1 a second) lets through almost none of a guest's, and in order.
#[test]
fn moderators_and_the_operator_are_never_dropped() {
    let (d, admin) = moderated(&["--live-room", "show", "--live-rate", "1"]);
    let mut reader = viewer(&d, "show");
    let mut guest = viewer(&d, "show");
    let mut moderator = connect(d.addrs[0]);
    until(&mut moderator, "* welcome to relayd, you are guest");
    let claims = json!({"sub": "m1", "name": "mod1", "role": "mod", "exp": now() + 3600});
    moderator.send(&format!("/auth {}\n", mint(&claims, SECRET, None)));
    until(&mut moderator, "* you are now mod1\n");
    moderator.send("/join show\n");
    until(&mut moderator, "* you are now in show ");
    wait_members(&admin, "show", 3);
    let mod_lines: String = (0..50).map(|i| format!("mod {i}\n")).collect();
    guest.send(&flood(50));
    moderator.send(&mod_lines);
    for i in 0..5 {
        assert_eq!(
            admin_command(&admin, &format!("publish show push {i}")),
            "ok\n"
        );
    }
    assert_eq!(admin_command(&admin, "publish-as show op said so"), "ok\n");
    let (mut mods, mut pushes, mut guests) = (Vec::new(), Vec::new(), 0);
    loop {
        let line = reader.line();
        if line.starts_with("<mod1> ") {
            mods.push(line);
        } else if line.starts_with("* [server] push ") {
            pushes.push(line);
        } else if line.starts_with("<guest2> ") {
            guests += 1;
        } else if line == "<op> said so\n" {
            break;
        }
    }
    let want: Vec<String> = (0..50).map(|i| format!("<mod1> mod {i}\n")).collect();
    assert_eq!(mods, want);
    let want: Vec<String> = (0..5).map(|i| format!("* [server] push {i}\n")).collect();
    assert_eq!(pushes, want);
    assert!(guests < 50, "every guest line reached the viewer");
}

/// Beside a live room, a lossless one behaves as it always did: its stuck viewer is cut off
/// after --stall-timeout, and its reading viewer gets every line; meanwhile the live room's
/// stuck viewer stays.
#[test]
fn a_lossless_room_beside_a_live_one_is_unchanged() {
    let (d, admin) = moderated(&[
        "--live-room",
        "live*",
        "--stall-timeout",
        "300",
        "--max-pending",
        "65536",
    ]);
    let _live_stuck = stuck_viewer(&d, "live3");
    let _stuck = stuck_viewer(&d, "talk");
    let mut reader = viewer(&d, "talk");
    let mut sender = viewer(&d, "talk");
    wait_members(&admin, "live3", 1);
    wait_members(&admin, "talk", 3);
    let (tx, rx) = mpsc::channel();
    let reading = thread::spawn(move || {
        let mut n = 0;
        while n < 5000 {
            if reader.line().starts_with("<guest4> line ") {
                n += 1;
            }
        }
        tx.send(n).unwrap();
    });
    sender.send(&flood(5000));
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), 5000);
    reading.join().unwrap();
    eventually("the lossless room's stuck viewer to be cut off", || {
        stat_in(&admin_command(&admin, "stats"), "slow_consumer_kicks") == 1
    });
    let rooms: Vec<String> = clients(&admin).iter().map(|c| c[3].clone()).collect();
    assert_eq!(rooms, ["live3", "talk"]);
}

/// The operator turns a room live (`POST /api/live`, or `live ROOM on`) while its viewer is
/// stuck: the stuck viewer misses lines instead of being cut off; turned lossless again
/// (`live ROOM off`), the room cuts it off after --stall-timeout, as any lossless room does.
#[test]
fn the_operator_turns_a_room_live_and_back() {
    let admin = temp_path("live-api-admin");
    let (d, api, _key) = with_api(&[
        "--chat",
        "--admin",
        admin.to_str().unwrap(),
        "--stall-timeout",
        "1000",
        "--max-pending",
        "65536",
    ]);
    eventually("the admin socket", || {
        std::os::unix::net::UnixStream::connect(&admin).is_ok()
    });
    let _stuck = stuck_viewer(&d, "stage");
    let mut sender = viewer(&d, "stage");
    wait_members(&admin, "stage", 2);
    assert_eq!(
        admin_command(&admin, "live stage sideways"),
        "error: usage: live ROOM on|off\n"
    );
    assert_eq!(
        admin_command(&admin, "live st@ge on"),
        "error: a room is 1-32 letters, digits, _ - .\n"
    );
    let answer = post(&api, "/api/live", r#"{"room":"stage","live":true}"#);
    assert_eq!(answer, json!({"ok": true, "members": 2}));
    sender.send(&flood(5000));
    eventually("relayd to read every line", || {
        stat_in(&admin_command(&admin, "stats"), "lines_in") >= 5000
    });
    eventually("the stuck viewer to have missed lines", || {
        dropped(&admin, "guest1") > 0
    });
    assert_eq!(
        stat_in(&admin_command(&admin, "stats"), "slow_consumer_kicks"),
        0
    );
    assert_eq!(admin_command(&admin, "live stage off"), "ok\n");
    sender.send(&flood(5000));
    eventually("the lossless room's stuck viewer to be cut off", || {
        stat_in(&admin_command(&admin, "stats"), "slow_consumer_kicks") == 1
    });
}

/// In a cluster the operator's `live ROOM on` said to one node reaches the others: a room on
/// node b, told nothing itself, drops for its viewer what its rate does not let through.
#[test]
fn the_operator_s_word_reaches_every_node() {
    let redis = Redis::start();
    let nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|id| Node::start_with(&redis.url(), id, &["--chat"]))
        .collect();
    for n in &nodes {
        n.wait_linked();
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let _reader = viewer(&b.daemon, "show");
    let mut sender = viewer(&b.daemon, "show");
    wait_members(&b.admin, "show", 2);
    let name = clients(&b.admin)[0][2].clone();
    assert_eq!(a.admin("live show on"), "ok\n");
    eventually("node b to make show live", || {
        sender.send(&flood(100));
        dropped(&b.admin, &name) > 0
    });
}
