//! Every `unsafe` block of the daemon, each a thin wrapper around one system call that the
//! standard library and socket2 do not offer; and [`timed_out`], how the socket calls say
//! that their timeout ran out.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use socket2::SockRef;

/// Whether a socket call failed only because its timeout (`SO_RCVTIMEO`, `SO_SNDTIMEO`) ran
/// out, or a non-blocking one would have blocked: Linux says `EAGAIN` for both, which std
/// calls `WouldBlock`, and some paths say `ETIMEDOUT`.
pub(crate) fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads from `sock` into `buf`'s spare capacity (after clearing it), leaving the bytes read
/// as `buf`'s contents. The capacity is never initialised by us, so a read buffer costs
/// resident memory only where the kernel actually wrote into it.
pub(crate) fn recv_into(sock: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let n = SockRef::from(sock).recv(buf.spare_capacity_mut())?;
    // SAFETY: `recv` returned `n`, so the kernel initialised the first `n` bytes of the spare
    // capacity, and `n` is at most its length.
    unsafe { buf.set_len(n) };
    Ok(n)
}

/// Raises the soft limit on open descriptors to the hard limit (one descriptor per client)
/// and returns the limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Binds a Unix socket with a umask that leaves its file mode 0600 from the start, so there
/// is no moment at which others could connect. Call before any other thread creates files:
/// the umask is process-wide.
pub(crate) fn bind_unix_private(path: &Path) -> io::Result<UnixListener> {
    // SAFETY: umask only swaps the process's file creation mask; it cannot fail.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    bound
}

/// Bytes the kernel still holds for the peer of `sock`: not sent yet, or sent and not yet
/// acknowledged. `None` if the kernel cannot say.
pub(crate) fn unacknowledged(sock: &TcpStream) -> Option<usize> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int, into `unsent`, which lives for the call.
    let ok = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut unsent) } == 0;
    ok.then(|| unsent.max(0) as usize)
}

/// Waits up to `timeout` for `sock` to take more bytes; returns whether it will (or has
/// failed, which the next write reports).
pub(crate) fn wait_writable(sock: &TcpStream, timeout: std::time::Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll reads and writes one pollfd, `fd`, which lives for the call.
    let rc = unsafe { libc::poll(&mut fd, 1, ms) };
    rc != 0
}

/// Whether the connection is gone in the kernel (TCP state CLOSE: reset, or timed out).
pub(crate) fn is_reset(sock: &TcpStream) -> bool {
    /// `TCP_CLOSE` in Linux's `enum tcp_state`.
    const TCP_CLOSE: u8 = 7;
    // SAFETY: tcp_info is plain data, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which lives for the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    rc != 0 || info.tcpi_state == TCP_CLOSE
}

/// The listening socket the service manager passed as descriptor `fd` (socket activation).
/// The caller checks what kind of socket it is before serving it.
pub(crate) fn take_listener(fd: RawFd) -> TcpListener {
    // SAFETY: `fd` is one of the descriptors the service manager passed to this process
    // (LISTEN_FDS, for our pid), open and owned by nobody else in it; the caller takes each
    // one once, at startup, so ownership moves to the listener exactly once.
    unsafe { TcpListener::from_raw_fd(fd) }
}
