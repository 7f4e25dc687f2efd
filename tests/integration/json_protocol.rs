//! The `relayd.v1.json` subprotocol against the real binary: its negotiation, every event a
//! JSON client gets (each parsed with serde_json here, its fields asserted exactly), every
//! message it sends, what it is told when a message is wrong, and recovery with `since`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use tungstenite::Message;

use crate::common::json::{Json, PROTOCOL, handshake};
use crate::common::ws::{Browsers, ws_text};
use crate::common::{Client, eventually};

/// A chat daemon with `--ws-bind` and an admin socket.
fn chat(more: &[&str]) -> Browsers {
    let mut args = vec!["--chat"];
    args.extend_from_slice(more);
    Browsers::spawn(&args)
}

fn json(r: &Browsers, query: &str) -> Json {
    Json::connect(r.ws, query)
}

fn guest(name: &str) -> Value {
    json!({"name": name, "user": null, "role": "guest"})
}

/// A TCP chat client that has read its welcome, named `name`.
fn tcp_named(r: &Browsers, name: &str) -> Client {
    let mut c = r.tcp();
    c.line();
    c.send(format!("/nick {name}\n").as_bytes());
    c.expect(format!("* you are now {name}\n").as_bytes());
    c
}

/// A chat daemon (with `more` options) and a JSON client that has read its welcome and
/// presence.
fn chat_and_json(more: &[&str]) -> (Browsers, Json) {
    let r = chat(more);
    let mut j = json(&r, "");
    j.welcomed();
    (r, j)
}

/// A chat daemon with a TCP client named `nc`, then a JSON client (`guest2`) that has read
/// its welcome and presence, and whose arrival `nc` has read.
fn nc_then_json() -> (Browsers, Client, Json) {
    let r = chat(&[]);
    let mut nc = tcp_named(&r, "nc");
    let mut j = json(&r, "");
    j.welcomed();
    nc.line();
    (r, nc, j)
}

/// Proves: a client offering `relayd.v1.json` (alone or among others) gets it confirmed and
/// JSON events; one offering nothing gets no protocol header and the very text a TCP client
/// gets, byte for byte, as before the subprotocol existed.
#[test]
fn negotiation_with_and_without_the_subprotocol() {
    let r = chat(&[]);
    let mut nc = r.tcp();
    let welcome = String::from_utf8(nc.line()).unwrap();
    let (_, confirmed) = handshake(r.ws, "", Some(&format!("chat, {PROTOCOL}")));
    assert_eq!(confirmed.as_deref(), Some(PROTOCOL));
    drop(nc.line()); // guest2 joined
    nc.line(); // guest2 left

    let (mut plain, confirmed) = handshake(r.ws, "", None);
    assert_eq!(confirmed, None);
    let text = ws_text(&mut plain);
    assert_eq!(
        text,
        welcome
            .replace("guest1", "guest3")
            .replace("(1 online)", "(2 online)")
            .trim_end()
    );
    nc.expect(b"* guest3 joined (2 online)\n");
    nc.send(b"hello\n");
    assert_eq!(ws_text(&mut plain), "<guest1> hello");

    let mut j = json(&r, "");
    let welcome = j.event();
    assert_eq!(
        welcome,
        json!({
            "type": "notice", "kind": "welcome", "room": "lobby",
            "text": "* welcome to relayd, you are guest4 (3 online) — /help for commands",
            "name": "guest4", "online": 3,
        })
    );
    let presence = j.event();
    assert_eq!(
        presence,
        json!({"type": "presence", "room": "lobby",
               "members": [guest("guest1"), guest("guest3"), guest("guest4")]})
    );
    // The plain client hears of the JSON one as it always heard of anyone.
    assert_eq!(ws_text(&mut plain), "* guest4 joined (3 online)");
}

/// Proves: the notices a JSON client gets in a room — someone joining, renaming, leaving;
/// `/who`'s answer; an error — each with its kind and its fields.
#[test]
fn join_nick_leave_info_and_error_notices() {
    let r = chat(&[]);
    let mut j = json(&r, "");
    assert_eq!(j.welcomed(), "guest1");
    let mut nc = r.tcp();
    nc.line();
    j.expect(json!({"type": "notice", "kind": "join", "room": "lobby",
               "text": "* guest2 joined (2 online)", "member": guest("guest2"), "online": 2}));
    nc.send(b"/nick bob\n");
    j.expect(json!({"type": "notice", "kind": "nick", "room": "lobby",
               "text": "* guest2 is now bob", "member": guest("bob"), "old": "guest2"}));
    j.send(json!({"type": "send", "text": "/who"}));
    j.expect(json!({"type": "notice", "kind": "info", "room": null,
               "text": "* 2 in lobby: guest1, bob"}));
    j.send(json!({"type": "send", "text": "/frobnicate"}));
    j.expect(json!({"type": "notice", "kind": "error", "room": null,
               "text": "relayd: unknown command /frobnicate (try /help)"}));
    nc.send(b"/quit bye\n");
    j.expect(json!({"type": "notice", "kind": "leave", "room": "lobby",
               "text": "* bob left (bye) (1 online)", "member": guest("bob"), "online": 1}));
}

/// Proves: every message a JSON client sends does what the line it stands for does: `send`
/// (text, and a command), `nick`, `msg` (the recipient, a JSON client too, gets `private`),
/// `join` (with `presence` for the new room), `auth` (here: tokens are not enabled).
#[test]
fn every_message_type() {
    let (r, mut nc, mut j) = nc_then_json();
    let mut k = json(&r, "");
    k.welcomed();
    j.event(); // k joined
    nc.line();

    j.send(json!({"type": "send", "text": "hello"}));
    nc.expect(b"<guest2> hello\n");
    let line = k.event();
    let (id, time) = (line["id"].as_str().unwrap(), line["time"].as_u64().unwrap());
    assert_eq!(
        line,
        json!({"type": "line", "room": "lobby", "id": id, "from": "guest2", "user": null,
               "text": "hello", "time": time})
    );
    j.send(json!({"type": "nick", "name": "ann"}));
    j.expect(json!({"type": "notice", "kind": "info", "room": null, "text": "* you are now ann"}));
    nc.expect(b"* guest2 is now ann\n");
    k.event(); // the nick notice
    j.send(json!({"type": "msg", "to": "guest3", "text": "psst"}));
    let private = k.event();
    let time = private["time"].as_u64().unwrap();
    assert!(time > 1_700_000_000_000, "{private}");
    assert_eq!(
        private,
        json!({"type": "private", "from": "ann", "user": null, "to": "guest3",
               "text": "psst", "time": time})
    );
    j.send(json!({"type": "auth", "token": "x.y.z"}));
    j.expect(json!({"type": "notice", "kind": "error", "room": null,
               "text": "relayd: tokens are not enabled here"}));
    j.send(json!({"type": "join", "room": "games"}));
    j.expect(json!({"type": "notice", "kind": "info", "room": "games",
               "text": "* you are now in games (1 online)"}));
    j.expect(json!({"type": "presence", "room": "games", "members": [guest("ann")]}));
    k.expect(json!({"type": "notice", "kind": "leave", "room": "lobby",
               "text": "* ann left (joined games) (2 online)", "member": guest("ann"),
               "online": 2}));
    k.send(json!({"type": "join", "room": "games"}));
    k.until(|e| e["type"] == "presence");
    j.expect(json!({"type": "notice", "kind": "join", "room": "games",
               "text": "* guest3 joined (2 online)", "member": guest("guest3"), "online": 2}));
}

/// Proves: bad JSON, an unknown type, a missing field, a field too many, a wrong type each
/// get one `error` notice, and the connection goes on working.
#[test]
fn a_bad_message_is_an_error_notice_and_the_connection_stays() {
    let (r, mut nc, mut j) = nc_then_json();
    for bad in [
        "hello",
        "{\"type\":",
        r#"{"type":"shout","text":"hi"}"#,
        r#"{"type":"send"}"#,
        r#"{"type":"send","text":"hi","room":"x"}"#,
        r#"{"type":"join","room":7}"#,
        r#"{"text":"hi"}"#,
    ] {
        j.send_text(bad);
        let error = j.event();
        assert_eq!(error["type"], "notice", "{bad}: {error}");
        assert_eq!(error["kind"], "error", "{bad}: {error}");
        assert_eq!(error["room"], Value::Null, "{bad}: {error}");
        let text = error["text"].as_str().unwrap();
        assert!(text.starts_with("relayd: bad message: "), "{bad}: {text}");
        assert_eq!(error.as_object().unwrap().len(), 4, "{error}");
    }
    j.send(json!({"type": "send", "text": "still here"}));
    nc.expect(b"<guest2> still here\n");
    // A plain WebSocket client's text is still text, JSON or not.
    let (mut plain, _) = handshake(r.ws, "", None);
    ws_text(&mut plain);
    nc.line();
    plain
        .send(Message::text(r#"{"type":"send","text":"hi"}"#))
        .unwrap();
    nc.expect(b"<guest3> {\"type\":\"send\",\"text\":\"hi\"}\n");
}

/// Proves: what the operator publishes is a `server` notice; a moderator's kick a
/// `moderation` notice, with its action, to the room and, before the move, to the one kicked.
#[test]
fn server_and_moderation_notices() {
    let (r, mut j) = chat_and_json(&[]);
    assert_eq!(r.admin("publish lobby maintenance at noon"), "ok\n");
    j.expect(json!({"type": "notice", "kind": "server", "room": "lobby",
               "text": "* [server] maintenance at noon"}));
    r.admin("broadcast hello all");
    j.expect(json!({"type": "notice", "kind": "server", "room": null,
               "text": "* [server] hello all"}));
    j.send(json!({"type": "join", "room": "games"}));
    j.until(|e| e["type"] == "presence");
    let mut k = json(&r, "");
    k.welcomed();
    k.send(json!({"type": "join", "room": "games"}));
    k.until(|e| e["type"] == "presence");
    j.event(); // k joined
    assert_eq!(r.admin("op guest1 games"), "ok\n");
    j.send(json!({"type": "send", "text": "/kick guest2 spam"}));
    j.expect(
        json!({"type": "notice", "kind": "moderation", "room": "games",
               "text": "* guest2 was kicked by guest1: spam", "action": "kick"}),
    );
    k.expect(
        json!({"type": "notice", "kind": "moderation", "room": "games",
               "text": "relayd: you were kicked from games by guest1: spam", "action": "kick"}),
    );
    assert_eq!(k.event()["text"], "* you are now in lobby (1 online)");
    k.expect(json!({"type": "presence", "room": "lobby", "members": [guest("guest2")]}));
}

/// Proves: the operator's kick is a `moderation` notice before the close frame.
#[test]
fn a_kick_is_a_moderation_notice_before_the_close() {
    let (r, mut j) = chat_and_json(&[]);
    assert_eq!(r.admin("kick guest1 spam"), "ok\n");
    j.expect(json!({"type": "notice", "kind": "moderation", "room": null,
               "text": "relayd: kicked by operator: spam", "action": "kick"}));
    match j.ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// A chat daemon (with `more` options), a TCP client `nc` in room `games` and a JSON client
/// that joined it, each having read the other's arrival.
fn in_games(more: &[&str]) -> (Browsers, Client, Json) {
    let r = chat(more);
    let mut nc = tcp_named(&r, "nc");
    nc.send(b"/join games\n");
    nc.expect(b"* you are now in games (1 online)\n");
    let mut j = json(&r, "");
    j.welcomed();
    j.send(json!({"type": "join", "room": "games"}));
    j.until(|e| e["type"] == "presence");
    nc.expect(b"* guest2 joined (2 online)\n");
    (r, nc, j)
}

/// [`in_games`] with `--history HISTORY`, where `nc` said `zero`: its id, as `j` got it.
fn zero_in_games(history: &str) -> (Browsers, Client, Json, String) {
    // No recovery buffer (--history-age 0): the room keeps exactly --history lines, and goes
    // with its last member.
    let (r, mut nc, mut j) = in_games(&["--history", history, "--history-age", "0"]);
    nc.send(b"zero\n");
    let id = lines(&mut j, 1).pop().unwrap().1;
    (r, nc, j, id)
}

/// The next `n` events, which must be `line`s from `nc` in `games`: their texts and ids.
fn lines(j: &mut Json, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|_| {
            let e = j.event();
            assert_eq!(
                (&e["type"], &e["room"], &e["from"]),
                (&json!("line"), &json!("games"), &json!("nc")),
                "{e}"
            );
            (
                e["text"].as_str().unwrap().to_string(),
                e["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn texts(lines: &[(String, String)]) -> Vec<&str> {
    lines.iter().map(|(t, _)| t.as_str()).collect()
}

/// Waits until `nc`'s line `text` is in the history of `games`: sent, so a join after this
/// finds it either recovered or live.
fn kept(r: &Browsers, text: &str) {
    let line = format!("<nc> {text}\n");
    eventually(&format!("{text:?} in the history"), || {
        r.admin("history games").contains(&line)
    });
}

/// Joins `games` again with `since`, reading up to its presence there.
fn rejoin(j: &mut Json, since: &str) {
    j.send(json!({"type": "join", "room": "games", "since": since}));
    j.until(|e| e["type"] == "presence");
}

/// Leaves `games` for the lobby, reading up to its presence there.
fn leave_games(j: &mut Json, nc: &mut Client) {
    j.send(json!({"type": "join", "room": "lobby"}));
    j.until(|e| e["type"] == "presence");
    nc.expect(b"* guest2 left (joined lobby) (1 online)\n");
}

/// Proves: a JSON client that leaves a room and joins it again with `since` (the last id it
/// saw) gets exactly the lines sent meanwhile, once each, in order, then `resumed`
/// (recovered, 0 missed), then live lines; each line's id is the next of the room's. Fails
/// without recovery: the rejoin would replay `--history` (lines it had already) instead.
#[test]
fn a_rejoin_with_since_gets_exactly_the_lines_missed() {
    let (r, mut nc, mut j) = in_games(&["--history", "100"]);
    nc.send(b"one\ntwo\n");
    let seen = lines(&mut j, 2);
    assert_eq!(texts(&seen), ["one", "two"]);
    let (life, n) = seen[0].1.split_once('-').unwrap();
    assert_eq!(
        seen[1].1,
        format!("{life}-{}", n.parse::<u64>().unwrap() + 1)
    );
    leave_games(&mut j, &mut nc);
    nc.send(b"three\nfour\n");
    nc.send(b"five\n");
    kept(&r, "five");
    rejoin(&mut j, &seen[1].1);
    let missed = lines(&mut j, 3);
    assert_eq!(texts(&missed), ["three", "four", "five"]);
    j.expect(json!({"type": "resumed", "room": "games", "recovered": true, "missed": 0}));
    nc.expect(b"* guest2 joined (2 online)\n");
    nc.send(b"six\n");
    assert_eq!(texts(&lines(&mut j, 1)), ["six"]);
}

/// Proves: the same across a new connection, with `?room=&since=` on the upgrade URL: the
/// client goes through the lobby (welcome, presence), enters the room, gets the lines it
/// missed and `resumed`.
#[test]
fn a_reconnect_with_room_and_since_on_the_url_recovers() {
    let (r, mut nc, mut j) = in_games(&["--history", "100"]);
    nc.send(b"one\n");
    let last = lines(&mut j, 1).pop().unwrap().1;
    j.close();
    nc.expect(b"* guest2 left (closed by client) (1 online)\n");
    nc.send(b"two\nthree\n");
    kept(&r, "three");
    let mut j = json(&r, &format!("room=games&since={last}"));
    j.welcomed();
    assert_eq!(j.event()["text"], "* you are now in games (2 online)");
    let presence = j.event();
    assert_eq!(presence["type"], "presence");
    assert_eq!(texts(&lines(&mut j, 2)), ["two", "three"]);
    j.expect(json!({"type": "resumed", "room": "games", "recovered": true, "missed": 0}));
}

/// Proves: `?since=` without `?room=` recovers the lobby's lines, in chat mode and in raw
/// mode, where the lobby is the only room.
#[test]
fn since_on_the_url_alone_recovers_the_lobby() {
    for chat_mode in [true, false] {
        let r = match chat_mode {
            true => chat(&["--history", "10"]),
            false => Browsers::spawn(&["--history", "10"]),
        };
        let mut nc = r.tcp();
        if chat_mode {
            // Its welcome: it is in the lobby before the browser comes, and so is told of it
            // (the two listeners' clients are admitted by different threads).
            nc.line();
        }
        let mut j = json(&r, "");
        if chat_mode {
            j.welcomed();
            nc.line();
        } else {
            j.event(); // presence
        }
        nc.send(b"one\n");
        let last = j.until(|e| e["type"] == "line").pop().unwrap()["id"].clone();
        j.close();
        r.wait_clients(1);
        nc.send(b"two\n");
        eventually("two in the history", || {
            r.admin("history lobby").contains("two")
        });
        let mut j = json(&r, &format!("since={}", last.as_str().unwrap()));
        let mut events = j.until(|e| e["type"] == "resumed");
        assert_eq!(
            events.pop().unwrap(),
            json!({"type": "resumed", "room": "lobby", "recovered": true, "missed": 0})
        );
        let line = events.pop().unwrap();
        assert_eq!(
            (&line["type"], &line["text"]),
            (&json!("line"), &json!("two"))
        );
        assert!(events.iter().all(|e| e["type"] != "line"), "{events:?}");
    }
}

/// Proves: lines after `since` no longer kept (`--history 3`, 5 sent meanwhile): the client
/// gets the 3 kept and `resumed` says not recovered, 2 missed; a `since` that is the room's
/// newest line: nothing, recovered, 0 missed.
#[test]
fn beyond_the_history_it_says_how_many_it_missed() {
    let (r, mut nc, mut j, last) = zero_in_games("3");
    leave_games(&mut j, &mut nc);
    nc.send(b"1\n2\n3\n4\n5\n");
    kept(&r, "5");
    rejoin(&mut j, &last);
    let kept = lines(&mut j, 3);
    assert_eq!(texts(&kept), ["3", "4", "5"]);
    j.expect(json!({"type": "resumed", "room": "games", "recovered": false, "missed": 2}));
    nc.expect(b"* guest2 joined (2 online)\n");

    leave_games(&mut j, &mut nc);
    rejoin(&mut j, &kept[2].1);
    j.expect(json!({"type": "resumed", "room": "games", "recovered": true, "missed": 0}));
}

/// Proves: a `since` that is not an id, or an id this room never gave, is an error notice,
/// and the client enters as without one (the ordinary `--history` replay, no `resumed`); an
/// id from an earlier life of the room (it emptied and came back) is not recovered, with
/// the count unknown.
#[test]
fn a_since_never_given_is_an_error_and_an_old_life_s_is_unknown() {
    let (r, mut nc, mut j, last) = zero_in_games("1");
    let (life, n) = last.split_once('-').unwrap();
    let never = format!("{life}-{}", n.parse::<u64>().unwrap() + 7);
    for (since, error) in [
        (
            "banana",
            "relayd: since \"banana\" is not a line id, entered without it".to_string(),
        ),
        (
            never.as_str(),
            format!("relayd: since {never}: not a line of games, entered without it"),
        ),
    ] {
        leave_games(&mut j, &mut nc);
        j.send(json!({"type": "join", "room": "games", "since": since}));
        let mut got = j.until(|e| e["type"] == "line");
        assert_eq!(got.pop().unwrap()["text"], "zero");
        assert!(
            got.contains(&json!({"type": "notice", "kind": "error", "room": null, "text": error})),
            "{got:?}"
        );
        nc.expect(b"* guest2 joined (2 online)\n");
    }
    // The room empties and comes back: a new life, whose ids an old one's are told from.
    leave_games(&mut j, &mut nc);
    nc.send(b"/join lobby\n");
    nc.line();
    j.event(); // nc joined the lobby
    nc.send(b"/join games\n");
    nc.line();
    nc.send(b"new\n");
    kept(&r, "new");
    rejoin(&mut j, &last);
    assert_eq!(texts(&lines(&mut j, 1)), ["new"]);
    j.expect(json!({"type": "resumed", "room": "games", "recovered": false, "missed": null}));
}

/// Proves: no gap and no duplicate while lines keep coming: a TCP sender sends 300 numbered
/// lines, paced; the JSON client leaves the room after line 50 and comes back with `since`
/// while the sender goes on. Counting the lines it got before leaving, those recovered and
/// the live ones, it holds 0..299 exactly once each, in order, with consecutive ids.
#[test]
fn no_gap_and_no_duplicate_while_lines_keep_coming() {
    let (r, mut nc, mut j) = in_games(&["--history", "1000"]);
    let sender = std::thread::spawn(move || {
        for i in 0..300 {
            nc.send(format!("{i}\n").as_bytes());
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        nc
    });
    let mut got: Vec<(String, String)> = Vec::new();
    let take = |events: Vec<Value>, got: &mut Vec<(String, String)>| {
        for e in events.into_iter().filter(|e| e["type"] == "line") {
            got.push((
                e["text"].as_str().unwrap().into(),
                e["id"].as_str().unwrap().into(),
            ));
        }
    };
    let events = j.until(|e| e["type"] == "line" && e["text"] == "50");
    take(events, &mut got);
    j.send(json!({"type": "join", "room": "lobby"}));
    // Every line queued before the move comes before the lobby's presence.
    let events = j.until(|e| e["type"] == "presence");
    take(events, &mut got);
    let since = got.last().unwrap().1.clone();
    j.send(json!({"type": "join", "room": "games", "since": since}));
    let events = j.until(|e| e["type"] == "resumed");
    assert_eq!(events.last().unwrap()["recovered"], true);
    take(events, &mut got);
    let events = j.until(|e| e["type"] == "line" && e["text"] == "299");
    take(events, &mut got);
    sender.join().unwrap();
    let want: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    assert_eq!(texts(&got), want);
    let numbers: Vec<u64> = got
        .iter()
        .map(|(_, id)| id.split_once('-').unwrap().1.parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    drop(r);
}

/// Proves: a `/me` line is a `line` event with `"me":true` and the action as its text; in raw
/// mode (no `--chat`) a line is from nobody (`from` and `user` null), and `send` relays.
#[test]
fn me_lines_and_raw_mode_lines() {
    let (_r, mut nc, mut j) = in_games(&[]);
    nc.send(b"/me waves\n");
    let e = j.event();
    assert_eq!(
        e,
        json!({"type": "line", "room": "games", "id": e["id"], "from": "nc", "user": null,
               "text": "waves", "time": e["time"], "me": true})
    );
    assert!(e["id"].is_string() && e["time"].is_u64(), "{e}");

    let raw = Browsers::spawn(&[]);
    let mut nc = raw.tcp();
    // Registered (as guest1) before the browser comes, whose presence lists it.
    raw.wait_clients(1);
    let mut j = json(&raw, "");
    j.expect(json!({"type": "presence", "room": "lobby",
                    "members": [guest("guest1"), guest("guest2")]}));
    nc.send(b"hi\n");
    let e = j.event();
    assert_eq!(
        e,
        json!({"type": "line", "room": "lobby", "id": e["id"], "from": null, "user": null,
               "text": "hi", "time": e["time"]})
    );
    assert!(e["id"].is_string() && e["time"].is_u64(), "{e}");
    j.send(json!({"type": "send", "text": "back"}));
    nc.expect(b"back\n");
    j.send(json!({"type": "join", "room": "games"}));
    j.expect(json!({"type": "notice", "kind": "error", "room": null,
                    "text": "relayd: no names or rooms here: send and auth only"}));
}

/// Proves: a live room's busy sign is a `live` notice with the rates it shows.
#[test]
fn a_live_room_s_busy_sign_is_a_live_notice() {
    let (_r, mut nc, mut j) = in_games(&["--live-room", "games", "--live-rate", "1"]);
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let sender = std::thread::spawn(move || {
        // Paced bursts for up to 5 s, far over 1 line/s: the room drops, and says so each second.
        for _ in 0..50 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            nc.send(b"a\nb\nc\n");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    let live = j.until(|e| e["type"] == "notice").pop().unwrap();
    let (shown, sent) = (
        live["shown"].as_u64().unwrap(),
        live["sent"].as_u64().unwrap(),
    );
    assert!(shown < sent, "{live}");
    assert_eq!(
        live,
        json!({"type": "notice", "kind": "live", "room": "games",
               "text": format!("* live: showing {shown} of {sent} lines/s"),
               "shown": shown, "sent": sent})
    );
    done.store(true, Ordering::Relaxed);
    sender.join().unwrap();
}

/// Proves: members' `user` and `role` as presence and notices give them: a token's `mod`, a
/// signed-in `user` (by `?token=`, and by the `auth` message), a guest.
#[test]
fn presence_tells_moderators_users_and_guests_apart() {
    use crate::common::tokens::{SECRET, key_file, mint, now, token};
    let keys = key_file("json-key", &format!("{SECRET}\n"));
    let r = chat(&["--token-key", keys.to_str().unwrap()]);
    let claims = json!({"sub": "u-ann", "name": "ann", "role": "mod", "exp": now() + 3600});
    let mut ann = json(&r, &format!("token={}", mint(&claims, SECRET, None)));
    ann.welcomed();
    let mut g = json(&r, "");
    g.welcomed();
    ann.event(); // guest2 joined
    g.send(json!({"type": "auth", "token": token("u-bob", "bob")}));
    ann.expect(json!({"type": "notice", "kind": "nick", "room": "lobby",
                      "text": "* guest2 is now bob",
                      "member": {"name": "bob", "user": "u-bob", "role": "user"},
                      "old": "guest2"}));
    let mut third = json(&r, "");
    third.event(); // welcome
    third.expect(json!({"type": "presence", "room": "lobby", "members": [
        {"name": "ann", "user": "u-ann", "role": "mod"},
        {"name": "bob", "user": "u-bob", "role": "user"},
        guest("guest3"),
    ]}));
}

/// Proves: a token sent in the `auth` message never reaches the log, even with
/// `RUST_LOG=trace` (tungstenite traces every message it reads: relayd holds it at info) or
/// `-vv`.
#[test]
fn an_auth_message_s_token_never_reaches_the_log() {
    use crate::common::tokens::{SECRET, key_file, token};
    let keys = key_file("json-trace-key", &format!("{SECRET}\n"));
    let admin = crate::common::temp_path("json-trace-admin");
    let d = crate::common::Daemon::spawn_env(
        &[
            "--chat",
            "--ws-bind",
            "127.0.0.1:0",
            "--admin",
            admin.to_str().unwrap(),
            "--token-key",
            keys.to_str().unwrap(),
        ],
        &[("RUST_LOG", "trace")],
    );
    let mut j = Json::connect(d.ws_addr(), "");
    j.welcomed();
    let t = token("u-tracy", "tracy");
    j.send(json!({"type": "auth", "token": t}));
    j.until(|e| e["text"] == "* you are now tracy");
    j.send(json!({"type": "send", "text": "after auth"}));
    j.close();
    drop(j);
    let log = d.log_until("disconnected");
    let signature = t.rsplit('.').next().unwrap();
    assert!(
        log.iter().any(|l| l.contains("signed in as tracy")),
        "{log:?}"
    );
    for line in &log {
        assert!(!line.contains(signature), "the token in the log: {line}");
        assert!(!line.contains(SECRET), "the key in the log: {line}");
    }
}
