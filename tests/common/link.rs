//! A TCP link between a client (a browser, say) and a daemon that the test can cut and
//! restore: a network drop the client did not choose, as a phone's tunnel gives one.
//!
//! While cut, every connection through it is closed and new ones are accepted and closed at
//! once (the client sees its connection fail, as with a dead network, and retries).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct Link {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    up: AtomicBool,
    closed: AtomicBool,
    /// Both ends of every connection through the link, to close them when it is cut.
    open: Mutex<Vec<TcpStream>>,
    /// Where new connections go (see [`Link::retarget`]).
    target: Mutex<SocketAddr>,
}

impl Link {
    /// A link on 127.0.0.1 (port 0) to `target`, up.
    pub fn to(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            up: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            target: Mutex::new(target),
        });
        let s = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming() {
                if s.closed.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if !s.up.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let target = *s.target.lock().unwrap();
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut open = s.open.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Link { addr, shared }
    }

    /// Closes every connection through the link; new ones fail until [`Link::restore`].
    pub fn cut(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        for s in self.shared.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Sends connections made from now on to `target` (another node of a cluster, as a load
    /// balancer would after a node went away); those open stay where they are.
    pub fn retarget(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = target;
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.shared.closed.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then ends.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` on a thread of its own until either end closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _: io::Result<u64> = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
