//! A room's members at one moment, as those told about a change see them.

use std::collections::HashSet;
use std::sync::Arc;

use crate::delivery::peer::PeerId;

use super::Member;

/// A room's members just after someone entered or left it: who is told about it. Taken in
/// the same critical section as the change, so the notice reaches exactly those who were
/// there, and none who arrive later.
pub(crate) struct Members {
    pub(super) list: Arc<Vec<Member>>,
}

impl Members {
    /// How many are in the room: people, so a user's connections count once.
    pub(crate) fn online(&self) -> usize {
        let mut users = HashSet::new();
        self.list
            .iter()
            .filter(|m| {
                m.user
                    .as_ref()
                    .is_none_or(|sub| users.insert(Arc::clone(sub)))
            })
            .count()
    }

    /// The users among them, by `sub`.
    pub(crate) fn users(&self) -> HashSet<Arc<str>> {
        self.list.iter().filter_map(|m| m.user.clone()).collect()
    }

    /// Whether a connection of user `sub` other than `except` is among them: then the room
    /// has seen the user arrive already, and does not see it leave yet.
    pub(crate) fn has_user(&self, sub: &str, except: PeerId) -> bool {
        self.list
            .iter()
            .any(|m| m.peer.id() != except && m.user.as_deref() == Some(sub))
    }
}
