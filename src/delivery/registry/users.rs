//! Names and signed-in users in the registry: renaming a client and finding one by name, a
//! client taking on its token's name (a guest holding it made a guest again), a name held by
//! every connection of one user, and finding a user's connections.

use std::collections::HashMap;
use std::sync::Arc;

use crate::delivery::peer::{Peer, PeerId};
use crate::policy::token::Role;
use crate::sync::lock;

use super::{Registry, is_id};

/// Why a rename was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RenameError {
    Taken,
    Gone,
}

/// A signed-in user, as its token says: its connections share the `sub`.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) sub: Arc<str>,
    pub(crate) role: Role,
}

/// A guest that lost its name to a signed-in user: it is a guest by its guest name again.
pub(crate) struct Displaced {
    pub(crate) id: PeerId,
    pub(crate) peer: Arc<Peer>,
    pub(crate) room: Option<String>,
}

/// A client that took on its token's name: its room, and the guests that held the name.
pub(crate) struct Identified {
    pub(crate) room: Option<String>,
    pub(crate) displaced: Vec<Displaced>,
}

/// Why a client cannot take on its token's name: another user (another `sub`) holds it.
#[derive(Debug)]
pub(crate) struct OtherUser;

impl Registry {
    /// Renames a client; `Ok` holds the old name.
    pub(crate) fn rename(&self, id: PeerId, new: &str) -> Result<String, RenameError> {
        let mut inner = lock(&self.inner);
        let key = new.to_lowercase();
        if inner
            .names
            .get(&key)
            .is_some_and(|holders| holders.iter().any(|&h| h != id))
        {
            return Err(RenameError::Taken);
        }
        let entry = inner.clients.get_mut(&id).ok_or(RenameError::Gone)?;
        let old = std::mem::replace(&mut entry.name, new.to_string());
        remove_name(&mut inner.names, &old, id);
        add_name(&mut inner.names, new, id);
        Ok(old)
    }

    /// The client with this id (all digits) or else this name (case-insensitively; names are
    /// never all digits, so the two cannot be confused): its name and peer.
    pub(crate) fn find(&self, id_or_name: &str) -> Option<(String, Arc<Peer>)> {
        let inner = lock(&self.inner);
        let id = if is_id(id_or_name) {
            id_or_name.parse::<PeerId>().ok()?
        } else {
            *inner.names.get(&id_or_name.to_lowercase())?.first()?
        };
        let entry = inner.clients.get(&id)?;
        Some((entry.name.clone(), Arc::clone(&entry.peer)))
    }

    /// Makes client `id` user `user`, named `name` (its token's): the name is the user's on
    /// all its connections, and a guest that holds it becomes `guest(its id)` again. Refused
    /// if another user holds the name.
    pub(crate) fn identify(
        &self,
        id: PeerId,
        user: User,
        name: &str,
        guest: impl Fn(PeerId) -> String,
    ) -> Result<Identified, OtherUser> {
        let mut inner = lock(&self.inner);
        let inner = &mut *inner;
        let holders = inner.names.get(&name.to_lowercase()).cloned();
        let mut guests = Vec::new();
        for h in holders.unwrap_or_default().into_iter().filter(|&h| h != id) {
            match inner.clients.get(&h).map(|e| e.user.as_ref()) {
                Some(Some(other)) if other.sub != user.sub => return Err(OtherUser),
                Some(None) => guests.push(h),
                _ => {}
            }
        }
        let mut displaced = Vec::new();
        for h in guests {
            let Some(entry) = inner.clients.get_mut(&h) else {
                continue;
            };
            let new = guest(h);
            let old = std::mem::replace(&mut entry.name, new.clone());
            let (peer, room) = (Arc::clone(&entry.peer), entry.room.clone());
            remove_name(&mut inner.names, &old, h);
            add_name(&mut inner.names, &new, h);
            displaced.push(Displaced { id: h, peer, room });
        }
        let entry = inner.clients.get_mut(&id).ok_or(OtherUser)?;
        let sub = Arc::clone(&user.sub);
        entry.user = Some(user);
        let old = std::mem::replace(&mut entry.name, name.to_string());
        let room = entry.room.clone();
        remove_name(&mut inner.names, &old, id);
        add_name(&mut inner.names, name, id);
        if let Some(r) = room.as_ref().and_then(|r| inner.rooms.get_mut(r)) {
            for m in Arc::make_mut(&mut r.members) {
                if m.id == id {
                    m.user = Some(Arc::clone(&sub));
                }
            }
        }
        Ok(Identified { room, displaced })
    }

    /// Updates the role of client `id`'s user, from a fresh token.
    pub(crate) fn set_role(&self, id: PeerId, role: Role) {
        if let Some(Some(user)) = lock(&self.inner)
            .clients
            .get_mut(&id)
            .map(|e| e.user.as_mut())
        {
            user.role = role;
        }
    }

    /// Every connection of the client with this id, or of the guest or user with this name:
    /// its name and peer each (a user's connections share the name).
    pub(crate) fn find_all(&self, id_or_name: &str) -> Vec<(String, Arc<Peer>)> {
        let inner = lock(&self.inner);
        let ids = if is_id(id_or_name) {
            id_or_name.parse::<PeerId>().into_iter().collect()
        } else {
            inner
                .names
                .get(&id_or_name.to_lowercase())
                .cloned()
                .unwrap_or_default()
        };
        ids.iter()
            .filter_map(|id| inner.clients.get(id))
            .map(|e| (e.name.clone(), Arc::clone(&e.peer)))
            .collect()
    }

    /// The user (`sub`) of client `id`, if it has one.
    pub(crate) fn user_of(&self, id: PeerId) -> Option<Arc<str>> {
        let inner = lock(&self.inner);
        Some(Arc::clone(&inner.clients.get(&id)?.user.as_ref()?.sub))
    }

    /// The role of client `id`'s user (a room moderator's check); `None` for a guest.
    pub(crate) fn role_of(&self, id: PeerId) -> Option<Role> {
        let inner = lock(&self.inner);
        Some(inner.clients.get(&id)?.user.as_ref()?.role)
    }

    /// The guest with this name: its name and peer.
    pub(crate) fn find_guest(&self, name: &str) -> Option<(String, Arc<Peer>)> {
        let inner = lock(&self.inner);
        let id = *inner.names.get(&name.to_lowercase())?.first()?;
        let entry = inner.clients.get(&id).filter(|e| e.user.is_none())?;
        Some((entry.name.clone(), Arc::clone(&entry.peer)))
    }

    /// Every connection of user `sub` here: its name and peer each.
    pub(crate) fn user_peers(&self, sub: &str) -> Vec<(String, Arc<Peer>)> {
        lock(&self.inner)
            .clients
            .values()
            .filter(|e| e.user.as_ref().is_some_and(|u| &*u.sub == sub))
            .map(|e| (e.name.clone(), Arc::clone(&e.peer)))
            .collect()
    }
}

/// Adds `id` to the holders of `name`.
pub(super) fn add_name(names: &mut HashMap<String, Vec<PeerId>>, name: &str, id: PeerId) {
    let holders = names.entry(name.to_lowercase()).or_default();
    if !holders.contains(&id) {
        holders.push(id);
    }
}

/// Takes `id` off the holders of `name`; the name is free once nobody holds it.
pub(super) fn remove_name(names: &mut HashMap<String, Vec<PeerId>>, name: &str, id: PeerId) {
    let key = name.to_lowercase();
    if let Some(holders) = names.get_mut(&key) {
        holders.retain(|&h| h != id);
        if holders.is_empty() {
            names.remove(&key);
        }
    }
}
