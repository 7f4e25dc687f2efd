//! A room's moderators at work: who is one (a token with `role: "mod"`, or a user the
//! operator made one for the room with `op NAME ROOM`), their bans and mutes in that room
//! (`policy::moderation`'s entries with a room: the same expiry, file and cluster keys as
//! the operator's), kicks out of the room, and its slow mode (`policy::rooms`).
//!
//! A client moved out of a room (kicked, or banned from it) is moved by the moderator's
//! thread, in the registry, at once; its own thread takes its new room on at its next read
//! ([`Daemon::take_move`]), as it takes on a name the cluster gave it.

use std::sync::atomic::Ordering;

use log::info;

use crate::delivery::json_event::Member;
use crate::delivery::peer::{Peer, PeerId};
use crate::delivery::registry::{LOBBY, is_id, member};
use crate::policy::moderation::{Entry, Kind, Target};
use crate::policy::rooms::{MAX_SLOW, Op, Shared};
use crate::policy::token::Role;
use crate::sync::lock;

use super::{Daemon, ModerationError};

/// Whom a moderator named: the user (a `sub`, or a guest's name) and the name shown.
pub(crate) struct Named {
    pub(crate) user: String,
    pub(crate) name: String,
}

impl Daemon {
    /// Who client `peer`, named `name`, is in `room`, as JSON clients are told.
    pub(crate) fn member(&self, peer: &Peer, name: &str, room: &str) -> Member {
        let sub = self.registry.user_of(peer.id());
        let role = self.registry.role_of(peer.id());
        self.member_as(name, sub.as_deref(), role, room)
    }

    /// Who `name`, user `sub` with its token's `role` (`None`: a guest), is in `room`: also
    /// for a client that has left already.
    pub(crate) fn member_as(
        &self,
        name: &str,
        sub: Option<&str>,
        role: Option<Role>,
        room: &str,
    ) -> Member {
        member(&self.room_rules, room, name, sub, role)
    }

    /// Whether `peer` is a moderator in `room`.
    pub(crate) fn is_moderator(&self, peer: &Peer, room: &str) -> bool {
        if self.registry.role_of(peer.id()) == Some(Role::Mod) {
            return true;
        }
        let sub = self.registry.user_of(peer.id());
        self.room_rules
            .is_op(room, sub.as_deref(), &self.name_of(peer.id()))
    }

    /// The user a name means: the `sub` of a signed-in client of that name (here, or on
    /// another node), else the name itself (a guest's, or a `sub`).
    pub(crate) fn named(&self, name: &str) -> Result<Named, String> {
        if is_id(name) || !matches!(Target::parse(name), Ok(Target::User(_))) {
            return Err(format!("{name:?} is not a name"));
        }
        let here = self.registry.find(name);
        let user = match &here {
            Some((_, peer)) => self.registry.user_of(peer.id()).map(|s| s.to_string()),
            None => self
                .find_elsewhere(name)
                .and_then(|(_, r)| self.presence.user_of(&r.node, r.id)),
        };
        let shown = here.map_or_else(|| name.to_string(), |(n, _)| n);
        Ok(Named {
            user: user.unwrap_or_else(|| shown.clone()),
            name: shown,
        })
    }

    /// Bans or mutes `user` (a `sub` or a guest's name, from [`Daemon::named`]) in `room`
    /// for `duration` (`None`: until lifted), `by` one of its moderators; a ban moves each
    /// of its connections in the room to the lobby.
    pub(crate) fn moderate_room(
        &self,
        kind: Kind,
        room: &str,
        user: &str,
        duration: Option<&str>,
        reason: Option<&str>,
        by: &str,
    ) -> Result<Entry, ModerationError> {
        let (entry, _) = self.impose(kind, Some(room), user, duration, reason, by)?;
        Ok(entry)
    }

    /// Lifts the ban or mute on `user` in `room`.
    pub(crate) fn lift_room(
        &self,
        kind: Kind,
        room: &str,
        user: &str,
        by: &str,
    ) -> Result<(), ModerationError> {
        let target = Target::parse(user).map_err(ModerationError::Bad)?;
        if !self.moderation.lift(kind, Some(room), &target) {
            let what = match kind {
                Kind::Ban => "banned",
                Kind::Mute => "muted",
            };
            return Err(ModerationError::NotFound(format!(
                "{user} is not {what} in {room}"
            )));
        }
        info!("{by}: {user} is no longer {}ed in {room}", kind.as_str());
        self.share(
            false,
            &Entry::new(kind, &target, None, None, by).in_room(room),
        );
        self.save_moderation()
    }

    /// The ban from `room` on a user: a signed-in one by its `sub`, a guest by `name`.
    pub(crate) fn banned_from(&self, room: &str, sub: Option<&str>, name: &str) -> Option<Entry> {
        self.moderation.in_room(Kind::Ban, room, sub, name)
    }

    /// Moves every connection here of `user` that is in `room` to the lobby, telling it
    /// `why` (after `relayd: `); how many.
    pub(crate) fn kick_from_room(&self, user: &str, room: &str, why: &str) -> usize {
        let mut moved = 0;
        for (name, peer) in self.user_here(user) {
            if self.registry.client(peer.id()).and_then(|c| c.2).as_deref() != Some(room) {
                continue;
            }
            let notices = self.notices;
            let line = notices.moderation("kick", Some(room), format_args!("relayd: {why}"));
            let Some((_, lobby)) =
                self.registry
                    .change_room(peer.id(), LOBBY, None, None, |_, n| {
                        vec![line, notices.now_in(LOBBY, n)]
                    })
            else {
                continue;
            };
            // Recorded before the client can read that it moved, so that whatever it sends
            // after reading it finds its thread in the lobby too.
            self.pending_move(peer.id());
            peer.start_sending();
            info!("client {} ({name}): moved out of {room}: {why}", peer.id());
            let member = self.member(&peer, &name, LOBBY);
            let joined = notices.joined(member, self.online(LOBBY, &lobby), LOBBY);
            self.notify(LOBBY, &lobby, peer.id(), &joined);
            self.present(peer.id(), &name, LOBBY);
            moved += 1;
        }
        moved
    }

    /// Moves a user a ban from `room` names out of it.
    pub(super) fn move_out(&self, user: &str, room: &str, ban: &Entry) -> usize {
        self.kick_from_room(user, room, &ban.banned_text())
    }

    /// The room client `id`'s thread is to take on, if a moderator moved it.
    pub(crate) fn take_move(&self, id: PeerId) -> Option<String> {
        if self.moves_pending.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut moves = lock(&self.moves);
        let room = moves.remove(&id)?;
        self.moves_pending.store(moves.len(), Ordering::Relaxed);
        Some(room)
    }

    fn pending_move(&self, id: PeerId) {
        let mut moves = lock(&self.moves);
        moves.insert(id, LOBBY.to_string());
        self.moves_pending.store(moves.len(), Ordering::Relaxed);
    }

    /// `room`'s slow mode: seconds between two lines of one user.
    pub(crate) fn slow_mode(&self, room: &str) -> Option<u32> {
        self.room_rules.slow(room)
    }

    /// Sets `room`'s slow mode (`0`: ends it), `by` one of its moderators.
    pub(crate) fn set_slow(
        &self,
        room: &str,
        seconds: u32,
        by: &str,
    ) -> Result<(), ModerationError> {
        self.room_rules.set_slow(room, seconds);
        info!("{by}: slow mode in {room}: {seconds} s");
        let rule = Shared::Slow {
            slow: room.to_string(),
            seconds,
        };
        self.share_rule(seconds > 0, ("slow", room), &rule);
        self.save_moderation()
    }

    /// `op NAME ROOM` (`on`) and `deop NAME ROOM`: the operator makes a user (a `sub`, or a
    /// guest's name) a moderator of `room`, or no longer.
    pub(crate) fn op(
        &self,
        user: &str,
        room: &str,
        on: bool,
        by: &str,
    ) -> Result<(), ModerationError> {
        if !matches!(Target::parse(user), Ok(Target::User(_))) {
            return Err(ModerationError::Bad(format!("{user:?} is not a user")));
        }
        if !crate::policy::names::valid_room(room) {
            return Err(ModerationError::Bad(format!("{room:?} is not a room")));
        }
        let op = Op {
            room: room.to_string(),
            user: user.to_string(),
        };
        if !self.room_rules.set_op(op.clone(), on) && !on {
            return Err(ModerationError::NotFound(format!(
                "{user} is not a moderator of {room}"
            )));
        }
        info!(
            "{by}: {user} is {} a moderator of {room}",
            if on { "now" } else { "no longer" }
        );
        self.share_rule(on, (&format!("op@{room}"), user), &Shared::Op { op, on });
        self.save_moderation()
    }

    /// Puts another node's slow mode or moderator in force here; whether it changed anything.
    pub(super) fn put_room_rule(&self, rule: Shared) -> bool {
        match rule {
            Shared::Slow { slow, seconds } if seconds <= MAX_SLOW => {
                self.room_rules.set_slow(&slow, seconds)
            }
            Shared::Op { op, on } => self.room_rules.set_op(op, on),
            _ => false,
        }
    }
}
