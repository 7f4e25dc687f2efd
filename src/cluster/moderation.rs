//! Bans and mutes (everywhere or in one room), slow modes and operator-made moderators
//! across the cluster: each in a Redis key of its own that expires with it
//! (so a node that starts later, or missed a notice, reads it there), and a notice on the
//! channel, on which every node puts it in force and closes a banned user's connections.

use super::{Cluster, wire};

impl Cluster {
    /// Shares a ban or mute (`set`), or its lifting, with the other nodes: its key (`kind`,
    /// `target`) set to `entry`, expiring at `until` (seconds since the epoch), or deleted;
    /// then the notice. Runs on the operator's thread, at most the query timeout. Whether
    /// Redis took the key.
    pub(crate) fn publish_moderation(
        &self,
        set: bool,
        (kind, target): (&str, &str),
        until: Option<u64>,
        entry: &[u8],
    ) -> bool {
        let s = &self.shared;
        let key = format!("{}:moderation:{kind}:{target}", s.name);
        let cmd = match (set, until) {
            (true, Some(until)) => redis::cmd("SET")
                .arg(&key)
                .arg(entry)
                .arg("EXAT")
                .arg(until)
                .clone(),
            (true, None) => redis::cmd("SET").arg(&key).arg(entry).clone(),
            (false, _) => redis::cmd("DEL").arg(&key).clone(),
        };
        let stored = self.is_up() && s.query::<redis::Value>(&cmd).is_some();
        s.push(wire::moderation(&s.node, set, entry), 0, None);
        stored
    }

    /// Every ban and mute Redis keeps, as JSON each; `None` if Redis cannot say now.
    pub(crate) fn moderation(&self) -> Option<Vec<Vec<u8>>> {
        let s = &self.shared;
        if !self.is_up() {
            return None;
        }
        let pattern = format!("{}:moderation:*", s.name);
        let (mut cursor, mut keys) = (0u64, Vec::<String>::new());
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone();
            let (next, more): (u64, Vec<String>) = s.query(&scan)?;
            keys.extend(more);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = s.query(redis::cmd("MGET").arg(&keys))?;
        Some(values.into_iter().flatten().collect())
    }
}
