//! What a client entering a room is queued besides its greeting: a JSON client the room's
//! `presence`, and with `since` (the `join` message, or `?since=` on the upgrade URL) every
//! line the room still keeps after that id, then `resumed`; any other the room's replay. In
//! the same critical section as its becoming a member, so that no line is missing and none
//! comes twice (see `Registry::deliver`).

use std::collections::BTreeMap;

use crate::delivery::chunk::{Chunk, Format};
use crate::delivery::json_event::{self, Resumed};
use crate::delivery::line_id::LineId;
use crate::delivery::notice::Notices;
use crate::delivery::peer::PeerId;

use super::{Entry, Member, Registry, Room, Seed, presence};

/// Where a client enters: the room, what Redis keeps of its history (in a cluster, for its
/// first member here), and the id after which a JSON client recovers its lines.
pub(super) struct Place<'a> {
    pub(super) room: &'a str,
    pub(super) seed: Option<Seed>,
    pub(super) since: Option<LineId>,
}

impl Registry {
    /// What `joiner` gets on entering `room`, after its greeting (see the module's note).
    pub(super) fn arrival(
        &self,
        clients: &BTreeMap<PeerId, Entry>,
        room: &mut Room,
        joiner: &Member,
        since: Option<LineId>,
    ) -> Vec<Chunk> {
        if joiner.peer.format() != Format::Json {
            return room.history.replay();
        }
        let mut members = room.members.to_vec();
        members.push(joiner.clone());
        let mut lines = vec![presence::presence(
            clients,
            &self.rules,
            &room.name,
            &members,
        )];
        match since {
            Some(since) => lines.extend(recover(room, since, &self.said)),
            None => lines.extend(room.history.replay()),
        }
        lines
    }
}

/// What a joiner with `since` gets of `room` in place of its replay: the lines after it (or,
/// for an id this room never gave, the error and the ordinary replay), then `resumed`.
fn recover(room: &mut Room, since: LineId, notices: &Notices) -> Vec<Chunk> {
    if room.in_stream() {
        return recover_in_stream(room, since);
    }
    let (life, given) = (room.life, room.numbered);
    // An id of an earlier life of the room (before it emptied, or the daemon restarted):
    // what came after it then is gone, how much is not known.
    if since.a < life && since.c == 0 {
        let mut lines = room.history.since(LineId::new(life, 0)).0;
        lines.push(resumed(&room.name, false, None));
        return lines;
    }
    if since.a != life || since.b > given || since.c != 0 {
        let error = notices.error(format_args!(
            "since {since}: not a line of {}, entered without it",
            room.name
        ));
        let mut lines = vec![error];
        lines.extend(room.history.replay());
        return lines;
    }
    let (mut lines, first) = room.history.since(since);
    // Ids are dense: whatever lies between `since` and the first line kept is missed.
    let next = first.map_or(given + 1, |f| f.b);
    let missed = next - since.b - 1;
    lines.push(resumed(&room.name, missed == 0, Some(missed)));
    lines
}

/// [`recover`] in a cluster, where ids are the room's Redis stream's, the same on every
/// node, and not dense: every line kept after `since`; recovered if nothing after `since`
/// can have gone (it is not older than the newest line forgotten here, nor than the oldest
/// line read from Redis, which may have trimmed older ones), else not, how many missed
/// unknown. A `since` newer than every line: recovered, nothing missed.
fn recover_in_stream(room: &Room, since: LineId) -> Vec<Chunk> {
    let (mut lines, _) = room.history.since(since);
    let recovered = [room.history.forgotten(), room.seed_floor()]
        .into_iter()
        .flatten()
        .all(|gone_before| since >= gone_before);
    lines.push(resumed(&room.name, recovered, recovered.then_some(0)));
    lines
}

fn resumed(room: &str, recovered: bool, missed: Option<u64>) -> Chunk {
    let event = Resumed {
        kind: "resumed",
        room,
        recovered,
        missed,
    };
    Chunk::frames(&json_event::frame(&event))
}
