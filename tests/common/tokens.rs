//! Signed tokens for the tests: HS256 tokens minted with the `jsonwebtoken` crate (with the
//! test secrets below, never real ones), the key files relayd reads, and chat clients that
//! present a token.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;

use super::chat::Client;
use super::{Daemon, eventually, temp_path};

/// HS256 secrets of the tests (32 bytes and more); never real ones.
pub const SECRET: &str = "relayd-integration-test-secret-0123456789";
pub const OTHER: &str = "relayd-integration-test-other-secret-9876543210";

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A file holding `contents`, for `--token-key`.
pub fn key_file(what: &str, contents: &str) -> PathBuf {
    let path = temp_path(what);
    std::fs::write(&path, contents).unwrap();
    path
}

/// An HS256 token of `claims`, signed with `secret`, with `kid` in its header if given.
pub fn mint(claims: &Value, secret: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_string);
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    encode(&header, claims, &key).unwrap()
}

/// A token of [`SECRET`] for user `sub` named `name`, valid for an hour.
pub fn token(sub: &str, name: &str) -> String {
    let claims = serde_json::json!({"sub": sub, "name": name, "exp": now() + 3600});
    mint(&claims, SECRET, None)
}

/// A chat client of `addr` that has read its welcome as a guest, or, with
/// `--require-token`, not yet anything.
pub fn connect(addr: SocketAddr) -> Client {
    Client::new(TcpStream::connect(addr).unwrap())
}

/// Reads lines until one starts with `prefix`, and returns it.
pub fn until(c: &mut Client, prefix: &str) -> String {
    loop {
        let l = c.line();
        if l.starts_with(prefix) {
            return l;
        }
    }
}

/// A chat daemon checking tokens of [`SECRET`], with a control socket (its path returned,
/// answering once this returns) and `more` arguments.
pub fn moderated(more: &[&str]) -> (Daemon, PathBuf) {
    let keys = key_file("moderation-key", &format!("{SECRET}\n"));
    let mut args = vec!["--chat", "--token-key", keys.to_str().unwrap()];
    args.extend_from_slice(more);
    with_admin("moderation-admin", &args)
}

/// A daemon started with `args` and a control socket of its own, named after `what` (its
/// path returned, answering once this returns).
pub fn with_admin(what: &str, args: &[&str]) -> (Daemon, PathBuf) {
    let admin = temp_path(what);
    let mut all = args.to_vec();
    all.extend_from_slice(&["--admin", admin.to_str().unwrap()]);
    let d = Daemon::spawn(&all);
    wait_admin(&admin);
    (d, admin)
}

/// Waits until the control socket at `admin` answers.
pub fn wait_admin(admin: &Path) {
    eventually("the admin socket", || {
        std::os::unix::net::UnixStream::connect(admin).is_ok()
    });
}
