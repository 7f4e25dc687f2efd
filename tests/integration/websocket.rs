//! Browsers' clients: WebSocket clients (tungstenite's own client) and `--ws-bind`'s HTTP
//! front, against the real binary, beside TCP clients in the same rooms.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::ws::{Browsers, try_ws_connect, ws_connect, ws_text};
use crate::common::{self, TIMEOUT, admin_command, eventually, temp_path};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

fn send(ws: &mut WebSocket<TcpStream>, text: &str) {
    ws.send(Message::text(text)).unwrap();
}

/// Reads until the close frame, returning its code; the text messages before it go to `texts`.
fn close_code(ws: &mut WebSocket<TcpStream>, texts: &mut Vec<String>) -> CloseCode {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => texts.push(t.to_string()),
            Ok(Message::Close(Some(frame))) => return frame.code,
            Ok(Message::Close(None)) => panic!("a close frame without a code"),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e} (after {texts:?})"),
        }
    }
}

/// One raw HTTP exchange: the status line of the answer.
fn http_status(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_string();
    answer.lines().next().unwrap_or_default().to_string()
}

/// Proves: in raw mode a browser's messages reach `nc` as lines (a message with `\n` is
/// several lines, a trailing `\r` dropped), and `nc`'s lines reach the browser as one text
/// message each, without `\n`, with U+FFFD for bytes that are not UTF-8.
#[test]
fn raw_lines_cross_between_websocket_and_tcp() {
    let b = Browsers::spawn(&[]);
    let mut nc = b.tcp();
    // Admitted before the browser connects: the two come through different listeners, so
    // their order in `clients` (asserted below) is otherwise a race.
    b.wait_clients(1);
    let mut ws = b.ws();
    b.wait_clients(2);
    send(&mut ws, "from the browser");
    send(&mut ws, "two\r\nlines");
    nc.expect(b"from the browser\n");
    nc.expect(b"two\n");
    nc.expect(b"lines\n");
    // 0xFE: not UTF-8, and (unlike 0xFF) not the start of a telnet command either.
    nc.send(b"from nc\n\xfez\r\n");
    assert_eq!(ws_text(&mut ws), "from nc");
    assert_eq!(ws_text(&mut ws), "\u{fffd}z");
    let clients = b.clients();
    assert!(clients[0].ends_with(" tcp - 0"), "{clients:?}");
    assert!(clients[1].ends_with(" ws - 0"), "{clients:?}");
}

/// Proves: in chat mode browsers and `nc` users share names and rooms: notices, `/nick`,
/// `/join`, and lines only within the room.
#[test]
fn chat_rooms_and_names_across_transports() {
    let b = Browsers::spawn(&["--chat"]);
    let mut nc = b.tcp();
    nc.expect("* welcome to relayd, you are guest1 (1 online) — /help for commands\n".as_bytes());
    let mut ws = b.ws();
    assert_eq!(
        ws_text(&mut ws),
        "* welcome to relayd, you are guest2 (2 online) — /help for commands"
    );
    nc.expect(b"* guest2 joined (2 online)\n");
    send(&mut ws, "/nick web");
    nc.expect(b"* guest2 is now web\n");
    assert_eq!(ws_text(&mut ws), "* you are now web");
    nc.send(b"/nick term\n");
    nc.expect(b"* you are now term\n");
    assert_eq!(ws_text(&mut ws), "* guest1 is now term");
    send(&mut ws, "/join games");
    while !ws_text(&mut ws).contains("games") {}
    nc.expect(b"* web left (joined games) (1 online)\n");
    nc.send(b"/join games\n");
    assert_eq!(ws_text(&mut ws), "* term joined (2 online)");
    while !String::from_utf8_lossy(&nc.line()).contains("games") {}
    nc.send(b"hello from nc\n");
    assert_eq!(ws_text(&mut ws), "<term> hello from nc");
    send(&mut ws, "<b>hi</b>");
    nc.expect(b"<web> <b>hi</b>\n");
}

/// Proves: the operator's `kick` treats a browser like any client: it gets the notice, as a
/// text message, then a close frame (1008), and the room is told.
#[test]
fn kick_a_websocket_client() {
    let b = Browsers::spawn(&["--chat"]);
    let mut nc = b.tcp();
    nc.line();
    let mut ws = b.ws();
    ws_text(&mut ws);
    nc.expect(b"* guest2 joined (2 online)\n");
    assert_eq!(admin_command(&b.admin, "kick guest2 spam"), "ok\n");
    let mut texts = Vec::new();
    assert_eq!(close_code(&mut ws, &mut texts), CloseCode::Policy);
    assert_eq!(texts, ["relayd: kicked by operator: spam"]);
    nc.expect(b"* guest2 left (kicked by operator: spam) (1 online)\n");
}

/// Proves: `--rate` limits a browser's lines as a TCP client's, and tells it so.
#[test]
fn rate_limit_applies_to_websocket_clients() {
    let b = Browsers::spawn(&["--rate", "2/3600"]);
    let mut nc = b.tcp();
    let mut ws = b.ws();
    b.wait_clients(2);
    for i in 0..4 {
        send(&mut ws, &format!("line {i}"));
    }
    assert_eq!(
        ws_text(&mut ws),
        "relayd: rate limit exceeded (2 lines per 3600 s), line dropped"
    );
    nc.expect(b"line 0\n");
    nc.expect(b"line 1\n");
    nc.send(b"after\n");
    assert_eq!(ws_text(&mut ws), "after");
}

/// Proves: a message longer than `--max-line` gets the notice and close code 1009; a binary
/// message the notice and 1003. Others are not affected.
#[test]
fn oversize_and_binary_messages_close_with_their_codes() {
    let b = Browsers::spawn(&["--max-line", "100"]);
    let mut nc = b.tcp();
    let mut long = b.ws();
    let mut binary = b.ws();
    b.wait_clients(3);
    send(&mut long, &"x".repeat(200));
    let mut texts = Vec::new();
    assert_eq!(close_code(&mut long, &mut texts), CloseCode::Size);
    assert_eq!(texts, ["relayd: message too long (max 100 bytes)"]);
    binary.send(Message::binary(&b"\x00\x01"[..])).unwrap();
    texts.clear();
    assert_eq!(close_code(&mut binary, &mut texts), CloseCode::Unsupported);
    assert_eq!(
        texts,
        ["relayd: binary messages are not accepted, send text"]
    );
    b.wait_clients(1);
    let mut ws = b.ws();
    b.wait_clients(2);
    send(&mut ws, "fine");
    nc.expect(b"fine\n");
}

/// Proves: the HTTP front answers what is not a WebSocket with plain errors, and serves the
/// page at `/`.
#[test]
fn http_errors_and_the_page() {
    let b = Browsers::spawn(&[]);
    let page = http_status(b.ws, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(page, "HTTP/1.1 200 OK");
    let (status, body) = common::http(b.ws, "GET", "/?view=danmaku");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("<!doctype html>"), "{body:.100}");
    assert_eq!(
        http_status(b.ws, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"),
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        http_status(b.ws, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        http_status(b.ws, b"hello there\r\n\r\n"),
        "HTTP/1.1 400 Bad Request"
    );
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(9000));
    assert_eq!(
        http_status(b.ws, big.as_bytes()),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // An upgrade without a key is not a WebSocket handshake.
    assert_eq!(
        http_status(
            b.ws,
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        ),
        "HTTP/1.1 400 Bad Request"
    );
    b.d.wait_log("404 not found");
    assert!(b.clients().is_empty());
}

/// Proves: with `--ws-origin`, a handshake from another origin (or none) is refused with 403,
/// and one from a listed origin is served.
#[test]
fn wrong_origin_is_refused() {
    let b = Browsers::spawn(&["--ws-origin", "http://good.example"]);
    for origin in [Some("http://evil.example"), None] {
        match try_ws_connect(b.ws, origin) {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
            other => panic!("origin {origin:?} not refused: {:?}", other.map(|_| ())),
        }
    }
    b.d.wait_log("websocket refused: 403");
    let mut nc = b.tcp();
    let mut ws = ws_connect(b.ws, Some("http://good.example"));
    b.wait_clients(2);
    send(&mut ws, "good");
    nc.expect(b"good\n");
}

/// Proves: a browser that stops reading is cut off as a TCP client would be (too slow), and
/// costs the others nothing: a TCP reader gets every line meanwhile.
#[test]
fn a_websocket_client_that_stops_reading_is_cut_off() {
    let b = Browsers::spawn(&["--max-pending", "65536", "--stall-timeout", "300"]);
    let mut reader = b.tcp();
    let mut sender = b.tcp();
    let _stuck = b.ws();
    b.wait_clients(3);
    let line = format!("{}\n", "z".repeat(999));
    let deadline = Instant::now() + TIMEOUT;
    let mut sent = 0;
    while b.clients().len() == 3 {
        assert!(
            Instant::now() < deadline,
            "the stuck browser was never cut off"
        );
        for _ in 0..100 {
            sender.send(line.as_bytes());
        }
        sent += 100;
        for _ in 0..100 {
            reader.expect(line.as_bytes());
        }
    }
    b.d.wait_log("too slow");
    assert!(sent > 64, "cut off after {sent} lines");
}

/// Proves: a quiet client is pinged, one that answers (tungstenite's client does, as it
/// reads) stays, and one that does not is closed after `--write-timeout`.
#[test]
fn ping_keeps_answering_clients_and_closes_silent_ones() {
    let b = Browsers::spawn(&["--ws-ping-interval", "1", "--write-timeout", "1"]);
    let mut answering = b.ws();
    let _silent = b.ws();
    b.wait_clients(2);
    let start = Instant::now();
    answering
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Reading is what makes tungstenite answer pings.
    while b.clients().len() == 2 {
        assert!(
            start.elapsed() < TIMEOUT,
            "the silent client was never closed"
        );
        let _ = answering.read();
    }
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    b.d.wait_log("no answer to ping");
    // The answering one is still there after several ping intervals.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let _ = answering.read();
    }
    assert_eq!(b.clients().len(), 1);
    assert!(b.clients()[0].ends_with(" ws - 0"));
}

/// HTTP requests being read count against `--max-per-ip` too: connections from one address
/// that never finish their request hold at most that many threads, and the next one from it
/// is closed at once, without an answer; once one has finished, the address may go on.
#[test]
fn unfinished_requests_from_one_address_are_capped_by_max_per_ip() {
    let b = Browsers::spawn(&["--max-per-ip", "2"]);
    let mut first = TcpStream::connect(b.ws).unwrap();
    let _second = TcpStream::connect(b.ws).unwrap();
    // Accepted in order after the two above, by the same accept loop.
    let mut third = TcpStream::connect(b.ws).unwrap();
    third.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0; 64];
    assert_eq!(third.read(&mut buf).unwrap(), 0, "the third was answered");
    b.d.wait_log("more than 2 HTTP requests from this address");
    // The first was only waiting for its request.
    first.set_read_timeout(Some(TIMEOUT)).unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = first.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(64)])
    );
    // Its place is free again.
    eventually("a place for a new request", || {
        http_status(b.ws, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200")
    });
}

/// A browser is held to the same admission as a TCP client: `--secret-file`'s secret is its
/// first message (a wrong one closes it with 1008 after relayd's notice; the right one lets it
/// relay), and past `--max-clients` it is told the server is full and closed with 1013.
#[test]
fn secret_and_max_clients_apply_to_websocket_clients() {
    let secret = temp_path("ws-secret");
    std::fs::write(&secret, "open sesame\n").unwrap();
    let b = Browsers::spawn(&[
        "--secret-file",
        secret.to_str().unwrap(),
        "--max-clients",
        "2",
    ]);

    let mut wrong = b.ws();
    send(&mut wrong, "guess");
    let mut texts = Vec::new();
    assert_eq!(close_code(&mut wrong, &mut texts), CloseCode::Policy);
    assert_eq!(texts, ["relayd: authentication failed"]);

    let mut tcp = b.tcp();
    tcp.send(b"open sesame\n");
    let mut browser = b.ws();
    send(&mut browser, "open sesame");
    b.wait_clients(2);
    eventually("both authenticated", || {
        b.clients().iter().filter(|l| l.contains(" lobby ")).count() == 2
    });
    send(&mut browser, "from the browser");
    tcp.expect(b"from the browser\n");

    let mut third = b.ws();
    let mut texts = Vec::new();
    assert_eq!(close_code(&mut third, &mut texts), CloseCode::Again);
    assert_eq!(texts, ["relayd: server full (2 clients)"]);
    let _ = std::fs::remove_file(&secret);
}

/// Issue 19, point 4: a page pasted a link's `?name=` after `/nick `, and a `%0A` in it made
/// the message several lines, each run or relayed: the visitor posted lines and commands they
/// never typed. Proves: in chat mode a message that starts with a command and goes on past
/// that line is refused whole (`relayd: a command is one line`): the room hears nothing of it,
/// no private message is sent, the name is unchanged; a plain message of several lines is
/// still several lines.
#[test]
fn a_command_with_more_lines_in_one_message_is_refused_whole() {
    let b = Browsers::spawn(&["--chat"]);
    let mut observer = b.tcp();
    observer.line();
    observer.send(b"/nick observer\n");
    observer.expect(b"* you are now observer\n");
    let mut ws = b.ws();
    assert!(ws_text(&mut ws).starts_with("* welcome to relayd, you are guest2 "));
    observer.expect(b"* guest2 joined (2 online)\n");

    send(
        &mut ws,
        "/nick alice\nI was made to say this\n/msg observer hi",
    );
    assert_eq!(ws_text(&mut ws), "relayd: a command is one line");
    send(&mut ws, "/join lobby\r\n/me also this");
    assert_eq!(ws_text(&mut ws), "relayd: a command is one line");
    b.d.wait_log("starting with a command refused");
    // Lines are handled in the order they came: had anything of the refused messages been
    // relayed, sent privately or renamed the sender, it would come before these.
    send(&mut ws, "plain\ntext");
    observer.expect(b"<guest2> plain\n");
    observer.expect(b"<guest2> text\n");
    send(&mut ws, "/nick alice");
    assert_eq!(ws_text(&mut ws), "* you are now alice");
    observer.expect(b"* guest2 is now alice\n");
}

/// Issue 19, point 5: once tungstenite holds nothing after a long frame, relayd rebuilds it
/// around the same stream to give its grown buffer back. Proves nothing is lost, split or
/// reordered around that: long messages with short ones right behind them, and a long
/// message in fragments with a ping between them, reach a TCP client whole and in order, the
/// browser stays connected, and the buffer was given back after each.
#[test]
fn long_messages_among_others_arrive_whole_and_in_order() {
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    // -v: the debug log tells when the buffer is given back.
    let b = Browsers::spawn(&["-v"]);
    let mut nc = b.tcp();
    let mut ws = b.ws();
    b.wait_clients(2);
    let long = "l".repeat(20_000);
    // Each pair is read together; each is given time to be handled (and the buffer given
    // back) before the next comes.
    for i in 0..3 {
        ws.write(Message::text(long.as_str())).unwrap();
        ws.write(Message::text(format!("short {i}"))).unwrap();
        ws.flush().unwrap();
        nc.expect(format!("{long}\n").as_bytes());
        nc.expect(format!("short {i}\n").as_bytes());
    }
    let (first, last) = ("f".repeat(9_000), "g".repeat(9_000));
    let fragment = |text: &str, op, fin| Message::Frame(Frame::message(text.to_string(), op, fin));
    ws.write(fragment(&first, OpCode::Data(Data::Text), false))
        .unwrap();
    ws.write(Message::Ping("between".into())).unwrap();
    ws.write(fragment(&last, OpCode::Data(Data::Continue), true))
        .unwrap();
    ws.write(Message::text("end")).unwrap();
    ws.flush().unwrap();
    nc.expect(format!("{first}{last}\n").as_bytes());
    nc.expect(b"end\n");
    send(&mut ws, "still here");
    nc.expect(b"still here\n");
    // Once after each pair, once after the fragmented message (the ping is no long frame).
    for _ in 0..4 {
        b.d.wait_log("read buffer given back");
    }
}

/// A WebSocket client of `addr` whose receive buffer is as small as the kernel allows, so that
/// what it does not read backs up into relayd at once; its reads bounded by [`TIMEOUT`].
fn ws_small_rcvbuf(addr: SocketAddr) -> WebSocket<TcpStream> {
    use tungstenite::client::IntoClientRequest;
    let sock = common::connect_small_rcvbuf(addr, 4096);
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let request = format!("ws://{addr}/ws").into_client_request().unwrap();
    match tungstenite::client(request, sock) {
        Ok((ws, _)) => ws,
        Err(e) => panic!("websocket handshake: {e}"),
    }
}

/// Defect: a browser cut off as too slow was not told: the connection was shut where the last
/// write had stopped, inside a frame (3 runs of 3), so the browser saw it fail (1006) with no
/// reason. Proves, three times over: a WebSocket client with a small receive buffer that
/// stops reading while a TCP client floods lines at it is cut off; reading then, it gets every
/// frame whole (each line it was sent, then the notice), the last text message is
/// `relayd: disconnected: too slow (…)`, and the close code is 1008.
///
/// Its queue holds more than a writer hands the kernel at once (64 KiB), so that the write in
/// flight when it is cut off stops where that batch was cut, not at the end of a chunk.
#[test]
fn a_websocket_client_cut_off_as_too_slow_is_told_why() {
    let b = Browsers::spawn(&["--max-pending", "1048576", "--stall-timeout", "300"]);
    let text = "z".repeat(999);
    let line = format!("{text}\n");
    for round in 0..3 {
        let mut sender = b.tcp();
        let mut stuck = ws_small_rcvbuf(b.ws);
        b.wait_clients(2);
        let deadline = Instant::now() + TIMEOUT;
        while b.clients().len() == 2 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the stuck browser was never cut off"
            );
            for _ in 0..100 {
                sender.send(line.as_bytes());
            }
        }
        let mut texts = Vec::new();
        assert_eq!(
            close_code(&mut stuck, &mut texts),
            CloseCode::Policy,
            "round {round}"
        );
        let (notice, lines) = texts.split_last().expect("no text message");
        assert!(
            notice.starts_with("relayd: disconnected: too slow ("),
            "round {round}: the last message was {notice:.80?}"
        );
        assert!(
            lines.len() > 64,
            "round {round}: cut off after {} lines",
            lines.len()
        );
        for (i, got) in lines.iter().enumerate() {
            assert!(*got == text, "round {round}: message {i} was {got:.80?}");
        }
    }
}
