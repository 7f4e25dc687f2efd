//! Taking a line back: out of its room's history, under the lock that orders it against
//! every replay, so that nobody entering the room afterwards is replayed it; and the room's
//! JSON clients told (`{"type":"recall"}`), as the room's members were at that moment. Other
//! clients are told nothing: a terminal cannot take a line back.

use serde::Serialize;

use crate::delivery::chunk::{Chunk, Format};
use crate::delivery::json_event;
use crate::delivery::line_id::LineId;
use crate::sync::lock;

use super::{Member, Registry, Room};

/// What a recall found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recalled {
    /// Taken out of the room's history.
    Removed,
    /// Given by the room, but no longer in its history (aged out, or recalled already).
    NotKept,
}

/// `{"type":"recall","room":R,"id":ID}`.
#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    id: String,
}

impl Registry {
    /// Takes line `id` out of `room`'s history and tells the room's JSON clients, whether it
    /// was still kept or not (a page may still show it). `None` if the room here never gave
    /// that id.
    pub(crate) fn recall(&self, room: &str, id: LineId) -> Option<Recalled> {
        self.take_back(room, id, false)
    }

    /// [`Registry::recall`] of a line another node recalled: whatever this node saw of the
    /// room, its history loses the line and its JSON clients are told.
    pub(crate) fn recalled_elsewhere(&self, room: &str, id: LineId) -> Option<Recalled> {
        self.take_back(room, id, true)
    }

    fn take_back(&self, room: &str, id: LineId, elsewhere: bool) -> Option<Recalled> {
        let (found, told) = {
            let mut inner = lock(&self.inner);
            let r = inner
                .rooms
                .get_mut(room)
                .filter(|r| elsewhere || r.gave(id))?;
            let found = match r.history.recall(id) {
                true => Recalled::Removed,
                false => Recalled::NotKept,
            };
            let told: Vec<Member> = r
                .members
                .iter()
                .filter(|m| m.peer.format() == Format::Json)
                .cloned()
                .collect();
            (found, told)
        };
        if !told.is_empty() {
            let event = Event {
                kind: "recall",
                room,
                id: id.to_string(),
            };
            // Frames: only ever queued for JSON peers.
            let chunk = Chunk::frames(&json_event::frame(&event));
            self.offer_all(&told, None, &chunk, 0);
        }
        Some(found)
    }
}

impl Room {
    /// Whether this room, in this life, gave line `id`: one this node numbered, or in a
    /// cluster one of the room's stream up to the newest this node has seen.
    fn gave(&self, id: LineId) -> bool {
        // By entry: the newest id here is its entry's (its first line's).
        if let Some(last) = self.order.newest() {
            return (id.a, id.b) <= (last.a, last.b);
        }
        id.a == self.life && id.c == 0 && (1..=self.numbered).contains(&id.b)
    }
}
