//! The line format every generated line follows, so that a receiver can check each delivery
//! on its own, with no shared table of what was sent:
//!
//! ```text
//! K SSSS QQQQQQQQQQQQ TTTTTTTTTTTTTTTT padding… \n      (no spaces; 33-byte header)
//! ```
//!
//! `K` is `D` (a measured line) or `P` (a probe, sent before measuring to learn that every
//! client is registered), `SSSS` the sender's number, `QQ…` the sequence number, `TT…` the
//! send time in nanoseconds on the generator's monotonic clock, all lowercase hex. The
//! padding is a run of letters that depends on the sequence number and the position, so a
//! line spliced from two others, shifted, or cut short fails the check. Hex keeps the line
//! free of stray `\n` bytes; a fixed width keeps parsing to table look-ups.

use std::sync::OnceLock;
use std::time::Instant;

pub const HEADER: usize = 33;
/// Shortest line: the header and its newline.
pub const MIN_SIZE: usize = HEADER + 1;
pub const MAX_SIZE: usize = 65536;

/// The generator's monotonic clock, in nanoseconds since its first use. Sender and receivers
/// are threads of one process, so their readings compare directly.
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn letters() -> &'static [u8] {
    static PAT: OnceLock<Vec<u8>> = OnceLock::new();
    PAT.get_or_init(|| (0..26 + MAX_SIZE).map(|i| b'a' + (i % 26) as u8).collect())
}

/// The padding a line with sequence number `seq` carries, `len` bytes.
fn padding(seq: u64, len: usize) -> &'static [u8] {
    let start = ((seq + HEADER as u64) % 26) as usize;
    &letters()[start..start + len]
}

fn put_hex(out: &mut Vec<u8>, value: u64, digits: usize) {
    for i in (0..digits).rev() {
        out.push(HEX[((value >> (4 * i)) & 0xf) as usize]);
    }
}

/// Appends one line of `size` bytes (newline included) to `out`.
pub fn encode(out: &mut Vec<u8>, probe: bool, sender: u16, seq: u64, ts: u64, size: usize) {
    out.push(if probe { b'P' } else { b'D' });
    put_hex(out, sender as u64, 4);
    put_hex(out, seq, 12);
    put_hex(out, ts, 16);
    out.extend_from_slice(padding(seq, size - MIN_SIZE));
    out.push(b'\n');
}

/// What one received line turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Data {
        sender: u16,
        seq: u64,
        ts: u64,
    },
    Probe,
    /// A line from the server itself (`relayd: ...`), not ours.
    Notice,
    Corrupt,
}

const BAD: u8 = 0xff;

fn hex_table() -> &'static [u8; 256] {
    static T: OnceLock<[u8; 256]> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = [BAD; 256];
        for (i, &c) in HEX.iter().enumerate() {
            t[c as usize] = i as u8;
        }
        t
    })
}

fn hex(digits: &[u8]) -> Option<u64> {
    let t = hex_table();
    let mut v = 0u64;
    for &d in digits {
        let x = t[d as usize];
        if x == BAD {
            return None;
        }
        v = (v << 4) | x as u64;
    }
    Some(v)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Eight lowercase hex digits at once, in one u64 (SWAR). A receiver decodes 32 digits per
/// delivery, some 15 million deliveries a second at full speed, and digit by digit through
/// the table this was the largest part of its time (profile of `fanout --ws`).
fn hex8(digits: &[u8]) -> Option<u64> {
    let x = u64::from_be_bytes(digits.try_into().ok()?);
    if x & HIGH != 0 {
        return None;
    }
    // With every byte below 0x80, adding at most 0x50 to each never carries into the next:
    // a byte's high bit then says whether it was at least the bound.
    let at_least = |b: u8| x + ONES * (0x80 - b as u64);
    let digit = at_least(b'0') & !at_least(b'9' + 1);
    let letter = at_least(b'a') & !at_least(b'f' + 1);
    if (digit | letter) & HIGH != HIGH {
        return None;
    }
    // '0'..'9' keep their low nibble; 'a'..'f' (bit 6 set) have 1..6 there, plus 9.
    let mut n = (x & (ONES * 0x0f)) + ((x >> 6) & ONES) * 9;
    n = (n | (n >> 4)) & 0x00ff_00ff_00ff_00ff;
    n = (n | (n >> 8)) & 0x0000_ffff_0000_ffff;
    Some((n | (n >> 16)) & 0xffff_ffff)
}

/// Checks one line, given without its newline, against the expected `size`. relayd's
/// `--chat` mode is understood too: its notices (`* ...`) are notices, and the `<name> ` it
/// puts in front of a relayed line is taken off (no generated line starts with `<`).
pub fn decode(line: &[u8], size: usize) -> Line {
    if line.starts_with(b"relayd: ") || line.starts_with(b"* ") {
        return Line::Notice;
    }
    if line.first() == Some(&b'<')
        && let Some(end) = memchr::memmem::find(line, b"> ")
    {
        return decode(&line[end + 2..], size);
    }
    if line.len() + 1 != size {
        return Line::Corrupt;
    }
    let seq = hex8(&line[5..13]).zip(hex(&line[13..17]));
    let ts = hex8(&line[17..25]).zip(hex8(&line[25..33]));
    let (Some(sender), Some((seq_hi, seq_lo)), Some((ts_hi, ts_lo))) = (hex(&line[1..5]), seq, ts)
    else {
        return Line::Corrupt;
    };
    let (seq, ts) = (seq_hi << 16 | seq_lo, ts_hi << 32 | ts_lo);
    if line[HEADER..] != *padding(seq, size - MIN_SIZE) {
        return Line::Corrupt;
    }
    match line[0] {
        b'D' => Line::Data {
            sender: sender as u16,
            seq,
            ts,
        },
        b'P' => Line::Probe,
        _ => Line::Corrupt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for size in [MIN_SIZE, 64, 1000] {
            let mut out = Vec::new();
            encode(&mut out, false, 7, 123_456, 987_654_321, size);
            assert_eq!(out.len(), size);
            assert_eq!(*out.last().unwrap(), b'\n');
            assert_eq!(
                decode(&out[..size - 1], size),
                Line::Data {
                    sender: 7,
                    seq: 123_456,
                    ts: 987_654_321
                }
            );
        }
    }

    #[test]
    fn eight_digits_at_once_agree_with_one_at_a_time() {
        for v in [
            0u64,
            1,
            0x9,
            0xa,
            0xf,
            0x10,
            0x9a9a_9a9a,
            0xdead_beef,
            0xffff_ffff,
            0x0123_4567,
        ] {
            let text = format!("{v:08x}");
            assert_eq!(hex8(text.as_bytes()), Some(v), "{text}");
            assert_eq!(hex(text.as_bytes()), Some(v), "{text}");
        }
    }

    #[test]
    fn splices_and_flips_are_caught() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode(&mut a, false, 1, 5, 10, 64);
        encode(&mut b, false, 1, 6, 10, 64);
        let mut spliced = a[..40].to_vec();
        spliced.extend_from_slice(&b[40..63]);
        assert_eq!(decode(&spliced, 64), Line::Corrupt);
        a[50] ^= 1;
        assert_eq!(decode(&a[..63], 64), Line::Corrupt);
        assert_eq!(decode(&b[..62], 64), Line::Corrupt);
        assert_eq!(decode(b"relayd: too slow", 64), Line::Notice);
        assert_eq!(decode(b"* guest4 joined (3 online)", 64), Line::Notice);
        let mut chat = b"<guest12> ".to_vec();
        chat.extend_from_slice(&b[..63]);
        assert!(matches!(decode(&chat, 64), Line::Data { seq: 6, .. }));
        assert_eq!(decode(b"<guest12> hello", 64), Line::Corrupt);
        for at in [1, 4, 5, 12, 13, 16, 17, 24, 25, 32] {
            for c in [b'g', b'/', b':', b'`', b'A', b'F', 0x80 | b'0', 0xe1] {
                let mut bad = b.clone();
                bad[at] = c;
                assert_eq!(decode(&bad[..63], 64), Line::Corrupt, "digit {at}: {c}");
            }
        }
    }
}
