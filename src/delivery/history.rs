//! A room's memory of its last relayed lines: the last `--history N` are replayed to whoever
//! enters the room; all it keeps are what a client coming back with the id of the last line it
//! saw (`since`) recovers, and what a moderator can recall a line from.
//!
//! A room keeps max(N, [`RECOVERY_LINES`]) lines, none older than `--history-age`, and beyond
//! its last N lines no more than [`RECOVERY_BYTES`], so that a room of long lines costs what a
//! room of short ones does. `--history-age 0` turns recovery off: N lines are kept, however
//! old, as before there was recovery. Lines age out lazily, when the history is pushed to or
//! read (no thread of its own).
//!
//! It stores the shared chunks as they were delivered (each often many lines), not one
//! allocation per line, so keeping history costs the relay path one `VecDeque` push. The
//! oldest chunk may hold more lines than are still wanted; those are trimmed off at replay,
//! which is rare next to delivery.
//!
//! In a cluster (`--redis`) every chunk carries its entry's id in the room's Redis stream,
//! so that the room's history kept in Redis can be merged into this node's without a line
//! appearing twice ([`History::seed`]).

use std::cmp::Ordering;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::delivery::chunk::Chunk;
use crate::delivery::line_id::LineId;

/// Lines a room keeps for recovery, whatever `--history` replays: at 100 lines a second, 10 s
/// of conversation, a phone's dropped connection coming back.
pub(crate) const RECOVERY_LINES: usize = 1000;

/// Bytes a room keeps beyond its last `--history` lines: 1000 chat lines of 256 bytes, and a
/// bound on what a room of `--max-line` lines costs.
pub(crate) const RECOVERY_BYTES: usize = 256 * 1024;

/// A chunk of history: its bytes, how many lines it holds, and, in a cluster, its Redis
/// stream entry's id (the id of its first line).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) chunk: Chunk,
    pub(crate) lines: usize,
    pub(crate) id: Option<LineId>,
}

/// An entry, and when it was kept here (its age).
#[derive(Debug)]
struct Kept {
    entry: Entry,
    at: Instant,
}

#[derive(Debug)]
pub(crate) struct History {
    /// Lines replayed to whoever enters without `since` (`--history`).
    replayed: usize,
    /// Lines to keep; 0 keeps nothing.
    cap: usize,
    /// `--history-age`; `None` (0): no recovery, `replayed` lines kept however old.
    age: Option<Duration>,
    /// Chunks, oldest first.
    chunks: VecDeque<Kept>,
    /// Lines in `chunks`; at most `cap` plus the excess of the oldest chunk.
    lines: usize,
    /// Bytes in `chunks`.
    bytes: usize,
    /// The newest line forgotten for count, bytes or age (not a recalled one): a client
    /// recovering from before it missed lines.
    forgotten: Option<LineId>,
}

impl History {
    /// A history replaying `replayed` lines (`--history`), keeping lines for `age`
    /// (`--history-age`).
    pub(crate) fn new(replayed: usize, age: Duration) -> History {
        let age = (!age.is_zero()).then_some(age);
        History {
            replayed,
            cap: match age {
                Some(_) => replayed.max(RECOVERY_LINES),
                None => replayed,
            },
            age,
            chunks: VecDeque::new(),
            lines: 0,
            bytes: 0,
            forgotten: None,
        }
    }

    /// Remembers `chunk`, which holds `lines` whole lines.
    pub(crate) fn push(&mut self, chunk: &Chunk, lines: usize, id: Option<LineId>) {
        if self.cap == 0 || lines == 0 {
            return;
        }
        self.keep(
            Entry {
                chunk: Chunk::clone(chunk),
                lines,
                id,
            },
            Instant::now(),
        );
        self.trim();
    }

    fn keep(&mut self, entry: Entry, at: Instant) {
        self.lines += entry.lines;
        self.bytes += entry.chunk.len();
        self.chunks.push_back(Kept { entry, at });
    }

    /// Forgets the oldest chunks while there are more lines than it keeps, more bytes beyond
    /// the last `replayed` lines than [`RECOVERY_BYTES`], or lines older than its age.
    fn trim(&mut self) {
        let now = Instant::now();
        while let Some(oldest) = self.chunks.front() {
            let (lines, bytes) = (oldest.entry.lines, oldest.entry.chunk.len());
            let over = self.lines - lines >= self.cap
                || (self.lines - lines >= self.replayed && self.bytes > RECOVERY_BYTES);
            let old = self
                .age
                .is_some_and(|age| now.saturating_duration_since(oldest.at) > age);
            if !over && !old {
                break;
            }
            if let Some(p) = oldest.entry.chunk.placed() {
                self.forgotten = Some(p.first.nth(lines - 1, p.numbered));
            }
            self.lines -= lines;
            self.bytes -= bytes;
            self.chunks.pop_front();
        }
    }

    /// Whether it keeps lines for recovery (`--history-age` is not 0).
    pub(crate) fn recovers(&self) -> bool {
        self.age.is_some()
    }

    /// Forgets what has aged out; returns whether anything is left.
    pub(crate) fn expire(&mut self) -> bool {
        self.trim();
        !self.chunks.is_empty()
    }

    /// Merges `older` (a room's history as Redis had it, oldest first) into this one: those of
    /// its chunks not remembered here already go before the ones that are, and the last `cap`
    /// lines are kept. Returns the newest id it added, if any: this node may still receive
    /// the lines up to it live.
    pub(crate) fn seed(&mut self, older: Vec<Entry>) -> Option<LineId> {
        // Once per room, so the ids are gathered here rather than kept for every line.
        let mut seen = self.ids();
        let mut added = None;
        let newer = std::mem::take(&mut self.chunks);
        (self.lines, self.bytes) = (0, 0);
        // Redis does not say when it got them: they age from now.
        let now = Instant::now();
        for entry in older {
            let Some(id) = entry.id else { continue };
            if !seen.insert(id) {
                continue;
            }
            added = added.max(Some(id));
            self.keep(entry, now);
        }
        for kept in newer {
            self.keep(kept.entry, kept.at);
        }
        self.trim();
        added
    }

    /// The ids of the chunks remembered.
    fn ids(&self) -> HashSet<LineId> {
        self.chunks.iter().filter_map(|k| k.entry.id).collect()
    }

    /// The last `--history` lines, oldest first: what whoever enters without `since` is
    /// replayed. Call [`History::expire`] first.
    pub(crate) fn replay(&self) -> Vec<Chunk> {
        self.last(self.replayed)
    }

    /// Every line kept, oldest first: what the operator's `history` shows.
    pub(crate) fn kept(&mut self) -> Vec<Chunk> {
        self.trim();
        self.last(self.cap)
    }

    /// The last `n` lines, as chunks sharing the kept ones' bytes.
    fn last(&self, n: usize) -> Vec<Chunk> {
        let mut skip = self.lines.saturating_sub(n);
        let mut out = Vec::new();
        for kept in &self.chunks {
            if skip >= kept.entry.lines {
                skip -= kept.entry.lines;
                continue;
            }
            out.push(kept.entry.chunk.lines_from(skip));
            skip = 0;
        }
        out
    }

    /// Every line kept after `after`, oldest first, and the id of the first line after
    /// `after` that was not forgotten (for count, bytes or age): the lines between the two
    /// were missed. A recalled line is not missed, so this is not the first line returned.
    /// Call [`History::expire`] first. On one node `after` is an id this node numbered, in
    /// this life of the room, and the first id is exact; in a cluster it is a stream id,
    /// which lines are ordered against by entry, then by line within it, whichever node gave
    /// them, and the first id means nothing (see [`History::forgotten`]).
    pub(crate) fn since(&self, after: LineId) -> (Vec<Chunk>, Option<LineId>) {
        let mut out = Vec::new();
        let mut forgotten = self.forgotten;
        // The oldest chunk's lines past `cap` are not kept, as for a replay.
        let mut excess = self.lines.saturating_sub(self.cap);
        for kept in &self.chunks {
            let trimmed = std::mem::take(&mut excess);
            let Some(placed) = kept.entry.chunk.placed() else {
                continue;
            };
            let (start, lines) = (placed.first, kept.entry.lines);
            if trimmed > 0 {
                forgotten = Some(start.nth(trimmed - 1, placed.numbered));
            }
            // How many of its lines are `after` or older.
            let seen = match placed.numbered {
                true if start.a != after.a => continue,
                true => (after.b + 1).saturating_sub(start.b) as usize,
                false => match (start.a, start.b).cmp(&(after.a, after.b)) {
                    Ordering::Less => lines,
                    Ordering::Equal => (after.c + 1).saturating_sub(start.c) as usize,
                    Ordering::Greater => 0,
                },
            };
            let skip = seen.max(trimmed);
            if skip < lines {
                out.push(kept.entry.chunk.lines_from(skip));
            }
        }
        let forgotten = forgotten.filter(|f| f.a == after.a).map_or(0, |f| f.b);
        (out, Some(LineId::new(after.a, after.b.max(forgotten) + 1)))
    }

    /// The newest line forgotten for count, bytes or age (not a recalled one): in a
    /// cluster, a client recovering from before it may have missed lines.
    pub(crate) fn forgotten(&self) -> Option<LineId> {
        self.forgotten
    }

    /// Takes the line `id` out (from within its chunk if it shares one): it is never replayed
    /// again. Returns whether it was kept.
    pub(crate) fn recall(&mut self, id: LineId) -> bool {
        self.trim();
        let found = self.chunks.iter().enumerate().find_map(|(i, kept)| {
            let placed = kept.entry.chunk.placed()?;
            (0..kept.entry.lines)
                .position(|k| placed.first.nth(k, placed.numbered) == id)
                .map(|k| (i, k))
        });
        let Some((i, k)) = found else {
            return false;
        };
        let Some(Kept { entry, at }) = self.chunks.remove(i) else {
            return false;
        };
        self.lines -= entry.lines;
        self.bytes -= entry.chunk.len();
        // What is left of its chunk, the lines before it and after it, goes in its place.
        let after = Entry {
            chunk: entry.chunk.lines_from(k + 1),
            lines: entry.lines - k - 1,
            id: entry.id,
        };
        let before = Entry {
            chunk: entry.chunk.lines_before(k),
            lines: k,
            ..entry
        };
        for part in [after, before] {
            if part.lines > 0 {
                self.lines += part.lines;
                self.bytes += part.chunk.len();
                self.chunks.insert(i, Kept { entry: part, at });
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::delivery::chunk::Placed;

    fn replayed(h: &mut History) -> Vec<u8> {
        h.expire();
        bytes(&h.replay())
    }

    fn bytes(chunks: &[Chunk]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    /// `text`'s lines, numbered in room `r` from `first`.
    fn placed(text: &[u8], first: u64) -> Chunk {
        let chunk = Chunk::from(text);
        chunk.place(Placed {
            room: Arc::from("r"),
            first: LineId::new(7, first),
            numbered: true,
        });
        chunk
    }

    fn ids(chunks: &[Chunk]) -> Vec<String> {
        chunks
            .iter()
            .map(|c| c.placed().unwrap().first.to_string())
            .collect()
    }

    fn id(seq: u64) -> LineId {
        LineId::new(17, seq)
    }

    fn entry(bytes: &[u8], lines: usize, seq: u64) -> Entry {
        Entry {
            chunk: Chunk::from(bytes),
            lines,
            id: Some(id(seq)),
        }
    }

    #[test]
    fn keeps_last_n_lines_across_chunks() {
        let mut h = History::new(3, Duration::ZERO);
        h.push(&Chunk::from(&b"a\nb\n"[..]), 2, None);
        assert_eq!(replayed(&mut h), b"a\nb\n");
        h.push(&Chunk::from(&b"c\nd\n"[..]), 2, None);
        assert_eq!(replayed(&mut h), b"b\nc\nd\n");
        h.push(&Chunk::from(&b"e\nf\ng\nh\n"[..]), 4, None);
        assert_eq!(replayed(&mut h), b"f\ng\nh\n");
        assert_eq!(h.chunks.len(), 1);
    }

    #[test]
    fn zero_keeps_nothing() {
        let mut h = History::new(0, Duration::ZERO);
        h.push(&Chunk::from(&b"a\n"[..]), 1, None);
        assert!(h.replay().is_empty());
    }

    #[test]
    fn seeding_puts_what_is_new_first_and_never_twice() {
        let mut h = History::new(4, Duration::ZERO);
        h.push(&Chunk::from(&b"c\n"[..]), 1, Some(id(3)));
        h.push(&Chunk::from(&b"d\n"[..]), 1, Some(id(4)));
        let added = h.seed(vec![
            entry(b"a\n", 1, 1),
            entry(b"b\n", 1, 2),
            entry(b"c\n", 1, 3),
        ]);
        assert_eq!(replayed(&mut h), b"a\nb\nc\nd\n");
        assert_eq!(added, Some(id(2)));
        assert!(h.ids().contains(&id(1)));
        // Past the cap, the oldest go, and so do their ids.
        h.push(&Chunk::from(&b"e\n"[..]), 1, Some(id(5)));
        assert_eq!(replayed(&mut h), b"b\nc\nd\ne\n");
        assert!(!h.ids().contains(&id(1)));
    }

    #[test]
    fn with_an_age_it_keeps_a_thousand_lines_and_replays_n() {
        let mut h = History::new(2, Duration::from_secs(60));
        for i in 0..1500 {
            h.push(&Chunk::from(format!("{i}\n").as_bytes()), 1, None);
        }
        assert_eq!(replayed(&mut h), b"1498\n1499\n");
        let kept = h.kept();
        assert_eq!(kept.len(), RECOVERY_LINES);
        assert_eq!(&kept[0][..], b"500\n");
    }

    #[test]
    fn beyond_the_replayed_lines_it_keeps_a_bounded_number_of_bytes() {
        let mut h = History::new(3, Duration::from_secs(60));
        let long = vec![b'x'; 100 * 1024 - 1];
        for _ in 0..10 {
            h.push(&Chunk::from(&[&long[..], b"\n"].concat()[..]), 1, None);
        }
        assert_eq!(
            h.kept().len(),
            3,
            "the last --history lines, whatever they cost"
        );
        let mut h = History::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            h.push(&Chunk::from(&[&long[..], b"\n"].concat()[..]), 1, None);
        }
        assert_eq!(h.kept().len(), 2);
        assert!(h.bytes <= RECOVERY_BYTES);
    }

    #[test]
    fn lines_older_than_the_age_go() {
        let mut h = History::new(5, Duration::from_millis(1));
        h.push(&Chunk::from(&b"a\n"[..]), 1, None);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!h.expire());
        assert!(replayed(&mut h).is_empty());
        // Without an age, the last --history lines are kept however old.
        let mut h = History::new(5, Duration::ZERO);
        h.push(&Chunk::from(&b"a\n"[..]), 1, None);
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.expire());
        assert_eq!(replayed(&mut h), b"a\n");
    }

    #[test]
    fn a_recalled_line_is_taken_out_of_its_chunk() {
        let mut h = History::new(10, Duration::ZERO);
        h.push(&placed(b"a\nb\nc\n", 1), 3, None);
        h.push(&placed(b"d\n", 4), 1, None);
        assert!(h.recall(LineId::new(7, 2)));
        assert_eq!(replayed(&mut h), b"a\nc\nd\n");
        assert_eq!(ids(&h.replay()), ["7-1", "7-3", "7-4"]);
        assert!(!h.recall(LineId::new(7, 2)), "recalled already");
        assert!(h.recall(LineId::new(7, 1)));
        assert!(h.recall(LineId::new(7, 4)));
        assert_eq!(replayed(&mut h), b"c\n");
        assert_eq!((h.lines, h.bytes), (1, 2));
        assert!(!h.recall(LineId::new(8, 3)), "another life of the room");
    }

    #[test]
    fn since_gives_what_is_kept_after_an_id_and_where_the_missed_ones_end() {
        let mut h = History::new(3, Duration::ZERO);
        h.push(&placed(b"a\nb\n", 1), 2, None);
        for (i, line) in [b"c\n", b"d\n", b"e\n"].iter().enumerate() {
            h.push(&placed(&line[..], 3 + i as u64), 1, None);
        }
        assert!(h.recall(LineId::new(7, 4)));
        // a and b were forgotten (b is the newest); d was recalled, not missed.
        let (lines, first) = h.since(LineId::new(7, 1));
        assert_eq!(bytes(&lines), b"c\ne\n");
        assert_eq!(ids(&lines), ["7-3", "7-5"]);
        assert_eq!(first, Some(LineId::new(7, 3)));
        let (lines, first) = h.since(LineId::new(7, 3));
        assert_eq!(bytes(&lines), b"e\n");
        assert_eq!(first, Some(LineId::new(7, 4)));
        // From within a chunk.
        let mut h = History::new(5, Duration::ZERO);
        h.push(&placed(b"a\nb\nc\n", 1), 3, None);
        let (lines, first) = h.since(LineId::new(7, 1));
        assert_eq!(bytes(&lines), b"b\nc\n");
        assert_eq!(ids(&lines), ["7-2"]);
        assert_eq!(first, Some(LineId::new(7, 2)));
        assert!(h.since(LineId::new(7, 3)).0.is_empty());
    }

    #[test]
    fn the_oldest_chunks_lines_past_the_cap_are_missed() {
        let mut h = History::new(3, Duration::ZERO);
        h.push(&placed(b"z\n", 1), 1, None);
        h.push(&placed(b"a\nb\nc\nd\ne\n", 2), 5, None);
        let (lines, first) = h.since(LineId::new(7, 1));
        assert_eq!(bytes(&lines), b"c\nd\ne\n");
        assert_eq!(first, Some(LineId::new(7, 4)), "a and b missed");
    }
}
