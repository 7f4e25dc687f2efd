//! The client's real address behind a trusted proxy (`--proxy-protocol`): PROXY protocol
//! headers v1 (by hand, and from a real stunnel with `protocol = proxy`) and v2, and
//! `X-Forwarded-For` on the WebSocket listener. The address they carry is what `clients`
//! shows and what --deny, --max-per-ip and an address ban judge.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use crate::common::tls::{Stunnel, have_stunnel};
use crate::common::ws::ws_handshake;
use crate::common::{Daemon, TIMEOUT, admin_command, connect_from, temp_path};

/// The address column of `clients`, sorted: clients behind a proxy are admitted on threads
/// of their own, so their ids need not follow the order they connected in.
fn addresses(admin: &Path) -> Vec<String> {
    let mut column: Vec<String> = admin_command(admin, "clients")
        .lines()
        .map(|row| row.split(' ').nth(1).unwrap().to_string())
        .collect();
    column.sort();
    column
}

fn v1(from: &str) -> String {
    let (ip, port) = from.rsplit_once(':').unwrap();
    format!("PROXY TCP4 {ip} 127.0.0.1 {port} 12345\r\n")
}

/// Proves: a v1 header written by hand from a trusted peer gives each client its own address
/// in `clients`; --deny of one address refuses that client without a byte and not the
/// others behind the same proxy; --max-per-ip counts the client's address, not the
/// proxy's; the client's bytes right after the header (in the same write) are its first line.
#[test]
fn v1_by_hand_each_client_its_own_address() {
    let admin = temp_path("proxy-v1-admin");
    let d = Daemon::spawn(&[
        "--proxy-protocol",
        "127.0.0.1",
        "--deny",
        "203.0.113.66",
        "--max-per-ip",
        "1",
        "--admin",
        admin.to_str().unwrap(),
    ]);
    let to = d.addrs[0];
    let mut a = connect_from("127.0.0.1", to);
    a.send(v1("203.0.113.7:40000").as_bytes());
    // Admitted on a thread of its own: in before b, to hear b.
    d.wait_log("connected from 203.0.113.7:40000");
    let mut b = connect_from("127.0.0.1", to);
    b.send(v1("198.51.100.9:40001").as_bytes());
    b.send(b"b is in\n");
    a.expect(b"b is in\n");
    assert_eq!(
        addresses(&admin),
        ["198.51.100.9:40001", "203.0.113.7:40000"]
    );

    let mut denied = connect_from("127.0.0.1", to);
    denied.send(v1("203.0.113.66:40002").as_bytes());
    denied.expect_eof();
    d.wait_log("refused 203.0.113.66:40002: not allowed by --allow/--deny");
    let mut second = connect_from("127.0.0.1", to);
    second.send(v1("203.0.113.7:40003").as_bytes());
    second.expect(b"relayd: too many connections from your address\n");

    let mut c = connect_from("127.0.0.1", to);
    c.send(format!("{}together\n", v1("192.0.2.5:40004")).as_bytes());
    a.expect(b"together\n");
    b.expect(b"together\n");
    d.wait_log("connected from 192.0.2.5:40004");
    assert_eq!(
        addresses(&admin),
        ["192.0.2.5:40004", "198.51.100.9:40001", "203.0.113.7:40000"]
    );
}

/// Proves: from a peer not in --proxy-protocol a PROXY header is just a line, relayed as
/// such, and its own address stands; from a trusted peer, bytes that are no header, a
/// malformed header, or none within 3 s close the connection with a log line.
#[test]
fn untrusted_header_is_bytes_and_trusted_peer_must_send_a_good_one() {
    let admin = temp_path("proxy-untrusted-admin");
    let d = Daemon::spawn(&[
        "--proxy-protocol",
        "127.0.0.1",
        "--admin",
        admin.to_str().unwrap(),
    ]);
    let to = d.addrs[0];
    let mut u = connect_from("127.0.0.2", to);
    let mut v = connect_from("127.0.0.3", to);
    v.send(b"v is in\n");
    u.expect(b"v is in\n");
    let header = v1("203.0.113.7:40000");
    u.send(header.as_bytes());
    v.expect(header.as_bytes());
    let rows = addresses(&admin);
    assert!(rows[0].starts_with("127.0.0.2:"), "{rows:?}");

    for (sent, logged) in [
        (
            &b"hello\n"[..],
            "no PROXY protocol header from a --proxy-protocol peer",
        ),
        (b"PROXY TCP4 nonsense here\r\n", "malformed PROXY v1 header"),
        (b"PROXY ", "no complete PROXY protocol header within 3s"),
    ] {
        let mut w = connect_from("127.0.0.1", to);
        w.send(sent);
        w.expect_eof();
        let line = d.wait_log(logged);
        assert!(line.contains("refused 127.0.0.1:"), "{line}");
    }
    assert_eq!(addresses(&admin).len(), 2);
}

/// Proves, through a real stunnel (`protocol = proxy`) in front: two TLS users behind it
/// get their own addresses in `clients` and talk; a third, whose address is --deny'd, is
/// refused, and the others stay.
#[test]
fn through_stunnel_each_tls_user_its_own_address() {
    if !have_stunnel() {
        return;
    }
    let admin = temp_path("proxy-stunnel-admin");
    let d = Daemon::spawn(&[
        "--proxy-protocol",
        "127.0.0.1",
        "--deny",
        "127.0.0.3",
        "--admin",
        admin.to_str().unwrap(),
    ]);
    let stunnel = Stunnel::start(d.addrs[0], "protocol = proxy\n");
    let mut a = stunnel.client(Some("127.0.0.2"));
    d.wait_log("connected from 127.0.0.2:");
    let denied = stunnel.client(Some("127.0.0.3"));
    d.wait_log("refused 127.0.0.3:");
    assert!(
        denied.out.recv_timeout(TIMEOUT).is_err(),
        "a line for the denied"
    );
    let mut b = stunnel.client(Some("127.0.0.4"));
    d.wait_log("connected from 127.0.0.4:");
    a.send("hello through stunnel\n");
    assert_eq!(b.line(), "hello through stunnel");
    b.send("and back\n");
    assert_eq!(a.line(), "and back");
    let rows = addresses(&admin);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].starts_with("127.0.0.2:") && rows[1].starts_with("127.0.0.4:"));
}

/// Proves, through a real stunnel (`protocol = proxy`) in front: an address *ban* (`ban
/// 127.0.0.3` on the control socket) refuses that TLS user with `relayd: you are banned`, and
/// not the others behind the same stunnel; a ban of a connected one's address closes it
/// alone. Without the PROXY header every user would have stunnel's address, 127.0.0.1, and
/// the ban would hit none of them (or, on 127.0.0.1, all).
#[test]
fn through_stunnel_an_address_ban_refuses_that_user_only() {
    if !have_stunnel() {
        return;
    }
    let admin = temp_path("proxy-stunnel-ban-admin");
    let d = Daemon::spawn(&[
        "--proxy-protocol",
        "127.0.0.1",
        "--admin",
        admin.to_str().unwrap(),
    ]);
    let stunnel = Stunnel::start(d.addrs[0], "protocol = proxy\n");
    let mut a = stunnel.client(Some("127.0.0.2"));
    d.wait_log("connected from 127.0.0.2:");
    let answer = admin_command(&admin, "ban 127.0.0.3 1h bots");
    assert!(
        answer.starts_with("ok: 127.0.0.3/32 banned until ")
            && answer.ends_with(", 0 connections closed\n"),
        "{answer}"
    );
    let banned = stunnel.client(Some("127.0.0.3"));
    let told = banned.line();
    assert!(
        told.starts_with("relayd: you are banned until ") && told.ends_with(": bots"),
        "{told}"
    );
    d.wait_log("refused 127.0.0.3:");
    let b = stunnel.client(Some("127.0.0.4"));
    d.wait_log("connected from 127.0.0.4:");
    a.send("hello past the ban\n");
    assert_eq!(b.line(), "hello past the ban");
    let rows = addresses(&admin);
    assert_eq!(rows.len(), 2, "{rows:?}");

    // A ban of b's address closes b, and a stays.
    let answer = admin_command(&admin, "ban 127.0.0.4");
    assert!(answer.ends_with(", 1 connections closed\n"), "{answer}");
    assert_eq!(b.line(), "relayd: you are banned");
    let rows = addresses(&admin);
    assert!(
        rows.len() == 1 && rows[0].starts_with("127.0.0.2:"),
        "{rows:?}"
    );
    assert_eq!(
        admin_command(&admin, "stats")
            .lines()
            .find(|l| l.starts_with("refused_banned ")),
        Some("refused_banned 1")
    );
}

/// A WebSocket client that sends `prelude` (a PROXY header) first and, if given, an
/// `X-Forwarded-For` header, from 127.0.0.1.
fn ws_via(
    to: SocketAddr,
    prelude: &[u8],
    forwarded: Option<&str>,
) -> Result<tungstenite::WebSocket<TcpStream>, tungstenite::Error> {
    let mut sock = TcpStream::connect(to).unwrap();
    sock.write_all(prelude).unwrap();
    let headers: Vec<(&str, &str)> = forwarded
        .map(|f| ("x-forwarded-for", f))
        .into_iter()
        .collect();
    ws_handshake(sock, to, &headers)
}

/// Proves: on --ws-bind, a trusted peer's PROXY v2 header (binary) names the browser, and
/// so does an HTTP proxy's X-Forwarded-For (its rightmost address not itself a trusted
/// proxy's); an X-Forwarded-For from an untrusted peer is ignored; a --deny'd address given
/// either way is refused.
#[test]
fn websocket_v2_header_and_forwarded_for() {
    let admin = temp_path("proxy-ws-admin");
    let d = Daemon::spawn(&[
        "--ws-bind",
        "127.0.0.1:0",
        "--proxy-protocol",
        "127.0.0.1",
        "--proxy-protocol",
        "10.0.0.0/8",
        "--deny",
        "192.0.2.99",
        "--admin",
        admin.to_str().unwrap(),
    ]);
    let ws = d.ws_addr();
    // v2, PROXY, TCP over IPv4: 198.51.100.20:5555 -> 127.0.0.1:80.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 20, 127, 0, 0, 1, 0x15, 0xb3, 0, 80]);
    let _a = ws_via(ws, &v2, None).unwrap();
    d.wait_log("connected from 198.51.100.20:5555 over WebSocket");
    let _b = ws_via(ws, b"", Some("192.0.2.1, 203.0.113.9, 10.1.2.3")).unwrap();
    d.wait_log("connected from 203.0.113.9:0 over WebSocket");
    assert_eq!(addresses(&admin), ["198.51.100.20:5555", "203.0.113.9:0"]);
    let mut refused = v2.clone();
    refused[16..20].copy_from_slice(&[192, 0, 2, 99]);
    assert!(ws_via(ws, &refused, None).is_err());
    d.wait_log("refused 192.0.2.99:5555: not allowed by --allow/--deny");
    let forwarded = ws_via(ws, b"", Some("192.0.2.99"));
    assert!(forwarded.is_err() || forwarded.unwrap().read().is_err());
    d.wait_log("refused 192.0.2.99:0: not allowed by --allow/--deny");
    assert_eq!(addresses(&admin).len(), 2);

    // From a peer that is no proxy, the header is ignored.
    let d = Daemon::spawn(&["--ws-bind", "127.0.0.1:0", "--proxy-protocol", "10.0.0.0/8"]);
    let _c = ws_via(d.ws_addr(), b"", Some("203.0.113.9")).unwrap();
    d.wait_log("connected from 127.0.0.1:");
}
