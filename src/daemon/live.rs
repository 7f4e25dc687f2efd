//! The operator's `live ROOM on|off` (the control socket's and the HTTP API's): a room's
//! delivery policy, live or lossless (see `delivery/peer/live.rs`), on every node.

use log::info;

use crate::config::valid_room;

use super::Daemon;

/// A room name that is not one.
#[derive(Debug)]
pub(crate) struct BadRoom;

impl Daemon {
    /// Makes `room` live (`on`) or lossless from now on, here and, with `--redis`, on the
    /// other nodes; returns how many of its members are here.
    pub(crate) fn set_live(&self, room: &str, on: bool) -> Result<usize, BadRoom> {
        if !valid_room(room) {
            return Err(BadRoom);
        }
        if let Some(cluster) = &self.cluster {
            cluster.publish_live(room, on);
        }
        Ok(self.set_live_here(room, on))
    }

    /// [`Daemon::set_live`] on this node only: what another node's operator said.
    pub(super) fn set_live_here(&self, room: &str, on: bool) -> usize {
        let n = self.registry.set_live(room, on);
        let policy = if on { "live" } else { "lossless" };
        info!("operator: room {room} is {policy} ({n} members here)");
        n
    }
}
