//! Room changes racing a sender that is paced on the member who moves: a line reaches a
//! member at most once, and never from a room it has left. Over real sockets, against an
//! in-process daemon with its control socket.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::chat::{Client, Server, chat_config};
use relayd::Config;

/// Bytes per numbered line S sends, `\n` included.
const LINE: usize = 2048;
/// Lines S sends in all: 16 MiB, far more than the socket buffers between it and the daemon
/// hold, so that it is still writing when it is paced.
const LINES: usize = 8192;

/// `--chat --history 5 --max-pending 65536 --stall-timeout 10000` with the control socket.
fn server() -> Server {
    Server::start(Config {
        history: 5,
        max_pending: 65536,
        stall_timeout: Duration::from_secs(10),
        ..chat_config()
    })
}

/// S's numbered lines, `NNNNNNNN ` then filler, `LINE` bytes each, then `end`.
fn numbered() -> Vec<u8> {
    let mut all = Vec::with_capacity(LINES * LINE + 4);
    for i in 0..LINES {
        let start = all.len();
        write!(all, "{i:08} ").unwrap();
        all.resize(start + LINE - 1, b'a' + (i % 26) as u8);
        all.push(b'\n');
    }
    all.extend_from_slice(b"end\n");
    all
}

/// The number of S's numbered line, as a chat client sees it (`<name> NNNNNNNN aaa…`), after
/// checking the line is whole.
fn number_of(line: &str, name: &str) -> Option<usize> {
    let text = line.strip_prefix(&format!("<{name}> "))?;
    let n: usize = text.get(..8)?.parse().ok()?;
    assert_eq!(text.len(), LINE, "S's line {n} arrived garbled");
    Some(n)
}

/// M, who has not read anything since its welcome line, and S, who floods the lobby from a
/// thread until the daemon stops reading it because M's queue is full.
struct Paced {
    m: Client,
    s: Client,
    s_name: String,
    flooding: JoinHandle<()>,
}

fn paced(server: &Server) -> Paced {
    // Small, and set before connecting (the kernel fixes the window scale then), so M's queue
    // fills after a few kilobytes reach its socket.
    let mut m = Client::new(common::connect_small_rcvbuf(server.addr, 8192));
    m.expect("* welcome to relayd, you are guest1 (1 online) — /help for commands\n");
    let m_addr = m.stream().local_addr().unwrap();
    let (s, s_name) = server.join();

    let written = Arc::new(AtomicUsize::new(0));
    let flooding = {
        let stream = s.stream().try_clone().unwrap();
        let written = Arc::clone(&written);
        thread::spawn(move || flood(stream, numbered(), &written))
    };

    // Paced: M's queue is (nearly) full and S's writes have stopped moving.
    common::wait_until_paced("S", "M", &written, &flooding, || pending_of(server, m_addr));
    Paced {
        m,
        s,
        s_name,
        flooding,
    }
}

/// Writes `data` as fast as the socket takes it, until it is all written, a write fails or
/// 25 s pass; `written` counts what the socket took.
fn flood(stream: TcpStream, data: Vec<u8>, written: &AtomicUsize) {
    // Short, so that the loop notices the deadline while the daemon paces it.
    stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut s = &stream;
    let mut pos = 0;
    while pos < data.len() && Instant::now() < deadline {
        match s.write(&data[pos..]) {
            Ok(n) => {
                pos += n;
                written.store(pos, Ordering::Relaxed);
            }
            Err(e) if common::retryable(&e) => {}
            Err(_) => return,
        }
    }
}

/// The `bytes pending` column of the client connected from `addr` in the admin `clients` list.
fn pending_of(server: &Server, addr: SocketAddr) -> usize {
    let addr = addr.to_string();
    let clients = server.admin("clients");
    let row = clients
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|cols| cols.len() == 11 && cols[1] == addr)
        .unwrap_or_else(|| panic!("no client from {addr} in {clients:?}"));
    row[7].parse().unwrap()
}

/// Reads `m`'s lines up to and including `last`; S's numbered lines (named `s_name`) must
/// come in order (M had read none of them yet, so from 0), and nothing else but S's joined
/// notice.
fn read_lobby_backlog(m: &mut Client, s_name: &str, last: &str) {
    m.expect(&format!("* {s_name} joined (2 online)\n"));
    let mut next = 0;
    loop {
        let line = m.line();
        if line == last {
            return;
        }
        let n =
            number_of(&line, s_name).unwrap_or_else(|| panic!("M got {line:?} before {last:?}"));
        assert_eq!(n, next, "M got S's lobby lines out of order");
        next += 1;
    }
}

/// Defect: a sender paced on a full member delivered its line to that member after the member
/// had left the room: the member list was taken before the wait, and the line was handed over
/// once the member made room, whatever room it was in by then.
///
/// Proves: once M is told `* you are now in other (1 online)`, it never gets another line of
/// S's, who stayed in the lobby; the next it hears is the room `other`.
#[test]
fn a_member_that_leaves_a_room_gets_no_more_of_its_lines() {
    let server = server();
    let Paced {
        mut m,
        mut s,
        s_name,
        flooding,
    } = paced(&server);
    m.send("/join other\n");
    read_lobby_backlog(&mut m, &s_name, "* you are now in other (1 online)\n");

    // S, no longer paced on M, sends the rest of its lines to the lobby; /who answers once
    // the daemon has handled every one of them.
    flooding.join().unwrap();
    s.send("/who\n");
    s.expect("* guest1 left (joined other) (1 online)\n");
    s.expect(&format!("* 1 in lobby: {s_name}\n"));

    // The end marker: P arrives in `other` and speaks there.
    let (mut p, p_name) = server.join();
    p.send("/join other\n");
    loop {
        // First the lobby's history: S's lines.
        let line = p.line();
        if line == "* you are now in other (2 online)\n" {
            break;
        }
        assert!(
            line.starts_with(&format!("<{s_name}> ")),
            "P got {line:?} in the lobby"
        );
    }
    p.send("probe\n");
    let line = m.line();
    if let Some(n) = number_of(&line, &s_name) {
        panic!("M got S's lobby line {n} after it had moved to `other`");
    }
    assert_eq!(line, format!("* {p_name} joined (2 online)\n"));
    m.expect(&format!("<{p_name}> probe\n"));
}

/// Defect: a member that left a room and came back while a sender was paced on it got the
/// paced line twice: once in the room's history replay (the line was kept before it was
/// delivered) and once more live, when the sender's wait ended.
///
/// Proves: after `* you are now in lobby (…)`, the replay and the live lines that follow hold
/// each of S's lines at most once, in order.
#[test]
fn a_member_that_leaves_and_rejoins_gets_each_line_at_most_once() {
    let server = server();
    let Paced {
        mut m,
        s,
        s_name,
        flooding,
    } = paced(&server);
    m.send("/join other\n/join lobby\n");
    read_lobby_backlog(&mut m, &s_name, "* you are now in other (1 online)\n");
    m.expect("* you are now in lobby (2 online)\n");

    // The lobby's history, then S's lines live, up to its last.
    let end = format!("<{s_name}> end\n");
    let mut got = Vec::new();
    loop {
        let line = m.line();
        if line == end {
            break;
        }
        let n =
            number_of(&line, &s_name).unwrap_or_else(|| panic!("M got {line:?} back in the lobby"));
        got.push(n);
    }
    let mut seen = vec![false; LINES];
    for (i, &n) in got.iter().enumerate() {
        assert!(
            !seen[n],
            "M got S's line {n} twice after rejoining the lobby: {:?}…",
            &got[..(i + 1).min(20)]
        );
        seen[n] = true;
    }
    assert!(
        got.is_sorted(),
        "M got S's lines out of order after rejoining the lobby: {:?}…",
        &got[..got.len().min(20)]
    );
    assert_eq!(
        got.last(),
        Some(&(LINES - 1)),
        "M did not get S's last line"
    );
    flooding.join().unwrap();
    drop(s);
}
