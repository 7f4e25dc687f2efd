//! A room's moderator's commands (`/kick`, `/mute`, `/unmute`, `/ban`, `/unban`, `/slow`,
//! `/recall`), run in the room the moderator is in, and the slow mode each client keeps to.
//! Who is a moderator and what each action does is the daemon's (`daemon/rooms.rs`); here:
//! reading the command, answering, and what the room is told.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};

use crate::daemon::Daemon;
use crate::delivery::peer::Peer;
use crate::policy::moderation::Kind;
use crate::policy::rooms::parse_slow;
use crate::stats::add;

/// The commands, for `/help`.
pub(crate) const HELP: &[&str] = &[
    "* for a room's moderators, in the room:",
    "*   /kick NAME [REASON]              move NAME out of the room, to the lobby",
    "*   /mute NAME [DURATION] [REASON]   nothing NAME says here is relayed (30s 10m 2h 7d)",
    "*   /unmute NAME                     lift it",
    "*   /ban NAME [DURATION] [REASON]    NAME cannot join the room again until then",
    "*   /unban NAME                      lift it",
    "*   /slow SECONDS                    one line per SECONDS for each user (0: off)",
    "*   /recall ID                       take line ID back (pages remove it; terminals keep it)",
];

/// Whether `command` is a moderator's.
pub(crate) fn is_command(command: &str) -> bool {
    matches!(
        command,
        "kick" | "mute" | "unmute" | "ban" | "unban" | "slow" | "recall"
    )
}

/// Who runs a command: its client, its name, the room it is in.
pub(crate) struct Moderator<'a> {
    pub(crate) daemon: &'a Daemon,
    pub(crate) peer: &'a Arc<Peer>,
    pub(crate) name: &'a str,
    pub(crate) room: &'a str,
}

impl Moderator<'_> {
    /// Runs `/command arg`: its answer to the moderator, and the room told.
    pub(crate) fn run(&self, command: &str, arg: &str) {
        if !self.daemon.is_moderator(self.peer, self.room) {
            return self.reply("relayd: you are not a moderator here");
        }
        let done = match command {
            "recall" => return self.recall(arg),
            "slow" => self.slow(arg),
            _ => self.on_user(command, arg),
        };
        match done {
            Ok(notice) => {
                let room = self.daemon.members(self.room);
                let action = match command {
                    "kick" => "kick",
                    "mute" => "mute",
                    "unmute" => "unmute",
                    "ban" => "ban",
                    "unban" => "unban",
                    _ => "slow",
                };
                let notices = self.daemon.notices();
                let chunk = notices.moderation(action, Some(self.room), &notice);
                self.daemon.notify(self.room, &room, self.peer.id(), &chunk);
                self.daemon.reply(self.peer, &chunk);
            }
            Err(error) => self.reply(&format!("relayd: {error}")),
        }
    }

    /// `/kick`, `/mute`, `/unmute`, `/ban`, `/unban`: what the room is told, or the error.
    fn on_user(&self, command: &str, arg: &str) -> Result<String, String> {
        let usage = || match command {
            "kick" => "usage: /kick NAME [REASON]".to_string(),
            "unmute" | "unban" => format!("usage: /{command} NAME"),
            _ => format!("usage: /{command} NAME [DURATION] [REASON]"),
        };
        let (name, rest) = split_word(arg);
        if name.is_empty() || (command.starts_with("un") && !rest.is_empty()) {
            return Err(usage());
        }
        let target = self.daemon.named(name)?;
        if target.name.eq_ignore_ascii_case(self.name) {
            return Err("that is you".into());
        }
        let (who, by, room) = (&target.name, self.name, self.room);
        let kind = if command.ends_with("ban") {
            Kind::Ban
        } else {
            Kind::Mute
        };
        if command == "kick" {
            let why = match rest {
                "" => format!("you were kicked from {room} by {by}"),
                reason => format!("you were kicked from {room} by {by}: {reason}"),
            };
            if self.daemon.kick_from_room(&target.user, room, &why) == 0 {
                return Err(format!("{who} is not in {room}"));
            }
            info!("{by}: kicked {who} out of {room}: {rest}");
            return Ok(with_reason(format!("* {who} was kicked by {by}"), rest));
        }
        if command.starts_with("un") {
            self.daemon
                .lift_room(kind, room, &target.user, by)
                .map_err(|e| e.to_string())?;
            return Ok(format!("* {who} was {command}{} by {by}", past(kind)));
        }
        let (word, after) = split_word(rest);
        let (duration, reason) = match word.starts_with(|c: char| c.is_ascii_digit()) {
            true => (Some(word), after),
            false => (None, rest),
        };
        let reason = (!reason.is_empty()).then_some(reason);
        self.daemon
            .moderate_room(kind, room, &target.user, duration, reason, by)
            .map_err(|e| e.to_string())?;
        let what = match duration {
            Some(d) => format!("* {who} was {command}{} for {d} by {by}", past(kind)),
            None => format!("* {who} was {command}{} by {by}", past(kind)),
        };
        Ok(with_reason(what, reason.unwrap_or_default()))
    }

    /// `/slow SECONDS`.
    fn slow(&self, arg: &str) -> Result<String, String> {
        if arg.is_empty() {
            return Err("usage: /slow SECONDS (0: off)".into());
        }
        let seconds = parse_slow(arg)?;
        self.daemon
            .set_slow(self.room, seconds, self.name)
            .map_err(|e| e.to_string())?;
        Ok(match seconds {
            0 => format!("* {} ended slow mode", self.name),
            n => format!("* {} set slow mode: one line every {n} s", self.name),
        })
    }

    /// `/recall ID`: the moderator alone is answered; the room's JSON clients get the
    /// recall itself, and nothing is said to the others (see `daemon/recall.rs`).
    fn recall(&self, arg: &str) {
        if arg.is_empty() || arg.contains([' ', '\t']) {
            return self.reply("relayd: usage: /recall ID");
        }
        match self.daemon.recall(self.room, arg, self.name) {
            Ok(true) => self.reply(&format!("* line {arg} recalled")),
            Ok(false) => self.reply(&format!(
                "* line {arg} recalled (it was no longer in the history)"
            )),
            Err(e) => self.reply(&format!("relayd: {e}")),
        }
    }

    fn reply(&self, line: &str) {
        if let Some(error) = line.strip_prefix("relayd: ") {
            debug!("client {} ({}): {error}", self.peer.id(), self.name);
        }
        self.daemon
            .reply(self.peer, &self.daemon.notices().line(line));
    }
}

/// `ban` → `banned`, `mute` → `muted`: what follows the command's name.
fn past(kind: Kind) -> &'static str {
    match kind {
        Kind::Ban => "ned",
        Kind::Mute => "d",
    }
}

fn with_reason(line: String, reason: &str) -> String {
    match reason {
        "" => line,
        reason => format!("{line}: {reason}"),
    }
}

/// The first word and the (trimmed) rest.
fn split_word(s: &str) -> (&str, &str) {
    match s.split_once([' ', '\t']) {
        Some((word, rest)) => (word, rest.trim()),
        None => (s, ""),
    }
}

/// One client's pace in a slow room: when its last line went through, and when it was last
/// told it sends too fast. Owned by its thread (boxed, and only once it is in a slow room:
/// most never are); a new room starts afresh.
#[derive(Default)]
pub(crate) struct Slow {
    sent: Option<Instant>,
    told: Option<Instant>,
}

/// Whether a line of `peer`'s may go to `room` now (`pace`: its [`Slow`]); one over the
/// room's slow mode is dropped, and its sender told at most once per period. Moderators are
/// exempt.
pub(crate) fn slow_allows(
    pace: &mut Option<Box<Slow>>,
    daemon: &Daemon,
    peer: &Arc<Peer>,
    room: &str,
) -> bool {
    let Some(seconds) = daemon.slow_mode(room) else {
        return true;
    };
    if daemon.is_moderator(peer, room) {
        return true;
    }
    let pace = pace.get_or_insert_default();
    let period = Duration::from_secs(seconds.into());
    let now = Instant::now();
    if pace.sent.is_none_or(|t| now.duration_since(t) >= period) {
        pace.sent = Some(now);
        return true;
    }
    add(&daemon.stats().dropped_slow, 1);
    if pace.told.is_none_or(|t| now.duration_since(t) >= period) {
        pace.told = Some(now);
        info!("client {}: slow mode in {room}, dropping lines", peer.id());
        let line = format!("relayd: slow mode: one line every {seconds} s in {room}");
        daemon.reply(peer, &daemon.notices().moderation("slow", Some(room), line));
    }
    false
}
