//! Lock helpers: the only place where a poisoned lock is recovered.
//!
//! A panic in one client's thread must not take the daemon down with it, so a poisoned mutex
//! is used as is rather than unwrapped: every critical section in relayd leaves its data
//! consistent at each step (queues and maps are only pushed to or removed from), so the data
//! behind a poisoned lock is still good.

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn read<T>(rwlock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    rwlock.read().unwrap_or_else(|e| e.into_inner())
}

pub fn write<T>(rwlock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    rwlock.write().unwrap_or_else(|e| e.into_inner())
}

/// `condvar.wait(guard)`.
pub fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// `condvar.wait_timeout(guard, timeout)`, without saying whether it timed out (callers look
/// at the data).
pub fn wait_timeout<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    condvar
        .wait_timeout(guard, timeout)
        .unwrap_or_else(|e| e.into_inner())
        .0
}

/// `condvar.wait_while(guard, waiting)`.
pub fn wait_while<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    waiting: impl FnMut(&mut T) -> bool,
) -> MutexGuard<'a, T> {
    condvar
        .wait_while(guard, waiting)
        .unwrap_or_else(|e| e.into_inner())
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
        guard = wait_timeout(condvar, guard, deadline - now);
    }
    guard
}
