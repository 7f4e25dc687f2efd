//! The heartbeat thread: every third of `ttl`, or sooner when the subscriber asks, queues
//! this node's clients for the other nodes and renews, over a connection of its own, the
//! node's id, the names its clients hold and the history streams of the rooms they are in.

use std::collections::BTreeSet;
use std::time::Instant;

use log::warn;

use crate::cluster::{HISTORY_IDLE, Local, Shared, wire};
use crate::sync::{lock, wait_while_until};

/// Why the heartbeat is asked to run before its time.
#[derive(Default)]
pub(super) struct Wake {
    /// The subscriber has just (re)subscribed: say hello, so the others answer with their
    /// clients, and re-register this node's names.
    pub(super) hello: bool,
    /// Another node said hello: answer with this node's clients.
    pub(super) answer: bool,
}

impl Shared {
    /// Asks the heartbeat to run now, for the reason `f` sets.
    pub(super) fn wake(&self, f: impl FnOnce(&mut Wake)) {
        f(&mut lock(&self.wake));
        self.woken.notify_all();
    }

    /// Every third of the ttl, or when asked: publishes this node's clients and renews its
    /// id, names and streams in Redis.
    pub(super) fn heartbeat(&self) {
        let interval = self.ttl / 3;
        loop {
            let wake = {
                let deadline = Instant::now() + interval;
                let mut wake = wait_while_until(&self.woken, lock(&self.wake), deadline, |w| {
                    !w.hello && !w.answer && !self.stopping()
                });
                std::mem::take(&mut *wake)
            };
            if self.stopping() {
                return;
            }
            // Also forgets the nodes gone silent, which matters still once this node has left
            // the cluster: they then all go silent.
            let local = (self.hooks.local)();
            if self.has_left() {
                continue;
            }
            let m = wire::snapshot(&self.node, wake.hello, &local.clients);
            // Checked under the queue's lock: once `farewell` has queued its empty snapshot,
            // none with clients follows it.
            let mut queue = lock(&self.queue);
            if self.stopping() {
                return;
            }
            self.enqueue(&mut queue, m, 0, None);
            drop(queue);
            self.queued.notify_one();
            if self.renew_node() {
                self.renew(&local);
            }
        }
    }

    /// Renews (or, after an outage, claims again) the names this node's clients hold, and
    /// the history streams of the rooms they are in; names another node took meanwhile go to
    /// the `lost_name` hook.
    fn renew(&self, local: &Local) {
        // Not waiting for the whole link: right after Redis comes back, the names are
        // claimed again before anyone else's node can take them.
        let mut pipe = redis::pipe();
        for (id, name) in &local.names {
            pipe.add_command(self.claim_cmd(*id, name, None));
        }
        for (sub, name) in &local.users {
            pipe.add_command(self.take_cmd(sub, name));
        }
        let rooms: BTreeSet<&str> = local.clients.iter().map(|c| c.room.as_str()).collect();
        for room in rooms {
            pipe.cmd("EXPIRE")
                .arg(self.history_key(room))
                .arg(HISTORY_IDLE.as_secs());
        }
        if pipe.cmd_iter().next().is_none() {
            return;
        }
        // The streams' answers (0 for a room nobody wrote to yet) follow the names'.
        let Some(held) = self.beat.query::<i64>(&pipe) else {
            return;
        };
        for ((id, name), &held) in local.names.iter().zip(&held) {
            if held == 0 {
                warn!("cluster: name {name} of client {id} was taken by another node meanwhile");
                (self.hooks.lost_name)(*id, name);
            }
        }
        // A user keeps its connections and its name: another user holding it too is the
        // app's doing (two users, one name), and is logged.
        for ((_, name), &held) in local.users.iter().zip(&held[local.names.len()..]) {
            if held == 0 {
                warn!("cluster: name {name} of a signed-in user here is another user's");
            }
        }
    }
}
