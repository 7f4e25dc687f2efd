//! Telnet clients: relayd speaks enough of the telnet protocol (RFC 854) that the real Debian
//! `telnet` works, in `--chat` mode and in the default raw mode, while `--binary` is a
//! byte-exact pipe.
//!
//! The first two tests drive the real `telnet` in a `tmux` pane (Debian packages `telnet` and
//! `tmux`); the others script the protocol bytes over a plain socket.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::chat::{self, Server, chat_config};
use relayd::Config;

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;
const IP: u8 = 244;
const ECHO: u8 = 1;
const TIMING_MARK: u8 = 6;
const TERMINAL_TYPE: u8 = 24;

/// How long the telnet pane may take to show something.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The full path of `program`, or a failure that says which Debian package provides it.
fn require(program: &str, package: &str) -> PathBuf {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not in PATH: this test drives the real program; \
                 install it with `apt-get install -y {package}` (Debian package `{package}`)"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A detached tmux session on a tmux server of its own (`-L`, a socket name unique to this
/// test), so that the test never touches anyone else's tmux. Dropping it kills the session by
/// name, then that private server.
struct Tmux {
    tmux: PathBuf,
    socket: String,
    session: String,
    /// The private server's socket file, removed at the end (tmux leaves it behind).
    socket_path: Option<PathBuf>,
}

impl Tmux {
    /// Runs `command` in a new 120x30 pane.
    fn start(command: &[&str]) -> Tmux {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let mut tmux = Tmux {
            tmux: require("tmux", "tmux"),
            socket: format!("relayd-test-{}-{n}", std::process::id()),
            session: format!("relayd-telnet-{}-{n}", std::process::id()),
            socket_path: None,
        };
        let mut args = vec![
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "30",
            "-s",
        ];
        args.push(&tmux.session);
        args.extend_from_slice(command);
        tmux.run(&args);
        let out = tmux.run(&["display-message", "-p", "#{socket_path}"]);
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        tmux.socket_path = Some(PathBuf::from(path)).filter(|p| p.is_absolute());
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(&self.tmux)
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("cannot run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Types `keys` (tmux key names: `Enter`, `C-c`, or literal text).
    fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// The visible pane, one string per screen line, trailing blanks removed.
    fn screen(&self) -> Vec<String> {
        let out = self.run(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// Waits until some screen line satisfies `found`; fails with the screen otherwise.
    fn wait_screen(&self, what: &str, found: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen();
            if screen.iter().any(|l| found(l)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the telnet pane never showed {what}; it shows:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&self) {
        let _ = Command::new(&self.tmux)
            .arg("-L")
            .arg(&self.socket)
            .args(["kill-session", "-t", &self.session])
            .output();
        let _ = Command::new(&self.tmux)
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Defect: a telnet user's Ctrl-C made telnet send `IAC IP IAC DO TIMING-MARK`, which chat mode
/// showed to everyone as U+FFFD garbage in front of the user's next line, and telnet, never
/// answered, discarded everything the server sent afterwards. Proves, with the real `telnet`
/// in a tmux pane: the room sees exactly the two typed lines and nothing else (no garbage line
/// when telnet leaves either), and telnet shows a line from another client cleanly after the
/// Ctrl-C.
#[test]
fn real_telnet_ctrl_c_shows_no_garbage() {
    let telnet = require("telnet", "telnet");
    let server = Server::start(chat_config());
    let (mut r, r_name) = server.join();
    assert_eq!(r_name, "guest1");
    let port = server.addr.port().to_string();
    let pane = Tmux::start(&[telnet.to_str().unwrap(), "127.0.0.1", &port]);
    r.expect("* guest2 joined (2 online)\n");
    // telnet reads the keyboard once it shows what the server sent.
    pane.wait_screen("its welcome line", |l| {
        l.starts_with("* welcome to relayd, you are guest2 (2 online)")
    });

    pane.send_keys(&["hello", "Enter"]);
    r.expect("<guest2> hello\n");
    pane.send_keys(&["C-c"]);
    // The terminal echoes ^C as soon as it takes the key, before the next line is typed.
    pane.wait_screen("the echoed ^C", |l| l.contains("^C"));
    pane.send_keys(&["after ctrl-c", "Enter"]);
    r.expect("<guest2> after ctrl-c\n");

    r.send("hi from nc\n");
    pane.wait_screen("`<guest1> hi from nc` on a line of its own", |l| {
        l == "<guest1> hi from nc"
    });

    // Whatever telnet sent that was not a line must not come out as one when it leaves.
    pane.kill();
    r.expect("* guest2 left (closed by client) (1 online)\n");
}

/// Defect: in the default (raw) mode, a telnet user's Ctrl-C sent `IAC IP IAC DO TIMING-MARK`
/// to every other client (an nc user saw garbage), and telnet, never answered, discarded all
/// that the others sent from then on while it stayed connected. Proves, with the real
/// `telnet` in a tmux pane and a plain socket (as `nc`) beside it: the socket reads exactly the
/// two typed lines, as telnet sends them (CR LF), and nothing else; after the Ctrl-C, telnet
/// shows each of five later lines from the socket.
#[test]
fn real_telnet_ctrl_c_in_raw_mode_relays_nothing_and_telnet_hears_on() {
    let telnet = require("telnet", "telnet");
    let server = Server::start(Config::default());
    let mut r = server.connect();
    server.wait_clients(1);
    let port = server.addr.port().to_string();
    let pane = Tmux::start(&[telnet.to_str().unwrap(), "127.0.0.1", &port]);
    server.wait_clients(2);
    pane.wait_screen("telnet's banner", |l| l.starts_with("Escape character is"));

    pane.send_keys(&["hello", "Enter"]);
    assert_eq!(r.bytes(7), b"hello\r\n");
    pane.send_keys(&["C-c"]);
    pane.wait_screen("the echoed ^C", |l| l.contains("^C"));
    pane.send_keys(&["after ctrl-c", "Enter"]);
    // The very next bytes: no telnet command reached the other client.
    assert_eq!(r.bytes(14), b"after ctrl-c\r\n");

    for i in 1..=5 {
        r.send(&format!("line {i} from nc\n"));
    }
    for i in 1..=5 {
        pane.wait_screen(&format!("`line {i} from nc`"), |l| {
            l == format!("line {i} from nc")
        });
    }
    pane.kill();
    server.wait_clients(1);
    // Nothing telnet sent when it left came out as a line either.
    let mut c = server.connect();
    server.wait_clients(2);
    c.send("probe\n");
    assert_eq!(r.bytes(6), b"probe\n");
}

/// Joins `r` (guest1) and `c` (guest2) and returns them with `c`'s welcome line read.
fn two_in_chat(server: &Server) -> (chat::Client, chat::Client) {
    let (mut r, r_name) = server.join();
    let (c, c_name) = server.join();
    assert_eq!((r_name.as_str(), c_name.as_str()), ("guest1", "guest2"));
    r.expect("* guest2 joined (2 online)\n");
    (r, c)
}

/// Proves that nothing reached `c` since its last read: `r` sends a probe line, which must be
/// the very next thing `c` reads.
fn nothing_else_for(c: &mut chat::Client, r: &mut chat::Client) {
    r.send("probe\n");
    c.expect("<guest1> probe\n");
}

/// Defect: telnet negotiation in chat mode was treated as text (shown as U+FFFD) and never
/// answered, so a client that asks waits. Proves: `WILL TERMINAL-TYPE` is answered exactly
/// `DONT TERMINAL-TYPE` and `DO ECHO` exactly `WONT ECHO`, in that order and nothing else;
/// the room sees only the text.
#[test]
fn negotiation_is_refused_and_never_shown() {
    let server = Server::start(chat_config());
    let (mut r, mut c) = two_in_chat(&server);
    c.send_bytes(&[IAC, WILL, TERMINAL_TYPE, IAC, DO, ECHO]);
    c.send("hi\n");
    assert_eq!(
        c.bytes(6),
        [IAC, DONT, TERMINAL_TYPE, IAC, WONT, ECHO],
        "DONT TERMINAL-TYPE, WONT ECHO"
    );
    r.expect("<guest2> hi\n");
    nothing_else_for(&mut c, &mut r);
    // Refusals are not answered: WONT and DONT get nothing back.
    c.send_bytes(&[IAC, WONT, TERMINAL_TYPE, IAC, DONT, ECHO]);
    c.send("again\n");
    r.expect("<guest2> again\n");
    nothing_else_for(&mut c, &mut r);
}

/// Defect as above, for commands and subnegotiations that arrive in pieces. Proves: a
/// command split after its `IAC`, and a subnegotiation `IAC SB TERMINAL-TYPE 1 IAC SE` spread
/// over several writes, are parsed the same as whole ones: `DO TIMING-MARK` is answered
/// `WONT TIMING-MARK`, `IAC IP` and the subnegotiation vanish, and the text around them forms
/// one line. (Separate writes do not guarantee separate reads; the many cut points make a
/// split read all but certain.)
#[test]
fn commands_split_across_writes() {
    let server = Server::start(chat_config());
    let (mut r, mut c) = two_in_chat(&server);
    let pieces: [&[u8]; 9] = [
        &[b'a', IAC],
        &[IP, b'b', IAC],
        &[DO],
        &[TIMING_MARK, b'c', IAC],
        &[SB],
        &[TERMINAL_TYPE],
        &[1, IAC],
        &[SE, b'd'],
        b"e\n",
    ];
    for piece in pieces {
        c.send_bytes(piece);
    }
    assert_eq!(
        c.bytes(3),
        [IAC, WONT, TIMING_MARK],
        "WONT TIMING-MARK for DO TIMING-MARK"
    );
    r.expect("<guest2> abcde\n");
    nothing_else_for(&mut c, &mut r);
}

/// Defect: `IAC IAC` (telnet's escaped 0xFF) was shown as two bytes. Proves: it is one 0xFF
/// byte of text, which chat mode shows as one U+FFFD, whether the pair arrives in one write
/// or split between two; nothing is sent back.
#[test]
fn iac_iac_is_one_literal_byte() {
    let server = Server::start(chat_config());
    let (mut r, mut c) = two_in_chat(&server);
    c.send_bytes(&[b'a', IAC, IAC, b'b', b'\n']);
    r.expect("<guest2> a\u{FFFD}b\n");
    c.send_bytes(&[b'x', IAC]);
    c.send_bytes(&[IAC, b'y', b'\n']);
    r.expect("<guest2> x\u{FFFD}y\n");
    nothing_else_for(&mut c, &mut r);
}

/// Guards `--binary` against the telnet parsing, then shows the same bytes are parsed in the
/// default raw mode and in chat mode. Proves: with `--binary`,
/// `a IAC IP IAC DO TIMING-MARK b` reaches the other client byte for byte and nothing is sent
/// back to the sender; without it the commands are stripped (`ab`, and `IAC IAC` is one 0xFF)
/// and `DO TIMING-MARK` is answered `WONT TIMING-MARK`, in raw mode as with `--chat`.
#[test]
fn binary_relays_telnet_bytes_unchanged_raw_and_chat_mode_parse_them() {
    let line = [b'a', IAC, IP, IAC, DO, TIMING_MARK, b'b', b'\n'];

    let binary = Server::start(Config {
        binary: true,
        ..Config::default()
    });
    let mut a = binary.connect();
    let mut b = binary.connect();
    binary.wait_clients(2);
    a.send_bytes(&line);
    assert_eq!(b.bytes(line.len()), line);
    // Nothing came back to a: the first bytes it reads are b's probe.
    b.send("probe\n");
    assert_eq!(a.bytes(6), b"probe\n");
    drop(binary);

    let raw = Server::start(Config::default());
    let mut a = raw.connect();
    let mut b = raw.connect();
    raw.wait_clients(2);
    a.send_bytes(&line);
    assert_eq!(a.bytes(3), [IAC, WONT, TIMING_MARK]);
    assert_eq!(b.bytes(3), b"ab\n");
    a.send_bytes(&[b'x', IAC, IAC, b'y', b'\n']);
    assert_eq!(b.bytes(4), [b'x', 0xff, b'y', b'\n']);
    b.send("probe\n");
    assert_eq!(a.bytes(6), b"probe\n");
    drop(raw);

    let server = Server::start(chat_config());
    let (mut r, mut c) = two_in_chat(&server);
    c.send_bytes(&line);
    assert_eq!(c.bytes(3), [IAC, WONT, TIMING_MARK]);
    r.expect("<guest2> ab\n");
    nothing_else_for(&mut c, &mut r);
}
