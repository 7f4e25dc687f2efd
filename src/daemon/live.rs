//! The operator's `live ROOM on|off` (the control socket's and the HTTP API's): a room's
//! delivery policy, live or lossless (see `delivery/peer/live.rs`).

use log::info;

use crate::config::valid_room;

use super::Daemon;

/// A room name that is not one.
#[derive(Debug)]
pub(crate) struct BadRoom;

impl Daemon {
    /// Makes `room` live (`on`) or lossless, here, from now on; returns how many of its
    /// members are here. Not published to the other nodes: a cluster's nodes are given the
    /// same `--live-room`, and the operator says `live` to each (README.md, Live rooms).
    pub(crate) fn set_live(&self, room: &str, on: bool) -> Result<usize, BadRoom> {
        if !valid_room(room) {
            return Err(BadRoom);
        }
        let n = self.registry.set_live(room, on);
        let policy = if on { "live" } else { "lossless" };
        info!("operator: room {room} is {policy} ({n} members here)");
        Ok(n)
    }
}
