//! The registry of connected peers, and delivery to them.
//!
//! The peer list is kept as a shared, copy-on-write snapshot: a sender clones one `Arc` under
//! the lock and does all its socket work after releasing it, so the lock is held for
//! microseconds and never across I/O. Joins and leaves (rare next to lines) pay for the copy.
//!
//! [`Registry::deliver`] is the single way a chunk reaches local peers; a future remote feed
//! (another node's lines arriving over pub/sub) calls it with `from: None`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::warn;

use crate::outbound::{Chunk, Offer, Outbound, PeerId};
use crate::sync::lock;

pub type Peers = Arc<Vec<Arc<Outbound>>>;

pub struct Registry {
    peers: Mutex<Peers>,
    max_clients: usize,
    stall_timeout: Duration,
}

impl Registry {
    pub fn new(max_clients: usize, stall_timeout: Duration) -> Registry {
        Registry {
            peers: Mutex::new(Arc::new(Vec::new())),
            max_clients,
            stall_timeout,
        }
    }

    /// Adds a peer unless `--max-clients` are already connected. Returns the new client
    /// count, or the limit when full.
    pub fn join(&self, peer: Arc<Outbound>) -> Result<usize, usize> {
        let mut peers = lock(&self.peers);
        if peers.len() >= self.max_clients {
            return Err(self.max_clients);
        }
        Arc::make_mut(&mut peers).push(peer);
        Ok(peers.len())
    }

    /// Removes a peer (if present) and returns the client count left.
    pub fn leave(&self, id: PeerId) -> usize {
        let mut peers = lock(&self.peers);
        if peers.iter().any(|p| p.id() == id) {
            Arc::make_mut(&mut peers).retain(|p| p.id() != id);
        }
        peers.len()
    }

    pub fn len(&self) -> usize {
        lock(&self.peers).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The peers connected now.
    pub fn peers(&self) -> Peers {
        Arc::clone(&lock(&self.peers))
    }

    /// Delivers `chunk` to every local peer except `from`.
    ///
    /// Peers with room take it at once. If some are full, the caller waits for all of them
    /// together, against one deadline `--stall-timeout` from now, so N stuck peers cost one
    /// stall, not N. While it waits its own thread reads nothing more, which is how TCP
    /// backpressure reaches a sender that outruns its slowest reader. Peers still full at the
    /// deadline are cut off as slow consumers.
    pub fn deliver(&self, from: Option<PeerId>, chunk: &Chunk) {
        let peers = self.peers();
        let mut full = Vec::new();
        for peer in peers.iter() {
            if Some(peer.id()) != from
                && peer.is_ready()
                && peer.offer_until(chunk, None) == Offer::Full
            {
                full.push(peer);
            }
        }
        if full.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.stall_timeout;
        for peer in full {
            if peer.offer_until(chunk, Some(deadline)) == Offer::Full {
                let pending = peer.pending();
                let notice = format!("relayd: disconnected: too slow ({pending} bytes pending)\n");
                let reason = format!("too slow ({pending} bytes pending)");
                if peer.close(&reason, Some(notice.as_bytes())) {
                    warn!(
                        "client {}: slow consumer, {pending} bytes pending: disconnected",
                        peer.id()
                    );
                }
            }
        }
    }
}
