//! relayd under a service manager: readiness, status, stopping, reloading and watchdog
//! notifications to a fake `NOTIFY_SOCKET` (a Unix datagram socket the test binds), and
//! socket activation by the real `systemd-socket-activate` (Debian's `systemd`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, Client, Daemon, TIMEOUT, admin_command, http, temp_path};

/// The service manager's end of `NOTIFY_SOCKET`.
struct Manager {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Manager {
    fn new() -> Manager {
        let path = temp_path("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        Manager { sock, path }
    }

    /// The next notification, one `KEY=VALUE` per line.
    fn next(&self) -> String {
        let mut buf = [0; 4096];
        let deadline = Instant::now() + TIMEOUT;
        let n = loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => break n,
                // A signal meant for another test's thread in this process (all the tests now
                // share one) interrupted the wait: wait out the rest of the deadline.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    assert!(!left.is_zero(), "no notification within {TIMEOUT:?}: {e}");
                    self.sock.set_read_timeout(Some(left)).unwrap();
                }
                Err(e) => panic!("no notification within {TIMEOUT:?}: {e}"),
            }
        };
        self.sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// Notifications until one that contains `want`, which is returned; the others are
    /// passed to `skipped`.
    fn until(&self, want: &str, mut skipped: impl FnMut(&str)) -> String {
        loop {
            let msg = self.next();
            if msg.lines().any(|l| l == want) {
                return msg;
            }
            skipped(&msg);
        }
    }

    fn env(&self) -> (&'static str, &str) {
        ("NOTIFY_SOCKET", self.path.to_str().unwrap())
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Proves: the first notification is `READY=1` (with the client count), and by the time it
/// is sent both the relay port and the control socket answer; the status follows the client
/// count; SIGTERM sends `STOPPING=1` before the daemon exits 0.
#[test]
fn ready_once_listening_status_follows_clients_stopping_on_sigterm() {
    let manager = Manager::new();
    let admin = temp_path("service-admin");
    let mut d = Daemon::spawn_env(&["--admin", admin.to_str().unwrap()], &[manager.env()]);
    let first = manager.next();
    assert_eq!(first, "READY=1\nSTATUS=0 clients\n");
    TcpStream::connect(d.addrs[0]).expect("READY=1 before the port accepts");
    UnixStream::connect(&admin).expect("READY=1 before the control socket is open");

    let mut a = d.connect();
    let mut b = d.connect();
    b.send(b"hello\n");
    a.expect(b"hello\n");
    // Refreshed within about a second (the accept loop's tick), never more than once a second.
    let mut statuses = Vec::new();
    manager.until("STATUS=2 clients", |m| statuses.push(m.to_string()));
    assert!(statuses.len() <= 2, "status updates: {statuses:?}");

    d.signal(libc::SIGTERM);
    manager.until("STOPPING=1", |_| {});
    assert_eq!(d.wait_exit(), Some(0));
    a.expect(b"relayd: shutting down\n");
}

/// Proves: SIGHUP sends `RELOADING=1` with the `MONOTONIC_USEC` that `Type=notify-reload`
/// wants, then `READY=1` once the reload is done; a failed reload ends with `READY=1` too.
#[test]
fn sighup_notifies_reloading_then_ready() {
    let manager = Manager::new();
    let motd = temp_path("service-motd");
    std::fs::write(&motd, "hi\n").unwrap();
    let d = Daemon::spawn_env(
        &["--chat", "--motd", motd.to_str().unwrap()],
        &[manager.env()],
    );
    manager.until("READY=1", |_| {});
    d.signal(libc::SIGHUP);
    let reloading = manager.until("RELOADING=1", |_| {});
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .unwrap();
    assert!(usec > 0);
    manager.until("READY=1", |m| panic!("before READY=1: {m:?}"));
    d.wait_log("reloaded");

    std::fs::remove_file(&motd).unwrap();
    d.signal(libc::SIGHUP);
    manager.until("RELOADING=1", |_| {});
    manager.until("READY=1", |m| panic!("before READY=1: {m:?}"));
    d.wait_log("reload failed, keeping the previous settings: cannot read --motd");
}

/// Proves: with `WATCHDOG_USEC`, pings come at least every half period while the daemon is
/// healthy and idle (no client connects: the accept loop's own tick drives them).
#[test]
fn watchdog_pings_while_idle() {
    let manager = Manager::new();
    let _d = Daemon::spawn_env(&[], &[manager.env(), ("WATCHDOG_USEC", "1000000")]);
    manager.until("READY=1", |_| {});
    let mut last = Instant::now();
    for _ in 0..5 {
        manager.until("WATCHDOG=1", |_| {});
        let gap = last.elapsed();
        last = Instant::now();
        // A ping per half period (500 ms); systemd would act after 1 s without one.
        assert!(
            gap < Duration::from_secs(1),
            "a ping came {gap:?} after the last"
        );
    }
}

/// Without `NOTIFY_SOCKET` nothing is sent and nothing is logged about it.
#[test]
fn silent_without_notify_socket() {
    let d = Daemon::spawn(&["-v"]);
    let mut a = d.connect();
    let mut b = d.connect();
    b.send(b"x\n");
    a.expect(b"x\n");
    d.signal(libc::SIGHUP);
    let log = d.log_until("reload");
    assert!(
        !log.iter().any(|l| l.contains("notify")),
        "logged about notifications: {log:?}"
    );
}

/// `systemd-socket-activate -l ADDR… relayd …`: it binds, then execs relayd on the first
/// connection with the sockets as descriptors 3, 4…
fn socket_activated(listen: &[SocketAddr], fdnames: Option<&str>, args: &[&str]) -> Daemon {
    let mut cmd = Command::new("systemd-socket-activate");
    for addr in listen {
        cmd.arg("-l").arg(addr.to_string());
    }
    if let Some(names) = fdnames {
        cmd.arg(format!("--fdname={names}"));
    }
    cmd.arg(env!("CARGO_BIN_EXE_relayd")).args(args);
    let d = Daemon::start(cmd);
    d.wait_log(&format!("Listening on {}", listen.last().unwrap()));
    d
}

fn free_addr() -> SocketAddr {
    Daemon::free_addr().parse().unwrap()
}

/// Proves: relayd serves clients on a port it never bound (and not its default
/// 127.0.0.1:12345), and a second socket named `metrics` is the metrics endpoint.
#[test]
fn socket_activation_serves_passed_sockets() {
    let (relay, metrics) = (free_addr(), free_addr());
    let mut d = socket_activated(&[relay, metrics], Some("relay:metrics"), &[]);
    // The first connection is what makes systemd-socket-activate start relayd; it waits in
    // the listen backlog meanwhile.
    let mut a = Client::connect(relay);
    let log = d.log_until("listening on");
    assert!(
        log.iter().any(|l| l
            .contains("socket activation: serving 1 passed client sockets and a metrics socket")),
        "{log:?}"
    );
    assert!(
        log.last()
            .unwrap()
            .ends_with(&format!("listening on {relay}"))
    );
    let mut b = Client::connect(relay);
    b.send(b"through a passed socket\n");
    a.expect(b"through a passed socket\n");
    let (status, body) = http(metrics, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("\nrelayd_clients 2\n"), "{body}");
    let (code, later) = d.stop_and_read_log();
    assert_eq!(code, Some(0));
    assert!(
        !later.iter().any(|l| l.contains("listening on")),
        "relayd bound an address of its own besides the passed socket: {later:?}"
    );
}

/// Proves: a passed socket of a kind relayd does not serve (one named `irc`, say) is a
/// one-line startup error and exit status 1, not a port that silently never answers.
#[test]
fn socket_activation_refuses_an_unknown_socket_name() {
    let addr = free_addr();
    let mut d = socket_activated(&[addr], Some("irc"), &[]);
    let _trigger = TcpStream::connect(addr).unwrap();
    let line = d.wait_log("relayd:");
    assert_eq!(
        line,
        "relayd: socket activation: the socket named 'irc' (FileDescriptorName=) is for no \
         listener relayd has; name plain TCP sockets 'relay', browsers' sockets 'ws' and the \
         metrics socket 'metrics'"
    );
    assert_eq!(d.wait_exit(), Some(1));
}

/// Defect: with only a `metrics` socket passed, relayd also bound its default
/// 127.0.0.1:12345 (with only a `ws` socket it did not). Proves: every passed socket counts
/// alike, so relayd binds nothing of its own; with no socket for clients at all it says so in
/// one line and exits 1 rather than serve metrics of nobody.
#[test]
fn socket_activation_with_only_a_metrics_socket_binds_no_default() {
    let metrics = free_addr();
    let mut d = socket_activated(&[metrics], Some("metrics"), &[]);
    let _trigger = TcpStream::connect(metrics).unwrap();
    let log = d.log_until("relayd:");
    assert_eq!(
        log.last().unwrap(),
        "relayd: socket activation passed no socket for clients (only 'metrics'): pass one \
         named 'relay' or 'ws' too, or give --bind"
    );
    assert!(!log.iter().any(|l| l.contains("listening on")), "{log:?}");
    assert_eq!(d.wait_exit(), Some(1));
}

/// Proves: a passed socket named `ws` is served as `--ws-bind` would be: the page at `/`.
#[test]
fn socket_activation_serves_a_ws_socket_to_browsers() {
    let addr = free_addr();
    let mut d = socket_activated(&[addr], Some("ws"), &[]);
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:.200}");
    assert!(answer.contains("<!doctype html>"), "{answer:.200}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

/// Proves: `--bind` given with passed sockets is served too (both ports relay to each other).
#[test]
fn socket_activation_with_an_explicit_bind_serves_both() {
    let (passed, bound) = (free_addr(), free_addr());
    let bound_s = bound.to_string();
    let d = socket_activated(&[passed], None, &["--bind", &bound_s]);
    let mut a = Client::connect(passed);
    // Two listeners, two accept loops: a must be in before b's line is relayed. The bound
    // port listens before any client is admitted.
    d.log_until("client 1 connected");
    let mut b = Client::connect(bound);
    b.send(b"from the bound port\n");
    a.expect(b"from the bound port\n");
}

/// The admin `help` lists `reload`.
#[test]
fn admin_help_lists_reload() {
    let admin = temp_path("service-help");
    let _d = Daemon::spawn(&["--admin", admin.to_str().unwrap()]);
    wait_for_socket(&admin);
    assert!(admin_command(&admin, "help").contains("\nreload "));
}

fn wait_for_socket(path: &Path) {
    common::eventually("the admin socket", || UnixStream::connect(path).is_ok());
}

/// `relayd generate`: a man page that man(1) would read, and completion scripts that know
/// the options.
#[test]
fn generate_man_page_and_completions() {
    let run = |what: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_relayd"))
            .args(["generate", what])
            .output()
            .unwrap();
        assert!(out.status.success(), "generate {what}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let man = run("man");
    assert!(man.contains(".TH relayd 1"), "{man}");
    assert!(
        man.contains("relayd \\- relay lines between TCP clients"),
        "{man}"
    );
    assert!(man.contains("\\-\\-metrics"), "{man}");
    let bash = run("bash");
    assert!(bash.contains("complete -F _relayd"), "{bash}");
    assert!(bash.contains("--allow-file"), "{bash}");
    let mut check = Command::new("bash")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(bash.as_bytes())
        .unwrap();
    assert!(
        check.wait().unwrap().success(),
        "bash -n rejects the script"
    );
    assert!(run("zsh").starts_with("#compdef relayd"));
    // The completions offer no option that --help and the man page keep quiet about.
    let help = Command::new(env!("CARGO_BIN_EXE_relayd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for word in bash.split_whitespace() {
        let option = word.trim_matches(|c: char| c == '"' || c == '\'');
        if option.starts_with("--")
            && option.len() > 2
            && option
                .chars()
                .skip(2)
                .all(|c| c.is_ascii_lowercase() || c == '-')
        {
            assert!(
                help.contains(option),
                "{option} is offered but not in --help"
            );
            assert!(
                man.contains(&option.replace('-', "\\-")),
                "{option} is not in the man page"
            );
        }
    }
    assert!(run("fish").contains("complete -c relayd"));
    let bad = Command::new(env!("CARGO_BIN_EXE_relayd"))
        .args(["generate", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("relayd: invalid value 'tcsh'"), "{err}");
}
