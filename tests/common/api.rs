//! The HTTP API (`--api`), driven with real `curl`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{Client, Daemon, temp_path};

/// The key the tests' daemons are given.
pub const KEY: &str = "api-test-key-0123456789";

/// A file holding [`KEY`], for `--api-key-file`.
pub fn key_file() -> PathBuf {
    let path = temp_path("api-key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    path
}

/// A daemon with `--api` on a free port, with [`KEY`], and `more`; its API address.
pub fn with_api(more: &[&str]) -> (Daemon, String, PathBuf) {
    let addr = Daemon::free_addr();
    let key = key_file();
    let mut args = vec!["--api", &addr, "--api-key-file", key.to_str().unwrap()];
    args.extend_from_slice(more);
    (Daemon::spawn(&args), addr, key)
}

/// One answer, as curl got it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status and returns the JSON.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        self.json()
    }
}

/// `curl -X METHOD http://ADDR PATH` with [`KEY`], and `body` if any.
pub fn call(addr: &str, method: &str, path: &str, body: Option<&str>) -> Reply {
    curl(addr, method, path, Some(KEY), body.map(str::as_bytes))
}

pub fn get(addr: &str, path: &str) -> Value {
    call(addr, "GET", path, None).expect(200)
}

pub fn post(addr: &str, path: &str, body: &str) -> Value {
    call(addr, "POST", path, Some(body)).expect(200)
}

/// Runs curl (at most 5 s) with `key` as the bearer token, if any, and `body` on its stdin.
pub fn curl(addr: &str, method: &str, path: &str, key: Option<&str>, body: Option<&[u8]>) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "5", "-X", method]);
    if let Some(key) = key {
        cmd.args(["-H", &format!("Authorization: Bearer {key}")]);
    }
    if body.is_some() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    cmd.arg(format!("http://{addr}{path}"));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(body) = body {
        // A refused body may be left unread: curl stops reading its stdin then.
        let _ = stdin.write_all(body);
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&text)
}

/// An answer as `curl -i` prints it, after any `100 Continue`.
fn parse(text: &str) -> Reply {
    let mut rest = text;
    loop {
        let (head, body) = rest.split_once("\r\n\r\n").expect("an HTTP answer");
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        return Reply {
            status,
            headers,
            body: body.to_string(),
        };
    }
}

/// Reads lines until one starts with `prefix`, and returns it.
pub fn until(c: &mut Client, prefix: &str) -> String {
    loop {
        let l = String::from_utf8(c.line()).unwrap();
        if l.starts_with(prefix) {
            return l;
        }
    }
}

/// A chat client of `d` that has read its welcome and taken `name`.
pub fn named(c: &mut Client, name: &str) {
    until(c, "* welcome to relayd, you are guest");
    c.send(format!("/nick {name}\n").as_bytes());
    assert_eq!(until(c, "* you are now"), format!("* you are now {name}\n"));
}
