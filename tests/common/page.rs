//! relayd's page in headless Chromium, read and driven through the DevTools protocol (over
//! a WebSocket, with tungstenite's client): the test evaluates JavaScript in the page, such
//! as the page's own `selftest.view()` (what it shows: room, members, lines with their ids,
//! notices, state) or a click on one of its buttons, as a person would.
//!
//! Chromium writes the DevTools port and the browser's path into `DevToolsActivePort` in its
//! profile once it listens; the test attaches to the one page target there is.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use super::browser::chromium_with;
use super::{Killed, eventually_within, temp_path};

/// Chromium's start, and any one wait for what the page shows, must fit in this.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Page {
    devtools: WebSocket<TcpStream>,
    session: String,
    next: u64,
    profile: PathBuf,
    browser: Option<Killed>,
}

impl Page {
    /// Chromium on `url`, attached to its page.
    pub fn open(url: &str) -> Page {
        let profile = temp_path("chromium-page-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let browser = Killed(chromium_with(url, &profile, &["--remote-debugging-port=0"]));
        let file = profile.join("DevToolsActivePort");
        let mut active = String::new();
        eventually_within("Chromium's DevTools port", PAGE_TIMEOUT, || {
            active = std::fs::read_to_string(&file).unwrap_or_default();
            active.lines().count() >= 2
        });
        let mut lines = active.lines();
        let port: u16 = lines.next().unwrap().parse().unwrap();
        let path = lines.next().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(PAGE_TIMEOUT)).unwrap();
        let (devtools, _) = tungstenite::client(format!("ws://{addr}{path}"), sock)
            .unwrap_or_else(|e| panic!("DevTools handshake: {e}"));
        let mut page = Page {
            devtools,
            session: String::new(),
            next: 0,
            profile,
            browser: Some(browser),
        };
        let mut target = None;
        eventually_within("the page's target", PAGE_TIMEOUT, || {
            let targets = page.call("Target.getTargets", json!({}));
            target = targets["targetInfos"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["type"] == "page")
                .map(|t| t["targetId"].as_str().unwrap().to_string());
            target.is_some()
        });
        let attached = page.call(
            "Target.attachToTarget",
            json!({"targetId": target.unwrap(), "flatten": true}),
        );
        page.session = attached["sessionId"].as_str().unwrap().to_string();
        page
    }

    /// One DevTools command (in the page's session once attached); its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut command = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.devtools
            .send(Message::text(command.to_string()))
            .unwrap();
        loop {
            let message = match self.devtools.read().expect("DevTools answers") {
                Message::Text(t) => t,
                _ => continue,
            };
            let answer: Value = serde_json::from_str(&message).unwrap();
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of the JavaScript `expression` in the page (a promise's, once settled).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// What the page shows (its `selftest.view()`), `null` until its script has run.
    pub fn view(&mut self) -> Value {
        self.eval("typeof selftest === 'undefined' ? null : selftest.view()")
    }

    /// Polls [`Page::view`] until `cond` holds for it; that view. Fails the test after
    /// [`PAGE_TIMEOUT`], with the last view.
    pub fn wait(&mut self, what: &str, mut cond: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let view = self.view();
            if !view.is_null() && cond(&view) {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the page to show {what}; it shows {view:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` into the page's input and presses Enter, as a person would.
    pub fn type_line(&mut self, text: &str) {
        self.eval(&format!(
            "input.value = {}; document.getElementById('form').requestSubmit()",
            json!(text)
        ));
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Chromium first: it writes into its profile until it ends.
        drop(self.browser.take());
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
