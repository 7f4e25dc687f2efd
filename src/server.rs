//! The daemon's lifecycle: start (control socket, console, metrics, the HTTP API, one accept
//! thread per listener), tell the service manager it is ready, serve reloads, wait for the stop signal,
//! and shut down cleanly.

use std::io;
use std::net::{Shutdown as SocketShutdown, SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{info, warn};
use socket2::SockRef;

use crate::api;
use crate::client::accept;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::delivery::notice::Departure;
use crate::delivery::peer::Peer;
use crate::ops::admin::{self, Admin};
use crate::ops::console;
use crate::ops::listening::Listening;
use crate::ops::metrics;
use crate::ops::reload::{self, Reloads};
use crate::shutdown::Shutdown;

pub use crate::sys::raise_fd_limit;

/// Serves clients on `listeners` until `shutdown` is triggered, then stops accepting, delivers
/// what was already read, flushes every peer (bounded by `config.shutdown_grace`), tells each
/// client `relayd: shutting down` and closes it.
///
/// Takes listeners already bound, so the caller owns address handling (and tests can bind
/// port 0).
pub fn run(listeners: Vec<TcpListener>, config: Config, shutdown: Shutdown) -> io::Result<()> {
    let listeners = Listeners {
        relay: listeners,
        ws: Vec::new(),
        metrics: None,
        api: None,
    };
    serve(listeners, config, shutdown, Reloads::new())
}

/// The listening sockets the daemon serves, bound by the caller or passed by the service
/// manager.
pub struct Listeners {
    /// Where clients connect.
    pub relay: Vec<TcpListener>,
    /// `--ws-bind`: where browsers get the page and connect over WebSocket.
    pub ws: Vec<TcpListener>,
    /// `--metrics`: the Prometheus endpoint.
    pub metrics: Option<TcpListener>,
    /// `--api`: the HTTP API.
    pub api: Option<TcpListener>,
}

/// [`run`], with a metrics listener and reloads: each request on `reloads` (SIGHUP) reads
/// the settings files again. Once every listener is served and the control socket is open,
/// the service manager, if any, is told the daemon is ready.
///
/// If a step of the start fails, what the steps before it started is stopped before the
/// error is returned (`shutdown` is triggered for that), so that no thread is left serving.
pub fn serve(
    listeners: Listeners,
    config: Config,
    shutdown: Shutdown,
    reloads: Reloads,
) -> io::Result<()> {
    match raise_fd_limit() {
        Ok(limit) => info!("{}", room(config.max_clients, limit)),
        Err(e) => warn!("cannot read or raise the file descriptor limit: {e}"),
    }
    // Opened first: a control socket that cannot be opened is a reason not to start at all.
    let admin_socket = match &config.admin {
        Some(path) => Some((
            admin::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("admin socket {}: {e}", path.display()))
            })?,
            path.clone(),
        )),
        None => None,
    };
    let daemon = Daemon::new(config, shutdown.clone())?;
    let mut running = Running::new(&daemon, &shutdown, &reloads);
    if let Some((listener, path)) = admin_socket {
        running.admin = Some(admin::start(Arc::clone(&daemon), listener, path)?);
    }
    if daemon.config().console {
        console::spawn(Arc::clone(&daemon))?;
    }
    if let Some(listener) = listeners.metrics {
        running.metrics = Some(metrics::start(Arc::clone(&daemon), listener)?);
    }
    if let Some(listener) = listeners.api {
        running.api = Some(api::start(Arc::clone(&daemon), listener)?);
    }
    let kinds = listeners
        .relay
        .into_iter()
        .map(|l| (l, accept::Kind::Tcp))
        .chain(listeners.ws.into_iter().map(|l| (l, accept::Kind::Ws)));
    for (listener, kind) in kinds {
        running
            .accepters
            .push(start_accepter(&daemon, listener, kind)?);
    }
    running.reloader = Some(start_reloader(&daemon, &reloads)?);
    daemon.notifier().ready(daemon.client_count());

    shutdown.wait();
    daemon.notifier().stopping();
    info!("shutting down");
    drop(running);
    info!("stopped");
    Ok(())
}

/// Serves `listener` on a thread of its own; the listener is kept to wake that thread.
fn start_accepter(
    daemon: &Arc<Daemon>,
    listener: TcpListener,
    kind: accept::Kind,
) -> io::Result<(Arc<TcpListener>, JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    match kind {
        accept::Kind::Tcp => info!("listening on {addr}"),
        accept::Kind::Ws => info!("listening for browsers on http://{addr}/"),
    }
    let listener = Arc::new(listener);
    let (daemon, l) = (Arc::clone(daemon), Arc::clone(&listener));
    let watch = daemon.notifier().add_loop();
    let handle = thread::Builder::new()
        .name(format!("accept-{addr}"))
        .spawn(move || accept::accept_loop(&daemon, &l, kind, watch))?;
    Ok((listener, handle))
}

/// The thread that serves the reload requests on `reloads` until they are closed.
fn start_reloader(daemon: &Arc<Daemon>, reloads: &Reloads) -> io::Result<JoinHandle<()>> {
    let (daemon, reloads) = (Arc::clone(daemon), reloads.clone());
    thread::Builder::new().name("reload".into()).spawn(move || {
        while reloads.wait() {
            // The outcome is logged; a signal has no one to answer.
            let _ = reload::reload(&daemon);
        }
    })
}

/// What [`serve`] started, as far as it got. Dropping it stops all of it, in order, whether
/// the daemon was told to stop or a later step of the start failed: the reloads, the
/// metrics endpoint and the HTTP API, the accept loops, the control socket, then the clients.
struct Running {
    daemon: Arc<Daemon>,
    shutdown: Shutdown,
    reloads: Reloads,
    admin: Option<Admin>,
    metrics: Option<Listening>,
    api: Option<Listening>,
    accepters: Vec<(Arc<TcpListener>, JoinHandle<()>)>,
    reloader: Option<JoinHandle<()>>,
}

impl Running {
    fn new(daemon: &Arc<Daemon>, shutdown: &Shutdown, reloads: &Reloads) -> Running {
        Running {
            daemon: Arc::clone(daemon),
            shutdown: shutdown.clone(),
            reloads: reloads.clone(),
            admin: None,
            metrics: None,
            api: None,
            accepters: Vec::new(),
            reloader: None,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Already triggered unless a step of the start failed; the accept loops (relay,
        // admin, metrics) end only once it is.
        self.shutdown.trigger();
        self.reloads.close();
        if let Some(reloader) = self.reloader.take() {
            let _ = reloader.join();
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.stop();
        }
        if let Some(api) = self.api.take() {
            api.stop();
        }
        for (listener, _) in &self.accepters {
            // Wakes a thread blocked in accept(2): on Linux it returns EINVAL once the
            // listening socket is shut down. The Arc keeps the descriptor open until the
            // thread is joined.
            let _ = SockRef::from(&**listener).shutdown(SocketShutdown::Both);
        }
        for (_, handle) in self.accepters.drain(..) {
            let _ = handle.join();
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        stop_clients(&self.daemon);
    }
}

/// Ends every client's session: lets each reader hand over what it read, flushes every peer,
/// tells it `relayd: shutting down`, and closes it, all within the configured grace.
fn stop_clients(daemon: &Daemon) {
    let config = daemon.config();
    let peers = daemon.all_peers();
    for peer in &peers {
        peer.shutdown_read();
    }
    // Readers blocked on a full peer wait at most --stall-timeout.
    daemon.wait_readers(Instant::now() + config.stall_timeout + config.shutdown_grace);
    let deadline = Instant::now() + config.shutdown_grace;
    daemon.leave_cluster(deadline);
    let notice = daemon.notices().shutting_down();
    for peer in &peers {
        peer.push_last(&notice);
    }
    let unflushed = peers.iter().filter(|p| !p.flush(deadline)).count();
    if unflushed > 0 {
        warn!("{unflushed} clients closed before their queue was flushed");
    }
    linger(&peers, deadline);
    for peer in &peers {
        peer.close(Departure::Shutdown);
    }
    daemon.stop_delivering();
}

/// Before the peers are closed: waits, until `deadline`, for every peer's kernel to
/// acknowledge what was sent to it, throwing away what peers send meanwhile.
///
/// Why: a client still typing when the daemon stops would otherwise lose the end of its
/// stream. A socket shut down for reading and writing answers any further data with an RST
/// (RFC 1122; Linux counts it as TCPAbortOnData), and so does a close with unread input; an
/// RST discards what the kernel had not sent yet, which for a slow reader was megabytes and
/// the shutdown notice. Once everything is acknowledged, a late RST costs the client nothing:
/// the bytes are in its own kernel, and it reads them and then end of stream.
fn linger(peers: &[Arc<Peer>], deadline: Instant) {
    loop {
        let unsent: usize = peers.iter().map(|p| p.discard_input_and_unsent()).sum();
        if unsent == 0 {
            return;
        }
        if Instant::now() >= deadline {
            warn!("{unsent} bytes still unacknowledged by clients at exit");
            return;
        }
        // Polling: no event announces an acknowledgement; this costs a few wake-ups, once.
        thread::sleep(Duration::from_millis(10));
    }
}

/// Binds a listening socket with a backlog of 1024 (std's `bind` uses 128, and a burst of
/// connects overflowing it costs each dropped client a one-second SYN retry).
/// `v6_only` keeps an IPv6 wildcard from also claiming the IPv4 port, for when both are bound.
pub fn bind(addr: SocketAddr, v6_only: bool) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(v6_only)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The startup line that says how many clients this process can serve and which limit binds:
/// `--max-clients`, the descriptors (one per client, a few kept for listeners and files), or
/// the threads (one per client; Linux maps about four regions per thread, and
/// `vm.max_map_count` caps a process's regions, near 16,000 threads by default).
fn room(max_clients: usize, fd_limit: u64) -> String {
    let fds = fd_limit.saturating_sub(32);
    let maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let mut limits = vec![
        (max_clients as u64, "--max-clients".to_string()),
        (fds, format!("the file descriptor limit {fd_limit}")),
    ];
    if let Some(maps) = maps {
        limits.push((maps / 4, format!("vm.max_map_count {maps} (threads)")));
    }
    let (least, binds) = limits.iter().min_by_key(|(n, _)| *n).unwrap();
    let others: Vec<String> = limits
        .iter()
        .filter(|(_, what)| what != binds)
        .map(|(n, what)| format!("{what} allows about {n}"))
        .collect();
    format!(
        "room for {least} clients: {binds} binds; {}",
        others.join(", ")
    )
}

#[cfg(test)]
mod room_tests {
    use super::room;

    #[test]
    fn names_the_limit_that_binds() {
        let line = room(1024, 20_000);
        assert!(
            line.starts_with("room for 1024 clients: --max-clients binds; "),
            "{line}"
        );
        assert!(
            line.contains("the file descriptor limit 20000 allows about 19968"),
            "{line}"
        );
        let line = room(100_000, 1056);
        assert!(
            line.starts_with("room for 1024 clients: the file descriptor limit 1056 binds; "),
            "{line}"
        );
        assert!(line.contains("--max-clients allows about 100000"), "{line}");
    }
}

#[cfg(test)]
mod failed_start_tests {
    use std::fs::{self, File};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::OwnedFd;

    use super::{bind, run};
    use crate::config::Config;
    use crate::shutdown::Shutdown;

    /// A start that fails half-way stops what it had started: the control socket (whose file
    /// goes as it stops) and the listeners before the one that failed.
    #[test]
    fn stops_what_it_started() {
        let dir = std::env::temp_dir().join(format!("relayd-failed-start-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let admin = dir.join("admin.sock");
        let served = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = served.local_addr().unwrap();
        // Not a socket: its address cannot be read, after the first listener is served.
        let broken = TcpListener::from(OwnedFd::from(File::open("/dev/null").unwrap()));
        let config = Config {
            admin: Some(admin.clone()),
            ..Config::default()
        };
        let shutdown = Shutdown::new();
        assert!(run(vec![served, broken], config, shutdown.clone()).is_err());
        assert!(shutdown.is_triggered());
        assert!(!admin.exists(), "the control socket is still open");
        assert!(TcpStream::connect(addr).is_err(), "{addr} is still served");
        let _ = fs::remove_dir(&dir);
    }
}
