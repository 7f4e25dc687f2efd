//! The page in real browsers: headless Chromium and Firefox (Debian's `chromium` and
//! `firefox-esr`, which `.ci/run` installs) on `--ws-bind`'s page, against a real daemon, with
//! an `nc`-like TCP client in the same room.
//!
//! Chromium's `--dump-dom` does not wait for WebSocket traffic, so the page reports what it
//! saw itself: with `?selftest=TOKEN` it says `selftest TOKEN ready` into the room until the
//! test's probe line arrives, then types a line into its own input and reports what its DOM
//! shows for the probe. The test reads all of it over TCP.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::browser::chromium;
use crate::common::{Client, Daemon, Killed, temp_path};

const FIREFOX: &str = "/usr/bin/firefox-esr";
/// The whole test, Chromium's start included, must fit in this.
const BUDGET: Duration = Duration::from_secs(30);

/// Headless Firefox on `url`, with a fresh profile.
fn firefox(url: &str, profile: &Path) -> Child {
    Command::new(FIREFOX)
        .args(["--headless", "--no-remote", "--profile"])
        .arg(profile)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start /usr/bin/firefox-esr (install Debian's firefox-esr; .ci/run does)")
}

/// A TCP client of `d` whose reads wait as long as the whole test may take.
fn patient(d: &Daemon) -> Client {
    let mut nc = d.connect();
    nc.reader_mut()
        .get_ref()
        .set_read_timeout(Some(BUDGET))
        .unwrap();
    nc
}

/// Proves, in Chromium: the page connects over WebSocket; a line sent by a TCP client appears
/// in its DOM as text (a line of HTML shows its characters and creates no element); a line
/// typed into the page's input reaches the TCP client.
#[test]
fn the_page_in_chromium_talks_with_a_tcp_client() {
    the_page_talks_with_a_tcp_client("chromium", chromium);
}

/// The same in Firefox.
#[test]
fn the_page_in_firefox_talks_with_a_tcp_client() {
    the_page_talks_with_a_tcp_client("firefox", firefox);
}

fn the_page_talks_with_a_tcp_client(name: &str, browser: fn(&str, &Path) -> Child) {
    let start = Instant::now();
    let d = Daemon::spawn(&["--ws-bind", "127.0.0.1:0"]);
    let ws = d.ws_addr();
    let mut nc = patient(&d);
    let token = format!("{name}{}", std::process::id());
    let profile = temp_path(&format!("{name}-profile"));
    std::fs::create_dir_all(&profile).unwrap();
    let _browser = Killed(browser(&format!("http://{ws}/?selftest={token}"), &profile));

    // The page's "ready" proves both ends are in the room: it was sent by a registered client
    // and reached this one.
    let ready = format!("selftest {token} ready\n");
    let first = nc.line();
    assert_eq!(String::from_utf8_lossy(&first), ready);
    let probe = format!("probe-{token} <img src=x onerror=alert(1)> & <b>bold</b>");
    nc.send(format!("{probe}\n").as_bytes());

    let typed = format!("selftest {token} typed in the page\n");
    let saw = format!("selftest {token} saw 1 item(s), 0 element(s) inside: {probe}\n");
    let mut got_typed = false;
    let mut got_saw = false;
    while !(got_typed && got_saw) {
        assert!(
            start.elapsed() < BUDGET,
            "the page did not report within {BUDGET:?}"
        );
        let line = String::from_utf8_lossy(&nc.line()).to_string();
        if line == ready {
            continue;
        }
        got_typed |= line == typed;
        got_saw |= line == saw;
        assert!(
            line == typed || line == saw,
            "unexpected line from the page: {line:?}"
        );
    }
    drop(_browser);
    let _ = std::fs::remove_dir_all(&profile);
    assert!(start.elapsed() < BUDGET, "took {:?}", start.elapsed());
}

/// Issue 19, point 4: opening a link whose `?name=` and `?room=` hold `%0A` made the visitor
/// post lines, a private message and a `/me` they never typed (the page pasted them after
/// `/nick ` and `/join `, and relayd split the message at its line ends). Proves, in
/// Chromium: an observer in the lobby hears the browser join and then only what the page's
/// own test hook says, under the browser's guest name: nothing of the link's lines, no
/// `/me`, no private message, no rename. The probe is answered after the welcome (it is
/// queued behind it), so everything the link could have made the page send comes before the
/// answer the test waits for.
#[test]
fn a_link_cannot_make_the_page_post_lines_or_commands() {
    let start = Instant::now();
    let d = Daemon::spawn(&["--ws-bind", "127.0.0.1:0", "--chat"]);
    let ws = d.ws_addr();
    let mut nc = patient(&d);
    nc.line();
    nc.send(b"/nick observer\n");
    assert_eq!(nc.line(), b"* you are now observer\n");
    let token = format!("link{}", std::process::id());
    let profile = temp_path("chromium-link-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let url = format!(
        "http://{ws}/?name=alice%0AI%20was%20made%20to%20say%20this%0A/msg%20observer%20hi\
         &room=lobby%0A/me%20also%20this&selftest={token}"
    );
    let _browser = Killed(chromium(&url, &profile));

    assert_eq!(
        String::from_utf8_lossy(&nc.line()),
        "* guest2 joined (2 online)\n"
    );
    let ready = format!("<guest2> selftest {token} ready\n");
    let first = String::from_utf8_lossy(&nc.line()).to_string();
    assert_eq!(first, ready);
    nc.send(format!("probe-{token}\n").as_bytes());
    let typed = format!("<guest2> selftest {token} typed in the page\n");
    let saw = format!(
        "<guest2> selftest {token} saw 1 item(s), 0 element(s) inside: <observer> probe-{token}\n"
    );
    // Everything the page sent after its first "ready", up to both answers to the probe
    // (under whatever name it has by then).
    let answered = |heard: &[String], what: &str| {
        let what = format!("selftest {token} {what}");
        heard.iter().any(|l| l.contains(&what))
    };
    let mut heard: Vec<String> = Vec::new();
    while !(answered(&heard, "typed") && answered(&heard, "saw")) {
        assert!(
            start.elapsed() < BUDGET,
            "the page did not report within {BUDGET:?}; it sent {heard:?}"
        );
        let line = String::from_utf8_lossy(&nc.line()).to_string();
        if line != ready {
            heard.push(line);
        }
    }
    heard.sort();
    assert_eq!(heard, [saw, typed], "the link made the page send more");
    drop(_browser);
    let _ = std::fs::remove_dir_all(&profile);
}

/// Proves, in Chromium, with `--require-token`: the page passes on its own `?token=` as the
/// WebSocket's, which signs it in as the token's user (the room hears `alice` arrive and
/// speak, never a guest), and it shows the token neither in its address bar nor in its text.
#[test]
fn the_page_signs_in_with_its_token_and_never_shows_it() {
    use crate::common::tokens::{SECRET, key_file, token as mint_token};
    let start = Instant::now();
    let keys = key_file("browser-token-key", &format!("{SECRET}\n"));
    let d = Daemon::spawn(&[
        "--ws-bind",
        "127.0.0.1:0",
        "--chat",
        "--require-token",
        "--token-key",
        keys.to_str().unwrap(),
    ]);
    let ws = d.ws_addr();
    let mut nc = patient(&d);
    nc.send(format!("/auth {}\n", mint_token("u-2", "observer")).as_bytes());
    nc.line();
    let token = format!("tok{}", std::process::id());
    let signed = mint_token("u-1", "alice");
    let profile = temp_path("chromium-token-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let url = format!("http://{ws}/?token={signed}&selftest={token}");
    let _browser = Killed(chromium(&url, &profile));

    assert_eq!(
        String::from_utf8_lossy(&nc.line()),
        "* alice joined (2 online)\n"
    );
    let ready = format!("<alice> selftest {token} ready\n");
    assert_eq!(String::from_utf8_lossy(&nc.line()), ready);
    nc.send(format!("probe-{token}\n").as_bytes());
    let saw = format!(
        "<alice> selftest {token} saw 1 item(s), 0 element(s) inside: <observer> probe-{token} \
         (token shown: false; name shown: alice)\n"
    );
    loop {
        assert!(
            start.elapsed() < BUDGET,
            "the page did not report within {BUDGET:?}"
        );
        let line = String::from_utf8_lossy(&nc.line()).to_string();
        if line.contains(" saw ") {
            assert_eq!(line, saw);
            break;
        }
    }
    drop(_browser);
    let _ = std::fs::remove_dir_all(&profile);
}
