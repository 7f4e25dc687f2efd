//! Rooms nobody is in, kept while their history is: a lone client whose connection dropped
//! comes back to the same room, its lines and its numbering (so the ids it was given still
//! mean something, and it recovers what it missed), not to a new room of the same name.
//!
//! A room is kept while it holds lines younger than `--history-age` (with `0`, no recovery,
//! it goes with its last member, as before there was recovery), and at most [`EMPTY_ROOMS`]
//! of them at once, the longest empty dropped first, so that a client going from new room
//! to new room cannot grow the daemon's memory without bound. Dropping is lazy: when a room
//! empties and when a room is entered, no thread of its own.

use std::collections::{BTreeMap, VecDeque};

use super::{LOBBY, Room};

/// Empty rooms kept at once: with at most `RECOVERY_BYTES` (256 KiB) each beyond their last
/// `--history` lines, at most 64 MiB more than those.
pub(super) const EMPTY_ROOMS: usize = 256;

/// The rooms kept empty, longest empty first, each with its life (a room of the same name
/// made afterwards is another one).
#[derive(Default)]
pub(super) struct Emptied(VecDeque<(String, u64)>);

impl Emptied {
    /// `room`, just emptied, is kept if its history is for recovery and holds lines; then
    /// the longest empty rooms beyond [`EMPTY_ROOMS`], or whose history has aged out, go.
    pub(super) fn keep(&mut self, room: &str, rooms: &mut BTreeMap<String, Room>) {
        if let Some(r) = rooms.get_mut(room) {
            match r.history.recovers() && r.history.expire() {
                true => self.0.push_back((room.to_string(), r.life)),
                false => {
                    rooms.remove(room);
                }
            }
        }
        self.sweep(rooms);
    }

    /// `room` is being entered: it is no longer empty, if it was (and if its history aged
    /// out meanwhile, it is made anew); and the longest empty rooms go if their history has.
    pub(super) fn refill(&mut self, room: &str, rooms: &mut BTreeMap<String, Room>) {
        if let Some(r) = rooms.get_mut(room).filter(|r| r.members.is_empty()) {
            self.0.retain(|(name, _)| name != room);
            if room != LOBBY && !r.history.expire() {
                rooms.remove(room);
            }
        }
        self.sweep(rooms);
    }

    fn sweep(&mut self, rooms: &mut BTreeMap<String, Room>) {
        while let Some((name, life)) = self.0.front() {
            let over = self.0.len() > EMPTY_ROOMS;
            match rooms.get_mut(name) {
                Some(r) if r.life == *life && r.members.is_empty() => {
                    if !over && r.history.expire() {
                        break;
                    }
                    rooms.remove(name);
                }
                // Entered again, or gone: not an empty room to keep.
                _ => {}
            }
            self.0.pop_front();
        }
    }

    /// How many rooms are kept empty.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}
