//! The accept loop: takes connections from a listener, admits them or tells them why not,
//! and starts a thread for each client admitted.
//!
//! On a `--ws-bind` listener the thread starts first: it reads the HTTP request (up to
//! `http::HEAD_TIMEOUT`, which the accept loop must not wait for), serves the page or does
//! the WebSocket handshake, and only then is the client admitted, so that nothing is queued
//! for it before the handshake's answer is on the wire.
//!
//! A connection from a `--proxy-protocol` peer is admitted by the client's address its
//! header gives, so the header is read before admission, on a thread of the connection's
//! own like the HTTP request (up to `proxy::HEADER_TIMEOUT`): on `--ws-bind` the request's
//! thread, which reads it first; on `--bind` a `proxy-ADDR` thread that ends once the client
//! is admitted. Nobody else's connection costs a thread before admission.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::thread;
use std::time::Duration;

use log::{debug, error, info, warn};
use socket2::SockRef;

use crate::client::{self, Transport, Upgrade};
use crate::config::Config;
use crate::daemon::{Daemon, Refusal, Slot};
use crate::delivery::chunk::{Chunk, Format};
use crate::delivery::notice::Departure;
use crate::delivery::ws_frame;
use crate::policy::access::PerAddress;
use crate::sync::Counted;
use crate::transport::http;
use crate::transport::proxy;
use crate::transport::tcp::{self, Tcp};
use crate::transport::ws::{self, Ws};

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Plain TCP clients (`--bind`).
    Tcp,
    /// Browsers: the page and WebSocket clients (`--ws-bind`).
    Ws,
}

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
pub(crate) fn accept_loop(daemon: &Arc<Daemon>, listener: &TcpListener, kind: Kind, watch: usize) {
    let notifier = daemon.notifier();
    // Accepted sockets inherit this timeout; `tcp::configure` replaces it with their own.
    if let Err(e) = SockRef::from(listener).set_read_timeout(Some(notifier.tick_interval())) {
        warn!("cannot set the accept timeout: {e}; the watchdog may fire on a quiet port");
    }
    let mut backoff = BACKOFF_MIN;
    // HTTP requests being read, on threads of their own, not yet clients.
    let fronts = Fronts::default();
    loop {
        let accepted = listener.accept();
        if daemon.is_stopping() {
            return;
        }
        match accepted {
            Ok((sock, addr)) => {
                backoff = BACKOFF_MIN;
                let proxied = proxy::trusted(&daemon.config().proxies, addr.ip());
                match kind {
                    Kind::Tcp if proxied => start_proxied(daemon, sock, addr, &fronts),
                    Kind::Tcp => admit(daemon, sock, addr),
                    Kind::Ws => start_front(daemon, sock, addr, &fronts),
                }
            }
            Err(e) if crate::sys::timed_out(&e) => {}
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
    let slot = match daemon.admit(Arc::clone(&sock), addr, Format::Text, false, false) {
        Ok(slot) => slot,
        Err(refusal) => {
            // Someone not allowed at all gets not a byte, not even an error line.
            if let Some(notice) = refusal_notice(daemon, addr, refusal) {
                tcp::refuse(&sock, &notice);
            }
            return;
        }
    };
    log_connected(daemon, slot.peer().id(), addr, "");
    start_client(
        daemon,
        slot,
        addr,
        Transport::Tcp(Tcp::new(sock)),
        Upgrade::default(),
    );
}

/// Reads a trusted proxy's header on a thread of its own, then admits the client by the
/// address the header gives (its rules, its limit, its log lines and `clients` row).
fn start_proxied(daemon: &Arc<Daemon>, sock: TcpStream, proxy: SocketAddr, fronts: &Fronts) {
    let Some(front) = fronts.enter(proxy, daemon.config()) else {
        return;
    };
    let daemon = Arc::clone(daemon);
    spawn(format!("proxy-{proxy}"), proxy, move || {
        let addr = real_address(&sock, proxy, true);
        drop(front);
        if let Some(addr) = addr {
            admit(&daemon, sock, addr);
        }
    });
}

/// Starts a thread for the connection from `addr` before it is a client (its stack is a
/// client's: it may go on as one); logs it if none can start.
fn spawn(name: String, addr: SocketAddr, run: impl FnOnce() + Send + 'static) {
    let spawned = thread::Builder::new()
        .name(name)
        .stack_size(CLIENT_STACK)
        .spawn(run);
    if let Err(e) = spawned {
        warn!("{addr} refused: cannot start a thread: {e}");
    }
}

/// The address of the client behind the trusted proxy at `proxy`, from its PROXY header
/// (the proxy's own for a health check); `None`, logged and closed, if the header is bad.
/// `required`: see `proxy::read_header`.
fn real_address(sock: &TcpStream, proxy: SocketAddr, required: bool) -> Option<SocketAddr> {
    match proxy::read_header(sock, required) {
        Ok(addr) => Some(addr.unwrap_or(proxy)),
        Err(why) => {
            if why == proxy::CLOSED {
                debug!("{proxy}: {why}");
            } else {
                warn!("refused {proxy}: {why}");
            }
            let _ = sock.shutdown(std::net::Shutdown::Both);
            None
        }
    }
}

/// Starts the thread that serves an admitted client for the rest of its life.
fn start_client(
    daemon: &Arc<Daemon>,
    mut slot: Slot,
    addr: SocketAddr,
    transport: Transport,
    upgrade: Upgrade,
) {
    let id = slot.peer().id();
    // What the slot says if the thread never runs: the closure, and the slot in it, is
    // dropped at once.
    slot.set_departure(Departure::OutOfThreads);
    let spawned = {
        let daemon = Arc::clone(daemon);
        thread::Builder::new()
            .name(format!("client-{id}"))
            .stack_size(CLIENT_STACK)
            .spawn(move || client::serve(daemon, slot, transport, upgrade))
    };
    if let Err(e) = spawned {
        warn!("client {id} {addr} refused: cannot start a thread: {e}");
    }
}

fn log_connected(daemon: &Daemon, id: u64, addr: SocketAddr, how: &str) {
    info!(
        "client {id} connected from {addr}{how} ({} clients)",
        daemon.client_count()
    );
}

/// The HTTP requests being read on a `--ws-bind` listener: at most `--max-clients` in all
/// and `--max-per-ip` from one address, so that connections that never finish a request
/// cannot pile up threads, nor one address take every place.
#[derive(Default)]
struct Fronts {
    total: Arc<AtomicUsize>,
    per_address: Arc<PerAddress>,
}

/// A request's place among the [`Fronts`], given back when dropped: however its thread
/// ends, a panic or a thread that never started included.
struct Front {
    _total: Counted,
    per_address: Arc<PerAddress>,
    /// Not counted for a trusted proxy, whose address is every client's.
    ip: Option<IpAddr>,
}

impl Fronts {
    fn enter(&self, addr: SocketAddr, config: &Config) -> Option<Front> {
        let Some(total) = Counted::take(&self.total, config.max_clients) else {
            info!("refused {addr}: too many HTTP requests being read");
            return None;
        };
        let proxy = proxy::trusted(&config.proxies, addr.ip());
        if !proxy && !self.per_address.try_add(addr.ip(), config.max_per_ip) {
            let max = config.max_per_ip;
            info!("refused {addr}: more than {max} HTTP requests from this address being read");
            return None;
        }
        Some(Front {
            _total: total,
            per_address: Arc::clone(&self.per_address),
            ip: (!proxy).then_some(addr.ip()),
        })
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.per_address.remove(ip);
        }
    }
}

/// Starts the thread that reads an HTTP request from a `--ws-bind` connection and, if it is
/// a WebSocket, serves the client. At most `--max-clients` requests are read at once, so
/// connections that never send a request cannot pile up threads.
fn start_front(daemon: &Arc<Daemon>, sock: TcpStream, addr: SocketAddr, fronts: &Fronts) {
    // Not a byte for someone who does not belong here, not even an HTTP error. Behind a
    // proxy, that is the client its header names.
    let proxied = proxy::trusted(&daemon.config().proxies, addr.ip());
    if !proxied && !permitted(daemon, addr) {
        return;
    }
    if let Err(e) = tcp::configure(&sock, daemon.config()) {
        debug!("{addr}: cannot configure socket: {e}");
        return;
    }
    let Some(front) = fronts.enter(addr, daemon.config()) else {
        return;
    };
    let daemon = Arc::clone(daemon);
    spawn(format!("http-{addr}"), addr, move || {
        let addr = match proxied {
            true => match real_address(&sock, addr, false) {
                Some(addr) if permitted(&daemon, addr) => addr,
                _ => return,
            },
            false => addr,
        };
        let upgrade = http::front(&sock, addr);
        // A WebSocket client is counted as a client from here on, not as a request.
        drop(front);
        if let Some(head) = upgrade {
            serve_websocket(&daemon, Arc::new(sock), addr, head);
        }
    });
}

/// Whether the rules let `addr` in; logged if not.
fn permitted(daemon: &Daemon, addr: SocketAddr) -> bool {
    let ok = daemon.settings().rules.permits(addr.ip());
    if !ok {
        info!("refused {addr}: not allowed by --allow/--deny");
    }
    ok
}

/// Completes the handshake of a WebSocket request, admits the client and serves it, on the
/// thread that read the request.
fn serve_websocket(daemon: &Arc<Daemon>, sock: Arc<TcpStream>, addr: SocketAddr, head: Vec<u8>) {
    let config = daemon.config();
    let request = http::parse(&head).ok().flatten();
    // `?token=` on the upgrade URL: a browser's `/auth TOKEN`. The query is never logged.
    let param = |name| {
        request
            .as_ref()
            .and_then(|r| http::param(r.query, name))
            .filter(|t| !t.is_empty())
    };
    let mut upgrade = Upgrade {
        token: param("token"),
        room: param("room"),
        since: param("since"),
    };
    // Behind an HTTP proxy: the client it names (no port: the header carries none).
    let addr = match request
        .as_ref()
        .filter(|_| proxy::trusted(&config.proxies, addr.ip()))
    {
        None => addr,
        Some(r) => match proxy::forwarded_for(&r.headers, &config.proxies) {
            Ok(ip) => ip.map_or(addr, |ip| SocketAddr::new(ip, 0)),
            Err(why) => return http::bad_request(&sock, addr, &why),
        },
    };
    drop(request);
    let (socket, format) = match ws::handshake(Arc::clone(&sock), head, config) {
        Ok(done) => done,
        Err(ws::Refused::Answered(why)) => {
            info!("http {addr}: websocket refused: {why}");
            return;
        }
        Err(ws::Refused::Failed(why)) => {
            http::bad_request(&sock, addr, &format!("bad websocket handshake: {why}"));
            return;
        }
    };
    // `?since=` is the subprotocol's: a plain client's replay is the room's `--history`.
    if format != Format::Json {
        upgrade.since = None;
    }
    let token = upgrade.token.is_some();
    let slot = match daemon.admit(Arc::clone(&sock), addr, format, token, upgrade.recovers()) {
        Ok(slot) => slot,
        Err(refusal) => return refuse_websocket(daemon, &sock, addr, refusal, format),
    };
    let id = slot.peer().id();
    log_connected(daemon, id, addr, " over WebSocket");
    let peer = Arc::clone(slot.peer());
    let transport = Transport::Ws(Box::new(Ws::new(socket, Arc::clone(daemon), peer)));
    // The client gets a thread of its own rather than this one: the request and the handshake
    // touched stack pages an idle client would keep for its whole life, and a thread's stack
    // is given back when it ends: 1,000 idle browsers cost 19.2 KiB each so, 33.9 KiB on the
    // thread that did the handshake (2026-12-03).
    start_client(daemon, slot, addr, transport, upgrade);
}

/// Logs why a connection is refused, and returns what it is told (nothing if it is not
/// allowed at all).
fn refusal_notice(daemon: &Daemon, addr: SocketAddr, refusal: Refusal) -> Option<Chunk> {
    let notices = daemon.notices();
    match refusal {
        Refusal::NotAllowed => {
            info!("refused {addr}: not allowed by --allow/--deny");
            None
        }
        Refusal::TooManyFromAddress => {
            let max = daemon.config().max_per_ip;
            info!("refused {addr}: more than {max} connections from this address");
            Some(notices.too_many_from_address())
        }
        Refusal::Full => {
            let max = daemon.config().max_clients;
            info!("refused {addr}: server full ({max} clients)");
            Some(notices.server_full(max))
        }
        Refusal::Banned(text) => {
            info!("refused {addr}: {text}");
            Some(notices.error(text))
        }
    }
}

/// Tells a WebSocket client, which completed its handshake, why it is not served: the
/// notice a TCP client would get, as a text message, then a close frame.
fn refuse_websocket(
    daemon: &Daemon,
    sock: &TcpStream,
    addr: SocketAddr,
    refusal: Refusal,
    format: Format,
) {
    // A ban is a policy refusal; the others say to try again later.
    let code = match refusal {
        Refusal::Banned(_) => 1008,
        _ => 1013,
    };
    let Some(notice) = refusal_notice(daemon, addr, refusal) else {
        let _ = sock.shutdown(std::net::Shutdown::Both);
        return;
    };
    let reason = String::from_utf8_lossy(&notice).trim_end().to_string();
    let mut bytes = Chunk::wire(&notice, format).to_vec();
    bytes.extend_from_slice(&ws_frame::close(code, &reason));
    tcp::refuse(sock, &bytes);
}
