//! Signed-in users: a client taking on who its token says it is, the guests that held that
//! name, and reaching every connection of one user (the operator's kick and push, the HTTP
//! API's `kick_user` and `send_user`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use log::{info, warn};

use crate::cluster::{ClaimError, Direct};
use crate::delivery::notice::{Departure, clean};
use crate::delivery::peer::Peer;
use crate::delivery::registry::{Displaced, Identified, OtherUser, User};
use crate::policy::token::Identity;
use crate::stats::add;
use crate::sync::lock;

use super::{Daemon, NoSuchClient};

impl Daemon {
    /// Makes `peer` the user `identity` names, under its token's name: guests holding the
    /// name here become guests by their guest names again, and are told. Refused if another
    /// user (another `sub`) holds the name. The caller tells its own room.
    pub(crate) fn identify(
        &self,
        peer: &Arc<Peer>,
        identity: &Identity,
    ) -> Result<Identified, OtherUser> {
        // Cluster-wide first: a guest on another node who picked the name loses it there,
        // and another user holding it is refused, as here.
        if let Some(cluster) = self.cluster.as_ref().filter(|c| !c.has_left()) {
            match cluster.take_for_user(&identity.sub, &identity.name) {
                Ok(()) => {}
                Err(ClaimError::Taken) => return Err(OtherUser),
                // The token says who it is: the name is its own, even if Redis cannot say so
                // now; the heartbeat takes it once Redis is back.
                Err(ClaimError::Unreachable) => {
                    warn!(
                        "cluster: the name {} taken here only, for now",
                        identity.name
                    );
                }
            }
        }
        let user = User {
            sub: Arc::from(identity.sub.as_str()),
            role: identity.role,
        };
        let identified = self
            .registry
            .identify(peer.id(), user, &identity.name, |id| self.guest_name(id))?;
        for guest in &identified.displaced {
            self.displace(guest, &identity.name);
        }
        add(&self.stats.tokens_accepted, 1);
        Ok(identified)
    }

    /// A fresh token for a client's user: counted, and its role taken on.
    pub(crate) fn refreshed(&self, peer: &Peer, identity: &Identity) {
        self.registry.set_role(peer.id(), identity.role);
        add(&self.stats.tokens_accepted, 1);
    }

    /// Tells a guest that lost `name` to a signed-in user, and its room, what it is now;
    /// its own thread takes the name on at its next read ([`Daemon::take_rename`]).
    pub(super) fn displace(&self, guest: &Displaced, name: &str) {
        let new = self.guest_name(guest.id);
        info!(
            "client {}: {name} is now {new}: a signed-in user's name",
            guest.id
        );
        self.pending_rename(guest.id, &new);
        let notices = self.notices;
        let line = notices.error(format_args!(
            "the name {name} belongs to a signed-in user; you are now {new}"
        ));
        self.send_to(&guest.peer, &line, 0);
        if let (true, Some(room)) = (self.config.chat, &guest.room) {
            let members = self.registry.members(room);
            let member = self.member(&guest.peer, &new, room);
            let notice = notices.renamed(member, name, room);
            self.notify(room, &members, guest.id, &notice);
            self.present(guest.id, &new, room);
        }
    }

    /// Records the name client `id` is to take on at its next read.
    pub(super) fn pending_rename(&self, id: u64, new: &str) {
        let mut renames = lock(&self.renames);
        renames.insert(id, new.to_string());
        self.renames_pending.store(renames.len(), Ordering::Relaxed);
    }

    /// Closes every connection of the user with this `sub`, or else the guest with this name,
    /// on every node, telling each `reason`; returns how many here. `Err` if there is no such
    /// user or guest anywhere.
    pub(crate) fn kick_user(
        &self,
        user: &str,
        reason: Option<&str>,
    ) -> Result<usize, NoSuchClient> {
        let why = Departure::Kicked(reason.map(|r| clean(r.as_bytes())));
        let here = self.user_here(user);
        let mut kicked = 0;
        for (name, peer) in &here {
            if self.expel(peer, why.clone()).is_ok() {
                info!("client {} ({name}): user kicked", peer.id());
                kicked += 1;
            }
        }
        let there = self.to_user_elsewhere(user, Direct::Kick, reason.unwrap_or_default());
        if here.is_empty() && !there {
            return Err(NoSuchClient);
        }
        Ok(kicked)
    }

    /// Pushes `text` as a server line to every connection of the user with this `sub`, or
    /// else to the guest with this name, on every node; returns to how many here. `Err` if
    /// there is no such user or guest anywhere.
    pub(crate) fn send_user(&self, user: &str, text: &str) -> Result<usize, NoSuchClient> {
        let peers = self.user_here(user);
        let chunk = self.notices.push(self.config.chat, text, None);
        for (_, peer) in &peers {
            self.send_to(peer, &chunk, 0);
        }
        let there = self.to_user_elsewhere(user, Direct::Push, text);
        if peers.is_empty() && !there {
            return Err(NoSuchClient);
        }
        Ok(peers.len())
    }

    /// The connections here of the user with this `sub`, or else of the guest with this name
    /// (as [`Presence::user_clients`] finds them on the other nodes).
    ///
    /// [`Presence::user_clients`]: crate::cluster::presence::Presence::user_clients
    pub(super) fn user_here(&self, user: &str) -> Vec<(String, Arc<Peer>)> {
        let peers = self.registry.user_peers(user);
        if !peers.is_empty() {
            return peers;
        }
        self.registry.find_guest(user).into_iter().collect()
    }

    /// Sends `what` to every connection of user `user` (or the guest so named) on the
    /// other nodes; whether there was any.
    fn to_user_elsewhere(&self, user: &str, what: Direct, text: &str) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let remote = self.presence.user_clients(user);
        for (node, id) in &remote {
            cluster.publish_direct(node, *id, what, text.as_bytes());
        }
        !remote.is_empty()
    }
}
