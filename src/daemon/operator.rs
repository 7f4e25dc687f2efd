//! The operator's commands (the control socket's, `--console`'s and the HTTP API's): list the
//! clients, the counters, a room's members and history, push a line to everyone, to one
//! client or to a room, kick one; each reaches a client on any node of the cluster. And
//! expelling a client, for a kick or a reload's new rules.

use std::fmt;
use std::sync::Arc;

use crate::cluster::presence::Present;
use crate::cluster::{Cluster, Direct};
use crate::config::{valid_name, valid_room};
use crate::delivery::chunk::{Chunk, Sender};
use crate::delivery::line_id::LineId;
use crate::delivery::notice::{Departure, clean};
use crate::delivery::peer::{Peer, PeerId};
use crate::delivery::registry::{ClientInfo, Which, is_id};

use super::Daemon;

/// Where a client the operator or a chat command named was found.
pub(crate) enum Found {
    Here(PeerId, String),
    /// On another node: its name there, and the node.
    There(String, String),
}

/// Why an operator's command found no one.
#[derive(Debug)]
pub(crate) struct NoSuchClient;

/// What the operator is told of a client located.
fn found(located: Located<'_>) -> Found {
    match located {
        Located::Here(name, peer) => Found::Here(peer.id(), name),
        Located::There(_, node, _, name) => Found::There(name, node),
    }
}

/// Why a line was not published to a room.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PublishError {
    BadRoom,
    BadName,
    /// A name to speak for, in raw mode, where lines carry no names.
    NameInRawMode,
    Empty,
    NotOneLine,
    /// Longer than `--max-line` once formatted.
    TooLong(usize),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::BadRoom => f.write_str("a room is 1-32 letters, digits, _ - ."),
            PublishError::BadName => {
                f.write_str("a name is 1-32 letters, digits, _ - . and not only digits")
            }
            PublishError::NameInRawMode => f.write_str("lines carry no names without --chat"),
            PublishError::Empty => f.write_str("the text is empty"),
            PublishError::NotOneLine => f.write_str("the text must be one line"),
            PublishError::TooLong(max) => write!(f, "the line is longer than --max-line {max}"),
        }
    }
}

/// A member of a room, on any node, for the operator's `presence`.
pub(crate) struct Member {
    pub(crate) name: String,
    /// Its user's `sub`, if it presented a signed token.
    pub(crate) user: Option<String>,
    /// Its id on its node.
    pub(crate) client: PeerId,
    /// `tcp` or `ws`; `None` on another node, which does not say.
    pub(crate) transport: Option<&'static str>,
    /// Its node, in a cluster.
    pub(crate) node: Option<String>,
}

/// A client the operator named, where it is.
enum Located<'a> {
    Here(String, Arc<Peer>),
    /// On another node: the link, the node, the client's id there and its name.
    There(&'a Cluster, String, u64, String),
}

impl Daemon {
    /// The other nodes' clients, by node, for the operator's `clients`.
    pub(crate) fn clients_elsewhere(&self) -> Vec<(String, Present)> {
        self.presence.all()
    }

    pub(crate) fn clients(&self) -> Vec<ClientInfo> {
        self.registry.clients()
    }

    /// The operator's `stats` answer.
    pub(crate) fn stats_report(&self) -> String {
        self.stats.report(self.registry.len(), self.room_count())
    }

    /// The same counters by name, for the API.
    pub(crate) fn stats_rows(&self) -> [(&'static str, u64); 27] {
        self.stats.rows(self.registry.len(), self.room_count())
    }

    /// Pushes `text` to every client that has joined, on every node, as a server line;
    /// returns to how many here.
    pub(crate) fn broadcast(&self, text: &str) -> usize {
        if let Some(cluster) = &self.cluster {
            cluster.publish_broadcast(text);
        }
        self.push_here(text)
    }

    /// Pushes `text` to every client here that has joined, as a server line; returns to how
    /// many.
    pub(super) fn push_here(&self, text: &str) -> usize {
        let chunk = self.notices.push(self.config.chat, text, None);
        let peers = self.registry.peers(Which::Joined);
        self.registry.deliver_to(&peers, &chunk, 0);
        peers.len()
    }

    /// Where the operator's `ID`, `ID@NODE` or `NAME` is. An id is this node's unless a node
    /// is given.
    fn locate(&self, target: &str) -> Option<Located<'_>> {
        let (target, node) = match (&self.cluster, target.split_once('@')) {
            (Some(_), Some((id, node))) if is_id(id) => (id, Some(node)),
            _ => (target, None),
        };
        if let (Some(cluster), Some(node)) = (&self.cluster, node)
            && node != &**cluster.node()
        {
            let id = target.parse().ok()?;
            let name = self.presence.name_of(node, id)?;
            return Some(Located::There(cluster, node.to_string(), id, name));
        }
        if let Some((name, peer)) = self.find(target) {
            return Some(Located::Here(name, peer));
        }
        if is_id(target) {
            return None;
        }
        let (cluster, remote) = self.find_elsewhere(target)?;
        Some(Located::There(cluster, remote.node, remote.id, remote.name))
    }

    /// The user (`sub`) the operator means by a name: a name (not an id) of a signed-in
    /// user means every connection of the user.
    fn user_named(&self, target: &str, located: &Located<'_>) -> Option<String> {
        if is_id(target) || target.contains('@') {
            return None;
        }
        match located {
            Located::Here(_, peer) => self.registry.user_of(peer.id()).map(|s| s.to_string()),
            Located::There(_, node, id, _) => self.presence.user_of(node, *id),
        }
    }

    /// Pushes `text` to one client, or every connection of a user named, on any node, as a
    /// server line.
    pub(crate) fn push_to(&self, target: &str, text: &str) -> Result<Found, NoSuchClient> {
        let located = self.locate(target).ok_or(NoSuchClient)?;
        if let Some(user) = self.user_named(target, &located) {
            self.send_user(&user, text)?;
            return Ok(found(located));
        }
        match located {
            Located::Here(name, peer) => {
                let chunk = self.notices.push(self.config.chat, text, None);
                self.send_to(&peer, &chunk, 0);
                Ok(Found::Here(peer.id(), name))
            }
            Located::There(cluster, node, id, name) => {
                cluster.publish_direct(&node, id, Direct::Push, text.as_bytes());
                Ok(Found::There(name, node))
            }
        }
    }

    /// Disconnects a client for the operator, on any node. Once this returns, a client here
    /// holds no slot and nothing more it sent is relayed; its thread tells its room it left,
    /// after any line it was relaying at that moment. A client on another node is kicked
    /// there as soon as that node hears of it.
    pub(crate) fn kick(&self, target: &str, reason: Option<&str>) -> Result<Found, NoSuchClient> {
        let located = self.locate(target).ok_or(NoSuchClient)?;
        if let Some(user) = self.user_named(target, &located) {
            self.kick_user(&user, reason)?;
            return Ok(found(located));
        }
        match located {
            Located::Here(name, peer) => {
                let (id, name) = self.kick_here(&peer, name, reason)?;
                Ok(Found::Here(id, name))
            }
            Located::There(cluster, node, id, name) => {
                let reason = reason.unwrap_or_default();
                cluster.publish_direct(&node, id, Direct::Kick, reason.as_bytes());
                Ok(Found::There(name, node))
            }
        }
    }

    /// Kicks `peer`, a client of this node named `name`.
    pub(super) fn kick_here(
        &self,
        peer: &Arc<Peer>,
        name: String,
        reason: Option<&str>,
    ) -> Result<(PeerId, String), NoSuchClient> {
        // The reason reaches the client and its room: cleaned like any chat line.
        let why = Departure::Kicked(reason.map(|r| clean(r.as_bytes())));
        self.expel(peer, why)?;
        Ok((peer.id(), name))
    }

    /// Disconnects a client on the daemon's own account, as [`Daemon::kick`] does.
    pub(super) fn expel(&self, peer: &Arc<Peer>, why: Departure) -> Result<(), NoSuchClient> {
        self.registry.expel(peer.id()).ok_or(NoSuchClient)?;
        peer.close(why);
        Ok(())
    }

    /// Publishes `text` to everyone in `room`, on every node: as a server line (`* [server]
    /// TEXT`), or with `from` as a line `from` said (`<NAME> TEXT`, chat mode only), which
    /// like any line said in the room is kept in its history. Returns to how many here.
    pub(crate) fn publish(
        &self,
        room: &str,
        from: Option<&str>,
        text: &str,
    ) -> Result<usize, PublishError> {
        if !valid_room(room) {
            return Err(PublishError::BadRoom);
        }
        if text.contains(['\n', '\r']) {
            return Err(PublishError::NotOneLine);
        }
        if text.is_empty() {
            return Err(PublishError::Empty);
        }
        let Some(from) = from else {
            let chunk = self.notices.push(self.config.chat, text, Some(room));
            self.check_length(&chunk)?;
            let members = self.registry.members(room);
            self.registry.notify(&members, None, &chunk);
            if let Some(cluster) = &self.cluster {
                cluster.publish_notice(room, &chunk);
            }
            return Ok(members.online());
        };
        if !self.config.chat {
            return Err(PublishError::NameInRawMode);
        }
        if !valid_name(from) {
            return Err(PublishError::BadName);
        }
        let line = format!("<{from}> {}{}", clean(text.as_bytes()), self.notices.eol());
        let sender = Arc::new(Sender {
            name: Arc::from(from),
            user: None,
            prefix: from.len() + 3,
            me: false,
        });
        let chunk = Chunk::relayed_from(line.as_bytes(), 1, &sender);
        self.check_length(&chunk)?;
        // As a line from another node's client: nobody here is its sender.
        let (origin, seq) = self.origin();
        self.registry.deliver(room, None, true, &chunk, 1, origin);
        if let (Some(cluster), Some(seq)) = (&self.cluster, seq) {
            // Client 0: no client's id (they start at 1).
            cluster.publish_lines(room, seq, 0, &chunk, 1, chunk.sender());
        }
        Ok(self.registry.members(room).online())
    }

    fn check_length(&self, chunk: &Chunk) -> Result<(), PublishError> {
        match chunk.len() > self.config.max_line {
            true => Err(PublishError::TooLong(self.config.max_line)),
            false => Ok(()),
        }
    }

    /// Who is in `room`: here first, by id, then on the other nodes.
    pub(crate) fn presence(&self, room: &str) -> Vec<Member> {
        let node = self.cluster.as_ref().map(|c| c.node().to_string());
        let mut members: Vec<Member> = self
            .registry
            .clients()
            .into_iter()
            .filter(|c| c.room.as_deref() == Some(room))
            .map(|c| Member {
                transport: Some(c.peer.transport()),
                user: c.user.map(|u| u.sub.to_string()),
                name: c.name,
                client: c.id,
                node: node.clone(),
            })
            .collect();
        members.extend(
            self.presence
                .all()
                .into_iter()
                .filter(|(_, c)| c.room == room)
                .map(|(node, c)| Member {
                    user: c.user,
                    name: c.name,
                    client: c.id,
                    transport: None,
                    node: Some(node),
                }),
        );
        members
    }

    /// The lines said in `room` that its history keeps, oldest first, each with its id (`None`
    /// where not known) and without its line end: as Redis keeps them in a cluster (as this
    /// node does if Redis cannot say), else as this node does (see `delivery/history.rs`).
    pub(crate) fn history(&self, room: &str) -> Vec<(Option<LineId>, String)> {
        let mut recalled = Vec::new();
        let (chunks, cap) = match self.cluster.as_ref().and_then(|c| c.history(room)) {
            Some(entries) => {
                recalled = self
                    .cluster
                    .as_ref()
                    .map_or(Vec::new(), |c| c.recalled(room));
                // Every line the stream keeps, as a room here shows every line it keeps.
                (entries.into_iter().map(|e| e.chunk).collect(), usize::MAX)
            }
            None => (self.registry.history(room), usize::MAX),
        };
        let mut lines: Vec<(Option<LineId>, String)> = chunks
            .iter()
            .flat_map(|chunk| {
                let placed = chunk.placed();
                chunk
                    .split_inclusive(|&b| b == b'\n')
                    .enumerate()
                    .map(move |(k, line)| (placed.map(|p| p.first.nth(k, p.numbered)), clean(line)))
            })
            .collect();
        lines.retain(|(id, _)| id.is_none_or(|id| !recalled.contains(&id)));
        let excess = lines.len().saturating_sub(cap);
        lines.drain(..excess);
        lines
    }
}
