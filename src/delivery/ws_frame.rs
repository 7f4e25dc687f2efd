//! The WebSocket frames relayd writes (RFC 6455, section 5): text messages for lines, and
//! the close and ping frames of its own. A server's frames are not masked, so a frame is the
//! same bytes for every recipient and can be built once and shared (see `chunk.rs`).
//!
//! Headers are formatted by tungstenite's `FrameHeader`, never by hand; the payload is copied
//! straight after it, so a line costs one copy, not a `Frame` of its own.

use std::io::Cursor;

use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::framing::without_line_end;

/// One text message per line of `lines` (each ending with `\n`, which, like a `\r` before
/// it, is not part of the message). Bytes that are not UTF-8 (possible from a raw-mode TCP
/// client) become U+FFFD: a text message must be UTF-8, and a browser closes the
/// connection on one that is not.
pub(crate) fn text_frames(lines: &[u8]) -> Box<[u8]> {
    let count = memchr::memchr_iter(b'\n', lines).count() + 1;
    // Headers of at most 10 bytes: a server's frames carry no mask.
    let mut out = Vec::with_capacity(lines.len() + 10 * count);
    for line in lines.split_inclusive(|&b| b == b'\n') {
        push_text(&mut out, &String::from_utf8_lossy(without_line_end(line)));
    }
    out.into_boxed_slice()
}

/// Appends one text message holding `text` to `out`.
pub(crate) fn push_text(out: &mut Vec<u8>, text: &str) {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    // Writing to a Vec cannot fail.
    let _ = header.format(text.len() as u64, out);
    out.extend_from_slice(text.as_bytes());
}

/// Where the frame that holds byte `at` of `frames` (whole frames relayd built, back to back)
/// ends: `at` itself if a frame starts there, so `frames[at..frame_end(frames, at)]` is what
/// a write that stopped at `at` left of its frame. Headers are parsed by tungstenite.
pub(crate) fn frame_end(frames: &[u8], at: usize) -> usize {
    let mut cur = Cursor::new(frames);
    let mut end = 0;
    while end < at {
        // relayd's own frames always parse; were one not to, the rest is all there is.
        let Ok(Some((_, len))) = FrameHeader::parse(&mut cur) else {
            return frames.len();
        };
        end = (cur.position() as usize)
            .saturating_add(len as usize)
            .min(frames.len());
        cur.set_position(end as u64);
    }
    end
}

/// A close frame with `code` and `reason` (cut to the 123 bytes a control frame has room
/// for, at a character boundary).
pub(crate) fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    frame(Frame::close(Some(CloseFrame {
        code: code.into(),
        reason: reason[..end].into(),
    })))
}

/// A ping, to learn whether a quiet client is still there.
pub(crate) fn ping() -> Vec<u8> {
    frame(Frame::ping(&b"relayd"[..]))
}

fn frame(frame: Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len());
    let _ = frame.format(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_one_unmasked_text_frame_without_its_line_ending() {
        assert_eq!(&*text_frames(b"hi\r\n\n"), b"\x81\x02hi\x81\x00");
        // Not UTF-8: U+FFFD (3 bytes) in place of the invalid byte.
        assert_eq!(&*text_frames(b"a\xffb\n"), b"\x81\x05a\xef\xbf\xbdb");
        let long = vec![b'x'; 300];
        let frames = text_frames(&[&long[..], b"\n"].concat());
        assert_eq!(&frames[..4], b"\x81\x7e\x01\x2c");
        assert_eq!(frames.len(), 304);
    }

    #[test]
    fn a_frame_cut_short_is_found_to_its_end() {
        let long = vec![b'x'; 300];
        let frames = text_frames(&[&b"hi\n"[..], &long, b"\n", b"\n"].concat());
        // "hi" is 4 bytes, the long line 4 + 300, the empty one 2.
        assert_eq!(frames.len(), 310);
        assert_eq!(frame_end(&frames, 0), 0);
        assert_eq!(frame_end(&frames, 1), 4);
        assert_eq!(frame_end(&frames, 3), 4);
        assert_eq!(frame_end(&frames, 4), 4);
        assert_eq!(frame_end(&frames, 5), 308);
        assert_eq!(frame_end(&frames, 307), 308);
        assert_eq!(frame_end(&frames, 308), 308);
        assert_eq!(frame_end(&frames, 309), 310);
    }

    #[test]
    fn close_frames_carry_the_code_and_a_reason_that_fits() {
        assert_eq!(close(1000, "bye"), b"\x88\x05\x03\xe8bye");
        let long = "é".repeat(100);
        let frame = close(1001, &long);
        assert!(frame.len() <= 2 + 125, "{}", frame.len());
    }
}
