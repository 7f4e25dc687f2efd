//! The `relayd.v1.json` events: what a WebSocket client that asked for the subprotocol gets
//! in place of each line (the reference is the README's "JSON subprotocol" section).
//!
//! A chunk's events are built from the chunk's bytes and what it carries about them — its
//! lines' room, ids and sender, or its notice's kind — once, by the first JSON recipient
//! that needs them, and shared by all the others (`chunk.rs`); a chunk no JSON client gets
//! never builds them. A chunk that carries nothing (a line relayd wrote before it said what
//! it was, or one from another node) is still never lost: each line becomes a notice, of
//! kind `error` if it starts `relayd: `, else `info`.

use std::borrow::Cow;

use serde::Serialize;

use crate::delivery::line_id::LineId;
use crate::delivery::ws_frame;
use crate::framing::without_line_end;

/// What a chunk of relayd's own lines is, for JSON clients: the kind of notice its first line
/// is, and the room it is about (the lines after the first are notices by their prefix, in
/// the same room).
#[derive(Debug)]
pub(crate) struct Notice {
    pub(crate) kind: Kind,
    pub(crate) room: Option<Box<str>>,
}

/// A notice's `kind`, with the fields that kind adds.
#[derive(Debug)]
pub(crate) enum Kind {
    /// The chat welcome: your name and how many are online.
    Welcome {
        name: Box<str>,
        online: usize,
    },
    Join {
        member: Member,
        online: usize,
    },
    Leave {
        member: Member,
        online: usize,
    },
    /// `member` by its new name.
    Nick {
        member: Member,
        old: Box<str>,
    },
    /// A kick, ban, mute, slow mode: `action` names it.
    Moderation {
        action: &'static str,
    },
    /// The operator's or the API's publish, broadcast or send.
    Server,
    /// A live room's busy sign: lines/s shown and sent.
    Live {
        shown: u64,
        sent: u64,
    },
    Info,
    /// Not a notice: a private message (`/msg`), whose text starts `prefix` bytes into the
    /// line.
    Private {
        from: Box<str>,
        user: Option<Box<str>>,
        to: Box<str>,
        time: u64,
        prefix: usize,
    },
}

/// Someone in a room, as `presence` lists and `join`/`leave`/`nick` notices carry them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) user: Option<String>,
    pub(crate) role: Role,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// A token's role `mod`, or one of the room's moderators.
    Mod,
    /// Signed in with a token.
    User,
    Guest,
}

/// Relayed lines, as a `line` event each: their room, the id of the first (the others'
/// follow it), who sent them, and how many bytes of each are its chat prefix (`<alice> `).
pub(crate) struct Lines<'a> {
    pub(crate) room: &'a str,
    pub(crate) first: LineId,
    /// Ids numbered one by one (one node's), not parts of one Redis entry.
    pub(crate) numbered: bool,
    /// `None`: raw mode, where lines are from nobody in particular.
    pub(crate) from: Option<&'a str>,
    pub(crate) user: Option<&'a str>,
    pub(crate) prefix: usize,
    pub(crate) time: u64,
    pub(crate) me: bool,
}

/// The events for `bytes` (whole lines), as WebSocket text frames: `lines` says they are
/// relayed lines, else `notice` what relayd's own lines are.
pub(crate) fn frames(bytes: &[u8], lines: Option<Lines<'_>>, notice: Option<&Notice>) -> Box<[u8]> {
    let mut out = Vec::with_capacity(bytes.len() * 2 + 64);
    let mut each = bytes.split_inclusive(|&b| b == b'\n').map(without_line_end);
    match (lines, notice) {
        (Some(lines), _) => {
            for (k, line) in each.enumerate() {
                push(&mut out, &line_event(&lines, k, line));
            }
        }
        (None, Some(notice)) => {
            if let Some(first) = each.next() {
                out.extend_from_slice(&notice_event(Some(notice), first));
            }
            let rest = Notice {
                kind: Kind::Info,
                room: notice.room.clone(),
            };
            for line in each {
                out.extend_from_slice(&notice_event(Some(&rest), line));
            }
        }
        (None, None) => {
            for line in each {
                out.extend_from_slice(&notice_event(None, line));
            }
        }
    }
    out.into_boxed_slice()
}

/// One event on its own, as a frame: `presence`, `resumed`.
pub(crate) fn frame(event: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    push(&mut out, event);
    out
}

/// `{"type":"presence","room":R,"members":[...]}`.
#[derive(Serialize)]
pub(crate) struct Presence<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) room: &'a str,
    pub(crate) members: &'a [Member],
}

/// `{"type":"resumed","room":R,"recovered":B,"missed":N|null}`.
#[derive(Serialize)]
pub(crate) struct Resumed<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) room: &'a str,
    pub(crate) recovered: bool,
    pub(crate) missed: Option<u64>,
}

/// Events are written from structs, so their fields come in the order the README shows.
#[derive(Serialize)]
struct LineEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    id: String,
    from: Option<&'a str>,
    user: Option<&'a str>,
    text: Cow<'a, str>,
    time: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    me: bool,
}

#[derive(Serialize)]
struct NoticeEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "kind")]
    notice: &'static str,
    room: Option<&'a str>,
    text: &'a str,
    #[serde(flatten)]
    extra: Extra<'a>,
}

/// The fields a notice's kind adds.
#[derive(Serialize)]
#[serde(untagged)]
enum Extra<'a> {
    Nothing {},
    Welcome { name: &'a str, online: usize },
    Member { member: &'a Member, online: usize },
    Nick { member: &'a Member, old: &'a str },
    Moderation { action: &'static str },
    Live { shown: u64, sent: u64 },
}

#[derive(Serialize)]
struct PrivateEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    from: &'a str,
    user: Option<&'a str>,
    to: &'a str,
    text: &'a str,
    time: u64,
}

fn push(out: &mut Vec<u8>, event: &impl Serialize) {
    // Serializing these structs to a string cannot fail (no maps with non-string keys).
    let text = serde_json::to_string(event).unwrap_or_default();
    ws_frame::push_text(out, &text);
}

fn line_event<'a>(lines: &'a Lines<'_>, k: usize, line: &'a [u8]) -> LineEvent<'a> {
    LineEvent {
        kind: "line",
        room: lines.room,
        id: lines.first.nth(k, lines.numbered).to_string(),
        from: lines.from,
        user: lines.user,
        text: String::from_utf8_lossy(line.get(lines.prefix..).unwrap_or_default()),
        time: lines.time,
        me: lines.me,
    }
}

fn notice_event(notice: Option<&Notice>, line: &[u8]) -> Vec<u8> {
    let line = String::from_utf8_lossy(line);
    let room = notice.and_then(|n| n.room.as_deref());
    let fallback = if line.starts_with("relayd: ") {
        "error"
    } else {
        "info"
    };
    let (kind, extra) = match notice.map(|n| &n.kind) {
        None | Some(Kind::Info) => (fallback, Extra::Nothing {}),
        Some(Kind::Server) => ("server", Extra::Nothing {}),
        Some(Kind::Welcome { name, online }) => (
            "welcome",
            Extra::Welcome {
                name,
                online: *online,
            },
        ),
        Some(Kind::Join { member, online }) => (
            "join",
            Extra::Member {
                member,
                online: *online,
            },
        ),
        Some(Kind::Leave { member, online }) => (
            "leave",
            Extra::Member {
                member,
                online: *online,
            },
        ),
        Some(Kind::Nick { member, old }) => ("nick", Extra::Nick { member, old }),
        Some(Kind::Moderation { action }) => ("moderation", Extra::Moderation { action }),
        Some(Kind::Live { shown, sent }) => (
            "live",
            Extra::Live {
                shown: *shown,
                sent: *sent,
            },
        ),
        Some(Kind::Private {
            from,
            user,
            to,
            time,
            prefix,
        }) => {
            return frame(&PrivateEvent {
                kind: "private",
                from,
                user: user.as_deref(),
                to,
                text: line.get(*prefix..).unwrap_or_default(),
                time: *time,
            });
        }
    };
    frame(&NoticeEvent {
        kind: "notice",
        notice: kind,
        room,
        text: &line,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON texts in `frames` (short frames only: a 2-byte header each).
    fn texts(frames: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < frames.len() {
            let len = usize::from(frames[at + 1]);
            out.push(String::from_utf8(frames[at + 2..at + 2 + len].to_vec()).unwrap());
            at += 2 + len;
        }
        out
    }

    #[test]
    fn lines_without_a_notice_fall_back_by_their_prefix() {
        let frames = frames(b"relayd: no\n* hi\nplain\r\n", None, None);
        assert_eq!(
            texts(&frames),
            [
                r#"{"type":"notice","kind":"error","room":null,"text":"relayd: no"}"#,
                r#"{"type":"notice","kind":"info","room":null,"text":"* hi"}"#,
                r#"{"type":"notice","kind":"info","room":null,"text":"plain"}"#,
            ]
        );
    }

    #[test]
    fn a_notice_s_first_line_has_its_kind_and_the_rest_their_prefix_s() {
        let notice = Notice {
            kind: Kind::Welcome {
                name: "a".into(),
                online: 2,
            },
            room: Some("lobby".into()),
        };
        let frames = frames(b"* welcome\nmotd\n", None, Some(&notice));
        assert_eq!(
            texts(&frames),
            [
                r#"{"type":"notice","kind":"welcome","room":"lobby","text":"* welcome","name":"a","online":2}"#,
                r#"{"type":"notice","kind":"info","room":"lobby","text":"motd"}"#,
            ]
        );
    }
}
