//! The accept loop and the daemon's lifecycle: start, admit clients, shut down cleanly.

use std::io;
use std::net::{Shutdown as SocketShutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use socket2::{SockRef, TcpKeepalive};

use crate::access::PerAddress;
use crate::config::Config;
use crate::outbound::{Outbound, PeerId, send_dontwait};
use crate::registry::{Members, Registry};
use crate::shutdown::Shutdown;
use crate::stats::{Stats, add};
use crate::sync::lock;
use crate::{admin, chat, connection, console};

/// A client thread's stack. Its deepest frame holds the 16 KiB read buffer; the rest is
/// headroom for formatting log lines. Only touched pages cost memory.
const CLIENT_STACK: usize = 128 * 1024;

/// Accept errors that mean "out of something" (descriptors, memory): retrying at once would
/// spin a core, so the loop backs off between these bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// What every client thread shares.
pub struct Shared {
    pub config: Config,
    pub registry: Registry,
    pub shutdown: Shutdown,
    /// Open connections per client address, for `--max-per-ip`.
    pub per_address: PerAddress,
    /// Clients that still owe `--secret-file`'s secret: they hold a `--max-clients` slot but
    /// are not in the registry yet, so they neither hear nor are heard, nor are announced.
    awaiting_auth: Mutex<Vec<Arc<Outbound>>>,
    pub stats: Arc<Stats>,
    next_id: AtomicU64,
    /// Client threads still running; shutdown waits for them to hand over their last lines.
    readers: Mutex<usize>,
    readers_done: Condvar,
}

impl Shared {
    pub(crate) fn reader_done(&self) {
        let mut readers = lock(&self.readers);
        *readers -= 1;
        self.readers_done.notify_all();
    }

    fn wait_readers(&self, deadline: Instant) {
        let mut readers = lock(&self.readers);
        while *readers > 0 {
            let now = Instant::now();
            if now >= deadline {
                warn!("{} client threads still busy at shutdown", *readers);
                return;
            }
            readers = self
                .readers_done
                .wait_timeout(readers, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Serves clients on `listeners` until `shutdown` is triggered, then stops accepting, delivers
/// what was already read, flushes every peer (bounded by `config.shutdown_grace`), tells each
/// client `relayd: shutting down` and closes it.
///
/// Takes listeners already bound, so the caller owns address handling (and tests can bind
/// port 0).
pub fn run(listeners: Vec<TcpListener>, config: Config, shutdown: Shutdown) -> io::Result<()> {
    match raise_fd_limit() {
        Ok(limit) => info!(
            "file descriptor limit {limit}: room for about {} clients",
            limit.saturating_sub(32)
        ),
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
    let stats = Arc::new(Stats::default());
    let shared = Arc::new(Shared {
        registry: Registry::new(&config, Arc::clone(&stats)),
        config,
        shutdown: shutdown.clone(),
        per_address: PerAddress::default(),
        awaiting_auth: Mutex::new(Vec::new()),
        stats,
        next_id: AtomicU64::new(1),
        readers: Mutex::new(0),
        readers_done: Condvar::new(),
    });

    let admin = match admin_socket {
        Some((listener, path)) => Some(admin::start(Arc::clone(&shared), listener, path)?),
        None => None,
    };
    if shared.config.console {
        console::spawn(Arc::clone(&shared))?;
    }

    let mut accepters = Vec::new();
    for listener in listeners {
        let addr = listener.local_addr()?;
        info!("listening on {addr}");
        let listener = Arc::new(listener);
        let shared = Arc::clone(&shared);
        let l = Arc::clone(&listener);
        let handle = thread::Builder::new()
            .name(format!("accept-{addr}"))
            .spawn(move || accept_loop(&shared, &l))?;
        accepters.push((listener, handle));
    }

    shutdown.wait();
    info!("shutting down");
    for (listener, _) in &accepters {
        // Wakes a thread blocked in accept(2): on Linux it returns EINVAL once the listening
        // socket is shut down. The Arc keeps the descriptor open until the thread is joined.
        // SAFETY: plain syscall on a descriptor we own.
        unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    }
    for (_, handle) in accepters {
        let _ = handle.join();
    }
    if let Some(admin) = admin {
        admin.stop();
    }

    let notice = format!("relayd: shutting down{}", shared.config.eol());
    for peer in std::mem::take(&mut *lock(&shared.awaiting_auth)) {
        peer.close("shutdown", Some(notice.as_bytes()));
    }
    let peers = shared.registry.peers();
    for peer in peers.iter() {
        peer.shutdown_read();
    }
    // Readers blocked on a full peer wait at most --stall-timeout.
    shared
        .wait_readers(Instant::now() + shared.config.stall_timeout + shared.config.shutdown_grace);
    let deadline = Instant::now() + shared.config.shutdown_grace;
    for peer in peers.iter() {
        peer.push_notice(notice.as_bytes());
    }
    let mut unflushed = 0;
    for peer in peers.iter() {
        if !peer.flush(deadline) {
            unflushed += 1;
        }
    }
    if unflushed > 0 {
        warn!("{unflushed} clients closed before their queue was flushed");
    }
    linger(&peers, deadline);
    for peer in peers.iter() {
        peer.close("shutdown", None);
    }
    info!("stopped");
    Ok(())
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
fn linger(peers: &[Arc<Outbound>], deadline: Instant) {
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

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let accepted = listener.accept();
        if shared.shutdown.is_triggered() {
            return;
        }
        match accepted {
            Ok((sock, addr)) => {
                backoff = BACKOFF_MIN;
                admit(shared, sock, addr);
            }
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

/// Takes one accepted connection: registers it, or tells it why not.
fn admit(shared: &Arc<Shared>, sock: TcpStream, addr: SocketAddr) {
    let config = &shared.config;
    if !config.rules.permits(addr.ip()) {
        // Not a byte for someone who does not belong here, not even an error line.
        info!("refused {addr}: not allowed by --allow/--deny");
        return;
    }
    if !shared.per_address.try_add(addr.ip(), config.max_per_ip) {
        info!(
            "refused {addr}: more than {} connections from this address",
            config.max_per_ip
        );
        refuse(&sock, b"relayd: too many connections from your address\n");
        return;
    }
    if let Err(e) = configure(&sock, config) {
        debug!("{addr}: cannot configure socket: {e}");
        shared.per_address.remove(addr.ip());
        return;
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let sock = Arc::new(sock);
    let peer = Outbound::new(id, Arc::clone(&sock), &shared.config);
    let lobby = if config.secret.is_some() {
        let mut awaiting = lock(&shared.awaiting_auth);
        if shared.registry.len() + awaiting.len() >= config.max_clients {
            drop(awaiting);
            refuse_full(shared, &sock, addr);
            return;
        }
        awaiting.push(Arc::clone(&peer));
        None
    } else {
        match enter(shared, &peer, addr) {
            Ok(lobby) => Some(lobby),
            Err(_) => {
                refuse_full(shared, &sock, addr);
                return;
            }
        }
    };
    info!(
        "client {id} connected from {addr} ({} clients)",
        shared.registry.len()
    );
    *lock(&shared.readers) += 1;
    let spawned = {
        let (shared, peer) = (Arc::clone(shared), Arc::clone(&peer));
        thread::Builder::new()
            .name(format!("client-{id}"))
            .stack_size(CLIENT_STACK)
            .spawn(move || connection::serve(shared, peer, sock, addr, lobby))
    };
    if let Err(e) = spawned {
        shared.registry.leave(id);
        stop_awaiting(shared, id);
        let count = shared.registry.len();
        shared.per_address.remove(addr.ip());
        shared.reader_done();
        peer.close(
            "cannot start a thread",
            Some(b"relayd: server out of resources, try again later\n"),
        );
        warn!("client {id} {addr} refused: cannot start a thread: {e} ({count} clients)");
    }
}

/// Adds a client to the registry (and so to the lobby). In chat mode its welcome (and any
/// history) is queued under the registry lock and sent once the lock is free, so nothing
/// relayed can come between them. Returns the lobby's members, or the limit if full.
pub(crate) fn enter(
    shared: &Shared,
    peer: &Arc<Outbound>,
    addr: SocketAddr,
) -> Result<Members, usize> {
    let config = &shared.config;
    let joined = shared
        .registry
        .join(Arc::clone(peer), addr, |name, online| {
            if config.chat {
                chat::welcome(config, name, online)
            } else {
                Vec::new()
            }
        });
    // A fresh socket's buffer is empty, so this does not block the accept loop.
    peer.start_sending();
    add(
        if joined.is_ok() {
            &shared.stats.accepted
        } else {
            &shared.stats.refused_full
        },
        1,
    );
    joined
}

/// A client that has authenticated is no longer waiting to.
pub(crate) fn stop_awaiting(shared: &Shared, id: PeerId) {
    lock(&shared.awaiting_auth).retain(|p| p.id() != id);
}

fn refuse_full(shared: &Shared, sock: &TcpStream, addr: SocketAddr) {
    let max = shared.config.max_clients;
    info!("refused {addr}: server full ({max} clients)");
    shared.per_address.remove(addr.ip());
    refuse(sock, full_notice(&shared.config).as_bytes());
}

/// What a client that finds every `--max-clients` slot taken is told.
pub(crate) fn full_notice(config: &Config) -> String {
    format!(
        "relayd: server full ({} clients){}",
        config.max_clients,
        config.eol()
    )
}

/// Tells a client why it is not served, and closes it. A fresh socket's buffer is empty, so
/// the send never blocks the accept loop.
fn refuse(sock: &TcpStream, notice: &[u8]) {
    let _ = send_dontwait(sock, notice);
    let _ = sock.shutdown(SocketShutdown::Write);
}

fn configure(sock: &TcpStream, config: &Config) -> io::Result<()> {
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

/// Raises the soft limit on open descriptors to the hard limit (one descriptor per client)
/// and returns the limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
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
