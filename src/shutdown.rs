//! A cloneable "please stop" handle. The signal handler (or a test) triggers it; the server
//! waits on it and every client thread checks it, so there is one source of truth for
//! whether the daemon is stopping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::sync::{self, lock};

#[derive(Clone, Default)]
pub struct Shutdown(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// Read on hot paths without taking the mutex.
    flag: AtomicBool,
    mutex: Mutex<()>,
    cond: Condvar,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks the daemon to stop. Idempotent.
    pub fn trigger(&self) {
        let _guard = lock(&self.0.mutex);
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.cond.notify_all();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// Blocks until `trigger` has been called.
    pub fn wait(&self) {
        let mut guard = lock(&self.0.mutex);
        while !self.is_triggered() {
            guard = sync::wait(&self.0.cond, guard);
        }
    }
}
