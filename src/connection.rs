//! One client's thread: reads from its socket, frames lines, hands them to the registry, and
//! cleans up when the client goes, however it goes (end of input, error, kick, idle, panic).

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, log_enabled, warn};
use socket2::SockRef;

use crate::framing::Framer;
use crate::outbound::{Chunk, Outbound};
use crate::server::Shared;

/// Bytes per `read`. The buffer is heap memory we never initialise ourselves, so an idle
/// client's buffer costs no resident memory; only the pages the kernel writes into do. (On the
/// stack it would cost all of it: Rust probes every page of a large stack frame.)
const READ_BUF: usize = 16 * 1024;

/// Serves one client until it leaves. Runs on the client's own thread.
pub fn serve(shared: Arc<Shared>, peer: Arc<Outbound>, sock: Arc<TcpStream>, addr: SocketAddr) {
    let mut leave = Leave {
        shared: &shared,
        peer: &peer,
        addr,
        reason: "thread panicked".into(),
    };
    leave.reason = relay_lines(&shared, &peer, &sock);
}

/// The read loop. Returns why the client is leaving.
fn relay_lines(shared: &Shared, peer: &Arc<Outbound>, sock: &TcpStream) -> String {
    let config = &shared.config;
    let mut framer = Framer::new(config.max_line);
    let mut lines = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    loop {
        let data = match recv(sock, buf.spare_capacity_mut()) {
            Ok([]) => {
                if let Some(reason) = peer.closed_reason() {
                    return reason;
                }
                if shared.shutdown.is_triggered() {
                    return "shutdown".into();
                }
                framer.finish(&mut lines);
                relay(shared, peer, &mut lines);
                return "closed by client".into();
            }
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // SO_RCVTIMEO is only set when `--idle-timeout` is.
                peer.push_notice(b"relayd: idle timeout\n");
                return "idle timeout".into();
            }
            Err(e) => {
                return peer
                    .closed_reason()
                    .unwrap_or_else(|| format!("read error: {e}"));
            }
        };
        let too_long = framer.feed(data, &mut lines);
        for _ in 0..too_long {
            warn!(
                "client {}: line longer than {} bytes discarded",
                peer.id(),
                config.max_line
            );
            let notice = format!(
                "relayd: line too long (max {} bytes), discarded\n",
                config.max_line
            );
            peer.push_notice(notice.as_bytes());
        }
        if shared.shutdown.is_triggered() {
            // What was read before the daemon stopped is delivered; a half line is not.
            framer.drop_partial();
            relay(shared, peer, &mut lines);
            return "shutdown".into();
        }
        relay(shared, peer, &mut lines);
    }
}

/// Forwards the complete lines of one read as a single shared chunk.
fn relay(shared: &Shared, peer: &Outbound, lines: &mut Vec<u8>) {
    if lines.is_empty() {
        return;
    }
    if log_enabled!(log::Level::Debug) {
        for line in lines.split_inclusive(|&b| b == b'\n') {
            debug!(
                "client {}: relaying a line of {} bytes",
                peer.id(),
                line.len()
            );
        }
    }
    let chunk = Chunk::from(&lines[..]);
    lines.clear();
    shared.registry.deliver(Some(peer.id()), &chunk);
}

/// `read` into uninitialised memory (see [`READ_BUF`]).
fn recv<'a>(sock: &TcpStream, buf: &'a mut [MaybeUninit<u8>]) -> io::Result<&'a [u8]> {
    let n = SockRef::from(sock).recv(buf)?;
    // SAFETY: `recv` returned `n`, so the kernel initialised the first `n` bytes of `buf`.
    Ok(unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) })
}

/// Leaves the registry when the client's thread ends, also when it ends by panicking, so a
/// bug in one client's handling never leaks a `--max-clients` slot or a socket.
struct Leave<'a> {
    shared: &'a Shared,
    peer: &'a Arc<Outbound>,
    addr: SocketAddr,
    reason: String,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let shared = self.shared;
        let count = if shared.shutdown.is_triggered() {
            // The server's shutdown sequence flushes, notifies and closes every registered
            // peer itself, and lines other readers relay until it does must still reach this
            // one: it stays registered. (Leaving here, a reader that read once more after the
            // signal missed those lines, and the notice if it left before the server took
            // its list of peers.)
            shared.registry.len()
        } else {
            // The slot is free before the flush, so whoever pressed Ctrl-C can reconnect at
            // once.
            let count = shared.registry.leave(self.peer.id());
            self.peer
                .flush(Instant::now() + shared.config.write_timeout);
            self.peer.close(&self.reason, None);
            count
        };
        info!(
            "client {} {} disconnected: {} ({count} clients)",
            self.peer.id(),
            self.addr,
            self.reason
        );
        shared.reader_done();
    }
}
