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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info};

use crate::client::censor::Censor;
use crate::client::moderator::{self, Moderator, Slow, slow_allows};
use crate::config::Config;
use crate::daemon::{Daemon, NameError};
use crate::delivery::chunk::{Chunk, Sender};
use crate::delivery::json_event::Kind;
use crate::delivery::line_id::{LineId, now_ms};
use crate::delivery::notice::clean;
use crate::delivery::peer::Peer;
use crate::delivery::registry::{LOBBY, Members, is_id};
use crate::policy::rate::{Bucket, Rate};
use crate::stats::add;

/// In a cluster with `--history`, the rooms a client may enter that it was not in lately: 8
/// at once, then one every 30 s. Each room a client enters may start a history stream in
/// Redis, which outlives the room by an hour (`cluster::HISTORY_IDLE`), so that one client
/// cannot create streams without bound: at most 8 + 120 an hour.
const NEW_ROOMS: Rate = Rate {
    lines: 8,
    seconds: 240,
};

/// What a valid name is, as people are told.
const NAME_RULE: &str = "1-32 letters, digits, _ - .; not only digits";

const HELP: &[&str] = &[
    "* commands:",
    "*   /nick NAME       change your name (1-32 letters, digits, _ - .; not only digits)",
    "*   /who             who is in your room",
    "*   /me TEXT         say TEXT as an action: * name TEXT",
    "*   /msg NAME TEXT   send TEXT to NAME only",
    "*   /join ROOM       leave your room for ROOM",
    "*   /rooms           rooms and how many are in each",
    "*   /quit [REASON]   leave",
    "*   /auth TOKEN      sign in with a token from your site (or refresh it)",
    "*   /help            this list (and a room's moderators' commands)",
    "* a line starting with // sends the rest starting with a single /",
];

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
/// give an `Input`, which is what the property tests in `tests/integration/chat_parser.rs`
/// hold it to.
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

/// What a client whose `since` is not a line id is told.
pub(crate) fn bad_since(since: Option<&str>) -> String {
    format!(
        "since {:?} is not a line id, entered without it",
        since.unwrap_or_default()
    )
}

/// Whether `message`, a browser's message as lines each ending with `\n`, is a command
/// followed by more lines: a command is one line (see `Client::command_with_more_lines`).
pub(crate) fn command_with_more_lines(message: &[u8]) -> bool {
    let mut lines = message.split_inclusive(|&b| b == b'\n');
    matches!(lines.next().map(parse), Some(Input::Command { .. })) && lines.next().is_some()
}

// In `policy::names`, so that the cluster checks the names and rooms other nodes announce,
// and signed tokens the names they carry, with the very same rules.
pub(crate) use crate::policy::names::valid_room;
pub use crate::policy::names::{reserved, valid_name};

/// One chat client's state, owned by its thread.
pub(crate) struct Chat {
    name: String,
    room: String,
    /// A signed-in user's `sub`, and the rooms its token lets it join (`None`: any); its
    /// name is its token's. Boxed: most clients are guests.
    user: Option<Box<(String, Option<Vec<String>>)>>,
    bucket: Option<Bucket>,
    /// The word filter, if any.
    censor: Censor,
    /// In a cluster with `--history`: the rooms it may enter (see [`NEW_ROOMS`]).
    new_rooms: Option<NewRooms>,
    /// Formatted lines for the room, not delivered yet.
    out: String,
    out_lines: usize,
    /// When it was last told it is muted (at most once a minute).
    muted_told: Option<Instant>,
    /// Its pace in a room with a slow mode.
    slow: Option<Box<Slow>>,
    /// Who its lines and its `/me` lines are from, while its name stays (see
    /// [`Chat::sender`]).
    senders: [Option<Arc<Sender>>; 2],
}

impl Chat {
    pub(crate) fn new(config: &Config, name: String) -> Chat {
        Chat {
            name,
            room: LOBBY.to_string(),
            user: None,
            bucket: config.rate.map(Bucket::new),
            censor: Censor::default(),
            new_rooms: (config.cluster.is_some() && config.history > 0).then(NewRooms::new),
            out: String::new(),
            out_lines: 0,
            senders: [None, None],
            muted_told: None,
            slow: None,
        }
    }

    /// Tells the lobby, as it was when this client joined, that it arrived (unless the
    /// user is there on another connection already).
    pub(crate) fn announce(&self, daemon: &Daemon, peer: &Peer, lobby: &Members) {
        if !self.here_already(lobby, peer) {
            let member = daemon.member(peer, &self.name, LOBBY);
            let notice = daemon
                .notices()
                .joined(member, daemon.online(LOBBY, lobby), LOBBY);
            daemon.notify(LOBBY, lobby, peer.id(), &notice);
        }
        daemon.present(peer.id(), &self.name, LOBBY);
    }

    /// Whether another connection of this client's user is among `members`.
    fn here_already(&self, members: &Members, peer: &Peer) -> bool {
        self.user
            .as_deref()
            .is_some_and(|(sub, _)| members.has_user(sub, peer.id()))
    }

    /// The client is now user `user`, named `name` (its token's), and may join `rooms`.
    /// `renamed`: tell its room and itself of the new name (it was a guest in a room).
    pub(crate) fn signed_in(
        &mut self,
        daemon: &Daemon,
        peer: &Arc<Peer>,
        user: &str,
        rooms: Option<Vec<String>>,
        renamed: bool,
    ) {
        self.user = Some(Box::new((user.to_string(), rooms)));
        self.senders = [None, None];
        let old = std::mem::replace(&mut self.name, daemon.name_of(peer.id()));
        if !renamed || old == self.name {
            return;
        }
        let name = &self.name;
        let room = daemon.members(&self.room);
        let member = daemon.member(peer, name, &self.room);
        let notice = daemon.notices().renamed(member, &old, &self.room);
        daemon.notify(&self.room, &room, peer.id(), &notice);
        daemon.present(peer.id(), name, &self.room);
        self.reply(daemon, peer, &format!("* you are now {name}"));
    }

    /// A fresh token for the same user: the rooms it may join from now on.
    pub(crate) fn refreshed(&mut self, rooms: Option<Vec<String>>) {
        if let Some(user) = &mut self.user {
            user.1 = rooms;
        }
    }

    /// Handles the whole lines of one read. Returns the `/quit` reason if the client quit
    /// (`Some(None)` without one).
    pub(crate) fn handle(
        &mut self,
        daemon: &Daemon,
        peer: &Arc<Peer>,
        lines: &[u8],
    ) -> Option<Option<String>> {
        let eol = daemon.notices().eol();
        self.catch_up(daemon, peer);
        self.censor.refresh(daemon);
        for line in lines.split_inclusive(|&b| b == b'\n') {
            let text = match parse(line) {
                Input::Empty => continue,
                Input::Command { name, arg } => {
                    self.flush(daemon, peer);
                    if let Some(reason) = self.command(daemon, peer, &name, &arg) {
                        return Some(reason);
                    }
                    // Banned by the name it took: nothing more it sent is relayed.
                    if peer.cut_off().is_some() {
                        return None;
                    }
                    continue;
                }
                Input::Text(text) => text,
            };
            if daemon.silenced(peer, &self.room, &mut self.muted_told)
                || !slow_allows(&mut self.slow, daemon, peer, &self.room)
                || !self.allow(daemon, peer, "line")
            {
                continue;
            }
            let Some(text) = self.censor.pass_text(daemon, peer, &text) else {
                continue;
            };
            self.out.push_str(&format!("<{}> {text}{eol}", self.name));
            self.out_lines += 1;
        }
        self.flush(daemon, peer);
        None
    }

    /// Takes in what others did to this client since it last acted: a name taken back, a
    /// move to the lobby.
    fn catch_up(&mut self, daemon: &Daemon, peer: &Peer) {
        if let Some(guest) = daemon.take_rename(peer.id()) {
            self.name = guest;
        }
        if let Some(room) = daemon.take_move(peer.id()) {
            self.room = room;
            self.slow = None;
        }
    }

    /// A JSON client's `join`: `/join ROOM`, recovering the lines after `since` if given.
    pub(crate) fn join_since(
        &mut self,
        daemon: &Daemon,
        peer: &Arc<Peer>,
        room: &str,
        since: Option<&str>,
    ) {
        self.catch_up(daemon, peer);
        if self.allow(daemon, peer, "/join") {
            self.join(daemon, peer, room, since);
        }
    }

    /// Delivers the formatted lines gathered so far to the room.
    fn flush(&mut self, daemon: &Daemon, peer: &Peer) {
        self.flush_as(daemon, peer, false);
    }

    /// [`Chat::flush`], of `/me` lines (`me`) or chat lines.
    fn flush_as(&mut self, daemon: &Daemon, peer: &Peer, me: bool) {
        if self.out.is_empty() {
            return;
        }
        let sender = self.sender(me);
        let chunk = Chunk::relayed_from(self.out.as_bytes(), self.out_lines, &sender);
        daemon.relay(&self.room, peer.id(), &chunk, self.out_lines);
        self.out.clear();
        self.out_lines = 0;
    }

    /// Who this client's lines are from (`me`: its `/me` lines): made again only when its
    /// name changes, and shared by every chunk it sends until then.
    fn sender(&mut self, me: bool) -> Arc<Sender> {
        let cached = &mut self.senders[usize::from(me)];
        if let Some(sender) = cached.as_ref().filter(|s| *s.name == *self.name) {
            return Arc::clone(sender);
        }
        // `<NAME> ` or `* NAME ` before each line's text.
        let sender = Arc::new(Sender {
            name: Arc::from(self.name.as_str()),
            user: self.user.as_deref().map(|(sub, _)| Arc::from(sub.as_str())),
            prefix: self.name.len() + 3,
            me,
        });
        *cached = Some(Arc::clone(&sender));
        sender
    }

    /// Takes a token for one relayed line (or a command that makes others see one: `what`
    /// names it), or drops it and (at most once per period) tells the client.
    fn allow(&mut self, daemon: &Daemon, peer: &Arc<Peer>, what: &str) -> bool {
        let Some(bucket) = &mut self.bucket else {
            return true;
        };
        let now = Instant::now();
        if bucket.take(1, now) == 1 {
            return true;
        }
        if let Some(warning) = bucket.warning(now, what) {
            info!("client {}: over the rate limit, dropping lines", peer.id());
            daemon.reply(peer, &daemon.notices().line(warning));
        }
        add(&daemon.stats().dropped_rate_limit, 1);
        false
    }

    /// Sends one line to this client only.
    fn reply(&self, daemon: &Daemon, peer: &Arc<Peer>, line: &str) {
        if let Some(error) = line.strip_prefix("relayd: ") {
            debug!("client {} ({}): {error}", peer.id(), self.name);
        }
        daemon.reply(peer, &daemon.notices().line(line));
    }

    /// Runs `/command` (given without its slash). Returns the `/quit` reason if the client
    /// quit.
    fn command(
        &mut self,
        daemon: &Daemon,
        peer: &Arc<Peer>,
        command: &str,
        arg: &str,
    ) -> Option<Option<String>> {
        let command = command.to_ascii_lowercase();
        // Commands that make others see a line take a token, like the line itself would.
        if matches!(command.as_str(), "nick" | "join")
            && !self.allow(daemon, peer, &format!("/{command}"))
        {
            return None;
        }
        match command.as_str() {
            "nick" if self.user.is_some() => {
                self.reply(daemon, peer, "relayd: your name comes from your token");
            }
            "nick" => self.nick(daemon, peer, arg),
            // With keys loaded, `/auth` never reaches here: the client's thread takes it.
            "auth" => self.reply(daemon, peer, "relayd: tokens are not enabled here"),
            "who" => {
                let names = daemon.names_in(&self.room);
                let line = format!("* {} in {}: {}", names.len(), self.room, names.join(", "));
                self.reply(daemon, peer, &line);
            }
            "me" if arg.is_empty() => self.reply(daemon, peer, "relayd: usage: /me TEXT"),
            "me" => {
                if !daemon.silenced(peer, &self.room, &mut self.muted_told)
                    && slow_allows(&mut self.slow, daemon, peer, &self.room)
                    && self.allow(daemon, peer, "/me")
                    && let Some(arg) = self.censor.pass_text(daemon, peer, arg)
                {
                    let eol = daemon.notices().eol();
                    self.out.push_str(&format!("* {} {arg}{eol}", self.name));
                    self.out_lines += 1;
                    self.flush_as(daemon, peer, true);
                }
            }
            "msg" => self.msg(daemon, peer, arg),
            "join" => self.join(daemon, peer, arg, None),
            "rooms" => {
                let rooms: Vec<String> = daemon
                    .rooms()
                    .iter()
                    .map(|(name, n)| format!("{name} ({n})"))
                    .collect();
                self.reply(daemon, peer, &format!("* rooms: {}", rooms.join(", ")));
            }
            // Others see the reason: filtered like a line.
            "quit" => {
                let reason = (!arg.is_empty())
                    .then(|| self.censor.pass_text(daemon, peer, arg))
                    .flatten();
                return Some(reason.map(|r| r.into_owned()));
            }
            "help" => {
                // The moderators' commands before the closing note on `//`.
                let (last, first) = HELP.split_last().unwrap_or((&"", &[]));
                for line in first.iter().chain(moderator::HELP).chain([last]) {
                    self.reply(daemon, peer, line);
                }
            }
            command if moderator::is_command(command) => {
                let moderator = Moderator {
                    daemon,
                    peer,
                    name: &self.name,
                    room: &self.room,
                };
                moderator.run(command, arg);
            }
            _ => {
                let line = format!("relayd: unknown command /{command} (try /help)");
                self.reply(daemon, peer, &line);
            }
        }
        None
    }

    fn nick(&mut self, daemon: &Daemon, peer: &Arc<Peer>, name: &str) {
        if !valid_name(name) {
            let line = format!("relayd: invalid name {name:?} ({NAME_RULE})");
            return self.reply(daemon, peer, &line);
        }
        if name == self.name {
            return self.reply(daemon, peer, &format!("* you are already {name}"));
        }
        if reserved(name) {
            return self.reply(daemon, peer, &format!("relayd: name {name} is reserved"));
        }
        // A guest's ban follows the name: whoever takes it is closed.
        if let Some(ban) = daemon.banned_user(None, name) {
            return daemon.expel_banned(peer, &ban);
        }
        if !self.censor.allows_name(name) {
            return self.reply(daemon, peer, &format!("relayd: name {name} is not allowed"));
        }
        match daemon.rename(peer.id(), name) {
            Ok(old) => {
                self.name = name.to_string();
                info!("client {}: {old} is now {name}", peer.id());
                let room = daemon.members(&self.room);
                let member = daemon.member(peer, name, &self.room);
                let notice = daemon.notices().renamed(member, &old, &self.room);
                daemon.notify(&self.room, &room, peer.id(), &notice);
                daemon.present(peer.id(), name, &self.room);
                self.reply(daemon, peer, &format!("* you are now {name}"));
            }
            Err(NameError::Taken) => {
                self.reply(daemon, peer, &format!("relayd: name {name} is taken"))
            }
            Err(NameError::Unavailable) => self.reply(
                daemon,
                peer,
                "relayd: names cannot change while the cluster is unreachable, try again later",
            ),
        }
    }

    fn msg(&mut self, daemon: &Daemon, peer: &Arc<Peer>, arg: &str) {
        let Some((to, text)) = arg
            .split_once([' ', '\t'])
            .map(|(to, text)| (to, text.trim()))
            .filter(|(_, text)| !text.is_empty())
        else {
            return self.reply(daemon, peer, "relayd: usage: /msg NAME TEXT");
        };
        // By name only: an id is the operator's way to name a client, not people's.
        let no_such_user = format!("relayd: no such user {to}");
        if to.is_empty() || is_id(to) {
            return self.reply(daemon, peer, &no_such_user);
        }
        if to.eq_ignore_ascii_case(&self.name) {
            return self.reply(daemon, peer, "relayd: that is you");
        }
        if daemon.silenced(peer, &self.room, &mut self.muted_told)
            || !self.allow(daemon, peer, "/msg")
        {
            return;
        }
        let Some(text) = self.censor.pass_text(daemon, peer, text) else {
            return;
        };
        let prefix = format!("[private] <{}> ", self.name);
        let private = Kind::Private {
            from: self.name.as_str().into(),
            user: self.user.as_deref().map(|(sub, _)| sub.as_str().into()),
            to: to.into(),
            time: now_ms(),
            prefix: prefix.len(),
        };
        let line = daemon
            .notices()
            .notice(private, None, format_args!("{prefix}{text}"));
        if daemon.private(to, &line).is_err() {
            self.reply(daemon, peer, &no_such_user);
        }
    }

    fn join(&mut self, daemon: &Daemon, peer: &Arc<Peer>, room: &str, since: Option<&str>) {
        if !valid_room(room) {
            let line = format!("relayd: invalid room {room:?} (1-32 letters, digits, _ - .)");
            return self.reply(daemon, peer, &line);
        }
        if room == self.room {
            return self.reply(daemon, peer, &format!("relayd: you are already in {room}"));
        }
        let sub = self.user.as_deref().map(|(sub, _)| sub.as_str());
        if let Some(ban) = daemon.banned_from(room, sub, &self.name) {
            add(&daemon.stats().refused_banned, 1);
            info!("client {}: /join {room} refused: banned", peer.id());
            return self.reply(daemon, peer, &format!("relayd: {}", ban.banned_text()));
        }
        // The lobby is everyone's: it is where a client starts.
        if let Some((_, Some(rooms))) = self.user.as_deref()
            && room != LOBBY
            && !rooms.iter().any(|r| r == room)
        {
            let line = format!("relayd: your token does not let you join {room}");
            return self.reply(daemon, peer, &line);
        }
        if let Some(rooms) = &mut self.new_rooms
            && !rooms.enter(room, Instant::now())
        {
            return self.reply(
                daemon,
                peer,
                "relayd: too many rooms too fast, wait a moment",
            );
        }
        let notices = daemon.notices();
        let since = since.and_then(|s| {
            let id = LineId::parse(s);
            if id.is_none() {
                self.reply(daemon, peer, &format!("relayd: {}", bad_since(Some(s))));
            }
            id
        });
        let greet = |online| vec![notices.now_in(room, online)];
        let moved = daemon.change_room(peer, room, since, greet);
        let Some((left, joined)) = moved else {
            return;
        };
        let old = std::mem::replace(&mut self.room, room.to_string());
        self.slow = None;
        let name = &self.name;
        // A user's other connections: the old room still has it, the new one had it.
        if !self.here_already(&left, peer) {
            let online = daemon.online(&old, &left);
            let member = daemon.member(peer, name, &old);
            let why = format_args!("joined {room}");
            daemon.notify(
                &old,
                &left,
                peer.id(),
                &notices.left(member, why, online, &old),
            );
        }
        if !self.here_already(&joined, peer) {
            let member = daemon.member(peer, name, room);
            let joined_notice = notices.joined(member, daemon.online(room, &joined), room);
            daemon.notify(room, &joined, peer.id(), &joined_notice);
        }
        daemon.present(peer.id(), name, room);
    }
}

/// The rooms a client entered lately, and the bucket it pays for others with.
struct NewRooms {
    bucket: Bucket,
    /// The last few it entered (as many as the bucket holds), to go back to for free.
    recent: VecDeque<String>,
}

impl NewRooms {
    fn new() -> NewRooms {
        NewRooms {
            bucket: Bucket::new(NEW_ROOMS),
            recent: VecDeque::new(),
        }
    }

    /// Whether the client may enter `room` now: the lobby and the rooms it was in lately are
    /// free, another takes a token.
    fn enter(&mut self, room: &str, now: Instant) -> bool {
        if room == LOBBY {
            return true;
        }
        if let Some(i) = self.recent.iter().position(|r| r == room) {
            let room = self.recent.remove(i).unwrap_or_default();
            self.recent.push_back(room);
            return true;
        }
        if self.bucket.take(1, now) == 0 {
            return false;
        }
        if self.recent.len() == NEW_ROOMS.lines as usize {
            self.recent.pop_front();
        }
        self.recent.push_back(room.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn new_rooms_cost_a_token_and_rooms_of_late_do_not() {
        let t0 = Instant::now();
        let mut rooms = NewRooms::new();
        for n in 0..8 {
            assert!(rooms.enter(&format!("r{n}"), t0), "r{n}");
        }
        assert!(!rooms.enter("r8", t0));
        // Back and forth between rooms it was in, and the lobby, as often as it likes.
        for _ in 0..100 {
            assert!(rooms.enter("r0", t0) && rooms.enter("r7", t0) && rooms.enter(LOBBY, t0));
        }
        // One more every 30 s; it pushes out the room it was in longest ago.
        assert!(rooms.enter("r8", t0 + Duration::from_secs(30)));
        assert!(!rooms.enter("r1", t0 + Duration::from_secs(30)));
        assert!(rooms.enter("r0", t0 + Duration::from_secs(30)));
    }

    #[test]
    fn names() {
        assert!(valid_name("alice_B-2.0"));
        assert!(valid_name("7a"));
        assert!(!valid_name("7"));
        assert!(!valid_name("007"));
        assert!(valid_room("007"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(33)));
        assert!(!valid_name("al ice"));
        assert!(!valid_name("älice"));
        assert!(reserved("Guest12"));
        assert!(!reserved("guest"));
        assert!(!reserved("guest1a"));
    }

    #[test]
    fn a_command_is_one_line() {
        assert!(command_with_more_lines(b"/nick a\nhi\n"));
        assert!(command_with_more_lines(b"/nick a\n\n"));
        assert!(command_with_more_lines(b"\x07/me x\n/msg b hi\n"));
        assert!(!command_with_more_lines(b"/nick a\n"));
        assert!(!command_with_more_lines(b"//not a command\nhi\n"));
        assert!(!command_with_more_lines(b"hi\n/nick a\n"));
        assert!(!command_with_more_lines(b""));
    }
}
