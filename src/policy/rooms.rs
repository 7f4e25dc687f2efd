//! What holds in one room: its slow mode, and the moderators the operator made for it (`op
//! NAME ROOM`). Bans and mutes from a room are `policy::moderation`'s entries with a room;
//! `daemon/rooms.rs` acts on all of them, `policy::state` keeps them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::policy::moderation::Entry;
use crate::sync;

/// The longest slow mode: an hour a line is as good as a closed room.
pub(crate) const MAX_SLOW: u32 = 3600;

/// A moderator the operator made for one room: a token's `sub`, or a guest's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Op {
    pub(crate) room: String,
    pub(crate) user: String,
}

/// What one node tells the others of moderation, in a cluster (and keeps in Redis): a ban or
/// mute (everywhere or in a room), a room's slow mode (`0`: ended), or a moderator the
/// operator made (`on`) or unmade. Each reads apart from the others by its fields.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Shared {
    Entry(Entry),
    Slow { slow: String, seconds: u32 },
    Op { op: Op, on: bool },
}

/// Slow modes and operator-made moderators, shared by all threads.
#[derive(Debug, Default)]
pub(crate) struct RoomRules {
    /// Seconds between two lines of one user, by room.
    slow: RwLock<BTreeMap<String, u32>>,
    ops: RwLock<BTreeSet<Op>>,
}

impl RoomRules {
    pub(crate) fn new(slow: BTreeMap<String, u32>, ops: Vec<Op>) -> RoomRules {
        RoomRules {
            slow: RwLock::new(slow),
            ops: RwLock::new(ops.into_iter().collect()),
        }
    }

    /// `room`'s slow mode, if any.
    pub(crate) fn slow(&self, room: &str) -> Option<u32> {
        sync::read(&self.slow).get(room).copied()
    }

    /// Sets `room`'s slow mode (`0`: ends it); whether that changed anything.
    pub(crate) fn set_slow(&self, room: &str, seconds: u32) -> bool {
        let mut slow = sync::write(&self.slow);
        match seconds {
            0 => slow.remove(room).is_some(),
            n => slow.insert(room.to_string(), n) != Some(n),
        }
    }

    pub(crate) fn slow_modes(&self) -> BTreeMap<String, u32> {
        sync::read(&self.slow).clone()
    }

    /// Whether a user (signed in: `sub`; a guest: `name`, in any case) is a moderator the
    /// operator made for `room`.
    pub(crate) fn is_op(&self, room: &str, sub: Option<&str>, name: &str) -> bool {
        sync::read(&self.ops).iter().any(|op| {
            op.room == room
                && match sub {
                    Some(sub) => op.user == sub,
                    None => op.user.eq_ignore_ascii_case(name),
                }
        })
    }

    /// Makes (`on`) or unmakes a moderator; whether that changed anything.
    pub(crate) fn set_op(&self, op: Op, on: bool) -> bool {
        let mut ops = sync::write(&self.ops);
        match on {
            true => ops.insert(op),
            false => ops.remove(&op),
        }
    }

    pub(crate) fn ops(&self) -> Vec<Op> {
        sync::read(&self.ops).iter().cloned().collect()
    }
}

/// Reads `/slow`'s SECONDS: a whole number, 0 (off) to [`MAX_SLOW`].
pub(crate) fn parse_slow(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n <= MAX_SLOW => Ok(n),
        _ => Err(format!("{s}: not a number of seconds (0 to {MAX_SLOW})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_modes_and_ops() {
        let rules = RoomRules::default();
        assert!(rules.set_slow("dev", 5));
        assert!(!rules.set_slow("dev", 5));
        assert_eq!(rules.slow("dev"), Some(5));
        assert!(rules.set_slow("dev", 0));
        assert_eq!(rules.slow("dev"), None);
        let op = Op {
            room: "dev".into(),
            user: "Carol".into(),
        };
        assert!(rules.set_op(op.clone(), true));
        assert!(rules.is_op("dev", None, "carol"));
        assert!(!rules.is_op("dev", Some("carol"), "carol"));
        assert!(!rules.is_op("ops", None, "carol"));
        assert!(rules.set_op(op, false));
        assert_eq!(parse_slow("2"), Ok(2));
        assert!(parse_slow("-1").is_err() && parse_slow("2s").is_err());
        assert!(parse_slow("3601").is_err());
    }
}
