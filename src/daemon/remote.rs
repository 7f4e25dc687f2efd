//! What the other nodes of the cluster tell this one, through the hooks the cluster calls
//! back: their lines, notices and broadcasts, who is on them, private messages and the
//! operator's kicks and pushes addressed to a client here, and the names this node's clients
//! lost while it was cut off; and what this node tells them of its own clients.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::{debug, info, warn};

use crate::cluster::presence::Present;
use crate::cluster::{Direct, Event, Hooks, Local, Stamp, sender_of};
use crate::delivery::chunk::Chunk;
use crate::delivery::peer::PeerId;
use crate::delivery::registry::{Displaced, Echo, Origin};
use crate::sync::lock;

use super::{Daemon, claimed};

/// What the cluster calls back with, through a weak handle.
pub(super) fn hooks(weak: &Weak<Daemon>) -> Hooks {
    let (w1, w2, w3) = (weak.clone(), weak.clone(), weak.clone());
    Hooks {
        deliver: Box::new(move |node, event| {
            if let Some(daemon) = w1.upgrade() {
                daemon.remote(node, event);
            }
        }),
        local: Box::new(move || match w2.upgrade() {
            Some(daemon) => {
                daemon.expire_silent_nodes();
                daemon.sync_moderation();
                daemon.local()
            }
            None => Local {
                clients: Vec::new(),
                names: Vec::new(),
                users: Vec::new(),
            },
        }),
        lost_name: Box::new(move |id, name| {
            if let Some(daemon) = w3.upgrade() {
                daemon.name_lost(id, name);
            }
        }),
    }
}

impl Daemon {
    /// Acts on another node's message. Nothing is published again: only the origin node
    /// publishes, so nothing loops.
    fn remote(&self, node: &str, event: Event<'_>) {
        match event {
            Event::Lines {
                seq,
                from,
                room,
                lines,
                bytes,
                stamp,
            } => {
                debug!("cluster: {lines} lines for {room} from client {from} of node {node}");
                let (chunk, origin) = match stamp {
                    Some(Stamp { id, sender }) => {
                        let chunk = match sender {
                            Some(s) => Chunk::relayed_from(bytes, lines, &sender_of(s)),
                            None => Chunk::relayed(bytes, lines),
                        };
                        let own = self.cluster.as_ref().is_some_and(|c| **c.node() == *node);
                        let echo = own.then_some(Echo {
                            seq,
                            from: (from != 0).then_some(from),
                        });
                        (chunk, Origin::Stream { id, echo })
                    }
                    // A relayd before line ids: no stream id to agree on.
                    None => (Chunk::relayed(bytes, lines), Origin::Here),
                };
                // Client 0 is no client: the operator's `publish` on that node.
                self.registry
                    .deliver(room, None, from == 0, &chunk, lines, origin);
            }
            Event::Notice { room, bytes } => {
                let members = self.registry.members(room);
                self.registry.notify(&members, None, &Chunk::from(bytes));
            }
            Event::Enter(client) => self.presence.upsert(node, client),
            Event::Leave(id) => self.presence.remove(node, id),
            Event::Moderation { set, entry } => self.moderation_from(node, set, entry),
            Event::Snapshot { clients, .. } => self.presence.replace(node, clients),
            Event::Direct { id, what, text, .. } => {
                let Some((name, peer, _)) = self.registry.client(id) else {
                    return;
                };
                let text = String::from_utf8_lossy(text);
                match what {
                    Direct::Private => self.send_to(&peer, &Chunk::from(text.as_bytes()), 1),
                    Direct::Push => {
                        self.send_to(&peer, &self.notices.push(self.config.chat, &text, None), 0);
                    }
                    Direct::Kick => {
                        let reason = (!text.is_empty()).then_some(&*text);
                        if let Ok((id, name)) = self.kick_here(&peer, name, reason) {
                            info!("client {id} ({name}): kicked by the operator of node {node}");
                        }
                    }
                }
            }
            Event::Broadcast(text) => {
                self.push_here(&String::from_utf8_lossy(text));
            }
            Event::Live { room, live } => {
                self.set_live_here(room, live);
            }
            Event::Recall { room, id } => self.recalled_elsewhere(node, room, id),
        }
    }

    /// Forgets the nodes not heard from for the cluster's ttl, for the heartbeat.
    fn expire_silent_nodes(&self) {
        for (node, n) in self.presence.expire(Instant::now()) {
            warn!("cluster: node {node} silent too long, forgetting its {n} clients");
        }
    }

    /// This node's clients, for the cluster's heartbeat and farewell.
    pub(super) fn local(&self) -> Local {
        let mut local = Local {
            clients: Vec::new(),
            names: Vec::new(),
            users: Vec::new(),
        };
        for c in self.registry.clients() {
            let Some(room) = c.room else { continue };
            // A user's name is held by the user, not by one of its connections.
            match &c.user {
                Some(u) if self.config.chat && !local.users.iter().any(|(s, _)| **s == *u.sub) => {
                    local.users.push((u.sub.to_string(), c.name.clone()));
                }
                None if self.config.chat && claimed(&c.name) => {
                    local.names.push((c.id, c.name.clone()));
                }
                _ => {}
            }
            local.clients.push(Present {
                id: c.id,
                name: c.name,
                room,
                user: c.user.map(|u| u.sub.to_string()),
            });
        }
        local
    }

    /// Another node's client took the name client `id` held while this node was cut off:
    /// it becomes a guest again, and is told at once; its own thread takes the new name on
    /// at its next read ([`Daemon::take_rename`]).
    fn name_lost(&self, id: PeerId, name: &str) {
        let guest = self.guest_name(id);
        if self.registry.rename(id, &guest).is_err() {
            return;
        }
        let by_user = self
            .presence
            .find(name)
            .and_then(|r| self.presence.user_of(&r.node, r.id));
        if let (Some(_), Some((_, peer, room))) = (by_user, self.registry.client(id)) {
            // A signed-in user on another node took it back: as for one here.
            return self.displace(&Displaced { id, peer, room }, name);
        }
        self.pending_rename(id, &guest);
        if let Some((_, peer, room)) = self.registry.client(id) {
            if let Some(room) = room {
                self.present(id, &guest, &room);
            }
            let line = self.notices.line(format_args!(
                "* your name {name} was taken on another node while this one was cut off \
                 from the cluster; you are {guest} now"
            ));
            self.send_to(&peer, &line, 0);
        }
    }

    /// The guest name this client has now, if the cluster took its name away: taken out at
    /// its next read, or when it leaves first, so that the lock-free check stays true.
    pub(crate) fn take_rename(&self, id: PeerId) -> Option<String> {
        if self.renames_pending.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut renames = lock(&self.renames);
        let guest = renames.remove(&id)?;
        self.renames_pending.store(renames.len(), Ordering::Relaxed);
        Some(guest)
    }
}
