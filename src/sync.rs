//! Lock helpers.
//!
//! A panic in one client's thread must not take the daemon down with it, so a poisoned mutex
//! is used as is rather than unwrapped: every critical section in relayd leaves its data
//! consistent at each step (queues and maps are only pushed to or removed from), so the data
//! behind a poisoned lock is still good.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits on `condvar` while `waiting` holds for the guarded data, until `deadline` at the
/// latest; returns the guard either way, for the caller to look at what it found.
pub fn wait_while_until<'a, T>(
    condvar: &Condvar,
    mut guard: MutexGuard<'a, T>,
    deadline: Instant,
    mut waiting: impl FnMut(&T) -> bool,
) -> MutexGuard<'a, T> {
    while waiting(&guard) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        guard = condvar
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    guard
}
