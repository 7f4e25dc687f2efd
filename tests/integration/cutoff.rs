//! Clients that are cut off — by their own backlog or by the operator — stop costing the daemon
//! at once: their queue cannot outgrow --max-pending, however small what it holds, and nothing
//! more they sent is relayed. Run against the built binary, whose memory and log the tests
//! read.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::{
    self, AdminConn, Client, Daemon, TIMEOUT, connect_small_rcvbuf, numbered_lines,
};

const KIB: u64 = 1024;
const MIB: usize = 1 << 20;

/// A fresh path for an admin socket, removed again when dropped.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new(tag: &str) -> SocketPath {
        static N: AtomicUsize = AtomicUsize::new(0);
        SocketPath(std::env::temp_dir().join(format!(
            "relayd-cutoff-{tag}-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }

    fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A connection to the daemon's control socket. Its reads wait longer than a stall: a kick
/// may take up to --stall-timeout to answer.
struct Admin(AdminConn);

impl Admin {
    fn connect(path: &Path) -> Admin {
        let mut stream = None;
        common::eventually("the admin socket", || {
            stream = UnixStream::connect(path).ok();
            stream.is_some()
        });
        Admin(AdminConn::new(stream.unwrap(), Duration::from_secs(20)))
    }

    /// One command; its answer without the closing empty line.
    fn command(&mut self, command: &str) -> String {
        self.0.command(command)
    }

    /// The `clients` row of the client connected from `addr`, split into its columns (id,
    /// address, name, room, seconds, lines in, lines out, bytes pending).
    fn client_row(&mut self, addr: SocketAddr) -> Option<Vec<String>> {
        let addr = addr.to_string();
        self.command("clients")
            .lines()
            .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
            .find(|cols| cols.len() == 11 && cols[1] == addr)
    }
}

/// The name (`guestN`) a chat welcome line gives.
fn welcome_name(line: &[u8]) -> String {
    let line = String::from_utf8_lossy(line);
    line.strip_prefix("* welcome to relayd, you are ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("not a welcome line: {line:?}"))
        .to_string()
}

/// Reads and throws away what `stream` receives until the daemon closes it or `stop` is set,
/// so that a client that must stay healthy never backs up. Bounded: gives up after a minute.
fn drain(stream: TcpStream, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    thread::spawn(move || {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = vec![0; 64 * 1024];
        let mut s = &stream;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    })
}

/// Writes `data` from a thread (over and over if `cycle`), as fast as the socket takes it,
/// until it is all written, a write fails, `stop` is set or `limit` passes. `written` counts
/// the bytes the socket took. Returns the error that ended it, if one did.
fn write_in_background(
    stream: TcpStream,
    data: Vec<u8>,
    cycle: bool,
    written: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> JoinHandle<Option<io::Error>> {
    thread::spawn(move || {
        // Short, so that the loop notices `stop` and the deadline while the daemon paces it.
        stream
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + limit;
        let mut s = &stream;
        let (mut pos, mut total) = (0, 0);
        while pos < data.len() && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match s.write(&data[pos..]) {
                Ok(n) => {
                    pos += n;
                    total += n;
                    written.store(total, Ordering::Relaxed);
                    if cycle && pos == data.len() {
                        pos = 0;
                    }
                }
                Err(e) if common::retryable(&e) => {}
                Err(e) => return Some(e),
            }
        }
        None
    })
}

/// Whether a daemon log line says client `id` was disconnected for not keeping up.
fn logs_slow_disconnect(line: &str, id: &str) -> bool {
    let about = line.contains(&format!("client {id} ")) || line.contains(&format!("client {id}:"));
    about && (line.contains("slow consumer") || line.contains("too slow"))
}

/// Defect: a client's own command replies (`* you are now in ROOM`, the room's history replay)
/// were queued for it past --max-pending, so a client that sends `/join a` and `/join b` in a
/// loop and never reads grew the daemon's memory without bound (+162 MiB in 6 s).
///
/// Proves: everything queued for a client counts against --max-pending; a client whose own
/// commands overflow its queue waits at most --stall-timeout and is then disconnected as too
/// slow (and logged so); the daemon's memory stays within a few queues meanwhile; the lobby
/// still relays afterwards.
#[test]
fn a_client_that_never_reads_cannot_grow_memory_through_commands() {
    let d = Daemon::spawn(&[
        "--chat",
        "--max-pending",
        "65536",
        "--history",
        "50",
        "--stall-timeout",
        "1000",
    ]);
    let mut reader = d.connect();
    reader
        .expect("* welcome to relayd, you are guest1 (1 online) — /help for commands\n".as_bytes());

    // Rooms a and b, each with a member who keeps it (a room nobody is in keeps its history
    // only for --history-age) and five lines of history. /who answers only after the
    // lines before it were delivered (and so kept).
    let text = "x".repeat(200);
    let mut keepers = Vec::new();
    for (room, name) in [("a", "guest2"), ("b", "guest3")] {
        let mut k = d.connect();
        k.expect(
            format!("* welcome to relayd, you are {name} (2 online) — /help for commands\n")
                .as_bytes(),
        );
        reader.expect(format!("* {name} joined (2 online)\n").as_bytes());
        k.send(format!("/join {room}\n").as_bytes());
        k.expect(format!("* you are now in {room} (1 online)\n").as_bytes());
        reader.expect(format!("* {name} left (joined {room}) (1 online)\n").as_bytes());
        for i in 0..5 {
            k.send(format!("{room} history {i} {text}\n").as_bytes());
        }
        k.send(b"/who\n");
        k.expect(format!("* 1 in {room}: {name}\n").as_bytes());
        keepers.push(k);
    }
    let mut talker = d.connect();
    talker
        .expect("* welcome to relayd, you are guest4 (2 online) — /help for commands\n".as_bytes());
    reader.expect(b"* guest4 joined (2 online)\n");
    for i in 0..5 {
        talker.send(format!("lobby history {i} {text}\n").as_bytes());
        reader.expect(format!("<guest4> lobby history {i} {text}\n").as_bytes());
    }

    let hostile = connect_small_rcvbuf(d.addrs[0], 4096);
    let mut hostile = Client::from_stream(hostile);
    let hostile_name = welcome_name(&hostile.line());
    assert_eq!(hostile_name, "guest5");
    let hostile_id = hostile_name.strip_prefix("guest").unwrap().to_string();
    reader.expect(b"* guest5 joined (3 online)\n");

    // The keepers hear the hostile client come and go thousands of times a second: they
    // read it all, so that only the hostile client falls behind.
    let stop = Arc::new(AtomicBool::new(false));
    let drains: Vec<_> = keepers
        .iter()
        .map(|k| drain(k.stream.try_clone().unwrap(), Arc::clone(&stop)))
        .collect();

    let baseline = d.rss_kib();
    let flood = b"/join a\n/join b\n".repeat(4096);
    let written = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let flooding = write_in_background(
        hostile.stream.try_clone().unwrap(),
        flood,
        true,
        Arc::clone(&written),
        Arc::clone(&stop),
        Duration::from_secs(20),
    );

    // Until the daemon logs the hostile client's disconnection, watching its memory meanwhile
    // (and ending the flood early if it grows past the bound).
    let limit_kib = 32 * KIB;
    let mut log = Vec::new();
    loop {
        log.extend(d.log_so_far());
        if log.iter().any(|l| logs_slow_disconnect(l, &hostile_id)) {
            break;
        }
        let grown = d.rss_kib().saturating_sub(baseline);
        if grown >= limit_kib || start.elapsed() > Duration::from_secs(15) {
            stop.store(true, Ordering::Relaxed);
            panic!(
                "after {:?} of /join flood ({} bytes sent) the hostile client is still \
                 connected and the daemon's RSS grew by {} MiB (bound {} MiB); log: {log:?}",
                start.elapsed(),
                written.load(Ordering::Relaxed),
                grown / KIB,
                limit_kib / KIB
            );
        }
        // Polling interval for the log and /proc, not a synchronisation.
        thread::sleep(Duration::from_millis(10));
    }
    let peak = d.peak_rss_kib();
    stop.store(true, Ordering::Relaxed);
    let write_error = flooding.join().unwrap();

    // The hostile client's stream ends: its writes already failed, or reading it finds the
    // end after what was queued (a few queues at most).
    let mut rest = Vec::new();
    match hostile.reader_mut().read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => {
            panic!("the hostile client's stream did not end ({e}; write error {write_error:?})")
        }
    }
    assert!(
        peak.saturating_sub(baseline) < limit_kib,
        "peak RSS {peak} KiB, {baseline} KiB before the /join flood"
    );

    // The lobby still relays; it heard the hostile client arrive and leave for room a.
    talker.send(b"after the flood\n");
    reader.expect(b"* guest5 left (joined a) (2 online)\n");
    reader.expect(b"<guest4> after the flood\n");
    for h in drains {
        h.join().unwrap();
    }
}

/// Defect: --max-pending counted only the bytes queued for a client, not the bookkeeping
/// that each queued chunk costs (an allocation header and a queue slot: tens of bytes), so a
/// stream of 2-byte lines, each read as its own chunk, made a stuck client's queue cost ~24
/// times --max-pending before it was cut off.
///
/// Proves: with --stall-timeout 0 the stuck client is still cut off (its stream is whole lines,
/// then the too-slow notice), and the daemon's memory grew by no more than a few times
/// --max-pending while its queue filled with tiny chunks.
#[test]
fn a_queue_of_tiny_chunks_is_bounded_by_max_pending_including_bookkeeping() {
    let max_pending = MIB as u64;
    let path = SocketPath::new("tiny");
    let d = Daemon::spawn(&[
        "--max-pending",
        "1048576",
        "--stall-timeout",
        "0",
        "--admin",
        path.as_str(),
    ]);
    let mut admin = Admin::connect(&path.0);
    let mut stuck = Client::from_stream(connect_small_rcvbuf(d.addrs[0], 4096));
    let stuck_addr = stuck.stream.local_addr().unwrap();
    let mut sender = d.connect();
    sender.stream.set_nodelay(true).unwrap();

    // First the kernel's buffers towards the stuck client fill (megabytes, which cost the
    // daemon nothing): in bulk, each write read and delivered before the next, until the
    // daemon holds half a queue for it.
    let bulk = b"x\n".repeat(8192);
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        sender.send(&bulk);
        sent += bulk.len();
        let read_all = format!("\nbytes_in {sent}\n");
        while !admin.command("stats").contains(&read_all) {
            assert!(
                Instant::now() < deadline,
                "the daemon never read {sent} bytes"
            );
        }
        let row = admin
            .client_row(stuck_addr)
            .expect("the stuck client is gone");
        // Queued at all is not enough: every line waits in the queue for a moment, until the
        // deliverer's turn, and a socket that is full for 16 KiB writes may still take
        // megabytes of tiny ones, which the kernel packs into its buffers. Half the limit
        // queued means the socket takes nothing more.
        if row[7].parse::<u64>().unwrap() >= max_pending / 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing queued for the stuck client after {sent} bytes"
        );
    }

    // Then one `x\n` per write, each sent at once (TCP_NODELAY) and a few microseconds apart,
    // so that the daemon reads (and queues) most of them one by one: left unpaced, the sender
    // outruns the daemon's reads and they coalesce into chunks of dozens of bytes.
    let baseline = d.rss_kib();
    let limit_kib = 3 * max_pending / KIB + 2 * KIB;
    let start = Instant::now();
    let mut log = Vec::new();
    let mut lines = 0u64;
    let mut checked = Instant::now();
    loop {
        sender.send(b"x\n");
        lines += 1;
        // Pacing the sender's writes (a busy wait: a sleep lasts 50 µs or more), not a
        // synchronisation.
        let next = Instant::now() + Duration::from_micros(6);
        while Instant::now() < next {}
        if checked.elapsed() < Duration::from_millis(20) {
            continue;
        }
        checked = Instant::now();
        log.extend(d.log_so_far());
        if log
            .iter()
            .any(|l| l.contains("slow consumer") || l.contains("too slow"))
        {
            break;
        }
        let grown = d.rss_kib().saturating_sub(baseline);
        assert!(
            grown < limit_kib && start.elapsed() < Duration::from_secs(20),
            "after {:?} and {lines} two-byte lines the stuck client is still connected and \
             the daemon's RSS grew by {grown} KiB (bound {limit_kib} KiB for --max-pending \
             {max_pending}); log: {log:?}",
            start.elapsed(),
        );
    }
    let peak = d.peak_rss_kib();

    // Whole lines, then the notice, then the end of the stream.
    let rest = stuck.read_to_end();
    let notice_at = rest
        .windows(9)
        .position(|w| w == b"relayd: d")
        .unwrap_or_else(|| panic!("no notice in the {} bytes the stuck client got", rest.len()));
    let (got, notice) = rest.split_at(notice_at);
    assert!(
        got.chunks(2).all(|l| l == b"x\n"),
        "the stuck client's stream is not whole `x\\n` lines before the notice"
    );
    let notice = String::from_utf8_lossy(notice);
    let pending = notice
        .strip_prefix("relayd: disconnected: too slow (")
        .and_then(|r| r.strip_suffix(" bytes pending)\n"))
        .unwrap_or_else(|| panic!("not the too-slow notice: {notice:?}"));
    assert!(
        !pending.is_empty() && pending.bytes().all(|b| b.is_ascii_digit()),
        "not the too-slow notice: {notice:?}"
    );
    let grown = peak.saturating_sub(baseline);
    assert!(
        grown < limit_kib,
        "peak RSS grew by {grown} KiB (bound {limit_kib} KiB) for --max-pending {max_pending} \
         of two-byte lines"
    );
}

/// Spawns the daemon for the kick tests: two clients at most, a 64 KiB queue each, a long
/// stall, and the control socket.
fn kick_daemon(chat: bool, admin: &SocketPath) -> Daemon {
    let mut args = vec![
        "--max-clients",
        "2",
        "--stall-timeout",
        "10000",
        "--max-pending",
        "65536",
        "--admin",
        admin.as_str(),
    ];
    if chat {
        args.push("--chat");
    }
    Daemon::spawn(&args)
}

/// What the kick tests set up: R, who does not read yet; K, who floods from a thread and is
/// paced on R until megabytes of its lines sit unread in its socket buffers.
struct Paced {
    r: Client,
    /// Kept open until the test ends (K's thread writes to a clone of its socket).
    _k: Client,
    k_addr: SocketAddr,
    written: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    flooding: JoinHandle<Option<io::Error>>,
}

/// K's lines: 16 MiB of numbered 1 KiB lines.
const K_LINES: usize = 16 * 1024;

fn paced_flood(d: &Daemon, admin: &mut Admin, chat: bool) -> Paced {
    let mut r = Client::from_stream(connect_small_rcvbuf(d.addrs[0], 8192));
    if chat {
        r.expect(
            "* welcome to relayd, you are guest1 (1 online) — /help for commands\n".as_bytes(),
        );
    }
    let mut k = d.connect();
    if chat {
        k.expect(
            "* welcome to relayd, you are guest2 (2 online) — /help for commands\n".as_bytes(),
        );
    }
    let k_addr = k.stream.local_addr().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = write_in_background(
        k.stream.try_clone().unwrap(),
        numbered_lines(K_LINES),
        false,
        Arc::clone(&written),
        Arc::clone(&stop),
        Duration::from_secs(25),
    );

    // Paced: R's queue is (nearly) full and K's writes have stopped moving.
    let r_addr = r.stream.local_addr().unwrap();
    common::wait_until_paced("K", "R", &written, &flooding, || {
        admin
            .client_row(r_addr)
            .expect("R is not in the clients list")[7]
            .parse()
            .unwrap()
    });
    Paced {
        r,
        _k: k,
        k_addr,
        written,
        stop,
        flooding,
    }
}

/// Kicks K (paced, so the daemon reads nothing more of it meanwhile) and returns how many of
/// K's lines the daemon had read by then (its `lines in` column).
fn kick(admin: &mut Admin, paced: &Paced) -> usize {
    let row = admin
        .client_row(paced.k_addr)
        .expect("K is not in the clients list");
    let read: usize = row[5].parse().unwrap();
    let written = paced.written.load(Ordering::Relaxed);
    // The premise: megabytes of K's lines wait in its socket buffers, unread by the daemon.
    assert!(
        written >= read * 1024 + MIB,
        "only {written} bytes of K's lines were written, and the daemon read {read} lines"
    );
    assert_eq!(admin.command(&format!("kick {} spam", row[0])), "ok\n");
    read
}

/// A daemon (`chat` or raw) whose K was paced on R and then kicked: its admin socket path
/// (`tag` in the name), the daemon, the admin connection, the flood, and how many of K's
/// lines the daemon had read before the kick.
fn kicked_flood(tag: &str, chat: bool) -> (SocketPath, Daemon, Admin, Paced, usize) {
    let path = SocketPath::new(tag);
    let d = kick_daemon(chat, &path);
    let mut admin = Admin::connect(&path.0);
    let paced = paced_flood(&d, &mut admin, chat);
    let read = kick(&mut admin, &paced);
    (path, d, admin, paced, read)
}

/// Asserts that `text`, a line of K's that R got, is K's line `next` of `data` and one of the
/// `read` lines the daemon had read from K before the kick.
fn assert_next_k_line(text: &[u8], next: usize, read: usize, data: &[u8]) {
    assert!(
        next < read,
        "R got K's line {next}, but the daemon had read only {read} of K's lines when it \
         kicked K"
    );
    assert!(
        text == &data[next * 1024..(next + 1) * 1024],
        "K's line {next} is not next (lines out of order or garbled)"
    );
}

/// Defect: kicking a client only shut its socket; its thread went on reading what it had
/// already sent (megabytes in its socket buffers while it was paced) and relaying it, and its
/// --max-clients slot stayed taken until it had relayed it all.
///
/// Proves, in chat mode: right after the kick's `ok` a new client is admitted; the room gets
/// K's lines in order, none the daemon had not read before the kick, then K's leave notice
/// with the right count, and no line of K's after it.
#[test]
fn a_kicked_chat_client_is_not_heard_any_more() {
    let (_path, d, _admin, paced, read) = kicked_flood("kick-chat", true);
    let Paced {
        mut r,
        stop,
        flooding,
        ..
    } = paced;

    // K's slot is free at once.
    let mut n = d.connect();
    n.expect("* welcome to relayd, you are guest3 (2 online) — /help for commands\n".as_bytes());
    n.send(b"probe\n");

    r.expect(b"* guest2 joined (2 online)\n");
    let data = numbered_lines(K_LINES);
    let mut next = 0;
    // K's leave notice comes from K's own thread once it has dropped the line it was waiting
    // to hand R, while the newcomer's arrival and its probe come from another: the two
    // threads' lines interleave in any order. K's lines all come before its leave notice.
    let (mut left, mut joined, mut probed) = (false, false, false);
    while !(left && joined && probed) {
        let line = r.line();
        if let Some(text) = line.strip_prefix(b"<guest2> ") {
            assert!(!left, "R got a line of K's after K's leave notice");
            assert_next_k_line(text, next, read, &data);
            next += 1;
            continue;
        }
        match String::from_utf8_lossy(&line).as_ref() {
            "* guest2 left (kicked by operator: spam) (1 online)\n" if !left => left = true,
            "* guest3 joined (2 online)\n" if !joined => joined = true,
            "<guest3> probe\n" if joined && !probed => probed = true,
            other => panic!("unexpected line {other:?} (left: {left}, joined: {joined})"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    flooding.join().unwrap();
}

/// The same defect in raw mode: after the kick's `ok`, what K had sent but the daemon had not
/// read yet is never relayed, and a new client takes K's slot at once.
#[test]
fn a_kicked_raw_client_is_not_heard_any_more() {
    let (_path, d, mut admin, paced, read) = kicked_flood("kick-raw", false);
    let Paced {
        mut r,
        stop,
        flooding,
        ..
    } = paced;

    // K's slot is free at once: the new client is admitted, not told the server is full.
    let mut n = d.connect();
    let n_addr = n.stream.local_addr().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while admin.client_row(n_addr).is_none() {
        if Instant::now() > deadline {
            let mut told = Vec::new();
            let _ = n.stream.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = n.reader_mut().read_to_end(&mut told);
            panic!(
                "the client after the kick was not admitted; it got {:?}",
                String::from_utf8_lossy(&told)
            );
        }
        // Polling interval for the admin list, not a synchronisation.
        thread::sleep(Duration::from_millis(20));
    }
    n.send(b"probe after the kick\n");

    let data = numbered_lines(K_LINES);
    let mut next = 0;
    let after = loop {
        let line = r.line();
        if line.len() != 1024 || !line[..8].iter().all(u8::is_ascii_digit) {
            break line;
        }
        assert_next_k_line(&line, next, read, &data);
        next += 1;
    };
    assert_eq!(String::from_utf8_lossy(&after), "probe after the kick\n");
    stop.store(true, Ordering::Relaxed);
    flooding.join().unwrap();
}

/// A browser reading slowly through a deep backlog cannot answer a ping queued behind it in
/// time, but it is reading: it is not closed for "no answer to ping" while what came before
/// the ping still reaches it. (Seen in `relay-bench danmaku`: 2,660 of 10,000 viewers closed
/// that way at the end of a run, each after every line had reached it.)
#[test]
fn a_websocket_client_reading_through_a_backlog_is_not_closed_for_its_late_pong() {
    let d = Daemon::spawn(&[
        "--bind",
        "127.0.0.1:0",
        "--ws-bind",
        "127.0.0.1:0",
        "--ws-ping-interval",
        "1",
        "--write-timeout",
        "2",
        "--stall-timeout",
        "60000",
    ]);
    // A small receive buffer, as a slow link gives: what the browser has not read waits on
    // relayd's side (in its queue and the kernel's send buffer), where relayd can see it move.
    // (Bytes a client's kernel took and its program has not read are out of relayd's sight.)
    let addr = d.ws_addr();
    let sock = connect_small_rcvbuf(addr, 16 * 1024);
    let mut ws = crate::common::ws::ws_handshake(sock, addr, &[]).unwrap();
    // relayd answers the handshake before it registers the browser: under load, lines sent
    // at once could come before it is in the room.
    d.wait_log("over WebSocket");
    let mut sender = d.connect();
    // 3 MiB of 1 KiB lines, read at about 512 KiB/s: some 6 s behind, where the ping, sent
    // after 1 s of silence from the browser, is answered at the earliest once what was queued
    // before it is read — well past its 2 s.
    const LINES: usize = 3072;
    let line = |i: usize| format!("{i:04}{}\n", "x".repeat(1019));
    let writer = thread::spawn(move || {
        for i in 0..LINES {
            sender.send(line(i).as_bytes());
        }
        sender
    });
    let started = Instant::now();
    for i in 0..LINES {
        let text = loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => break t.to_string(),
                Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_)) => {}
                other => panic!(
                    "line {i} after {:?}: {other:?}; log: {:?}",
                    started.elapsed(),
                    d.log_so_far()
                ),
            }
        };
        assert_eq!(text, line(i).trim_end(), "line {i}");
        // Pacing the reader, not a synchronisation.
        if i % 2 == 1 {
            thread::sleep(Duration::from_millis(4));
        }
    }
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let _sender = writer.join().unwrap();
    assert!(
        !d.log_so_far()
            .iter()
            .any(|l| l.contains("no answer to ping")),
        "{:?}",
        d.log_so_far()
    );
}
