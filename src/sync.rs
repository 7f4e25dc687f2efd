//! What threads share, made safe against a panic: lock helpers (the only place where a
//! poisoned lock is recovered), and [`Counted`], a counted place given back on drop.
//!
//! A panic in one client's thread must not take the daemon down with it, so a poisoned mutex
//! is used as is rather than unwrapped: every critical section in relayd leaves its data
//! consistent at each step (queues and maps are only pushed to or removed from), so the data
//! behind a poisoned lock is still good. Nor may a panic keep a place it counted: it would be
//! lost for good.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn read<T>(rwlock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    rwlock.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(rwlock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    rwlock.write().unwrap_or_else(|e| e.into_inner())
}

/// `condvar.wait(guard)`.
pub(crate) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// `condvar.wait_timeout(guard, timeout)`, without saying whether it timed out (callers look
/// at the data).
pub(crate) fn wait_timeout<'a, T>(
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
pub(crate) fn wait_while<'a, T>(
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
pub(crate) fn wait_while_until<'a, T>(
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

/// One of at most `max` places counted in a shared count, given back when dropped: however
/// its holder ends, a panic or a thread that never started included.
#[derive(Debug)]
pub(crate) struct Counted(Arc<AtomicUsize>);

impl Counted {
    /// Takes a place in `count`, unless `max` are taken already.
    pub(crate) fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Counted> {
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Counted(Arc::clone(count)))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_place_is_given_back_on_drop_even_in_a_panic() {
        let count = Arc::new(AtomicUsize::new(0));
        let first = Counted::take(&count, 2).unwrap();
        let second = Counted::take(&count, 2).unwrap();
        assert!(Counted::take(&count, 2).is_none());
        assert_eq!(count.load(Ordering::Relaxed), 2);
        drop(first);
        let panicked = std::thread::spawn(move || {
            let _held = second;
            panic!("a holder panics");
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(count.load(Ordering::Relaxed), 0);
        assert!(Counted::take(&count, 0).is_none());
    }
}
