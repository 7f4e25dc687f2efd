//! What a `relayd.v1.json` client sends (one JSON object per WebSocket message, each with a
//! `"type"`), read into what a plain client's lines would be: `send` is the line as typed,
//! `nick`, `msg`, `auth` and `recall` the commands, so that both kinds of client go through
//! the very same checks. Only `join` with `since` has no line: it is handed on as it is.

use serde::Deserialize;

/// One message, as the README's protocol reference lists them. Fields beyond these are an
/// error, so that a typo (`"romo"`) is not silently a join without a room.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Message {
    Send {
        text: String,
    },
    Join {
        room: String,
        #[serde(default)]
        since: Option<String>,
    },
    Nick {
        name: String,
    },
    Msg {
        to: String,
        text: String,
    },
    Auth {
        token: String,
    },
    Recall {
        id: String,
    },
}

/// What a message means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// The lines a plain client would have sent, each ending with `\n`.
    Lines(Vec<u8>),
    /// Enter `room`, recovering what came after `since` if given.
    Join { room: String, since: Option<String> },
    /// Not a message relayd understands: what the client is told, after `relayd: `.
    Error(String),
}

/// Reads one message (its text; a `\n` after it is ignored). `chat`: names, rooms and
/// commands exist (`--chat`); in raw mode only `send` and `auth` mean anything.
pub(crate) fn decode(message: &[u8], chat: bool) -> Decoded {
    let message = message.strip_suffix(b"\n").unwrap_or(message);
    let message = match serde_json::from_slice::<Message>(message) {
        Ok(message) => message,
        Err(e) => return Decoded::Error(format!("bad message: {e}")),
    };
    let command = |line: String| Decoded::Lines(format!("{line}\n").into_bytes());
    match message {
        Message::Send { text } => command(text),
        Message::Auth { token } => command(format!("/auth {token}")),
        _ if !chat => Decoded::Error("no names or rooms here: send and auth only".into()),
        Message::Join { room, since } => Decoded::Join { room, since },
        Message::Nick { name } => command(format!("/nick {name}")),
        Message::Recall { id } => command(format!("/recall {id}")),
        // A name is one word: the rest would be taken as the text.
        Message::Msg { to, .. } if to.is_empty() || to.contains(char::is_whitespace) => {
            Decoded::Error(format!("no such user {to}"))
        }
        Message::Msg { to, text } => command(format!("/msg {to} {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Decoded {
        Decoded::Lines(s.as_bytes().to_vec())
    }

    #[test]
    fn each_message_is_what_a_plain_client_would_type() {
        let d = |s: &str| decode(s.as_bytes(), true);
        assert_eq!(d(r#"{"type":"send","text":"hi"}"#), lines("hi\n"));
        assert_eq!(
            d(r#"{"type":"send","text":"/me waves"}"#),
            lines("/me waves\n")
        );
        assert_eq!(d(r#"{"type":"nick","name":"bob"}"#), lines("/nick bob\n"));
        assert_eq!(
            d(r#"{"type":"msg","to":"bob","text":"psst"}"#),
            lines("/msg bob psst\n")
        );
        assert_eq!(
            d(r#"{"type":"auth","token":"t.k.n"}"#),
            lines("/auth t.k.n\n")
        );
        assert_eq!(d(r#"{"type":"recall","id":"1-2"}"#), lines("/recall 1-2\n"));
        assert_eq!(
            d(r#"{"type":"join","room":"games"}"#),
            Decoded::Join {
                room: "games".into(),
                since: None
            }
        );
        assert_eq!(
            d("{\"since\":\"5-1\",\"type\":\"join\",\"room\":\"games\"}\n"),
            Decoded::Join {
                room: "games".into(),
                since: Some("5-1".into())
            }
        );
    }

    #[test]
    fn anything_else_is_an_error() {
        for bad in [
            "",
            "hi",
            "{",
            "[]",
            r#"{"text":"hi"}"#,
            r#"{"type":"shout","text":"hi"}"#,
            r#"{"type":"send"}"#,
            r#"{"type":"send","text":"hi","extra":1}"#,
            r#"{"type":"send","text":7}"#,
            r#"{"type":"msg","to":"bob x","text":"hi"}"#,
        ] {
            let Decoded::Error(why) = decode(bad.as_bytes(), true) else {
                panic!("{bad:?} accepted");
            };
            assert!(!why.is_empty());
        }
        assert!(matches!(
            decode(br#"{"type":"join","room":"games"}"#, false),
            Decoded::Error(_)
        ));
        assert_eq!(
            decode(br#"{"type":"send","text":"hi"}"#, false),
            lines("hi\n")
        );
    }
}
