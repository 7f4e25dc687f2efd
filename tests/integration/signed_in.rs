//! Signed tokens in a client's life (issue 20): `/auth TOKEN` and `?token=` on the real
//! binary over real sockets — names fixed by the token, one user on several connections,
//! the `rooms` claim, expiry and refresh, `--require-token`, each refusal's line, tokens of
//! an independent implementation (PyJWT), key rotation by SIGHUP, and no token or key in
//! the log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::common::chat::Client;
use crate::common::cluster::{Node, Redis};
use crate::common::tokens::{OTHER, SECRET, connect, key_file, mint, now, token, until};
use crate::common::ws::ws_text;
use crate::common::{Daemon, admin_command, eventually, http, stat_in, temp_path};

/// A chat daemon checking tokens with [`SECRET`], verbose (its log is searched for secrets),
/// with a control socket; `more` options.
fn chat_daemon(more: &[&str]) -> (Daemon, PathBuf) {
    let keys = key_file("signed-in-key", &format!("{SECRET}\n"));
    let admin = temp_path("signed-in-admin");
    let mut args = vec![
        "--chat",
        "-v",
        "--token-key",
        keys.to_str().unwrap(),
        "--admin",
        admin.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    let d = Daemon::spawn_env(&args, &[("RUST_LOG", "debug")]);
    eventually("the admin socket", || {
        std::os::unix::net::UnixStream::connect(&admin).is_ok()
    });
    (d, admin)
}

/// A guest that read its welcome.
fn guest(d: &Daemon) -> Client {
    let mut c = connect(d.addrs[0]);
    until(&mut c, "* welcome to relayd, you are guest");
    c
}

/// A guest that read its welcome and signed in with `token`: the answer it got.
fn sign_in(d: &Daemon, token: &str) -> (Client, String) {
    let mut c = guest(d);
    c.send(&format!("/auth {token}\n"));
    let answer = c.line();
    (c, answer)
}

/// Sends `/who` and returns the answer (`* N in ROOM: ...`), past any notice before it.
fn who(c: &mut Client) -> String {
    c.send("/who\n");
    loop {
        let l = c.line();
        if l.starts_with("* ") && l[2..].starts_with(|c: char| c.is_ascii_digit()) {
            return l;
        }
    }
}

/// Stops `d` and asserts that no line of its whole log holds any of `secrets` (the whole
/// log: what was read so far may lag behind what the daemon wrote).
fn assert_log_clean(mut d: Daemon, secrets: &[&str]) {
    let (_, log) = d.stop_and_read_log();
    for line in log {
        for s in secrets {
            assert!(!line.contains(s), "a secret in the log: {line}");
        }
    }
}

/// Proves: a token holder's name is its token's (`/nick` refused with the line), a
/// guest cannot take it (in any case), and a guest that held the name first loses it to the
/// token holder, as the decision 3 words it, its room told.
#[test]
fn a_token_fixes_the_name_and_guests_cannot_take_it() {
    let (d, admin) = chat_daemon(&[]);
    let mut carol_guest = guest(&d);
    carol_guest.send("/nick carol\n");
    carol_guest.expect("* you are now carol\n");
    let alice_token = token("u-1", "alice");
    let (mut alice, answer) = sign_in(&d, &alice_token);
    assert_eq!(answer, "* you are now alice\n");
    let alice_id = until(&mut carol_guest, "* guest")
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(
        until(&mut carol_guest, "* "),
        format!("* {alice_id} is now alice\n")
    );

    alice.send("/nick bob\n");
    alice.expect("relayd: your name comes from your token\n");
    for name in ["alice", "ALICE"] {
        carol_guest.send(&format!("/nick {name}\n"));
        carol_guest.expect(&format!("relayd: name {name} is taken\n"));
    }

    // A token for carol: the guest who picked the name is a guest again.
    let carol_token = token("u-3", "carol");
    let (mut carol, answer) = sign_in(&d, &carol_token);
    // Being in the lobby, it hears of the guest's new name first.
    assert!(answer.starts_with("* carol is now guest"), "{answer}");
    carol.expect("* you are now carol\n");
    let line = until(&mut carol_guest, "relayd: ");
    assert!(
        line.starts_with("relayd: the name carol belongs to a signed-in user; you are now guest"),
        "{line}"
    );
    let guest_name = line.trim_end().rsplit(' ').next().unwrap().to_string();
    until(&mut alice, &format!("* carol is now {guest_name}"));
    // Its own thread follows: its lines carry its guest name.
    carol_guest.send("hello\n");
    until(&mut alice, &format!("<{guest_name}> hello"));
    assert_eq!(
        who(&mut carol),
        format!("* 3 in lobby: {guest_name}, alice, carol\n")
    );

    // Another user (another sub) with the same name: closed, alice keeps it.
    let (mut other, answer) = sign_in(&d, &token("u-9", "Alice"));
    assert_eq!(answer, "relayd: the name Alice is another user's\n");
    other.expect_eof();
    assert_eq!(
        who(&mut alice),
        format!("* 3 in lobby: {guest_name}, alice, carol\n")
    );

    let clients = admin_command(&admin, "clients");
    let users: Vec<&str> = clients
        .lines()
        // The user column, before the last one (dropped).
        .map(|l| l.rsplit(' ').nth(1).unwrap())
        .collect();
    assert_eq!(users, ["-", "u-1", "u-3"], "{clients}");
    let stats = admin_command(&admin, "stats");
    assert_eq!(stat_in(&stats, "tokens_accepted"), 2);
    assert_log_clean(d, &[&alice_token, &carol_token, SECRET]);
}

/// Proves: the `rooms` claim is the rooms the user may join (the lobby is everyone's), and
/// a token without one may join any.
#[test]
fn the_rooms_claim_is_enforced() {
    let (d, _admin) = chat_daemon(&[]);
    let dev_only = mint(
        &json!({"sub": "u-1", "name": "alice", "rooms": ["dev"], "exp": now() + 3600}),
        SECRET,
        None,
    );
    let (mut alice, _) = sign_in(&d, &dev_only);
    alice.send("/join games\n");
    alice.expect("relayd: your token does not let you join games\n");
    alice.send("/join dev\n");
    alice.expect("* you are now in dev (1 online)\n");
    alice.send("/join lobby\n");
    until(&mut alice, "* you are now in lobby");
    let (mut bob, _) = sign_in(&d, &token("u-2", "bob"));
    bob.send("/join games\n");
    bob.expect("* you are now in games (1 online)\n");
}

/// Proves: one user on two connections is one name — the room sees it arrive once, `/who`
/// lists it once, the online count counts it once, `/msg` reaches both — and the operator's
/// `kick NAME` closes both, the room told once.
#[test]
fn one_user_on_two_connections_is_one_name_and_one_kick_closes_both() {
    let (d, admin) = chat_daemon(&["--require-token"]);
    let t = token("u-1", "alice");
    let mut bob = connect(d.addrs[0]);
    bob.send(&format!("/auth {}\n", token("u-2", "bob")));
    until(&mut bob, "* welcome to relayd, you are bob (1 online)");
    let mut tab1 = connect(d.addrs[0]);
    tab1.send(&format!("/auth {t}\n"));
    tab1.expect("* welcome to relayd, you are alice (2 online) — /help for commands\n");
    bob.expect("* alice joined (2 online)\n");
    let mut tab2 = connect(d.addrs[0]);
    tab2.send(&format!("/auth {t}\n"));
    tab2.expect("* welcome to relayd, you are alice (2 online) — /help for commands\n");
    // No second `alice joined`: the next line bob gets is his /who's answer.
    assert_eq!(who(&mut bob), "* 2 in lobby: bob, alice\n");
    tab2.send("/rooms\n");
    tab2.expect("* rooms: lobby (2)\n");
    bob.send("/msg alice psst\n");
    tab1.expect("[private] <bob> psst\n");
    tab2.expect("[private] <bob> psst\n");
    tab1.send("from one tab\n");
    bob.expect("<alice> from one tab\n");
    tab2.expect("<alice> from one tab\n");

    assert_eq!(admin_command(&admin, "kick alice enough"), "ok\n");
    for tab in [&mut tab1, &mut tab2] {
        tab.expect("relayd: kicked by operator: enough\n");
        tab.expect_eof();
    }
    bob.expect("* alice left (kicked by operator: enough) (1 online)\n");
    assert_eq!(who(&mut bob), "* 1 in lobby: bob\n");
}

/// Proves: a client whose token expires is told `relayd: token expired` and closed within a
/// second of `exp`; a fresh `/auth` for the same user before `exp` keeps it on; one for
/// another user is refused and changes nothing.
#[test]
fn expiry_closes_within_a_second_and_a_refresh_keeps_the_client() {
    let (d, _admin) = chat_daemon(&["--idle-timeout", "60"]);
    let exp = now() + 2;
    let short = mint(
        &json!({"sub": "u-1", "name": "alice", "exp": exp}),
        SECRET,
        None,
    );
    let (mut expiring, _) = sign_in(&d, &short);
    let (mut refreshed, _) = sign_in(
        &d,
        &mint(
            &json!({"sub": "u-2", "name": "bob", "exp": exp}),
            SECRET,
            None,
        ),
    );
    refreshed.send(&format!("/auth {}\n", token("u-3", "carol")));
    refreshed.expect("relayd: a token is for one user; reconnect to change user\n");
    refreshed.send(&format!("/auth {}\n", token("u-2", "bob")));

    until(&mut expiring, "relayd: token expired");
    let closed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    expiring.expect_eof();
    let exp = Duration::from_secs(exp);
    assert!(
        closed >= exp && closed < exp + Duration::from_secs(1),
        "closed at {closed:?}, exp {exp:?}"
    );
    // Past the first token's exp, the refreshed client is still on, and still bob.
    thread::sleep((exp + Duration::from_secs(1)).saturating_sub(closed));
    assert_eq!(who(&mut refreshed), "* 1 in lobby: bob\n");
}

/// Proves: each kind of bad token gets its one line, then the connection closes; each is
/// counted in `stats` and in `/metrics` by reason; a token with a guest's name is
/// malformed; without keys, `/auth` is an unknown thing in chat mode.
#[test]
fn each_bad_token_gets_its_line_and_is_counted() {
    let metrics = Daemon::free_addr();
    let (d, admin) = chat_daemon(&["--token-audience", "relayd", "--metrics", &metrics]);
    let aud = |claims: serde_json::Value| {
        let mut c = claims;
        c["aud"] = json!("relayd");
        c
    };
    let cases = [
        (
            mint(&aud(json!({"sub": "u", "exp": now() - 10})), SECRET, None),
            "expired",
        ),
        (
            mint(
                &aud(json!({"sub": "u", "nbf": now() + 600, "exp": now() + 900})),
                SECRET,
                None,
            ),
            "not yet valid",
        ),
        (
            mint(&aud(json!({"sub": "u", "exp": now() + 60})), OTHER, None),
            "bad signature",
        ),
        (
            mint(
                &json!({"sub": "u", "aud": "other", "exp": now() + 60}),
                SECRET,
                None,
            ),
            "wrong audience",
        ),
        ("not-a-token".to_string(), "malformed"),
        (
            mint(
                &aud(json!({"sub": "guest12", "exp": now() + 60})),
                SECRET,
                None,
            ),
            "malformed",
        ),
    ];
    for (token, why) in &cases {
        let mut c = guest(&d);
        c.send(&format!("/AUTH {token}\n"));
        c.expect(&format!("relayd: bad token: {why}\n"));
        c.expect_eof();
    }
    let stats = admin_command(&admin, "stats");
    assert_eq!(stat_in(&stats, "tokens_refused"), 6);
    assert_eq!(stat_in(&stats, "tokens_accepted"), 0);
    let (_, body) = http(metrics.parse().unwrap(), "GET", "/metrics");
    for (reason, n) in [
        ("expired", 1),
        ("not_yet_valid", 1),
        ("bad_signature", 1),
        ("wrong_audience", 1),
        ("malformed", 2),
    ] {
        let line = format!("relayd_tokens_refused_total{{reason=\"{reason}\"}} {n}\n");
        assert!(body.contains(&line), "{line} not in {body}");
    }
    let tokens: Vec<&str> = cases.iter().map(|(t, _)| t.as_str()).collect();
    assert_log_clean(d, &[&tokens[..], &[SECRET, OTHER]].concat());

    let plain = Daemon::spawn(&["--chat"]);
    let mut c = guest(&plain);
    c.send("/auth x\n");
    c.expect("relayd: tokens are not enabled here\n");
}

/// Proves: with `--require-token`, a first line that is not `/auth TOKEN` and silence past
/// the auth deadline (10 s, as for `--secret-file`) both get `relayd: a token is required`
/// and a close; with `--secret-file`, the secret comes first, then the token.
#[test]
fn require_token_closes_who_does_not_present_one() {
    let secret = key_file("signed-in-secret", "open sesame\n");
    let (d, _admin) = chat_daemon(&["--require-token", "--secret-file", secret.to_str().unwrap()]);
    let mut c = connect(d.addrs[0]);
    c.send("open sesame\nhello\n");
    c.expect("relayd: a token is required\n");
    c.expect_eof();

    let started = Instant::now();
    let mut c = TcpStream::connect(d.addrs[0]).unwrap();
    // A timeout longer than the deadline, 10 s.
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.write_all(b"open sesame\n").unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"relayd: a token is required\n");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(9_500) && waited < Duration::from_secs(11),
        "{waited:?}"
    );

    let mut c = connect(d.addrs[0]);
    c.send(&format!("open sesame\n/auth {}\n", token("u-1", "alice")));
    c.expect("* welcome to relayd, you are alice (1 online) — /help for commands\n");
}

/// Proves: in raw mode, an `/auth` line is never relayed (the first signs in, a later one
/// refreshes); other lines are, byte for byte.
#[test]
fn raw_mode_never_relays_auth_lines() {
    let keys = key_file("signed-in-raw-key", &format!("{SECRET}\n"));
    let d = Daemon::spawn(&["--token-key", keys.to_str().unwrap()]);
    let mut a = d.connect();
    let mut b = d.connect();
    let t = token("u-1", "alice");
    b.send(format!("one\n/auth {t}\ntwo\n/Auth {t}\nthree\n").as_bytes());
    a.expect(b"one\n");
    a.expect(b"two\n");
    a.expect(b"three\n");
}

/// The tokens tests/keys/pyjwt-mint.py printed once (PyJWT 2): the HS256 one with every
/// claim, and an EdDSA one with only `sub` and `exp`.
const PYJWT_HS256: &str = "eyJhbGciOiJIUzI1NiIsImtpZCI6IjIwMjYtMDEiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ1LTQyIiwibmFtZSI6ImFsaWNlIiwicm9vbXMiOlsibG9iYnkiLCJkZXYiXSwicm9sZSI6Im1vZCIsImV4cCI6NDEwMjQ0NDgwMCwibmJmIjoxNzAwMDAwMDAwLCJpYXQiOjE3MDAwMDAwMDAsImF1ZCI6InJlbGF5ZCIsImlzcyI6Imh0dHBzOi8vYXBwLmV4YW1wbGUifQ.dHnB1F5sv-FYiQfVgcNkiQ6HDwqO3j8RB5vP0jXxJJU";
const PYJWT_EDDSA: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1LTciLCJleHAiOjQxMDI0NDQ4MDB9.0u0OsVIYa1W8tAACrXpQSfMKrWatqbO9gccJQFShPJiHqm28jLOvjX_j7L06mS1-QBLJKszZxln3byMOBbRQDQ";

/// Proves: tokens minted by an independent implementation (PyJWT) sign a client in over a
/// real connection, their claims (name, rooms, role) taken: the HS256 one's `rooms` lets
/// alice into dev and not games; the EdDSA one's user is named by its `sub`.
#[test]
fn tokens_minted_by_pyjwt_are_accepted_over_a_connection() {
    let keys = key_file(
        "signed-in-pyjwt",
        "kid: 2026-01\ntest-only-hs256-secret-0123456789abcdef\n",
    );
    let public = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/ed.pub");
    let admin = temp_path("signed-in-pyjwt-admin");
    let d = Daemon::spawn(&[
        "--chat",
        "--token-key",
        keys.to_str().unwrap(),
        "--token-public-key",
        public.to_str().unwrap(),
        "--token-audience",
        "relayd",
        "--token-issuer",
        "https://app.example",
        "--admin",
        admin.to_str().unwrap(),
    ]);
    let (mut alice, answer) = sign_in(&d, PYJWT_HS256);
    assert_eq!(answer, "* you are now alice\n");
    alice.send("/join games\n");
    alice.expect("relayd: your token does not let you join games\n");
    alice.send("/join dev\n");
    alice.expect("* you are now in dev (1 online)\n");
    let clients = admin_command(&admin, "clients");
    assert!(
        clients.contains(" alice dev ") && clients.ends_with(" u-42 0\n"),
        "{clients}"
    );
    // It carries no `aud`: a daemon given --token-audience refuses it, one without takes it.
    let (_u7, answer) = sign_in(&d, PYJWT_EDDSA);
    assert_eq!(answer, "relayd: bad token: wrong audience\n");
    let d = Daemon::spawn(&["--chat", "--token-public-key", public.to_str().unwrap()]);
    let (mut u7, answer) = sign_in(&d, PYJWT_EDDSA);
    assert_eq!(answer, "* you are now u-7\n");
    assert_eq!(who(&mut u7), "* 1 in lobby: u-7\n");
}

/// Proves: rotating keys by SIGHUP — a token signed with a new kid is refused before the
/// reload and accepted after it, and the removed key's token is refused.
#[test]
fn key_rotation_by_sighup() {
    let keys = key_file("signed-in-rotate", &format!("kid: old\n{SECRET}\n"));
    let d = Daemon::spawn(&["--chat", "--token-key", keys.to_str().unwrap()]);
    let claims = json!({"sub": "u-1", "name": "alice", "exp": now() + 3600});
    let old = mint(&claims, SECRET, Some("old"));
    let new = mint(&claims, OTHER, Some("new"));
    let (_c, answer) = sign_in(&d, &new);
    assert_eq!(answer, "relayd: bad token: bad signature\n");

    std::fs::write(&keys, format!("kid: new\n{OTHER}\n")).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("reloaded;");
    let (_c, answer) = sign_in(&d, &new);
    assert_eq!(answer, "* you are now alice\n");
    let (_c, answer) = sign_in(&d, &old);
    assert_eq!(answer, "relayd: bad token: bad signature\n");
}

/// Proves: a browser's `?token=` on the upgrade URL signs it in from its first line (it
/// enters the lobby by its token's name), and a bad one gets its line; neither token, nor
/// the request's query, is in the daemon's debug log.
#[test]
fn a_websocket_client_signs_in_with_its_query() {
    let (d, _admin) = chat_daemon(&["--ws-bind", "127.0.0.1:0"]);
    let addr = d.ws_addr();
    let t = token("u-1", "alice");
    let open = |token: &str| {
        use tungstenite::client::IntoClientRequest;
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!("ws://{addr}/ws?room=x&token={token}")
            .into_client_request()
            .unwrap();
        tungstenite::client(request, sock).unwrap().0
    };
    let mut ws = open(&t);
    assert_eq!(
        ws_text(&mut ws),
        "* welcome to relayd, you are alice (1 online) — /help for commands"
    );
    let mut bad = open("x.y.z");
    assert_eq!(ws_text(&mut bad), "relayd: bad token: malformed");
    assert_log_clean(d, &[&t, "x.y.z", SECRET]);
}

/// A chat client of cluster node `node` that read its welcome as a guest.
fn guest_at(node: &Node) -> Client {
    let mut c = connect(node.daemon.addrs[0]);
    until(&mut c, "* welcome to relayd, you are guest");
    c
}

/// Proves, across two nodes on one Redis: a guest cannot take a signed-in user's name held
/// on the other node; a guest on the other node that picked the name first loses it when
/// the user signs in; one user on both nodes is one name in `/who` and one person in the
/// online count; and the operator's `kick NAME` on one node closes its connections on both.
#[test]
fn across_two_nodes_a_user_is_one_name_and_guests_cannot_take_it() {
    let redis = Redis::start();
    let keys = key_file("signed-in-cluster-key", &format!("{SECRET}\n"));
    let args = [
        "--chat",
        "--token-key",
        keys.to_str().unwrap(),
        "--cluster-ttl",
        "3",
    ];
    let a = Node::start_with(&redis.url(), "a", &args);
    let b = Node::start_with(&redis.url(), "b", &args);
    a.wait_linked();
    b.wait_linked();

    let mut g = guest_at(&b);
    g.send("/nick carol\n");
    g.expect("* you are now carol\n");
    let t = token("u-1", "alice");
    let mut alice_a = connect(a.daemon.addrs[0]);
    alice_a.send(&format!("/auth {t}\n"));
    until(&mut alice_a, "* you are now alice");
    // At once, even before b hears of alice: Redis holds the name for the user.
    g.send("/nick alice\n");
    assert_eq!(until(&mut g, "relayd: "), "relayd: name alice is taken\n");

    // carol signs in on a: b's guest carol is a guest again within a heartbeat.
    let mut carol = connect(a.daemon.addrs[0]);
    carol.send(&format!("/auth {}\n", token("u-3", "carol")));
    until(&mut carol, "* you are now carol");
    let line = until(&mut g, "relayd: ");
    assert_eq!(
        line,
        "relayd: the name carol belongs to a signed-in user; you are now guest1@b\n"
    );

    // alice on b too: one name, one person.
    let mut alice_b = guest_at(&b);
    alice_b.send(&format!("/auth {t}\n"));
    until(&mut alice_b, "* you are now alice");
    eventually("b's /who to list alice once", || {
        who(&mut g) == "* 3 in lobby: guest1@b, alice, carol\n"
    });
    eventually("a's /who to list alice once", || {
        who(&mut carol) == "* 3 in lobby: alice, carol, guest1@b\n"
    });

    assert_eq!(a.admin("kick alice"), "ok\n");
    for c in [&mut alice_a, &mut alice_b] {
        until(c, "relayd: kicked by operator");
        c.expect_eof();
    }
    eventually("b's /who without alice", || {
        who(&mut g) == "* 2 in lobby: guest1@b, carol\n"
    });
}
