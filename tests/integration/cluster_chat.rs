//! `--redis` in chat mode: rooms, notices, names, `/who`, `/msg`, history and the operator's
//! commands span the nodes of a cluster.
//!
//! Each test starts its own `redis-server` on a free port (stopped by pid when the test ends)
//! and relayd binaries pointed at it. No sleeps as synchronisation: a test waits until a
//! node's `/who` or `/rooms` shows what the others told it before it relies on it.

use std::thread;
use std::time::Duration;

use crate::common::cluster::{Node, Redis};
use crate::common::ws::{ws_connect, ws_text};
use crate::common::{Client, eventually, numbered_lines};

fn line(c: &mut Client) -> String {
    String::from_utf8(c.line()).unwrap()
}

/// Reads lines until one starts with `prefix`, and returns it.
fn until(c: &mut Client, prefix: &str) -> String {
    loop {
        let l = line(c);
        if l.starts_with(prefix) {
            return l;
        }
    }
}

/// Three chat nodes, a, b and c, on one Redis, linked; `more` options for each.
fn cluster(redis: &Redis, ids: &[&str], more: &[&str]) -> Vec<Node> {
    let mut args = vec!["--chat"];
    args.extend_from_slice(more);
    let nodes: Vec<Node> = ids
        .iter()
        .map(|id| Node::start_with(&redis.url(), id, &args))
        .collect();
    for n in &nodes {
        n.wait_linked();
    }
    nodes
}

/// A client of `node` that has read its welcome and taken `name`.
fn named(node: &Node, name: &str) -> Client {
    let mut c = node.connect();
    until(&mut c, "* welcome to relayd, you are guest");
    assert_eq!(nick(&mut c, name), format!("* you are now {name}\n"));
    c
}

/// Sends `/nick NAME`; returns the answer (`* you are now NAME` or `relayd: ...`).
fn nick(c: &mut Client, name: &str) -> String {
    c.send(format!("/nick {name}\n").as_bytes());
    loop {
        let l = line(c);
        if l.starts_with("relayd: ") || l.starts_with("* you are now ") {
            return l;
        }
    }
}

/// Whether a line is `/who`'s answer: `* N in ROOM: ...`.
fn is_who(l: &str) -> bool {
    l.strip_prefix("* ")
        .and_then(|rest| rest.split_once(" in "))
        .is_some_and(|(n, rest)| n.bytes().all(|b| b.is_ascii_digit()) && rest.contains(": "))
}

/// Asks `/who` until the answer is `want` (other nodes' news takes a moment to arrive).
fn wait_who(c: &mut Client, want: &str) {
    eventually(&format!("/who to say {want:?}"), || {
        c.send(b"/who\n");
        loop {
            let l = line(c);
            if is_who(&l) {
                return l == want;
            }
        }
    });
}

/// Proves: in chat mode, join notices with cluster-wide counts, lines, `/me`, `/who`,
/// `/rooms` and `/join` span three nodes; every line reaches every other client in the room
/// exactly once, in order, and none reaches a client in another room.
#[test]
fn rooms_names_and_lines_span_three_nodes() {
    let redis = Redis::start();
    let nodes = cluster(&redis, &["a", "b", "c"], &[]);
    let mut alice = named(&nodes[0], "alice");
    let mut bob = named(&nodes[1], "bob");
    let mut carol = named(&nodes[2], "carol");
    wait_who(&mut alice, "* 3 in lobby: alice, bob, carol\n");
    wait_who(&mut bob, "* 3 in lobby: bob, alice, carol\n");
    wait_who(&mut carol, "* 3 in lobby: carol, alice, bob\n");

    // Exactly once and in each sender's order: the three send 100 lines each at once, and
    // nothing else is said meanwhile, so each reads exactly the other two's 200 next.
    let lines = numbered_lines(100);
    let want: Vec<String> = String::from_utf8(lines.clone())
        .unwrap()
        .split_inclusive('\n')
        .map(str::to_owned)
        .collect();
    for c in [&mut alice, &mut bob, &mut carol] {
        c.send(&lines);
    }
    for (who, c) in [
        ("alice", &mut alice),
        ("bob", &mut bob),
        ("carol", &mut carol),
    ] {
        let mut got: Vec<(String, Vec<String>)> = ["alice", "bob", "carol"]
            .iter()
            .filter(|&&name| name != who)
            .map(|name| (name.to_string(), Vec::new()))
            .collect();
        for _ in 0..200 {
            let l = line(c);
            let (from, text) = l[1..].split_once("> ").expect("a line from someone");
            let (_, lines) = got
                .iter_mut()
                .find(|(name, _)| name == from)
                .unwrap_or_else(|| panic!("{who} got {l:?}"));
            lines.push(text.to_string());
        }
        for (from, lines) in got {
            assert_eq!(lines, want, "{who}: {from}'s lines");
        }
    }
    bob.send(b"/me waves\n");
    assert_eq!(line(&mut alice), "* bob waves\n");
    assert_eq!(line(&mut carol), "* bob waves\n");

    // A fourth client, a guest of c: everyone hears of it, with the cluster's count.
    let mut dave = nodes[2].connect();
    assert_eq!(
        line(&mut dave),
        "* welcome to relayd, you are guest2@c (4 online) — /help for commands\n"
    );
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(line(c), "* guest2@c joined (4 online)\n");
    }

    // Rooms: dave moves to games; once a knows, alice follows and is counted with him.
    dave.send(b"/join games\n");
    assert_eq!(line(&mut dave), "* you are now in games (1 online)\n");
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(line(c), "* guest2@c left (joined games) (3 online)\n");
    }
    eventually("a to know of games", || {
        alice.send(b"/rooms\n");
        until(&mut alice, "* rooms: ") == "* rooms: games (1), lobby (3)\n"
    });
    alice.send(b"/join games\n");
    assert_eq!(line(&mut alice), "* you are now in games (2 online)\n");
    assert_eq!(line(&mut dave), "* alice joined (2 online)\n");
    for c in [&mut bob, &mut carol] {
        assert_eq!(line(c), "* alice left (joined games) (2 online)\n");
    }
    dave.send(b"in games\n");
    assert_eq!(line(&mut alice), "<guest2@c> in games\n");
    carol.send(b"in the lobby\n");
    assert_eq!(line(&mut bob), "<carol> in the lobby\n");
    alice.send(b"back to you\n");
    assert_eq!(line(&mut dave), "<alice> back to you\n");
}

/// Proves: a name is one client's across the cluster (case-insensitively), is free again
/// once its holder leaves, and is held in Redis by the node of the client that holds it.
#[test]
fn names_are_unique_across_nodes() {
    let redis = Redis::start();
    let nodes = cluster(&redis, &["a", "b"], &[]);
    let mut alice = named(&nodes[0], "alice");
    let mut other = nodes[1].connect();
    until(&mut other, "* welcome to relayd, you are guest1@b ");
    other.send(b"/nick ALICE\n");
    assert_eq!(
        until(&mut other, "relayd: "),
        "relayd: name ALICE is taken\n"
    );
    let holder = redis.get("relayd:name:alice").expect("alice's key");
    assert!(holder.starts_with("a\0"), "{holder:?}");

    alice.send(b"/quit\n");
    // Freed by a's publisher, right after it says alice left.
    until(&mut other, "* alice left (quit)");
    eventually("alice to be free", || {
        nick(&mut other, "alice") == "* you are now alice\n"
    });
    let holder = redis.get("relayd:name:alice").expect("alice's key");
    assert!(holder.starts_with("b\0"), "{holder:?}");
}

/// Proves: `/msg` and the operator's `send`, `kick`, `broadcast` and `clients` reach a
/// client on another node.
#[test]
fn msg_and_the_operator_reach_other_nodes() {
    let redis = Redis::start();
    let nodes = cluster(&redis, &["a", "b"], &[]);
    let mut alice = named(&nodes[0], "alice");
    let mut bob = named(&nodes[1], "bob");
    wait_who(&mut alice, "* 2 in lobby: alice, bob\n");

    alice.send(b"/msg bob psst\n");
    // Past the lobby's notices that may still be crossing from node a (alice's arrival).
    assert_eq!(until(&mut bob, "[private] "), "[private] <alice> psst\n");
    alice.send(b"/msg nobody hi\n");
    assert_eq!(line(&mut alice), "relayd: no such user nobody\n");

    let clients = nodes[0].admin("clients");
    assert!(
        clients
            .lines()
            .any(|l| l == "1@b - bob lobby - - - - node:b - -"),
        "{clients}"
    );
    assert_eq!(
        nodes[0].admin("send bob hello"),
        "ok: bob is on node b, which sends it\n"
    );
    assert_eq!(line(&mut bob), "* [server] hello\n");
    assert_eq!(nodes[1].admin("broadcast all hands"), "ok\n");
    assert_eq!(line(&mut alice), "* [server] all hands\n");
    assert_eq!(line(&mut bob), "* [server] all hands\n");

    assert_eq!(
        nodes[0].admin("kick bob spam"),
        "ok: bob is on node b, which kicks it\n"
    );
    assert_eq!(line(&mut bob), "relayd: kicked by operator: spam\n");
    bob.expect_eof();
    assert_eq!(
        line(&mut alice),
        "* bob left (kicked by operator: spam) (1 online)\n"
    );
    nodes[1].daemon.wait_log("kicked by the operator of node a");
}

/// Proves: `--history` is kept in Redis per room: a client who joins a room on another node
/// gets the room's last lines replayed, then the live ones, and no line both ways; while a
/// sender streams into the room and joiners on another node come and go, no joiner gets any
/// line twice or out of order.
#[test]
fn history_reaches_joiners_on_other_nodes_once() {
    let redis = Redis::start();
    let nodes = cluster(&redis, &["a", "b"], &["--history", "5"]);
    let mut alice = named(&nodes[0], "alice");
    alice.send(b"/join games\n");
    until(&mut alice, "* you are now in games");
    alice.send(b"one\ntwo\nthree\n");
    eventually("a to publish alice's lines", || {
        nodes[0].stat("cluster_published") == 3
    });
    let mut dave = named(&nodes[1], "dave");
    dave.send(b"/join games\n");
    until(&mut dave, "* you are now in games");
    for want in ["one", "two", "three"] {
        assert_eq!(line(&mut dave), format!("<alice> {want}\n"));
    }
    alice.send(b"four\n");
    assert_eq!(line(&mut dave), "<alice> four\n");
    dave.send(b"/quit\n");
    dave.expect_eof();

    // Now while lines stream: each joiner on b is the room's only member there, so each one
    // makes b read the room's history from Redis again.
    const N: usize = 1500;
    let mut to_a = alice.reader_mut().get_ref().try_clone().unwrap();
    // Without it, the client's own Nagle holds each small write for relayd's delayed ACK
    // (40 ms) whenever relayd has just sent alice a notice.
    to_a.set_nodelay(true).unwrap();
    let sender = thread::spawn(move || {
        // Paced (load, not synchronisation), so that many joiners come while lines are on
        // their way through Redis.
        for chunk in numbered_lines(N).chunks(64 * 5) {
            std::io::Write::write_all(&mut to_a, chunk).unwrap();
            thread::sleep(Duration::from_millis(1));
        }
        std::io::Write::write_all(&mut to_a, b"end\n").unwrap();
    });
    let mut finished = false;
    for joiner in 0.. {
        if finished {
            break;
        }
        let mut c = nodes[1].connect();
        until(&mut c, "* welcome to relayd");
        c.send(b"/join games\n");
        until(&mut c, "* you are now in games");
        let mut last: Option<u32> = None;
        for _ in 0..20 {
            let l = line(&mut c);
            if l == "<alice> end\n" {
                finished = true;
                break;
            }
            let Some(n) = l.strip_prefix("<alice> ") else {
                continue;
            };
            let Some(Ok(n)) = n.get(..8).map(str::parse::<u32>) else {
                // "four" and the first lines, from the replay.
                continue;
            };
            assert!(
                last.is_none_or(|last| n > last),
                "joiner {joiner}: line {n} after {last:?}"
            );
            last = Some(n);
        }
        assert!(joiner < 1000, "the stream never ended");
    }
    sender.join().unwrap();
}

/// Proves: a node killed with SIGKILL leaves the others' lists within the cluster's ttl,
/// the names its clients held come free, and the other node's clients go on as before.
#[test]
fn a_killed_node_leaves_within_the_ttl() {
    let redis = Redis::start();
    let mut nodes = cluster(&redis, &["a", "b"], &["--cluster-ttl", "2"]);
    let mut alice = named(&nodes[0], "alice");
    let _bob = named(&nodes[1], "bob");
    wait_who(&mut alice, "* 2 in lobby: alice, bob\n");
    let b = nodes.pop().unwrap();
    b.daemon.signal(libc::SIGKILL);
    wait_who(&mut alice, "* 1 in lobby: alice\n");
    nodes[0]
        .daemon
        .wait_log("cluster: node b silent too long, forgetting its 1 clients");
    let mut carol = named(&nodes[0], "carol");
    eventually("bob's name to come free", || {
        nick(&mut carol, "bob") == "* you are now bob\n"
    });
    // The node that lives on relays as before.
    alice.send(b"still here\n");
    assert_eq!(until(&mut carol, "<"), "<alice> still here\n");
}

/// Proves: while Redis is down a name cannot change (nobody could tell whether it is free),
/// and once Redis is back (empty, as after a restart) the node registers its clients' names
/// again.
#[test]
fn names_are_registered_again_after_redis_restarts() {
    let redis = Redis::start_private("cluster-names-restart");
    let nodes = cluster(&redis, &["a"], &[]);
    let mut alice = named(&nodes[0], "alice");
    assert!(redis.get("relayd:name:alice").is_some());
    let at = redis.kill();
    eventually("a to see redis gone", || {
        nodes[0].stat("redis_connected") == 0
    });
    alice.send(b"/nick alicia\n");
    assert_eq!(
        line(&mut alice),
        "relayd: names cannot change while the cluster is unreachable, try again later\n"
    );
    alice.send(b"still here\n");
    let redis = Redis::start_at(at);
    nodes[0].wait_linked();
    eventually("alice's name in Redis again", || {
        redis
            .get("relayd:name:alice")
            .is_some_and(|v| v.starts_with("a\0"))
    });
    alice.send(b"/nick alicia\n");
    assert_eq!(line(&mut alice), "* you are now alicia\n");
    assert!(redis.get("relayd:name:alice").is_none());
}

/// Proves: a node that stops (SIGTERM) takes its clients out of the others' lists at once,
/// not after the ttl (30 s here, longer than the test may wait), and frees their names.
#[test]
fn a_stopped_node_leaves_at_once_and_frees_its_names() {
    let redis = Redis::start();
    let mut nodes = cluster(&redis, &["a", "b"], &[]);
    let mut alice = named(&nodes[0], "alice");
    let _bob = named(&nodes[1], "bob");
    wait_who(&mut alice, "* 2 in lobby: alice, bob\n");
    let mut b = nodes.pop().unwrap();
    b.daemon.signal(libc::SIGTERM);
    assert_eq!(b.daemon.wait_exit(), Some(0));
    assert!(redis.get("relayd:name:bob").is_none());
    wait_who(&mut alice, "* 1 in lobby: alice\n");
}

/// Proves: a name that another node's client holds in Redis when this node renews it (as
/// after an outage longer than the ttl) makes its holder here a guest again, told at once,
/// and the others see the guest name from then on.
#[test]
fn a_name_taken_meanwhile_makes_its_holder_a_guest_again() {
    let redis = Redis::start();
    let nodes = cluster(&redis, &["a"], &["--cluster-ttl", "3"]);
    let mut alice = named(&nodes[0], "alice");
    let mut other = named(&nodes[0], "other");
    until(&mut alice, "* guest2@a is now other");
    // As if client 7 of node b had claimed it while a could not renew it.
    redis.set("relayd:name:alice", b"b\x007");
    assert_eq!(
        line(&mut alice),
        "* your name alice was taken on another node while this one was cut off from the \
         cluster; you are guest1@a now\n"
    );
    nodes[0]
        .daemon
        .wait_log("cluster: name alice of client 1 was taken by another node meanwhile");
    alice.send(b"hi\n");
    assert_eq!(until(&mut other, "<"), "<guest1@a> hi\n");
    other.send(b"/who\n");
    assert_eq!(
        until(&mut other, "* 2 in lobby"),
        "* 2 in lobby: guest1@a, other\n"
    );
}

/// Proves: a browser (WebSocket) on one node and a terminal (TCP) on another share the
/// lobby: each one's lines reach the other, a line per text message for the browser.
#[test]
fn a_browser_and_a_terminal_on_two_nodes_chat() {
    use tungstenite::Message;
    let redis = Redis::start();
    let a = Node::start_with(&redis.url(), "a", &["--chat", "--ws-bind", "127.0.0.1:0"]);
    let b = Node::start_with(&redis.url(), "b", &["--chat"]);
    a.wait_linked();
    b.wait_linked();
    let ws_addr = a.daemon.ws_addr();
    let mut web = ws_connect(ws_addr, None);
    let welcome = ws_text(&mut web);
    assert!(
        welcome.starts_with("* welcome to relayd, you are guest1@a "),
        "{welcome}"
    );
    web.send(Message::text("/nick web")).unwrap();
    let mut term = named(&b, "term");
    wait_who(&mut term, "* 2 in lobby: term, web\n");
    term.send(b"hello browser\n");
    let got = loop {
        let t = ws_text(&mut web);
        if t.starts_with('<') {
            break t;
        }
    };
    assert_eq!(got, "<term> hello browser");
    web.send(Message::text("hello terminal")).unwrap();
    assert_eq!(until(&mut term, "<"), "<web> hello terminal\n");
}

/// Proves (issue 19, smaller): names, rooms and node ids heard on the cluster channel are
/// checked with the rule for local ones: a forged client whose name, room or node holds a
/// newline is dropped with a warning, so `/who`, `/rooms` and the operator's `clients` show
/// no broken line; well-formed names (a guest's too) still show.
#[test]
fn forged_names_on_the_channel_break_no_line() {
    let redis = Redis::start();
    let a = cluster(&redis, &["a"], &[]).pop().unwrap();
    let mut alice = named(&a, "alice");
    // id, name, room, then the user's sub (empty for a guest).
    let client_of = |id: u64, name: &[u8], room: &[u8], user: &[u8]| {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(name);
        m.push(0);
        m.extend_from_slice(room);
        m.push(0);
        m.extend_from_slice(user);
        m.push(0);
        m
    };
    let client = |id: u64, name: &[u8], room: &[u8]| client_of(id, name, room, b"");
    let message = |node: &[u8], kind: u8, payload: &[u8]| {
        let mut m = node.to_vec();
        m.push(0);
        m.push(kind);
        m.extend_from_slice(payload);
        m
    };
    let mut snapshot = b"-".to_vec();
    snapshot.extend(client(2, b"fine", b"lobby"));
    snapshot.extend(client(3, b"eve\r\n5 x", b"lobby"));
    for forged in [
        message(b"x", b'E', &client(1, b"evil\nkick 1", b"lobby")),
        message(
            b"x",
            b'E',
            &client(1, b"mallory", b"lobby\n* 9 in lobby: forged"),
        ),
        message(b"x\nkick 1", b'E', &client(1, b"mallory", b"lobby")),
        message(b"x", b'S', &snapshot),
        // A user's sub is a column of `clients`: no space, no line end.
        message(b"x", b'E', &client_of(1, b"mallory", b"lobby", b"u 1\n5 x")),
    ] {
        redis.publish("relayd:lines", &forged);
    }
    // Read after the forged ones: once these show, those have been read too.
    redis.publish(
        "relayd:lines",
        &message(b"y", b'E', &client(4, b"valid", b"lobby")),
    );
    redis.publish(
        "relayd:lines",
        &message(b"y", b'E', &client(5, b"guest5@y", b"lobby")),
    );
    wait_who(&mut alice, "* 3 in lobby: alice, valid, guest5@y\n");
    for _ in 0..5 {
        a.daemon.wait_log("cluster: dropped a message from node");
    }
    alice.send(b"/rooms\n");
    assert_eq!(until(&mut alice, "* rooms: "), "* rooms: lobby (3)\n");
    let clients = a.admin("clients");
    let lines: Vec<&str> = clients.lines().collect();
    assert_eq!(lines.len(), 3, "{clients}");
    assert!(
        lines.iter().all(|l| l.split(' ').count() == 11),
        "{clients}"
    );
    assert_eq!(lines[1], "4@y - valid lobby - - - - node:y - -");
    assert_eq!(lines[2], "5@y - guest5@y lobby - - - - node:y - -");
}

/// Something a client does, on a thread of its own: what it read, and the client.
type Job = Box<dyn FnOnce() -> (String, Client) + Send>;

/// Runs the jobs at once, each on a thread of its own, and times each: what each read, its
/// client and how long it took, and the times as text for a failure message.
fn timed_at_once(jobs: Vec<Job>) -> (Vec<(Duration, String, Client)>, Vec<String>) {
    let threads: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            thread::spawn(move || {
                let started = std::time::Instant::now();
                let (line, c) = job();
                (started.elapsed(), line, c)
            })
        })
        .collect();
    let done: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let times = done
        .iter()
        .map(|(took, _, _)| format!("{:.2}", took.as_secs_f64()))
        .collect();
    (done, times)
}

/// The next line that starts with one of `prefixes`, or why none came (without failing, so
/// that the test can say when each of its clients got what).
fn next_line(c: &mut Client, prefixes: &[&str]) -> String {
    loop {
        match c.try_line() {
            Ok(l) if l.is_empty() => return "(end of stream)".into(),
            Ok(l) => {
                let l = String::from_utf8(l).unwrap();
                if prefixes.iter().any(|p| l.starts_with(p)) {
                    return l;
                }
            }
            Err(e) => return format!("(no line: {e})"),
        }
    }
}

/// Proves (issue 19, point 3): a frozen Redis (SIGSTOP) costs a client that asks it one
/// bounded pause, never a queue behind other clients, and never the accept loop: eight
/// `/nick` at once are each answered within QUERY_TIMEOUT (1 s) and a little, not one after
/// another; new clients of a node whose lobby was never read from Redis are each welcomed
/// within as much; and once Redis resumes (SIGCONT), names change and lines cross nodes
/// again.
#[test]
fn a_frozen_redis_costs_each_client_one_bounded_pause() {
    use crate::common::cluster::Frozen;

    // QUERY_TIMEOUT, plus scheduling slack on a shared machine.
    const BOUND: Duration = Duration::from_millis(1800);
    let redis = Redis::start_private("cluster-frozen");
    let nodes = cluster(&redis, &["a", "b"], &["--history", "5"]);
    let clients: Vec<Client> = (0..8)
        .map(|_| {
            let mut c = nodes[0].connect();
            until(&mut c, "* welcome to relayd");
            c
        })
        .collect();
    let frozen = Frozen::new(&redis);

    let asking: Vec<Job> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| -> Job {
            Box::new(move || {
                c.send(format!("/nick n{i}\n").as_bytes());
                (next_line(&mut c, &["relayd: ", "* you are"]), c)
            })
        })
        .collect();
    let (answered, times) = timed_at_once(asking);
    for (took, answer, _) in &answered {
        assert_eq!(
            answer,
            "relayd: names cannot change while the cluster is unreachable, try again later\n",
            "answered after {times:?} s"
        );
        assert!(*took < BOUND, "/nick answered after {times:?} s");
    }

    // b has had no client yet: its lobby's history was never read from Redis.
    let addr = nodes[1].daemon.addrs[0];
    let joining: Vec<Job> = (0..4)
        .map(|_| -> Job {
            Box::new(move || {
                let mut c = Client::connect(addr);
                (next_line(&mut c, &[""]), c)
            })
        })
        .collect();
    let (joined, times) = timed_at_once(joining);
    for (took, welcome, _) in &joined {
        assert!(
            welcome.starts_with("* welcome to relayd, you are guest"),
            "{welcome:?} after {times:?} s"
        );
        assert!(*took < BOUND, "welcomed after {times:?} s");
    }

    drop(frozen);
    let mut alice = answered.into_iter().next().unwrap().2;
    eventually("names to change again", || {
        nick(&mut alice, "alice") == "* you are now alice\n"
    });
    let mut bee = joined.into_iter().next().unwrap().2;
    eventually("b's names to change again", || {
        nick(&mut bee, "bee") == "* you are now bee\n"
    });
    nodes[0].wait_linked();
    nodes[1].wait_linked();
    bee.send(b"after the freeze\n");
    assert_eq!(until(&mut alice, "<"), "<bee> after the freeze\n");
}

/// Proves (issue 19, point 2): one client cannot fill Redis with room histories. Looping
/// `/join rN` with a 60 KB line in each room, it enters at most 8 rooms it was not in at once
/// (then one every 30 s) and is told `relayd: too many rooms too fast, wait a moment` for the
/// others, so Redis holds a stream for each room it entered and no more, and every stream
/// expires (within the hour); the heartbeat renews the stream of the room it is in, and not
/// those of the rooms it left.
#[test]
fn one_client_cannot_fill_redis_with_room_histories() {
    let redis = Redis::start();
    let nodes = cluster(&redis, &["a"], &["--history", "50", "--cluster-ttl", "3"]);
    let mut c = nodes[0].connect();
    until(&mut c, "* welcome to relayd");
    let long = format!("{}\n", "x".repeat(60_000));
    let mut entered = Vec::new();
    for n in 0..40 {
        c.send(format!("/join r{n}\n").as_bytes());
        let answer = loop {
            let l = line(&mut c);
            if l.starts_with("* you are now in ") || l.starts_with("relayd: ") {
                break l;
            }
        };
        if answer.starts_with("* you are now in ") {
            entered.push(format!("relayd:history:r{n}"));
        } else {
            assert_eq!(answer, "relayd: too many rooms too fast, wait a moment\n");
        }
        c.send(long.as_bytes());
    }
    eventually("a to publish the 40 lines", || {
        nodes[0].stat("cluster_published") == 40
    });
    // 8 at once, and one more if the test took 30 s.
    assert!(
        (8..=9).contains(&entered.len()),
        "entered {} rooms",
        entered.len()
    );
    entered.sort();
    assert_eq!(redis.keys("relayd:history:*"), entered);
    for key in &entered {
        let ttl = redis.ttl(key);
        assert!((1..=3600).contains(&ttl), "{key} expires in {ttl} s");
    }
    // The room it is in is renewed at each heartbeat (every second here); one it left is
    // not.
    let (here, left) = (entered.last().unwrap(), &entered[0]);
    for key in [here, left] {
        redis.command(&[b"EXPIRE", key.as_bytes(), b"100"]);
    }
    eventually(
        "the heartbeat to renew the stream of the room in use",
        || redis.ttl(here) > 100,
    );
    assert!(redis.ttl(left) <= 100, "a room nobody is in was renewed");
}

/// Proves (issue 19, point 7): a node started with the id of a live node of the cluster
/// exits 1 with one line naming the id, and the live node goes on; a node that stops
/// cleanly frees its id for a restart at once, and one killed (SIGKILL) within the ttl.
#[test]
fn a_second_node_with_the_same_id_refuses_to_start() {
    let redis = Redis::start();
    let url = redis.url();
    let more = ["--chat", "--cluster-ttl", "3"];
    let a = Node::start_with(&url, "a", &more);
    a.wait_linked();
    let mut alice = named(&a, "alice");

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_relayd"));
    cmd.args(["--bind", "127.0.0.1:0", "--redis", &url, "--node-id", "a"])
        .args(more);
    let mut twin = crate::common::Daemon::start(cmd);
    assert_eq!(twin.wait_exit(), Some(1));
    let said = twin.log_until("relayd: ");
    assert_eq!(
        said.last().unwrap(),
        "relayd: --node-id a: another live node of cluster relayd has this id (Redis key \
         relayd:node:a); give each node its own"
    );
    assert!(
        said.iter()
            .all(|l| l.starts_with('[') || l == said.last().unwrap())
    );
    // The node that had the id first goes on.
    assert_eq!(nick(&mut alice, "alicia"), "* you are now alicia\n");
    assert_eq!(a.stat("redis_connected"), 1);

    let mut a = a;
    a.daemon.signal(libc::SIGTERM);
    assert_eq!(a.daemon.wait_exit(), Some(0));
    assert_eq!(redis.get("relayd:node:a"), None);
    let again = Node::start_with(&url, "a", &more);
    again.wait_linked();
    let mut again = again;
    again.daemon.signal(libc::SIGKILL);
    again.daemon.wait_exit();
    assert!(redis.get("relayd:node:a").is_some());
    // Its id is taken for as long as nothing renews it: the ttl.
    let third = Node::start_with(&url, "a", &more);
    third.wait_linked();
    let _carol = named(&third, "carol");
}

/// Proves (issue 19, point 7): a node that finds at a heartbeat that another instance holds
/// its id (as when two were started while Redis was unreachable) logs an error and leaves
/// the cluster: its link goes down, it no longer touches the other's key, and its own
/// clients still relay between themselves.
#[test]
fn a_node_whose_id_is_taken_later_leaves_the_cluster() {
    let redis = Redis::start();
    let mut a = cluster(&redis, &["a"], &["--cluster-ttl", "3"])
        .pop()
        .unwrap();
    let mut alice = named(&a, "alice");
    let mut bob = named(&a, "bob");
    redis.set("relayd:node:a", b"another instance");
    a.daemon.wait_log(
        "cluster: node id a is held by another instance (Redis key relayd:node:a): another \
         node has this id; leaving the cluster",
    );
    eventually("a to leave the cluster", || a.stat("redis_connected") == 0);
    alice.send(b"still here\n");
    assert_eq!(until(&mut bob, "<"), "<alice> still here\n");
    a.daemon.signal(libc::SIGTERM);
    assert_eq!(a.daemon.wait_exit(), Some(0));
    assert_eq!(
        redis.get("relayd:node:a").as_deref(),
        Some("another instance")
    );
}
