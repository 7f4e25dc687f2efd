//! `--api ADDR`: the HTTP API, driven with real `curl`, checked against what real TCP chat
//! clients receive; its refusals, its key, its deadline, and in a cluster, from one node to
//! another's clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::api::{KEY, call, curl, get, key_file, named, post, until, with_api};
use crate::common::cluster::{Node, Redis};
use crate::common::{Daemon, admin_command, eventually, temp_path};

#[test]
fn publish_reaches_the_room_and_a_users_line_enters_its_history() {
    let (d, api, _key) = with_api(&["--chat", "--history", "5"]);
    let (mut alice, mut carol) = (d.connect(), d.connect());
    named(&mut alice, "alice");
    named(&mut carol, "carol");
    carol.send(b"/join other\n");
    carol.expect(b"* you are now in other (1 online)\n");

    let ok = post(&api, "/api/publish", r#"{"room":"lobby","text":"hello"}"#);
    assert_eq!(ok, json!({"ok": true}));
    assert_eq!(until(&mut alice, "* [server]"), "* [server] hello\n");
    post(
        &api,
        "/api/publish",
        r#"{"room":"lobby","text":"hi from the web","from":"bob"}"#,
    );
    alice.expect(b"<bob> hi from the web\n");
    // The other room heard neither: its next line is the one published to it.
    post(&api, "/api/publish", r#"{"room":"other","text":"x"}"#);
    carol.expect(b"* [server] x\n");

    // A user's line is part of the conversation; the server's line, like every notice, not.
    // Each line with its id (`LIFE-1`: the room's first line), in `ids`.
    let history = get(&api, "/api/history?room=lobby");
    let id = history["ids"][0].as_str().unwrap_or_default().to_string();
    assert!(id.ends_with("-1"), "{history}");
    assert_eq!(
        history,
        json!({"room": "lobby", "lines": ["<bob> hi from the web"], "ids": [id]})
    );
    let mut late = d.connect();
    until(&mut late, "* welcome to relayd");
    late.expect(b"<bob> hi from the web\n");

    // One line, a valid room and name: told, not silently mangled.
    for (body, error) in [
        (
            r#"{"room":"lobby","text":"two\nlines"}"#,
            "the text must be one line",
        ),
        (
            r#"{"room":"no room","text":"x"}"#,
            "a room is 1-32 letters, digits, _ - .",
        ),
        (
            r#"{"room":"lobby","text":"x","from":"b b"}"#,
            "a name is 1-32 letters, digits, _ - . and not only digits",
        ),
    ] {
        let reply = call(&api, "POST", "/api/publish", Some(body));
        assert_eq!(reply.expect(400), json!({ "error": error }), "{body}");
    }
}

#[test]
fn broadcast_send_and_kick_reach_the_clients() {
    let (d, api, _key) = with_api(&["--chat"]);
    let (mut alice, mut bob) = (d.connect(), d.connect());
    named(&mut alice, "alice");
    named(&mut bob, "bob");
    until(&mut alice, "* guest2 is now bob");

    post(&api, "/api/broadcast", r#"{"text":"maintenance at 5"}"#);
    alice.expect(b"* [server] maintenance at 5\n");
    bob.expect(b"* [server] maintenance at 5\n");

    let sent = post(&api, "/api/send", r#"{"user":"bob","text":"just you"}"#);
    assert_eq!(sent, json!({"ok": true, "connections": 1}));
    bob.expect(b"* [server] just you\n");

    for (body, error) in [
        (r#"{"user":"nobody","text":"x"}"#, "no such user"),
        // A user is a sub or a guest's name, never a client's number.
        (r#"{"user":"1","text":"x"}"#, "no such user"),
    ] {
        let reply = call(&api, "POST", "/api/send", Some(body));
        assert_eq!(reply.expect(404), json!({ "error": error }));
    }

    let kicked = post(&api, "/api/kick", r#"{"user":"bob","reason":"spam"}"#);
    assert_eq!(kicked, json!({"ok": true, "connections": 1}));
    bob.expect(b"relayd: kicked by operator: spam\n");
    bob.expect_eof();
    // alice heard nothing of the push to bob: her next line is about bob leaving.
    alice.expect(b"* bob left (kicked by operator: spam) (1 online)\n");

    let reply = call(&api, "POST", "/api/kick", Some(r#"{"client":99}"#));
    assert_eq!(reply.expect(404), json!({"error": "no such client"}));
    let reply = call(&api, "POST", "/api/kick", Some(r#"{"user":"bob"}"#));
    assert_eq!(reply.expect(404), json!({"error": "no such user"}));
    let reply = call(
        &api,
        "POST",
        "/api/kick",
        Some(r#"{"user":"a","client":1}"#),
    );
    assert_eq!(reply.status, 400);
    post(&api, "/api/kick", r#"{"client":1}"#);
    alice.expect(b"relayd: kicked by operator\n");
    alice.expect_eof();
}

#[test]
fn presence_rooms_stats_and_metrics() {
    let (d, api, _key) = with_api(&["--chat"]);
    let (mut alice, mut bob) = (d.connect(), d.connect());
    named(&mut alice, "alice");
    named(&mut bob, "bob");
    bob.send(b"/join dev\n");
    bob.expect(b"* you are now in dev (1 online)\n");

    assert_eq!(
        get(&api, "/api/presence?room=lobby"),
        json!({"room": "lobby", "members": [
            {"user": null, "name": "alice", "client": 1, "transport": "tcp", "node": null}
        ]})
    );
    assert_eq!(
        get(&api, "/api/presence?room=empty"),
        json!({"room": "empty", "members": []})
    );
    assert_eq!(
        get(&api, "/api/rooms"),
        json!({"rooms": [{"room": "dev", "members": 1}, {"room": "lobby", "members": 1}]})
    );
    let stats = get(&api, "/api/stats");
    assert_eq!(stats["clients"], 2);
    assert_eq!(stats["rooms"], 2);

    let metrics = call(&api, "GET", "/metrics", None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("\nrelayd_clients 2\n"),
        "{}",
        metrics.body
    );
    // The same key as every other request.
    assert_eq!(curl(&api, "GET", "/metrics", None, None).status, 401);
}

#[test]
fn refusals_say_why() {
    let (_d, api, _key) = with_api(&["--chat", "--max-line", "1024"]);
    let publish = br#"{"room":"lobby","text":"x"}"#;
    for key in [None, Some("api-test-key-012345678X"), Some("")] {
        let reply = curl(&api, "POST", "/api/publish", key, Some(publish));
        assert_eq!(reply.status, 401, "{key:?}");
        assert_eq!(reply.header("WWW-Authenticate"), Some("Bearer"));
        assert_eq!(
            reply.json(),
            json!({"error": "a valid API key is required"})
        );
    }
    // The key is refused before the path is looked at: nothing is learnt without it.
    assert_eq!(curl(&api, "GET", "/nowhere", None, None).status, 401);

    for body in [
        "{not json",
        r#"{"room":"lobby"}"#,
        r#"{"room":"lobby","txt":"x"}"#,
        r#"{"room":"lobby","text":7}"#,
    ] {
        let reply = call(&api, "POST", "/api/publish", Some(body));
        let error = reply.expect(400)["error"].as_str().unwrap().to_string();
        assert!(error.starts_with("bad request: "), "{body}: {error}");
    }
    let unknown = call(
        &api,
        "POST",
        "/api/publish",
        Some(r#"{"room":"lobby","txt":"x"}"#),
    );
    assert!(
        unknown.body.contains("unknown field `txt`"),
        "{}",
        unknown.body
    );
    let missing = call(&api, "POST", "/api/send", Some(r#"{"user":"a"}"#));
    assert!(
        missing.body.contains("missing field `text`"),
        "{}",
        missing.body
    );

    let reply = call(&api, "GET", "/api/nothing", None);
    assert_eq!(reply.expect(404), json!({"error": "no such endpoint"}));
    let reply = call(&api, "GET", "/api/publish", None);
    assert_eq!(
        reply.expect(405),
        json!({"error": "only POST is served here"})
    );
    assert_eq!(reply.header("Allow"), Some("POST"));
    let reply = call(&api, "DELETE", "/api/rooms", None);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("Allow"), Some("GET"));
    let reply = call(&api, "GET", "/api/presence", None);
    assert_eq!(
        reply.expect(400),
        json!({"error": "the query must be room=NAME"})
    );

    let big = format!(r#"{{"room":"lobby","text":"{}"}}"#, "x".repeat(70_000));
    let reply = call(&api, "POST", "/api/publish", Some(&big));
    assert_eq!(
        reply.expect(413),
        json!({"error": "the body is larger than 65536 bytes"})
    );
    // Under the limit, over --max-line: a 400 (curl asks to continue first: it is answered).
    let long = format!(r#"{{"room":"lobby","text":"{}"}}"#, "x".repeat(2000));
    let reply = call(&api, "POST", "/api/publish", Some(&long));
    assert_eq!(
        reply.expect(400),
        json!({"error": "the line is longer than --max-line 1024"})
    );

    // No Content-Length: 411.
    let mut s = TcpStream::connect(&api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head =
        format!("POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 411 Length Required\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\n{\"error\":\"Content-Length is required\"}"));
}

/// The `api-request` threads of process `pid`.
fn request_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "api-request")
        .count()
}

#[test]
fn a_slow_request_head_is_closed_within_its_deadline() {
    let (d, api, _key) = with_api(&[]);
    let pid = d.child.id();
    let mut s = TcpStream::connect(&api).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let start = Instant::now();
    s.write_all(b"POST /api/broadcast HTTP/1.1\r\n").unwrap();
    eventually("the request's thread", || request_threads(pid) == 1);
    // A header byte every 300 ms: never a complete head.
    let closed = loop {
        if s.write_all(b"X").is_err() {
            break start.elapsed();
        }
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => break start.elapsed(),
            Ok(_) => panic!("an answer to a request never complete"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break start.elapsed(),
            Err(_) => assert!(start.elapsed() < Duration::from_secs(9), "never closed"),
        }
    };
    assert!(
        closed >= Duration::from_millis(4500) && closed < Duration::from_secs(7),
        "closed after {closed:?}, the deadline is 5 s"
    );
    eventually("no request thread left", || request_threads(pid) == 0);
}

#[test]
fn the_key_never_reaches_the_log() {
    let api = Daemon::free_addr();
    let key = key_file();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relayd"));
    cmd.args(["--chat", "--bind", "127.0.0.1:0", "--api", &api, "-vv"]);
    cmd.args(["--api-key-file", key.to_str().unwrap()]);
    let d = Daemon::start(cmd);
    let mut log = d.log_until("listening on ");
    // -vv logs at trace, everything debug logs and more (the helper drops RUST_LOG).
    post(&api, "/api/broadcast", r#"{"text":"x"}"#);
    let wrong = "api-test-key-0123456789-wrong";
    curl(&api, "GET", "/api/stats", Some(wrong), None);
    call(&api, "GET", "/api/nothing", None);
    log.extend(d.log_until("404"));
    d.signal(libc::SIGTERM);
    log.extend(d.log_until("stopped"));
    assert!(log.iter().any(|l| l.contains("api 127.0.0.1:")), "{log:#?}");
    for line in &log {
        assert!(
            !line.contains(KEY) && !line.contains("0123456789"),
            "{line}"
        );
    }
}

#[test]
fn refuses_to_start_without_a_key_off_loopback() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relayd"));
    cmd.args(["--bind", "127.0.0.1:0", "--api", "0.0.0.0:0"]);
    let mut d = Daemon::start(cmd);
    assert_eq!(d.wait_exit(), Some(1));
    assert_eq!(
        d.log_to_end(),
        ["relayd: --api 0.0.0.0:0: not a loopback address, so --api-key-file is required"]
    );
    // On loopback it starts, and asks for no key.
    let api = Daemon::free_addr();
    let d = Daemon::spawn(&["--api", &api]);
    assert_eq!(curl(&api, "GET", "/api/rooms", None, None).status, 200);
    drop(d);
}

#[test]
fn the_control_socket_has_the_same_verbs() {
    let admin = temp_path("api-admin");
    let (d, api, _key) = with_api(&[
        "--chat",
        "--history",
        "3",
        "--admin",
        admin.to_str().unwrap(),
    ]);
    let mut alice = d.connect();
    named(&mut alice, "alice");
    assert_eq!(admin_command(&admin, "publish lobby hello"), "ok\n");
    alice.expect(b"* [server] hello\n");
    assert_eq!(
        admin_command(&admin, "publish-as lobby bob hi there"),
        "ok\n"
    );
    alice.expect(b"<bob> hi there\n");
    let history = admin_command(&admin, "history lobby");
    let (id, line) = history.split_once(' ').unwrap();
    assert_eq!(line, "<bob> hi there\n");
    assert_eq!(admin_command(&admin, "presence lobby"), "1 alice tcp - -\n");
    assert_eq!(admin_command(&admin, "rooms"), "lobby 1\n");
    assert_eq!(
        admin_command(&admin, "publish bad/room x"),
        "error: a room is 1-32 letters, digits, _ - .\n"
    );
    // And what one does, the other sees.
    assert_eq!(
        get(&api, "/api/history?room=lobby"),
        json!({"room": "lobby", "lines": ["<bob> hi there"], "ids": [id]})
    );
}

#[test]
fn in_a_cluster_publish_send_and_kick_reach_another_nodes_client() {
    let redis = Redis::start();
    let api = Daemon::free_addr();
    let key = key_file();
    let a = Node::start_with(
        &redis.url(),
        "a",
        &[
            "--chat",
            "--history",
            "5",
            "--api",
            &api,
            "--api-key-file",
            key.to_str().unwrap(),
        ],
    );
    let b = Node::start_with(&redis.url(), "b", &["--chat", "--history", "5"]);
    a.wait_linked();
    b.wait_linked();
    let mut bob = b.connect();
    named(&mut bob, "bob");
    eventually("node a to see bob", || {
        get(&api, "/api/presence?room=lobby")["members"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    });
    assert_eq!(
        get(&api, "/api/presence?room=lobby"),
        json!({"room": "lobby", "members": [
            {"user": null, "name": "bob", "client": 1, "transport": null, "node": "b"}
        ]})
    );

    post(&api, "/api/publish", r#"{"room":"lobby","text":"hello b"}"#);
    bob.expect(b"* [server] hello b\n");
    post(
        &api,
        "/api/publish",
        r#"{"room":"lobby","text":"hi","from":"web"}"#,
    );
    bob.expect(b"<web> hi\n");
    // Kept in Redis, where every node reads it.
    assert_eq!(
        get(&api, "/api/history?room=lobby")["lines"],
        json!(["<web> hi"])
    );
    post(&api, "/api/send", r#"{"user":"bob","text":"psst"}"#);
    bob.expect(b"* [server] psst\n");
    post(&api, "/api/broadcast", r#"{"text":"all nodes"}"#);
    bob.expect(b"* [server] all nodes\n");
    post(&api, "/api/kick", r#"{"user":"bob","reason":"bye"}"#);
    bob.expect(b"relayd: kicked by operator: bye\n");
    bob.expect_eof();
}

#[test]
fn the_key_is_read_again_on_reload() {
    let (d, api, key) = with_api(&[]);
    assert_eq!(call(&api, "GET", "/api/rooms", None).status, 200);
    let new = "a-new-api-key-9876543210";
    std::fs::write(&key, format!("{new}\n")).unwrap();
    d.signal(libc::SIGHUP);
    eventually("the new key in force", || {
        curl(&api, "GET", "/api/rooms", Some(new), None).status == 200
    });
    assert_eq!(call(&api, "GET", "/api/rooms", None).status, 401);
    // A key too short is refused whole: the one in force stays.
    std::fs::write(&key, "short\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("reload failed");
    assert_eq!(curl(&api, "GET", "/api/rooms", Some(new), None).status, 200);
}
