//! Live rooms in the registry (see `peer/live.rs` for what that means for their viewers):
//! which rooms are live (`--live-room` names and prefixes, and what the operator said since,
//! by room), and each live room's gate, which picks the lines its viewers are shown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::delivery::chunk::Chunk;
use crate::delivery::json_event::Kind;
use crate::delivery::notice::Notices;
use crate::delivery::peer::{Gate, Limits};
use crate::stats::add;
use crate::sync::lock;

use super::Registry;

/// A live room's own state: which of its lines its viewers are shown, and how many it
/// dropped for every viewer.
pub(super) struct LiveRoom {
    gate: Gate,
    /// Lines dropped for every viewer (each viewer's share is counted from when it came in).
    pub(super) drops: Arc<AtomicU64>,
    /// Since when `offered` and `shown` count, for the room's busy notice.
    since: Instant,
    offered: u64,
    shown: u64,
    /// Which member the room's lines go to first. A fanout to 10,000 viewers takes tens of
    /// milliseconds, so whoever comes first in a fixed order would always see a line that
    /// much before whoever comes last; the start moves on with every line shown (the second
    /// of a pair goes in the same order as the first, so that each viewer has both before
    /// its write), by the golden ratio of the room, which spreads the starts evenly.
    first: usize,
}

/// How often a flooded live room in chat mode tells its viewers how much they are shown.
const BUSY_EVERY: Duration = Duration::from_secs(1);

/// What a live room's gate made of a chunk of lines.
pub(super) struct Gated {
    /// What its viewers are shown: all of it, its newest line, or nothing.
    pub(super) shown: Option<Chunk>,
    /// In chat mode, once a second while the room drops lines: `* live: showing N of M
    /// lines/s`, for every member (the page shows it as the room's busy sign).
    pub(super) busy: Option<Chunk>,
    /// Which member `shown` goes to first (see [`LiveRoom::first`]).
    pub(super) first: usize,
}

/// `--live-room` and the operator's `live ROOM on|off`.
#[derive(Debug)]
pub(super) struct LiveRooms {
    limits: Limits,
    /// Rooms by name, and prefixes (given with a trailing `*`, kept without it).
    names: Vec<String>,
    prefixes: Vec<String>,
    /// The operator's word, which outlasts the room (rooms go with their last member).
    said: HashMap<String, bool>,
}

impl LiveRooms {
    pub(super) fn new(config: &Config) -> LiveRooms {
        let (prefixes, names) = config
            .live_rooms
            .iter()
            .partition::<Vec<&String>, _>(|r| r.ends_with('*'));
        LiveRooms {
            limits: Limits::new(config),
            names: names.into_iter().cloned().collect(),
            prefixes: prefixes
                .into_iter()
                .map(|p| p.trim_end_matches('*').to_string())
                .collect(),
            said: HashMap::new(),
        }
    }

    /// A new room's live state, if it is live.
    pub(super) fn for_room(&self, room: &str) -> Option<LiveRoom> {
        self.is_live(room).then(|| self.new_room())
    }

    fn new_room(&self) -> LiveRoom {
        LiveRoom {
            gate: Gate::new(&self.limits),
            drops: Arc::default(),
            since: Instant::now(),
            offered: 0,
            shown: 0,
            first: 0,
        }
    }

    /// Whether `room` is live: as the operator last said, else as `--live-room` says.
    fn is_live(&self, room: &str) -> bool {
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
        let inner = &mut *inner;
        inner.live.said.insert(room.to_string(), on);
        let Some(r) = inner.rooms.get_mut(room) else {
            return 0;
        };
        if r.live.is_some() != on {
            r.live = on.then(|| inner.live.new_room());
        }
        let drops = r.live.as_ref().map(|l| &l.drops);
        // Under the lock, so that no line is delivered to the room under the old policy
        // after this returns: `set_live` takes only the peer's state lock and never blocks.
        for m in r.members.iter() {
            m.peer.set_live(drops);
        }
        r.members.len()
    }

    /// What of `chunk` (`lines` relayed lines) a live room's viewers are shown: all of it,
    /// its newest line, or nothing, as the room's gate says; what is not shown is counted as
    /// dropped for each of the `members` it was for but its sender (`listed`: the sender is
    /// one of them). Called under the registry lock, in the order the room's lines are
    /// delivered, for every line: it costs the same whatever the room's size (walking 10,000
    /// members to count them, for each of 2,000 lines a second, took a tenth of the machine).
    pub(super) fn gate(
        &self,
        room: &str,
        live: &mut LiveRoom,
        members: usize,
        listed: bool,
        chunk: &Chunk,
        lines: usize,
    ) -> Gated {
        let viewers = members.saturating_sub(usize::from(listed));
        let lines = lines as u64;
        let now = Instant::now();
        let shown = live.gate.admit(now, lines);
        if shown > 0 && !live.gate.completed_pair() && members > 0 {
            live.first = (live.first + members * 618 / 1000 + 1) % members;
        }
        let busy = self
            .notices
            .as_ref()
            .and_then(|notices| live.busy(notices, room, now, lines, shown));
        let dropped = lines - shown;
        if dropped > 0 {
            live.drops
                .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
            add(&self.stats.live_dropped, dropped * viewers as u64);
        }
        let shown = match shown {
            0 => None,
            n if n == lines => Some(Chunk::clone(chunk)),
            _ => Some(chunk.last_line()),
        };
        Gated {
            shown,
            busy,
            first: live.first,
        }
    }
}

impl LiveRoom {
    /// Counts `lines` offered and `shown`; once every [`BUSY_EVERY`], if the room dropped
    /// any meanwhile, the notice saying how much its viewers were shown.
    fn busy(
        &mut self,
        notices: &Notices,
        room: &str,
        now: Instant,
        lines: u64,
        shown: u64,
    ) -> Option<Chunk> {
        self.offered += lines;
        self.shown += shown;
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < BUSY_EVERY {
            return None;
        }
        let (offered, shown) = (self.offered, self.shown);
        (self.since, self.offered, self.shown) = (now, 0, 0);
        let per_second = |n: u64| (n as f64 / elapsed.as_secs_f64()).round();
        (shown < offered).then(|| {
            let (shown, sent) = (per_second(shown), per_second(offered));
            let text = format_args!("* live: showing {shown} of {sent} lines/s");
            let kind = Kind::Live {
                shown: shown as u64,
                sent: sent as u64,
            };
            notices.notice(kind, Some(room), text)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines shown one by one each start their fanout with another member, spread over the
    /// room, so that no viewer is always the last to get a line.
    #[test]
    fn each_line_shown_goes_first_to_another_member() {
        let config = Config {
            live_rate: 30,
            ..Config::default()
        };
        let registry = Registry::new(&config, Arc::default(), Arc::default());
        let mut live = LiveRooms::new(&config).new_room();
        let chunk = Chunk::from(&b"x\n"[..]);
        let members = 10_000;
        // The bucket's burst (7 lines at 30 a second) goes one by one.
        let starts: Vec<usize> = (0..7)
            .map(|_| registry.gate("lobby", &mut live, members, false, &chunk, 1))
            .map(|gated| {
                assert!(gated.shown.is_some());
                gated.first
            })
            .collect();
        for (i, a) in starts.iter().enumerate() {
            for b in &starts[i + 1..] {
                let apart = a.abs_diff(*b).min(members - a.abs_diff(*b));
                assert!(apart >= 500, "{starts:?}");
            }
        }
    }
}
