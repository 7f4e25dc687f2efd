//! Who is in a room: its members as a notice about someone's coming or going reaches them
//! ([`Members`]), and as `relayd.v1.json` clients see them: each member's name, user and
//! role (`presence` on entering a room; `join`, `leave` and `nick` notices carry one).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::delivery::chunk::Chunk;
use crate::delivery::json_event::{self, Member, Presence, Role as MemberRole};
use crate::policy::rooms::RoomRules;
use crate::policy::token::Role;

use super::{Entry, Member as RoomMember};
use crate::delivery::peer::PeerId;

/// A room's members just after someone entered or left it: who is told about it. Taken in
/// the same critical section as the change, so the notice reaches exactly those who were
/// there, and none who arrive later.
pub(crate) struct Members {
    pub(super) list: Arc<Vec<RoomMember>>,
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
            .any(|m| m.id != except && m.user.as_deref() == Some(sub))
    }
}

/// What `name`, user `sub` with its token's `role` (`None`: a guest), is in `room`: a
/// moderator (its token's role, or one the operator made for the room), a signed-in user,
/// or a guest.
pub(crate) fn member(
    rules: &RoomRules,
    room: &str,
    name: &str,
    sub: Option<&str>,
    role: Option<Role>,
) -> Member {
    let role = if role == Some(Role::Mod) || rules.is_op(room, sub, name) {
        MemberRole::Mod
    } else if sub.is_some() {
        MemberRole::User
    } else {
        MemberRole::Guest
    };
    Member {
        name: name.to_string(),
        user: sub.map(str::to_string),
        role,
    }
}

/// The `presence` event for `room`, whose members are `members`: a user's connections are
/// one member, as they count once online. Built under the registry lock, so that it is
/// exactly who was there when the joiner entered.
pub(super) fn presence(
    clients: &BTreeMap<PeerId, Entry>,
    rules: &RoomRules,
    room: &str,
    members: &[RoomMember],
) -> Chunk {
    let mut users = HashSet::new();
    let list: Vec<Member> = members
        .iter()
        .filter(|m| m.user.as_ref().is_none_or(|sub| users.insert(sub)))
        .filter_map(|m| clients.get(&m.id))
        .map(|e: &Entry| {
            let sub = e.user.as_ref().map(|u| &*u.sub);
            member(rules, room, &e.name, sub, e.user.as_ref().map(|u| u.role))
        })
        .collect();
    let event = Presence {
        kind: "presence",
        room,
        members: &list,
    };
    Chunk::frames(&json_event::frame(&event))
}
