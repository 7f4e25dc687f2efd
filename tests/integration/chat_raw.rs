//! Raw mode (the default) with the issue-4 features around it: byte-for-byte as before, no
//! welcome or prefixes; `--history` and `--rate` per line.

use crate::common::chat::{Server, wait_until};
use relayd::Config;
use relayd::Rate;

/// Raw mode with `--binary` is a byte-exact pipe: no welcome, no prefix, no cleaning, no
/// echo; empty lines, `\r\n`, escapes, 0xFF and invalid UTF-8 pass as they are; a last
/// unfinished line gets its `\n`. (Without `--binary`, telnet's commands, which start with
/// 0xFF, are taken out: tests/telnet.rs.)
#[test]
fn raw_mode_is_byte_for_byte() {
    let server = Server::start(Config {
        binary: true,
        ..Config::default()
    });
    let [mut a, mut b] = server.connect_registered();
    let data: &[u8] = b"\x1b[31mred\x1b[0m\r\n\n\xff\xfe\x00bin\n/nick x\n";
    a.send_bytes(data);
    assert_eq!(b.bytes(data.len()), data);
    for byte in b"split across writes\n" {
        a.send_bytes(&[*byte]);
    }
    assert_eq!(b.bytes(20), b"split across writes\n");
    // a's first bytes are b's: no welcome, no echo of its own lines.
    b.send("from b\n");
    assert_eq!(a.bytes(7), b"from b\n");
    a.send("tail");
    a.stream().shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(b.bytes(5), b"tail\n");
    server.wait_clients(1);
    // And nobody is told anyone left.
    let mut c = server.connect();
    server.wait_clients(2);
    c.send("c\n");
    assert_eq!(b.bytes(2), b"c\n");
}

/// `--history N` in raw mode: the last N lines (not chunks) replayed on connect, then live.
#[test]
fn raw_history() {
    let server = Server::start(Config {
        history: 2,
        ..Config::default()
    });
    let [mut a, mut watcher] = server.connect_registered();
    a.send("a\nb\nc\n");
    assert_eq!(watcher.bytes(6), b"a\nb\nc\n");
    let mut b = server.connect();
    assert_eq!(b.bytes(4), b"b\nc\n");
    server.wait_clients(3);
    a.send("d\n");
    assert_eq!(b.bytes(2), b"d\n");
    assert_eq!(watcher.bytes(2), b"d\n");
}

/// `--rate` in raw mode: the excess lines of a read are dropped, one warning per period;
/// the connection stays; others are unaffected.
#[test]
fn raw_rate_limit() {
    let server = Server::start(Config {
        rate: Some(Rate {
            lines: 2,
            seconds: 60,
        }),
        ..Config::default()
    });
    let [mut a, mut b, mut c] = server.connect_registered();
    a.send("1\n2\n3\n");
    a.expect("relayd: rate limit exceeded (2 lines per 60 s), line dropped\n");
    assert_eq!(b.bytes(4), b"1\n2\n");
    assert_eq!(c.bytes(4), b"1\n2\n");
    a.send("4\n");
    // Line 4 is dropped too (the count moves after any warning is queued)...
    wait_until("line 4 dropped", || server.stat("dropped_rate_limit") == 2);
    // ...without a second warning: a's next bytes are b's lines. b has its own bucket.
    b.send("x\ny\n");
    assert_eq!(a.bytes(4), b"x\ny\n");
    assert_eq!(c.bytes(4), b"x\ny\n");
    assert_eq!(server.stat("lines_out"), 8);
}
