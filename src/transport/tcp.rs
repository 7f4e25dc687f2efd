//! The TCP transport: how a client's bytes come in over a plain TCP connection (`nc`,
//! `telnet`, programs), how its socket is set up, and how a refused one is told and closed.
//! What goes out is the peer's business (`delivery/peer/write.rs`), which writes whole lines to the
//! same socket.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use crate::config::Config;
use crate::delivery::peer::write::send_dontwait;
use crate::sys;

/// Bytes per `read`. The buffer is heap memory we never initialise ourselves, so an idle
/// client's buffer costs no resident memory; only the pages the kernel writes into do. (On the
/// stack it would cost all of it: Rust probes every page of a large stack frame.)
pub(crate) const READ_BUF: usize = 16 * 1024;

pub(crate) struct Tcp {
    sock: Arc<TcpStream>,
}

impl Tcp {
    pub(crate) fn new(sock: Arc<TcpStream>) -> Tcp {
        Tcp { sock }
    }

    /// Waits for the next bytes from the client and leaves them in `buf` (allocate it with
    /// [`READ_BUF`] of capacity). Returns how many there are: 0 at end of input.
    pub(crate) fn read(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        sys::recv_into(&self.sock, buf)
    }

    /// How long a read may wait: `None` for ever.
    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) {
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        let _ = self.sock.set_read_timeout(timeout);
    }
}

/// Sets up an accepted connection: no Nagle delay, `--write-timeout` on blocking writes,
/// `--idle-timeout` on reads, and keepalive.
pub(crate) fn configure(sock: &TcpStream, config: &Config) -> io::Result<()> {
    sock.set_nodelay(true)?;
    sock.set_write_timeout(Some(config.write_timeout).filter(|t| !t.is_zero()))?;
    sock.set_read_timeout(config.idle_timeout)?;
    // A peer that vanished (power loss, cable pulled) is found within about two minutes.
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    SockRef::from(sock).set_tcp_keepalive(&keepalive)
}

/// Tells a connection why it is not served, and closes it. A fresh socket's buffer is empty,
/// so the send never blocks the accept loop.
pub(crate) fn refuse(sock: &TcpStream, notice: &[u8]) {
    let _ = send_dontwait(sock, notice);
    let _ = sock.shutdown(Shutdown::Write);
}
