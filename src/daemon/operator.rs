//! The operator's commands (the control socket's and `--console`'s): list the clients, the
//! counters, push a line to everyone or to one client, kick one; each reaches a client on
//! any node of the cluster. And expelling a client, for a kick or a reload's new rules.

use std::sync::Arc;

use crate::cluster::presence::Present;
use crate::cluster::{Cluster, Direct};
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
        let chunk = self.notices.push(self.config.chat, text);
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
                let chunk = self.notices.push(self.config.chat, text);
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
}
