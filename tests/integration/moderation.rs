//! Bans and mutes (issue 21, part 1) on the real binary over real sockets: each verb from
//! `relayd ctl`, the control socket and the HTTP API (curl), what a banned or muted client
//! sees on TCP and WebSocket, expiry, `--state-dir` across a restart, and one-line errors.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tungstenite::Message;

use crate::common::api::{call, post};
use crate::common::chat::Client;
use crate::common::cluster::{Node, Redis};
use crate::common::tokens::{
    SECRET, connect, key_file, token, until as read_until, wait_admin, with_admin,
};
use crate::common::ws::{ws_connect, ws_text};
use crate::common::{Daemon, admin_command, eventually, temp_path};

/// A chat daemon checking tokens, with a control socket, a `--ws-bind` port and `more`.
fn moderated(more: &[&str]) -> (Daemon, PathBuf) {
    let mut args = vec!["--ws-bind", "127.0.0.1:0"];
    args.extend_from_slice(more);
    crate::common::tokens::moderated(&args)
}

/// `relayd ctl --admin ADMIN ARGS`: its output and exit status.
fn ctl(admin: &Path, args: &[&str]) -> (String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_relayd"))
        .arg("ctl")
        .arg("--admin")
        .arg(admin)
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        out.status.code().unwrap(),
    )
}

/// A guest that read its welcome and took `name`.
fn guest(d: &Daemon, name: &str) -> Client {
    let mut c = connect(d.addrs[0]);
    read_until(&mut c, "* welcome to relayd, you are guest");
    c.send(&format!("/nick {name}\n"));
    c.expect(&format!("* you are now {name}\n"));
    c
}

/// A TCP client that signed in with `token`: the first line it got after its welcome.
fn signed_in(d: &Daemon, token: &str) -> (Client, String) {
    let mut c = connect(d.addrs[0]);
    read_until(&mut c, "* welcome to relayd, you are guest");
    c.send(&format!("/auth {token}\n"));
    let answer = c.line();
    (c, answer)
}

/// A WebSocket client of `addr` that came with `?token=`.
fn ws_with_token(addr: SocketAddr, token: &str) -> tungstenite::WebSocket<TcpStream> {
    use tungstenite::client::IntoClientRequest;
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("ws://{addr}/ws?token={token}")
        .into_client_request()
        .unwrap();
    tungstenite::client(request, sock).unwrap().0
}

/// The next text message that starts with `relayd: `.
fn ws_until(ws: &mut tungstenite::WebSocket<TcpStream>) -> String {
    loop {
        let text = ws_text(ws);
        if text.starts_with("relayd: ") {
            return text;
        }
    }
}

/// Asserts the next frame closes the WebSocket with code 1008 (policy).
fn ws_closed(ws: &mut tungstenite::WebSocket<TcpStream>) {
    match ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// The `until` of a ban's line (`ok: T banned until TIME, …`, `relayd: you are banned until
/// TIME: …`): the text after `until ` up to the next `,`, `:` after the time, or the end.
fn until_of(line: &str) -> String {
    let after = line.split(" until ").nth(1).unwrap();
    after[..20].to_string()
}

/// Proves: a ban from `relayd ctl` closes every connection of a signed-in user at once, TCP
/// and WebSocket, each told `relayd: you are banned until TIME: REASON`; the user is then
/// refused at `/auth` and at `?token=`; `bans` lists it (what, until, by, why); `unban`
/// lets it in again. Before the change `ctl ban` was `error: unknown command`.
#[test]
fn a_ban_closes_every_connection_of_a_user_and_refuses_it_at_auth() {
    let (d, admin) = moderated(&[]);
    let ws_addr = d.ws_addr();
    let alice = token("u-1", "alice");
    let (mut tcp, answer) = signed_in(&d, &alice);
    assert_eq!(answer, "* you are now alice\n");
    let mut ws = ws_with_token(ws_addr, &alice);
    assert!(ws_text(&mut ws).starts_with("* welcome to relayd, you are alice"));
    let mut bystander = guest(&d, "bob");

    let (out, code) = ctl(&admin, &["ban", "u-1", "10m", "spam", "links"]);
    assert_eq!(code, 0, "{out}");
    let until = until_of(&out);
    assert_eq!(
        out,
        format!("ok: u-1 banned until {until}, 2 connections closed\n")
    );
    let told = format!("relayd: you are banned until {until}: spam links");
    assert_eq!(read_until(&mut tcp, "relayd: "), format!("{told}\n"));
    tcp.expect_eof();
    assert_eq!(ws_until(&mut ws), told);
    ws_closed(&mut ws);
    read_until(&mut bystander, "* alice left (banned)");

    let (mut again, answer) = signed_in(&d, &alice);
    assert_eq!(answer, format!("{told}\n"));
    again.expect_eof();
    let mut ws = ws_with_token(ws_addr, &alice);
    assert_eq!(ws_text(&mut ws), told);
    ws_closed(&mut ws);

    assert_eq!(
        ctl(&admin, &["bans"]),
        (format!("ban u-1 {until} operator spam links\n"), 0)
    );
    assert_eq!(ctl(&admin, &["unban", "u-1"]), ("ok\n".into(), 0));
    assert_eq!(ctl(&admin, &["bans"]), (String::new(), 0));
    let (_tcp, answer) = signed_in(&d, &alice);
    assert_eq!(answer, "* you are now alice\n");
}

/// Proves: on the control socket, a guest's ban follows its name (whoever takes it later is
/// closed, in any case), and an address ban closes whoever is connected from it and refuses
/// it at connect, on TCP and WebSocket, with `relayd: you are banned` when it never ends.
#[test]
fn a_name_ban_follows_the_name_and_an_address_ban_refuses_at_connect() {
    let (d, admin) = moderated(&[]);
    let mut bob = guest(&d, "bob");
    assert_eq!(
        admin_command(&admin, "ban bob flooding"),
        "ok: bob banned until lifted, 1 connections closed\n"
    );
    bob.expect("relayd: you are banned: flooding\n");
    bob.expect_eof();
    let mut other = connect(d.addrs[0]);
    read_until(&mut other, "* welcome to relayd, you are guest");
    other.send("/nick BOB\nnot relayed\n");
    other.expect("relayd: you are banned: flooding\n");
    other.expect_eof();

    let mut carol = guest(&d, "carol");
    let answer = admin_command(&admin, "ban 127.0.0.1");
    assert_eq!(
        answer,
        "ok: 127.0.0.1/32 banned until lifted, 1 connections closed\n"
    );
    carol.expect("relayd: you are banned\n");
    carol.expect_eof();
    let mut refused = connect(d.addrs[0]);
    refused.expect("relayd: you are banned\n");
    refused.expect_eof();
    let mut ws = ws_connect(d.ws_addr(), None);
    assert_eq!(ws_text(&mut ws), "relayd: you are banned");
    ws_closed(&mut ws);
    assert_eq!(
        admin_command(&admin, "bans"),
        "ban 127.0.0.1/32 - operator -\nban bob - operator flooding\n"
    );
    assert_eq!(admin_command(&admin, "unban 127.0.0.1/32"), "ok\n");
    guest(&d, "carol");
}

/// Proves: a muted user stays connected and reads, but its lines, `/me` and `/msg` reach
/// nobody; it is told `relayd: you are muted until TIME` once, not once per line; a 2 s
/// mute lifts itself (after 2 s, not before), and a 2 s ban too.
#[test]
fn a_two_second_mute_and_ban_lift_themselves() {
    let (d, admin) = moderated(&[]);
    let mut bob = guest(&d, "bob");
    let mut carol = guest(&d, "carol");
    while !bob.line().ends_with(" is now carol\n") {}
    let muted = Instant::now();
    let answer = admin_command(&admin, "mute bob 2s");
    let until = until_of(&answer);
    assert_eq!(answer, format!("ok: bob muted until {until}\n"));
    bob.send("one\n/me waves\n/msg carol psst\ntwo\n/who\n");
    bob.expect(&format!("relayd: you are muted until {until}\n"));
    bob.expect("* 2 in lobby: bob, carol\n");
    carol.send("still here\n");
    bob.expect("<carol> still here\n");
    eventually("the mute to lift", || {
        admin_command(&admin, "bans").is_empty()
    });
    let lifted = muted.elapsed();
    assert!(lifted >= Duration::from_secs(2), "{lifted:?}");
    bob.send("free\n");
    // Nothing bob sent while muted reached carol: this is the first.
    carol.expect("<bob> free\n");

    let banned = Instant::now();
    admin_command(&admin, "ban dave 2s");
    let mut tries = 0;
    loop {
        tries += 1;
        assert!(
            banned.elapsed() < Duration::from_secs(10),
            "the ban never lifted"
        );
        let mut c = connect(d.addrs[0]);
        read_until(&mut c, "* welcome to relayd, you are guest");
        c.send("/nick dave\n");
        if c.line() == "* you are now dave\n" {
            break;
        }
        c.expect_eof();
        std::thread::sleep(Duration::from_millis(50));
    }
    let lifted = banned.elapsed();
    assert!(tries > 1 && lifted >= Duration::from_secs(2), "{lifted:?}");
    assert!(lifted < Duration::from_secs(4), "{lifted:?}");
}

/// Proves: each verb as an API endpoint, with curl (`by` is `api`), and bad input is a 400
/// (or 404 for lifting what is not there) with one line saying why.
#[test]
fn the_api_bans_mutes_and_lists() {
    let api = Daemon::free_addr();
    let key = crate::common::api::key_file();
    let (d, _admin) = moderated(&["--api", &api, "--api-key-file", key.to_str().unwrap()]);
    let mut bob = guest(&d, "bob");
    let mut carol = guest(&d, "carol");
    let ban = post(
        &api,
        "/api/ban",
        r#"{"target": "bob", "duration": "1h", "reason": "spam"}"#,
    );
    assert_eq!(ban["connections"], 1);
    let until = ban["until"].as_str().unwrap().to_string();
    assert_eq!(
        read_until(&mut bob, "relayd: "),
        format!("relayd: you are banned until {until}: spam\n")
    );
    let mute = post(&api, "/api/mute", r#"{"target": "carol"}"#);
    assert_eq!(mute["until"], serde_json::Value::Null);
    carol.send("hello\n");
    assert_eq!(
        read_until(&mut carol, "relayd: "),
        "relayd: you are muted\n"
    );
    assert_eq!(
        call(&api, "GET", "/api/bans", None).expect(200),
        serde_json::json!({"bans": [
            {"kind": "ban", "target": "bob", "until": until, "reason": "spam", "by": "api"},
            {"kind": "mute", "target": "carol", "until": null, "reason": null, "by": "api"},
        ]})
    );
    post(&api, "/api/unmute", r#"{"target": "carol"}"#);
    post(&api, "/api/unban", r#"{"target": "bob"}"#);
    assert_eq!(
        call(&api, "GET", "/api/bans", None).expect(200),
        serde_json::json!({"bans": []})
    );
    for (path, body, status, error) in [
        (
            "/api/unban",
            r#"{"target": "bob"}"#,
            404,
            "bob is not banned",
        ),
        (
            "/api/ban",
            r#"{"target": "bob", "duration": "10x"}"#,
            400,
            "10x: not a duration (30s, 10m, 2h, 7d)",
        ),
        (
            "/api/mute",
            r#"{"target": "2001:db8::/129"}"#,
            400,
            "2001:db8::/129: prefix length must be 0 to 128",
        ),
        (
            "/api/ban",
            r#"{"target": "bob", "reason": "a\nb"}"#,
            400,
            "a reason is one line",
        ),
    ] {
        let reply = call(&api, "POST", path, Some(body));
        assert_eq!(reply.expect(status)["error"], error, "{path} {body}");
    }
    let reply = call(&api, "POST", "/api/ban", Some(r#"{"user": "bob"}"#));
    assert_eq!(reply.status, 400);
    assert_eq!(call(&api, "POST", "/api/bans", Some("{}")).status, 405);
}

/// Proves: bad input on the control socket is one `error: …` line each, and `relayd ctl`
/// exits 1 for it.
#[test]
fn bad_input_is_a_one_line_error() {
    let (_d, admin) = moderated(&[]);
    for (command, answer) in [
        (
            "ban bob 10x",
            "error: 10x: not a duration (30s, 10m, 2h, 7d)\n",
        ),
        (
            "ban bob 0s",
            "error: 0s: a duration is 1s to 365d (none: until lifted)\n",
        ),
        (
            "mute bob 400d",
            "error: 400d: a duration is 1s to 365d (none: until lifted)\n",
        ),
        (
            "ban 203.0.113.300",
            "error: 203.0.113.300: not an IP address or network\n",
        ),
        (
            "ban 10.0.0.1/8",
            "error: 10.0.0.1/8: host bits set; the network is 10.0.0.0/8\n",
        ),
        (
            "mute 2001:db8::/129",
            "error: 2001:db8::/129: prefix length must be 0 to 128\n",
        ),
        ("unban nobody", "error: nobody is not banned\n"),
        ("unmute nobody", "error: nobody is not muted\n"),
        ("ban", "error: usage: ban TARGET [DURATION] [REASON]\n"),
        ("unmute", "error: usage: unmute TARGET\n"),
    ] {
        assert_eq!(admin_command(&admin, command), answer, "{command}");
    }
    let (out, code) = ctl(&admin, &["ban", "bob", "10x"]);
    assert_eq!(
        (out.as_str(), code),
        ("error: 10x: not a duration (30s, 10m, 2h, 7d)\n", 1)
    );
}

/// Proves: with `--state-dir`, bans and mutes survive a restart with the same expiry (the
/// banned address is still refused), the directory is created if missing, and a state file
/// that does not parse is a one-line startup error, exit 1, the file left as it was.
#[test]
fn bans_survive_a_restart_and_a_corrupt_state_file_stops_the_start() {
    let dir = temp_path("moderation-state").join("state");
    let admin = temp_path("moderation-restart-admin");
    let args = [
        "--chat",
        "--admin",
        admin.to_str().unwrap(),
        "--state-dir",
        dir.to_str().unwrap(),
    ];
    let start = || {
        let d = Daemon::spawn(&args);
        wait_admin(&admin);
        d
    };
    let mut d = start();
    admin_command(&admin, "ban 127.0.0.1 7d too many bots");
    admin_command(&admin, "mute u-9 1h");
    admin_command(&admin, "ban eve");
    let before = admin_command(&admin, "bans");
    assert_eq!(before.lines().count(), 3, "{before}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));

    let mut d = start();
    assert_eq!(admin_command(&admin, "bans"), before);
    let mut refused = connect(d.addrs[0]);
    // `ban 127.0.0.1/32 TIME operator too many bots`
    let until = before.split(' ').nth(2).unwrap();
    refused.expect(&format!(
        "relayd: you are banned until {until}: too many bots\n"
    ));
    refused.expect_eof();
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));

    let file = dir.join("state.json");
    std::fs::write(&file, "{\"version\": 1, \"moderation\": [").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_relayd"))
        .args(["--bind", "127.0.0.1:0", "-q"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let expected = format!("relayd: {}: not a state file: ", file.display());
    assert!(
        err.starts_with(&expected) && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"version\": 1, \"moderation\": ["
    );
}

/// Proves (cluster, `--redis`): a ban made on node A closes the user on node B within a
/// second and refuses it there; its key in Redis expires with it; a node started later reads
/// it from Redis; lifting it on B lifts it on A, and deletes the key.
#[test]
fn a_ban_on_one_node_closes_and_refuses_the_user_on_another() {
    let redis = Redis::start();
    let url = redis.url();
    let (a, b) = Node::chat_pair(&url);
    let mut bob = guest(&b.daemon, "bob");
    let banned = Instant::now();
    let answer = a.admin("ban bob 1h spam");
    let until = until_of(&answer);
    assert_eq!(
        answer,
        format!("ok: bob banned until {until}, 0 connections closed\n")
    );
    let told = format!("relayd: you are banned until {until}: spam\n");
    assert_eq!(read_until(&mut bob, "relayd: "), told);
    let took = banned.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    bob.expect_eof();
    let mut again = connect(b.daemon.addrs[0]);
    read_until(&mut again, "* welcome to relayd, you are guest");
    again.send("/nick bob\n");
    again.expect(&told);
    again.expect_eof();

    let ttl = redis.ttl("relayd:moderation:ban:bob");
    assert!((3590..=3601).contains(&ttl), "{ttl}");
    let c = Node::start_with(&url, "c", &["--chat", "--cluster-ttl", "3"]);
    c.wait_linked();
    let listed = a.admin("bans");
    assert_eq!(listed, format!("ban bob {until} operator spam\n"));
    eventually("node c to read the ban", || c.admin("bans") == listed);

    assert_eq!(b.admin("unban bob"), "ok\n");
    eventually("node a to lift the ban", || a.admin("bans").is_empty());
    assert_eq!(redis.get("relayd:moderation:ban:bob"), None);
    guest(&a.daemon, "bob");
}

/// Proves: in raw mode a muted signed-in user's lines are dropped, byte for byte nothing of
/// them relayed, and it is told once; unmuted, its next line is relayed.
#[test]
fn a_muted_raw_client_is_not_relayed() {
    let keys = key_file("moderation-raw-key", &format!("{SECRET}\n"));
    let (d, admin) = with_admin(
        "moderation-raw-admin",
        &["--token-key", keys.to_str().unwrap()],
    );
    let mut a = d.connect();
    let mut b = d.connect();
    b.send(format!("/auth {}\nhello\n", token("u-1", "alice")).as_bytes());
    a.expect(b"hello\n");
    assert_eq!(
        admin_command(&admin, "mute u-1"),
        "ok: u-1 muted until lifted\n"
    );
    b.send(b"muted\n");
    b.expect(b"relayd: you are muted\n");
    b.send(b"again\n");
    // b's four lines read (the /auth line counts) before it is unmuted.
    eventually("b's lines read", || {
        admin_command(&admin, "clients")
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            // id address name room seconds lines_in lines_out pending transport user dropped
            .any(|c| c.get(9) == Some(&"u-1") && c.get(5) == Some(&"4"))
    });
    a.send(b"ping\n");
    b.expect(b"ping\n");
    assert_eq!(admin_command(&admin, "unmute u-1"), "ok\n");
    b.send(b"free\n");
    a.expect(b"free\n");
}
