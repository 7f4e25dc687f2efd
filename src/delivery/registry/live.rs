//! Which rooms are live (see `peer/live.rs` for what that means for their viewers):
//! `--live-room` names and prefixes, and what the operator said since, by room.

use std::collections::HashMap;
use std::sync::Arc;

use crate::sync::lock;

use super::Registry;

/// `--live-room` and the operator's `live ROOM on|off`.
#[derive(Debug, Default)]
pub(super) struct LiveRooms {
    /// Rooms by name, and prefixes (given with a trailing `*`, kept without it).
    names: Vec<String>,
    prefixes: Vec<String>,
    /// The operator's word, which outlasts the room (rooms go with their last member).
    said: HashMap<String, bool>,
}

impl LiveRooms {
    pub(super) fn new(rooms: &[String]) -> LiveRooms {
        let (prefixes, names) = rooms
            .iter()
            .partition::<Vec<&String>, _>(|r| r.ends_with('*'));
        LiveRooms {
            names: names.into_iter().cloned().collect(),
            prefixes: prefixes
                .into_iter()
                .map(|p| p.trim_end_matches('*').to_string())
                .collect(),
            said: HashMap::new(),
        }
    }

    /// Whether `room` is live: as the operator last said, else as `--live-room` says.
    pub(super) fn is_live(&self, room: &str) -> bool {
        self.said.get(room).copied().unwrap_or_else(|| {
            self.names.iter().any(|n| n == room)
                || self.prefixes.iter().any(|p| room.starts_with(p.as_str()))
        })
    }
}

impl Registry {
    /// Makes `room` live (`on`) or lossless from now on, for its members now and whoever
    /// enters it later. Returns how many members it has here.
    pub(crate) fn set_live(&self, room: &str, on: bool) -> usize {
        let mut inner = lock(&self.inner);
        inner.live.said.insert(room.to_string(), on);
        let Some(r) = inner.rooms.get_mut(room) else {
            return 0;
        };
        r.live = on;
        let members = Arc::clone(&r.members);
        // Under the lock, so that no line is delivered to the room under the old policy
        // after this returns: `set_live` takes only the peer's state lock and never blocks.
        for m in members.iter() {
            m.peer.set_live(on);
        }
        members.len()
    }
}
