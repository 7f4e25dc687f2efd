//! The accept loop: takes connections from a listener, admits them or tells them why not,
//! and starts a thread for each client admitted.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{debug, error, info, warn};
use socket2::SockRef;

use crate::client;
use crate::daemon::{Daemon, Refusal};
use crate::notice::Departure;
use crate::tcp::{self, Tcp};

/// A client thread's stack: the read buffer is on the heap, so this is headroom for the
/// deepest call chain (delivery, formatting a log line). Only touched pages cost memory.
const CLIENT_STACK: usize = 128 * 1024;

/// Accept errors that mean "out of something" (descriptors, memory): retrying at once would
/// spin a core, so the loop backs off between these bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Accepts connections on `listener` until the daemon stops (the caller shuts the listener
/// down to wake it).
///
/// The loop also wakes when no connection comes for a while (a receive timeout on the
/// listener, which accept(2) honours), and reports in to the service manager's watchdog:
/// see [`crate::systemd`]. `watch` is the loop's index there.
pub(crate) fn accept_loop(daemon: &Arc<Daemon>, listener: &TcpListener, watch: usize) {
    let notifier = daemon.notifier();
    // Accepted sockets inherit this timeout; `tcp::configure` replaces it with their own.
    if let Err(e) = SockRef::from(listener).set_read_timeout(Some(notifier.tick_interval())) {
        warn!("cannot set the accept timeout: {e}; the watchdog may fire on a quiet port");
    }
    let mut backoff = BACKOFF_MIN;
    loop {
        let accepted = listener.accept();
        if daemon.is_stopping() {
            return;
        }
        match accepted {
            Ok((sock, addr)) => {
                backoff = BACKOFF_MIN;
                admit(daemon, sock, addr);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if is_transient(&e) => debug!("accept: {e}"),
            Err(e) => {
                if backoff == BACKOFF_MIN {
                    error!("accept failed: {e}; retrying with back-off");
                } else {
                    debug!("accept failed: {e}");
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        notifier.tick(watch, || daemon.client_count());
    }
}

/// Errors that concern one connection (it was reset before we took it, a signal arrived),
/// not the listener: the next accept can proceed at once.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::EHOSTUNREACH
        )
    )
}

/// Takes one accepted connection: admits it and starts its thread, or tells it why not.
fn admit(daemon: &Arc<Daemon>, sock: TcpStream, addr: SocketAddr) {
    if let Err(e) = tcp::configure(&sock, daemon.config()) {
        debug!("{addr}: cannot configure socket: {e}");
        return;
    }
    let sock = Arc::new(sock);
    let notices = daemon.notices();
    let mut slot = match daemon.admit(Arc::clone(&sock), addr) {
        Ok(slot) => slot,
        Err(Refusal::NotAllowed) => {
            // Not a byte for someone who does not belong here, not even an error line.
            info!("refused {addr}: not allowed by --allow/--deny");
            return;
        }
        Err(Refusal::TooManyFromAddress) => {
            let max = daemon.config().max_per_ip;
            info!("refused {addr}: more than {max} connections from this address");
            tcp::refuse(&sock, &notices.too_many_from_address());
            return;
        }
        Err(Refusal::Full) => {
            let max = daemon.config().max_clients;
            info!("refused {addr}: server full ({max} clients)");
            tcp::refuse(&sock, &notices.server_full(max));
            return;
        }
    };
    let id = slot.peer().id();
    info!(
        "client {id} connected from {addr} ({} clients)",
        daemon.client_count()
    );
    // What the slot says if the thread never runs: the closure, and the slot in it, is
    // dropped at once.
    slot.set_departure(Departure::OutOfThreads);
    let spawned = {
        let daemon = Arc::clone(daemon);
        thread::Builder::new()
            .name(format!("client-{id}"))
            .stack_size(CLIENT_STACK)
            .spawn(move || client::serve(daemon, slot, Tcp::new(sock)))
    };
    if let Err(e) = spawned {
        warn!("client {id} {addr} refused: cannot start a thread: {e}");
    }
}
