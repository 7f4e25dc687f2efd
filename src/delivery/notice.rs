//! Every line relayd writes on its own account — welcome, notices, errors, refusals — and why
//! a client left.
//!
//! They are built here, and only here, so that the line ending (`--crlf` in chat mode) is
//! applied once and a client never gets a line that ends differently from the others.
//! Clients tell relayd's own lines by their start: `relayd: ` for errors and refusals, `* `
//! for chat notices.

use std::fmt;

use crate::config::Config;
use crate::delivery::chunk::Chunk;
use crate::delivery::json_event::{Kind, Member, Notice};
use crate::policy::token::TokenError;

/// Why a client left. Its `Display` is what the log and the client's room are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Departure {
    /// End of input: Ctrl-C in `nc`, a half-close.
    ClosedByClient,
    /// A read failed, e.g. the client reset the connection.
    ReadError(String),
    /// `/quit [REASON]`.
    Quit(Option<String>),
    /// The operator's `kick`, with its reason.
    Kicked(Option<String>),
    /// Banned (its user, name or address): what it is told, after `relayd: `.
    Banned(String),
    /// A reload brought `--allow`/`--deny` rules that refuse its address.
    NoLongerAllowed,
    /// Its queue stayed full for `--stall-timeout`.
    TooSlow {
        pending: usize,
    },
    /// Its socket took no byte for `--write-timeout`.
    WriteTimeout {
        pending: usize,
    },
    /// A send to it failed: its connection is gone.
    SendFailed(String),
    IdleTimeout,
    AuthTimeout,
    AuthFailed,
    Shutdown,
    /// No thread could be started for it.
    OutOfThreads,
    /// Its signed token was refused (`/auth TOKEN`, `?token=`).
    BadToken(TokenError),
    /// `--require-token`: its first line was not `/auth TOKEN`, or came too late.
    TokenRequired,
    /// Its token's `exp` passed without a fresh one.
    TokenExpired,
    /// Its token names a user whose name another user (another `sub`) holds now.
    NameInUse(String),
    /// Its thread panicked (a bug): it is still taken out cleanly.
    Panicked,
    /// A WebSocket client sent a binary message: relayd relays text.
    BinaryMessage,
    /// A WebSocket client sent a message longer than `--max-line` bytes.
    MessageTooLong(usize),
    /// A WebSocket client broke the protocol (a bad frame; `utf8`: text that is not UTF-8).
    Protocol {
        utf8: bool,
        what: String,
    },
    /// A WebSocket client did not answer a ping within `--write-timeout`.
    NoPong,
}

impl Departure {
    /// Whether relayd ended the connection itself, rather than the client or its network.
    pub(crate) fn by_daemon(&self) -> bool {
        !matches!(
            self,
            Departure::ClosedByClient
                | Departure::ReadError(_)
                | Departure::Quit(_)
                | Departure::SendFailed(_)
        )
    }

    /// The close code a WebSocket client is told (RFC 6455, 7.4.1); `None` when it closed
    /// the connection itself, or it is gone.
    pub(crate) fn ws_close_code(&self) -> Option<u16> {
        Some(match self {
            Departure::ClosedByClient | Departure::ReadError(_) | Departure::SendFailed(_) => {
                return None;
            }
            Departure::Quit(_) | Departure::IdleTimeout => 1000,
            Departure::Shutdown | Departure::NoPong => 1001,
            Departure::Protocol { utf8: false, .. } => 1002,
            Departure::BinaryMessage => 1003,
            Departure::Protocol { utf8: true, .. } => 1007,
            Departure::Kicked(_)
            | Departure::Banned(_)
            | Departure::NoLongerAllowed
            | Departure::TooSlow { .. }
            | Departure::WriteTimeout { .. }
            | Departure::AuthTimeout
            | Departure::AuthFailed
            | Departure::BadToken(_)
            | Departure::TokenRequired
            | Departure::TokenExpired
            | Departure::NameInUse(_) => 1008,
            Departure::MessageTooLong(_) => 1009,
            Departure::Panicked => 1011,
            Departure::OutOfThreads => 1013,
        })
    }
}

impl fmt::Display for Departure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Departure::ClosedByClient => f.write_str("closed by client"),
            Departure::ReadError(e) => write!(f, "read error: {e}"),
            Departure::Quit(None) => f.write_str("quit"),
            Departure::Quit(Some(reason)) => f.write_str(reason),
            Departure::Kicked(None) => f.write_str("kicked by operator"),
            Departure::Kicked(Some(reason)) => write!(f, "kicked by operator: {reason}"),
            Departure::Banned(_) => f.write_str("banned"),
            Departure::NoLongerAllowed => f.write_str("no longer allowed"),
            Departure::TooSlow { pending } => write!(f, "too slow ({pending} bytes pending)"),
            Departure::WriteTimeout { pending } => {
                write!(f, "too slow (write timeout, {pending} bytes pending)")
            }
            Departure::SendFailed(e) => write!(f, "send failed: {e}"),
            Departure::IdleTimeout => f.write_str("idle timeout"),
            Departure::AuthTimeout => f.write_str("authentication timeout"),
            Departure::AuthFailed => f.write_str("authentication failed"),
            Departure::Shutdown => f.write_str("shutdown"),
            Departure::BadToken(e) => write!(f, "bad token: {e}"),
            Departure::TokenRequired => f.write_str("a token is required"),
            Departure::TokenExpired => f.write_str("token expired"),
            Departure::NameInUse(name) => write!(f, "the name {name} is another user's"),
            Departure::OutOfThreads => f.write_str("out of threads"),
            Departure::Panicked => f.write_str("thread panicked"),
            Departure::BinaryMessage => f.write_str("binary message"),
            Departure::MessageTooLong(max) => write!(f, "message too long (max {max} bytes)"),
            Departure::Protocol { what, .. } => write!(f, "protocol error: {what}"),
            Departure::NoPong => f.write_str("no answer to ping"),
        }
    }
}

/// Builds relayd's own lines with the right line ending.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notices {
    eol: &'static str,
}

impl Notices {
    pub(crate) fn new(config: &Config) -> Notices {
        Notices {
            eol: if config.chat && config.crlf {
                "\r\n"
            } else {
                "\n"
            },
        }
    }

    /// The line ending, for code that gathers several lines into one chunk.
    pub(crate) fn eol(&self) -> &'static str {
        self.eol
    }

    /// `text` as a line.
    pub(crate) fn line(&self, text: impl fmt::Display) -> Chunk {
        Chunk::from(format!("{text}{}", self.eol).as_bytes())
    }

    /// `text` as a line that JSON clients get as a notice of `kind` about `room`.
    pub(crate) fn notice(&self, kind: Kind, room: Option<&str>, text: impl fmt::Display) -> Chunk {
        let notice = Notice {
            kind,
            room: room.map(Box::from),
        };
        Chunk::notice(format!("{text}{}", self.eol).as_bytes(), notice)
    }

    /// What a moderator (or the daemon, for one) did in `room`: `action` is `kick`, `ban`,
    /// `mute`, `slow`, ...
    pub(crate) fn moderation(
        &self,
        action: &'static str,
        room: Option<&str>,
        text: impl fmt::Display,
    ) -> Chunk {
        self.notice(Kind::Moderation { action }, room, text)
    }

    /// An error or refusal for one client: `relayd: WHAT`.
    pub(crate) fn error(&self, what: impl fmt::Display) -> Chunk {
        self.line(format_args!("relayd: {what}"))
    }

    /// What a client is told as it is closed for `why`, if anything.
    pub(crate) fn farewell(&self, why: &Departure) -> Option<Chunk> {
        Some(match why {
            Departure::TooSlow { pending } | Departure::WriteTimeout { pending } => self.error(
                format_args!("disconnected: too slow ({pending} bytes pending)"),
            ),
            Departure::Banned(text) => self.moderation("ban", None, format_args!("relayd: {text}")),
            Departure::Kicked(_) => self.moderation("kick", None, format_args!("relayd: {why}")),
            Departure::NoLongerAllowed
            | Departure::IdleTimeout
            | Departure::AuthTimeout
            | Departure::BadToken(_)
            | Departure::TokenRequired
            | Departure::TokenExpired
            | Departure::NameInUse(_)
            | Departure::MessageTooLong(_)
            | Departure::Protocol { .. } => self.error(why),
            Departure::BinaryMessage => self.error("binary messages are not accepted, send text"),
            Departure::OutOfThreads => self.error("server out of resources, try again later"),
            _ => return None,
        })
    }

    /// The last line every client gets when the daemon stops.
    pub(crate) fn shutting_down(&self) -> Chunk {
        self.error("shutting down")
    }

    pub(crate) fn server_full(&self, max_clients: usize) -> Chunk {
        self.error(format_args!("server full ({max_clients} clients)"))
    }

    pub(crate) fn too_many_from_address(&self) -> Chunk {
        self.error("too many connections from your address")
    }

    /// Said at once to a client that sent a wrong secret (the connection closes a little
    /// later, to slow guessing).
    pub(crate) fn auth_failed(&self) -> Chunk {
        self.error("authentication failed")
    }

    pub(crate) fn line_too_long(&self, max_line: usize) -> Chunk {
        self.error(format_args!(
            "line too long (max {max_line} bytes), discarded"
        ))
    }

    /// The chat welcome to `room`: the welcome line, then the `--motd` lines, in one chunk.
    pub(crate) fn welcome(&self, name: &str, online: usize, motd: &[String], room: &str) -> Chunk {
        let eol = self.eol;
        let mut text = format!(
            "* welcome to relayd, you are {name} ({online} online) — /help for commands{eol}"
        );
        for line in motd {
            text.push_str(&clean(line.as_bytes()));
            text.push_str(eol);
        }
        let kind = Kind::Welcome {
            name: name.into(),
            online,
        };
        let notice = Notice {
            kind,
            room: Some(room.into()),
        };
        Chunk::notice(text.as_bytes(), notice)
    }

    /// What a client is told as it enters `room`, where `online` are now.
    pub(crate) fn now_in(&self, room: &str, online: usize) -> Chunk {
        let text = format!("* you are now in {room} ({online} online)");
        self.notice(Kind::Info, Some(room), text)
    }

    /// `member` entered `room`.
    pub(crate) fn joined(&self, member: Member, online: usize, room: &str) -> Chunk {
        let text = format!("* {} joined ({online} online)", member.name);
        self.notice(Kind::Join { member, online }, Some(room), text)
    }

    /// `member` left `room`: `why` says why, as in `* alice left (quit) (3 online)`.
    pub(crate) fn left(
        &self,
        member: Member,
        why: impl fmt::Display,
        online: usize,
        room: &str,
    ) -> Chunk {
        let text = format!("* {} left ({why}) ({online} online)", member.name);
        self.notice(Kind::Leave { member, online }, Some(room), text)
    }

    /// `member`, in `room`, was `old` until now.
    pub(crate) fn renamed(&self, member: Member, old: &str, room: &str) -> Chunk {
        let text = format!("* {old} is now {}", member.name);
        let old = old.into();
        self.notice(Kind::Nick { member, old }, Some(room), text)
    }

    /// An operator's push (to `room`, if it is published there): `* [server] TEXT` in chat
    /// mode, the bare line in raw mode; cleaned like any chat line in both.
    pub(crate) fn push(&self, chat: bool, text: &str, room: Option<&str>) -> Chunk {
        // Cleaned in every mode: in raw mode too the operator's line lands on people's
        // terminals, where an escape sequence would act on their screens.
        let text = clean(text.as_bytes());
        if chat {
            self.notice(Kind::Server, room, format_args!("* [server] {text}"))
        } else {
            self.notice(Kind::Server, room, text)
        }
    }
}

/// One line as people may see it: without its line end (`\n`, and the `\r` of telnet),
/// invalid UTF-8 replaced by U+FFFD, and control characters other than TAB removed, so that
/// nobody can send terminal escape sequences to others' screens.
pub(crate) fn clean(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line)
        .chars()
        .filter(|&c| c == '\t' || !c.is_control())
        .collect()
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
    fn every_line_ends_with_the_configured_ending() {
        let crlf = Notices::new(&Config {
            chat: true,
            crlf: true,
            ..Config::default()
        });
        let why = Departure::TooSlow { pending: 7 };
        for chunk in [
            crlf.server_full(3),
            crlf.too_many_from_address(),
            crlf.farewell(&why).unwrap(),
            crlf.farewell(&Departure::OutOfThreads).unwrap(),
            crlf.welcome("a", 1, &["motd".into()], "lobby"),
        ] {
            assert!(
                chunk.ends_with(b"\r\n"),
                "{:?}",
                String::from_utf8_lossy(&chunk)
            );
        }
        // --crlf is a chat-mode option: raw mode is a byte pipe and keeps `\n`.
        let raw = Notices::new(&Config {
            crlf: true,
            ..Config::default()
        });
        assert_eq!(
            &*raw.too_many_from_address(),
            b"relayd: too many connections from your address\n"
        );
    }
}
