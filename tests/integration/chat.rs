//! `--chat` mode over real sockets: every numbered point of issue 4, each command, flood
//! control and history at the boundary.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use crate::common::chat::{Server, chat_config, wait_until};
use relayd::Config;
use relayd::Rate;

/// The welcome line of the `n`th client to connect, with `online` in the room.
fn welcome(n: usize, online: usize) -> String {
    format!("* welcome to relayd, you are guest{n} ({online} online) — /help for commands\n")
}

/// Point 1: welcome, join notice with the room's count, ids never reused.
#[test]
fn welcome_join_notice_and_ids() {
    let server = Server::start(chat_config());
    let mut a = server.connect();
    a.expect(&welcome(1, 1));
    let mut b = server.connect();
    b.expect(&welcome(2, 2));
    a.expect("* guest2 joined (2 online)\n");
    b.send("/quit\n");
    a.expect("* guest2 left (quit) (1 online)\n");
    // guest2's number is not handed out again.
    let mut c = server.connect();
    c.expect(&welcome(3, 2));
    a.expect("* guest3 joined (2 online)\n");
    // N counts the room the notice is about, not the server.
    c.send("/join games\n");
    c.expect("* you are now in games (1 online)\n");
    a.expect("* guest3 left (joined games) (1 online)\n");
    let mut d = server.connect();
    d.expect(&welcome(4, 2));
    a.expect("* guest4 joined (2 online)\n");
}

/// Point 2: a prefix on every line and never inside one; no echo to the sender.
#[test]
fn prefix_per_line_for_one_big_write() {
    let server = Server::start(chat_config());
    let [mut a, mut b] = server.join_two();
    let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    a.send(&text);
    for i in 0..5000 {
        assert_eq!(b.line(), format!("<guest1> line {i}\n"));
    }
    // No echo: the first thing a sees is b's answer.
    b.send("done\n");
    a.expect("<guest2> done\n");
}

#[test]
fn prefix_once_for_a_line_split_across_100_writes() {
    let server = Server::start(chat_config());
    let [mut a, mut b] = server.join_two();
    let line = "x".repeat(99) + "\n";
    for byte in line.as_bytes() {
        a.send_bytes(&[*byte]);
        a.stream().flush().unwrap();
    }
    b.expect(&format!("<guest1> {}", "x".repeat(99) + "\n"));
    a.send("a\nb");
    a.send("c\n");
    b.expect("<guest1> a\n");
    b.expect("<guest1> bc\n");
}

/// Point 2: `\r` dropped, UTF-8 kept, invalid bytes replaced, control characters removed,
/// empty lines not relayed.
#[test]
fn lines_are_cleaned() {
    let server = Server::start(chat_config());
    let [mut a, mut b] = server.join_two();
    a.send_bytes(b"telnet\r\n");
    a.send_bytes("h\u{e9}llo \u{4e16}\u{754c} \u{1F600}\n".as_bytes());
    // Not 0xFF: in chat mode that is telnet's command byte (tests/integration/telnet.rs).
    a.send_bytes(b"bad \xfe\xc3 bytes\n");
    a.send_bytes(b"\x1b[2J\x1b]0;pwned\x07red\tok\x7f\n");
    a.send_bytes("c1\u{9b}31m\n".as_bytes());
    a.send_bytes(b"\n\r\n\x1b\n");
    a.send_bytes(b"last\n");
    b.expect("<guest1> telnet\n");
    b.expect("<guest1> h\u{e9}llo \u{4e16}\u{754c} \u{1F600}\n");
    b.expect("<guest1> bad \u{FFFD}\u{FFFD} bytes\n");
    b.expect("<guest1> [2J]0;pwnedred\tok\n");
    b.expect("<guest1> c131m\n");
    b.expect("<guest1> last\n");
}

/// Point 3, /nick: rename, clash (case-insensitive), reserved and invalid names.
#[test]
fn nick() {
    let server = Server::start(chat_config());
    let [mut a, mut b] = server.join_two();
    a.send("/nick alice\n");
    a.expect("* you are now alice\n");
    b.expect("* guest1 is now alice\n");
    b.send("/nick ALICE\n");
    b.expect("relayd: name ALICE is taken\n");
    b.send("/nick guest7\n");
    b.expect("relayd: name guest7 is reserved\n");
    b.send("/nick bad name\n");
    b.expect("relayd: invalid name \"bad name\" (1-32 letters, digits, _ - .; not only digits)\n");
    b.send(&format!("/nick {}\n", "b".repeat(33)));
    b.expect(&format!(
        "relayd: invalid name \"{}\" (1-32 letters, digits, _ - .; not only digits)\n",
        "b".repeat(33)
    ));
    b.send("/nick bob.b-2_\n");
    b.expect("* you are now bob.b-2_\n");
    a.expect("* guest2 is now bob.b-2_\n");
    b.send("hi\n");
    a.expect("<bob.b-2_> hi\n");
    // The old name is free again; a case change of one's own name is allowed.
    a.send("/nick Alice\n");
    a.expect("* you are now Alice\n");
    b.expect("* alice is now Alice\n");
}

/// Point 3: /who, /me, /msg, /rooms, /help, unknown commands, `//`; output only to the asker.
#[test]
fn who_me_msg_rooms_help() {
    let server = Server::start(chat_config());
    let [mut a, mut b, mut c] = server.join_three();
    a.send("/nick alice\n");
    a.expect("* you are now alice\n");
    b.expect("* guest1 is now alice\n");
    c.expect("* guest1 is now alice\n");

    b.send("/who\n");
    b.expect("* 3 in lobby: alice, guest2, guest3\n");
    a.send("/me waves\n");
    b.expect("* alice waves\n");
    c.expect("* alice waves\n");
    a.send("/msg guest3 psst\n");
    c.expect("[private] <alice> psst\n");
    a.send("/msg nobody hi\n");
    a.expect("relayd: no such user nobody\n");
    a.send("/msg guest3\n");
    a.expect("relayd: usage: /msg NAME TEXT\n");
    a.send("/xyzzy now\n");
    a.expect("relayd: unknown command /xyzzy (try /help)\n");
    a.send("//etc/passwd is a path\n");
    b.expect("<alice> /etc/passwd is a path\n");
    c.expect("<alice> /etc/passwd is a path\n");
    c.send("/join games\n");
    c.expect("* you are now in games (1 online)\n");
    a.expect("* guest3 left (joined games) (2 online)\n");
    b.expect("* guest3 left (joined games) (2 online)\n");
    a.send("/rooms\n");
    a.expect("* rooms: games (1), lobby (2)\n");
    a.send("/help\n");
    a.expect("* commands:\n");
    let mut last = String::new();
    while !last.starts_with("* a line starting with //") {
        last = a.line();
        assert!(last.starts_with("* "), "{last:?}");
    }
    // Nothing a did came back to a, and b saw none of a's command output: each one's next
    // line is the other's message.
    b.send("end\n");
    a.expect("<guest2> end\n");
    a.send("end\n");
    b.expect("<alice> end\n");
}

/// Point 3, /join: leave and join notices in both rooms; messages stay in their room.
#[test]
fn join_rooms() {
    let server = Server::start(chat_config());
    let [mut a, mut b, mut c] = server.join_three();
    c.send("/join games\n");
    c.expect("* you are now in games (1 online)\n");
    a.expect("* guest3 left (joined games) (2 online)\n");
    b.expect("* guest3 left (joined games) (2 online)\n");
    b.send("/join games\n");
    b.expect("* you are now in games (2 online)\n");
    a.expect("* guest2 left (joined games) (1 online)\n");
    c.expect("* guest2 joined (2 online)\n");
    b.send("/join games\n");
    b.expect("relayd: you are already in games\n");
    b.send("/join no/slash\n");
    b.expect("relayd: invalid room \"no/slash\" (1-32 letters, digits, _ - .)\n");
    c.send("/who\n");
    c.expect("* 2 in games: guest3, guest2\n");
    b.send("in games\n");
    c.expect("<guest2> in games\n");
    a.send("in lobby\n");
    // a is alone in the lobby: the games room sees nothing of it.
    c.send("marker\n");
    b.expect("<guest3> marker\n");
    // /msg crosses rooms.
    a.send("/msg guest3 hello there\n");
    c.expect("[private] <guest1> hello there\n");
}

/// Point 4: every way of leaving tells the room, with the reason and the room's count.
#[test]
fn leaving_tells_the_room() {
    let server = Server::start(chat_config());
    let [mut a, mut b] = server.join_two();
    b.send("/quit gotta go\n");
    a.expect("* guest2 left (gotta go) (1 online)\n");
    b.expect_eof();

    let (c, _) = server.join();
    a.expect("* guest3 joined (2 online)\n");
    drop(c);
    a.expect("* guest3 left (closed by client) (1 online)\n");

    let (mut d, _) = server.join();
    a.expect("* guest4 joined (2 online)\n");
    assert_eq!(server.admin("kick guest4 flooding"), "ok\n");
    d.expect("relayd: kicked by operator: flooding\n");
    d.expect_eof();
    a.expect("* guest4 left (kicked by operator: flooding) (1 online)\n");

    // A reset is an error.
    let (e, _) = server.join();
    a.expect("* guest5 joined (2 online)\n");
    socket2::SockRef::from(e.stream())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(e);
    let left = a.line();
    assert!(
        left.starts_with("* guest5 left (") && left.ends_with(") (1 online)\n"),
        "{left:?}"
    );
}

/// Point 4, slow consumer: a client that never reads is cut off and its room told.
#[test]
fn slow_consumer_leaves_with_notice() {
    let server = Server::start(Config {
        max_pending: 64 * 1024,
        stall_timeout: Duration::from_millis(200),
        ..chat_config()
    });
    let [a, mut b, slow] = server.join_three();
    // a writes until the server gives up on guest3; b reads all of it meanwhile.
    let line = format!("{}\n", "z".repeat(1000));
    let writer = {
        let mut a_stream = a.stream().try_clone().unwrap();
        let text = line.repeat(64);
        thread::spawn(move || {
            for _ in 0..400 {
                if a_stream.write_all(text.as_bytes()).is_err() {
                    break;
                }
            }
        })
    };
    let want = format!("<guest1> {line}");
    loop {
        let got = b.line();
        if got.starts_with("* guest3 left (too slow (") {
            assert!(got.ends_with(" bytes pending)) (2 online)\n"), "{got:?}");
            break;
        }
        assert_eq!(got, want);
    }
    writer.join().unwrap();
    assert!(server.stat("slow_consumer_kicks") >= 1);
    drop(slow);
    drop(a);
}

/// Point 5: history replayed on connect and on /join, in order, before live lines; only
/// messages and /me, not notices or private messages.
#[test]
fn history_replay() {
    let server = Server::start(Config {
        history: 3,
        ..chat_config()
    });
    let (mut a, _) = server.join();
    // The private message to itself comes last: once it is back, the rest was relayed.
    // A private message to oneself is refused, and the answer marks that all is delivered.
    a.send("one\n/me two\nthree\nfour\n/msg guest1 private\n");
    a.expect("relayd: that is you\n");
    let (mut b, _) = server.join();
    b.expect("* guest1 two\n");
    b.expect("<guest1> three\n");
    b.expect("<guest1> four\n");
    a.expect("* guest2 joined (2 online)\n");
    a.send("live\n");
    b.expect("<guest1> live\n");

    b.send("/join games\n");
    b.expect("* you are now in games (1 online)\n");
    b.send("g1\ng2\n");
    let (mut c, _) = server.join();
    c.expect("<guest1> three\n");
    c.expect("<guest1> four\n");
    c.expect("<guest1> live\n");
    c.send("/join games\n");
    c.expect("* you are now in games (2 online)\n");
    c.expect("<guest2> g1\n");
    c.expect("<guest2> g2\n");
    b.expect("* guest3 joined (2 online)\n");
}

/// Point 5 at the boundary: a client joining while another sends sees every line exactly
/// once, in order: the replay runs straight into live traffic.
#[test]
fn history_boundary_under_concurrent_traffic() {
    const LINES: usize = 3000;
    let server = Server::start(Config {
        history: 50,
        ..chat_config()
    });
    let [mut a, mut watcher] = server.join_two();
    let sender = {
        let mut a = a.stream().try_clone().unwrap();
        thread::spawn(move || {
            for i in 0..LINES {
                a.write_all(format!("{i}\n").as_bytes()).unwrap();
            }
        })
    };
    // Join once the sender is well under way.
    for i in 0..LINES / 3 {
        watcher.expect(&format!("<guest1> {i}\n"));
    }
    let (mut late, _) = server.join();
    let first: usize = late
        .line()
        .strip_prefix("<guest1> ")
        .unwrap()
        .trim_end()
        .parse()
        .unwrap();
    assert!(first >= LINES / 3 - 50, "replay started at {first}");
    for i in first + 1..LINES {
        late.expect(&format!("<guest1> {i}\n"));
    }
    sender.join().unwrap();
    a.expect("* guest3 joined (3 online)\n");
    drop(a);
    late.expect("* guest1 left (closed by client) (2 online)\n");
}

/// Point 6: the motd follows the welcome line.
#[test]
fn motd_after_welcome() {
    let server = Server::start(Config {
        motd: vec!["Be nice.".into(), "".into(), "Rules: /help".into()],
        ..chat_config()
    });
    let mut a = server.connect();
    a.expect(&welcome(1, 1));
    a.expect("Be nice.\n");
    a.expect("\n");
    a.expect("Rules: /help\n");
    a.send("/who\n");
    a.expect("* 1 in lobby: guest1\n");
}

/// Points 2 and 7: --crlf ends every line the daemon writes with CR LF.
#[test]
fn crlf_everywhere() {
    let server = Server::start(Config {
        crlf: true,
        motd: vec!["motd".into()],
        rate: Some(Rate {
            lines: 1,
            seconds: 60,
        }),
        ..chat_config()
    });
    let (mut a, _) = server.join();
    a.expect("motd\r\n");
    let mut b = server.connect();
    b.expect("* welcome to relayd, you are guest2 (2 online) — /help for commands\r\n");
    b.expect("motd\r\n");
    a.expect("* guest2 joined (2 online)\r\n");
    a.send("hi\r\n");
    b.expect("<guest1> hi\r\n");
    a.send("over\r\n");
    a.expect("relayd: rate limit exceeded (1 line per 60 s), line dropped\r\n");
    b.send("/bogus\r\n");
    b.expect("relayd: unknown command /bogus (try /help)\r\n");
    b.send("/who\r\n");
    b.expect("* 2 in lobby: guest1, guest2\r\n");
    assert_eq!(server.admin("broadcast hello"), "ok\n");
    a.expect("* [server] hello\r\n");
    b.expect("* [server] hello\r\n");
    b.send("/quit\r\n");
    a.expect("* guest2 left (quit) (1 online)\r\n");
    assert_eq!(server.admin("kick 1"), "ok\n");
    a.expect("relayd: kicked by operator\r\n");
}

/// Flood control in chat mode: excess lines dropped, one warning per period, the connection
/// stays, others are unaffected; /me and /msg count, other commands do not.
#[test]
fn rate_limit_chat() {
    let server = Server::start(Config {
        rate: Some(Rate {
            lines: 3,
            seconds: 60,
        }),
        ..chat_config()
    });
    let [mut a, mut b] = server.join_two();
    a.send("/who\n/rooms\n/help\n");
    a.expect("* 2 in lobby: guest1, guest2\n");
    a.expect("* rooms: lobby (2)\n");
    while a.line() != "* a line starting with // sends the rest starting with a single /\n" {}
    a.send("1\n/me 2\n/msg guest2 3\n4\n5\n");
    b.expect("<guest1> 1\n");
    b.expect("* guest1 2\n");
    b.expect("[private] <guest1> 3\n");
    a.expect("relayd: rate limit exceeded (3 lines per 60 s), line dropped\n");
    // Still over: dropped without another warning; still connected.
    a.send("6\n/who\n");
    a.expect("* 2 in lobby: guest1, guest2\n");
    // b has its own bucket.
    b.send("x\ny\nz\n");
    a.expect("<guest2> x\n");
    a.expect("<guest2> y\n");
    a.expect("<guest2> z\n");
    assert_eq!(server.stat("dropped_rate_limit"), 3);
}

/// Defect: the rate-limit notice said "line dropped" for a command and "1 lines". Proves:
/// a `/nick` over the limit is named as such, with "1 line", and the name is unchanged.
#[test]
fn rate_limit_names_a_dropped_command() {
    let server = Server::start(Config {
        rate: Some(Rate {
            lines: 1,
            seconds: 3600,
        }),
        ..chat_config()
    });
    let [mut a, mut b] = server.join_two();
    a.send("/nick ann\n");
    a.expect("* you are now ann\n");
    b.expect("* guest1 is now ann\n");
    a.send("/nick bea\n");
    a.expect("relayd: rate limit exceeded (1 line per 3600 s), /nick dropped\n");
    a.send("/who\n");
    a.expect("* 2 in lobby: ann, guest2\n");
}

/// A client resetting while others join (and are announced to it) does not take the
/// daemon down.
#[test]
fn reset_during_join() {
    let server = Server::start(chat_config());
    let (mut a, _) = server.join();
    for round in 0..20 {
        let resetters: Vec<TcpStream> = (0..5)
            .map(|_| TcpStream::connect(server.addr).unwrap())
            .collect();
        let joiner = {
            let addr = server.addr;
            thread::spawn(move || TcpStream::connect(addr).unwrap())
        };
        for r in resetters {
            socket2::SockRef::from(&r)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        drop(joiner.join().unwrap());
        let _ = round;
    }
    // Connections may still wait in the backlog: first all admitted, then all gone.
    wait_until("all connections admitted", || {
        server.stat("accepted") == 1 + 20 * 6
    });
    server.wait_clients(1);
    // The daemon is alive and a still works.
    let (mut b, name) = server.join();
    b.send("/who\n");
    b.expect(&format!("* 2 in lobby: guest1, {name}\n"));
    loop {
        let line = a.line();
        if line == format!("* {name} joined (2 online)\n") {
            break;
        }
        assert!(line.starts_with("* guest"), "{line:?}");
    }
    b.send("still here\n");
    a.expect(&format!("<{name}> still here\n"));
}
