//! Lock helpers.
//!
//! A panic in one client's thread must not take the daemon down with it, so a poisoned mutex
//! is used as is rather than unwrapped: every critical section in relayd leaves its data
//! consistent at each step (queues and maps are only pushed to or removed from), so the data
//! behind a poisoned lock is still good.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
