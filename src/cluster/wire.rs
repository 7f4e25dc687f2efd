//! The cluster's wire format: how each kind of message is built, and read back.
//!
//! A message is `node \0 kind payload`: the sending node's id, then one byte saying what it
//! is (see [`Event`]). Node ids, names and room names never hold a NUL (checked at startup
//! and by the chat parser respectively), so a NUL ends each of them; numbers are big-endian.
//! Each kind's builder and its reading sit side by side here, so that the two cannot drift.

use crate::cluster::MAX_NODE_ID;
use crate::cluster::presence::Present;
use crate::config::{is_token, valid_name, valid_room};
use crate::delivery::chunk::Sender;
use crate::delivery::line_id::LineId;

/// A message from another node, as the `deliver` hook gets it.
#[derive(Debug, PartialEq)]
pub(crate) enum Event<'a> {
    /// `K` (or `L`, from a node of a relayd before line ids): a client's lines for a room.
    Lines {
        /// The origin node's number for them.
        seq: u64,
        /// The sender's id on its node.
        from: u64,
        room: &'a str,
        lines: usize,
        bytes: &'a [u8],
        /// `K`: their entry in the room's history stream; `None` for `L`.
        stamp: Option<Stamp<'a>>,
    },
    /// `N`: a notice for everyone in a room (joined, left, renamed).
    Notice { room: &'a str, bytes: &'a [u8] },
    /// `E`: a client entered a room, moved or was renamed.
    Enter(Present),
    /// `D`: a client left.
    Leave(u64),
    /// `S`: all of the node's clients; `hello`: the node has just (re)joined and asks the
    /// others for theirs.
    Snapshot { hello: bool, clients: Vec<Present> },
    /// `T`: something for client `id` of node `to`.
    Direct {
        to: &'a str,
        id: u64,
        what: Direct,
        text: &'a [u8],
    },
    /// `B`: the operator's broadcast.
    Broadcast(&'a [u8]),
    /// `M`: a ban or mute put in force (`set`) or lifted: the entry as JSON, as
    /// `policy::moderation::Entry` reads it.
    Moderation { set: bool, entry: &'a [u8] },
    /// `V`: the operator made a room live or lossless (`live ROOM on|off`).
    Live { room: &'a str, live: bool },
    /// `R`: a line of a room recalled (its stream id, as text).
    Recall { room: &'a str, id: &'a str },
}

/// Where Redis's stream put a [`Event::Lines`] message, and who sent it.
#[derive(Debug, PartialEq)]
pub(crate) struct Stamp<'a> {
    /// The stream entry's id: its first line's id, in every node's history of the room.
    pub(crate) id: LineId,
    /// `None` in raw mode, and for the operator's lines.
    pub(crate) sender: Option<Author<'a>>,
}

/// Who sent lines, as [`Sender`] says it, for the JSON clients of the other nodes.
#[derive(Debug, PartialEq)]
pub(crate) struct Author<'a> {
    pub(crate) name: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) prefix: usize,
    pub(crate) me: bool,
}

/// What a [`Event::Direct`] message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direct {
    /// A private message: the line to send as it is.
    Private,
    /// The operator's `send`: the text to push.
    Push,
    /// The operator's `kick`: the reason, if not empty.
    Kick,
}

impl Direct {
    fn byte(self) -> u8 {
        match self {
            Direct::Private => b'm',
            Direct::Push => b'p',
            Direct::Kick => b'k',
        }
    }

    fn from_byte(byte: u8) -> Option<Direct> {
        match byte {
            b'm' => Some(Direct::Private),
            b'p' => Some(Direct::Push),
            b'k' => Some(Direct::Kick),
            _ => None,
        }
    }
}

/// `L`: client `from`'s `lines` lines for `room`, `seq` being `node`'s number for them:
/// `seq` (8 bytes), `from` (8), `room \0`, `lines` (4), the bytes.
pub(crate) fn lines(
    node: &str,
    room: &str,
    seq: u64,
    from: u64,
    bytes: &[u8],
    lines: usize,
) -> Vec<u8> {
    let mut m = start(node, b'L', 16 + room.len() + 5 + bytes.len());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&from.to_be_bytes());
    m.extend_from_slice(room.as_bytes());
    m.push(0);
    m.extend_from_slice(&u32::try_from(lines).unwrap_or(u32::MAX).to_be_bytes());
    m.extend_from_slice(bytes);
    m
}

/// The kind byte of a `K` message. The publisher never builds one: `STAMP`, the script
/// that appends lines to their room's stream, publishes the `L` message it stored with its
/// new id and its sender after this byte, as `K id \0 sender` then `L`'s payload, so that
/// the channel's order is the stream's (see `publisher.rs`).
pub(crate) const STAMPED: u8 = b'K';

/// Who sent lines, for a `K` message and its stream entry: `name \0`, `user \0` (empty for
/// a guest), the prefix's length (4 bytes), `/me` (1 byte); two NULs alone when unknown.
pub(crate) fn sender(sender: Option<&Sender>) -> Vec<u8> {
    let Some(s) = sender else {
        return vec![0, 0];
    };
    let user = s.user.as_deref().unwrap_or_default();
    let mut m = Vec::with_capacity(s.name.len() + user.len() + 7);
    m.extend_from_slice(s.name.as_bytes());
    m.push(0);
    m.extend_from_slice(user.as_bytes());
    m.push(0);
    m.extend_from_slice(&u32::try_from(s.prefix).unwrap_or(0).to_be_bytes());
    m.push(u8::from(s.me));
    m
}

/// Reads what [`sender`] wrote, and what follows it.
pub(crate) fn decode_sender(bytes: &[u8]) -> Option<(Option<Author<'_>>, &[u8])> {
    if bytes.first() == Some(&0) {
        // No name: no sender (an empty name and user, written as two NULs, no numbers).
        return Some((None, bytes.get(2..)?));
    }
    let (name, rest) = split_nul(bytes)?;
    let (user, rest) = split_nul(rest)?;
    let (prefix, rest) = rest.split_first_chunk::<4>()?;
    let (&me, rest) = rest.split_first()?;
    let from = Author {
        name: std::str::from_utf8(name).ok()?,
        user: (!user.is_empty())
            .then(|| std::str::from_utf8(user).ok())
            .flatten(),
        prefix: u32::from_be_bytes(*prefix) as usize,
        me: me == 1,
    };
    Some((Some(from), rest))
}

/// `N`: a notice for `room`: `room \0`, the bytes.
pub(crate) fn notice(node: &str, room: &str, bytes: &[u8]) -> Vec<u8> {
    let mut m = start(node, b'N', room.len() + 1 + bytes.len());
    m.extend_from_slice(room.as_bytes());
    m.push(0);
    m.extend_from_slice(bytes);
    m
}

/// `E`: a client where it is now (see [`encode_present`]).
pub(crate) fn enter(node: &str, client: &Present) -> Vec<u8> {
    let mut m = start(node, b'E', 32);
    encode_present(&mut m, client);
    m
}

/// `D`: client `id` left: its id (8 bytes).
pub(crate) fn leave(node: &str, id: u64) -> Vec<u8> {
    let mut m = start(node, b'D', 8);
    m.extend_from_slice(&id.to_be_bytes());
    m
}

/// `S`: all of `node`'s clients: `h` if it says hello (else `-`), then each client (see
/// [`encode_present`]).
pub(crate) fn snapshot(node: &str, hello: bool, clients: &[Present]) -> Vec<u8> {
    let mut m = start(node, b'S', 1 + 32 * clients.len());
    m.push(if hello { b'h' } else { b'-' });
    for p in clients {
        encode_present(&mut m, p);
    }
    m
}

/// `T`: something for client `id` of node `to`: `to \0`, `id` (8 bytes), what it is (one
/// byte), the text.
pub(crate) fn direct(node: &str, to: &str, id: u64, what: Direct, text: &[u8]) -> Vec<u8> {
    let mut m = start(node, b'T', to.len() + 10 + text.len());
    m.extend_from_slice(to.as_bytes());
    m.push(0);
    m.extend_from_slice(&id.to_be_bytes());
    m.push(what.byte());
    m.extend_from_slice(text);
    m
}

/// `B`: the operator's text for every client.
pub(crate) fn broadcast(node: &str, text: &[u8]) -> Vec<u8> {
    let mut m = start(node, b'B', text.len());
    m.extend_from_slice(text);
    m
}

/// `M`: `s` (set) or `l` (lifted), then the entry's JSON.
pub(crate) fn moderation(node: &str, set: bool, entry: &[u8]) -> Vec<u8> {
    let mut m = start(node, b'M', 1 + entry.len());
    m.push(if set { b's' } else { b'l' });
    m.extend_from_slice(entry);
    m
}

/// `V`: `room` made live (`1`) or lossless (`0`): that byte, then the room.
pub(crate) fn live(node: &str, room: &str, live: bool) -> Vec<u8> {
    let mut m = start(node, b'V', 1 + room.len());
    m.push(if live { b'1' } else { b'0' });
    m.extend_from_slice(room.as_bytes());
    m
}

/// `R`: line `id` (a stream id as text) of `room` recalled: the room, a NUL, the id.
pub(crate) fn recall(node: &str, room: &str, id: &str) -> Vec<u8> {
    let mut m = start(node, b'R', room.len() + 1 + id.len());
    m.extend_from_slice(room.as_bytes());
    m.push(0);
    m.extend_from_slice(id.as_bytes());
    m
}

/// A message's start: `node` and the kind, with room for `capacity` bytes more.
fn start(node: &str, kind: u8, capacity: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(node.len() + 2 + capacity);
    m.extend_from_slice(node.as_bytes());
    m.push(0);
    m.push(kind);
    m
}

/// A client: its id (8 bytes), `name \0`, `room \0`, its user's `sub \0` (empty for a
/// guest).
fn encode_present(m: &mut Vec<u8>, p: &Present) {
    m.extend_from_slice(&p.id.to_be_bytes());
    m.extend_from_slice(p.name.as_bytes());
    m.push(0);
    m.extend_from_slice(p.room.as_bytes());
    m.push(0);
    m.extend_from_slice(p.user.as_deref().unwrap_or_default().as_bytes());
    m.push(0);
}

/// Reads a message: its node and what it says; `None` if it is malformed.
pub(crate) fn decode(message: &[u8]) -> Option<(&str, Event<'_>)> {
    let (node, rest) = split_nul(message)?;
    let node = std::str::from_utf8(node).ok()?;
    let (&kind, rest) = rest.split_first()?;
    let event = match kind {
        b'L' => decode_lines(rest, None)?,
        STAMPED => {
            let (id, rest) = split_nul(rest)?;
            let id = LineId::parse(std::str::from_utf8(id).ok()?)?;
            let (sender, rest) = decode_sender(rest)?;
            decode_lines(rest, Some(Stamp { id, sender }))?
        }
        b'N' => {
            let (room, bytes) = split_nul(rest)?;
            Event::Notice {
                room: std::str::from_utf8(room).ok()?,
                bytes,
            }
        }
        b'E' => Event::Enter(decode_present(rest)?.0),
        b'D' => Event::Leave(u64::from_be_bytes(*rest.first_chunk::<8>()?)),
        b'S' => {
            let (&flag, mut rest) = rest.split_first()?;
            let mut clients = Vec::new();
            while !rest.is_empty() {
                let (p, more) = decode_present(rest)?;
                clients.push(p);
                rest = more;
            }
            Event::Snapshot {
                hello: flag == b'h',
                clients,
            }
        }
        b'T' => {
            let (to, rest) = split_nul(rest)?;
            let (id, rest) = rest.split_first_chunk::<8>()?;
            let (&what, text) = rest.split_first()?;
            Event::Direct {
                to: std::str::from_utf8(to).ok()?,
                id: u64::from_be_bytes(*id),
                what: Direct::from_byte(what)?,
                text,
            }
        }
        b'B' => Event::Broadcast(rest),
        b'M' => match rest.split_first()? {
            (b's', entry) => Event::Moderation { set: true, entry },
            (b'l', entry) => Event::Moderation { set: false, entry },
            _ => return None,
        },
        b'V' => {
            let (&flag, room) = rest.split_first()?;
            let live = match flag {
                b'1' => true,
                b'0' => false,
                _ => return None,
            };
            let room = std::str::from_utf8(room).ok()?;
            Event::Live { room, live }
        }
        b'R' => {
            let (room, id) = split_nul(rest)?;
            Event::Recall {
                room: std::str::from_utf8(room).ok()?,
                id: std::str::from_utf8(id).ok()?,
            }
        }
        _ => return None,
    };
    Some((node, event))
}

/// An `L` message's payload (after its kind), stamped or not.
fn decode_lines<'a>(rest: &'a [u8], stamp: Option<Stamp<'a>>) -> Option<Event<'a>> {
    let (seq, rest) = rest.split_first_chunk::<8>()?;
    let (from, rest) = rest.split_first_chunk::<8>()?;
    let (room, rest) = split_nul(rest)?;
    let (lines, bytes) = rest.split_first_chunk::<4>()?;
    Some(Event::Lines {
        seq: u64::from_be_bytes(*seq),
        from: u64::from_be_bytes(*from),
        room: std::str::from_utf8(room).ok()?,
        lines: u32::from_be_bytes(*lines) as usize,
        bytes,
        stamp,
    })
}

/// Whether the node ids, names and rooms a message names follow the rules this node's own
/// follow: they go into `/who`, `/rooms` and the operator's `clients` as they are, where a
/// forged one holding a newline or a space would read as more lines or fields than it is.
/// `Err` says what is wrong, for the log.
pub(crate) fn check(node: &str, event: &Event<'_>) -> Result<(), &'static str> {
    if !is_token(node, MAX_NODE_ID) {
        return Err("invalid node id");
    }
    match event {
        Event::Lines { room, .. }
        | Event::Notice { room, .. }
        | Event::Live { room, .. }
        | Event::Recall { room, .. } => check_room(room),
        Event::Enter(client) => check_present(node, client),
        Event::Snapshot { clients, .. } => clients.iter().try_for_each(|p| check_present(node, p)),
        Event::Direct { to, .. } if !is_token(to, MAX_NODE_ID) => Err("invalid node id"),
        // An entry's JSON and target are checked as the daemon reads it.
        Event::Direct { .. } | Event::Leave(_) | Event::Broadcast(_) | Event::Moderation { .. } => {
            Ok(())
        }
    }
}

fn check_room(room: &str) -> Result<(), &'static str> {
    if valid_room(room) {
        Ok(())
    } else {
        Err("invalid room")
    }
}

/// A client of `node`: its room is a room, and its name a chat name (as `/nick` takes them)
/// or the guest name its node gives it, `guest<ID>@<NODE>`.
fn check_present(node: &str, p: &Present) -> Result<(), &'static str> {
    if !valid_name(&p.name) && p.name != format!("guest{}@{node}", p.id) {
        return Err("invalid name");
    }
    // A token's `sub` has no control character; it goes into the operator's `clients`.
    if p.user
        .as_deref()
        .is_some_and(|u| u.chars().any(|c| c.is_control() || c.is_whitespace()))
    {
        return Err("invalid user");
    }
    check_room(&p.room)
}

fn decode_present(bytes: &[u8]) -> Option<(Present, &[u8])> {
    let (id, rest) = bytes.split_first_chunk::<8>()?;
    let (name, rest) = split_nul(rest)?;
    let (room, rest) = split_nul(rest)?;
    let (user, rest) = split_nul(rest)?;
    let present = Present {
        id: u64::from_be_bytes(*id),
        name: String::from_utf8(name.to_vec()).ok()?,
        room: String::from_utf8(room.to_vec()).ok()?,
        user: (!user.is_empty())
            .then(|| String::from_utf8(user.to_vec()).ok())
            .flatten(),
    };
    Some((present, rest))
}

fn split_nul(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr::memchr(0, bytes)?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::cluster::{Cluster, Hooks, Item, Local, Shared};
    use crate::config::ClusterConfig;
    use crate::delivery::chunk::Chunk;
    use crate::stats::Stats;
    use crate::sync::lock;

    fn present(id: u64, name: &str, room: &str) -> Present {
        Present {
            id,
            name: name.into(),
            room: room.into(),
            user: None,
        }
    }

    /// What `message` reads back as: from `node-1`, and well-formed.
    fn read(message: &[u8]) -> Event<'_> {
        let (node, event) = decode(message).expect("well-formed");
        assert_eq!(node, "node-1");
        event
    }

    /// What the `STAMP` script publishes for the `L` message `m`: its kind made `K`, then
    /// the stream id and the sender, then `L`'s payload.
    fn stamped(m: &[u8], id: &str, sender: &[u8]) -> Vec<u8> {
        let at = memchr::memchr(0, m).unwrap() + 2;
        let mut k = m[..at - 1].to_vec();
        k.push(STAMPED);
        k.extend_from_slice(id.as_bytes());
        k.push(0);
        k.extend_from_slice(sender);
        k.extend_from_slice(&m[at..]);
        k
    }

    #[test]
    fn lines_round_trip() {
        let m = lines("node-1", "lobby", 42, 7, b"a\0b\nc\n", 2);
        let event = |stamp| Event::Lines {
            seq: 42,
            from: 7,
            room: "lobby",
            lines: 2,
            bytes: b"a\0b\nc\n",
            stamp,
        };
        assert_eq!(read(&m), event(None));
        // Stamped by the script, with and without a sender.
        let id = LineId::new(1765100000000, 3);
        assert_eq!(
            read(&stamped(&m, "1765100000000-3", &sender(None))),
            event(Some(Stamp { id, sender: None }))
        );
        let alice = Sender {
            name: "alice".into(),
            user: Some("u-1".into()),
            prefix: 8,
            me: false,
        };
        let author = Author {
            name: "alice",
            user: Some("u-1"),
            prefix: 8,
            me: false,
        };
        assert_eq!(
            read(&stamped(&m, "1765100000000-3", &sender(Some(&alice)))),
            event(Some(Stamp {
                id,
                sender: Some(author),
            }))
        );
        // Not an id: dropped as malformed.
        assert_eq!(decode(&stamped(&m, "17-x", &sender(None))), None);
        // An empty room and no bytes are still a message.
        let m = lines("node-1", "", u64::MAX, 0, b"", 0);
        assert_eq!(
            read(&m),
            Event::Lines {
                seq: u64::MAX,
                from: 0,
                room: "",
                lines: 0,
                bytes: b"",
                stamp: None,
            }
        );
    }

    #[test]
    fn notice_round_trip() {
        let m = notice("node-1", "games", b"* bob joined\n");
        assert_eq!(
            read(&m),
            Event::Notice {
                room: "games",
                bytes: b"* bob joined\n",
            }
        );
    }

    #[test]
    fn enter_round_trip() {
        let alice = present(7, "alice", "games");
        assert_eq!(read(&enter("node-1", &alice)), Event::Enter(alice));
    }

    #[test]
    fn moderation_round_trip() {
        for set in [true, false] {
            let m = moderation("node-1", set, b"{\"kind\":\"ban\"}");
            let entry = &b"{\"kind\":\"ban\"}"[..];
            assert_eq!(read(&m), Event::Moderation { set, entry });
        }
        assert_eq!(decode(b"node-1\0Mx{}"), None);
    }

    #[test]
    fn leave_round_trip() {
        assert_eq!(read(&leave("node-1", 7)), Event::Leave(7));
        assert_eq!(read(&leave("node-1", u64::MAX)), Event::Leave(u64::MAX));
    }

    #[test]
    fn snapshot_round_trip() {
        let clients = vec![present(1, "alice", "lobby"), present(2, "bob", "games")];
        assert_eq!(
            read(&snapshot("node-1", true, &clients)),
            Event::Snapshot {
                hello: true,
                clients: clients.clone(),
            }
        );
        assert_eq!(
            read(&snapshot("node-1", false, &clients)),
            Event::Snapshot {
                hello: false,
                clients,
            }
        );
        // The farewell: no clients left.
        assert_eq!(
            read(&snapshot("node-1", false, &[])),
            Event::Snapshot {
                hello: false,
                clients: Vec::new(),
            }
        );
    }

    #[test]
    fn direct_round_trip() {
        for what in [Direct::Private, Direct::Push, Direct::Kick] {
            assert_eq!(
                read(&direct("node-1", "node-2", 9, what, b"spam")),
                Event::Direct {
                    to: "node-2",
                    id: 9,
                    what,
                    text: b"spam",
                }
            );
        }
        // A kick without a reason.
        assert_eq!(
            read(&direct("node-1", "node-2", 9, Direct::Kick, b"")),
            Event::Direct {
                to: "node-2",
                id: 9,
                what: Direct::Kick,
                text: b"",
            }
        );
        assert!(decode(b"node-1\0Tnode-2\0\0\0\0\0\0\0\0\x09xspam").is_none());
    }

    #[test]
    fn recall_round_trip() {
        assert_eq!(
            read(&recall("node-1", "show.1", "1765100000000-3.1")),
            Event::Recall {
                room: "show.1",
                id: "1765100000000-3.1"
            }
        );
        assert!(decode(b"node-1\0Rshow.1").is_none());
    }

    #[test]
    fn live_round_trip() {
        assert_eq!(
            read(&live("node-1", "show.1", true)),
            Event::Live {
                room: "show.1",
                live: true
            }
        );
        assert_eq!(
            read(&live("node-1", "talk", false)),
            Event::Live {
                room: "talk",
                live: false
            }
        );
        assert!(decode(b"node-1\0V2talk").is_none());
    }

    #[test]
    fn broadcast_round_trip() {
        assert_eq!(
            read(&broadcast("node-1", b"hello all")),
            Event::Broadcast(b"hello all")
        );
    }

    #[test]
    fn check_holds_names_rooms_and_nodes_to_the_local_rules() {
        let fine = Event::Enter(present(7, "alice", "games"));
        assert_eq!(check("node-1", &fine), Ok(()));
        assert_eq!(check("node\n1", &fine), Err("invalid node id"));
        let guest = Event::Enter(present(7, "guest7@node-1", "lobby"));
        assert_eq!(check("node-1", &guest), Ok(()));
        // Another node's guest name, or another client's, is not this one's to give.
        assert_eq!(check("node-2", &guest), Err("invalid name"));
        let other = Event::Enter(present(8, "guest7@node-1", "lobby"));
        assert_eq!(check("node-1", &other), Err("invalid name"));
        for name in ["evil\nkick 1", "a b", "123", ""] {
            let e = Event::Enter(present(7, name, "lobby"));
            assert_eq!(check("node-1", &e), Err("invalid name"), "{name:?}");
        }
        let snapshot = Event::Snapshot {
            hello: false,
            clients: vec![present(1, "bob", "lobby"), present(2, "eve", "lobby\n* x")],
        };
        assert_eq!(check("node-1", &snapshot), Err("invalid room"));
        let m = lines("node-1", "a\rb", 1, 1, b"x\n", 1);
        let (node, event) = decode(&m).unwrap();
        assert_eq!(check(node, &event), Err("invalid room"));
        let m = direct("node-1", "node 2", 9, Direct::Push, b"hi");
        let (node, event) = decode(&m).unwrap();
        assert_eq!(check(node, &event), Err("invalid node id"));
    }

    fn shared() -> Shared {
        let config = ClusterConfig {
            url: "redis://127.0.0.1:1/".into(),
            name: "relayd".into(),
            node_id: "node-1".into(),
            ttl: Duration::from_secs(30),
        };
        let hooks = Hooks {
            deliver: Box::new(|_, _| {}),
            local: Box::new(|| Local {
                clients: Vec::new(),
                names: Vec::new(),
                users: Vec::new(),
            }),
            lost_name: Box::new(|_, _| {}),
        };
        Shared::new(
            &config,
            (10, Duration::ZERO),
            Arc::new(Stats::default()),
            hooks,
        )
        .unwrap()
    }

    /// What the queue holds, as messages.
    fn queued(cluster: &Cluster) -> Vec<Vec<u8>> {
        lock(&cluster.shared.queue)
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Publish { message, .. } => Some(message.clone()),
                Item::Release { .. } => None,
            })
            .collect()
    }

    #[test]
    fn decodes_what_it_encodes() {
        let cluster = Cluster {
            shared: Arc::new(shared()),
        };
        let alice = Present {
            id: 7,
            name: "alice".into(),
            room: "games".into(),
            user: Some("u-1".into()),
        };
        cluster.publish_lines("lobby", 42, 7, b"a\0b\nc\n", 2, None);
        cluster.publish_notice("games", &Chunk::from(&b"* bob joined\n"[..]));
        cluster.publish_enter(&alice);
        cluster.publish_leave(7);
        cluster.publish_direct("node-2", 9, Direct::Kick, b"spam");
        cluster.publish_broadcast("hello all");
        let q = queued(&cluster);
        assert_eq!(q.len(), 6);
        let events: Vec<_> = q.iter().map(|m| decode(m).unwrap()).collect();
        assert!(events.iter().all(|(node, _)| *node == "node-1"));
        match &events[0].1 {
            Event::Lines {
                seq,
                from,
                room,
                lines,
                bytes,
                stamp: None,
            } => {
                assert_eq!((*seq, *from, *room, *lines), (42, 7, "lobby", 2));
                assert_eq!(*bytes, b"a\0b\nc\n");
            }
            _ => panic!("not lines"),
        }
        assert!(matches!(&events[1].1,
            Event::Notice { room: "games", bytes } if *bytes == b"* bob joined\n"));
        assert!(matches!(&events[2].1, Event::Enter(p) if *p == alice));
        assert!(matches!(&events[3].1, Event::Leave(7)));
        assert!(matches!(&events[4].1,
            Event::Direct { to: "node-2", id: 9, what: Direct::Kick, text } if *text == b"spam"));
        assert!(matches!(&events[5].1, Event::Broadcast(b"hello all")));
        assert!(decode(b"node-1").is_none());
        assert!(decode(b"node-1\0L\0\0").is_none());
        assert!(decode(b"node-1\0Zwhat").is_none());
    }
}
