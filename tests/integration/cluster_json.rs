//! `relayd.v1.json` in a cluster (`--redis`): a line's id is its entry's id in the room's
//! Redis stream, the same on every node, and JSON clients get a room's lines in the stream's
//! order, so that a client that drops off one node and comes back on another with `since`
//! gets every line it missed, once each, in order.
//!
//! Each test starts its own `redis-server` and relayd binaries; every read is bounded (the
//! clients' read timeout), and the senders are paced, not sped.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::Client;
use crate::common::cluster::{Node, Redis};
use crate::common::json::Json;

/// A node, and where its browsers connect.
struct WebNode {
    node: Node,
    ws: SocketAddr,
}

/// Chat nodes named `ids` on one Redis, each with a WebSocket listener, linked.
fn cluster(redis: &Redis, ids: &[&str]) -> Vec<WebNode> {
    let args = ["--chat", "--ws-bind", "127.0.0.1:0"];
    let nodes: Vec<WebNode> = ids
        .iter()
        .map(|id| {
            let node = Node::start_with(&redis.url(), id, &args);
            let ws = node.daemon.ws_addr();
            WebNode { node, ws }
        })
        .collect();
    for n in &nodes {
        n.node.wait_linked();
    }
    nodes
}

/// A TCP client of `node` named `name`, in `room`, its welcome and its room's read.
fn tcp_in(node: &WebNode, name: &str, room: &str) -> Client {
    let mut c = node.node.connect();
    c.send(format!("/nick {name}\n/join {room}\n").as_bytes());
    let want = format!("* you are now in {room}");
    while !String::from_utf8(c.line()).unwrap().starts_with(&want) {}
    c
}

/// A JSON client of `node` that has entered `room` (with `since`, if given) with a `join`
/// message, its events up to its room's presence read.
fn json_in(node: &WebNode, room: &str, since: Option<&str>) -> Json {
    let mut j = Json::connect(node.ws, "");
    j.welcomed();
    let join = match since {
        Some(id) => json!({"type": "join", "room": room, "since": id}),
        None => json!({"type": "join", "room": room}),
    };
    j.send(join);
    j.until(|e| e["type"] == "presence" && e["room"] == room);
    j
}

/// Sends `lines` (`tag` then the number, then `tag end`) from `c` at about `per_second`,
/// on a thread of its own.
fn send_paced(c: &mut Client, tag: &str, lines: usize, per_second: u64) -> thread::JoinHandle<()> {
    let mut sock: TcpStream = c.reader_mut().get_ref().try_clone().unwrap();
    sock.set_nodelay(true).unwrap();
    let tag = tag.to_string();
    let gap = Duration::from_millis(1000 / per_second);
    thread::spawn(move || {
        for n in 1..=lines {
            sock.write_all(format!("{tag}{n}\n").as_bytes()).unwrap();
            // Load, not synchronisation: lines arrive while clients come and go.
            thread::sleep(gap);
        }
        sock.write_all(format!("{tag} end\n").as_bytes()).unwrap();
    })
}

/// The `line` events' (text, id) up to and including the one saying `end`, and every
/// `resumed` event among them.
fn lines_until(j: &mut Json, end: &str) -> (Vec<(String, String)>, Vec<Value>) {
    let (mut lines, mut resumed) = (Vec::new(), Vec::new());
    loop {
        let e = j.event();
        match e["type"].as_str() {
            Some("line") => {
                let text = e["text"].as_str().unwrap().to_string();
                lines.push((text.clone(), e["id"].as_str().unwrap().to_string()));
                if text == end {
                    return (lines, resumed);
                }
            }
            Some("resumed") => resumed.push(e),
            _ => {}
        }
    }
}

/// Proves (issue 22, recovery in a cluster): a JSON client on node a that stops reading
/// while a TCP client streams at 100 lines/s, and comes back on node b with `since` = the
/// last id it got, gets every line after it exactly once, in order, then `resumed` with
/// `recovered: true`; and each line's id is the same on both nodes.
#[test]
fn a_json_client_resumes_on_the_other_node_exactly() {
    let redis = Redis::start();
    let nodes = cluster(&redis, &["a", "b"]);
    let mut first = json_in(&nodes[0], "games", None);
    // On b from the start: every line's id there, to compare.
    let mut watcher = json_in(&nodes[1], "games", None);
    let mut alice = tcp_in(&nodes[0], "alice", "games");
    let sender = send_paced(&mut alice, "n", 300, 100);
    let mut got = Vec::new();
    while got.len() < 50 {
        let e = first.event();
        if e["type"] == "line" {
            got.push((
                e["text"].as_str().unwrap().to_string(),
                e["id"].as_str().unwrap().to_string(),
            ));
        }
    }
    // Closes as a browser does, and waits for relayd's close.
    first.ws.close(None).unwrap();
    while first.ws.read().is_ok() {}
    let (last_text, last_id) = got.last().unwrap().clone();
    let mut again = json_in(&nodes[1], "games", Some(&last_id));
    let (resumed_lines, resumed) = lines_until(&mut again, "n end");
    sender.join().unwrap();
    let (watched, _) = lines_until(&mut watcher, "n end");

    let texts: Vec<&str> = resumed_lines.iter().map(|(t, _)| t.as_str()).collect();
    let after: usize = last_text.strip_prefix('n').unwrap().parse().unwrap();
    let want: Vec<String> = (after + 1..=300)
        .map(|n| format!("n{n}"))
        .chain(["n end".to_string()])
        .collect();
    assert_eq!(texts, want, "after {last_id} ({last_text})");
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0]["recovered"], true, "{}", resumed[0]);
    assert_eq!(resumed[0]["room"], "games");
    // The same ids on a (what the first client got) and b (the watcher, and the client
    // that came back), for the same lines.
    let on_b: HashMap<&str, &str> = watched
        .iter()
        .map(|(t, id)| (t.as_str(), id.as_str()))
        .collect();
    assert_eq!(on_b.len(), 301);
    for (text, id) in got.iter().chain(&resumed_lines) {
        assert_eq!(on_b.get(text.as_str()), Some(&id.as_str()), "{text}");
    }
}

/// Proves: a JSON client coming back on another node with a `since` older than what the
/// room keeps (1,000 lines: Redis keeps about 1,000 entries) gets what is kept, in order,
/// and `resumed` with `recovered: false` and `missed: null` (stream ids are not dense: how
/// many is not known).
#[test]
fn beyond_what_the_room_keeps_it_is_not_recovered() {
    let redis = Redis::start();
    let nodes = cluster(&redis, &["a", "b"]);
    let mut first = json_in(&nodes[0], "games", None);
    let mut alice = tcp_in(&nodes[0], "alice", "games");
    alice.send(b"n1\n");
    let (got, _) = lines_until(&mut first, "n1");
    first.ws.close(None).unwrap();
    while first.ws.read().is_ok() {}
    send_paced(&mut alice, "n", 1300, 1000).join().unwrap();
    // Nobody is in the room on b: it reads what Redis keeps as the client enters.
    let mut again = json_in(&nodes[1], "games", Some(&got[0].1));
    let (lines, mut resumed) = lines_until(&mut again, "n end");
    // All of it was replayed: `resumed` follows the replay.
    assert_eq!(resumed, Vec::<Value>::new());
    resumed.push(again.until(|e| e["type"] == "resumed").pop().unwrap());
    assert_eq!(resumed[0]["recovered"], false, "{}", resumed[0]);
    assert_eq!(resumed[0]["missed"], Value::Null, "{}", resumed[0]);
    // What Redis kept: the last lines, in order, up to the end (1,000 at least: trimming is
    // approximate; fewer than all 1,301).
    let texts: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
    assert!((1000..1301).contains(&texts.len()), "{}", texts.len());
    let from: usize = texts[0].strip_prefix('n').unwrap().parse().unwrap();
    let want: Vec<String> = (from..=1300)
        .map(|n| format!("n{n}"))
        .chain(["n end".to_string()])
        .collect();
    assert_eq!(texts, want);
}

/// Proves: with senders on both nodes at once, a JSON client on each node gets the room's
/// lines in one order, the same on both, with the same ids, increasing (as the stream's
/// ids compare: `A-B`, by A then B).
#[test]
fn json_clients_on_two_nodes_see_one_order() {
    let redis = Redis::start();
    let nodes = cluster(&redis, &["a", "b"]);
    let mut on_a = json_in(&nodes[0], "games", None);
    let mut on_b = json_in(&nodes[1], "games", None);
    let mut alice = tcp_in(&nodes[0], "alice", "games");
    let mut bob = tcp_in(&nodes[1], "bob", "games");
    let senders = [
        send_paced(&mut alice, "a", 150, 200),
        send_paced(&mut bob, "b", 150, 200),
    ];
    for s in senders {
        s.join().unwrap();
    }
    let (a_lines, b_lines) = (read_both_ends(&mut on_a), read_both_ends(&mut on_b));
    assert_eq!(a_lines.len(), 302);
    assert_eq!(a_lines, b_lines);
    // `A-B`, or `A-B.C` for a further line of an entry that holds several (lines read at
    // once): ordered by A, then B, then C.
    let ids: Vec<(u64, u64, u64)> = a_lines
        .iter()
        .map(|(_, id)| {
            let (x, rest) = id.split_once('-').unwrap();
            let (y, z) = rest.split_once('.').unwrap_or((rest, "0"));
            (x.parse().unwrap(), y.parse().unwrap(), z.parse().unwrap())
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{a_lines:?}");
}

/// The `line` events' (text, id) until both `a end` and `b end` have come.
fn read_both_ends(j: &mut Json) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut ends = 0;
    while ends < 2 {
        let e = j.event();
        if e["type"] == "line" {
            let text = e["text"].as_str().unwrap().to_string();
            ends += usize::from(text.ends_with(" end"));
            lines.push((text, e["id"].as_str().unwrap().to_string()));
        }
    }
    lines
}

/// Measures (run by hand: `cargo test --release --test integration cluster_json::latency
/// -- --ignored --nocapture`) what stream order costs a JSON member: the time from a TCP
/// client's write to a TCP member of the same node reading the line (delivered at once) and
/// to a JSON member of that node reading it (after Redis handed it back with its id).
#[test]
#[ignore]
fn latency_of_a_json_member_in_a_cluster() {
    use std::time::Instant;
    let redis = Redis::start();
    let nodes = cluster(&redis, &["a"]);
    let mut json = json_in(&nodes[0], "games", None);
    let mut tcp = tcp_in(&nodes[0], "tcp", "games");
    let mut alice = tcp_in(&nodes[0], "alice", "games");
    let (mut to_tcp, mut to_json) = (Vec::new(), Vec::new());
    for n in 0..200 {
        let text = format!("t{n}");
        let sent = Instant::now();
        alice.send(format!("{text}\n").as_bytes());
        let want = format!("<alice> {text}\n");
        while String::from_utf8(tcp.line()).unwrap() != want {}
        to_tcp.push(sent.elapsed());
        json.until(|e| e["text"].as_str().is_some_and(|t| t.ends_with(&text)));
        to_json.push(sent.elapsed());
        thread::sleep(Duration::from_millis(10));
    }
    for (what, mut times) in [("tcp", to_tcp), ("json", to_json)] {
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        eprintln!(
            "{what}: p50 {:?} p90 {:?} p99 {:?} max {:?}",
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        );
    }
}

/// Proves (issue 22, recall in a cluster): the operator of node a recalls a line: a JSON
/// client on node b is told (`recall`, the line's stream id), node b's and Redis's history
/// no longer hold it, and a JSON client entering the room on a node started afterwards (so
/// its history comes from Redis) is not replayed it.
#[test]
fn a_recall_on_one_node_reaches_the_others_and_redis() {
    let redis = Redis::start();
    let nodes = cluster(&redis, &["a", "b"]);
    let mut on_a = json_in(&nodes[0], "games", None);
    let mut on_b = json_in(&nodes[1], "games", None);
    let mut alice = tcp_in(&nodes[0], "alice", "games");
    alice.send(b"keep one\nrecall me\nkeep two\n");
    // Node a's history has the lines once its JSON client has them (both in the stream's
    // order, after Redis gave them their ids).
    lines_until(&mut on_a, "keep two");
    let (lines, _) = lines_until(&mut on_b, "keep two");
    let id = lines
        .iter()
        .find(|(t, _)| t == "recall me")
        .map(|(_, id)| id.clone())
        .unwrap();
    assert_eq!(
        nodes[0].node.admin(&format!("recall games {id}")),
        "ok\n",
        "recall on node a"
    );
    on_a.expect(json!({"type": "recall", "room": "games", "id": id}));
    on_b.expect(json!({"type": "recall", "room": "games", "id": id}));
    for n in &nodes {
        let history = n.node.admin("history games");
        assert!(!history.contains("recall me"), "{history}");
        assert!(history.contains("keep two"), "{history}");
    }
    // A node started now reads the room's history from Redis as its first client enters.
    let c = cluster(&redis, &["c"]).pop().unwrap();
    let mut on_c = Json::connect(c.ws, "");
    on_c.welcomed();
    on_c.send(json!({"type": "join", "room": "games", "since": lines[0].1}));
    let (replayed, _) = lines_until(&mut on_c, "keep two");
    let texts: Vec<&str> = replayed.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts, ["keep two"], "after {}", lines[0].1);
}
