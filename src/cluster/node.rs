//! This node's id in Redis. Two nodes started with one `--node-id` would each skip the
//! other's lines as its own and hand out the same names, so the key `<cluster>:node:<id>`
//! holds a random nonce of the instance that has the id: claimed at start, renewed by the
//! heartbeat, expiring `ttl` after the last renewal like a name key, and freed by a clean
//! stop.
//!
//! A node that finds its id held by another instance watches the key: renewed (its time to
//! live goes up), it is another live node's; expired, it was an instance gone without a word
//! (this node's own, killed a moment ago and restarted), and is taken. At start the first
//! means one line on stderr and exit 1. Later (the key taken while this node held it, as
//! after an outage longer than the ttl) it means an error in the log, and the node leaves
//! the cluster for good: its link stops, and it serves its own clients.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use log::{error, info};

use crate::cluster::{Queue, Shared};
use crate::sync::lock;

/// Claims the node key for `ARGV[1]` (this instance's nonce) for `ARGV[2]` ms, or renews it
/// if it holds that already: `{1, 0}`; if another instance holds it: `{0, its time to live
/// in ms}` (-1: it never expires).
const CLAIM_NODE: &str = "local v = redis.call('GET', KEYS[1]) \
    if v and v ~= ARGV[1] then return {0, redis.call('PTTL', KEYS[1])} end \
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
    return {1, 0}";

/// How often a node starting looks again at a key another instance holds.
const WATCH: Duration = Duration::from_millis(100);

/// This instance's claim on its id.
pub(super) struct NodeKey {
    nonce: String,
    held: Held,
}

enum Held {
    Never,
    /// This instance held it at its last claim.
    Yes,
    /// Another instance held it at this node's last claim, with this time to live (ms).
    Other(i64),
}

/// What one claim says.
#[derive(PartialEq)]
enum Verdict {
    Ours,
    /// Another instance holds it, alive or not: look again.
    Watch,
    /// Another live instance holds it.
    Refused,
}

impl NodeKey {
    pub(super) fn new() -> NodeKey {
        // Keyed with the process's random keys, and the time: two instances never share it.
        let random = RandomState::new();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let pid = std::process::id();
        let nonce = format!(
            "{pid}-{:016x}{:016x}",
            random.hash_one((now, pid, 1)),
            random.hash_one((now, pid, 2))
        );
        NodeKey {
            nonce,
            held: Held::Never,
        }
    }

    /// Takes a claim's answer: whether this instance holds the key, or another's time to live.
    fn judge(&mut self, (ours, ttl): (i64, i64)) -> Verdict {
        if ours == 1 {
            self.held = Held::Yes;
            return Verdict::Ours;
        }
        let live = match self.held {
            // Set by someone since this node's last renewal.
            Held::Yes => true,
            Held::Other(before) => ttl > before,
            Held::Never => false,
        };
        if live || ttl < 0 {
            return Verdict::Refused;
        }
        self.held = Held::Other(ttl);
        Verdict::Watch
    }
}

impl Shared {
    fn node_key_name(&self) -> String {
        format!("{}:node:{}", self.name, self.node)
    }

    /// Claims or renews the node's id on the heartbeat's connection; `None` if Redis did not
    /// answer.
    fn claim_node(&self) -> Option<Verdict> {
        let nonce = lock(&self.node_key).nonce.clone();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM_NODE)
            .arg(1)
            .arg(self.node_key_name())
            .arg(nonce)
            .arg(self.ttl.as_millis() as u64);
        let answer: (i64, i64) = self.beat.one(&cmd)?;
        let mut key = lock(&self.node_key);
        let watching = matches!(key.held, Held::Other(_));
        let verdict = key.judge(answer);
        if watching && verdict == Verdict::Ours {
            info!(
                "cluster: node id {} came free (the instance that held it stopped renewing it)",
                self.node
            );
        }
        Some(verdict)
    }

    /// At start, before the link's threads: claims the node's id, waiting (up to the ttl) to
    /// see whether another instance that holds it is alive. `Err`: the one line to exit
    /// with. A Redis that does not answer now is no reason not to start: the heartbeat claims
    /// the id once it does.
    pub(super) fn claim_node_at_start(&self) -> Result<(), String> {
        let give_up = Instant::now() + self.ttl + Duration::from_secs(1);
        let mut told = false;
        loop {
            match self.claim_node() {
                None | Some(Verdict::Ours) => return Ok(()),
                Some(Verdict::Watch) if Instant::now() < give_up => {
                    if !told {
                        told = true;
                        info!(
                            "cluster: node id {} is held by another instance; waiting up to \
                             {}s to see whether it renews it or lets it expire",
                            self.node,
                            self.ttl.as_secs()
                        );
                    }
                    thread::sleep(WATCH);
                }
                Some(_) => {
                    return Err(format!(
                        "--node-id {}: another live node of cluster {} has this id (Redis key \
                         {}); give each node its own",
                        self.node,
                        self.name,
                        self.node_key_name()
                    ));
                }
            }
        }
    }

    /// Each heartbeat: renews the node's id. `false` if another live instance holds it: then
    /// the node has just left the cluster.
    pub(super) fn renew_node(&self) -> bool {
        if self.claim_node() != Some(Verdict::Refused) {
            return true;
        }
        error!(
            "cluster: node id {} is held by another instance (Redis key {}): another node has \
             this id; leaving the cluster, serving local clients only (give each node its own \
             --node-id)",
            self.node,
            self.node_key_name()
        );
        self.leave();
        false
    }

    /// Leaves the cluster for good: the link is down from now on, and nothing more is sent
    /// or delivered (the publisher and subscriber end, and nothing more is queued).
    fn leave(&self) {
        let link = lock(&self.link);
        self.left.store(true, Ordering::SeqCst);
        self.stats.redis_connected.store(0, Ordering::Relaxed);
        drop(link);
        drop(lock(&self.queue));
        self.queued.notify_all();
    }

    pub(super) fn has_left(&self) -> bool {
        self.left.load(Ordering::SeqCst)
    }

    /// Queues freeing the node's id, for a clean stop: a restart need not wait for it.
    pub(super) fn enqueue_release_node(&self, queue: &mut Queue) {
        let nonce = lock(&self.node_key).nonce.clone();
        self.enqueue_freeing(queue, self.node_key_name(), nonce.into_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims answered `{0, ttl}` (another instance holds the key) and `{1, 0}` (this one).
    fn other(ttl: i64) -> (i64, i64) {
        (0, ttl)
    }
    const OURS: (i64, i64) = (1, 0);

    #[test]
    fn a_key_renewed_by_another_instance_is_refused_and_one_left_to_expire_is_taken() {
        // Another instance renews it between two looks: it is alive.
        let mut key = NodeKey::new();
        assert!(key.judge(other(2_000)) == Verdict::Watch);
        assert!(key.judge(other(1_900)) == Verdict::Watch);
        assert!(key.judge(other(3_000)) == Verdict::Refused);
        // Nothing renews it: it expires, and is this node's.
        let mut key = NodeKey::new();
        assert!(key.judge(other(200)) == Verdict::Watch);
        assert!(key.judge(other(100)) == Verdict::Watch);
        assert!(key.judge(OURS) == Verdict::Ours);
        // Taken from this node since its last renewal: alive, whatever its time to live.
        assert!(key.judge(other(100)) == Verdict::Refused);
        // A key without expiry never comes free.
        assert!(NodeKey::new().judge(other(-1)) == Verdict::Refused);
    }

    #[test]
    fn each_instance_has_its_own_nonce() {
        assert_ne!(NodeKey::new().nonce, NodeKey::new().nonce);
    }
}
