//! The relay itself: what reaches whom, byte for byte.

use std::collections::HashMap;
use std::io::Write;
use std::thread;

use crate::common::{Client, Server};
use relayd::Config;

#[test]
fn a_and_b_talk_both_ways_byte_exact() {
    // Every byte as it is, 0xFF (telnet's command byte) included: --binary.
    let server = Server::start(Config {
        binary: true,
        ..Config::default()
    });
    let mut a = server.connect();
    let mut b = server.connect();
    // CR, NUL, invalid UTF-8, an empty line: all are just bytes.
    b.send(b"from b\r\0\xff\xfe\n\n");
    a.expect(b"from b\r\0\xff\xfe\n");
    a.expect(b"\n");
    a.send(b"from a\n");
    b.expect(b"from a\n");
}

#[test]
fn three_clients_each_get_the_others_lines_never_their_own() {
    let server = Server::start(Config::default());
    let mut c: Vec<Client> = (0..3).map(|_| server.connect()).collect();
    c[2].send(b"two\n");
    c[0].expect(b"two\n");
    c[1].expect(b"two\n");
    c[0].send(b"zero\n");
    c[1].expect(b"zero\n");
    // Had the sender got its own line back, "zero" would come before "one" here.
    c[1].send(b"one\n");
    c[0].expect(b"one\n");
    c[2].expect(b"zero\n");
    c[2].expect(b"one\n");
}

#[test]
fn a_late_client_gets_nothing_relayed_before_it_joined() {
    let server = Server::start(Config::default());
    let mut a = server.connect();
    let mut b = server.connect();
    b.send(b"before\n");
    a.expect(b"before\n");
    let mut c = server.connect();
    c.send(b"hello from c\n");
    a.expect(b"hello from c\n");
    b.expect(b"hello from c\n");
    a.send(b"after\n");
    c.expect(b"after\n");
}

#[test]
fn ten_thousand_lines_arrive_in_order() {
    let server = Server::start(Config::default());
    let mut a = server.connect();
    let mut b = server.connect();
    let mut all = Vec::new();
    for i in 0..10_000 {
        writeln!(all, "line {i}").unwrap();
    }
    b.send(&all);
    assert_eq!(a.bytes(all.len()), all);
}

#[test]
fn concurrent_senders_never_interleave_mid_line() {
    let server = Server::start(Config::default());
    let mut rx = server.connect();
    let senders: Vec<Client> = (0..2).map(|_| server.connect()).collect();
    // The second sender's first line proves both senders are registered.
    let handles: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(s, mut c)| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                for i in 0..1000 {
                    let head = format!("{s} {i:04} ");
                    buf.extend_from_slice(head.as_bytes());
                    buf.extend(std::iter::repeat_n(b'a' + s as u8, 1000 - head.len() - 1));
                    buf.push(b'\n');
                    // Many small writes, so the two senders' bytes race at the server.
                    if i % 7 == 0 {
                        c.send(&buf);
                        buf.clear();
                    }
                }
                c.send(&buf);
                c
            })
        })
        .collect();
    let mut next: HashMap<usize, usize> = HashMap::new();
    for _ in 0..2000 {
        let line = rx.line();
        assert_eq!(
            line.len(),
            1000,
            "line of wrong length: {:?}",
            String::from_utf8_lossy(&line[..40])
        );
        let text = String::from_utf8(line).unwrap();
        let mut parts = text.splitn(3, ' ');
        let s: usize = parts.next().unwrap().parse().unwrap();
        let i: usize = parts.next().unwrap().parse().unwrap();
        let body = parts.next().unwrap();
        assert!(
            body.trim_end_matches('\n')
                .bytes()
                .all(|b| b == b'a' + s as u8),
            "line {s}/{i} corrupted"
        );
        let expected = next.entry(s).or_insert(0);
        assert_eq!(i, *expected, "sender {s} out of order");
        *expected += 1;
    }
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn three_hundred_clients_all_receive_one_line() {
    let server = Server::start(Config::default());
    let mut clients: Vec<Client> = (0..300).map(|_| server.connect()).collect();
    let mut sender = server.connect();
    sender.send(b"to all 300\n");
    for c in &mut clients {
        c.expect(b"to all 300\n");
    }
}

#[test]
fn unfinished_line_is_completed_when_the_sender_leaves() {
    let server = Server::start(Config::default());
    let mut a = server.connect();
    let mut b = server.connect();
    b.send(b"whole\nno newline");
    b.half_close();
    a.expect(b"whole\n");
    a.expect(b"no newline\n");
    // The leaver is closed by the server once its queue is flushed.
    b.expect_eof();
}

#[test]
fn a_leaving_client_frees_its_slot_at_once() {
    let server = Server::start(Config {
        max_clients: 2,
        ..Config::default()
    });
    let mut a = server.connect();
    let mut b = server.connect();
    b.send(b"hi\n");
    a.expect(b"hi\n");
    b.half_close();
    b.expect_eof();
    let mut c = server.connect();
    c.send(b"c is in\n");
    a.expect(b"c is in\n");
}

#[test]
fn over_long_line_is_refused_to_its_sender_and_the_connection_stays_usable() {
    let server = Server::start(Config {
        max_line: 16,
        ..Config::default()
    });
    let mut a = server.connect();
    let mut b = server.connect();
    // 15 bytes + newline is exactly the limit; 16 + newline is one over.
    b.send(b"exactly sixteen\n0123456789abcdef\nafter\n");
    a.expect(b"exactly sixteen\n");
    a.expect(b"after\n");
    b.expect(b"relayd: line too long (max 16 bytes), discarded\n");
    // A long line arriving in pieces is dropped as it streams, not buffered whole.
    for _ in 0..10 {
        b.send(b"xxxxxxxxxx");
    }
    b.send(b"xx\nok again\n");
    b.expect(b"relayd: line too long (max 16 bytes), discarded\n");
    a.expect(b"ok again\n");
    a.send(b"back\n");
    b.expect(b"back\n");
}

#[test]
fn client_over_max_clients_is_told_and_closed() {
    let server = Server::start(Config {
        max_clients: 2,
        ..Config::default()
    });
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    c.expect(b"relayd: server full (2 clients)\n");
    c.expect_eof();
    b.send(b"still fine\n");
    a.expect(b"still fine\n");
}

#[test]
fn idle_client_is_told_and_closed() {
    let server = Server::start(Config {
        idle_timeout: Some(std::time::Duration::from_millis(300)),
        ..Config::default()
    });
    let mut a = server.connect();
    a.expect(b"relayd: idle timeout\n");
    a.expect_eof();
}

#[test]
fn shutdown_tells_every_client_and_closes_it() {
    let server = Server::start(Config::default());
    let mut a = server.connect();
    let mut b = server.connect();
    b.send(b"last words\n");
    a.expect(b"last words\n");
    server.stop();
    a.expect(b"relayd: shutting down\n");
    a.expect_eof();
    b.expect(b"relayd: shutting down\n");
    b.expect_eof();
}

/// A client that leaves while another is sending to it is closed at once, not after
/// --write-timeout: the leaving client's flush waits for the send in flight, and the send's
/// end must wake it. (It did not: a direct send that emptied the queue woke no one, so the
/// close waited out the whole --write-timeout whenever a sender was mid-send to it.)
#[test]
fn a_client_leaving_mid_stream_is_closed_at_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let server = Server::start(Config {
        write_timeout: Duration::from_secs(30),
        ..Config::default()
    });
    let mut sender = server.connect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut watcher = server.connect();
    // A line from the watcher proves it is in the room, so it hears the sender from now on.
    watcher.send(b"watching\n");
    sender.expect(b"watching\n");
    sender.send(b"start\n");
    watcher.expect(b"start\n");
    let flood = {
        let (stop, mut stream) = (Arc::clone(&stop), sender.stream.try_clone().unwrap());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                stream
                    .write_all(b"a line that keeps every reader busy\n")
                    .unwrap();
            }
        })
    };
    for round in 0..30 {
        let mut leaver = server.connect();
        // It receives the stream, so sends to it are in flight most of the time.
        leaver.expect(b"a line that keeps every reader busy\n");
        leaver.half_close();
        let start = Instant::now();
        leaver.read_to_end();
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "round {round}: the leaving client was closed only after {took:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    drop(watcher);
}
