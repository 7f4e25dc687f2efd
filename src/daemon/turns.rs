//! The order in which clients whose own threads enter the lobby do so.
//!
//! Admission puts a client into the lobby on the accept loop, in the order clients connected,
//! unless the lobby's history is first to be read from Redis, which the accept loop must not
//! wait for: then the client's own thread enters it. Threads run in no particular order, so
//! without [`Turns`] a client admitted later could be in the lobby, and relay a line, before
//! one admitted earlier is, which would never get that line. Each such client holds a
//! [`Turn`] from admission and enters only once every client admitted before it has entered
//! or gone.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::delivery::peer::PeerId;
use crate::sync::{lock, wait_while_until};

/// How long a client waits for its turn at most. A turn comes within one Redis query's time
/// (a second) of the one before it; this only keeps a client that never took its turn, which
/// should not happen, from holding up every later one for good: they then enter out of order.
const PATIENCE: Duration = Duration::from_secs(5);

/// The clients admitted and not yet in the lobby whose own threads enter it, in the order
/// they were admitted.
#[derive(Default)]
pub(super) struct Turns {
    waiting: Mutex<VecDeque<PeerId>>,
    /// Signalled whenever one leaves the queue.
    moved: Condvar,
}

/// A client's place in [`Turns`]; dropping it (having entered, or leaving before it could)
/// lets the next one in.
pub(crate) struct Turn {
    turns: Arc<Turns>,
    id: PeerId,
}

impl Turns {
    /// Whether some client has yet to take its turn: then a client admitted now must wait
    /// for it too.
    pub(super) fn any(&self) -> bool {
        !lock(&self.waiting).is_empty()
    }

    /// Queues client `id` behind every client queued before it.
    pub(super) fn take(turns: &Arc<Turns>, id: PeerId) -> Turn {
        lock(&turns.waiting).push_back(id);
        Turn {
            turns: Arc::clone(turns),
            id,
        }
    }
}

impl Turn {
    /// Waits until every client queued before this one has entered the lobby or gone, or
    /// [`PATIENCE`] has passed. Those each wait at most for one Redis query of their own,
    /// which their turn does not hold up: callers read the seed first.
    pub(crate) fn wait(&self) {
        let waiting = lock(&self.turns.waiting);
        let deadline = Instant::now() + PATIENCE;
        let _waiting = wait_while_until(&self.turns.moved, waiting, deadline, |w| {
            w.front().is_some_and(|&first| first != self.id)
        });
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut waiting = lock(&self.turns.waiting);
        waiting.retain(|&id| id != self.id);
        drop(waiting);
        self.turns.moved.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    #[test]
    fn a_later_turn_waits_for_every_earlier_one_entered_or_gone() {
        let turns = Arc::new(Turns::default());
        let first = Turns::take(&turns, 1);
        let second = Turns::take(&turns, 2);
        let third = Turns::take(&turns, 3);
        assert!(turns.any());
        let (tx, rx) = mpsc::channel();
        let waiter = thread::spawn(move || {
            third.wait();
            tx.send(()).unwrap();
            drop(third);
        });
        first.wait();
        drop(first);
        // The third waits for the second, which is still queued.
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        // Gone without entering (its client left): the third's turn comes.
        drop(second);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
        assert!(!turns.any());
    }
}
