//! Issue 22, recall and history by age, on the real binary over real sockets: a line taken
//! back by a room's moderator (`/recall`), the operator (`recall`) and the API (`POST
//! /api/recall`), and what each kind of client sees of it; `--history-age`; a room nobody is
//! in kept for its history, and how many such rooms are kept. JSON events parsed with
//! serde_json.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::api::{call, get, named, post, until, with_api};
use crate::common::json::Json;
use crate::common::ws::{Browsers, ws_text};
use crate::common::{Client, Daemon, admin_command, eventually_within, temp_path};

/// `history ROOM` on the control socket: (id, line) each, oldest first.
fn history(admin: &Path, room: &str) -> Vec<(String, String)> {
    admin_command(admin, &format!("history {room}"))
        .lines()
        .map(|l| {
            let (id, line) = l.split_once(' ').unwrap();
            (id.to_string(), line.to_string())
        })
        .collect()
}

/// The id of `line` in `room`'s history.
fn id_of(admin: &Path, room: &str, line: &str) -> String {
    history(admin, room)
        .into_iter()
        .find(|(_, l)| l == line)
        .unwrap_or_else(|| panic!("{line:?} not in {room}'s history"))
        .0
}

/// `POST /api/recall` of line `id` in the lobby.
fn recall(api: &str, id: &str) -> serde_json::Value {
    post(
        api,
        "/api/recall",
        &json!({"room": "lobby", "id": id}).to_string(),
    )
}

/// A client that has read its welcome and the `n` lines replayed to it.
fn entering(d: &Daemon, replayed: &[&str]) -> Client {
    let mut c = d.connect();
    until(&mut c, "* welcome to relayd, you are guest");
    for line in replayed {
        c.expect(format!("{line}\n").as_bytes());
    }
    c
}

#[test]
fn a_line_is_recalled_by_a_moderator_the_operator_and_the_api() {
    let admin = temp_path("recall-admin");
    let args = ["--chat", "--history", "10", "--admin"];
    let (d, api, _key) = with_api(&[&args[..], &[admin.to_str().unwrap()]].concat());
    let (mut alice, mut bob, mut carol) = (d.connect(), d.connect(), d.connect());
    named(&mut alice, "alice");
    named(&mut bob, "bob");
    named(&mut carol, "carol");
    assert_eq!(admin_command(&admin, "op alice lobby"), "ok\n");
    // One write: most likely one chunk, so a recall takes a line out of the middle of it.
    carol.send(b"one\ntwo\nthree\nfour\n");
    for c in [&mut alice, &mut bob] {
        until(c, "<carol> one");
        for line in ["two", "three", "four"] {
            c.expect(format!("<carol> {line}\n").as_bytes());
        }
    }
    let ids: Vec<String> = ["one", "two", "three", "four"]
        .iter()
        .map(|l| id_of(&admin, "lobby", &format!("<carol> {l}")))
        .collect();
    // Ids increase within the room: LIFE-1 .. LIFE-4, the same life.
    let life = ids[0].split_once('-').unwrap().0;
    for (k, id) in ids.iter().enumerate() {
        assert_eq!(*id, format!("{life}-{}", k + 1));
    }
    assert_eq!(
        get(&api, "/api/history?room=lobby"),
        json!({"room": "lobby",
               "lines": ["<carol> one", "<carol> two", "<carol> three", "<carol> four"],
               "ids": ids})
    );

    // The operator.
    assert_eq!(
        admin_command(&admin, &format!("recall lobby {}", ids[1])),
        "ok\n"
    );
    d.wait_log(&format!("operator: recalled line {} in lobby", ids[1]));
    // The API.
    assert_eq!(
        recall(&api, &ids[3]),
        json!({"ok": true, "in_history": true})
    );
    d.wait_log(&format!("api: recalled line {} in lobby", ids[3]));
    // A moderator of the room, answered alone.
    alice.send(format!("/recall {}\n", ids[0]).as_bytes());
    alice.expect(format!("* line {} recalled\n", ids[0]).as_bytes());
    d.wait_log(&format!("alice: recalled line {} in lobby", ids[0]));

    // Out of the history, both ways of reading it, and out of a newcomer's replay.
    assert_eq!(
        history(&admin, "lobby"),
        [(ids[2].clone(), "<carol> three".to_string())]
    );
    assert_eq!(
        get(&api, "/api/history?room=lobby"),
        json!({"room": "lobby", "lines": ["<carol> three"], "ids": [ids[2]]})
    );
    let mut late = entering(&d, &["<carol> three"]);
    for c in [&mut alice, &mut bob] {
        c.expect(b"* guest4 joined (4 online)\n");
    }

    // Recalled already: the room gave it, it is just no longer kept.
    assert_eq!(
        admin_command(&admin, &format!("recall lobby {}", ids[1])),
        format!("ok: {} was no longer in lobby's history\n", ids[1])
    );
    assert_eq!(
        recall(&api, &ids[1]),
        json!({"ok": true, "in_history": false})
    );
    alice.send(format!("/recall {}\n", ids[1]).as_bytes());
    alice.expect(
        format!(
            "* line {} recalled (it was no longer in the history)\n",
            ids[1]
        )
        .as_bytes(),
    );

    // TCP clients saw nothing of it: each one's next line is the next line said.
    carol.send(b"five\n");
    for c in [&mut alice, &mut bob, &mut late] {
        c.expect(b"<carol> five\n");
    }
}

#[test]
fn a_bad_recall_is_an_error_each_way() {
    let admin = temp_path("recall-bad");
    let (d, api, _key) = with_api(&["--chat", "--admin", admin.to_str().unwrap()]);
    let (mut alice, mut bob) = (d.connect(), d.connect());
    named(&mut alice, "alice");
    named(&mut bob, "bob");
    assert_eq!(admin_command(&admin, "op alice lobby"), "ok\n");
    bob.send(b"hello\n");
    until(&mut alice, "<bob> hello");
    let id = id_of(&admin, "lobby", "<bob> hello");
    let (life, _) = id.split_once('-').unwrap();
    let never = format!("{life}-2");
    let other_life = format!("{}-1", life.parse::<u64>().unwrap() - 1);

    for (command, answer) in [
        ("recall lobby", "error: usage: recall ROOM ID\n".to_string()),
        ("recall", "error: usage: recall ROOM ID\n".to_string()),
        (
            "recall lobby x-1",
            "error: x-1: not a line id\n".to_string(),
        ),
        (
            "recall lobby 1-2.",
            "error: 1-2.: not a line id\n".to_string(),
        ),
        (
            &format!("recall lobby {never}"),
            format!("error: lobby has no line {never}\n"),
        ),
        (
            &format!("recall lobby {other_life}"),
            format!("error: lobby has no line {other_life}\n"),
        ),
        (
            &format!("recall nowhere {id}"),
            format!("error: nowhere has no line {id}\n"),
        ),
        (
            &format!("recall bad/room {id}"),
            "error: a room is 1-32 letters, digits, _ - .\n".to_string(),
        ),
    ] {
        assert_eq!(admin_command(&admin, command), answer, "{command}");
    }
    for (body, status, error) in [
        (
            json!({"room": "lobby", "id": "nope"}),
            400,
            "nope: not a line id",
        ),
        (
            json!({"room": "lobby", "id": never}),
            404,
            &*format!("lobby has no line {never}"),
        ),
        (
            json!({"room": "a b", "id": id}),
            400,
            "a room is 1-32 letters, digits, _ - .",
        ),
    ] {
        let reply = call(&api, "POST", "/api/recall", Some(&body.to_string()));
        assert_eq!(reply.expect(status), json!({ "error": error }), "{body}");
    }
    let reply = call(&api, "POST", "/api/recall", Some(r#"{"room":"lobby"}"#));
    assert_eq!(reply.status, 400);
    assert_eq!(call(&api, "GET", "/api/recall", None).status, 405);

    for (line, answer) in [
        ("/recall", "relayd: usage: /recall ID".to_string()),
        (
            &*format!("/recall {id} more"),
            "relayd: usage: /recall ID".to_string(),
        ),
        ("/recall 12", "relayd: 12: not a line id".to_string()),
        (
            &*format!("/recall {never}"),
            format!("relayd: lobby has no line {never}"),
        ),
    ] {
        alice.send(format!("{line}\n").as_bytes());
        alice.expect(format!("{answer}\n").as_bytes());
    }
    // Only a moderator of the room.
    bob.send(format!("/recall {id}\n").as_bytes());
    bob.expect(b"relayd: you are not a moderator here\n");
    // None of it took the line back.
    assert_eq!(history(&admin, "lobby"), [(id, "<bob> hello".to_string())]);
}

/// A chat daemon with `--history 5 --history-age AGE` and a control socket, and a client
/// named carol in its lobby.
fn aged(age: &str) -> (Daemon, PathBuf, Client) {
    let admin = temp_path("recall-age");
    let args = ["--chat", "--history", "5", "--history-age", age, "--admin"];
    let d = Daemon::spawn(&[&args[..], &[admin.to_str().unwrap()]].concat());
    let mut carol = entering(&d, &[]);
    carol.send(b"/nick carol\n");
    carol.expect(b"* you are now carol\n");
    (d, admin, carol)
}

#[test]
fn a_line_older_than_the_history_age_is_not_replayed() {
    let (d, admin, mut carol) = aged("3s");
    carol.send(b"old\n");
    // Young, it is replayed.
    let c = entering(&d, &["<carol> old"]);
    drop(c);
    eventually_within("the line to age out", Duration::from_secs(10), || {
        history(&admin, "lobby").is_empty()
    });
    let mut late = entering(&d, &[]);
    carol.send(b"new\n");
    late.expect(b"<carol> new\n");
}

#[test]
fn a_room_nobody_is_in_keeps_its_history_and_its_ids() {
    let (_d, admin, mut carol) = aged("4s");
    carol.send(b"/join side\n");
    carol.expect(b"* you are now in side (1 online)\n");
    carol.send(b"kept\n/join lobby\n");
    carol.expect(b"* you are now in lobby (1 online)\n");
    let id = id_of(&admin, "side", "<carol> kept");
    // Not listed as a room (nobody is in it), but still there.
    assert_eq!(admin_command(&admin, "rooms"), "lobby 1\n");
    carol.send(b"/join side\n");
    carol.expect(b"* you are now in side (1 online)\n");
    carol.expect(b"<carol> kept\n");
    carol.send(b"more\n/join lobby\n");
    carol.expect(b"* you are now in lobby (1 online)\n");
    // The same life of the room: its numbering goes on.
    let (life, n) = id.split_once('-').unwrap();
    let next = format!("{life}-{}", n.parse::<u64>().unwrap() + 1);
    assert_eq!(id_of(&admin, "side", "<carol> more"), next);
    // Once its lines have aged out, it goes: a room of that name is a new one.
    eventually_within("the room to empty", Duration::from_secs(15), || {
        history(&admin, "side").is_empty()
    });
    carol.send(b"/join side\nagain\n");
    carol.expect(b"* you are now in side (1 online)\n");
    eventually_within("the line to be kept", Duration::from_secs(10), || {
        !history(&admin, "side").is_empty()
    });
    let renewed = id_of(&admin, "side", "<carol> again");
    assert!(renewed.ends_with("-1"), "{renewed}");
    assert_ne!(renewed.split_once('-').unwrap().0, life);
}

/// Empty rooms are kept at most 256 at once, the longest empty going first: a client going
/// from new room to new room cannot grow the daemon's memory without bound.
#[test]
fn at_most_256_empty_rooms_are_kept() {
    let admin = temp_path("recall-bound");
    let d = Daemon::spawn(&["--chat", "--admin", admin.to_str().unwrap()]);
    let mut c = entering(&d, &[]);
    let mut batch = String::new();
    for i in 0..=256 {
        batch.push_str(&format!("/join r{i}\nline {i}\n"));
    }
    batch.push_str("/join lobby\n");
    c.send(batch.as_bytes());
    for i in 0..=256 {
        c.expect(format!("* you are now in r{i} (1 online)\n").as_bytes());
    }
    c.expect(b"* you are now in lobby (1 online)\n");
    // r0 went when r256 emptied; r1..r256 are kept.
    assert_eq!(admin_command(&admin, "history r0"), "");
    for room in ["r1", "r256"] {
        let kept = history(&admin, room);
        assert_eq!(kept.len(), 1, "{room}");
        assert_eq!(kept[0].1, format!("<guest1> line {}", &room[1..]));
    }
    assert_eq!(admin_command(&admin, "rooms"), "lobby 1\n");
}

#[test]
fn a_bad_history_age_stops_the_start() {
    for (age, error) in [
        ("5", "5: not a duration (0, 30s, 10m, 2h)"),
        ("1d", "1d: not a duration (0, 30s, 10m, 2h)"),
        ("s", "s: not a duration (0, 30s, 10m, 2h)"),
        ("+5s", "+5s: not a duration (0, 30s, 10m, 2h)"),
        ("25h", "25h: at most 24h"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_relayd"))
            .args(["--bind", "127.0.0.1:0", "--history-age", age])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{age}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("relayd: invalid value '{age}' for '--history-age <DURATION>': {error}\n")
        );
    }
}

/// A room's JSON clients get `recall` (its moderators' own `recall` message included), a
/// plain WebSocket client and a TCP client nothing.
#[test]
fn json_clients_get_the_recall_and_no_one_else_does() {
    let r = Browsers::spawn(&["--chat"]);
    let mut nc = entering(&r.d, &[]);
    let mut plain = r.ws();
    assert!(ws_text(&mut plain).starts_with("* welcome to relayd, you are guest2"));
    nc.expect(b"* guest2 joined (2 online)\n");
    let mut j = Json::connect(r.ws, "");
    assert_eq!(j.welcomed(), "guest3");
    nc.expect(b"* guest3 joined (3 online)\n");
    assert_eq!(ws_text(&mut plain), "* guest3 joined (3 online)");
    assert_eq!(r.admin("op guest3 lobby"), "ok\n");

    nc.send(b"zero\none\ntwo\n");
    let seen = j.until(|e| e["text"] == "two");
    let [zero, ids @ ..] =
        ["zero", "one", "two"].map(|l| id_of(&r.admin, "lobby", &format!("<guest1> {l}")));
    // The ids the JSON client was given with the lines.
    let given: Vec<&Value> = seen.iter().map(|e| &e["id"]).collect();
    assert_eq!(given, [&json!(zero), &json!(ids[0]), &json!(ids[1])]);
    assert_eq!(r.admin(&format!("recall lobby {}", ids[0])), "ok\n");
    j.expect(json!({"type": "recall", "room": "lobby", "id": ids[0]}));
    // Its own recall, as a moderator of the room: the event, then the answer.
    j.send(json!({"type": "recall", "id": ids[1]}));
    j.expect(json!({"type": "recall", "room": "lobby", "id": ids[1]}));
    let answer = j.event();
    assert_eq!(
        (&answer["kind"], &answer["text"]),
        (
            &json!("info"),
            &json!(format!("* line {} recalled", ids[1]))
        )
    );
    assert_eq!(
        history(&r.admin, "lobby"),
        [(zero.clone(), "<guest1> zero".into())]
    );

    // The others: each one's next line after the lines is the next line said.
    nc.send(b"three\n");
    for text in [
        "<guest1> zero",
        "<guest1> one",
        "<guest1> two",
        "<guest1> three",
    ] {
        assert_eq!(ws_text(&mut plain), text);
    }
    assert_eq!(j.event()["text"], "three");
    // The TCP client wrote the lines and gets none back: its next line is a new arrival's.
    // That one recovers from `zero`: not the recalled lines, and they are not missed.
    let mut late = Json::connect(r.ws, &format!("room=lobby&since={zero}"));
    let events = late.until(|e| e["type"] == "resumed");
    let lines: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "line")
        .map(|e| &e["text"])
        .collect();
    assert_eq!(lines, [&json!("three")]);
    assert_eq!(
        events.last(),
        Some(&json!({"type": "resumed", "room": "lobby", "recovered": true, "missed": 0}))
    );
    nc.expect(b"* guest4 joined (4 online)\n");
}
