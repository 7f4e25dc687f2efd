//! Bans and mutes at work: the operator's `ban`, `unban`, `mute`, `unmute` and `bans`, the
//! control socket's and the HTTP API's alike, and the checks that keep a banned client out
//! and a muted one quiet. What they are and how they read is `policy::moderation`; the file
//! that keeps them, `policy::state`.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::delivery::notice::{Departure, clean};
use crate::delivery::peer::Peer;
use crate::policy::access::canonical;
use crate::policy::moderation::{Entry, Kind, Target, parse_duration};
use crate::policy::rooms::Shared;
use crate::policy::state::Saved;
use crate::stats::add;

use super::Daemon;

/// A muted client is told so at most this often, not once per line.
const MUTED_NOTICE_EVERY: Duration = Duration::from_secs(60);

/// Why a ban or mute was not done (or not kept).
#[derive(Debug)]
pub(crate) enum ModerationError {
    /// A target or duration that does not parse, or a reason of more than one line.
    Bad(String),
    /// `unban` or `unmute` of a target that has none.
    NotFound(String),
    /// In force, but `--state-dir` could not be written: it will not survive a restart.
    NotSaved(String),
}

impl fmt::Display for ModerationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModerationError::Bad(why) | ModerationError::NotFound(why) => f.write_str(why),
            ModerationError::NotSaved(why) => {
                write!(f, "in force, but not saved to --state-dir: {why}")
            }
        }
    }
}

impl Daemon {
    /// Bans or mutes `target` for `duration` (`None`: until lifted), saying why and `by`
    /// whom (`operator`, `api`). A ban closes every connection of the user, or from the
    /// network, at once. Returns the entry in force and how many connections here it closed.
    pub(crate) fn moderate(
        &self,
        kind: Kind,
        target: &str,
        duration: Option<&str>,
        reason: Option<&str>,
        by: &str,
    ) -> Result<(Entry, usize), ModerationError> {
        self.impose(kind, None, target, duration, reason, by)
    }

    /// [`Daemon::moderate`], everywhere (`room` `None`) or in one room only (a room's
    /// moderator's, `by` its name: a ban there moves the user out of the room).
    pub(super) fn impose(
        &self,
        kind: Kind,
        room: Option<&str>,
        target: &str,
        duration: Option<&str>,
        reason: Option<&str>,
        by: &str,
    ) -> Result<(Entry, usize), ModerationError> {
        let parsed = Target::parse(target).map_err(ModerationError::Bad)?;
        let duration = duration
            .map(parse_duration)
            .transpose()
            .map_err(ModerationError::Bad)?;
        if reason.is_some_and(|r| r.contains(['\n', '\r'])) {
            return Err(ModerationError::Bad("a reason is one line".into()));
        }
        // Shown to the client and in `bans` as the operator's other texts are: cleaned.
        let reason = reason.map(|r| clean(r.as_bytes()));
        let mut entry = Entry::new(kind, &parsed, duration, reason.as_deref(), by);
        if let Some(room) = room {
            entry = entry.in_room(room);
        }
        self.moderation.set(entry.clone());
        let closed = self.enforce(&entry);
        self.share(true, &entry);
        let (place, done) = match room {
            Some(room) => (format!(" in {room}"), "moved out of the room"),
            None => (String::new(), "closed"),
        };
        info!(
            "{by}: {} {target}{place} until {}: {} ({closed} connections {done})",
            match kind {
                Kind::Ban => "banned",
                Kind::Mute => "muted",
            },
            entry.until_text().as_deref().unwrap_or("lifted"),
            entry.reason.as_deref().unwrap_or("no reason given"),
        );
        self.save_moderation()?;
        Ok((entry, closed))
    }

    /// Lifts the ban or mute on `target`.
    pub(crate) fn lift(&self, kind: Kind, target: &str, by: &str) -> Result<(), ModerationError> {
        let parsed = Target::parse(target).map_err(ModerationError::Bad)?;
        let what = match kind {
            Kind::Ban => "banned",
            Kind::Mute => "muted",
        };
        if !self.moderation.lift(kind, None, &parsed) {
            return Err(ModerationError::NotFound(format!("{parsed} is not {what}")));
        }
        info!("{by}: {parsed} is no longer {what}");
        self.share(false, &Entry::new(kind, &parsed, None, None, by));
        self.save_moderation()
    }

    /// The bans and mutes in force: everywhere, and a room's moderators' (`room` set), so
    /// that the operator sees every one.
    pub(crate) fn bans(&self) -> Vec<Entry> {
        self.moderation.list()
    }

    /// The ban on address `ip`, if any: it is refused at connect.
    pub(crate) fn banned_addr(&self, ip: IpAddr) -> Option<Entry> {
        self.moderation.banned_addr(ip)
    }

    /// The ban on a user taking on a name: a signed-in one by its `sub`, a guest by `name`.
    pub(crate) fn banned_user(&self, sub: Option<&str>, name: &str) -> Option<Entry> {
        self.moderation.on_user(Kind::Ban, sub, name)
    }

    /// Closes `peer` for `ban` (a guest that took a banned name).
    pub(crate) fn expel_banned(&self, peer: &Arc<Peer>, ban: &Entry) {
        add(&self.stats.refused_banned, 1);
        if self.expel(peer, banned(ban)).is_ok() {
            info!("client {}: refused: {}", peer.id(), ban.banned_text());
        }
    }

    /// Whether `peer`, in `room`, is muted there or everywhere: nothing it sends is relayed.
    /// It is told so, at most once a minute (`told`: when it last was, kept by its own
    /// thread).
    pub(crate) fn silenced(
        &self,
        peer: &Arc<Peer>,
        room: &str,
        told: &mut Option<Instant>,
    ) -> bool {
        if !self.moderation.any() {
            return false;
        }
        let Some((name, ..)) = self.registry.client(peer.id()) else {
            return false;
        };
        let sub = self.registry.user_of(peer.id());
        let Some(mute) = self
            .moderation
            .on_user(Kind::Mute, sub.as_deref(), &name)
            .or_else(|| {
                self.moderation
                    .in_room(Kind::Mute, room, sub.as_deref(), &name)
            })
        else {
            return false;
        };
        add(&self.stats.dropped_muted, 1);
        if told.is_none_or(|t| t.elapsed() >= MUTED_NOTICE_EVERY) {
            *told = Some(Instant::now());
            info!("client {} ({name}): muted, its lines dropped", peer.id());
            let text = format_args!("relayd: {}", mute.muted_text());
            self.reply(peer, &self.notices.moderation("mute", Some(room), text));
        }
        true
    }

    /// Another node's ban or mute (`set`), or its lifting, as its notice says; or a room's
    /// slow mode, or a moderator the operator made (see [`Shared`]).
    pub(super) fn moderation_from(&self, node: &str, set: bool, entry: &[u8]) {
        let entry = match serde_json::from_slice::<Shared>(entry) {
            Ok(Shared::Entry(entry)) => match entry.checked() {
                Ok(entry) => entry,
                Err(e) => return warn!("cluster: node {node}: a bad ban or mute: {e}"),
            },
            Ok(rule) => {
                info!("node {node}: {rule:?}");
                self.put_room_rule(rule);
                let _ = self.save_moderation();
                return;
            }
            Err(e) => return warn!("cluster: node {node}: a bad ban or mute: {e}"),
        };
        let Some(target) = entry.target().cloned() else {
            return;
        };
        if set {
            self.moderation.set(entry.clone());
            let closed = self.enforce(&entry);
            info!(
                "node {node}: {} on {target} ({closed} connections closed here)",
                entry.kind.as_str()
            );
        } else {
            self.moderation
                .lift(entry.kind, entry.room.as_deref(), &target);
            info!("node {node}: {} on {target} lifted", entry.kind.as_str());
        }
        let _ = self.save_moderation();
    }

    /// Puts in force here the bans, mutes, slow modes and moderators Redis keeps that this
    /// node has not heard of (it started later, or missed their notices while cut off).
    /// Each heartbeat.
    pub(super) fn sync_moderation(&self) {
        let Some(saved) = self.cluster.as_ref().and_then(|c| c.moderation()) else {
            return;
        };
        let mut new = 0;
        for json in saved {
            match serde_json::from_slice::<Shared>(&json) {
                Ok(Shared::Entry(entry)) => {
                    let Ok(entry) = entry.checked() else {
                        continue;
                    };
                    if !self.moderation.has(&entry) {
                        self.moderation.set(entry.clone());
                        self.enforce(&entry);
                        new += 1;
                    }
                }
                Ok(rule) => new += usize::from(self.put_room_rule(rule)),
                Err(_) => {}
            }
        }
        if new > 0 {
            info!("cluster: {new} bans, mutes, slow modes or moderators read from Redis");
            let _ = self.save_moderation();
        }
    }

    /// Tells the other nodes of a ban or mute (`set`), or its lifting.
    pub(super) fn share(&self, set: bool, entry: &Entry) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let json = serde_json::to_vec(entry).unwrap_or_default();
        // One key per kind, room and target: a ban from a room is not a ban everywhere.
        let kind = match &entry.room {
            Some(room) => format!("{}@{room}", entry.kind.as_str()),
            None => entry.kind.as_str().to_string(),
        };
        let key = (kind.as_str(), entry.target.as_str());
        if !cluster.publish_moderation(set, key, entry.until, &json) {
            warn!(
                "cluster: Redis did not take the {} on {}: nodes that miss its notice will not know it",
                entry.kind.as_str(),
                entry.target
            );
        }
    }

    /// Tells the other nodes of a room's slow mode or moderator (`set`: in force; else
    /// ended), kept in Redis under `key` (kind, target) until then.
    pub(super) fn share_rule(&self, set: bool, key: (&str, &str), rule: &Shared) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let json = serde_json::to_vec(rule).unwrap_or_default();
        if !cluster.publish_moderation(set, key, None, &json) {
            warn!(
                "cluster: Redis did not take {rule:?}: nodes that miss its notice will not know it"
            );
        }
    }

    /// Closes every connection here that a ban names, or moves it out of the room a ban
    /// from a room names; how many. Nothing for a mute.
    pub(super) fn enforce(&self, ban: &Entry) -> usize {
        match (ban.kind, ban.target(), &ban.room) {
            (Kind::Ban, Some(Target::User(user)), Some(room)) => self.move_out(user, room, ban),
            (Kind::Ban, Some(target), None) => self.close_banned(target, ban),
            _ => 0,
        }
    }

    /// Closes every connection here that `target` names; how many.
    fn close_banned(&self, target: &Target, ban: &Entry) -> usize {
        let peers: Vec<Arc<Peer>> = match target {
            Target::User(user) => self.user_here(user).into_iter().map(|(_, p)| p).collect(),
            Target::Net(net) => self
                .registry
                .clients()
                .into_iter()
                .filter(|c| net.contains(canonical(c.addr.ip())))
                .map(|c| c.peer)
                .collect(),
        };
        peers
            .iter()
            .filter(|peer| self.expel(peer, banned(ban)).is_ok())
            .count()
    }

    pub(super) fn save_moderation(&self) -> Result<(), ModerationError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        store
            .write(|| {
                let rules = &self.room_rules;
                Saved::new(self.moderation.list(), rules.slow_modes(), rules.ops())
            })
            .map_err(|e| {
                warn!("cannot save to --state-dir: {e}");
                ModerationError::NotSaved(e.to_string())
            })
    }
}

fn banned(ban: &Entry) -> Departure {
    Departure::Banned(ban.banned_text())
}
