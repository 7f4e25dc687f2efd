//! A peer in a live room (`--live-room`, `live ROOM on`): what it is shown of a room whose
//! lines come faster than a screen can show them, and nothing stale.
//!
//! A viewer never makes a sender wait, and is never cut off for falling behind. A relayed
//! line beyond `--live-rate` is dropped for the whole room, once, when it is read (a token
//! bucket per room, [`Gate`], kept by the registry): every viewer is shown the same lines,
//! and a line nobody is shown costs one check, not one per viewer (10,000 viewers of 2,000
//! lines/s would be 20 M checks a second); in a flood it lets them through two at a time,
//! so that most viewers get both in one write. What the room lets through is then dropped for
//! one viewer if it is older than `--live-max-age` when it would be written, or does not fit
//! under `--max-pending` at once; each drop is counted, for the viewer and in all. What a
//! viewer of a flooded room sees is a sample in time: the first line after every second
//! token comes back and the line after it, so its lines are spread evenly over the second,
//! in pairs, and each sender is shown in proportion to how much it says. Lines a live room
//! never drops ([`Chunk::droppable`]): relayd's own notices, moderators' and the operator's
//! lines; they skip the gate and the age limit.
//!
//! "Delivered" is what the viewer reads, so what the kernel holds for it is bounded too: a
//! live peer's socket gets a small send buffer ([`LIVE_SNDBUF`]) instead of loopback's
//! autotuned megabytes, and its writer waits for room in short steps ([`LIVE_TICK`]),
//! dropping what went stale meanwhile, instead of blocking on a batch chosen before the wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::{CHUNK_COST, Peer, State};
use crate::config::Config;
use crate::delivery::chunk::{Chunk, Format};
use crate::stats::add;
use crate::sync::lock;

/// The send buffer asked for a live peer's socket (Linux doubles it, to 8 KiB): a few dozen
/// lines, well under a second of `--live-rate`, where loopback's autotuning grows to 4 MiB.
const LIVE_SNDBUF: usize = 4096;

/// How long a live peer's writer waits for room before it looks at its queue's ages again.
pub(super) const LIVE_TICK: Duration = Duration::from_millis(50);

/// A token bucket holds at most this share of a second's `--live-rate`: small, so that a
/// viewer's lines come evenly spaced rather than in bursts.
const BURST_SHARE: f64 = 0.25;

/// `--live-rate` and `--live-max-age`, as every live room applies them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    rate: f64,
    pub(super) max_age: Duration,
}

impl Limits {
    pub(crate) fn new(config: &Config) -> Limits {
        Limits {
            rate: f64::from(config.live_rate.max(1)),
            max_age: config.live_max_age,
        }
    }
}

/// A live room's token bucket: how many more relayed lines its viewers may be shown now.
///
/// A flooded room (one that has dropped a line since its bucket was last full) shows its
/// lines two at a time: the first line once two tokens are back, and whatever line comes
/// next, at once. Both go to each viewer within the same fanout, so most viewers get them in
/// one write: the deliverer makes half the writes and each viewer half the reads, for the
/// same rate, and neither line waits for the other (measured: `relay-bench danmaku`, 10,000
/// viewers, README's Performance).
#[derive(Debug)]
pub(crate) struct Gate {
    limits: Limits,
    tokens: f64,
    at: Instant,
    /// It dropped a line since its bucket was last full.
    flooded: bool,
    /// The last line shown opened a pair: the next one goes with it, if a token is left.
    paired: bool,
    /// The last line shown completed a pair.
    completed: bool,
}

impl Gate {
    pub(crate) fn new(limits: &Limits) -> Gate {
        Gate {
            limits: *limits,
            tokens: burst(limits),
            at: Instant::now(),
            flooded: false,
            paired: false,
            completed: false,
        }
    }

    /// How many of `lines` lines read at once may go now: all of them, one (the newest,
    /// see [`Chunk::last_line`]) or none.
    pub(crate) fn admit(&mut self, now: Instant, lines: u64) -> u64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        let full = burst(&self.limits);
        self.tokens = (self.tokens + elapsed * self.limits.rate).min(full);
        if self.tokens >= full {
            self.flooded = false;
        }
        // In a flood, a line that does not complete a pair waits for a pair's tokens.
        let reserve = if self.flooded && !self.paired {
            1.0
        } else {
            0.0
        };
        let admitted = if self.tokens >= lines as f64 + reserve {
            lines
        } else {
            u64::from(self.tokens >= 1.0 + reserve)
        };
        self.tokens -= admitted as f64;
        self.completed = self.paired && admitted > 0;
        self.paired = reserve > 0.0 && admitted > 0;
        if admitted < lines {
            self.flooded = true;
        }
        admitted
    }

    /// Whether the line [`Gate::admit`] last let through completed a pair.
    pub(crate) fn completed_pair(&self) -> bool {
        self.completed
    }
}

fn burst(limits: &Limits) -> f64 {
    (limits.rate * BURST_SHARE).max(1.0)
}

impl State {
    /// Drops from the queue the relayed lines older than `max_age` at `now` (never the chunk
    /// a write stopped in) and returns how many lines it dropped.
    pub(super) fn drop_stale(&mut self, format: Format, max_age: Duration, now: Instant) -> u64 {
        let skip = usize::from(self.head > 0);
        if self.queue.len() <= skip {
            return 0;
        }
        let stale = |chunk: &Chunk| {
            chunk.droppable()
                && chunk
                    .relayed_lines()
                    .is_some_and(|(read_at, _)| now.saturating_duration_since(read_at) > max_age)
        };
        if !self.queue.iter().skip(skip).any(stale) {
            return 0;
        }
        let mut dropped = 0;
        let mut i = skip;
        while i < self.queue.len() {
            if stale(&self.queue[i]) {
                let chunk = self.queue.remove(i).unwrap_or_else(|| unreachable!());
                self.pending -= chunk.wire(format).len();
                dropped += chunk.relayed_lines().map_or(0, |(_, n)| n);
            } else {
                i += 1;
            }
        }
        dropped
    }
}

/// A live peer's share of its room's drops: the room's count of lines it dropped for every
/// viewer, and what that count was when the peer came in.
#[derive(Debug)]
pub(super) struct RoomDrops {
    room: Arc<AtomicU64>,
    since: u64,
}

impl RoomDrops {
    fn so_far(&self) -> u64 {
        self.room.load(Ordering::Relaxed) - self.since
    }
}

impl Peer {
    /// Puts this peer in a live room, whose drops for every viewer `room_drops` counts
    /// (`Some`), or takes it out (`None`): called as it enters or leaves a room, and when the
    /// operator turns a room live or lossless. The send buffer is set while the peer's state
    /// is locked, so that no write sees the new policy with the old buffer; setting it never
    /// blocks.
    pub(crate) fn set_live(&self, room_drops: Option<&Arc<AtomicU64>>) {
        let mut st = lock(&self.state);
        if let Some(left) = st.live.take() {
            self.dropped.fetch_add(left.so_far(), Ordering::Relaxed);
        }
        let sock = SockRef::from(&*self.sock);
        match room_drops {
            Some(room) => {
                if st.lossless_sndbuf.is_none() {
                    // What the kernel gave the socket so far (it reports twice what is
                    // asked), to ask for again when the peer leaves the live room.
                    st.lossless_sndbuf = sock.send_buffer_size().ok().map(|b| b / 2);
                    let _ = sock.set_send_buffer_size(LIVE_SNDBUF);
                }
                st.live = Some(RoomDrops {
                    room: Arc::clone(room),
                    since: room.load(Ordering::Relaxed),
                });
            }
            None => {
                if let Some(size) = st.lossless_sndbuf.take() {
                    let _ = sock.set_send_buffer_size(size);
                }
            }
        }
    }

    /// Lines dropped for this peer in live rooms, for the operator's `clients` list.
    pub(crate) fn dropped(&self) -> u64 {
        let st = lock(&self.state);
        self.dropped.load(Ordering::Relaxed) + st.live.as_ref().map_or(0, RoomDrops::so_far)
    }

    /// Hands `chunk` to a live peer, or drops it for this peer (see the module's note).
    /// Never waits, and never judges the peer.
    pub(super) fn offer_live(
        self: &Arc<Self>,
        mut st: std::sync::MutexGuard<'_, State>,
        chunk: &Chunk,
        now: Instant,
    ) {
        if !chunk.droppable() {
            self.hand_over(st, chunk);
            return;
        }
        let stale = st.drop_stale(self.format, self.live_limits.max_age, now);
        self.count_dropped(stale);
        if st.pending > 0 && st.cost() + self.wire(chunk).len() + CHUNK_COST > self.max_pending {
            self.count_dropped(chunk.relayed_lines().map_or(0, |(_, n)| n));
            return;
        }
        self.hand_over(st, chunk);
    }

    /// Counts `lines` dropped for this peer: they were counted as relayed to it when offered.
    pub(super) fn count_dropped(&self, lines: u64) {
        if lines == 0 {
            return;
        }
        self.dropped.fetch_add(lines, Ordering::Relaxed);
        self.lines_out.fetch_sub(lines, Ordering::Relaxed);
        add(&self.stats.live_dropped, lines);
        self.stats.lines_out.fetch_sub(lines, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(rate: f64) -> (Gate, Instant) {
        let limits = Limits {
            rate,
            max_age: Duration::from_secs(2),
        };
        let gate = Gate::new(&limits);
        let at = gate.at;
        (gate, at)
    }

    /// Which of `n` one-line chunks, one every `every`, the gate shows.
    fn shown(gate: &mut Gate, t0: Instant, n: u32, every: Duration) -> Vec<u32> {
        (0..n)
            .filter(|&i| gate.admit(t0 + every * i, 1) == 1)
            .collect()
    }

    #[test]
    fn a_room_under_its_rate_shows_every_line_at_once() {
        let (mut gate, t0) = gate(30.0);
        let all = shown(&mut gate, t0, 100, Duration::from_millis(50));
        assert_eq!(all.len(), 100);
    }

    #[test]
    fn a_flooded_room_shows_its_rate_in_pairs_of_lines_that_came_together() {
        // 2,000 lines a second for 4 s at 30 a second.
        let (mut gate, t0) = gate(30.0);
        let every = Duration::from_micros(500);
        let seen = shown(&mut gate, t0, 8000, every);
        // The burst (7 whole tokens), then 30 a second.
        assert!((120..=128).contains(&seen.len()), "{}", seen.len());
        // After the burst, every shown line is one of a pair of consecutive lines, and the
        // pairs are spread evenly: one every two tokens, 66.7 ms.
        let after: Vec<u32> = seen.into_iter().skip_while(|&i| i < 400).collect();
        for pair in after.chunks(2).filter(|p| p.len() == 2) {
            assert_eq!(pair[1], pair[0] + 1, "{after:?}");
        }
        for w in after.chunks(2).collect::<Vec<_>>().windows(2) {
            let gap = f64::from(w[1][0] - w[0][0]) * 0.5;
            assert!((66.0..=68.0).contains(&gap), "{gap} ms: {after:?}");
        }
    }

    #[test]
    fn the_gate_says_which_shown_line_completed_a_pair() {
        let (mut gate, t0) = gate(30.0);
        let every = Duration::from_micros(500);
        let mut completed = Vec::new();
        for i in 0..4000u32 {
            if gate.admit(t0 + every * i, 1) == 1 {
                completed.push(gate.completed_pair());
            }
        }
        // The burst's lines go one by one; then every second one completes a pair.
        let flood = completed.iter().position(|&c| c).unwrap();
        let pairs: Vec<bool> = completed[flood - 1..].to_vec();
        assert!(pairs.len() > 40, "{pairs:?}");
        for (i, c) in pairs.iter().enumerate() {
            assert_eq!(*c, i % 2 == 1, "{pairs:?}");
        }
    }

    #[test]
    fn once_its_bucket_is_full_again_a_room_shows_single_lines_at_once() {
        let (mut gate, t0) = gate(30.0);
        let flood = shown(&mut gate, t0, 400, Duration::from_micros(500));
        assert!(flood.len() < 400);
        // A quiet second refills the bucket: the next lines, 50 ms apart, all go.
        let later = t0 + Duration::from_secs(1);
        let calm = shown(&mut gate, later, 20, Duration::from_millis(50));
        assert_eq!(calm.len(), 20);
    }
}
