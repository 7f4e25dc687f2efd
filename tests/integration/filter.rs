//! The word filter (`--filter-file`, `--filter-action`), through the real binary and real
//! TCP clients: the exact bytes the others receive with each action, in chat and raw mode,
//! any ASCII case, whole words only, a reload that changes the list, and a bad list.

use std::path::PathBuf;
use std::process::Command;

use crate::common::{Client, Daemon, admin_command, http, stat_in, temp_path};

const DROPPED: &[u8] = b"relayd: your line was not sent (filtered)\n";

fn list(what: &str, contents: &str) -> PathBuf {
    let path = temp_path(what);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A chat daemon filtering with `words` and `action`, with a control socket and /metrics,
/// and two clients in its lobby (their welcomes and the join notice read).
struct Chat {
    d: Daemon,
    words: PathBuf,
    admin: PathBuf,
    metrics: String,
    a: Client,
    b: Client,
}

fn chat(what: &str, words: &str, action: &str) -> Chat {
    let words = list(what, words);
    let admin = temp_path(&format!("{what}-admin"));
    let metrics = Daemon::free_addr();
    let d = Daemon::spawn(&[
        "--chat",
        "--filter-file",
        words.to_str().unwrap(),
        "--filter-action",
        action,
        "--admin",
        admin.to_str().unwrap(),
        "--metrics",
        &metrics,
    ]);
    let mut a = d.connect();
    a.line();
    let mut b = d.connect();
    b.line();
    a.line();
    Chat {
        d,
        words,
        admin,
        metrics,
        a,
        b,
    }
}

/// The filter's `stats` counters, `[dropped, masked]`, once `/metrics` is checked to say
/// the same.
fn counted(c: &Chat) -> [u64; 2] {
    let stats = admin_command(&c.admin, "stats");
    let (_, body) = http(c.metrics.parse().unwrap(), "GET", "/metrics");
    let pairs = [
        ("filtered_dropped", "relayd_filtered_dropped_lines_total"),
        ("filtered_masked", "relayd_filtered_masked_lines_total"),
    ];
    pairs.map(|(stat, metric)| {
        let value = stat_in(&stats, stat);
        let line = format!("{metric} {value}");
        assert!(body.lines().any(|l| l == line), "no {line:?} in {body}");
        value
    })
}

/// Proves: with `drop`, a line, a `/me` and a `/msg` holding a listed word in any ASCII case
/// reach nobody and their sender is told (once a second at most: the three are one read's
/// worth, so one notice); a word that merely contains one (`class`) passes; the count is in
/// `stats` and `/metrics`.
#[test]
fn drop_action() {
    let mut c = chat("filter-drop", "# the list\nass\nDarn it\n", "drop");
    c.a.send(b"hello\nyou ASS\n/me says darn IT\n/msg guest2 oh aSs\nclass act\n");
    c.b.expect(b"<guest1> hello\n");
    c.b.expect(b"<guest1> class act\n");
    c.a.expect(DROPPED);
    // Nothing else reached b, nor a: the next lines are these.
    c.a.send(b"done\n");
    c.b.expect(b"<guest1> done\n");
    c.b.send(b"ok\n");
    c.a.expect(b"<guest2> ok\n");
    assert_eq!(counted(&c), [3, 0]);
}

/// Proves: with `mask`, each listed word or phrase, in any ASCII case, is `***` in what the
/// others get (a line, a `/me`, a `/msg`), words that contain one are left alone, the sender
/// is told nothing; a name holding a listed word is refused; counted per line.
#[test]
fn mask_action() {
    let mut c = chat("filter-mask", "ass\ndarn it\n", "mask");
    c.a.send(b"oh DARN it, a class ASS and an ass.\n/me is an Ass\n/msg guest2 ass!\nfine\n");
    let masked: [&[u8]; 4] = [
        b"<guest1> oh ***, a class *** and an ***.\n",
        b"* guest1 is an ***\n",
        b"[private] <guest1> ***!\n",
        b"<guest1> fine\n",
    ];
    for line in masked {
        c.b.expect(line);
    }
    c.a.send(b"/nick ass\n");
    c.a.expect(b"relayd: name ass is not allowed\n");
    c.a.send(b"/nick classy\n");
    c.a.expect(b"* you are now classy\n");
    c.b.expect(b"* guest1 is now classy\n");
    assert_eq!(counted(&c), [0, 3]);
}

/// Two raw clients, both admitted: the second one's line reached the first.
fn raw_two(d: &Daemon) -> [Client; 2] {
    let mut a = d.connect();
    let mut b = d.connect();
    b.send(b"here\n");
    a.expect(b"here\n");
    [a, b]
}

/// Proves: raw mode is filtered too, line by line, each keeping its own line end: masked,
/// and dropped with the sender told.
#[test]
fn raw_lines_both_actions() {
    let words = list("filter-raw", "spam\n");
    let path = words.to_str().unwrap();
    let d = Daemon::spawn(&["--filter-file", path, "--filter-action", "mask"]);
    let [mut a, mut b] = raw_two(&d);
    a.send(b"SPAM here\r\nno spammer\n");
    b.expect(b"*** here\r\n");
    b.expect(b"no spammer\n");
    drop(d);

    let d = Daemon::spawn(&["--filter-file", path]);
    let [mut a, mut b] = raw_two(&d);
    a.send(b"one\nspam!\ntwo\n");
    b.expect(b"one\n");
    b.expect(b"two\n");
    a.expect(DROPPED);
}

/// Proves: SIGHUP and the admin `reload` read the list again: a new word is filtered and a
/// removed one passes; a list that no longer parses leaves the previous one in force.
#[test]
fn reload_changes_the_list() {
    let mut c = chat("filter-reload", "alpha\n", "mask");
    c.a.send(b"alpha beta\n");
    c.b.expect(b"<guest1> *** beta\n");

    let tmp = c.words.with_extension("new");
    std::fs::write(&tmp, "beta\n").unwrap();
    std::fs::rename(&tmp, &c.words).unwrap();
    c.d.signal(libc::SIGHUP);
    c.d.wait_log("reloaded;");
    c.a.send(b"alpha beta\n");
    c.b.expect(b"<guest1> alpha ***\n");

    std::fs::write(&c.words, "gamma\nbad\u{1b}[2J\n").unwrap();
    let answer = admin_command(&c.admin, "reload");
    let why = format!(
        "--filter-file {}: line 2: a control character",
        c.words.display()
    );
    assert!(answer.contains(&why), "{answer}");
    c.a.send(b"alpha beta gamma\n");
    c.b.expect(b"<guest1> alpha *** gamma\n");

    std::fs::write(&c.words, "gamma\n").unwrap();
    assert!(admin_command(&c.admin, "reload").starts_with("ok: reloaded;"));
    c.a.send(b"alpha beta gamma\n");
    c.b.expect(b"<guest1> alpha beta ***\n");
}

/// Proves: a list that cannot be read or parsed, or an action that is not one, is a one-line
/// startup error and exit 1.
#[test]
fn a_bad_list_is_a_one_line_startup_error() {
    let bad = list("filter-bad", "fine\n\u{7}bell\n");
    let missing = temp_path("filter-missing");
    let bad_s = bad.display().to_string();
    let missing_s = missing.display().to_string();
    let cases: [(&[&str], String); 3] = [
        (
            &["--filter-file", &bad_s],
            format!("relayd: --filter-file {bad_s}: line 2: a control character\n"),
        ),
        (
            &["--filter-file", &missing_s],
            format!("relayd: --filter-file {missing_s}: No such file or directory (os error 2)\n"),
        ),
        (
            &["--filter-file", &bad_s, "--filter-action", "hide"],
            "relayd: invalid value 'hide' for '--filter-action <ACTION>': invalid filter action \
             \"hide\": expected drop or mask\n"
                .to_string(),
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_relayd"))
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), want);
    }
}
