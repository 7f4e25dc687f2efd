//! Reload without a restart (SIGHUP, the admin `reload`): each file behind `--allow-file`,
//! `--deny-file`, `--secret-file` and `--motd` is changed, and the effect is proven by what a
//! client sees, while the clients connected before stay connected.

use std::path::{Path, PathBuf};

use crate::common::{Daemon, admin_command, connect_from, temp_path};

/// Replaces a file whole (write, then rename over it), as editors and config management do:
/// a reload never reads half of it.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Changes `path` to `contents`, sends SIGHUP, and returns the reload's log line, which
/// contains `outcome`.
fn sighup_after(d: &Daemon, path: &Path, contents: &str, outcome: &str) -> String {
    replace(path, contents);
    d.signal(libc::SIGHUP);
    d.wait_log(outcome)
}

fn file(what: &str, contents: &str) -> PathBuf {
    let path = temp_path(what);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Proves: after the allow file shrinks and SIGHUP, the connected client it no longer allows
/// is told `relayd: no longer allowed` and closed, the one it still allows keeps relaying,
/// and a new connection from the refused address is closed without a byte; after the file
/// grows again, that address gets in again. Nobody else is disconnected.
#[test]
fn sighup_with_a_smaller_allow_file_closes_only_the_refused() {
    let allow = file("allow", "127.0.0.0/8\n");
    let d = Daemon::spawn(&["--allow-file", allow.to_str().unwrap()]);
    let addr = d.addrs[0];
    let mut a = connect_from("127.0.0.1", addr);
    let mut b = connect_from("127.0.0.2", addr);
    b.send(b"b is in\n");
    a.expect(b"b is in\n");

    let only_one = "# only this machine's first address now\n127.0.0.1\n";
    sighup_after(
        &d,
        &allow,
        only_one,
        "reloaded; 1 clients no longer allowed",
    );
    b.expect(b"relayd: no longer allowed\n");
    b.expect_eof();
    connect_from("127.0.0.2", addr).expect_eof();
    let mut c = connect_from("127.0.0.1", addr);
    c.send(b"a stays\n");
    a.expect(b"a stays\n");

    sighup_after(
        &d,
        &allow,
        "127.0.0.0/8\n",
        "reloaded; 0 clients no longer allowed",
    );
    let mut e = connect_from("127.0.0.2", addr);
    e.send(b"back in\n");
    a.expect(b"back in\n");
    c.expect(b"back in\n");
}

/// Proves: the admin `reload` re-reads `--deny-file` and answers with what it did; the
/// denied client is closed with the notice, the rest stay.
#[test]
fn admin_reload_with_a_larger_deny_file() {
    let deny = file("deny", "# nobody yet\n");
    let admin = temp_path("reload-admin");
    let d = Daemon::spawn(&[
        "--deny-file",
        deny.to_str().unwrap(),
        "--admin",
        admin.to_str().unwrap(),
    ]);
    let addr = d.addrs[0];
    let mut a = connect_from("127.0.0.1", addr);
    let mut b = connect_from("127.0.0.3", addr);
    b.send(b"hi\n");
    a.expect(b"hi\n");

    replace(&deny, "127.0.0.3\n");
    assert_eq!(
        admin_command(&admin, "reload"),
        "ok: reloaded; 1 clients no longer allowed\n"
    );
    b.expect(b"relayd: no longer allowed\n");
    b.expect_eof();
    let mut c = connect_from("127.0.0.1", addr);
    c.send(b"still here\n");
    a.expect(b"still here\n");
}

/// Proves: a file that no longer parses leaves the old settings in force, whole (the allow
/// file is fine, the deny file is not: neither is applied), logs one line saying why, and
/// the daemon keeps running with its clients; the admin `reload` answers the same error.
#[test]
fn a_broken_file_leaves_the_old_settings() {
    let allow = file("allow", "127.0.0.0/8\n");
    let deny = file("deny", "");
    let admin = temp_path("reload-admin");
    let mut d = Daemon::spawn(&[
        "--allow-file",
        allow.to_str().unwrap(),
        "--deny-file",
        deny.to_str().unwrap(),
        "--admin",
        admin.to_str().unwrap(),
    ]);
    let addr = d.addrs[0];
    let mut a = connect_from("127.0.0.1", addr);
    let mut b = connect_from("127.0.0.2", addr);

    replace(&allow, "127.0.0.1\n");
    let line = sighup_after(&d, &deny, "10.0.0.0/8\nnot-an-address\n", "reload failed");
    assert!(
        line.ends_with(&format!(
            "reload failed, keeping the previous settings: --deny-file {}: line 2: \
             not-an-address: not an IP address or network",
            deny.display()
        )),
        "{line}"
    );
    assert!(d.is_running());
    // The allow file's change was not applied either: 127.0.0.2 still gets in.
    let mut c = connect_from("127.0.0.2", addr);
    c.send(b"all still here\n");
    a.expect(b"all still here\n");
    b.expect(b"all still here\n");
    let answer = admin_command(&admin, "reload");
    assert!(
        answer.starts_with("error: reload failed, keeping the previous settings: --deny-file "),
        "{answer}"
    );
}

/// Proves: after the secret file changes and SIGHUP, the old secret is refused and the new
/// one admits, while the client that authenticated with the old secret stays and hears the
/// newcomer. An emptied secret file (no secret) is refused and the new secret stays.
#[test]
fn sighup_with_a_new_secret() {
    let secret = file("secret", "old secret\n");
    let d = Daemon::spawn(&["--secret-file", secret.to_str().unwrap()]);
    let mut a = d.connect();
    a.send(b"old secret\n");
    d.wait_log("authenticated");

    sighup_after(&d, &secret, "new secret\n", "reloaded");
    let mut old = d.connect();
    old.send(b"old secret\n");
    old.expect(b"relayd: authentication failed\n");
    let mut b = d.connect();
    b.send(b"new secret\nhello with the new secret\n");
    a.expect(b"hello with the new secret\n");

    sighup_after(&d, &secret, "\n", "the first line is empty");
    let mut c = d.connect();
    c.send(b"new secret\nthe new secret still works\n");
    a.expect(b"the new secret still works\n");
    b.expect(b"the new secret still works\n");
}

/// Proves: after the motd changes and SIGHUP, a new chat client gets the new motd after its
/// welcome; the client already there stays and hears it join.
#[test]
fn sighup_with_a_new_motd() {
    let motd = file("motd", "first motd\n");
    let d = Daemon::spawn(&["--chat", "--motd", motd.to_str().unwrap()]);
    let mut a = d.connect();
    a.expect(b"* welcome to relayd, you are guest1 (1 online) \xe2\x80\x94 /help for commands\n");
    a.expect(b"first motd\n");

    sighup_after(&d, &motd, "second motd\nin two lines\n", "reloaded");
    let mut b = d.connect();
    b.expect(b"* welcome to relayd, you are guest2 (2 online) \xe2\x80\x94 /help for commands\n");
    b.expect(b"second motd\n");
    b.expect(b"in two lines\n");
    a.expect(b"* guest2 joined (2 online)\n");
    b.send(b"hi\n");
    a.expect(b"<guest2> hi\n");
}
