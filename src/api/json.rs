//! What the HTTP API reads and writes. Every request type refuses fields it does not know:
//! a typo (`"txt"`) must be a 400, not a silently empty line.

use serde::{Deserialize, Serialize};

/// `POST /api/publish`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Publish {
    pub(super) room: String,
    pub(super) text: String,
    /// The user the backend speaks for: the line is `<FROM> TEXT`.
    pub(super) from: Option<String>,
}

/// `POST /api/broadcast`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Broadcast {
    pub(super) text: String,
}

/// `POST /api/send`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Send {
    pub(super) user: String,
    pub(super) text: String,
}

/// `POST /api/kick`: a user (every connection of it), or one client, by its id on `node`
/// (this node's without one).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Kick {
    pub(super) user: Option<String>,
    pub(super) client: Option<u64>,
    pub(super) node: Option<String>,
    pub(super) reason: Option<String>,
}

/// `POST /api/live`: make `room` live or lossless.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Live {
    pub(super) room: String,
    pub(super) live: bool,
}

/// One member in `GET /api/presence`.
#[derive(Serialize)]
pub(super) struct Member {
    /// Who the member is to the web app: its token's `sub`; `null` for a guest (whom
    /// `/api/send` and `/api/kick` reach by its name).
    pub(super) user: Option<String>,
    pub(super) name: String,
    pub(super) client: u64,
    /// `tcp` or `ws`; `null` for another node's client.
    pub(super) transport: Option<&'static str>,
    /// Its node, in a cluster; `null` alone.
    pub(super) node: Option<String>,
}

/// `GET /api/presence`.
#[derive(Serialize)]
pub(super) struct Presence<'a> {
    pub(super) room: &'a str,
    pub(super) members: Vec<Member>,
}

/// A room in `GET /api/rooms`.
#[derive(Serialize)]
pub(super) struct Room {
    pub(super) room: String,
    pub(super) members: usize,
}

/// `GET /api/history`: `ids[i]` is the id of `lines[i]` (`null` where not known), what
/// `POST /api/recall` takes.
#[derive(Serialize)]
pub(super) struct History<'a> {
    pub(super) room: &'a str,
    pub(super) lines: Vec<String>,
    pub(super) ids: Vec<Option<String>>,
}

/// `POST /api/recall`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Recall {
    pub(super) room: String,
    pub(super) id: String,
}

/// `POST /api/ban` and `/api/mute`: `duration` as `30s`, `10m`, `2h`, `7d`; none: until
/// lifted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Moderate {
    pub(super) target: String,
    pub(super) duration: Option<String>,
    pub(super) reason: Option<String>,
}

/// `POST /api/unban` and `/api/unmute`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Lift {
    pub(super) target: String,
}

/// `POST /api/op` and `/api/deop`: a user (a `sub`, or a guest's name) made a moderator of
/// a room, or no longer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Op {
    pub(super) user: String,
    pub(super) room: String,
}

/// One ban or mute in `GET /api/bans`.
#[derive(Serialize)]
pub(super) struct Ban {
    pub(super) kind: &'static str,
    pub(super) target: String,
    /// UTC RFC 3339; `null`: until lifted.
    pub(super) until: Option<String>,
    pub(super) reason: Option<String>,
    pub(super) by: String,
    /// A room's moderator's ban or mute holds in that room only; absent: everywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) room: Option<String>,
}
