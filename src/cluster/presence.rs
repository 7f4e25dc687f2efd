//! Who is connected to the other nodes of a cluster (`--redis`), as they told this one.
//!
//! Each node publishes every change to its clients (one entered, moved, was renamed, left)
//! and, every few seconds, all of them at once. This node keeps the last word of each node,
//! so that `/who`, `/rooms`, `/msg`, online counts and the operator's commands see the whole
//! cluster without asking Redis. A node whose word is older than the name expiry (it died, or
//! lost Redis) is forgotten, with its clients.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// A client of another node, in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Present {
    /// Its id on its node.
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) room: String,
    /// Its user's `sub`, if it presented a signed token: a user's connections, on any node,
    /// are one person.
    pub(crate) user: Option<String>,
}

/// A client found on another node.
pub(crate) struct Remote {
    pub(crate) node: String,
    pub(crate) id: u64,
    pub(crate) name: String,
}

pub(crate) struct Presence {
    /// How long a node's word holds.
    ttl: Duration,
    nodes: Mutex<HashMap<String, View>>,
}

struct View {
    clients: BTreeMap<u64, Present>,
    heard: Instant,
}

impl Presence {
    pub(crate) fn new(ttl: Duration) -> Presence {
        Presence {
            ttl,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    fn view<'a>(nodes: &'a mut HashMap<String, View>, node: &str) -> &'a mut View {
        let view = nodes.entry(node.to_string()).or_insert_with(|| View {
            clients: BTreeMap::new(),
            heard: Instant::now(),
        });
        view.heard = Instant::now();
        view
    }

    /// `node` has exactly these clients.
    pub(crate) fn replace(&self, node: &str, clients: Vec<Present>) {
        let mut nodes = lock(&self.nodes);
        Self::view(&mut nodes, node).clients = clients.into_iter().map(|p| (p.id, p)).collect();
    }

    /// A client of `node` entered a room, moved, or was renamed.
    pub(crate) fn upsert(&self, node: &str, client: Present) {
        let mut nodes = lock(&self.nodes);
        Self::view(&mut nodes, node)
            .clients
            .insert(client.id, client);
    }

    /// A client of `node` left.
    pub(crate) fn remove(&self, node: &str, id: u64) {
        let mut nodes = lock(&self.nodes);
        Self::view(&mut nodes, node).clients.remove(&id);
    }

    /// Forgets the nodes not heard from for the ttl before `now`; returns them with how many
    /// clients each had.
    pub(crate) fn expire(&self, now: Instant) -> Vec<(String, usize)> {
        let mut nodes = lock(&self.nodes);
        let stale: Vec<String> = nodes
            .iter()
            .filter(|(_, v)| now.saturating_duration_since(v.heard) > self.ttl)
            .map(|(node, _)| node.clone())
            .collect();
        stale
            .into_iter()
            .map(|node| {
                let n = nodes.remove(&node).map_or(0, |v| v.clients.len());
                (node, n)
            })
            .collect()
    }

    /// How many people on other nodes are in `room`, but for the users in `except` (counted
    /// here already): a user's connections count once.
    pub(crate) fn count_in(&self, room: &str, except: &HashSet<Arc<str>>) -> usize {
        let nodes = lock(&self.nodes);
        let mut users = HashSet::new();
        nodes
            .values()
            .flat_map(|v| v.clients.values())
            .filter(|p| p.room == room)
            .filter(|p| match &p.user {
                None => true,
                Some(sub) => !except.contains(sub.as_str()) && users.insert(sub.as_str()),
            })
            .count()
    }

    /// The clients of other nodes of user `user` (its `sub`), or else the guest so named:
    /// node and id each.
    pub(crate) fn user_clients(&self, user: &str) -> Vec<(String, u64)> {
        let nodes = lock(&self.nodes);
        let all = || {
            nodes
                .iter()
                .flat_map(|(n, v)| v.clients.values().map(move |p| (n, p)))
        };
        let mut found: Vec<(String, u64)> = all()
            .filter(|(_, p)| p.user.as_deref() == Some(user))
            .map(|(n, p)| (n.clone(), p.id))
            .collect();
        if found.is_empty() {
            found = all()
                .filter(|(_, p)| p.user.is_none() && p.name.eq_ignore_ascii_case(user))
                .map(|(n, p)| (n.clone(), p.id))
                .collect();
        }
        found
    }

    /// The names of other nodes' clients in `room`, by node, then in order of arrival.
    pub(crate) fn names_in(&self, room: &str) -> Vec<String> {
        let nodes = lock(&self.nodes);
        let mut by_node: Vec<(&String, &View)> = nodes.iter().collect();
        by_node.sort_by_key(|(node, _)| *node);
        by_node
            .iter()
            .flat_map(|(_, v)| v.clients.values())
            .filter(|p| p.room == room)
            .map(|p| p.name.clone())
            .fold(Vec::new(), |mut names, name| {
                if !names.iter().any(|n: &String| n.eq_ignore_ascii_case(&name)) {
                    names.push(name);
                }
                names
            })
    }

    /// Rooms of other nodes' clients, with how many of them are in each.
    pub(crate) fn rooms(&self) -> BTreeMap<String, usize> {
        let mut rooms = BTreeMap::new();
        let mut users = HashSet::new();
        for v in lock(&self.nodes).values() {
            for p in v.clients.values() {
                let user = p.user.as_ref().map(|sub| (p.room.as_str(), sub.as_str()));
                if user.is_none_or(|u| users.insert(u)) {
                    *rooms.entry(p.room.clone()).or_insert(0) += 1;
                }
            }
        }
        rooms
    }

    /// The client of another node with this name (case-insensitively).
    pub(crate) fn find(&self, name: &str) -> Option<Remote> {
        let nodes = lock(&self.nodes);
        nodes.iter().find_map(|(node, v)| {
            v.clients
                .values()
                .find(|p| p.name.eq_ignore_ascii_case(name))
                .map(|p| Remote {
                    node: node.clone(),
                    id: p.id,
                    name: p.name.clone(),
                })
        })
    }

    /// The user (`sub`) of client `id` of `node`, if it has one.
    pub(crate) fn user_of(&self, node: &str, id: u64) -> Option<String> {
        let nodes = lock(&self.nodes);
        nodes.get(node)?.clients.get(&id)?.user.clone()
    }

    /// The name of client `id` of `node`.
    pub(crate) fn name_of(&self, node: &str, id: u64) -> Option<String> {
        let nodes = lock(&self.nodes);
        nodes.get(node)?.clients.get(&id).map(|p| p.name.clone())
    }

    /// Every client of another node, by node.
    pub(crate) fn all(&self) -> Vec<(String, Present)> {
        let nodes = lock(&self.nodes);
        let mut all: Vec<(String, Present)> = nodes
            .iter()
            .flat_map(|(node, v)| v.clients.values().map(|p| (node.clone(), p.clone())))
            .collect();
        all.sort_by(|a, b| (&a.0, a.1.id).cmp(&(&b.0, b.1.id)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: u64, name: &str, room: &str) -> Present {
        Present {
            id,
            name: name.into(),
            room: room.into(),
            user: None,
        }
    }

    #[test]
    fn tracks_each_nodes_last_word() {
        let presence = Presence::new(Duration::from_secs(60));
        presence.replace("b", vec![p(1, "alice", "lobby"), p(2, "bob", "games")]);
        presence.upsert("c", p(1, "carol", "lobby"));
        assert_eq!(presence.count_in("lobby", &HashSet::new()), 2);
        assert_eq!(presence.names_in("lobby"), ["alice", "carol"]);
        presence.upsert("b", p(1, "alice", "games"));
        presence.remove("b", 2);
        assert_eq!(
            presence.rooms().into_iter().collect::<Vec<_>>(),
            [("games".to_string(), 1), ("lobby".to_string(), 1)]
        );
        let found = presence.find("ALICE").unwrap();
        assert_eq!((found.node.as_str(), found.id), ("b", 1));
        presence.replace("c", Vec::new());
        assert!(presence.find("carol").is_none());
        assert!(presence.expire(Instant::now()).is_empty());
    }

    #[test]
    fn forgets_nodes_it_has_not_heard_from() {
        let presence = Presence::new(Duration::from_secs(30));
        presence.upsert("b", p(1, "alice", "lobby"));
        assert!(presence.expire(Instant::now()).is_empty());
        let later = Instant::now() + Duration::from_secs(31);
        assert_eq!(presence.expire(later), [("b".to_string(), 1)]);
        assert_eq!(presence.count_in("lobby", &HashSet::new()), 0);
    }
}
