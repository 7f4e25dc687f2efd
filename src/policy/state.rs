//! `--state-dir DIR`: what the operators decided that must outlive a restart — bans and
//! mutes (`moderation`), bans and mutes from one room (`room_moderation`), slow modes
//! (`slow_modes`) and the moderators the operator made (`moderators`) — in one JSON file, `DIR/state.json`.
//!
//! Each change writes the whole file to `state.json.tmp`, fsyncs it, renames it into place
//! and fsyncs the directory: a crash leaves the old file or the new one, never half of one.
//! That is enough for a handful of changes a minute and a file of a few thousand entries; an
//! append-only log would need compaction and replay, SQLite a C build (rusqlite's bundled
//! one) for what is one small document, and neither would be readable with `cat` or fixable
//! with an editor. The file is an object with a `version` and one key per kind of state, so
//! room bans, slow modes and moderators become keys of their own (unknown keys are
//! ignored, missing ones are empty).
//!
//! A file that does not parse is a startup error: never read as empty, which would lift
//! every ban silently and then write the empty list over the operator's file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::policy::moderation::Entry;
use crate::policy::rooms::{MAX_SLOW, Op};
use crate::sync::lock;

const VERSION: u32 = 1;

/// The file's contents.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub(crate) version: u32,
    /// Bans and mutes, expired ones left out.
    #[serde(default)]
    pub(crate) moderation: Vec<Entry>,
    /// A room's moderators' bans and mutes, in that room only: a key of their own, so that a
    /// file read by an older relayd does not take them for bans everywhere.
    #[serde(default)]
    pub(crate) room_moderation: Vec<Entry>,
    /// Seconds between two lines of one user, by room.
    #[serde(default)]
    pub(crate) slow_modes: BTreeMap<String, u32>,
    /// The moderators the operator made, each for one room.
    #[serde(default)]
    pub(crate) moderators: Vec<Op>,
}

impl Saved {
    /// The file's contents: `moderation`, everywhere and in rooms alike, sorted out here.
    pub(crate) fn new(
        moderation: Vec<Entry>,
        slow_modes: BTreeMap<String, u32>,
        moderators: Vec<Op>,
    ) -> Saved {
        let (room_moderation, moderation) = moderation.into_iter().partition(|e| e.room.is_some());
        Saved {
            version: VERSION,
            moderation,
            room_moderation,
            slow_modes,
            moderators,
        }
    }
}

/// The state file; writes are one at a time.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    writing: Mutex<()>,
}

impl Store {
    /// Opens `dir`'s state, creating the directory (mode 0700, as systemd's
    /// `StateDirectory=` would) and an empty file if there is none, so that a directory
    /// relayd cannot write to is found at startup, not at the first ban.
    pub(crate) fn open(dir: &Path) -> Result<(Store, Saved), String> {
        let what = |e: io::Error| format!("--state-dir {}: {e}", dir.display());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(what)?;
        let store = Store {
            path: dir.join("state.json"),
            writing: Mutex::new(()),
        };
        let shown = store.path.display();
        let saved = match fs::read(&store.path) {
            Ok(bytes) => parse(&bytes).map_err(|e| format!("{shown}: {e}"))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let saved = Saved::new(Vec::new(), BTreeMap::new(), Vec::new());
                store.save(&saved).map_err(|e| format!("{shown}: {e}"))?;
                saved
            }
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        Ok((store, saved))
    }

    /// Writes `saved` in place of the file, atomically. `snapshot` is taken once this
    /// writer's turn has come, so the last to write writes the latest state.
    pub(crate) fn write(&self, snapshot: impl FnOnce() -> Saved) -> io::Result<()> {
        let _turn = lock(&self.writing);
        self.save(&snapshot())
    }

    fn save(&self, saved: &Saved) -> io::Result<()> {
        let mut text = serde_json::to_vec_pretty(saved).map_err(io::Error::other)?;
        text.push(b'\n');
        let tmp = self.path.with_extension("json.tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Reads a state file; every entry's target must parse too.
fn parse(bytes: &[u8]) -> Result<Saved, String> {
    let mut saved: Saved =
        serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
    if saved.version != VERSION {
        return Err(format!("version {} is not {VERSION}", saved.version));
    }
    let mut room = std::mem::take(&mut saved.room_moderation);
    if room.iter().any(|e| e.room.is_none()) {
        return Err("an entry of room_moderation without its room".into());
    }
    room.extend(
        saved
            .moderation
            .iter()
            .filter(|e| e.room.is_some())
            .cloned(),
    );
    saved.moderation.retain(|e| e.room.is_none());
    saved.moderation.extend(room);
    saved.moderation = std::mem::take(&mut saved.moderation)
        .into_iter()
        .map(Entry::checked)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a bad target: {e}"))?;
    if let Some(bad) = saved.slow_modes.values().find(|&&n| n == 0 || n > MAX_SLOW) {
        return Err(format!("a slow mode of {bad} s"));
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_errors() {
        assert!(parse(b"").is_err());
        assert!(parse(b"{\"version\": 2}").is_err());
        assert!(parse(b"{\"version\": 1, \"moderation\": [{\"kind\": \"ban\", \"target\": \"1.2.3.999\", \"until\": null, \"reason\": null, \"by\": \"api\"}]}").is_err());
        let ok = parse(b"{\"version\": 1, \"later\": []}").unwrap();
        assert!(ok.moderation.is_empty());
        assert!(parse(b"{\"version\": 1, \"slow_modes\": {\"dev\": 0}}").is_err());
    }
}
