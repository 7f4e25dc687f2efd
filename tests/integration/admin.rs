//! The operator's control socket over a real Unix socket, with `nc -U` and `relayd ctl`
//! too, in both modes.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common;
use crate::common::chat::{self, Admin, Server, chat_config, socket_path, wait_until};
use relayd::{Config, Shutdown};

const STATS_KEYS: [&str; 27] = [
    "uptime_seconds",
    "clients",
    "peak_clients",
    "accepted",
    "refused_full",
    "lines_in",
    "lines_out",
    "bytes_in",
    "bytes_out",
    "dropped_rate_limit",
    "too_long",
    "filtered_dropped",
    "filtered_masked",
    "refused_banned",
    "dropped_muted",
    "dropped_slow",
    "slow_consumer_kicks",
    "idle_kicks",
    "rooms",
    "redis_connected",
    "cluster_published",
    "cluster_received",
    "cluster_dropped",
    "cluster_queue_bytes",
    "tokens_accepted",
    "tokens_refused",
    "live_dropped",
];

fn ctl(server: &Server, args: &[&str]) -> (String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_relayd"))
        .arg("ctl")
        .arg("--admin")
        .arg(&server.admin)
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        out.status.code().unwrap(),
    )
}

/// How `relayd::run` fails when told to put its admin socket at `admin`.
fn run_error(admin: &Path) -> io::Error {
    let listener = relayd::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
    let config = Config {
        admin: Some(admin.to_path_buf()),
        ..Config::default()
    };
    relayd::run(vec![listener], config, Shutdown::new()).unwrap_err()
}

/// `clients` in raw mode: every client has an id and a `guest<ID>` name; counters move.
#[test]
fn clients_in_raw_mode() {
    let server = Server::start(Config::default());
    let [mut a, mut b] = server.connect_registered();
    a.send("one\ntwo\n");
    assert_eq!(b.bytes(8), b"one\ntwo\n");
    // The deliverer counts a write as sent once write(2) returns, which b's read may beat
    // on a busy machine: the queue is empty soon after, not at once.
    let mut clients = String::new();
    common::eventually("b's queue to be counted empty", || {
        clients = server.admin("clients");
        clients
            .lines()
            .nth(1)
            .is_some_and(|row| row.split(' ').nth(7) == Some("0"))
    });
    let rows: Vec<Vec<&str>> = clients.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(rows.len(), 2, "{clients}");
    let addr_a = a.stream().local_addr().unwrap().to_string();
    let addr_b = b.stream().local_addr().unwrap().to_string();
    // id address name room seconds lines_in lines_out pending transport user dropped
    assert_eq!(rows[0][..4], ["1", &addr_a, "guest1", "lobby"]);
    assert_eq!(rows[0][5..], ["2", "0", "0", "tcp", "-", "0"]);
    assert_eq!(rows[1][..4], ["2", &addr_b, "guest2", "lobby"]);
    assert_eq!(rows[1][5..], ["0", "2", "0", "tcp", "-", "0"]);
    assert!(rows[0][4].parse::<u64>().unwrap() < 5);
    a.send("x\n");
    assert_eq!(b.bytes(2), b"x\n");
}

/// Kick by id and by name, with and without a reason; the room is told; unknown is an error.
#[test]
fn kick() {
    let server = Server::start(chat_config());
    let [mut a, mut b] = server.join_two();
    b.send("/nick bob\n");
    b.expect("* you are now bob\n");
    a.expect("* guest2 is now bob\n");
    assert_eq!(server.admin("kick BOB spamming links"), "ok\n");
    b.expect("relayd: kicked by operator: spamming links\n");
    b.expect_eof();
    a.expect("* bob left (kicked by operator: spamming links) (1 online)\n");
    assert_eq!(server.admin("kick bob"), "error: no such client\n");
    assert_eq!(server.admin("kick 99"), "error: no such client\n");
    assert_eq!(
        server.admin("kick"),
        "error: usage: kick ID|NAME [REASON]\n"
    );
    let (mut c, _) = server.join();
    a.expect("* guest3 joined (2 online)\n");
    assert_eq!(server.admin("kick 3"), "ok\n");
    c.expect("relayd: kicked by operator\n");
    c.expect_eof();
    a.expect("* guest3 left (kicked by operator) (1 online)\n");
    server.wait_clients(1);
}

/// Kick in raw mode: the notice, then the close.
#[test]
fn kick_raw() {
    let server = Server::start(Config::default());
    let [mut a, mut b] = server.connect_registered();
    assert_eq!(server.admin("kick guest1 bye now"), "ok\n");
    a.expect("relayd: kicked by operator: bye now\n");
    a.expect_eof();
    server.wait_clients(1);
    b.send("still\n");
    assert_eq!(server.admin("send 2 alive"), "ok\n");
    b.expect("alive\n");
}

/// broadcast and send: `* [server] TEXT` in chat mode, the bare line in raw mode.
#[test]
fn push_chat() {
    let server = Server::start(chat_config());
    let [mut a, mut b] = server.join_two();
    assert_eq!(server.admin("broadcast maintenance at 10:00"), "ok\n");
    a.expect("* [server] maintenance at 10:00\n");
    b.expect("* [server] maintenance at 10:00\n");
    assert_eq!(server.admin("send guest2 just you"), "ok\n");
    b.expect("* [server] just you\n");
    assert_eq!(server.admin("send 1 \x1b[2Jclean"), "ok\n");
    a.expect("* [server] [2Jclean\n");
    assert_eq!(server.admin("send nobody x"), "error: no such client\n");
    assert_eq!(
        server.admin("send guest1"),
        "error: usage: send ID|NAME TEXT\n"
    );
    assert_eq!(server.admin("broadcast"), "error: usage: broadcast TEXT\n");
}

#[test]
fn push_raw() {
    let server = Server::start(Config::default());
    let [mut a, mut b] = server.connect_registered();
    assert_eq!(server.admin("broadcast hello all"), "ok\n");
    a.expect("hello all\n");
    b.expect("hello all\n");
    assert_eq!(server.admin("send guest2 only b"), "ok\n");
    b.expect("only b\n");
    // a got nothing more: its next line is b's.
    b.send("from b\n");
    a.expect("from b\n");
}

/// Defect: the README promised that operator pushes are cleaned of control characters, but in
/// raw mode `broadcast hello \e[2J` reached clients with its ESC. Proves: in raw mode too, a
/// push reaches clients without control characters.
#[test]
fn push_raw_is_cleaned() {
    let server = Server::start(Config::default());
    let [mut a, mut b] = server.connect_registered();
    assert_eq!(server.admin("broadcast hello \x1b[2J\x07all"), "ok\n");
    a.expect("hello [2Jall\n");
    b.expect("hello [2Jall\n");
}

/// stats: every key in order; counters count.
#[test]
fn stats() {
    let server = Server::start(Config {
        max_clients: 2,
        max_line: 10,
        ..Config::default()
    });
    let [mut a, mut b] = server.connect_registered();
    let mut refused = server.connect();
    refused.expect("relayd: server full (2 clients)\n");
    a.send("12345\nthis is too long\n");
    a.expect("relayd: line too long (max 10 bytes), discarded\n");
    b.expect("12345\n");
    let stats = server.admin("stats");
    let keys: Vec<&str> = stats
        .lines()
        .map(|l| l.split_once(' ').unwrap().0)
        .collect();
    assert_eq!(keys, STATS_KEYS);
    for (key, want) in [
        ("clients", 2),
        ("peak_clients", 2),
        ("accepted", 2),
        ("refused_full", 1),
        ("lines_in", 1),
        ("lines_out", 1),
        ("bytes_in", 23),
        // The relayed line, and the notice to its sender: every byte queued for a client.
        (
            "bytes_out",
            6 + "relayd: line too long (max 10 bytes), discarded\n".len() as u64,
        ),
        ("dropped_rate_limit", 0),
        ("too_long", 1),
        ("slow_consumer_kicks", 0),
        ("idle_kicks", 0),
        ("rooms", 1),
    ] {
        assert_eq!(server.stat(key), want, "{key} in\n{stats}");
    }
}

/// Many commands on one connection, each answer closed by an empty line; help; unknown.
#[test]
fn one_connection_many_commands() {
    let server = Server::start(chat_config());
    let mut admin = Admin::connect(&server);
    assert!(admin.command("help").starts_with("clients "));
    assert_eq!(admin.command("clients"), "");
    assert_eq!(admin.command("frobnicate"), "error: unknown command\n");
    assert_eq!(admin.command("kick nobody"), "error: no such client\n");
    assert!(admin.command("stats").starts_with("uptime_seconds "));
}

/// The socket file: mode 0600, removed on exit, a stale one replaced, a live one an error.
#[test]
fn socket_file_lifecycle() {
    let server = Server::start(Config::default());
    let path = server.admin.clone();
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second daemon on the same path fails rather than stealing it.
    let err = run_error(&path);
    assert!(err.to_string().contains("in use"), "{err}");
    assert_eq!(server.admin("clients"), "");

    server.stop();
    assert!(!path.exists());

    // A socket left behind by a crashed run (nobody listening) is replaced. Bound but never
    // listening, so that a copy of the descriptor in a concurrently forked child cannot
    // make it look alive.
    let stale = socket_path();
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&socket2::SockAddr::unix(&stale).unwrap())
        .unwrap();
    drop(socket);
    assert!(stale.exists());
    let listener = relayd::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
    let shutdown = Shutdown::new();
    let thread = {
        let (shutdown, stale) = (shutdown.clone(), stale.clone());
        std::thread::spawn(move || {
            let config = Config {
                admin: Some(stale),
                ..Config::default()
            };
            relayd::run(vec![listener], config, shutdown)
        })
    };
    wait_until("the replaced socket", || {
        std::os::unix::net::UnixStream::connect(&stale).is_ok()
    });
    shutdown.trigger();
    thread.join().unwrap().unwrap();
    assert!(!stale.exists());

    // Any other kind of file is left alone.
    let file = socket_path();
    fs::write(&file, "not a socket").unwrap();
    let err = run_error(&file);
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a socket");
    fs::remove_file(&file).unwrap();
}

/// What an operator types: `nc -U PATH`.
#[test]
fn netcat() {
    let server = Server::start(chat_config());
    let (mut a, _) = server.join();
    let mut nc = Command::new("nc")
        .args(["-N", "-U"])
        .arg(&server.admin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("nc (netcat-openbsd) is needed for this test");
    nc.stdin
        .take()
        .unwrap()
        .write_all(b"broadcast from nc\nkick nobody\n")
        .unwrap();
    let mut out = String::new();
    nc.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(nc.wait().unwrap().success());
    assert_eq!(out, "ok\n\nerror: no such client\n\n");
    a.expect("* [server] from nc\n");
}

/// `relayd ctl`: prints the answer, exit 1 on `error:`.
#[test]
fn relayd_ctl() {
    let server = Server::start(chat_config());
    let [mut a, mut b] = server.join_two();
    assert_eq!(
        ctl(&server, &["broadcast", "server", "restarts", "soon"]),
        ("ok\n".into(), 0)
    );
    a.expect("* [server] server restarts soon\n");
    b.expect("* [server] server restarts soon\n");
    assert_eq!(
        ctl(&server, &["kick", "nobody"]),
        ("error: no such client\n".into(), 1)
    );
    assert_eq!(
        ctl(&server, &["kick", "2", "too", "many", "links"]),
        ("ok\n".into(), 0)
    );
    b.expect("relayd: kicked by operator: too many links\n");
    a.expect("* guest2 left (kicked by operator: too many links) (1 online)\n");
    let (stats, code) = ctl(&server, &["stats"]);
    assert_eq!(code, 0);
    assert!(stats.contains("\nclients 1\n") || stats.contains("\nclients 2\n"));
    let (clients, code) = ctl(&server, &["clients"]);
    assert_eq!(code, 0);
    assert!(clients.starts_with("1 127.0.0.1:"), "{clients}");

    let missing = Command::new(env!("CARGO_BIN_EXE_relayd"))
        .args(["ctl", "--admin", "/nonexistent/relayd.sock", "stats"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

/// The binary end to end: `relayd --bind … --chat --admin … --console` without a subcommand;
/// stdin lines are pushed, relayed lines printed; SIGTERM removes the socket.
#[test]
fn binary_with_console() {
    let path = socket_path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_relayd"))
        .args(["--bind", "127.0.0.1:0", "--chat", "--console", "--admin"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The pipes below have no read timeout: if relayd hangs, kill it, which ends them.
    let (finished, done) = std::sync::mpsc::channel::<()>();
    let pid = child.id() as i32;
    std::thread::spawn(move || {
        if done.recv_timeout(chat::TIMEOUT * 2).is_err() {
            // SAFETY: signalling the child we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "relayd exited");
        if let Some((_, addr)) = line.trim_end().split_once("listening on ") {
            break addr.to_string();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let mut a = chat::Client::new(std::net::TcpStream::connect(&addr).unwrap());
    a.expect("* welcome to relayd, you are guest1 (1 online) — /help for commands\n");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello from the console\n").unwrap();
    a.expect("* [server] hello from the console\n");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    a.send("hi console\n");
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "[1] <guest1> hi console\n");
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    finished.send(()).unwrap();
    assert!(status.success());
    assert!(!path.exists());
}

/// Issue 19: `relayd ctl` against a control socket that already serves its 16 connections.
/// The daemon answers `error: too many admin connections` and closes, often before ctl has
/// written its command; ctl reported that write's `Broken pipe` instead of the answer. Proves:
/// ctl prints the daemon's answer and exits 1, every time (a few tries, as the write can
/// also win the race).
#[test]
fn ctl_against_a_full_control_socket_prints_the_daemons_answer() {
    let path = socket_path();
    let path_s = path.to_str().unwrap();
    let d = common::Daemon::spawn(&["--admin", path_s]);
    // The daemon's limit (admin.rs MAX_CONNECTIONS); each answered command proves its
    // connection is registered.
    let full: Vec<_> = (0..16)
        .map(|_| {
            let mut conn = common::AdminConn::new(
                std::os::unix::net::UnixStream::connect(&path).unwrap(),
                chat::TIMEOUT,
            );
            assert!(conn.command("stats").contains("\nclients 0\n"));
            conn
        })
        .collect();
    for _ in 0..10 {
        let out = Command::new(env!("CARGO_BIN_EXE_relayd"))
            .args(["ctl", "--admin", path_s, "stats"])
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(
            (stdout.as_ref(), stderr.as_ref(), out.status.code()),
            ("error: too many admin connections\n", "", Some(1))
        );
    }
    drop(full);
    drop(d);
    let _ = fs::remove_file(&path);
}
