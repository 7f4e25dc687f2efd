//! Hostile clients and operator mistakes: a secret trickled in byte by byte, a flood of long
//! lines from a client that does not read, half-closed connections piling up, command
//! injection through `relayd ctl`, notices used as a flood, escape sequences aimed at the
//! operator's terminal, and a few smaller holes. Every hostile client is bounded in count and
//! in time, talks to 127.0.0.0/8 only, and stops by itself.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown as SocketShutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::{self, Daemon, admin_command, chat};
use relayd::Config;
use relayd::Rate;

const SECRET: &[u8] = b"open sesame";

/// A TCP connection to `to` from the local address `src` (any of 127.0.0.0/8).
fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    connect_from_with(src, to, None)
}

/// [`connect_from`], with the receive buffer set to `rcvbuf` bytes before connecting.
fn connect_from_with(src: &str, to: SocketAddr, rcvbuf: Option<usize>) -> TcpStream {
    let src: IpAddr = src.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.bind(&SocketAddr::new(src, 0).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    TcpStream::from(socket)
}

/// A TCP connection to `to` whose receive buffer is as small as the kernel allows, so that
/// what it does not read backs up into the daemon at once.
fn connect_small_rcvbuf(to: SocketAddr) -> TcpStream {
    let stream = connect_from_with("127.0.0.1", to, Some(4096));
    stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    stream
}

/// Trickles bytes (never a newline) into `stream` from four threads, each writing one byte
/// about every 100 µs, until a write fails, `stop` is set, or 15 s have passed. Four writers
/// so that the daemon is never a millisecond without a byte, even when one of them is
/// descheduled on a busy machine. Returns how many bytes were sent.
fn trickle(stream: TcpStream, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    // Each byte its own segment, at once (no Nagle delay).
    stream.set_nodelay(true).unwrap();
    let writers: Vec<JoinHandle<usize>> = (0..4)
        .map(|_| {
            let mut stream = stream.try_clone().unwrap();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let start = Instant::now();
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(15) {
                    if stream.write_all(b"x").is_err() {
                        break;
                    }
                    sent += 1;
                    // Pacing: this is the hostile client's rate, not synchronisation.
                    thread::sleep(Duration::from_micros(100));
                }
                sent
            })
        })
        .collect();
    thread::spawn(move || writers.into_iter().map(|w| w.join().unwrap()).sum())
}

fn secret_config(auth_timeout: Duration) -> Config {
    Config {
        secret: Some(SECRET.to_vec()),
        auth_timeout,
        // Room for everything the trickling clients send (15 s at most) in one line.
        max_line: 4 << 20,
        ..Config::default()
    }
}

/// Removes a file when dropped: a control socket a killed daemon leaves, a secret file.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The value of one `stats` counter, read over the control socket at `path`.
fn admin_stat(path: &Path, key: &str) -> u64 {
    common::stat_in(&admin_command(path, "stats"), key)
}

/// Runs `relayd ARGS` to completion, killing it (and failing the test) if it has not exited
/// within `limit`.
fn run_relayd(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relayd"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "relayd {args:?} did not exit within {limit:?}; stdout {:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Waits up to `limit` for `d` to exit; its exit code, or `None` if it is still running.
fn exit_within(d: &mut Daemon, limit: Duration) -> Option<Option<i32>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            return Some(status.code());
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The inodes of the sockets process `pid` holds open.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return inodes;
    };
    for entry in dir.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path())
            && let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.parse().unwrap());
        }
    }
    inodes
}

/// How many TCP connections process `pid` holds on its listening `port` whose other end is
/// 127.0.0.1 (any port): its server-side connections from that address.
fn connections_from_localhost(pid: u32, port: u16) -> usize {
    let inodes = socket_inodes(pid);
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local_suffix = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let f: Vec<&str> = row.split_whitespace().collect();
            f.len() > 9
                && f[1].ends_with(&local_suffix)
                && f[2].starts_with("0100007F:")
                && f[9].parse().is_ok_and(|inode: u64| inodes.contains(&inode))
        })
        .count()
}

/// Lines of `size` bytes each (`\n` included), numbered so that loss and reordering show.
fn numbered_lines(count: usize, size: usize) -> Vec<u8> {
    let mut all = Vec::with_capacity(count * size);
    for i in 0..count {
        let start = all.len();
        write!(all, "{i:08} ").unwrap();
        all.resize(start + size - 1, b'a' + (i % 26) as u8);
        all.push(b'\n');
    }
    all
}

// 1. The authentication deadline.

/// Defect: past the `--secret-file` deadline each read still waited a millisecond, and a byte
/// arriving within it kept the client on: a client trickling bytes (never a newline) fast
/// enough stayed unauthenticated, holding a slot, long after its deadline. Proves: the
/// deadline counts from connecting whatever arrives: such a client is told
/// `relayd: authentication timeout` and closed within `auth_timeout` plus 1 s.
#[test]
fn auth_deadline_counts_from_connect_however_fast_bytes_trickle_in() {
    let auth_timeout = Duration::from_secs(1);
    let server = chat::Server::start(secret_config(auth_timeout));
    let connected = Instant::now();
    let stream = TcpStream::connect(server.addr).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let hostile = trickle(stream.try_clone().unwrap(), Arc::clone(&stop));
    let mut c = chat::Client::new(stream);
    let notice = c.line();
    let took = connected.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(notice, "relayd: authentication timeout\n");
    c.expect_eof();
    let sent = hostile.join().unwrap();
    assert!(
        took >= auth_timeout && took < auth_timeout + Duration::from_secs(1),
        "closed after {took:?} (auth timeout {auth_timeout:?}, {sent} bytes trickled)"
    );
}

/// Defect: a client that had not sent the secret yet was invisible to the operator: not in
/// `clients`, and `kick` could not reach it. Proves: while it trickles bytes it is listed
/// with `-` in the room column (8 columns: id address name room seconds lines_in lines_out
/// bytes_pending), and `kick ID` answers `ok`, tells it `relayd: kicked by operator` and
/// closes it.
#[test]
fn an_unauthenticated_client_is_listed_without_a_room_and_can_be_kicked() {
    let server = chat::Server::start(secret_config(Duration::from_secs(60)));
    let stream = TcpStream::connect(server.addr).unwrap();
    let me = stream.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let hostile = trickle(stream.try_clone().unwrap(), Arc::clone(&stop));
    let mut c = chat::Client::new(stream);
    let deadline = Instant::now() + chat::TIMEOUT;
    let row = loop {
        let listing = server.admin("clients");
        if let Some(row) = listing
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(me.as_str()))
        {
            break row.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the unauthenticated client {me} is not in `clients`: {listing:?}"
        );
        thread::sleep(Duration::from_millis(5));
    };
    let cols: Vec<&str> = row.split(' ').collect();
    assert_eq!(cols.len(), 11, "clients row {row:?}");
    assert_eq!(
        cols[3], "-",
        "room column of an unauthenticated client: {row:?}"
    );
    assert_eq!(server.admin(&format!("kick {}", cols[0])), "ok\n");
    c.expect("relayd: kicked by operator\n");
    c.expect_eof();
    stop.store(true, Ordering::Relaxed);
    hostile.join().unwrap();
}

// 2. `line too long` notices.

/// The notice a client gets for a line over `--max-line 16`.
const TOO_LONG: &[u8] = b"relayd: line too long (max 16 bytes), discarded\n";

/// How long the long-line flood lasts at most.
const FLOOD: Duration = Duration::from_secs(10);

/// A client with a tiny receive buffer sends 100-byte lines to a `--max-line 16` daemon as
/// fast as it can for up to [`FLOOD`] (or until its writes fail), reading 4 KiB every 2 s if
/// `reads_slowly`, never otherwise. Meanwhile two other clients keep relaying, and the
/// daemon's peak RSS must stay within 16 MiB of what it was before. Returns what the hostile
/// client read and for how long the flood went on.
fn long_line_flood(reads_slowly: bool) -> (Vec<u8>, Duration) {
    let bind = Daemon::free_addr();
    // -q -q: one warning per discarded line would otherwise fill the test's memory.
    let d = Daemon::spawn(&[
        "--bind",
        &bind,
        "-q",
        "-q",
        "--max-line",
        "16",
        "--max-pending",
        "65536",
    ]);
    let mut a = d.connect();
    let mut b = d.connect();
    let mut hostile = connect_small_rcvbuf(d.addrs[0]);
    // The last to connect is heard: everyone is registered.
    hostile.write_all(b"hello\n").unwrap();
    a.expect(b"hello\n");
    b.expect(b"hello\n");
    let baseline = d.peak_rss_kib();
    let slack_kib = 16 * 1024;

    let stop = Arc::new(AtomicBool::new(false));
    let (stop_reading, reading_stopped) = mpsc::channel::<()>();
    let reader = {
        let mut hostile = hostile.try_clone().unwrap();
        hostile
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        thread::spawn(move || {
            let mut got = Vec::new();
            if !reads_slowly {
                return got;
            }
            // Pacing: the hostile client reads this slowly on purpose (often enough that
            // --write-timeout never fires).
            while let Err(RecvTimeoutError::Timeout) =
                reading_stopped.recv_timeout(Duration::from_secs(2))
            {
                let mut buf = [0; 4096];
                match hostile.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            got
        })
    };
    let flood = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut line = vec![b'x'; 99];
            line.push(b'\n');
            let batch = line.repeat(64);
            hostile
                .set_write_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < FLOOD {
                if hostile.write_all(&batch).is_err() {
                    break;
                }
            }
            start.elapsed()
        })
    };
    let mut rounds = 0;
    while !flood.is_finished() {
        rounds += 1;
        // Short enough for --max-line 16.
        let line = format!("ping {rounds}\n");
        a.send(line.as_bytes());
        expect_past_hostile_tail(&mut b, line.as_bytes());
        if d.peak_rss_kib() >= baseline + slack_kib {
            break; // fails below, without waiting out the flood
        }
        // Pacing: how often relaying and memory are sampled, not synchronisation.
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let flooded = flood.join().unwrap();
    drop(stop_reading);
    let got = reader.join().unwrap();
    let peak = d.peak_rss_kib();
    assert!(
        peak < baseline + slack_kib,
        "peak RSS {peak} KiB, {} KiB over the baseline {baseline} KiB after {flooded:?} of \
         long lines",
        peak - baseline
    );
    b.send(b"after\n");
    expect_past_hostile_tail(&mut a, b"after\n");
    (got, flooded)
}

/// Reads the next line, which must be `want`, passing over one line of the hostile client's
/// `x`s: when its flood ends with a write cut short (its 1 s write timeout), the start of its
/// last line, under `--max-line`, is relayed with a `\n` as relayd does for any client that
/// leaves mid-line.
fn expect_past_hostile_tail(client: &mut common::Client, want: &[u8]) {
    let mut line = client.line();
    if line.len() > 1 && line[..line.len() - 1].iter().all(|&b| b == b'x') {
        line = client.line();
    }
    assert_eq!(
        String::from_utf8_lossy(&line),
        String::from_utf8_lossy(want)
    );
}

/// Defect: each discarded long line queued a `line too long` notice outside `--max-pending`
/// and without limit, so a client that sends long lines and never reads grew the daemon by
/// hundreds of MB. Proves: the daemon's peak RSS stays within 16 MiB over 10 s of it, and two
/// other clients relay normally all along.
#[test]
fn long_lines_from_a_client_that_never_reads_cannot_grow_memory() {
    long_line_flood(false);
}

/// Defect: as above, with a client that reads 4 KiB every 2 s so that `--write-timeout`
/// never cuts it off. Proves: peak RSS stays within 16 MiB, others relay, and what the client
/// reads is whole `line too long` notices, a burst of 5 and then at most one a second.
#[test]
fn long_lines_from_a_slow_reader_cannot_grow_memory_and_notices_are_rate_limited() {
    let (got, flooded) = long_line_flood(true);
    // It also hears the other clients' pings (raw mode relays to everyone); its last read
    // may end mid-line.
    let whole = &got[..got.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1)];
    let mut notices = 0;
    for line in whole.split_inclusive(|&c| c == b'\n') {
        if line == TOO_LONG {
            notices += 1;
        } else {
            assert!(
                line.starts_with(b"ping "),
                "the slow reader got {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
    let most = 5 + flooded.as_secs() as usize + 2;
    assert!(
        (1..=most).contains(&notices),
        "{notices} notices in {flooded:?} (a burst of 5, then one a second: at most {most})"
    );
}

// 3. Half-closed connections.

/// Defect: a client that half-closes at once stops counting against `--max-per-ip` while its
/// backlog (a history replay) is still being flushed, so one address could hold hundreds of
/// connections and threads (324 connections, 651 threads for 300 attempts). Proves: with
/// `--max-per-ip 2`, 300 connect-and-half-close attempts from 127.0.0.1 that never read leave
/// the daemon holding at most 4 connections from that address and fewer than 20 threads at
/// every step; once they are dropped, a client from 127.0.0.2 is served (history and live
/// lines).
#[test]
fn half_closed_clients_stay_within_max_per_ip() {
    let d = Daemon::spawn(&[
        "--max-per-ip",
        "2",
        "--max-clients",
        "4",
        "--history",
        "200",
    ]);
    let addr = d.addrs[0];
    let (pid, port) = (d.child.id(), addr.port());
    // 6.4 MiB: more than the kernel's largest TCP send buffer (4 MiB), so a replay to a
    // client that never reads cannot be handed to the kernel at once; within --max-pending.
    let history = numbered_lines(200, 32 * 1024);
    {
        let mut reader = common::Client::from_stream(connect_from("127.0.0.3", addr));
        let mut feeder = common::Client::from_stream(connect_from("127.0.0.3", addr));
        feeder.send(&history);
        assert!(
            reader.bytes(history.len()) == history,
            "history lines garbled"
        );
    }

    let mut held = Vec::with_capacity(300);
    for i in 1..=300 {
        // A small receive buffer: the history replay cannot vanish into the kernel at once.
        let s = connect_from_with("127.0.0.1", addr, Some(4096));
        s.shutdown(SocketShutdown::Write).unwrap();
        held.push(s);
        let conns = connections_from_localhost(pid, port);
        let threads = d.threads();
        assert!(
            conns <= 4 && threads < 20,
            "after {i} half-closed connections from 127.0.0.1 the daemon holds {conns} of \
             them and runs {threads} threads"
        );
    }
    // The accept loop takes connections in order: once a later one is served, all 300 were
    // dealt with.
    let mut p = common::Client::from_stream(connect_from("127.0.0.2", addr));
    assert!(p.bytes(history.len()) == history, "history replay garbled");
    let conns = connections_from_localhost(pid, port);
    let threads = d.threads();
    assert!(
        conns <= 4 && threads < 20,
        "after 300 half-closed connections from 127.0.0.1 the daemon holds {conns} of them \
         and runs {threads} threads"
    );

    drop(held);
    let mut q = common::Client::from_stream(connect_from("127.0.0.2", addr));
    assert!(q.bytes(history.len()) == history, "history replay garbled");
    q.send(b"after the storm\n");
    p.expect(b"after the storm\n");
}

// 4. `relayd ctl` command injection.

/// Runs `relayd ctl --admin PATH ARGS` and returns its output.
fn ctl(path: &Path, args: &[&str]) -> Output {
    let path = path.to_str().unwrap();
    run_relayd(&[&["ctl", "--admin", path], args].concat(), common::TIMEOUT)
}

/// `relayd ctl broadcast "done<sep>kick 2 pwned"` against a raw-mode daemon with two
/// clients: refused with one error line, and neither broadcast nor kick happens.
fn ctl_refuses_line_break(sep: &str) {
    let admin = chat::socket_path();
    let _cleanup = RemoveOnDrop(admin.clone());
    let d = Daemon::spawn(&["--admin", admin.to_str().unwrap()]);
    let mut c1 = d.connect();
    let mut c2 = d.connect();
    c2.send(b"hi\n");
    c1.expect(b"hi\n");

    let out = ctl(&admin, &["broadcast", &format!("done{sep}kick 2 pwned")]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "relayd: ctl: a command cannot contain a line break\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(out.status.code(), Some(1));

    let out = ctl(&admin, &["broadcast", "probe"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    assert_eq!(out.status.code(), Some(0));
    // Nothing came before the probe: no "done", no kick notice.
    c1.expect(b"probe\n");
    c2.expect(b"probe\n");
}

/// Defect: `relayd ctl` sent its arguments as they were, so a `\n` in one made the control
/// socket read a second command (`kick 2 pwned`). Proves: ctl exits 1 with exactly
/// `relayd: ctl: a command cannot contain a line break` on stderr, and no client is sent or
/// kicked anything (their next line is a later broadcast).
#[test]
fn ctl_refuses_a_command_with_a_newline() {
    ctl_refuses_line_break("\n");
}

/// Defect: as above, with `\r`. Proves the same refusal.
#[test]
fn ctl_refuses_a_command_with_a_carriage_return() {
    ctl_refuses_line_break("\r");
}

// 5. --rate and the notices a client causes.

/// Whether `line` is a `/who` answer: `* N in ROOM: names`.
fn is_who(line: &str) -> bool {
    let mut words = line.split(' ');
    words.next() == Some("*")
        && words.next().is_some_and(|n| n.parse::<u32>().is_ok())
        && words.next() == Some("in")
        && line.contains(": ")
}

/// Lines `c` reads until the answer to the `/who` it sends now (which it does not return).
fn lines_until_who(c: &mut chat::Client) -> Vec<String> {
    c.send("/who\n");
    let mut lines = Vec::new();
    loop {
        let line = c.line();
        if is_who(&line) {
            return lines;
        }
        lines.push(line);
    }
}

/// Defect: `--rate` counted only relayed lines, so `/nick` and `/join` in a loop made the
/// room read hundreds of notices (`* a is now b`, `* x left (joined y)`, `* x joined`).
/// Proves: with `--rate 5/10`, 200 `/nick`s and 100 `/join x` + `/join lobby` toggles make a
/// lobby listener read no more notices than the rate allows (5, plus one per 2 s of the
/// run), and each sender is told `relayd: rate limit exceeded (5 lines per 10 s), /nick
/// dropped` (or `/join dropped`) once per 10 s at most.
#[test]
fn rate_limit_covers_the_notices_commands_cause() {
    let server = chat::Server::start(Config {
        rate: Some(Rate {
            lines: 5,
            seconds: 10,
        }),
        ..chat::chat_config()
    });
    let [mut listener, mut nicks, mut joins] = server.join_three();
    let start = Instant::now();
    let renames: String = (0..200).map(|k| format!("/nick n{k}\n")).collect();
    nicks.send(&renames);
    joins.send(&"/join x\n/join lobby\n".repeat(100));
    let told_nicks = lines_until_who(&mut nicks);
    let told_joins = lines_until_who(&mut joins);
    let heard = lines_until_who(&mut listener);
    let took = start.elapsed();

    let renamed = heard.iter().filter(|l| l.contains(" is now n")).count();
    let moved = heard
        .iter()
        .filter(|l| l.starts_with("* guest3 left (joined x)") || l.starts_with("* guest3 joined"))
        .count();
    assert_eq!(
        renamed + moved,
        heard.len(),
        "unexpected lines in the lobby: {heard:?}"
    );
    let most = 5 + 1 + took.as_millis() as usize / 2000;
    assert!(
        renamed <= most && moved <= most,
        "the lobby heard {renamed} renames and {moved} joins/leaves in {took:?} (at most \
         {most} each)"
    );
    let warnings = 1 + took.as_secs() as usize / 10;
    for (who, told) in [("/nick", &told_nicks), ("/join", &told_joins)] {
        let exceeded = format!("relayd: rate limit exceeded (5 lines per 10 s), {who} dropped\n");
        let n = told.iter().filter(|l| **l == exceeded).count();
        assert!(
            (1..=warnings).contains(&n),
            "the {who} sender was told {n} times in {took:?} that it is over the rate"
        );
    }
}

// 6a. --console output.

/// `relayd --console` on 127.0.0.1 port 0, its stdout read line by line as raw bytes.
struct Console {
    child: Child,
    addr: SocketAddr,
    out: Receiver<Vec<u8>>,
    _log: Receiver<String>,
    _stdin: ChildStdin,
}

impl Console {
    fn spawn() -> Console {
        let mut child = common::spawn_console();
        let stdin = child.stdin.take().unwrap();
        let log = common::lines_of(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, out) = mpsc::channel();
        thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match stdout.read_until(b'\n', &mut line) {
                    Ok(n) if n > 0 && tx.send(line).is_ok() => {}
                    _ => return,
                }
            }
        });
        let deadline = Instant::now() + common::TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = log
                .recv_timeout(left)
                .expect("relayd never logged its address");
            if let Some((_, addr)) = line.rsplit_once("listening on ") {
                break addr.trim().parse().unwrap();
            }
        };
        Console {
            child,
            addr,
            out,
            _log: log,
            _stdin: stdin,
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Defect: `--console` printed relayed raw-mode lines byte for byte, so any client could
/// send escape sequences to the operator's terminal (OSC 52 writes the clipboard, `ESC[2J`
/// clears the screen). Proves: the relayed line reaches the other client byte-exact, and the
/// console prints exactly `[2] ]52;c;cHduZWQ=[2Jhi\n`, control characters removed.
#[test]
fn console_output_has_no_control_characters() {
    let d = Console::spawn();
    let mut a = common::Client::connect(d.addr);
    let mut b = common::Client::connect(d.addr);
    let hostile = b"\x1b]52;c;cHduZWQ=\x07\x1b[2Jhi\n";
    b.send(hostile);
    a.expect(hostile);
    let printed = d
        .out
        .recv_timeout(common::TIMEOUT)
        .expect("nothing printed on the console");
    assert_eq!(
        String::from_utf8_lossy(&printed),
        "[2] ]52;c;cHduZWQ=[2Jhi\n"
    );
}

// 6b. A kick reason with control characters.

/// Defect: the operator's kick reason went into the room's `left` notice (and the kicked
/// client's line) as it was, escape sequences and all. Proves: in chat mode `kick bob
/// ESC[31mspam BEL!` makes the room read exactly `* bob left (kicked by operator: [31mspam!)
/// (1 online)` and bob `relayd: kicked by operator: [31mspam!`, with no byte below 0x20 but
/// the final `\n`.
#[test]
fn kick_reason_is_cleaned_of_control_characters() {
    let server = chat::Server::start(chat::chat_config());
    let (mut a, _) = server.join();
    let (mut b, _) = server.join();
    a.expect("* guest2 joined (2 online)\n");
    b.send("/nick bob\n");
    b.expect("* you are now bob\n");
    a.expect("* guest2 is now bob\n");
    let mut admin = chat::Admin::connect(&server);
    assert_eq!(admin.command("kick bob \x1b[31mspam\x07!"), "ok\n");
    let notice = a.line_bytes();
    assert_eq!(
        String::from_utf8_lossy(&notice),
        "* bob left (kicked by operator: [31mspam!) (1 online)\n"
    );
    assert!(!notice[..notice.len() - 1].iter().any(|&c| c < 0x20));
    b.expect("relayd: kicked by operator: [31mspam!\n");
    b.expect_eof();
}

// 6c. refused_full with --secret-file.

/// Defect: with `--secret-file`, a client refused because the server was full was not
/// counted in `stats` `refused_full`. Proves: with `--max-clients 1`, the second connection
/// gets `relayd: server full (1 clients)` and end of stream, and `refused_full` is 1.
#[test]
fn refused_full_counts_refusals_with_a_secret() {
    let server = chat::Server::start(Config {
        max_clients: 1,
        ..secret_config(Duration::from_secs(60))
    });
    let mut first = server.connect();
    first.send_bytes(SECRET);
    first.send("\n");
    let mut second = server.connect();
    second.expect("relayd: server full (1 clients)\n");
    second.expect_eof();
    assert_eq!(server.stat("refused_full"), 1);
}

// 6d. A secret longer than --max-line.

/// Defect: a `--secret-file` secret longer than `--max-line` was accepted although no client
/// could ever send it (the line would be discarded as too long). Proves: startup fails with
/// one stderr line starting `relayd: --secret-file` and exit status 1.
#[test]
fn a_secret_longer_than_max_line_is_refused_at_startup() {
    let path = std::env::temp_dir().join(format!("relayd-hostile-secret-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(path.clone());
    std::fs::write(&path, "a secret longer than sixteen bytes\n").unwrap();
    let out = run_relayd(
        &[
            "--bind",
            "127.0.0.1:0",
            "--max-line",
            "16",
            "--secret-file",
            path.to_str().unwrap(),
        ],
        Duration::from_secs(5),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr:?}");
    assert!(
        stderr.starts_with("relayd: --secret-file"),
        "stderr: {stderr:?}"
    );
    assert_eq!(out.status.code(), Some(1));
}

// 6e. SIGTERM when the admin socket path belongs to another daemon.

/// Defect: at shutdown a daemon woke its admin accept loop by connecting to its socket's
/// path; when that path had been taken over by another daemon, the connection went there
/// and the first daemon never exited. Proves: daemon A, whose path now belongs to daemon B,
/// exits 0 within 5 s of SIGTERM, and B keeps running and answering `stats` on the path.
#[test]
fn sigterm_does_not_hang_when_the_admin_path_belongs_to_another_daemon() {
    let path: PathBuf = chat::socket_path();
    let _cleanup = RemoveOnDrop(path.clone());
    let p = path.to_str().unwrap();
    let mut a = Daemon::spawn(&["--admin", p]);
    common::eventually("daemon A's admin socket", || {
        UnixStream::connect(&path).is_ok()
    });
    std::fs::remove_file(&path).unwrap();
    let mut b = Daemon::spawn(&["--admin", p]);
    common::eventually("daemon B's admin socket", || {
        UnixStream::connect(&path).is_ok()
    });

    a.signal(libc::SIGTERM);
    let exited = exit_within(&mut a, Duration::from_secs(5));
    assert_eq!(
        exited,
        Some(Some(0)),
        "daemon A's exit within 5 s of SIGTERM"
    );
    assert!(b.is_running(), "daemon B is gone");
    let stats = admin_command(&path, "stats");
    assert!(
        stats.starts_with("uptime_seconds ") && stats.contains("\nclients 0\n"),
        "daemon B's stats: {stats:?}"
    );
    b.signal(libc::SIGTERM);
    assert_eq!(b.wait_exit(), Some(0));
}

// 6f. Memory kept after one long line.

/// Defect: a client's framing buffers kept the capacity of the longest line it ever sent, so
/// 400 clients that each sent one 60 KB line and then idled held over 100 KiB each. Proves:
/// the daemon's RSS once all 400 lines have been read and dealt with is less than
/// 400 × (16 + 16) KiB above its RSS with the 400 clients connected and idle: 16 KiB for the
/// pages of each client's 16 KiB read buffer, which a long line makes the kernel write whole
/// (README counts them in a client's cost), and 16 KiB for anything else.
///
/// In raw mode every line goes to every other client, and 400 clients that do not read
/// cannot take 400 × 60 KB each; so the long lines are dropped by `--rate 1/3600` (each
/// client's one token goes to a 2-byte line first), after being read and framed whole like
/// any line. Each client's rate-limit notice tells that its long line has been dealt with.
#[test]
fn clients_that_sent_one_long_line_do_not_keep_its_size() {
    const CLIENTS: usize = 400;
    const LINE: usize = 60 * 1024;
    let admin = chat::socket_path();
    let _cleanup = RemoveOnDrop(admin.clone());
    let d = Daemon::spawn(&[
        "--max-line",
        "65536",
        "--rate",
        "1/3600",
        "--admin",
        admin.to_str().unwrap(),
    ]);
    let mut clients: Vec<common::Client> = (0..CLIENTS).map(|_| d.connect()).collect();
    common::eventually("400 clients", || {
        admin_stat(&admin, "clients") == CLIENTS as u64
    });
    for c in &mut clients {
        c.send(b"x\n");
    }
    let others = b"x\n".repeat(CLIENTS - 1);
    for c in &mut clients {
        assert!(c.bytes(others.len()) == others, "the short lines garbled");
    }
    let baseline = d.rss_kib();

    let mut long = vec![b'a'; LINE - 1];
    long.push(b'\n');
    // One after another: what a client keeps is measured, not how many long lines the
    // allocator once held at the same time.
    for c in &mut clients {
        c.send(&long);
        c.expect(b"relayd: rate limit exceeded (1 line per 3600 s), line dropped\n");
    }
    let after = d.rss_kib();
    // The read buffer's pages, and 16 KiB more.
    let most = CLIENTS as u64 * (16 + 16);
    assert!(
        after < baseline + most,
        "RSS {after} KiB after {CLIENTS} clients sent a {LINE}-byte line each, {} KiB over \
         {baseline} KiB before (at most {most})",
        after.saturating_sub(baseline)
    );
}

// 6g. IPv4-mapped --allow networks.

/// `--allow RULE` on a raw-mode daemon: two clients from 127.0.0.1 must relay to each other.
fn allow_admits_localhost(rule: &str) -> Daemon {
    let d = Daemon::spawn(&["--allow", rule]);
    let mut a = common::Client::from_stream(connect_from("127.0.0.1", d.addrs[0]));
    let mut b = common::Client::from_stream(connect_from("127.0.0.1", d.addrs[0]));
    b.send(b"mapped\n");
    a.expect(b"mapped\n");
    d
}

/// Defect: an IPv4-mapped network (`::ffff:0:0/96`, documented as matched as IPv4) was
/// refused at startup (its prefix counted against IPv4's 32 bits). Proves: the daemon starts
/// with it and admits 127.0.0.1 clients.
#[test]
fn allow_of_all_ipv4_mapped_addresses_admits_ipv4_clients() {
    allow_admits_localhost("::ffff:0:0/96");
}

/// Defect: as above for narrower IPv4-mapped networks (`::ffff:127.0.0.0/104`, refused at
/// startup). Proves: a mapped network is the IPv4 network it maps, its prefix counted from
/// bit 96: `::ffff:127.0.0.0/104` (127.0.0.0/8) admits 127.0.0.1 and 127.0.0.2, and
/// `::ffff:127.0.0.0/127` (127.0.0.0/31) admits 127.0.0.1 and closes 127.0.0.2 without a byte.
#[test]
fn allow_of_an_ipv4_mapped_network_is_matched_as_ipv4() {
    let d = allow_admits_localhost("::ffff:127.0.0.0/104");
    let mut a = common::Client::from_stream(connect_from("127.0.0.2", d.addrs[0]));
    let mut b = common::Client::from_stream(connect_from("127.0.0.2", d.addrs[0]));
    b.send(b"also in 127/8\n");
    a.expect(b"also in 127/8\n");
    drop(d);

    let d = allow_admits_localhost("::ffff:127.0.0.0/127");
    let mut outsider = common::Client::from_stream(connect_from("127.0.0.2", d.addrs[0]));
    outsider.expect_eof();
}

// 7. A client's own replies (issue 19, point 1).

/// How long a probe line may take from one client to another while a third client fills its
/// queue with its own replies: well under the default --stall-timeout (2 s), which is how
/// long each probe waited for the flooder before.
const PROBE_BOUND: Duration = Duration::from_millis(500);

/// `a` sends numbered probe lines to its room, one at a time, and `b` reads each (passing over
/// anything else, notices included), until at least 20 have gone and the daemon has logged
/// that client `flooder` was cut off as too slow, or 20 s have passed. Returns how long each
/// probe took from `a`'s send to `b`'s read, and the daemon's log meanwhile.
fn probe_until_cut_off(
    d: &Daemon,
    a: &mut common::Client,
    b: &mut common::Client,
    flooder: u64,
) -> (Vec<Duration>, Vec<String>) {
    let start = Instant::now();
    let (mut took, mut log) = (Vec::new(), Vec::new());
    while (took.len() < 20 || !cut_off(&log, flooder)) && start.elapsed() < Duration::from_secs(20)
    {
        log.extend(d.log_so_far());
        let probe = format!("probe {}\n", took.len());
        let sent = Instant::now();
        a.send(probe.as_bytes());
        while !b.line().ends_with(probe.as_bytes()) {}
        took.push(sent.elapsed());
        // Pacing: how often the room is probed, not a synchronisation.
        thread::sleep(Duration::from_millis(50));
    }
    (took, log)
}

/// Whether `log` says client `id` was cut off as too slow.
fn cut_off(log: &[String], id: u64) -> bool {
    let needle = format!("client {id}: slow consumer");
    log.iter().any(|l| l.contains(&needle))
}

/// Every probe within [`PROBE_BOUND`], and client 3, which flooded itself with `what`, cut off.
fn assert_room_not_stalled((took, log): (Vec<Duration>, Vec<String>), what: &str) {
    let slowest = took.iter().max().unwrap();
    assert!(
        *slowest < PROBE_BOUND,
        "with a client flooding itself with {what}, a probe took {slowest:?} (bound \
         {PROBE_BOUND:?}): {took:?}"
    );
    assert!(
        cut_off(&log, 3),
        "the client flooding itself with {what} was not cut off: {log:?}"
    );
}

/// Writes `data` `times` times to `stream` from a thread, until a write fails or `stop` is
/// set; each write may block at most 1 s. The thread hands the stream back, open: a client
/// that closed would leave by itself.
fn flood_from(
    mut stream: TcpStream,
    data: Vec<u8>,
    times: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<TcpStream> {
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    thread::spawn(move || {
        for _ in 0..times {
            if stop.load(Ordering::Relaxed) || stream.write_all(&data).is_err() {
                break;
            }
        }
        stream
    })
}

/// Defect: a chat client that sends `/help` over and over and never reads filled its own
/// queue with the answers, the eighth of --max-pending kept for short lines included, and
/// every line from anyone else then waited up to --stall-timeout for it (probes ~1.95 s).
/// Proves: with the defaults, while such a client (a small receive buffer, 20,000 `/help`)
/// floods itself, every probe line between two other clients arrives within
/// [`PROBE_BOUND`], and the flooder is cut off as too slow.
#[test]
fn a_chat_client_that_never_reads_its_replies_does_not_stall_its_room() {
    let d = Daemon::spawn(&["--chat"]);
    let mut a = d.connect();
    a.line();
    let mut b = d.connect();
    b.line();
    let flooder = connect_small_rcvbuf(d.addrs[0]);
    b.expect(b"* guest3 joined (3 online)\n");
    let stop = Arc::new(AtomicBool::new(false));
    let flood = flood_from(flooder, b"/help\n".repeat(20_000), 1, Arc::clone(&stop));
    let probed = probe_until_cut_off(&d, &mut a, &mut b, 3);
    stop.store(true, Ordering::Relaxed);
    drop(flood.join().unwrap());
    assert_room_not_stalled(probed, "/help");
}

/// A WebSocket client of `addr` (a `--ws-bind` listener) whose receive buffer is as small as
/// the kernel allows, after its handshake: its raw socket.
fn raw_ws_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    use tungstenite::client::IntoClientRequest;
    let request = format!("ws://{addr}/ws").into_client_request().unwrap();
    match tungstenite::client(request, connect_small_rcvbuf(addr)) {
        Ok((ws, _)) => ws.into_inner(),
        Err(e) => panic!("websocket handshake: {e}"),
    }
}

/// Defect: as above with a browser that sends pings and never reads: relayd's pongs filled
/// its queue and stalled its room. Proves: while a WebSocket client with a small receive
/// buffer sends pings (125 bytes each, masked as a client's frames must be) as fast as it
/// can, every probe line between two TCP clients arrives within [`PROBE_BOUND`], and the
/// pinger is cut off as too slow.
#[test]
fn a_websocket_client_that_never_reads_its_pongs_does_not_stall_its_room() {
    let bind = Daemon::free_addr();
    let d = Daemon::spawn(&["--bind", &bind, "--ws-bind", "127.0.0.1:0"]);
    let ws_addr = d.ws_addr();
    let mut a = d.connect();
    let mut b = d.connect();
    // Both registered before the pinger connects, on another listener: it is client 3.
    b.send(b"hello\n");
    a.expect(b"hello\n");
    let pinger = raw_ws_small_rcvbuf(ws_addr);
    // Opcode 0x89 (a final ping), 125 bytes of payload, masked with a zero key.
    let ping = [&[0x89, 0x80 | 125, 0, 0, 0, 0][..], &[b'p'; 125]].concat();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = flood_from(pinger, ping.repeat(1000), 100, Arc::clone(&stop));
    let probed = probe_until_cut_off(&d, &mut a, &mut b, 3);
    stop.store(true, Ordering::Relaxed);
    drop(flood.join().unwrap());
    assert_room_not_stalled(probed, "pings");
}
