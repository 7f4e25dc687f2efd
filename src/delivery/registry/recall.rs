//! Taking a line back: out of its room's history, under the lock that orders it against
//! every replay, so that nobody entering the room afterwards is replayed it.

use std::sync::Arc;

use crate::delivery::line_id::LineId;
use crate::sync::lock;

use super::{Members, Registry, Room};

/// What a recall found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recalled {
    /// Taken out of the room's history.
    Removed,
    /// Given by the room, but no longer in its history (aged out, or recalled already).
    NotKept,
}

impl Registry {
    /// Takes line `id` out of `room`'s history. Returns what it found and the room's
    /// members (who are told), or `None` if the room here never gave that id.
    pub(crate) fn recall(&self, room: &str, id: LineId) -> Option<(Recalled, Members)> {
        let mut inner = lock(&self.inner);
        let r = inner.rooms.get_mut(room).filter(|r| r.gave(id))?;
        let found = match r.history.recall(id) {
            true => Recalled::Removed,
            false => Recalled::NotKept,
        };
        let list = Arc::clone(&r.members);
        Some((found, Members { list }))
    }
}

impl Room {
    /// Whether this room, in this life, gave line `id`.
    fn gave(&self, id: LineId) -> bool {
        id.a == self.life && id.c == 0 && (1..=self.numbered).contains(&id.b)
    }
}
