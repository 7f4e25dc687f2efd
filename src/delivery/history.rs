//! A room's memory of its last N relayed lines (`--history N`), replayed to whoever joins.
//!
//! It stores the shared chunks as they were delivered (each often many lines), not one
//! allocation per line, so keeping history costs the relay path one `VecDeque` push. The
//! oldest chunk may hold more lines than are still wanted; those are trimmed off at replay,
//! which is rare next to delivery.
//!
//! In a cluster (`--redis`) every chunk carries the id its origin node gave it, so that the
//! room's history kept in Redis can be merged into this node's without a line appearing twice
//! ([`History::seed`]).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::delivery::chunk::Chunk;
use crate::delivery::line_id::LineId;

/// A relayed chunk's identity across the cluster: its origin node and that node's sequence
/// number for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct OriginId {
    pub(crate) node: Arc<str>,
    pub(crate) seq: u64,
}

/// A chunk of history: its bytes, how many lines it holds, and its cluster id if it has one.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) chunk: Chunk,
    pub(crate) lines: usize,
    pub(crate) id: Option<OriginId>,
}

#[derive(Debug)]
pub(crate) struct History {
    /// Lines to keep; 0 keeps nothing.
    cap: usize,
    /// Chunks, oldest first.
    chunks: VecDeque<Entry>,
    /// Lines in `chunks`; at most `cap` plus the excess of the oldest chunk.
    lines: usize,
}

impl History {
    pub(crate) fn new(cap: usize) -> History {
        History {
            cap,
            chunks: VecDeque::new(),
            lines: 0,
        }
    }

    /// Remembers `chunk`, which holds `lines` whole lines.
    pub(crate) fn push(&mut self, chunk: &Chunk, lines: usize, id: Option<OriginId>) {
        if self.cap == 0 || lines == 0 {
            return;
        }
        self.chunks.push_back(Entry {
            chunk: Chunk::clone(chunk),
            lines,
            id,
        });
        self.lines += lines;
        self.trim();
    }

    fn trim(&mut self) {
        while let Some(oldest) = self.chunks.front() {
            if self.lines - oldest.lines < self.cap {
                break;
            }
            self.lines -= oldest.lines;
            self.chunks.pop_front();
        }
    }

    /// Merges `older` (a room's history as Redis had it, oldest first) into this one: those of
    /// its chunks not remembered here already go before the ones that are, and the last `cap`
    /// lines are kept. Returns the ids it added, which this node may still receive live.
    pub(crate) fn seed(&mut self, older: Vec<Entry>) -> HashSet<OriginId> {
        // Once per room, so the ids are gathered here rather than kept for every line.
        let mut seen = self.ids();
        let mut added = HashSet::new();
        let mut merged: VecDeque<Entry> = VecDeque::new();
        for entry in older {
            let Some(id) = &entry.id else { continue };
            if !seen.insert(id.clone()) {
                continue;
            }
            added.insert(id.clone());
            self.lines += entry.lines;
            merged.push_back(entry);
        }
        merged.append(&mut self.chunks);
        self.chunks = merged;
        self.trim();
        let kept = self.ids();
        added.retain(|id| kept.contains(id));
        added
    }

    /// The ids of the chunks remembered.
    fn ids(&self) -> HashSet<OriginId> {
        self.chunks.iter().filter_map(|e| e.id.clone()).collect()
    }

    /// Every line kept after `after` (an id of this node's, in this life of the room), oldest
    /// first, and the id of the first of them: a JSON client's recovery, which gets every
    /// line kept, not only the last `cap`.
    pub(crate) fn since(&self, after: LineId) -> (Vec<Chunk>, Option<LineId>) {
        let mut out = Vec::new();
        let mut first = None;
        // The oldest chunk's lines past `cap` are not kept, as for a replay.
        let mut excess = self.lines.saturating_sub(self.cap);
        for e in &self.chunks {
            let trimmed = std::mem::take(&mut excess);
            let Some(placed) = e.chunk.placed().filter(|p| p.numbered) else {
                continue;
            };
            let start = placed.first;
            if start.a != after.a || start.b + e.lines as u64 <= after.b + 1 {
                continue;
            }
            let skip = (after.b.saturating_sub(start.b - 1) as usize).max(trimmed);
            first.get_or_insert(start.nth(skip, true));
            out.push(e.chunk.lines_from(skip));
        }
        (out, first)
    }

    /// The last `cap` lines, oldest first.
    pub(crate) fn replay(&self) -> Vec<Chunk> {
        let excess = self.lines.saturating_sub(self.cap);
        self.chunks
            .iter()
            .enumerate()
            .map(|(i, e)| {
                if i == 0 {
                    e.chunk.lines_from(excess)
                } else {
                    e.chunk.unstamped()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replayed(h: &History) -> Vec<u8> {
        h.replay().iter().flat_map(|c| c.iter().copied()).collect()
    }

    fn id(seq: u64) -> OriginId {
        OriginId {
            node: Arc::from("n"),
            seq,
        }
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
        let mut h = History::new(3);
        h.push(&Chunk::from(&b"a\nb\n"[..]), 2, None);
        assert_eq!(replayed(&h), b"a\nb\n");
        h.push(&Chunk::from(&b"c\nd\n"[..]), 2, None);
        assert_eq!(replayed(&h), b"b\nc\nd\n");
        h.push(&Chunk::from(&b"e\nf\ng\nh\n"[..]), 4, None);
        assert_eq!(replayed(&h), b"f\ng\nh\n");
        assert_eq!(h.chunks.len(), 1);
    }

    #[test]
    fn zero_keeps_nothing() {
        let mut h = History::new(0);
        h.push(&Chunk::from(&b"a\n"[..]), 1, None);
        assert!(h.replay().is_empty());
    }

    #[test]
    fn seeding_puts_what_is_new_first_and_never_twice() {
        let mut h = History::new(4);
        h.push(&Chunk::from(&b"c\n"[..]), 1, Some(id(3)));
        h.push(&Chunk::from(&b"d\n"[..]), 1, Some(id(4)));
        let added = h.seed(vec![
            entry(b"a\n", 1, 1),
            entry(b"b\n", 1, 2),
            entry(b"c\n", 1, 3),
        ]);
        assert_eq!(replayed(&h), b"a\nb\nc\nd\n");
        assert_eq!(added, [id(1), id(2)].into_iter().collect());
        assert!(h.ids().contains(&id(1)));
        // Past the cap, the oldest go, and so do their ids.
        h.push(&Chunk::from(&b"e\n"[..]), 1, Some(id(5)));
        assert_eq!(replayed(&h), b"b\nc\nd\ne\n");
        assert!(!h.ids().contains(&id(1)));
    }
}
