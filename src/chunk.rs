//! A chunk: one or more whole lines as the daemon hands them to peers, shared by every
//! recipient (never copied per peer).
//!
//! A chunk of relayed lines also carries when it was read and how many lines it holds, so that
//! the peer whose socket takes its last byte can tell `/metrics` how long those lines waited in
//! relayd. Both sit in a 16-byte header in the same allocation as the bytes: a chunk stays one
//! allocation shared by every recipient, and a queue slot stays a pointer and a length.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Nanoseconds since [`epoch`] when the lines were read, then how many lines (0: not relayed
/// lines), each a native-endian `u64`.
const HEADER: usize = 16;

#[derive(Clone, Debug)]
pub(crate) struct Chunk(Arc<[u8]>);

impl Chunk {
    /// `lines` lines a client sent, read just now.
    pub(crate) fn relayed(bytes: &[u8], lines: usize) -> Chunk {
        let read_at = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
        Chunk::with_header(bytes, read_at, lines as u64)
    }

    /// When the lines of a [`Chunk::relayed`] chunk were read, and how many it holds; `None`
    /// for the lines relayd writes itself.
    pub(crate) fn relayed_lines(&self) -> Option<(Instant, u64)> {
        let field = |at: usize| u64::from_ne_bytes(self.0[at..at + 8].try_into().unwrap());
        let lines = field(8);
        (lines > 0).then(|| (epoch() + Duration::from_nanos(field(0)), lines))
    }

    /// The same bytes, not counted as relayed lines when sent: a history replay is not a
    /// line waiting in relayd since it was read.
    pub(crate) fn unstamped(&self) -> Chunk {
        Chunk::from(&self[..])
    }

    fn with_header(bytes: &[u8], read_at: u64, lines: u64) -> Chunk {
        // Collected from an iterator of known length: one allocation, no intermediate Vec.
        let all = read_at
            .to_ne_bytes()
            .into_iter()
            .chain(lines.to_ne_bytes())
            .chain(bytes.iter().copied())
            .collect();
        Chunk(all)
    }
}

impl From<&[u8]> for Chunk {
    fn from(bytes: &[u8]) -> Chunk {
        Chunk::with_header(bytes, 0, 0)
    }
}

impl Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0[HEADER..]
    }
}

/// The instant read times are counted from: the first time anyone asks.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_chunk_keeps_its_bytes_its_line_count_and_when_it_was_read() {
        let before = Instant::now();
        let chunk = Chunk::relayed(b"a\nb\n", 2);
        let after = Instant::now();
        assert_eq!(&chunk[..], b"a\nb\n");
        let (read_at, lines) = chunk.relayed_lines().unwrap();
        assert_eq!(lines, 2);
        // Within a nanosecond of rounding: the stamp is kept in whole nanoseconds.
        assert!(read_at + Duration::from_nanos(1) >= before && read_at <= after);
        let replay = chunk.unstamped();
        assert_eq!(&replay[..], b"a\nb\n");
        assert_eq!(replay.relayed_lines(), None);
        assert_eq!(Chunk::from(&b"x\n"[..]).relayed_lines(), None);
    }
}
