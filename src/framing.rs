//! Line framing: turns the arbitrary byte runs that `read` returns into whole lines.
//!
//! A line is the bytes up to and including `\n`, forwarded byte-exact. The framer is the only
//! place that keeps bytes across reads, so it is also where `--max-line` is enforced: a line
//! that outgrows the limit is dropped *while it streams in* (never buffered whole), which is
//! what keeps a client sending 200 MiB without a newline from growing the daemon's memory.

use memchr::memchr;

/// The most an unfinished-line buffer keeps once its line is complete.
const KEEP_PARTIAL: usize = 4096;

/// Splits a byte stream into lines, at most `max_line` bytes each (counting the `\n`).
#[derive(Debug)]
pub struct Framer {
    max_line: usize,
    /// The start of a line whose `\n` has not arrived yet; always shorter than `max_line`.
    partial: Vec<u8>,
    /// Set once the current line is known to be too long: everything up to the next `\n`
    /// is thrown away as it arrives.
    discarding: bool,
}

impl Framer {
    pub fn new(max_line: usize) -> Framer {
        assert!(max_line >= 1, "a line must have room for its newline");
        Framer {
            max_line,
            partial: Vec::new(),
            discarding: false,
        }
    }

    /// Feeds the next bytes read from the stream. Every line completed by `data` is appended,
    /// whole and in order, to `lines`; what is left of an unfinished line is kept for the next
    /// call. Returns how many lines were found too long (each already dropped entirely).
    pub fn feed(&mut self, mut data: &[u8], lines: &mut Vec<u8>) -> usize {
        let mut too_long = 0;
        while !data.is_empty() {
            if self.discarding {
                match memchr(b'\n', data) {
                    Some(i) => {
                        self.discarding = false;
                        data = &data[i + 1..];
                        continue;
                    }
                    None => return too_long,
                }
            }
            match memchr(b'\n', data) {
                Some(i) => {
                    let (line, rest) = data.split_at(i + 1);
                    data = rest;
                    if self.partial.len() + line.len() > self.max_line {
                        // Only reachable when the newline arrives in the same read that
                        // overflows; longer runs were caught below before they got here.
                        too_long += 1;
                    } else {
                        lines.extend_from_slice(&self.partial);
                        lines.extend_from_slice(line);
                    }
                    self.partial.clear();
                    if self.partial.capacity() > KEEP_PARTIAL {
                        // One long line must not cost this client its length for the rest
                        // of the connection.
                        self.partial = Vec::new();
                    }
                }
                None => {
                    // No newline in the rest of this read. If even the newline could no
                    // longer fit, the line is too long: say so now rather than when (or if)
                    // its newline ever comes, and stop storing it.
                    if self.partial.len() + data.len() >= self.max_line {
                        too_long += 1;
                        self.partial = Vec::new();
                        self.discarding = true;
                    } else {
                        self.partial.extend_from_slice(data);
                    }
                    return too_long;
                }
            }
        }
        too_long
    }

    /// Ends the stream: an unfinished line is completed with `\n` and appended to `lines`,
    /// so what a client sent before closing is never lost. A line being discarded stays
    /// discarded.
    pub fn finish(&mut self, lines: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            lines.extend_from_slice(&self.partial);
            lines.push(b'\n');
            self.partial.clear();
        }
        self.discarding = false;
    }

    /// Forgets an unfinished line (used when the daemon shuts down: a half-received line
    /// is not forwarded as if the client had finished it).
    pub fn drop_partial(&mut self) {
        self.partial.clear();
        self.discarding = false;
    }
}

/// A line without its line end: `\n`, and the `\r` before it (telnet's, Windows').
pub(crate) fn without_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(max: usize, reads: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        let mut bad = 0;
        for r in reads {
            bad += f.feed(r, &mut out);
        }
        f.finish(&mut out);
        (out, bad)
    }

    #[test]
    fn lines_across_reads() {
        assert_eq!(
            frame(100, &[b"ab", b"c\nd", b"\n\n"]),
            (b"abc\nd\n\n".to_vec(), 0)
        );
    }

    #[test]
    fn unfinished_line_gets_newline_at_end() {
        assert_eq!(frame(100, &[b"a\nbc"]), (b"a\nbc\n".to_vec(), 0));
    }

    #[test]
    fn max_line_counts_the_newline() {
        assert_eq!(frame(4, &[b"abc\n"]), (b"abc\n".to_vec(), 0));
        assert_eq!(frame(4, &[b"abcd\nok\n"]), (b"ok\n".to_vec(), 1));
        assert_eq!(
            frame(4, &[b"ab", b"cd", b"ef\nok\n"]),
            (b"ok\n".to_vec(), 1)
        );
    }

    #[test]
    fn long_line_is_reported_once_and_not_stored() {
        let mut f = Framer::new(10);
        let mut out = Vec::new();
        assert_eq!(f.feed(&[b'x'; 50], &mut out), 1);
        for _ in 0..100 {
            assert_eq!(f.feed(&[b'x'; 1000], &mut out), 0);
        }
        assert!(f.partial.capacity() < 10);
        assert_eq!(f.feed(b"x\nnext\n", &mut out), 0);
        assert_eq!(out, b"next\n");
    }
}
