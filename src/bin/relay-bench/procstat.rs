//! The server's cost, read from /proc/PID: CPU time over the measured window, peak resident
//! memory (`VmHWM`, kept by the kernel so no sample can miss the peak) and the largest thread
//! count seen by a sampler. Reported next to the generator's own CPU so that a saturated
//! generator is never mistaken for a slow server. A server of several processes (`--nodes`:
//! the nodes and Redis) costs the sum of theirs.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::sys;

/// CPU seconds (user + system) the process has used, from /proc/PID/stat.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / sys::clock_ticks() as f64)
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Peak resident set size in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

/// Resident memory now (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// The CPUs the process may run on (`Cpus_allowed_list`, e.g. `0-1`), as its main thread
/// has them; the threads it starts inherit them.
pub fn cpus_allowed(pid: u32) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))?;
    Some(line["Cpus_allowed_list:".len()..].trim().to_string())
}

pub fn threads(pid: u32) -> Option<u64> {
    status_field(pid, "Threads:")
}

/// `f` of every process in `pids`, added up: CPU seconds, KiB, threads. None if any of them
/// has no answer, or there are none.
pub fn total<T: std::iter::Sum>(pids: &[u32], f: impl Fn(u32) -> Option<T>) -> Option<T> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| f(pid)).sum()
}

/// The processes' CPU lists, each distinct one once, space-separated (one list when they
/// all run on the same CPUs, as `--server-cpus` places them).
pub fn cpus_allowed_all(pids: &[u32]) -> Option<String> {
    let mut lists: Vec<String> = Vec::new();
    for &pid in pids {
        let l = cpus_allowed(pid)?;
        if !lists.contains(&l) {
            lists.push(l);
        }
    }
    (!lists.is_empty()).then(|| lists.join(" "))
}

/// Samples the thread count (of all the processes together) every 50 ms until stopped;
/// returns the largest seen.
pub struct ThreadSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl ThreadSampler {
    pub fn start(pids: Vec<u32>) -> ThreadSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(total(&pids, threads).unwrap_or(0)));
        let handle = {
            let (stop, max) = (Arc::clone(&stop), Arc::clone(&max));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Some(t) = total(&pids, threads) {
                        max.fetch_max(t, Ordering::SeqCst);
                    }
                    let until = Instant::now() + Duration::from_millis(50);
                    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        };
        ThreadSampler {
            stop,
            max,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self, pids: &[u32]) -> u64 {
        if let Some(t) = total(pids, threads) {
            self.max.fetch_max(t, Ordering::SeqCst);
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.max.load(Ordering::SeqCst)
    }
}
