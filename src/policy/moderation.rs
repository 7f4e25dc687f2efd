//! Bans and mutes: who they name, until when, why and by whom, and the rules that read them.
//! The daemon (`daemon/moderation.rs`) acts on them; `policy::state` keeps them on disk.
//!
//! A target is a user — a token's `sub`, or a guest's name, which a ban then follows to
//! whoever takes it — or an address or network. Entries lift themselves at expiry: a check
//! ignores an expired entry, and the next change or listing drops it.

use std::fmt;
use std::net::IpAddr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::policy::access::Net;
use crate::sync;

/// The longest ban or mute with a duration: longer is "until lifted".
const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Ban,
    Mute,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Ban => "ban",
            Kind::Mute => "mute",
        }
    }
}

/// Whom an entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A token's `sub` (exactly), or a guest's name (in any case, as names are compared).
    User(String),
    Net(Net),
}

impl Target {
    /// Reads a target: an address or network if it looks like one (only digits, hex
    /// letters, `.`, `:` and `/`, with a `.`, `:` or `/`), which must then parse; else a user,
    /// which like a `sub` has no space or control character. So a mistyped address is an
    /// error rather than a ban of a user nobody is.
    pub(crate) fn parse(s: &str) -> Result<Target, String> {
        if s.is_empty() || s.len() > 256 {
            return Err("a target is 1-256 bytes".into());
        }
        let addressy = s.contains(['.', ':', '/'])
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/'));
        if addressy {
            return s.parse().map(Target::Net);
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("{s:?}: not a user, an address or a network"));
        }
        Ok(Target::User(s.to_string()))
    }

    fn matches_user(&self, sub: Option<&str>, name: &str) -> bool {
        match (self, sub) {
            (Target::User(t), Some(sub)) => t == sub,
            (Target::User(t), None) => t.eq_ignore_ascii_case(name),
            (Target::Net(_), _) => false,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::User(user) => f.write_str(user),
            Target::Net(net) => write!(f, "{net}"),
        }
    }
}

/// Reads `30s`, `10m`, `2h`, `7d`: a positive whole number and its unit, at most a year.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s}: not a duration (30s, 10m, 2h, 7d)");
    let unit = match s.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    let d = Duration::from_secs(n.saturating_mul(unit));
    if n == 0 || d > MAX_DURATION {
        return Err(format!(
            "{s}: a duration is 1s to 365d (none: until lifted)"
        ));
    }
    Ok(d)
}

/// One ban or mute, as the `bans` list shows it and the state file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    pub(crate) target: String,
    /// Seconds since the epoch; `None`: until lifted.
    pub(crate) until: Option<u64>,
    pub(crate) reason: Option<String>,
    /// `operator` (the control socket), `api`, or the name of a room's moderator.
    pub(crate) by: String,
    /// A room's moderator's ban or mute holds in that room only; `None`: everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) room: Option<String>,
    #[serde(skip)]
    parsed: Option<Target>,
}

impl Entry {
    pub(crate) fn new(
        kind: Kind,
        target: &Target,
        duration: Option<Duration>,
        reason: Option<&str>,
        by: &str,
    ) -> Entry {
        Entry {
            kind,
            target: target.to_string(),
            // Rounded up to the second: never shorter than asked.
            until: duration.map(|d| {
                let end = SystemTime::now() + d;
                let part = end
                    .duration_since(UNIX_EPOCH)
                    .is_ok_and(|t| t.subsec_nanos() > 0);
                now_secs(end) + u64::from(part)
            }),
            reason: reason.filter(|r| !r.is_empty()).map(str::to_string),
            by: by.to_string(),
            room: None,
            parsed: Some(target.clone()),
        }
    }

    /// The same, in `room` only.
    pub(crate) fn in_room(mut self, room: &str) -> Entry {
        self.room = Some(room.to_string());
        self
    }

    /// Whether it is the same kind on the same target in the same place as `other`.
    fn same(&self, other: &Entry) -> bool {
        self.kind == other.kind && self.target() == other.target() && self.room == other.room
    }

    /// Fills in the parsed target of an entry read from the state file.
    pub(crate) fn checked(mut self) -> Result<Entry, String> {
        self.parsed = Some(Target::parse(&self.target)?);
        Ok(self)
    }

    /// Its target, read (`None` only for an entry not yet [`Entry::checked`]).
    pub(crate) fn target(&self) -> Option<&Target> {
        self.parsed.as_ref()
    }

    fn live(&self, now: u64) -> bool {
        self.until.is_none_or(|until| until > now)
    }

    /// `until TIME` in UTC RFC 3339 to the second, or nothing when it never ends.
    pub(crate) fn until_text(&self) -> Option<String> {
        self.until.map(rfc3339)
    }

    /// What the banned client is told (after `relayd: `).
    pub(crate) fn banned_text(&self) -> String {
        let mut text = String::from("you are banned");
        if let Some(room) = &self.room {
            text.push_str(&format!(" from {room}"));
        }
        if let Some(until) = self.until_text() {
            text.push_str(&format!(" until {until}"));
        }
        if let Some(reason) = &self.reason {
            text.push_str(&format!(": {reason}"));
        }
        text
    }

    /// What the muted client is told (after `relayd: `).
    pub(crate) fn muted_text(&self) -> String {
        let room = self.room.as_ref().map(|r| format!(" in {r}"));
        let room = room.as_deref().unwrap_or_default();
        match self.until_text() {
            Some(until) => format!("you are muted{room} until {until}"),
            None => format!("you are muted{room}"),
        }
    }
}

/// Seconds since the epoch, as entries keep time.
pub(crate) fn now_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `2026-12-07T10:50:00Z`.
pub(crate) fn rfc3339(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

/// Every ban and mute in force, shared by all threads. Reads (every admission, every line
/// of a muted-anywhere daemon) take the read lock; a daemon with none takes no lock at all.
#[derive(Debug, Default)]
pub(crate) struct Moderation {
    entries: RwLock<Vec<Entry>>,
    count: AtomicUsize,
}

impl Moderation {
    pub(crate) fn new(entries: Vec<Entry>) -> Moderation {
        let moderation = Moderation::default();
        moderation.count.store(entries.len(), Ordering::Relaxed);
        *sync::write(&moderation.entries) = entries;
        moderation
    }

    /// Puts `entry` in force, in place of any of its kind for the same target.
    pub(crate) fn set(&self, entry: Entry) {
        self.change(|entries| {
            entries.retain(|e| !e.same(&entry));
            entries.push(entry);
        });
    }

    /// Lifts the `kind` on `target` (in `room` only, or everywhere); whether there was one
    /// in force.
    pub(crate) fn lift(&self, kind: Kind, room: Option<&str>, target: &Target) -> bool {
        let mut found = false;
        self.change(|entries| {
            let now = now_secs(SystemTime::now());
            entries.retain(|e| {
                let hit = e.kind == kind && e.target() == Some(target) && e.room.as_deref() == room;
                found |= hit && e.live(now);
                !hit
            });
        });
        found
    }

    /// Whether `entry` (its kind, target and end) is in force already.
    pub(crate) fn has(&self, entry: &Entry) -> bool {
        sync::read(&self.entries)
            .iter()
            .any(|e| e.same(entry) && e.until == entry.until)
    }

    /// The entries in force, bans first, then by target; expired ones are dropped.
    pub(crate) fn list(&self) -> Vec<Entry> {
        self.change(|_| {});
        let mut list = sync::read(&self.entries).clone();
        list.sort_by(|a, b| {
            (a.kind == Kind::Mute, &a.target).cmp(&(b.kind == Kind::Mute, &b.target))
        });
        list
    }

    fn change(&self, f: impl FnOnce(&mut Vec<Entry>)) {
        let mut entries = sync::write(&self.entries);
        f(&mut entries);
        let now = now_secs(SystemTime::now());
        entries.retain(|e| e.live(now));
        self.count.store(entries.len(), Ordering::Relaxed);
    }

    /// Whether there is any entry at all (expired ones included): the cheap check first.
    pub(crate) fn any(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// The ban in force on address `ip`, if any.
    pub(crate) fn banned_addr(&self, ip: IpAddr) -> Option<Entry> {
        self.find(
            Kind::Ban,
            None,
            |t| matches!(t, Target::Net(net) if net.contains(ip)),
        )
    }

    /// The `kind` in force on a user: a signed-in one by its `sub`, a guest by its `name`.
    pub(crate) fn on_user(&self, kind: Kind, sub: Option<&str>, name: &str) -> Option<Entry> {
        self.find(kind, None, |t| t.matches_user(sub, name))
    }

    /// The `kind` in force on a user in `room` only (a room's moderator's).
    pub(crate) fn in_room(
        &self,
        kind: Kind,
        room: &str,
        sub: Option<&str>,
        name: &str,
    ) -> Option<Entry> {
        self.find(kind, Some(room), |t| t.matches_user(sub, name))
    }

    fn find(&self, kind: Kind, room: Option<&str>, hit: impl Fn(&Target) -> bool) -> Option<Entry> {
        if !self.any() {
            return None;
        }
        let now = now_secs(SystemTime::now());
        sync::read(&self.entries)
            .iter()
            .find(|e| {
                e.kind == kind
                    && e.room.as_deref() == room
                    && e.live(now)
                    && e.target().is_some_and(&hit)
            })
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("u-42"), Ok(Target::User("u-42".into())));
        assert_eq!(Target::parse("bob"), Ok(Target::User("bob".into())));
        assert!(matches!(Target::parse("203.0.113.7"), Ok(Target::Net(_))));
        assert!(matches!(Target::parse("2001:db8::/32"), Ok(Target::Net(_))));
        assert!(Target::parse("203.0.113.300").is_err());
        assert!(Target::parse("10.0.0.1/8").is_err());
        assert!(Target::parse("2001:db8::/129").is_err());
        assert!(Target::parse("a b").is_err());
        assert!(Target::parse("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in [
            "",
            "s",
            "10",
            "10x",
            "0s",
            "-1m",
            "1.5h",
            "366d",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_utc_to_the_second() {
        assert_eq!(rfc3339(1_796_640_600), "2026-12-07T10:50:00Z");
    }

    #[test]
    fn a_ban_matches_its_user_and_expires() {
        let m = Moderation::default();
        let bob = Target::parse("bob").unwrap();
        m.set(Entry::new(Kind::Ban, &bob, None, Some("spam"), "operator"));
        assert!(m.on_user(Kind::Ban, None, "BOB").is_some());
        // A signed-in user is matched by its sub, not its name.
        assert!(m.on_user(Kind::Ban, Some("u-1"), "bob").is_none());
        assert!(m.on_user(Kind::Mute, None, "bob").is_none());
        let net = Target::parse("192.0.2.0/24").unwrap();
        let mut old = Entry::new(Kind::Ban, &net, Some(Duration::from_secs(1)), None, "api");
        old.until = Some(1);
        m.set(old);
        assert!(m.banned_addr("192.0.2.9".parse().unwrap()).is_none());
        assert_eq!(m.list().len(), 1);
        // A ban from a room holds there only, and is lifted on its own.
        m.set(Entry::new(Kind::Ban, &bob, None, None, "carol").in_room("dev"));
        assert!(m.in_room(Kind::Ban, "dev", None, "bob").is_some());
        assert!(m.in_room(Kind::Ban, "ops", None, "bob").is_none());
        assert!(m.lift(Kind::Ban, None, &bob));
        assert!(!m.lift(Kind::Ban, None, &bob));
        assert!(m.on_user(Kind::Ban, None, "bob").is_none());
        assert!(m.lift(Kind::Ban, Some("dev"), &bob));
    }
}
