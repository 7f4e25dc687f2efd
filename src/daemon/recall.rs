//! Recall: a line taken back, by a room's moderator (`/recall ID`), the operator (`recall
//! ROOM ID`) or the HTTP API (`POST /api/recall`), all through [`Daemon::recall`]. The line
//! leaves the room's history, so nobody is replayed it again, and the room's JSON clients are
//! told (`{"type":"recall"}`) so that a page can take it off the screen; a TCP client's
//! screen is its terminal's, which relayd cannot take anything back from, so it is told
//! nothing.

use std::fmt;

use log::{info, warn};

use crate::config::valid_room;
use crate::delivery::line_id::LineId;
use crate::delivery::registry::Recalled;

use super::Daemon;

/// Why a line was not recalled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RecallError {
    BadRoom,
    /// Not an id relayd writes.
    BadId(String),
    /// An id the room never gave (or a room that is gone).
    NoSuchLine(String, String),
}

impl fmt::Display for RecallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecallError::BadRoom => f.write_str("a room is 1-32 letters, digits, _ - ."),
            RecallError::BadId(id) => write!(f, "{id}: not a line id"),
            RecallError::NoSuchLine(room, id) => write!(f, "{room} has no line {id}"),
        }
    }
}

impl Daemon {
    /// Takes line `id` of `room` back, for `by` (`operator`, `api`, or a moderator's name).
    /// `Ok(false)`: the room gave it, but it was no longer in its history (its JSON clients
    /// are told all the same: a page may still show it).
    pub(crate) fn recall(&self, room: &str, id: &str, by: &str) -> Result<bool, RecallError> {
        if !valid_room(room) {
            return Err(RecallError::BadRoom);
        }
        let line = LineId::parse(id).ok_or_else(|| RecallError::BadId(id.into()))?;
        let found = self.registry.recall(room, line);
        // In a cluster the line may be another node's to show and Redis's to keep even
        // where this node has nobody in the room: the others and Redis are told all the
        // same (an id the room never gave then finds nothing anywhere).
        let found = match (&self.cluster, found) {
            (None, None) => return Err(RecallError::NoSuchLine(room.into(), id.into())),
            (None, Some(found)) => found,
            (Some(cluster), found) => {
                cluster.publish_recall(room, id);
                if !cluster.remember_recall(room, id) {
                    warn!("recall of line {id} in {room}: not kept in Redis (unreachable)");
                }
                found.unwrap_or(Recalled::NotKept)
            }
        };
        let kept = found == Recalled::Removed;
        info!(
            "{by}: recalled line {id} in {room}{}",
            match kept {
                true => "",
                false => " (no longer in its history)",
            }
        );
        Ok(kept)
    }

    /// Line `id` of `room` recalled on node `node`: out of this node's history, and its JSON
    /// clients in the room told.
    pub(super) fn recalled_elsewhere(&self, node: &str, room: &str, id: &str) {
        let Some(line) = LineId::parse(id) else {
            warn!("cluster: node {node} recalled {id:?} in {room}: not a line id");
            return;
        };
        if self.registry.recalled_elsewhere(room, line).is_some() {
            info!("node {node}: recalled line {id} in {room}");
        }
    }
}
