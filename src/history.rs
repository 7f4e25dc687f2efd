//! A room's memory of its last N relayed lines (`--history N`), replayed to whoever joins.
//!
//! It stores the shared chunks as they were delivered (each often many lines), not one
//! allocation per line, so keeping history costs the relay path one `VecDeque` push. The
//! oldest chunk may hold more lines than are still wanted; those are trimmed off at replay,
//! which is rare next to delivery.

use std::collections::VecDeque;

use memchr::memchr_iter;

use crate::chunk::Chunk;

#[derive(Debug)]
pub struct History {
    /// Lines to keep; 0 keeps nothing.
    cap: usize,
    /// Chunks, oldest first, with how many lines each holds.
    chunks: VecDeque<(Chunk, usize)>,
    /// Lines in `chunks`; at most `cap` plus the excess of the oldest chunk.
    lines: usize,
}

impl History {
    pub fn new(cap: usize) -> History {
        History {
            cap,
            chunks: VecDeque::new(),
            lines: 0,
        }
    }

    /// Remembers `chunk`, which holds `lines` whole lines.
    pub fn push(&mut self, chunk: &Chunk, lines: usize) {
        if self.cap == 0 || lines == 0 {
            return;
        }
        self.chunks.push_back((Chunk::clone(chunk), lines));
        self.lines += lines;
        while let Some(&(_, oldest)) = self.chunks.front() {
            if self.lines - oldest < self.cap {
                break;
            }
            self.chunks.pop_front();
            self.lines -= oldest;
        }
    }

    /// The last `cap` lines, oldest first.
    pub fn replay(&self) -> Vec<Chunk> {
        let mut out: Vec<Chunk> = self.chunks.iter().map(|(c, _)| c.unstamped()).collect();
        let excess = self.lines.saturating_sub(self.cap);
        if excess > 0 {
            let cut = memchr_iter(b'\n', &out[0])
                .nth(excess - 1)
                .map_or(0, |i| i + 1);
            out[0] = Chunk::from(&out[0][cut..]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replayed(h: &History) -> Vec<u8> {
        h.replay().iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn keeps_last_n_lines_across_chunks() {
        let mut h = History::new(3);
        h.push(&Chunk::from(&b"a\nb\n"[..]), 2);
        assert_eq!(replayed(&h), b"a\nb\n");
        h.push(&Chunk::from(&b"c\nd\n"[..]), 2);
        assert_eq!(replayed(&h), b"b\nc\nd\n");
        h.push(&Chunk::from(&b"e\nf\ng\nh\n"[..]), 4);
        assert_eq!(replayed(&h), b"f\ng\nh\n");
        assert_eq!(h.chunks.len(), 1);
    }

    #[test]
    fn zero_keeps_nothing() {
        let mut h = History::new(0);
        h.push(&Chunk::from(&b"a\n"[..]), 1);
        assert!(h.replay().is_empty());
    }
}
