//! A relayed line's id in its room: what a JSON client (`relayd.v1.json`) is told with each
//! line, gives back as `since` to recover what it missed, and names to recall a line.
//!
//! Ids increase within a room and are opaque to clients: only relayd compares them. On one
//! node an id is `A-B`: `A` is when this life of the room began (ms since the Unix epoch: a
//! room that went away and came back, or a restarted daemon, gives ids its old ones are told
//! apart from) and `B` the line's number in it, from 1 with no gaps, so that what a client
//! missed can be counted. In a cluster `A-B` is the Redis stream entry of the line, and the
//! k-th further line of an entry holding several is `A-B.k`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LineId {
    pub(crate) a: u64,
    pub(crate) b: u64,
    pub(crate) c: u32,
}

impl LineId {
    pub(crate) fn new(a: u64, b: u64) -> LineId {
        LineId { a, b, c: 0 }
    }

    // Read by `since` and recall (issue 22), next.
    #[allow(dead_code)]
    /// `A-B` or `A-B.C`, digits only (what [`LineId`]'s `Display` writes); `None` for
    /// anything else.
    pub(crate) fn parse(s: &str) -> Option<LineId> {
        let (a, rest) = s.split_once('-')?;
        let (b, c) = match rest.split_once('.') {
            Some((b, c)) => (b, Some(c)),
            None => (rest, None),
        };
        let c = match c {
            Some(c) => digits(c)?,
            None => 0,
        };
        Some(LineId {
            a: digits(a)?,
            b: digits(b)?,
            c,
        })
    }

    /// The id of the `k`-th line after this one in a chunk of lines numbered one by one
    /// (one node's ids), or of one Redis entry (a cluster's).
    pub(crate) fn nth(self, k: usize, numbered: bool) -> LineId {
        if numbered {
            LineId {
                b: self.b + k as u64,
                ..self
            }
        } else {
            LineId {
                c: self.c + k as u32,
                ..self
            }
        }
    }
}

/// A decimal number without sign, spaces or leading `+` (which `str::parse` would take).
fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for LineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.c {
            0 => write!(f, "{}-{}", self.a, self.b),
            c => write!(f, "{}-{}.{c}", self.a, self.b),
        }
    }
}

/// Now, in ms since the Unix epoch: a line's `time`, a room's start.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_read_back() {
        for id in [
            LineId::new(1765100000000, 1),
            LineId::new(0, 0),
            LineId { a: 5, b: 7, c: 3 },
        ] {
            assert_eq!(LineId::parse(&id.to_string()), Some(id));
        }
        assert_eq!(LineId::new(17, 42).to_string(), "17-42");
        assert_eq!(LineId { a: 17, b: 42, c: 2 }.to_string(), "17-42.2");
    }

    #[test]
    fn anything_else_is_not_an_id() {
        for s in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-+2",
            "+1-2",
            "1-2.",
            "1-2.x",
            " 1-2",
            "1-2 ",
            "1--2",
            "1-2-3",
            "1-2.3.4",
            "99999999999999999999-1",
        ] {
            assert_eq!(LineId::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn ordered_by_life_then_number_then_part() {
        let mut ids = [
            LineId::new(2, 1),
            LineId { a: 1, b: 9, c: 1 },
            LineId::new(1, 10),
            LineId::new(1, 9),
        ];
        ids.sort();
        let written: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(written, ["1-9", "1-9.1", "1-10", "2-1"]);
        assert_eq!(LineId::new(1, 9).nth(2, true), LineId::new(1, 11));
        assert_eq!(LineId::new(1, 9).nth(2, false), LineId { a: 1, b: 9, c: 2 });
    }
}
