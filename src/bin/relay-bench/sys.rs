//! The few Linux calls the generator needs beyond std: epoll, the descriptor limit, the
//! process's own CPU time, and CPU affinity (for itself and the server it starts); and which
//! socket errors only mean "not now". Kept in one place so that every `unsafe` block is next
//! to the others and the rest of the tool stays safe code.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// A level-triggered epoll set. Level-triggered because a receiver reads at most one buffer
/// per wake-up (so that one busy socket cannot starve the others) and must be woken again
/// for what it left.
pub struct Epoll {
    fd: OwnedFd,
}

pub type Event = libc::epoll_event;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; a non-negative result is a descriptor we now own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// Watches `fd` for input (and hang-up), reporting it with `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn remove(&self, fd: RawFd) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    /// Waits up to `timeout` for events; returns how many of `events` were filled.
    pub fn wait(&self, events: &mut [Event], timeout: Duration) -> io::Result<usize> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the kernel writes at most `events.len()` entries into `events`.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

pub fn empty_event() -> Event {
    libc::epoll_event { events: 0, u64: 0 }
}

/// Whether a socket read or write that failed with `e` is worth simply trying again: nothing
/// to read or no room yet (a non-blocking socket, or a socket timeout, which Linux reports as
/// WouldBlock and other systems as TimedOut), or a signal came first.
pub fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// CPU time (user + system) this process has used so far, all threads together.
pub fn own_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Clock ticks per second, the unit of /proc/PID/stat's CPU times.
pub fn clock_ticks() -> u64 {
    // SAFETY: plain libc query.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Sends SIGTERM (or SIGKILL) to a process we started.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall on a PID we spawned ourselves.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// A set of CPU numbers, written like `0`, `0-1`, `0,2-3` (the kernel's and taskset's form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpus(Vec<usize>);

/// The most CPUs a `cpu_set_t` holds.
const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

impl Cpus {
    /// Parses a CPU list; the error says what is wrong with it, without the list itself.
    pub fn parse(list: &str) -> Result<Cpus, String> {
        let mut cpus = Vec::new();
        for part in list.trim().split(',') {
            let num = |s: &str| -> Result<usize, String> {
                let n = s
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("'{}' is not a CPU number", s.trim()))?;
                if n >= MAX_CPUS {
                    return Err(format!(
                        "CPU {n} is past {}, the last a CPU mask holds",
                        MAX_CPUS - 1
                    ));
                }
                Ok(n)
            };
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(part)?, num(part)?),
            };
            if lo > hi {
                return Err(format!("range {lo}-{hi} is backwards"));
            }
            cpus.extend(lo..=hi);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(Cpus(cpus))
    }

    /// The CPUs of `self` that are not in `of`.
    pub fn missing_from(&self, of: &Cpus) -> Cpus {
        Cpus(
            self.0
                .iter()
                .copied()
                .filter(|c| !of.0.contains(c))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn mask(&self) -> libc::cpu_set_t {
        // SAFETY: an all-zero cpu_set_t is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in &self.0 {
            // SAFETY: `c` < CPU_SETSIZE, checked by `parse` (and true of what the kernel
            // reports), so CPU_SET stays inside `set`.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        set
    }
}

impl fmt::Display for Cpus {
    /// The same compact form `parse` reads: `0-3,6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut i = 0;
        while i < self.0.len() {
            let mut j = i;
            while j + 1 < self.0.len() && self.0[j + 1] == self.0[j] + 1 {
                j += 1;
            }
            let sep = if first { "" } else { "," };
            first = false;
            if j == i {
                write!(f, "{sep}{}", self.0[i])?;
            } else {
                write!(f, "{sep}{}-{}", self.0[i], self.0[j])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

/// The CPUs this machine has online (`/sys/devices/system/cpu/online`), or, should that be
/// unreadable, the ones this process may use.
pub fn online_cpus() -> io::Result<Cpus> {
    match std::fs::read_to_string("/sys/devices/system/cpu/online") {
        Ok(s) => Cpus::parse(&s).map_err(io::Error::other),
        Err(_) => own_affinity(),
    }
}

/// The CPUs this thread may run on now (what `nproc` counts).
pub fn own_affinity() -> io::Result<Cpus> {
    // SAFETY: an all-zero cpu_set_t is valid; the kernel writes at most its size into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let has = |c: usize| {
        // SAFETY: `c` < CPU_SETSIZE, so CPU_ISSET reads inside `set`.
        unsafe { libc::CPU_ISSET(c, &set) }
    };
    Ok(Cpus((0..MAX_CPUS).filter(|&c| has(c)).collect()))
}

/// Restricts the calling thread to `cpus`. Called while the process has no other thread, it
/// places the whole process: threads started later inherit the mask.
pub fn pin_self(cpus: &Cpus) -> io::Result<()> {
    let set = cpus.mask();
    // SAFETY: `set` is a valid cpu_set_t for the duration of the call; pid 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the process `cmd` starts run on `cpus` from its first instruction: the mask is set in
/// the child between fork and exec, so it survives exec and every thread the program starts
/// inherits it. Should the kernel refuse the mask, spawning fails with its error.
pub fn pin_child(cmd: &mut Command, cpus: &Cpus) {
    let set = cpus.mask();
    let hook = move || {
        // Only an async-signal-safe syscall on a copy of `set` made before fork: no
        // allocation, no lock. Pid 0 is the (single-threaded) child.
        // SAFETY: `set` is a valid cpu_set_t owned by this closure.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: `pre_exec` runs `hook` in the forked child before exec, where only
    // async-signal-safe work is allowed; `hook` makes one raw syscall and, on failure, builds
    // an io::Error from errno, which does not allocate.
    unsafe { cmd.pre_exec(hook) };
}

/// Makes the process `cmd` starts get SIGKILL should this generator die without stopping it
/// (killed by a test's timeout, say), so that no server, node or redis-server of a run
/// outlives it. Set between fork and exec; it survives exec. The kernel sends the signal when
/// the thread that spawned the child ends, and servers are started from the main thread,
/// which lives as long as the process.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: plain query, before fork.
    let parent = unsafe { libc::getpid() };
    let hook = move || {
        // SAFETY: prctl, getppid and raise are async-signal-safe syscalls without pointers.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The generator died between fork and prctl: nobody will stop this child.
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
        }
        Ok(())
    };
    // SAFETY: `pre_exec` runs `hook` in the forked child before exec, where only
    // async-signal-safe work is allowed: `hook` makes raw syscalls and, on failure, builds an
    // io::Error from errno, which does not allocate.
    unsafe { cmd.pre_exec(hook) };
}
