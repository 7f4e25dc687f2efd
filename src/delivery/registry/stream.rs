//! A room's lines in a cluster (`--redis`), in the order of the room's Redis stream, with
//! the stream's ids, so that every node gives a line the same id and a `since` means the
//! same on each.
//!
//! A line a client here sends goes at once to the room's members here who do not need ids
//! (TCP and plain WebSocket clients, which keep their latency: [`Origin::Sent`]) and to Redis.
//! Redis's script appends it to the stream and publishes it with its id, and every node,
//! this one too, then delivers it in the stream's order ([`Origin::Stream`]): to all its
//! members for another node's line, and for its own to those who were not handed it
//! already (JSON members, and whoever entered the room meanwhile). Only then does it enter
//! the room's history here, so the history is in the stream's order too.
//!
//! The history is seeded from Redis when the first member here enters the room. Lines the
//! seed holds that reach this node live afterwards (pub/sub lags the stream) are those not
//! newer than [`Order::last`]: they go only to the members who were here before the seed
//! ([`Member::before_seed`]), since everyone who entered with it had them replayed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::delivery::chunk::{Chunk, Format, Placed};
use crate::delivery::history::Entry as HistoryEntry;
use crate::delivery::line_id::LineId;
use crate::delivery::peer::PeerId;

use super::{Member, Room};

/// How many, and for how long, lines for rooms without members here are kept: enough to
/// bridge the moment between reading a room's history from Redis and entering the room.
pub(super) const RECENT: (usize, Duration) = (1024, Duration::from_secs(2));

/// This node's lines a room remembers handing out before Redis gave them their ids, at
/// most: a few seconds of a busy room. Older ones (Redis slow or gone, their ids perhaps
/// never coming) are forgotten; if one does come back, its members are taken to have it.
const SENT_MAX: usize = 4096;

/// Where a line for a room comes from, which decides its id and who gets it when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// One node (or another node of a relayd before line ids): numbered here, for everyone.
    Here,
    /// A client's line here, in a cluster, numbered `seq` by this node: for the members who
    /// do not need its id, now; the others get it back from Redis, with its id.
    Sent(u64),
    /// A line from the room's Redis stream, with its entry's `id`; `echo`: this node's own.
    Stream { id: LineId, echo: Option<Echo> },
}

/// This node's own line, back from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Echo {
    /// This node's number for it ([`Origin::Sent`]).
    pub(crate) seq: u64,
    /// Its sender, who is not sent its own line.
    pub(crate) from: Option<PeerId>,
}

/// A room's place in its stream.
#[derive(Default)]
pub(super) struct Order {
    /// The newest stream id in the room's history here.
    last: Option<LineId>,
    /// The oldest line the room's history was seeded with from Redis.
    floor: Option<LineId>,
    /// This node's lines handed out before their ids came back, by number: who had them.
    sent: VecDeque<(u64, Arc<Vec<Member>>)>,
}

impl Order {
    /// The newest stream id in the room's history here, if it has any (in a cluster).
    pub(super) fn newest(&self) -> Option<LineId> {
        self.last
    }
}

impl Member {
    /// Whether it takes a room's lines in the stream's order only, with their ids: a JSON
    /// client (`relayd.v1.json`).
    fn ordered(&self) -> bool {
        self.peer.format() == Format::Json
    }
}

impl Room {
    /// This node's line `seq`, before Redis gave it its id: who gets it now.
    pub(super) fn sent(&mut self, seq: u64) -> Arc<Vec<Member>> {
        let sent = &mut self.order.sent;
        if sent.len() >= SENT_MAX {
            sent.pop_front();
        }
        sent.push_back((seq, Arc::clone(&self.members)));
        Arc::new(
            self.members
                .iter()
                .filter(|m| !m.ordered())
                .cloned()
                .collect(),
        )
    }

    /// A line from the room's stream, with its entry's `id`: placed, kept in the history if
    /// it is new here, and who gets it (see the module's note).
    pub(super) fn stamped(
        &mut self,
        chunk: &Chunk,
        lines: usize,
        id: LineId,
        echo: Option<Echo>,
    ) -> Arc<Vec<Member>> {
        chunk.place(Placed {
            room: Arc::clone(&self.name),
            first: id,
            numbered: false,
        });
        let fresh = self.order.last.is_none_or(|last| id > last);
        if fresh {
            self.order.last = Some(id);
            self.history.push(chunk, lines, Some(id));
        }
        let had = echo.and_then(|e| {
            let sent = &mut self.order.sent;
            let i = sent.iter().position(|(seq, _)| *seq == e.seq)?;
            sent.remove(i).map(|(_, had)| had)
        });
        let gets = |m: &Member| {
            (fresh || m.before_seed)
                && match echo {
                    None => true,
                    Some(e) if Some(m.id) == e.from => false,
                    // Those who were handed it at once are those not ordered who were here
                    // then (this stay in the room); when that is forgotten, all of those.
                    Some(_) => {
                        m.ordered()
                            || had.as_ref().is_some_and(|had| {
                                !had.iter().any(|h| h.id == m.id && h.epoch == m.epoch)
                            })
                    }
                }
        };
        Arc::new(self.members.iter().filter(|m| gets(m)).cloned().collect())
    }

    /// Whether the room's lines have stream ids: a cluster's room (seeded from Redis, or
    /// given a line by it).
    pub(super) fn in_stream(&self) -> bool {
        self.seeded || self.order.last.is_some()
    }

    /// The oldest line read from Redis into the room's history: Redis may have trimmed
    /// lines before it.
    pub(super) fn seed_floor(&self) -> Option<LineId> {
        self.order.floor
    }

    /// Merges what Redis keeps of the room's history (`entries`, oldest first) into it.
    pub(super) fn seed(&mut self, entries: Vec<HistoryEntry>) {
        if self.order.floor.is_none() {
            self.order.floor = entries.iter().find_map(|e| e.id);
        }
        let Some(newest) = self.history.seed(entries) else {
            return;
        };
        if self.order.last.is_some_and(|last| last >= newest) {
            return;
        }
        self.order.last = Some(newest);
        for m in Arc::make_mut(&mut self.members) {
            m.before_seed = true;
        }
    }
}

/// Keeps another node's line for a room nobody here is in, placed with its id, for a
/// while (see `Inner::recent`).
pub(super) fn remember_recent(
    recent: &mut VecDeque<(String, HistoryEntry, Instant)>,
    room: &str,
    chunk: &Chunk,
    lines: usize,
    id: LineId,
) {
    let now = Instant::now();
    while recent
        .front()
        .is_some_and(|(.., at)| recent.len() >= RECENT.0 || now - *at > RECENT.1)
    {
        recent.pop_front();
    }
    chunk.place(Placed {
        room: Arc::from(room),
        first: id,
        numbered: false,
    });
    let entry = HistoryEntry {
        chunk: Chunk::clone(chunk),
        lines,
        id: Some(id),
    };
    recent.push_back((room.to_string(), entry, now));
}
