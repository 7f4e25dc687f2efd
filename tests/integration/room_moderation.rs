//! Moderators inside a room (issue 21, part 3) on the real binary over real sockets: a
//! moderator by its token's `role: "mod"` and one the operator made (`op`, ctl, the API),
//! each in-band command and what the room and its target see, a non-moderator refused, a
//! room ban refusing `/join` and lifting itself, slow mode measured, `--state-dir` across a
//! restart, and one-line errors.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::api::{call, post};
use crate::common::chat::Client;
use crate::common::cluster::{Node, Redis};
use crate::common::tokens::{SECRET, connect, mint, moderated, now, until as read_until};
use crate::common::{Daemon, admin_command, temp_path};

/// A client named `name` in room `room`, which had `before` others in it: a moderator by its
/// token if `moderator`, else a guest. The others there are told it joined.
fn enter(
    d: &Daemon,
    name: &str,
    moderator: bool,
    room: &str,
    others: &mut [&mut Client],
) -> Client {
    let mut c = connect(d.addrs[0]);
    read_until(&mut c, "* welcome to relayd, you are guest");
    if moderator {
        let claims =
            json!({"sub": format!("u-{name}"), "name": name, "role": "mod", "exp": now() + 3600});
        c.send(&format!("/auth {}\n", mint(&claims, SECRET, None)));
    } else {
        c.send(&format!("/nick {name}\n"));
    }
    c.expect(&format!("* you are now {name}\n"));
    c.send(&format!("/join {room}\n"));
    let online = others.len() + 1;
    c.expect(&format!("* you are now in {room} ({online} online)\n"));
    for other in others.iter_mut() {
        other.expect(&format!("* {name} joined ({online} online)\n"));
    }
    c
}

/// `name` joins `room` again, with `others` there.
fn rejoin(c: &mut Client, name: &str, room: &str, others: &mut [&mut Client]) {
    c.send(&format!("/join {room}\n"));
    let online = others.len() + 1;
    c.expect(&format!("* you are now in {room} ({online} online)\n"));
    for other in others.iter_mut() {
        other.expect(&format!("* {name} joined ({online} online)\n"));
    }
}

/// Asserts each of `clients` gets `line` next.
fn all_get(clients: &mut [&mut Client], line: &str) {
    for c in clients.iter_mut() {
        c.expect(line);
    }
}

/// The `until` TIME in a line `… until TIME: …`.
fn until_of(line: &str) -> String {
    line.split(" until ").nth(1).unwrap()[..20].to_string()
}

fn stat(admin: &Path, key: &str) -> u64 {
    admin_command(admin, "stats")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key}"))
        .parse()
        .unwrap()
}

/// Proves: a moderator by its token (`role: "mod"`) runs `/mute`, `/unmute`, `/kick`,
/// `/ban`, `/unban` and `/slow` in its room; the room (the moderator too) is told each, the
/// target what concerns it; a room mute drops its lines in that room only, a kick and a room
/// ban move it to the lobby, a room ban refuses `/join`; the moderator is exempt from slow
/// mode; the counters count. Before the change each command was `unknown command`.
#[test]
fn a_moderator_by_token_runs_each_command() {
    let (d, admin) = moderated(&[]);
    let mut carol = enter(&d, "carol", true, "dev", &mut []);
    let mut bob = enter(&d, "bob", false, "dev", &mut [&mut carol]);
    let mut dave = enter(&d, "dave", false, "dev", &mut [&mut carol, &mut bob]);

    carol.send("/mute bob 10m spam\n");
    all_get(
        &mut [&mut carol, &mut bob, &mut dave],
        "* bob was muted for 10m by carol: spam\n",
    );
    bob.send("hello\n");
    let told = bob.line();
    assert!(
        told.starts_with("relayd: you are muted in dev until 20"),
        "{told}"
    );
    carol.send("after\n");
    all_get(&mut [&mut bob, &mut dave], "<carol> after\n");
    // Muted in dev only: bob speaks in ops.
    let mut eve = enter(&d, "eve", false, "ops", &mut []);
    rejoin(&mut bob, "bob", "ops", &mut [&mut eve]);
    all_get(
        &mut [&mut carol, &mut dave],
        "* bob left (joined ops) (2 online)\n",
    );
    bob.send("in ops\n");
    eve.expect("<bob> in ops\n");
    rejoin(&mut bob, "bob", "dev", &mut [&mut carol, &mut dave]);
    eve.expect("* bob left (joined dev) (1 online)\n");
    carol.send("/unmute bob\n");
    all_get(
        &mut [&mut carol, &mut bob, &mut dave],
        "* bob was unmuted by carol\n",
    );
    bob.send("hello again\n");
    all_get(&mut [&mut carol, &mut dave], "<bob> hello again\n");

    carol.send("/kick bob flooding\n");
    bob.expect("relayd: you were kicked from dev by carol: flooding\n");
    bob.expect("* you are now in lobby (1 online)\n");
    all_get(
        &mut [&mut carol, &mut dave],
        "* bob was kicked by carol: flooding\n",
    );
    // Its own thread knows where it is: it can come back (a kick is not a ban).
    rejoin(&mut bob, "bob", "dev", &mut [&mut carol, &mut dave]);
    bob.send("back\n");
    all_get(&mut [&mut carol, &mut dave], "<bob> back\n");

    carol.send("/ban bob 1h abuse\n");
    let banned = bob.line();
    let until = until_of(&banned);
    assert_eq!(
        banned,
        format!("relayd: you are banned from dev until {until}: abuse\n")
    );
    bob.expect("* you are now in lobby (1 online)\n");
    all_get(
        &mut [&mut carol, &mut dave],
        "* bob was banned for 1h by carol: abuse\n",
    );
    bob.send("/join dev\n");
    bob.expect(&banned);
    // The operator sees a room's bans among the others, with the room.
    let bans = admin_command(&admin, "bans");
    assert!(
        bans.lines()
            .any(|l| l.starts_with("ban@dev ") && l.ends_with(&format!(" {until} carol abuse"))),
        "{bans}"
    );
    carol.send("/unban bob\n");
    all_get(
        &mut [&mut carol, &mut dave],
        "* bob was unbanned by carol\n",
    );
    rejoin(&mut bob, "bob", "dev", &mut [&mut carol, &mut dave]);

    carol.send("/slow 5\n");
    all_get(
        &mut [&mut carol, &mut bob, &mut dave],
        "* carol set slow mode: one line every 5 s\n",
    );
    bob.send("one\ntwo\nthree\n");
    bob.expect("relayd: slow mode: one line every 5 s in dev\n");
    carol.send("x\ny\n");
    all_get(&mut [&mut carol, &mut dave], "<bob> one\n");
    all_get(&mut [&mut bob, &mut dave], "<carol> x\n");
    all_get(&mut [&mut bob, &mut dave], "<carol> y\n");
    carol.send("/slow 0\n");
    all_get(
        &mut [&mut carol, &mut bob, &mut dave],
        "* carol ended slow mode\n",
    );

    // `/help` lists the moderators' commands, for everyone.
    dave.send("/help\n");
    read_until(&mut dave, "* for a room's moderators, in the room:\n");
    dave.expect("*   /kick NAME [REASON]              move NAME out of the room, to the lobby\n");

    assert_eq!(stat(&admin, "dropped_muted"), 1);
    assert_eq!(stat(&admin, "dropped_slow"), 2);
    assert_eq!(stat(&admin, "refused_banned"), 1);
    // Each action is logged with who did it.
    d.wait_log("carol: muted bob in dev until ");
    d.wait_log("carol: kicked bob out of dev: flooding");
    d.wait_log("carol: banned bob in dev until ");
    d.wait_log("carol: slow mode in dev: 5 s");
}

/// Proves: anyone who is not a moderator gets `relayd: you are not a moderator here` for
/// each command; the operator makes a guest a moderator of one room with `op` (the control
/// socket, `relayd ctl` and `POST /api/op`), and `deop` (`POST /api/deop`) undoes it; it is a
/// moderator in that room only.
#[test]
fn an_operator_makes_a_moderator_of_one_room_and_others_are_refused() {
    let api = Daemon::free_addr();
    let key = crate::common::api::key_file();
    let (d, admin) = moderated(&["--api", &api, "--api-key-file", key.to_str().unwrap()]);
    let mut alice = enter(&d, "alice", false, "dev", &mut []);
    let mut bob = enter(&d, "bob", false, "dev", &mut [&mut alice]);
    for command in [
        "/kick bob",
        "/mute bob 1m",
        "/unmute bob",
        "/ban bob",
        "/unban bob",
        "/slow 2",
        "/slow",
    ] {
        alice.send(&format!("{command}\n"));
        alice.expect("relayd: you are not a moderator here\n");
    }

    assert_eq!(admin_command(&admin, "op alice dev"), "ok\n");
    alice.send("/mute bob\n");
    all_get(&mut [&mut alice, &mut bob], "* bob was muted by alice\n");
    assert_eq!(admin_command(&admin, "deop alice dev"), "ok\n");
    alice.send("/unmute bob\n");
    alice.expect("relayd: you are not a moderator here\n");

    // `relayd ctl`, and the API, do the same.
    let out = Command::new(env!("CARGO_BIN_EXE_relayd"))
        .args([
            "ctl",
            "--admin",
            admin.to_str().unwrap(),
            "op",
            "alice",
            "dev",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "ok\n");
    alice.send("/unmute bob\n");
    all_get(&mut [&mut alice, &mut bob], "* bob was unmuted by alice\n");
    post(&api, "/api/deop", r#"{"user": "alice", "room": "dev"}"#);
    alice.send("/slow 2\n");
    alice.expect("relayd: you are not a moderator here\n");
    post(&api, "/api/op", r#"{"user": "alice", "room": "dev"}"#);
    alice.send("/slow 2\n");
    all_get(
        &mut [&mut alice, &mut bob],
        "* alice set slow mode: one line every 2 s\n",
    );
    let reply = call(
        &api,
        "POST",
        "/api/deop",
        Some(r#"{"user": "bob", "room": "dev"}"#),
    );
    assert_eq!(reply.expect(404)["error"], "bob is not a moderator of dev");
    let reply = call(
        &api,
        "POST",
        "/api/op",
        Some(r#"{"user": "bob", "room": "no room"}"#),
    );
    assert_eq!(reply.expect(400)["error"], "\"no room\" is not a room");

    // In another room it is nobody.
    alice.send("/join ops\n");
    alice.expect("* you are now in ops (1 online)\n");
    bob.expect("* alice left (joined ops) (1 online)\n");
    alice.send("/slow 0\n");
    alice.expect("relayd: you are not a moderator here\n");
    d.wait_log("operator: alice is now a moderator of dev");
    d.wait_log("api: alice is no longer a moderator of dev");
}

/// Proves: a 2 s ban from a room refuses `/join` at once, and lifts itself: the same
/// `/join` works again after 1 to 4 s (its end is rounded up to the second).
#[test]
fn a_two_second_room_ban_lifts_itself() {
    let (d, _admin) = moderated(&[]);
    let mut carol = enter(&d, "carol", true, "dev", &mut []);
    let mut bob = enter(&d, "bob", false, "dev", &mut [&mut carol]);
    carol.send("/ban bob 2s\n");
    let banned_at = Instant::now();
    carol.expect("* bob was banned for 2s by carol\n");
    let told = bob.line();
    let until = until_of(&told);
    assert_eq!(
        told,
        format!("relayd: you are banned from dev until {until}\n")
    );
    bob.expect("* you are now in lobby (1 online)\n");
    loop {
        bob.send("/join dev\n");
        let answer = bob.line();
        if answer == "* you are now in dev (2 online)\n" {
            break;
        }
        assert_eq!(answer, told);
        assert!(banned_at.elapsed() < Duration::from_secs(4), "still banned");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(banned_at.elapsed() >= Duration::from_secs(1));
    carol.expect("* bob joined (2 online)\n");
}

/// Proves (measured): in a `/slow 2` room, a user who sends 10 lines at once gets one
/// through, and, sending on, one per 2 s after (each next one not before 2 s); it is told
/// once per period, not once per line.
#[test]
fn slow_mode_lets_one_line_through_per_period() {
    let (d, admin) = moderated(&[]);
    let mut carol = enter(&d, "carol", true, "dev", &mut []);
    let mut bob = enter(&d, "bob", false, "dev", &mut [&mut carol]);
    carol.send("/slow 2\n");
    all_get(
        &mut [&mut carol, &mut bob],
        "* carol set slow mode: one line every 2 s\n",
    );
    let burst: String = (0..10).map(|i| format!("burst {i}\n")).collect();
    let start = Instant::now();
    bob.send(&burst);
    carol.expect("<bob> burst 0\n");
    bob.expect("relayd: slow mode: one line every 2 s in dev\n");
    // Then bob sends a line every 100 ms; carol gets one per 2 s.
    let stop = Arc::new(AtomicBool::new(false));
    let mut sender = Client::new(bob.stream().try_clone().unwrap());
    let sending = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 100 {
                sender.send(&format!("more {n}\n"));
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut arrivals = vec![Duration::ZERO];
    while arrivals.len() < 3 {
        let line = carol.line();
        assert!(line.starts_with("<bob> more "), "{line}");
        arrivals.push(start.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    sending.join().unwrap();
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(1950), "{arrivals:?}");
        assert!(gap < Duration::from_millis(3000), "{arrivals:?}");
    }
    // Told about once per period (the burst, then each 2 s of sending), not per line.
    let dropped = stat(&admin, "dropped_slow");
    assert!(dropped >= 9 + 30, "{dropped}");
    let mut told = 1;
    carol.send("/slow 0\n");
    loop {
        let line = bob.line();
        if line == "* carol ended slow mode\n" {
            break;
        }
        if line.starts_with("relayd: slow mode") {
            told += 1;
        }
    }
    assert!((2..=4).contains(&told), "told {told} times");
}

/// Proves: with `--state-dir`, a room ban (same expiry), a room mute, a slow mode and an
/// operator-made moderator survive a restart, each under a key of its own in the file.
#[test]
fn room_moderation_survives_a_restart() {
    let dir = temp_path("room-mod-state").join("state");
    let (d, admin) = moderated(&["--state-dir", dir.to_str().unwrap()]);
    let mut carol = enter(&d, "carol", true, "dev", &mut []);
    let mut bob = enter(&d, "bob", false, "dev", &mut [&mut carol]);
    let mut dave = enter(&d, "dave", false, "dev", &mut [&mut carol, &mut bob]);
    assert_eq!(admin_command(&admin, "op alice dev"), "ok\n");
    carol.send("/mute dave 1h\n");
    all_get(
        &mut [&mut carol, &mut bob, &mut dave],
        "* dave was muted for 1h by carol\n",
    );
    carol.send("/slow 3\n");
    all_get(
        &mut [&mut carol, &mut bob, &mut dave],
        "* carol set slow mode: one line every 3 s\n",
    );
    carol.send("/ban bob 1h spam\n");
    let banned = bob.line();
    all_get(
        &mut [&mut carol, &mut dave],
        "* bob was banned for 1h by carol: spam\n",
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(file["version"], 1);
    assert_eq!(file["moderation"], json!([]));
    assert_eq!(file["room_moderation"].as_array().unwrap().len(), 2);
    assert_eq!(file["slow_modes"], json!({"dev": 3}));
    assert_eq!(
        file["moderators"],
        json!([{"room": "dev", "user": "alice"}])
    );
    drop((carol, bob, dave));
    let mut d = d;
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));

    let (d, _admin) = moderated(&["--state-dir", dir.to_str().unwrap()]);
    let mut alice = enter(&d, "alice", false, "dev", &mut []);
    let mut dave = enter(&d, "dave", false, "dev", &mut [&mut alice]);
    let mut erin = enter(&d, "erin", false, "dev", &mut [&mut alice, &mut dave]);
    let mut bob = connect(d.addrs[0]);
    read_until(&mut bob, "* welcome to relayd, you are guest");
    bob.send("/nick bob\n/join dev\n");
    bob.expect("* you are now bob\n");
    bob.expect(&banned);
    dave.send("muted still\n");
    assert!(
        dave.line()
            .starts_with("relayd: you are muted in dev until ")
    );
    erin.send("a\nb\n");
    erin.expect("relayd: slow mode: one line every 3 s in dev\n");
    all_get(&mut [&mut alice, &mut dave], "<erin> a\n");
    alice.send("/slow 0\n");
    all_get(
        &mut [&mut alice, &mut dave, &mut erin],
        "* alice ended slow mode\n",
    );
}

/// Proves: bad input is a one-line error, in-band and at the control socket.
#[test]
fn bad_input_is_a_one_line_error() {
    let (d, admin) = moderated(&[]);
    let mut carol = enter(&d, "carol", true, "dev", &mut []);
    let mut bob = enter(&d, "bob", false, "dev", &mut [&mut carol]);
    for (command, answer) in [
        ("/mute", "relayd: usage: /mute NAME [DURATION] [REASON]"),
        ("/kick", "relayd: usage: /kick NAME [REASON]"),
        ("/unban bob now", "relayd: usage: /unban NAME"),
        (
            "/ban bob 10x",
            "relayd: 10x: not a duration (30s, 10m, 2h, 7d)",
        ),
        (
            "/mute bob 0s",
            "relayd: 0s: a duration is 1s to 365d (none: until lifted)",
        ),
        ("/ban 203.0.113.7", "relayd: \"203.0.113.7\" is not a name"),
        ("/ban 42", "relayd: \"42\" is not a name"),
        ("/mute carol", "relayd: that is you"),
        ("/kick nobody", "relayd: nobody is not in dev"),
        ("/unban bob", "relayd: bob is not banned in dev"),
        ("/unmute bob", "relayd: bob is not muted in dev"),
        ("/slow", "relayd: usage: /slow SECONDS (0: off)"),
        (
            "/slow -1",
            "relayd: -1: not a number of seconds (0 to 3600)",
        ),
        (
            "/slow 2s",
            "relayd: 2s: not a number of seconds (0 to 3600)",
        ),
        (
            "/slow 3601",
            "relayd: 3601: not a number of seconds (0 to 3600)",
        ),
    ] {
        carol.send(&format!("{command}\n"));
        carol.expect(&format!("{answer}\n"));
    }
    for (command, answer) in [
        ("op", "error: usage: op NAME ROOM\n"),
        ("op alice", "error: usage: op NAME ROOM\n"),
        ("op 10.0.0.1 dev", "error: \"10.0.0.1\" is not a user\n"),
        ("op alice no/room", "error: \"no/room\" is not a room\n"),
        ("deop alice dev", "error: alice is not a moderator of dev\n"),
    ] {
        assert_eq!(admin_command(&admin, command), answer, "{command}");
    }
    // Nothing reached bob: its next line is carol's.
    carol.send("done\n");
    bob.expect("<carol> done\n");
}

/// Proves (cluster, `--redis`): a moderator the operator made on node A is one on node B, a
/// slow mode set on B holds on A, and a room ban made on B moves the user out of the room on
/// A and refuses its `/join` there, each within a second; a node started later reads them
/// from Redis.
#[test]
fn room_moderation_is_shared_across_the_cluster() {
    let redis = Redis::start();
    let url = redis.url();
    let (a, b) = Node::chat_pair(&url);
    let guest_in = |node: &Node, name: &str| {
        let mut c = connect(node.daemon.addrs[0]);
        read_until(&mut c, "* welcome to relayd, you are guest");
        c.send(&format!("/nick {name}\n/join dev\n"));
        read_until(&mut c, &format!("* you are now {name}\n"));
        read_until(&mut c, "* you are now in dev (");
        c
    };
    let mut alice = guest_in(&b, "alice");
    let mut bob = guest_in(&a, "bob");
    assert_eq!(a.admin("op alice dev"), "ok\n");
    let made = Instant::now();
    loop {
        alice.send("/slow 2\n");
        let line = loop {
            let line = alice.line();
            if line.starts_with("relayd: ") || line.starts_with("* alice set slow mode") {
                break line;
            }
        };
        if line.starts_with("* alice set slow mode") {
            break;
        }
        assert_eq!(line, "relayd: you are not a moderator here\n");
        assert!(
            made.elapsed() < Duration::from_secs(1),
            "not a moderator on b"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The room on a is told after a put the slow mode in force (both came from b in order):
    // within a second.
    let set = Instant::now();
    read_until(&mut bob, "* alice set slow mode: one line every 2 s\n");
    assert!(
        set.elapsed() < Duration::from_secs(1),
        "{:?}",
        set.elapsed()
    );
    bob.send("x\ny\n");
    bob.expect("relayd: slow mode: one line every 2 s in dev\n");
    let banned = Instant::now();
    alice.send("/ban bob 1h spam\n");
    let told = read_until(&mut bob, "relayd: you are banned");
    assert!(
        banned.elapsed() < Duration::from_secs(1),
        "{:?}",
        banned.elapsed()
    );
    let until = until_of(&told);
    assert_eq!(
        told,
        format!("relayd: you are banned from dev until {until}: spam\n")
    );
    bob.expect("* you are now in lobby (1 online)\n");
    bob.send("/join dev\n");
    bob.expect(&told);
    assert!(redis.ttl("relayd:moderation:ban@dev:bob") > 3500);

    // A node started later reads all three from Redis.
    let c = Node::start_with(&url, "c", &["--chat", "--cluster-ttl", "3"]);
    c.wait_linked();
    c.daemon
        .wait_log("cluster: 3 bans, mutes, slow modes or moderators read from Redis");
    let mut erin = guest_in(&c, "erin");
    erin.send("p\nq\n");
    erin.expect("relayd: slow mode: one line every 2 s in dev\n");
}
