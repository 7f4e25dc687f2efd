//! Each endpoint, turned into the daemon's operator commands: the same calls the control
//! socket makes (`ops/admin.rs`), so the two cannot drift apart.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::daemon::{Daemon, ModerationError, RecallError};
use crate::ops::metrics;
use crate::policy::moderation::Kind;

use super::json;

/// An endpoint, found by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Publish,
    Broadcast,
    Send,
    Kick,
    Live,
    Presence,
    Rooms,
    History,
    Stats,
    Metrics,
    Ban,
    Unban,
    Mute,
    Unmute,
    Bans,
    Op,
    Deop,
    Recall,
}

impl Endpoint {
    /// The endpoint at `path`, if any.
    pub(super) fn at(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/api/publish" => Endpoint::Publish,
            "/api/broadcast" => Endpoint::Broadcast,
            "/api/send" => Endpoint::Send,
            "/api/kick" => Endpoint::Kick,
            "/api/live" => Endpoint::Live,
            "/api/presence" => Endpoint::Presence,
            "/api/rooms" => Endpoint::Rooms,
            "/api/history" => Endpoint::History,
            "/api/stats" => Endpoint::Stats,
            "/metrics" => Endpoint::Metrics,
            "/api/ban" => Endpoint::Ban,
            "/api/unban" => Endpoint::Unban,
            "/api/mute" => Endpoint::Mute,
            "/api/unmute" => Endpoint::Unmute,
            "/api/bans" => Endpoint::Bans,
            "/api/op" => Endpoint::Op,
            "/api/deop" => Endpoint::Deop,
            "/api/recall" => Endpoint::Recall,
            _ => return None,
        })
    }

    /// The one method it answers: actions are POSTs, questions GETs.
    pub(super) fn method(self) -> &'static str {
        match self {
            Endpoint::Publish
            | Endpoint::Broadcast
            | Endpoint::Send
            | Endpoint::Kick
            | Endpoint::Ban
            | Endpoint::Unban
            | Endpoint::Mute
            | Endpoint::Unmute
            | Endpoint::Live
            | Endpoint::Op
            | Endpoint::Deop
            | Endpoint::Recall => "POST",
            _ => "GET",
        }
    }
}

/// An answer: its status, headers of its own and body.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) content_type: &'static str,
    /// Header lines, each ending in CRLF: `WWW-Authenticate` on a 401, `Allow` on a 405.
    pub(super) headers: &'static str,
    pub(super) body: String,
}

impl Answer {
    pub(super) fn json(status: u16, value: &impl Serialize) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            headers: "",
            body: serde_json::to_string(value).unwrap_or_else(|_| "{}".into()),
        }
    }

    /// `{"error": WHY}`.
    pub(super) fn error(status: u16, why: &str) -> Answer {
        let mut answer = Answer::json(status, &json!({ "error": why }));
        if status == 401 {
            answer.headers = "WWW-Authenticate: Bearer\r\n";
        }
        answer
    }

    /// A 405 for an endpoint that answers `allowed` only.
    pub(super) fn not_allowed(allowed: &'static str) -> Answer {
        let mut answer = Answer::error(405, &format!("only {allowed} is served here"));
        answer.headers = match allowed {
            "POST" => "Allow: POST\r\n",
            _ => "Allow: GET\r\n",
        };
        answer
    }

    fn ok(more: Value) -> Answer {
        let mut body = json!({ "ok": true });
        if let (Some(body), Value::Object(more)) = (body.as_object_mut(), more) {
            body.extend(more);
        }
        Answer::json(200, &body)
    }
}

/// Answers a GET of `endpoint` with `query` (what follows `?`).
pub(super) fn get(daemon: &Daemon, endpoint: Endpoint, query: &str) -> Answer {
    match endpoint {
        Endpoint::Presence => match room(query) {
            Ok(room) => presence(daemon, room),
            Err(answer) => answer,
        },
        Endpoint::History => match room(query) {
            Ok(room) => {
                let (ids, lines) = daemon
                    .history(room)
                    .into_iter()
                    .map(|(id, line)| (id.map(|id| id.to_string()), line))
                    .unzip();
                Answer::json(200, &json::History { room, lines, ids })
            }
            Err(answer) => answer,
        },
        _ if !query.is_empty() => Answer::error(400, "this endpoint takes no query"),
        Endpoint::Rooms => {
            let rooms: Vec<json::Room> = daemon
                .rooms()
                .into_iter()
                .map(|(room, members)| json::Room { room, members })
                .collect();
            Answer::json(200, &json!({ "rooms": rooms }))
        }
        Endpoint::Stats => Answer::json(200, &stats(daemon)),
        Endpoint::Bans => {
            let bans: Vec<json::Ban> = daemon
                .bans()
                .into_iter()
                .map(|e| json::Ban {
                    kind: e.kind.as_str(),
                    until: e.until_text(),
                    target: e.target,
                    reason: e.reason,
                    by: e.by,
                    room: e.room,
                })
                .collect();
            Answer::json(200, &json!({ "bans": bans }))
        }
        Endpoint::Metrics => Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: "",
            body: metrics::render(daemon),
        },
        _ => Answer::not_allowed("POST"),
    }
}

/// Answers a POST of `endpoint` with `body`.
pub(super) fn post(daemon: &Daemon, endpoint: Endpoint, body: &[u8]) -> Answer {
    let done = match endpoint {
        Endpoint::Publish => read(body).and_then(|p: json::Publish| {
            daemon
                .publish(&p.room, p.from.as_deref(), &p.text)
                .map(|_| json!({}))
                .map_err(|e| Answer::error(400, &e.to_string()))
        }),
        Endpoint::Broadcast => read(body).and_then(|b: json::Broadcast| {
            one_line("text", &b.text)?;
            daemon.broadcast(&b.text);
            Ok(json!({}))
        }),
        Endpoint::Send => read(body).and_then(|s: json::Send| {
            one_line("text", &s.text)?;
            let n = daemon
                .send_user(&s.user, &s.text)
                .map_err(|_| Answer::error(404, "no such user"))?;
            Ok(json!({ "connections": n }))
        }),
        Endpoint::Kick => read(body).and_then(|k: json::Kick| kick(daemon, k)),
        Endpoint::Ban | Endpoint::Mute => read(body).and_then(|m: json::Moderate| {
            let kind = match endpoint {
                Endpoint::Ban => Kind::Ban,
                _ => Kind::Mute,
            };
            let (duration, reason) = (m.duration.as_deref(), m.reason.as_deref());
            let (entry, closed) = daemon
                .moderate(kind, &m.target, duration, reason, "api")
                .map_err(moderation_error)?;
            Ok(json!({ "until": entry.until_text(), "connections": closed }))
        }),
        Endpoint::Unban | Endpoint::Unmute => read(body).and_then(|l: json::Lift| {
            let kind = match endpoint {
                Endpoint::Unban => Kind::Ban,
                _ => Kind::Mute,
            };
            daemon
                .lift(kind, &l.target, "api")
                .map_err(moderation_error)?;
            Ok(json!({}))
        }),
        Endpoint::Live => read(body).and_then(|l: json::Live| {
            let n = daemon
                .set_live(&l.room, l.live)
                .map_err(|_| Answer::error(400, "a room is 1-32 letters, digits, _ - ."))?;
            Ok(json!({ "members": n }))
        }),
        Endpoint::Op | Endpoint::Deop => read(body).and_then(|o: json::Op| {
            daemon
                .op(&o.user, &o.room, endpoint == Endpoint::Op, "api")
                .map_err(moderation_error)?;
            Ok(json!({}))
        }),
        Endpoint::Recall => read(body).and_then(|r: json::Recall| {
            let kept = daemon.recall(&r.room, &r.id, "api").map_err(|e| {
                let status = match e {
                    RecallError::NoSuchLine(..) => 404,
                    _ => 400,
                };
                Answer::error(status, &e.to_string())
            })?;
            Ok(json!({ "in_history": kept }))
        }),
        _ => Err(Answer::not_allowed("GET")),
    };
    match done {
        Ok(more) => Answer::ok(more),
        Err(answer) => answer,
    }
}

/// The request's JSON, or a 400 saying what is wrong with it.
fn read<T: DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| Answer::error(400, &format!("bad request: {e}")))
}

/// A text that reaches people as one line: not empty, no line break.
fn one_line(field: &str, text: &str) -> Result<(), Answer> {
    if text.is_empty() {
        return Err(Answer::error(400, &format!("{field} is empty")));
    }
    if text.contains(['\n', '\r']) {
        return Err(Answer::error(400, &format!("{field} must be one line")));
    }
    Ok(())
}

/// The room a query names: `room=NAME` and nothing else.
fn room(query: &str) -> Result<&str, Answer> {
    match query.strip_prefix("room=") {
        Some(room) if !room.is_empty() && !room.contains('&') => Ok(room),
        _ => Err(Answer::error(400, "the query must be room=NAME")),
    }
}

fn presence(daemon: &Daemon, room: &str) -> Answer {
    let members = daemon
        .presence(room)
        .into_iter()
        .map(|m| json::Member {
            user: m.user,
            name: m.name,
            client: m.client,
            transport: m.transport,
            node: m.node,
        })
        .collect();
    Answer::json(200, &json::Presence { room, members })
}

fn kick(daemon: &Daemon, k: json::Kick) -> Result<Value, Answer> {
    if let Some(reason) = &k.reason {
        one_line("reason", reason)?;
    }
    let reason = k.reason.as_deref();
    let n = match (k.user, k.client, k.node) {
        (Some(user), None, None) => daemon
            .kick_user(&user, reason)
            .map_err(|_| Answer::error(404, "no such user"))?,
        (None, Some(id), node) => {
            let target = match node {
                Some(node) => format!("{id}@{node}"),
                None => id.to_string(),
            };
            daemon
                .kick(&target, reason)
                .map_err(|_| Answer::error(404, "no such client"))?;
            1
        }
        (Some(_), _, _) | (None, None, _) => {
            return Err(Answer::error(
                400,
                "give either user, or client (and node for another node's client)",
            ));
        }
    };
    Ok(json!({ "connections": n }))
}

fn moderation_error(e: ModerationError) -> Answer {
    let status = match e {
        ModerationError::Bad(_) => 400,
        ModerationError::NotFound(_) => 404,
        ModerationError::NotSaved(_) => 500,
    };
    Answer::error(status, &e.to_string())
}

/// The control socket's `stats` counters as one JSON object of numbers.
fn stats(daemon: &Daemon) -> Map<String, Value> {
    daemon
        .stats_rows()
        .into_iter()
        .map(|(key, value)| (key.to_string(), Value::from(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_one_room() {
        assert_eq!(room("room=lobby").ok(), Some("lobby"));
        assert!(room("").is_err());
        assert!(room("room=").is_err());
        assert!(room("rom=lobby").is_err());
        assert!(room("room=lobby&x=1").is_err());
    }
}
