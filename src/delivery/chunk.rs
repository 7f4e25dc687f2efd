//! A chunk: one or more whole lines as the daemon hands them to peers, shared by every
//! recipient (never copied per peer).
//!
//! A chunk of relayed lines also carries when it was read and how many lines it holds, so that
//! the peer whose socket takes its last byte can tell `/metrics` how long those lines waited in
//! relayd.
//!
//! WebSocket peers get the same lines as WebSocket frames, one text message per line. A
//! server's frames are not masked, so they are the same bytes for every WebSocket recipient:
//! the first one to need them builds them and the others share them (`OnceLock`), and a chunk
//! no WebSocket client receives never builds them at all. A chunk can also hold frames
//! already (a pong or a ping relayd writes to one WebSocket client): those go out as they
//! are.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::delivery::json_event::{self, Lines, Notice};
use crate::delivery::line_id::{LineId, now_ms};
use crate::delivery::ws_frame;

#[derive(Clone, Debug)]
pub(crate) struct Chunk(Arc<Inner>);

/// How a peer is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Lines, as they are (TCP).
    Text,
    /// One WebSocket text message per line.
    WebSocket,
    /// One WebSocket text message per `relayd.v1.json` event (see `json_event.rs`).
    Json,
}

impl Format {
    /// Whether it is written WebSocket frames.
    pub(crate) fn websocket(self) -> bool {
        self != Format::Text
    }
}

#[derive(Debug)]
struct Inner {
    /// Nanoseconds since [`epoch`] when the lines were read.
    read_at: u64,
    /// How many lines (0: not relayed lines).
    lines: u64,
    /// `bytes` are WebSocket frames already, not lines.
    frames: bool,
    /// Something its one recipient caused for itself (see [`Chunk::own`]).
    own: bool,
    /// Lines a live room never drops: a moderator's or the operator's (see [`Chunk::kept`]).
    kept: bool,
    /// The lines as WebSocket frames, built on first use.
    ws: OnceLock<Box<[u8]>>,
    /// The lines as `relayd.v1.json` events in WebSocket frames, built on first use: never
    /// for a chunk no JSON peer gets.
    json: OnceLock<Box<[u8]>>,
    /// What relayd's own lines are, for JSON clients (`None`: told by their prefix).
    notice: Option<Arc<Notice>>,
    /// Its last line alone, for live viewers with room for one line only: built on first
    /// use and shared by all of them.
    last: OnceLock<Chunk>,
    /// Who sent relayed lines in chat mode, for the clients told so apart from the text
    /// (JSON): one per client, shared by its chunks.
    sender: Option<Arc<Sender>>,
    /// When relayed lines were read, in ms since the Unix epoch (0: not relayed lines).
    time_ms: u64,
    /// Where relayed lines went and their ids, given under the registry lock as they are
    /// delivered (see [`Chunk::place`]).
    placed: OnceLock<Placed>,
    /// Shared with the chunk's unstamped copies (one allocation, like a `Box`).
    bytes: Arc<[u8]>,
}

/// Who sent a chunk's lines, and how its lines are written.
// Read by the JSON events (issue 22), next.
#[allow(dead_code)]
#[derive(Debug)]
pub(crate) struct Sender {
    /// Its chat name.
    pub(crate) name: Arc<str>,
    /// Its signed token's `sub`; `None` for a guest.
    pub(crate) user: Option<Arc<str>>,
    /// Bytes at the start of each line that say who sent it (`<alice> `, `* alice `), not
    /// part of the text.
    pub(crate) prefix: usize,
    /// `/me`.
    pub(crate) me: bool,
}

/// The room a chunk of relayed lines went to and its first line's id (the others follow:
/// [`LineId::nth`]).
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub(crate) room: Arc<str>,
    pub(crate) first: LineId,
    /// Its lines are numbered one by one (one node's ids), not parts of one Redis entry.
    pub(crate) numbered: bool,
}

impl Chunk {
    /// `lines` lines a client sent, read just now.
    pub(crate) fn relayed(bytes: &[u8], lines: usize) -> Chunk {
        Chunk::read_now(bytes, lines, None)
    }

    /// `lines` lines `sender` sent, read just now.
    pub(crate) fn relayed_from(bytes: &[u8], lines: usize, sender: &Arc<Sender>) -> Chunk {
        Chunk::read_now(bytes, lines, Some(Arc::clone(sender)))
    }

    fn read_now(bytes: &[u8], lines: usize, sender: Option<Arc<Sender>>) -> Chunk {
        let read_at = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
        Chunk(Arc::new(Inner {
            sender,
            time_ms: now_ms(),
            ..Inner::new(bytes.into(), read_at, lines as u64, false)
        }))
    }

    /// When its relayed lines were read, in ms since the Unix epoch; 0 for other lines.
    #[allow(dead_code)]
    pub(crate) fn time_ms(&self) -> u64 {
        self.0.time_ms
    }

    /// Who sent its lines, if it is relayed lines of a known sender.
    #[allow(dead_code)]
    pub(crate) fn sender(&self) -> Option<&Sender> {
        self.0.sender.as_deref()
    }

    /// Records where its lines went and the first one's id: once, by the registry, under
    /// its lock, as it delivers them. Copies made afterwards ([`Chunk::unstamped`],
    /// [`Chunk::kept`], [`Chunk::last_line`]) keep it.
    pub(crate) fn place(&self, placed: Placed) {
        let _ = self.0.placed.set(placed);
    }

    /// Where its lines went and the first one's id, once placed.
    #[allow(dead_code)]
    pub(crate) fn placed(&self) -> Option<&Placed> {
        self.0.placed.get()
    }

    /// WebSocket frames, sent as they are (only ever queued for a WebSocket peer).
    pub(crate) fn frames(bytes: &[u8]) -> Chunk {
        Chunk::new(bytes.into(), 0, 0, true)
    }

    /// When the lines of a [`Chunk::relayed`] chunk were read, and how many it holds; `None`
    /// for the lines relayd writes itself.
    pub(crate) fn relayed_lines(&self) -> Option<(Instant, u64)> {
        let lines = self.0.lines;
        (lines > 0).then(|| (epoch() + Duration::from_nanos(self.0.read_at), lines))
    }

    /// The same bytes (shared, not copied: a history replay runs under the registry lock),
    /// not counted as relayed lines when sent: a replay is not a line waiting in relayd
    /// since it was read.
    pub(crate) fn unstamped(&self) -> Chunk {
        Chunk(Arc::new(self.0.same(Arc::clone(&self.0.bytes), 0, 0, 0)))
    }

    /// Its lines from the `skip`-th on (a replay that starts within a chunk), with their
    /// sender and ids, unstamped like [`Chunk::unstamped`].
    pub(crate) fn lines_from(&self, skip: usize) -> Chunk {
        if skip == 0 {
            return self.unstamped();
        }
        let cut = memchr::memchr_iter(b'\n', &self.0.bytes)
            .nth(skip - 1)
            .map_or(self.0.bytes.len(), |i| i + 1);
        Chunk(Arc::new(self.0.same(
            self.0.bytes[cut..].into(),
            0,
            0,
            skip,
        )))
    }

    /// Its first `take` lines, with their sender and ids, unstamped: what is left before a
    /// line recalled from within a chunk.
    pub(crate) fn lines_before(&self, take: usize) -> Chunk {
        let cut = match take {
            0 => 0,
            n => memchr::memchr_iter(b'\n', &self.0.bytes)
                .nth(n - 1)
                .map_or(self.0.bytes.len(), |i| i + 1),
        };
        Chunk(Arc::new(self.0.same(self.0.bytes[..cut].into(), 0, 0, 0)))
    }

    /// Relayd's own line(s), `notice` saying what they are to JSON clients.
    pub(crate) fn notice(bytes: &[u8], notice: Notice) -> Chunk {
        Chunk(Arc::new(Inner {
            notice: Some(Arc::new(notice)),
            ..Inner::new(bytes.into(), 0, 0, false)
        }))
    }

    /// The same bytes (shared, not copied), marked as something the client it is queued for
    /// caused for itself — a reply, a pong, a room's welcome and replay — which its queue
    /// holds to a share of its own (see `Peer::reply`).
    pub(crate) fn own(&self) -> Chunk {
        Chunk(Arc::new(Inner {
            own: true,
            ..self.0.same(Arc::clone(&self.0.bytes), 0, 0, 0)
        }))
    }

    /// The same lines (bytes shared, read time and count kept), marked as lines a live room
    /// delivers whatever its rate and age limits say: a moderator's or the operator's.
    pub(crate) fn kept(&self) -> Chunk {
        Chunk(Arc::new(Inner {
            kept: true,
            ..self
                .0
                .same(Arc::clone(&self.0.bytes), self.0.read_at, self.0.lines, 0)
        }))
    }

    /// Whether a live room may drop these lines for a viewer: relayed lines not [`kept`].
    ///
    /// [`kept`]: Chunk::kept
    pub(crate) fn droppable(&self) -> bool {
        self.0.lines > 0 && !self.0.kept
    }

    /// The newest of a chunk's relayed lines, as a chunk of its own (read when it was): what
    /// a live room's viewer is shown of a batch of lines read at once when it may be shown
    /// only one. The chunk itself if it holds one line.
    pub(crate) fn last_line(&self) -> Chunk {
        if self.0.lines <= 1 {
            return self.clone();
        }
        self.0
            .last
            .get_or_init(|| {
                let bytes = &self.0.bytes[..self.0.bytes.len() - 1];
                let start = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let skip = self.0.lines as usize - 1;
                Chunk(Arc::new(Inner {
                    kept: self.0.kept,
                    ..self
                        .0
                        .same(self.0.bytes[start..].into(), self.0.read_at, 1, skip)
                }))
            })
            .clone()
    }

    /// Whether this is a chunk made by [`Chunk::own`].
    pub(crate) fn is_own(&self) -> bool {
        self.0.own
    }

    /// What goes on the wire: the bytes as they are for a TCP peer, for a WebSocket peer
    /// one text frame per line, for a JSON one a frame per event (each built once, whoever
    /// asks first).
    pub(crate) fn wire(&self, format: Format) -> &[u8] {
        match format {
            _ if self.0.frames => &self.0.bytes,
            Format::Text => &self.0.bytes,
            Format::WebSocket => self
                .0
                .ws
                .get_or_init(|| ws_frame::text_frames(&self.0.bytes)),
            Format::Json => self.0.json.get_or_init(|| self.json_events()),
        }
    }

    /// Its `relayd.v1.json` events: `line` events if it is relayed lines placed in a room,
    /// else notices.
    fn json_events(&self) -> Box<[u8]> {
        let sender = self.0.sender.as_deref();
        let lines = self.0.placed.get().map(|placed| Lines {
            room: &placed.room,
            first: placed.first,
            numbered: placed.numbered,
            from: sender.map(|s| &*s.name),
            user: sender.and_then(|s| s.user.as_deref()),
            prefix: sender.map_or(0, |s| s.prefix),
            time: self.0.time_ms,
            me: sender.is_some_and(|s| s.me),
        });
        json_event::frames(&self.0.bytes, lines, self.0.notice.as_deref())
    }

    fn new(bytes: Arc<[u8]>, read_at: u64, lines: u64, frames: bool) -> Chunk {
        Chunk(Arc::new(Inner::new(bytes, read_at, lines, frames)))
    }
}

impl Inner {
    fn new(bytes: Arc<[u8]>, read_at: u64, lines: u64, frames: bool) -> Inner {
        Inner {
            read_at,
            lines,
            frames,
            own: false,
            kept: false,
            ws: OnceLock::new(),
            json: OnceLock::new(),
            notice: None,
            last: OnceLock::new(),
            sender: None,
            time_ms: 0,
            placed: OnceLock::new(),
            bytes,
        }
    }

    /// `bytes`, from the same sender and placed where these were: `bytes` are these lines
    /// from the `skip`-th on, so their first id is that line's.
    fn same(&self, bytes: Arc<[u8]>, read_at: u64, lines: u64, skip: usize) -> Inner {
        let inner = Inner {
            sender: self.sender.clone(),
            time_ms: self.time_ms,
            notice: self.notice.clone(),
            ..Inner::new(bytes, read_at, lines, self.frames)
        };
        if let Some(placed) = self.placed.get() {
            let _ = inner.placed.set(Placed {
                first: placed.first.nth(skip, placed.numbered),
                ..placed.clone()
            });
        }
        inner
    }
}

impl From<&[u8]> for Chunk {
    fn from(bytes: &[u8]) -> Chunk {
        Chunk::new(bytes.into(), 0, 0, false)
    }
}

impl Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0.bytes
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

    #[test]
    fn the_websocket_form_is_built_once_and_shared() {
        let chunk = Chunk::relayed(b"a\nb\n", 2);
        let copy = chunk.clone();
        let first = chunk.wire(Format::WebSocket);
        assert_eq!(first, b"\x81\x01a\x81\x01b");
        assert!(
            std::ptr::eq(first, copy.wire(Format::WebSocket)),
            "built again for another recipient"
        );
        assert_eq!(chunk.wire(Format::Text), b"a\nb\n");
        let frames = Chunk::frames(b"\x89\x00");
        assert_eq!(frames.wire(Format::WebSocket), b"\x89\x00");
    }

    /// TCP and plain WebSocket recipients never make a chunk build its JSON events; the
    /// first JSON recipient does, once, for all.
    #[test]
    fn the_json_form_is_built_only_for_json_recipients_and_shared() {
        let chunk = Chunk::relayed(b"relayd: x\n", 1);
        chunk.wire(Format::Text);
        chunk.wire(Format::WebSocket);
        assert!(chunk.0.json.get().is_none());
        let first = chunk.wire(Format::Json);
        assert!(std::ptr::eq(first, chunk.clone().wire(Format::Json)));
        assert!(first.ends_with(br#""text":"relayd: x"}"#), "{first:?}");
    }
}
