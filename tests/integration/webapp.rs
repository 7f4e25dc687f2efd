//! The README's "From your web app", the way the app's author would use it: its PHP block, run
//! by Debian's `php-cli` (which `.ci/run` installs) against a real relayd with a token key and
//! the HTTP API, mints a token for a user and publishes a line; a TCP client and the page in
//! headless Chromium, opened with the PHP-minted `?token=`, receive it. Then the backend's
//! view of that user through the API: presence, a push to every connection, one kick for all.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::api::{get, post, with_api};
use crate::common::browser::chromium;
use crate::common::tokens::{SECRET, key_file};
use crate::common::{Client, Killed, temp_path};

/// The whole test, Chromium's start included, must fit in this.
const BUDGET: Duration = Duration::from_secs(30);

/// The first ```php block after the README's "## From your web app" heading: what an app's
/// author copies.
fn readme_php() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split_once("\n## From your web app\n")
        .expect("README.md has a section \"From your web app\"")
        .1;
    let block = section
        .split_once("```php\n")
        .expect("the section has a php block")
        .1;
    block.split_once("```").unwrap().0.to_string()
}

/// Runs `code` with `php -r` after the README's block is required, with the settings it reads
/// from the environment; its standard output.
fn php(library: &Path, env: &[(&str, String)], code: &str) -> String {
    let out = Command::new("php")
        .arg("-r")
        .arg(format!(
            "require {:?}; {code}",
            library.display().to_string()
        ))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("cannot run php (install Debian's php-cli; .ci/run does)");
    assert!(
        out.status.success(),
        "php failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn patient(c: &mut Client) {
    c.reader_mut()
        .get_ref()
        .set_read_timeout(Some(BUDGET))
        .unwrap();
}

/// Proves issue 20's "show it the way the app's author would use it": the README's PHP mints a
/// token that relayd accepts (an implementation independent of the `jsonwebtoken` crate); the
/// page opened with it is in the room under the token's name (the TCP client hears
/// `alice joined` and `<alice> …`; the page's own welcome line says `you are alice`); what
/// the README's `relayd_publish` sends reaches the TCP client and the page byte for byte, and
/// PHP gets `{"ok":true}` back. Then, with a second connection of the same user over TCP
/// (`/auth` with a PHP token): presence lists both under the user's `sub`, `/api/send` to the
/// `sub` reaches both, and one `/api/kick` of the `sub` closes both; the room hears once that
/// alice left.
#[test]
fn the_readme_php_signs_a_user_in_and_publishes_to_the_page_and_a_tcp_client() {
    let start = Instant::now();
    let token_key = key_file("webapp-token-key", &format!("{SECRET}\n"));
    let (d, api, api_key) = with_api(&[
        "--chat",
        "--ws-bind",
        "127.0.0.1:0",
        "--token-key",
        token_key.to_str().unwrap(),
    ]);
    let library: PathBuf = temp_path("relayd.php");
    std::fs::write(&library, readme_php()).unwrap();
    let env = [
        ("RELAYD_TOKEN_KEY", token_key.display().to_string()),
        ("RELAYD_API", format!("http://{api}")),
        ("RELAYD_API_KEY", api_key.display().to_string()),
    ];

    let mut observer = d.connect();
    patient(&mut observer);
    assert!(String::from_utf8_lossy(&observer.line()).starts_with("* welcome"));

    let token = php(
        &library,
        &env,
        r#"echo relayd_token($relayd, 'u-42', 'alice');"#,
    );
    let tag = format!("webapp{}", std::process::id());
    let profile = temp_path("chromium-webapp-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let url = format!("http://{}/?token={token}&selftest={tag}", d.ws_addr());
    let browser = Killed(chromium(&url, &profile));

    assert_eq!(
        String::from_utf8_lossy(&observer.line()),
        "* alice joined (2 online)\n"
    );
    let ready = format!("<alice> selftest {tag} ready\n");
    assert_eq!(String::from_utf8_lossy(&observer.line()), ready);

    let text = format!("probe-{tag} Tournament starts in 5 minutes");
    let answer = php(
        &library,
        &env,
        &format!("echo json_encode(relayd_publish($relayd, 'lobby', '{text}'));"),
    );
    assert_eq!(answer, r#"{"ok":true}"#);
    let published = format!("* [server] {text}\n");
    let saw = format!(
        "<alice> selftest {tag} saw 1 item(s), 0 element(s) inside: * [server] {text} \
         (token shown: false; name shown: alice)\n"
    );
    let typed = format!("<alice> selftest {tag} typed in the page\n");
    let (mut got_published, mut got_saw, mut got_typed) = (false, false, false);
    while !(got_published && got_saw && got_typed) {
        assert!(start.elapsed() < BUDGET, "the page did not report in time");
        let line = String::from_utf8_lossy(&observer.line()).to_string();
        if line == ready {
            continue;
        }
        got_published |= line == published;
        got_saw |= line == saw;
        got_typed |= line == typed;
        assert!(
            line == published || line == saw || line == typed,
            "unexpected line: {line:?}"
        );
    }

    // The same user on a terminal too: one name, two connections.
    let second = php(
        &library,
        &env,
        r#"echo relayd_token($relayd, 'u-42', 'alice');"#,
    );
    let mut terminal = d.connect();
    patient(&mut terminal);
    // Without --require-token it is a guest until its /auth, as the room sees.
    assert!(String::from_utf8_lossy(&terminal.line()).starts_with("* welcome"));
    terminal.send(format!("/auth {second}\n").as_bytes());
    terminal.expect(b"* you are now alice\n");
    let joined = String::from_utf8_lossy(&observer.line()).to_string();
    let guest = joined
        .strip_prefix("* ")
        .and_then(|rest| rest.strip_suffix(" joined (3 online)\n"))
        .unwrap_or_else(|| panic!("{joined:?}"))
        .to_string();
    assert_eq!(
        String::from_utf8_lossy(&observer.line()),
        format!("* {guest} is now alice\n")
    );
    let presence = get(&api, "/api/presence?room=lobby");
    let members = presence["members"].as_array().unwrap();
    let users: Vec<_> = members.iter().map(|m| (&m["user"], &m["name"])).collect();
    assert_eq!(members.len(), 3, "{presence}");
    assert_eq!(
        users
            .iter()
            .filter(|(u, n)| **u == json!("u-42") && **n == json!("alice"))
            .count(),
        2,
        "{presence}"
    );
    assert!(
        users.contains(&(&json!(null), &json!("guest1"))),
        "{presence}"
    );

    let sent = post(
        &api,
        "/api/send",
        r#"{"user":"u-42","text":"your export is ready"}"#,
    );
    assert_eq!(sent, json!({"ok": true, "connections": 2}));
    terminal.expect(b"* [server] your export is ready\n");

    let kicked = post(&api, "/api/kick", r#"{"user":"u-42","reason":"bye"}"#);
    assert_eq!(kicked, json!({"ok": true, "connections": 2}));
    terminal.expect(b"relayd: kicked by operator: bye\n");
    terminal.expect_eof();
    // Once, though two connections left; and nothing else came between (the push went to
    // alice's connections only).
    assert_eq!(
        String::from_utf8_lossy(&observer.line()),
        "* alice left (kicked by operator: bye) (1 online)\n"
    );
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
    let _ = std::fs::remove_file(&library);
}
