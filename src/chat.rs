//! Chat mode (`--chat`): what a line means and how it looks to others.
//!
//! Each client's thread owns a [`Chat`] with its name, room and rate bucket. The lines of one
//! read are cleaned, formatted with the sender's prefix and gathered into one chunk, which the
//! registry then shares among all recipients: the prefix is per sender, so formatting once per
//! sender is formatting once. A command ends the chunk first, so what others see stays in the
//! order it was typed.
//!
//! Every line here is built whole before it is delivered, which is why a prefix can never land
//! inside a line however the bytes were split across reads.

use std::sync::Arc;
use std::time::Instant;

use log::{debug, info};

use crate::config::Config;
use crate::console;
use crate::outbound::{Chunk, Outbound};
use crate::rate::Bucket;
use crate::registry::{LOBBY, Members, RenameError};
use crate::server::Shared;
use crate::stats::add;

/// Longest name or room name, in characters.
const MAX_NAME: usize = 32;

const HELP: &[&str] = &[
    "* commands:",
    "*   /nick NAME       change your name (1-32 letters, digits, _ - .)",
    "*   /who             who is in your room",
    "*   /me TEXT         say TEXT as an action: * name TEXT",
    "*   /msg NAME TEXT   send TEXT to NAME only",
    "*   /join ROOM       leave your room for ROOM",
    "*   /rooms           rooms and how many are in each",
    "*   /quit [REASON]   leave",
    "*   /help            this list",
    "* a line starting with // sends the rest starting with a single /",
];

/// The lines a client gets on connecting: the welcome line, then the `--motd` lines.
pub fn welcome(config: &Config, name: &str, online: usize) -> Vec<Chunk> {
    let eol = config.eol();
    let mut text =
        format!("* welcome to relayd, you are {name} ({online} online) — /help for commands{eol}");
    for line in &config.motd {
        text.push_str(&clean(line.as_bytes()));
        text.push_str(eol);
    }
    vec![Chunk::from(text.as_bytes())]
}

/// One line as others may see it: without its line end (`\n`, and the `\r` of telnet), invalid
/// UTF-8 replaced by U+FFFD, and control characters other than TAB removed, so that nobody can
/// send terminal escape sequences to others' screens.
pub fn clean(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line)
        .chars()
        .filter(|&c| c == '\t' || !c.is_control())
        .collect()
}

/// What one line from a chat client is.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Nothing left once cleaned: not relayed.
    Empty,
    /// A message for the room (`//text` is the message `/text`).
    Text(String),
    /// `/name arg…`: `name` as typed, `arg` trimmed (possibly empty).
    Command { name: String, arg: String },
}

/// Reads one line (with or without its line end) as a chat client meant it. Total: any bytes
/// give an `Input`, which is what the property tests in `tests/chat_parser.rs` hold it to.
pub fn parse(line: &[u8]) -> Input {
    let text = clean(line);
    if text.is_empty() {
        return Input::Empty;
    }
    match text.strip_prefix('/') {
        Some(literal) if literal.starts_with('/') => Input::Text(literal.to_string()),
        Some(command) => {
            let (name, arg) = match command.split_once([' ', '\t']) {
                Some((name, arg)) => (name, arg.trim()),
                None => (command, ""),
            };
            Input::Command {
                name: name.to_string(),
                arg: arg.to_string(),
            }
        }
        None => Input::Text(text),
    }
}

/// A valid name or room name: 1–32 letters, digits, `_`, `-` or `.`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `guest<digits>` names are handed out by the daemon; nobody may take one.
pub fn reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower
        .strip_prefix("guest")
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// One chat client's state, owned by its thread.
pub struct Chat {
    name: String,
    room: String,
    bucket: Option<Bucket>,
    /// Formatted lines for the room, not delivered yet.
    out: String,
    out_lines: usize,
}

impl Chat {
    pub fn new(config: &Config, name: String) -> Chat {
        Chat {
            name,
            room: LOBBY.to_string(),
            bucket: config.rate.map(Bucket::new),
            out: String::new(),
            out_lines: 0,
        }
    }

    /// Tells the lobby, as it was when this client joined, that it arrived.
    pub fn announce(&self, shared: &Shared, peer: &Outbound, lobby: &Members) {
        let line = format!("* {} joined ({} online)", self.name, lobby.online());
        notify(shared, peer, lobby, &line);
    }

    /// Handles the whole lines of one read. Returns the reason if the client quit.
    pub fn handle(
        &mut self,
        shared: &Shared,
        peer: &Arc<Outbound>,
        lines: &[u8],
    ) -> Option<String> {
        let eol = shared.config.eol();
        for line in lines.split_inclusive(|&b| b == b'\n') {
            let text = match parse(line) {
                Input::Empty => continue,
                Input::Command { name, arg } => {
                    self.flush(shared, peer);
                    if let Some(reason) = self.command(shared, peer, &name, &arg) {
                        return Some(reason);
                    }
                    continue;
                }
                Input::Text(text) => text,
            };
            if !self.allow(shared, peer) {
                continue;
            }
            self.out.push_str(&format!("<{}> {text}{eol}", self.name));
            self.out_lines += 1;
        }
        self.flush(shared, peer);
        None
    }

    /// Delivers the formatted lines gathered so far to the room.
    fn flush(&mut self, shared: &Shared, peer: &Outbound) {
        if self.out.is_empty() {
            return;
        }
        let chunk = Chunk::from(self.out.as_bytes());
        if shared.config.console {
            console::echo(peer.id(), &chunk);
        }
        shared
            .registry
            .deliver(&self.room, Some(peer.id()), &chunk, self.out_lines);
        self.out.clear();
        self.out_lines = 0;
    }

    /// Takes a token for one relayed line, or drops the line and (at most once per period)
    /// tells the client.
    fn allow(&mut self, shared: &Shared, peer: &Arc<Outbound>) -> bool {
        let Some(bucket) = &mut self.bucket else {
            return true;
        };
        let now = Instant::now();
        if bucket.take(1, now) == 1 {
            return true;
        }
        if let Some(warning) = bucket.warning(now) {
            info!("client {}: over the rate limit, dropping lines", peer.id());
            self.reply(shared, peer, &warning);
        }
        add(&shared.stats.dropped_rate_limit, 1);
        false
    }

    /// Sends one line to this client only.
    fn reply(&self, shared: &Shared, peer: &Arc<Outbound>, line: &str) {
        if let Some(error) = line.strip_prefix("relayd: ") {
            debug!("client {} ({}): {error}", peer.id(), self.name);
        }
        let text = format!("{line}{}", shared.config.eol());
        shared
            .registry
            .deliver_to(peer, &Chunk::from(text.as_bytes()), 0);
    }

    /// Runs `/command` (given without its slash). Returns the reason if the client quit.
    fn command(
        &mut self,
        shared: &Shared,
        peer: &Arc<Outbound>,
        command: &str,
        arg: &str,
    ) -> Option<String> {
        match command.to_ascii_lowercase().as_str() {
            "nick" => self.nick(shared, peer, arg),
            "who" => {
                let names = shared.registry.names_in(&self.room);
                let line = format!("* {} in {}: {}", names.len(), self.room, names.join(", "));
                self.reply(shared, peer, &line);
            }
            "me" if arg.is_empty() => self.reply(shared, peer, "relayd: usage: /me TEXT"),
            "me" => {
                if self.allow(shared, peer) {
                    let eol = shared.config.eol();
                    self.out.push_str(&format!("* {} {arg}{eol}", self.name));
                    self.out_lines += 1;
                    self.flush(shared, peer);
                }
            }
            "msg" => self.msg(shared, peer, arg),
            "join" => self.join(shared, peer, arg),
            "rooms" => {
                let rooms: Vec<String> = shared
                    .registry
                    .rooms()
                    .iter()
                    .map(|(name, n)| format!("{name} ({n})"))
                    .collect();
                self.reply(shared, peer, &format!("* rooms: {}", rooms.join(", ")));
            }
            "quit" => {
                return Some(if arg.is_empty() { "quit" } else { arg }.to_string());
            }
            "help" => {
                for line in HELP {
                    self.reply(shared, peer, line);
                }
            }
            _ => {
                let line = format!("relayd: unknown command /{command} (try /help)");
                self.reply(shared, peer, &line);
            }
        }
        None
    }

    fn nick(&mut self, shared: &Shared, peer: &Arc<Outbound>, name: &str) {
        if !valid_name(name) {
            let line = format!("relayd: invalid name {name:?} (1-32 letters, digits, _ - .)");
            return self.reply(shared, peer, &line);
        }
        if name == self.name {
            return self.reply(shared, peer, &format!("* you are already {name}"));
        }
        if reserved(name) {
            return self.reply(shared, peer, &format!("relayd: name {name} is reserved"));
        }
        match shared.registry.rename(peer.id(), name) {
            Ok(old) => {
                self.name = name.to_string();
                info!("client {}: {old} is now {name}", peer.id());
                let room = shared.registry.members(&self.room);
                notify(shared, peer, &room, &format!("* {old} is now {name}"));
                self.reply(shared, peer, &format!("* you are now {name}"));
            }
            Err(RenameError::Taken) => {
                self.reply(shared, peer, &format!("relayd: name {name} is taken"))
            }
            Err(RenameError::Gone) => {}
        }
    }

    fn msg(&mut self, shared: &Shared, peer: &Arc<Outbound>, arg: &str) {
        let Some((to, text)) = arg
            .split_once([' ', '\t'])
            .map(|(to, text)| (to, text.trim()))
            .filter(|(_, text)| !text.is_empty())
        else {
            return self.reply(shared, peer, "relayd: usage: /msg NAME TEXT");
        };
        let Some((_, target)) = shared.registry.find_name(to) else {
            return self.reply(shared, peer, &format!("relayd: no such user {to}"));
        };
        if !self.allow(shared, peer) {
            return;
        }
        let eol = shared.config.eol();
        let line = format!("[private] <{}> {text}{eol}", self.name);
        shared
            .registry
            .deliver_to(&target, &Chunk::from(line.as_bytes()), 1);
    }

    fn join(&mut self, shared: &Shared, peer: &Arc<Outbound>, room: &str) {
        if !valid_name(room) {
            let line = format!("relayd: invalid room {room:?} (1-32 letters, digits, _ - .)");
            return self.reply(shared, peer, &line);
        }
        if room == self.room {
            return self.reply(shared, peer, &format!("relayd: you are already in {room}"));
        }
        let eol = shared.config.eol();
        let moved = shared.registry.change_room(peer.id(), room, |_, online| {
            let line = format!("* you are now in {room} ({online} online){eol}");
            vec![Chunk::from(line.as_bytes())]
        });
        peer.start_sending();
        let Some((left, joined)) = moved else {
            return;
        };
        self.room = room.to_string();
        let name = &self.name;
        let line = format!("* {name} left (joined {room}) ({} online)", left.online());
        notify(shared, peer, &left, &line);
        let line = format!("* {name} joined ({} online)", joined.online());
        notify(shared, peer, &joined, &line);
    }
}

/// Tells `members`, except the client it is about, `line`.
fn notify(shared: &Shared, about: &Outbound, members: &Members, line: &str) {
    let text = format!("{line}{}", shared.config.eol());
    shared
        .registry
        .notify(members, Some(about.id()), &Chunk::from(text.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_lines() {
        assert_eq!(clean(b"hi\r\n"), "hi");
        assert_eq!(clean(b"a\tb\n"), "a\tb");
        assert_eq!(clean(b"\x1b[31mred\x1b[0m\n"), "[31mred[0m");
        assert_eq!(
            clean("h\u{e9}\u{9b}x \u{1F600}\n".as_bytes()),
            "h\u{e9}x \u{1F600}"
        );
        assert_eq!(clean(b"a\xffb\n"), "a\u{FFFD}b");
        assert_eq!(clean(b"\x07\x7f\r\n"), "");
    }

    #[test]
    fn names() {
        assert!(valid_name("alice_B-2.0"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(33)));
        assert!(!valid_name("al ice"));
        assert!(!valid_name("älice"));
        assert!(reserved("Guest12"));
        assert!(!reserved("guest"));
        assert!(!reserved("guest1a"));
    }
}
