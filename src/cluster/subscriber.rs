//! The subscriber thread: receives the other nodes' messages on the channel, over a
//! connection of its own, and hands them to the daemon's `deliver` hook. When it loses Redis
//! it has the publisher make its connection again too (see `outages`). Of this node's own
//! messages it hands on only its lines, which come back with their stream ids.

use std::sync::atomic::Ordering;
use std::time::Duration;

use log::warn;

use crate::cluster::link::Side;
use crate::cluster::{Event, Shared, wire};
use crate::stats::add;
use crate::sync::lock;

/// A subscriber that hears nothing for this long pings Redis, so a link that died silently
/// (a partition, a host gone without a reset) is noticed within two of these.
const KEEPALIVE: Duration = Duration::from_secs(15);

impl Shared {
    pub(super) fn subscriber(&self) {
        while let Some(mut con) = self.connect(Side::Subscriber) {
            let mut pubsub = con.as_pubsub();
            let subscribed = pubsub
                .set_read_timeout(Some(KEEPALIVE))
                .and_then(|()| pubsub.subscribe(&self.channel));
            if let Err(e) = subscribed {
                self.set(Side::Subscriber, false, Some(&e));
                continue;
            }
            self.set(Side::Subscriber, true, None);
            // Whatever the others said while this node was not listening is lost: ask them.
            self.wake(|w| w.hello = true);
            let e = loop {
                if self.has_left() {
                    return;
                }
                match pubsub.get_message() {
                    Ok(msg) => self.receive(msg.get_payload_bytes()),
                    // Quiet, not necessarily gone: a ping tells (its answer waits at most
                    // KEEPALIVE too).
                    Err(e) if e.is_timeout() => {
                        if let Err(e) = pubsub.ping::<redis::Value>() {
                            break e;
                        }
                    }
                    Err(e) => break e,
                }
            };
            drop(pubsub);
            self.set(Side::Subscriber, false, Some(&e));
            if self.stopping() {
                return;
            }
            // The publisher makes its connection again too (see `outages`). The queue's lock
            // is taken between the count and the wake-up, so that a publisher about to wait
            // has either seen the new count or is waiting when woken.
            self.outages.fetch_add(1, Ordering::Relaxed);
            drop(lock(&self.queue));
            self.queued.notify_all();
        }
    }

    fn receive(&self, message: &[u8]) {
        if self.has_left() {
            return;
        }
        let Some((node, event)) = wire::decode(message) else {
            warn!("cluster: malformed message on {}", self.channel);
            return;
        };
        // This node's own lines come back stamped with their ids, for its JSON clients;
        // nothing else of its own is for it.
        let own = node == &*self.node;
        if own && !matches!(event, Event::Lines { stamp: Some(_), .. }) {
            return;
        }
        if let Err(why) = wire::check(node, &event) {
            warn!("cluster: dropped a message from node {node:?}: {why}");
            return;
        }
        match event {
            Event::Lines { lines, .. } if !own => add(&self.stats.cluster_received, lines as u64),
            Event::Direct { to, .. } if to != &*self.node => return,
            Event::Snapshot { hello: true, .. } => self.wake(|w| w.answer = true),
            _ => {}
        }
        (self.hooks.deliver)(node, event);
    }
}
