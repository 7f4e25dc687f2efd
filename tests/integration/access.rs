//! Who gets in: --allow/--deny, --max-per-ip, --secret-file, and configuration errors.
//! Loopback answers on all of 127.0.0.0/8, so clients bound to 127.0.0.2 come from "another
//! address".

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Client, Daemon, Server, connect_from};
use relayd::Config;
use relayd::Rules;

fn rules(allow: &[&str], deny: &[&str]) -> Rules {
    Rules {
        allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
        deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

#[test]
fn allow_admits_only_listed_networks_and_refused_clients_get_no_byte() {
    let server = Server::start(Config {
        rules: rules(&["127.0.0.1"], &[]),
        ..Config::default()
    });
    let mut outsider = connect_from("127.0.0.2", server.addr);
    let mut a = connect_from("127.0.0.1", server.addr);
    let mut b = connect_from("127.0.0.1", server.addr);
    b.send(b"members only\n");
    a.expect(b"members only\n");
    outsider.expect_eof();
}

#[test]
fn deny_wins_over_allow() {
    let server = Server::start(Config {
        rules: rules(&["127.0.0.0/8"], &["127.0.0.2"]),
        ..Config::default()
    });
    let mut denied = connect_from("127.0.0.2", server.addr);
    denied.expect_eof();
    let mut a = connect_from("127.0.0.3", server.addr);
    let mut b = connect_from("127.0.0.1", server.addr);
    b.send(b"in\n");
    a.expect(b"in\n");
}

#[test]
fn ipv4_clients_on_an_ipv6_listener_match_ipv4_rules() {
    let d = Daemon::spawn(&["--bind", "[::]:0", "--allow", "127.0.0.1", "-v"]);
    let addr = SocketAddr::new("127.0.0.1".parse().unwrap(), d.addrs[0].port());
    let mut outsider = connect_from("127.0.0.2", addr);
    outsider.expect_eof();
    d.wait_log("refused [::ffff:127.0.0.2]");
    let mut a = connect_from("127.0.0.1", addr);
    let mut b = connect_from("127.0.0.1", addr);
    b.send(b"mapped\n");
    a.expect(b"mapped\n");
}

#[test]
fn max_per_ip_refuses_the_next_connection_from_that_address_only() {
    let server = Server::start(Config {
        max_per_ip: 2,
        ..Config::default()
    });
    let mut a = connect_from("127.0.0.1", server.addr);
    let mut a2 = connect_from("127.0.0.1", server.addr);
    let mut a3 = connect_from("127.0.0.1", server.addr);
    a3.expect(b"relayd: too many connections from your address\n");
    a3.expect_eof();
    let mut other = connect_from("127.0.0.2", server.addr);
    other.send(b"from elsewhere\n");
    a.expect(b"from elsewhere\n");
    // A slot frees when one of the address's connections leaves (the server has let go of
    // the slot by the time it closes the connection).
    a2.expect(b"from elsewhere\n");
    a2.half_close();
    a2.expect_eof();
    let mut a4 = connect_from("127.0.0.1", server.addr);
    a4.send(b"a4 is in\n");
    a.expect(b"a4 is in\n");
}

fn secret_config() -> Config {
    Config {
        secret: Some(b"open sesame".to_vec()),
        auth_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

/// A daemon started with `args` and a `--secret-file` holding `contents`, and that file's path
/// (the caller removes it). Which clients have authenticated is learnt from its log: that is
/// the only outside sign of it.
fn secret_daemon(contents: &str, args: &[&str]) -> (Daemon, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!(
        "relayd-secret-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, contents).unwrap();
    let args = [args, &["--secret-file", path.to_str().unwrap()]].concat();
    (Daemon::spawn(&args), path)
}

/// The daemon's first client, once it has sent `secret` and the daemon has let it in.
fn first_client_in(d: &Daemon, secret: &[u8]) -> Client {
    let mut a = d.connect();
    a.send(secret);
    d.wait_log("client 1: authenticated");
    a
}

#[test]
fn a_client_owing_the_secret_hears_nothing_and_is_not_heard() {
    let (d, path) = secret_daemon("open sesame\n", &[]);
    let mut a = first_client_in(&d, b"open sesame\r\n");
    let mut b = d.connect();
    // b has not authenticated: its line is not relayed, and a's line does not reach it.
    b.send(b"let me in? ");
    let mut c = d.connect();
    c.send(b"open sesame\nc is in\n");
    a.expect(b"c is in\n");
    a.send(b"b must not see this\n");
    c.expect(b"b must not see this\n");
    b.send(b"no\n");
    b.expect(b"relayd: authentication failed\n");
    b.expect_eof();
    let _ = std::fs::remove_file(path);
}

#[test]
fn the_secret_line_itself_is_not_relayed_and_later_lines_are() {
    let (d, path) = secret_daemon("open sesame\n", &[]);
    let mut a = first_client_in(&d, b"open sesame\n");
    let mut b = d.connect();
    b.send(b"open sesame\nhello\n");
    a.expect(b"hello\n");
    a.send(b"hi b\n");
    b.expect(b"hi b\n");
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_wrong_secret_is_told_at_once_and_closed_a_second_later() {
    let server = Server::start(Config {
        auth_timeout: Duration::from_secs(10),
        ..secret_config()
    });
    let mut c = server.connect();
    let start = Instant::now();
    c.send(b"open sesame \n");
    c.expect(b"relayd: authentication failed\n");
    c.expect_eof();
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        start.elapsed()
    );
}

#[test]
fn no_secret_in_time_is_a_timeout() {
    let server = Server::start(secret_config());
    let mut c = server.connect();
    c.send(b"open ses");
    c.expect(b"relayd: authentication timeout\n");
    c.expect_eof();
}

#[test]
fn the_secret_is_never_logged() {
    let (d, path) = secret_daemon("hunter2-xyzzy\nsecond line ignored\n", &["-vv"]);
    let _a = first_client_in(&d, b"hunter2-xyzzy\n");
    let mut b = d.connect();
    b.send(b"hunter2-xyzz\n");
    b.expect(b"relayd: authentication failed\n");
    let log = d.log_until("client 2: wrong secret");
    assert!(log.iter().all(|l| !l.contains("hunter2")), "{log:?}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn configuration_errors_are_one_line_naming_option_and_value() {
    let empty = std::env::temp_dir().join(format!("relayd-empty-{}", std::process::id()));
    std::fs::write(&empty, "\nnot the first line\n").unwrap();
    let bad_list = std::env::temp_dir().join(format!("relayd-list-{}", std::process::id()));
    std::fs::write(&bad_list, "# ok\n10.0.0.0/8\n192.168.1.1/16\n").unwrap();
    let (empty, bad_list) = (empty.to_str().unwrap(), bad_list.to_str().unwrap());
    for (args, want) in [
        (
            vec!["--allow", "10.0.0.1/8"],
            "relayd: --allow 10.0.0.1/8: host bits set; the network is 10.0.0.0/8\n".to_string(),
        ),
        (
            vec!["--deny", "10.0.0.0/40"],
            "relayd: --deny 10.0.0.0/40: prefix length must be 0 to 32\n".to_string(),
        ),
        (
            vec!["--allow", "example.com"],
            "relayd: --allow example.com: not an IP address or network\n".to_string(),
        ),
        (
            vec!["--deny-file", "/nonexistent/list"],
            "relayd: --deny-file /nonexistent/list: No such file or directory (os error 2)\n"
                .to_string(),
        ),
        (
            vec!["--allow-file", bad_list],
            format!(
                "relayd: --allow-file {bad_list}: line 3: 192.168.1.1/16: host bits set; the network is 192.168.0.0/16\n"
            ),
        ),
        (
            vec!["--secret-file", empty],
            format!("relayd: --secret-file {empty}: the first line is empty\n"),
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_relayd"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), want);
    }
    let _ = std::fs::remove_file(empty);
    let _ = std::fs::remove_file(bad_list);
}

#[test]
fn in_chat_mode_a_client_joins_and_is_announced_only_once_authenticated() {
    let (d, path) = secret_daemon("open sesame\n", &["--chat"]);
    let mut a = d.connect();
    a.send(b"open sesame\n");
    a.expect("* welcome to relayd, you are guest1 (1 online) — /help for commands\n".as_bytes());
    let mut stranger = d.connect();
    d.wait_log("client 2 connected");
    let mut b = d.connect();
    b.send(b"open sesame\nhello\n");
    b.expect("* welcome to relayd, you are guest3 (2 online) — /help for commands\n".as_bytes());
    // Had the stranger been announced (or counted), a would hear of guest2 first.
    a.expect(b"* guest3 joined (2 online)\n");
    a.expect(b"<guest3> hello\n");
    stranger.send(b"wrong\n");
    stranger.expect(b"relayd: authentication failed\n");
    stranger.expect_eof();
    let _ = std::fs::remove_file(path);
}
