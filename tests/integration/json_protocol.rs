//! The `relayd.v1.json` subprotocol against the real binary: its negotiation, every event a
//! JSON client gets (each parsed with serde_json here, its fields asserted exactly), every
//! message it sends, what it is told when a message is wrong, and recovery with `since`.

use serde_json::{Value, json};
use tungstenite::Message;

use crate::common::Client;
use crate::common::json::{Json, PROTOCOL, handshake};
use crate::common::ws::{Browsers, ws_text};

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
    assert_eq!(k.event()["text"], "hello");
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
