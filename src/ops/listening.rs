//! A TCP listener served by a thread of its own until it is stopped: `--metrics` and
//! `--api`.

use std::io;
use std::net::{Shutdown as SocketShutdown, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use socket2::SockRef;

/// A listener being served.
pub(crate) struct Listening {
    listener: Arc<TcpListener>,
    thread: JoinHandle<()>,
}

/// Runs `accept_loop` on `listener` on a thread named `name`, until [`Listening::stop`]. The
/// loop must return once the daemon is stopping and its accept fails or returns.
pub(crate) fn start(
    name: &str,
    listener: TcpListener,
    accept_loop: impl FnOnce(&TcpListener) + Send + 'static,
) -> io::Result<Listening> {
    let listener = Arc::new(listener);
    let l = Arc::clone(&listener);
    let thread = thread::Builder::new()
        .name(name.into())
        .spawn(move || accept_loop(&l))?;
    Ok(Listening { listener, thread })
}

impl Listening {
    /// Stops accepting; call after the shutdown handle was triggered. A connection being
    /// answered ends on its own, within its timeouts.
    pub(crate) fn stop(self) {
        // Wakes the accept loop, as for the relay listeners: on Linux accept(2) returns
        // EINVAL once the listening socket is shut down.
        let _ = SockRef::from(&*self.listener).shutdown(SocketShutdown::Both);
        let _ = self.thread.join();
    }
}
