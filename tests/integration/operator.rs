//! What operators and chat users run into: names that look like ids, `/msg` to oneself, a
//! `--console` whose stdout nobody reads, idle admin connections, and startup values too large
//! to use.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::chat::{Server, chat_config, socket_path};

/// Defect: a name made of digits only (`/nick 7`) made `kick 7` ambiguous between client id 7
/// and the user named 7. Proves: `/nick 7` and `/nick 42` are refused with exactly the message
/// below and nobody is told of a rename; `/nick 7a` works and the room hears of it.
#[test]
fn all_digit_names_are_refused() {
    let server = Server::start(chat_config());
    let (mut a, _) = server.join();
    let (mut b, _) = server.join();
    a.expect("* guest2 joined (2 online)\n");
    b.send("/nick 7\n");
    b.expect("relayd: invalid name \"7\" (1-32 letters, digits, _ - .; not only digits)\n");
    b.send("/nick 42\n");
    b.expect("relayd: invalid name \"42\" (1-32 letters, digits, _ - .; not only digits)\n");
    b.send("/nick 7a\n");
    b.expect("* you are now 7a\n");
    // The first thing a hears since the join is the one rename that happened.
    a.expect("* guest2 is now 7a\n");
}

/// Defect as above: `/help` did not say that names may not be only digits. Proves: its
/// `/nick` line is exactly the one below.
#[test]
fn help_says_names_are_not_only_digits() {
    let server = Server::start(chat_config());
    let (mut a, _) = server.join();
    a.send("/help\n");
    let nick = (0..20)
        .map(|_| a.line())
        .find(|l| l.contains("/nick"))
        .expect("no /nick line in the first 20 lines of /help");
    assert_eq!(
        nick,
        "*   /nick NAME       change your name (1-32 letters, digits, _ - .; not only digits)\n"
    );
}

/// Defect: `/msg` to oneself delivered the private message back to the sender. Proves: in
/// any letter case it answers exactly `relayd: that is you` and delivers nothing: the next
/// thing the sender reads is a probe line from another client.
#[test]
fn msg_to_yourself_is_refused() {
    let server = Server::start(chat_config());
    let (mut a, _) = server.join();
    let (mut b, _) = server.join();
    a.expect("* guest2 joined (2 online)\n");
    for to in ["GUEST1", "guest1", "Guest1"] {
        a.send(&format!("/msg {to} hi\n"));
        a.expect("relayd: that is you\n");
    }
    b.send("probe\n");
    a.expect("<guest2> probe\n");
    // Nor did b get anything: its next line is a's.
    a.send("probe back\n");
    b.expect("<guest1> probe back\n");
}

/// Kills the child when dropped, so a failing test leaves no daemon behind.
struct Reaper(Option<Child>);

impl Reaper {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Defect: `--console` wrote relayed lines to stdout with blocking writes from the sender's
/// thread, so once nobody read stdout (a full 64 KiB pipe) every sender hung. Proves: with
/// stdout a pipe the test never reads, 4 MiB of numbered 1 KiB lines still reach the
/// receiver byte-exact and in order within 20 s.
#[test]
fn console_never_blocks_a_sender() {
    // Its stdin and stdout pipes stay open and unread for the whole test.
    let mut child = common::spawn_console();
    let stderr = child.stderr.take().unwrap();
    let _stdin = child.stdin.take().unwrap();
    let _stdout = child.stdout.take().unwrap();
    let _reaper = Reaper(Some(child));
    // The log pipe has no read timeout; the reaper's kill ends it if relayd hangs.
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut log = BufReader::new(stderr);
        let mut sent = false;
        let mut line = String::new();
        while log.read_line(&mut line).is_ok_and(|n| n > 0) {
            if !sent && let Some((_, addr)) = line.trim_end().split_once("listening on ") {
                sent = tx.send(addr.to_string()).is_ok();
            }
            line.clear();
        }
    });
    let addr = rx
        .recv_timeout(common::TIMEOUT)
        .expect("relayd never logged `listening on`");

    let mut receiver = TcpStream::connect(&addr).unwrap();
    let mut sender = TcpStream::connect(&addr).unwrap();
    sender
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // 4 MiB; the receiver connected first, so it is registered before any of it is read.
    let data = common::numbered_lines(4096);
    let want = data.clone();
    thread::spawn(move || sender.write_all(&data));

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::with_capacity(want.len());
    let mut buf = vec![0; 64 * 1024];
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the receiver got {} of {} bytes in 20 s",
            got.len(),
            want.len()
        );
        receiver.set_read_timeout(Some(left)).unwrap();
        match receiver.read(&mut buf) {
            Ok(0) => panic!("end of stream after {} bytes", got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "the receiver got {} of {} bytes in 20 s ({e})",
                got.len(),
                want.len()
            ),
        }
    }
    if let Some(at) = got.iter().zip(&want).position(|(g, w)| g != w) {
        panic!(
            "the relayed bytes differ from byte {at} (line {})",
            at / 1024
        );
    }
    assert_eq!(got.len(), want.len());
}

/// Reads what the server sends until it closes the connection (or `common::TIMEOUT` passes).
fn read_to_eof(s: &mut UnixStream) -> Vec<u8> {
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        panic!(
            "no end of stream within {:?} ({e}); got {:?}",
            common::TIMEOUT,
            String::from_utf8_lossy(&got)
        );
    }
    got
}

/// Defect: admin connections never timed out, so 16 idle ones (`nc -U` left open) locked
/// the operator out for good. Proves: with `--admin-idle-timeout 1`, a 17th connection is
/// refused while 16 idle ones are open, each idle one is then told exactly `error: idle
/// timeout` (and an empty line) and closed, no sooner than half a second, and after that a
/// new connection's `stats` is answered.
#[test]
fn idle_admin_connections_time_out() {
    let path = socket_path();
    let admin = path.to_str().unwrap();
    let _daemon = common::Daemon::spawn(&["--admin", admin, "--admin-idle-timeout", "1"]);
    // Killed daemons leave their socket file behind.
    let _cleanup = RemoveOnDrop(path.clone());
    let opened = Instant::now();
    let mut idle: Vec<UnixStream> = (0..16)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    // Accepted in order: the 16 are registered before this one.
    let mut extra = UnixStream::connect(&path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_eof(&mut extra)),
        "error: too many admin connections\n\n"
    );
    for (i, conn) in idle.iter_mut().enumerate() {
        assert_eq!(
            String::from_utf8_lossy(&read_to_eof(conn)),
            "error: idle timeout\n\n",
            "idle admin connection {i}"
        );
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(500),
        "closed after {:?}, before the 1 s idle timeout",
        opened.elapsed()
    );
    // The closed connections' slots are free once the daemon has noticed: a fresh
    // connection is answered.
    let mut stats = String::new();
    common::eventually("a fresh admin connection answering `stats`", || {
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"stats\n").unwrap();
        let got = read_answer(&mut s);
        stats = got.clone();
        got.starts_with("uptime_seconds ")
    });
    assert!(stats.ends_with("\n\n"), "{stats:?}");
    assert!(stats.contains("\nclients 0\n"), "{stats:?}");
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The answer to one command: up to and including its closing empty line, or whatever came
/// before the server closed the connection (a refusal).
fn read_answer(s: &mut UnixStream) -> String {
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let mut reader = BufReader::new(s);
    let mut answer = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return answer,
            Ok(_) => answer.push_str(&line),
            Err(e) => panic!("no answer within {:?} ({e}): {answer:?}", common::TIMEOUT),
        }
        if line == "\n" {
            return answer;
        }
    }
}

/// Defect: durations too large to use were accepted (a later `Instant + Duration` could
/// panic) or refused by the argument parser with a multi-line message and status 2. Proves:
/// each of these command lines makes relayd exit with status 1 within 5 s, with exactly one
/// line on stderr that starts `relayd: ` and names the option, and no panic.
#[test]
fn oversized_durations_are_one_line_startup_errors() {
    let cases: [(&str, &str); 4] = [
        ("--write-timeout", "99999999999999999999"),
        ("--write-timeout", "18446744073709551615"),
        ("--stall-timeout", "18446744073709551615"),
        ("--idle-timeout", "18446744073709551615"),
    ];
    // All at once: on a build that accepts them, each runs until the deadline.
    let mut children: Vec<Reaper> = cases
        .iter()
        .map(|(option, value)| {
            Reaper(Some(
                Command::new(env!("CARGO_BIN_EXE_relayd"))
                    .args(["--bind", &common::Daemon::free_addr(), option, value])
                    .env_remove("RUST_LOG")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    for r in &mut children {
        while r.child().try_wait().unwrap().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        // Still running at the deadline: stop it, so that its output can be read.
        let _ = r.child().kill();
    }
    let mut failures = Vec::new();
    for ((option, value), mut r) in cases.iter().zip(children) {
        let out = r.0.take().unwrap().wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let one_line = stderr.ends_with('\n') && stderr.matches('\n').count() == 1;
        let ok = out.status.code() == Some(1)
            && one_line
            && stderr.starts_with("relayd: ")
            && stderr.contains(option)
            && !stderr.contains("panicked")
            && !stdout.contains("panicked");
        if !ok {
            failures.push(format!(
                "relayd {option} {value}: {} (want exit status 1 within 5 s), stderr {stderr:?}",
                match out.status.code() {
                    Some(code) => format!("exit status {code}"),
                    None => "still running after 5 s, killed".to_string(),
                }
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
