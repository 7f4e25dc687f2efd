//! `--console`'s output side: relayed lines echoed on stdout as `[ID] line`.
//!
//! A terminal can stop reading (Ctrl-S, a full pipe, a suspended pager), and a sender must
//! never wait for it: senders hand their chunks to a bounded queue without blocking, and one
//! thread of its own writes them out. What does not fit is dropped and counted, and the
//! writer says so in the log once it catches up.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;

use log::warn;

use crate::delivery::chunk::Chunk;
use crate::delivery::notice::clean;
use crate::delivery::peer::PeerId;

/// Chunks waiting for stdout; a few hundred kilobytes at most in a lively chat.
const QUEUE: usize = 1024;

pub(crate) struct Echo {
    queue: SyncSender<(PeerId, Chunk)>,
    dropped: Arc<AtomicU64>,
}

impl Echo {
    /// Starts the thread that writes to stdout.
    pub(crate) fn start() -> io::Result<Echo> {
        let (queue, rx) = mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        thread::Builder::new()
            .name("console-out".into())
            .spawn(move || write_out(&rx, &counter))?;
        Ok(Echo { queue, dropped })
    }

    /// Queues the lines of a relayed chunk for stdout; never waits.
    pub(crate) fn echo(&self, from: PeerId, chunk: &Chunk) {
        match self.queue.try_send((from, Chunk::clone(chunk))) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn write_out(rx: &Receiver<(PeerId, Chunk)>, dropped: &AtomicU64) {
    for (from, chunk) in rx {
        let missed = dropped.swap(0, Ordering::Relaxed);
        if missed > 0 {
            warn!("console: stdout fell behind; {missed} relayed chunks not shown");
        }
        let mut out = io::stdout().lock();
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            // Raw mode relays any bytes: the operator's terminal gets them cleaned, as chat
            // mode cleans what people see.
            if writeln!(out, "[{from}] {}", clean(line)).is_err() {
                return;
            }
        }
        let _ = out.flush();
    }
}
