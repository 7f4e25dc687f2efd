//! One client's thread: reads from its socket, frames lines, hands them to the registry, and
//! cleans up when the client goes, however it goes (end of input, error, kick, idle, panic).

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, log_enabled, warn};
use memchr::memchr_iter;
use socket2::SockRef;

use crate::chat::Chat;
use crate::console;
use crate::framing::Framer;
use crate::outbound::{Chunk, Outbound};
use crate::rate::Bucket;
use crate::registry::{LOBBY, Members};
use crate::secret;
use crate::server::{self, Shared};
use crate::stats::add;

/// Bytes per `read`. The buffer is heap memory we never initialise ourselves, so an idle
/// client's buffer costs no resident memory; only the pages the kernel writes into do. (On the
/// stack it would cost all of it: Rust probes every page of a large stack frame.)
const READ_BUF: usize = 16 * 1024;

/// What a client's lines mean: a raw byte pipe (the default) or chat (`--chat`).
enum Mode {
    /// The flood control bucket, with `--rate`.
    Raw(Option<Bucket>),
    Chat(Chat),
}

/// Serves one client until it leaves. Runs on the client's own thread. `lobby` is who was
/// in the lobby when it joined, itself included; `None` if it has yet to authenticate, and
/// join, with `--secret-file`.
pub fn serve(
    shared: Arc<Shared>,
    peer: Arc<Outbound>,
    sock: Arc<TcpStream>,
    addr: SocketAddr,
    lobby: Option<Members>,
) {
    let mut leave = Leave {
        shared: &shared,
        peer: &peer,
        addr,
        reason: "thread panicked".into(),
    };
    let mode = lobby.map(|lobby| Mode::new(&shared, &peer, &lobby));
    leave.reason = relay_lines(&shared, &peer, &sock, addr, mode);
}

impl Mode {
    /// The client's mode, once it has joined; in chat mode the lobby hears of it.
    fn new(shared: &Shared, peer: &Arc<Outbound>, lobby: &Members) -> Mode {
        if shared.config.chat {
            let chat = Chat::new(&shared.config, format!("guest{}", peer.id()));
            chat.announce(shared, peer, lobby);
            Mode::Chat(chat)
        } else {
            Mode::Raw(shared.config.rate.map(Bucket::new))
        }
    }
}

/// The read loop. Returns why the client is leaving. `mode` is `None` until the client has
/// authenticated and joined.
fn relay_lines(
    shared: &Shared,
    peer: &Arc<Outbound>,
    sock: &TcpStream,
    addr: SocketAddr,
    mut mode: Option<Mode>,
) -> String {
    let config = &shared.config;
    let mut framer = Framer::new(config.max_line);
    let mut lines = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut auth = config.secret.as_deref().map(|secret| Auth {
        secret,
        deadline: Instant::now() + config.auth_timeout,
    });
    loop {
        if let Some(auth) = &auth {
            // Until the secret arrives the read timeout counts down to its deadline.
            let left = auth.deadline.saturating_duration_since(Instant::now());
            let _ = sock.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        }
        let data = match recv(sock, buf.spare_capacity_mut()) {
            Ok([]) => {
                return end_of_input(
                    shared,
                    peer,
                    &mut framer,
                    &mut lines,
                    mode.as_mut(),
                    "closed by client",
                );
            }
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if auth.is_some() {
                    peer.push_notice(
                        format!("relayd: authentication timeout{}", config.eol()).as_bytes(),
                    );
                    return "authentication timeout".into();
                }
                // SO_RCVTIMEO is otherwise only set when `--idle-timeout` is.
                peer.push_notice(format!("relayd: idle timeout{}", config.eol()).as_bytes());
                return "idle timeout".into();
            }
            // A reset is the client leaving too, abruptly: what it sent before is kept as
            // with an orderly end of input (the kernel reports a reset on read or, if a send
            // met it first, as end of input: both end the same way).
            Err(e) => {
                let why = format!("read error: {e}");
                return end_of_input(shared, peer, &mut framer, &mut lines, mode.as_mut(), &why);
            }
        };
        add(&shared.stats.bytes_in, data.len() as u64);
        let too_long = framer.feed(data, &mut lines);
        if too_long > 0 {
            add(&shared.stats.too_long, too_long as u64);
        }
        for _ in 0..too_long {
            warn!(
                "client {}: line longer than {} bytes discarded",
                peer.id(),
                config.max_line
            );
            let notice = format!(
                "relayd: line too long (max {} bytes), discarded{}",
                config.max_line,
                config.eol()
            );
            peer.push_notice(notice.as_bytes());
        }
        if let Some(a) = &auth {
            match a.check(&mut lines) {
                None => continue,
                Some(true) => {
                    auth = None;
                    let _ = sock.set_read_timeout(config.idle_timeout);
                    server::stop_awaiting(shared, peer.id());
                    match server::enter(shared, peer, addr) {
                        Ok(lobby) => {
                            // Logged once it is in, so that a log reader can count on it.
                            info!("client {}: authenticated", peer.id());
                            mode = Some(Mode::new(shared, peer, &lobby));
                        }
                        Err(_) => {
                            peer.push_notice(server::full_notice(config).as_bytes());
                            return "server full".into();
                        }
                    }
                }
                Some(false) => {
                    // The secret itself is never logged, not even the wrong one.
                    warn!("client {}: wrong secret", peer.id());
                    peer.push_notice(
                        format!("relayd: authentication failed{}", config.eol()).as_bytes(),
                    );
                    thread::sleep(config.auth_failure_delay);
                    return "authentication failed".into();
                }
            }
        }
        let Some(mode) = &mut mode else {
            continue;
        };
        if shared.shutdown.is_triggered() {
            // What was read before the daemon stopped is delivered; a half line is not.
            framer.drop_partial();
            relay(shared, peer, mode, &mut lines);
            return "shutdown".into();
        }
        if let Some(reason) = relay(shared, peer, mode, &mut lines) {
            return reason;
        }
    }
}

/// The client's input has ended (`why`): an unfinished line is completed with `\n` and
/// relayed, unless the daemon closed this client itself, is shutting down (a half line read
/// then is dropped), or the client never authenticated. Returns why the client is leaving.
fn end_of_input(
    shared: &Shared,
    peer: &Arc<Outbound>,
    framer: &mut Framer,
    lines: &mut Vec<u8>,
    mode: Option<&mut Mode>,
    why: &str,
) -> String {
    if let Some(reason) = peer.cut_off_reason() {
        return reason;
    }
    if shared.shutdown.is_triggered() {
        return "shutdown".into();
    }
    let Some(mode) = mode else {
        return format!("{why} before authenticating");
    };
    framer.finish(lines);
    relay(shared, peer, mode, lines).unwrap_or_else(|| why.to_string())
}

/// A client that still owes the shared secret.
struct Auth<'a> {
    secret: &'a [u8],
    deadline: Instant,
}

impl Auth<'_> {
    /// Takes the first line, if one is complete, out of `lines` and says whether it is the
    /// secret. `None`: no complete line yet.
    fn check(&self, lines: &mut Vec<u8>) -> Option<bool> {
        let end = memchr::memchr(b'\n', lines)?;
        let ok = secret::matches(self.secret, &lines[..=end]);
        lines.drain(..=end);
        Some(ok)
    }
}

/// Hands on the complete lines of one read. Returns the reason if the client quit.
fn relay(
    shared: &Shared,
    peer: &Arc<Outbound>,
    mode: &mut Mode,
    lines: &mut Vec<u8>,
) -> Option<String> {
    if lines.is_empty() {
        return None;
    }
    let n = memchr_iter(b'\n', lines).count();
    peer.count_in(n as u64);
    add(&shared.stats.lines_in, n as u64);
    match mode {
        Mode::Raw(bucket) => relay_raw(shared, peer, bucket.as_mut(), lines, n),
        Mode::Chat(chat) => {
            let quit = chat.handle(shared, peer, lines);
            lines.clear();
            return quit;
        }
    }
    None
}

/// Forwards the complete lines (`n` of them) of one read as a single shared chunk, byte for
/// byte, less those over the rate limit.
fn relay_raw(
    shared: &Shared,
    peer: &Arc<Outbound>,
    bucket: Option<&mut Bucket>,
    lines: &mut Vec<u8>,
    mut n: usize,
) {
    if let Some(bucket) = bucket {
        let now = Instant::now();
        let allowed = bucket.take(n, now);
        if allowed < n {
            // The excess is the tail of this read: keep the first `allowed` lines.
            let cut = match allowed {
                0 => 0,
                k => memchr_iter(b'\n', lines).nth(k - 1).map_or(0, |i| i + 1),
            };
            lines.truncate(cut);
            if let Some(warning) = bucket.warning(now) {
                info!("client {}: over the rate limit, dropping lines", peer.id());
                peer.push_notice(format!("{warning}\n").as_bytes());
            }
            add(&shared.stats.dropped_rate_limit, (n - allowed) as u64);
            n = allowed;
            if n == 0 {
                return;
            }
        }
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
    if shared.config.console {
        console::echo(peer.id(), &chunk);
    }
    shared.registry.deliver(LOBBY, Some(peer.id()), &chunk, n);
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
        let stopping = shared.shutdown.is_triggered();
        server::stop_awaiting(shared, self.peer.id());
        shared.per_address.remove(self.addr.ip());
        if self.reason == "idle timeout" {
            add(&shared.stats.idle_kicks, 1);
        } else if self.reason.starts_with("too slow (write timeout") {
            // Cut off by its own writer; those cut off by a sender are counted there.
            add(&shared.stats.slow_consumer_kicks, 1);
        }
        if stopping {
            // The server's shutdown sequence flushes, notifies and closes every registered
            // peer itself, and lines other readers relay until it does must still reach this
            // one: it stays registered. (Leaving here, a reader that read once more after the
            // signal missed those lines, and the notice if it left before the server took
            // its list of peers.)
        } else {
            // The slot is free before the flush, so whoever pressed Ctrl-C can reconnect at
            // once.
            let left = shared.registry.leave(self.peer.id());
            if let (true, Some(left)) = (shared.config.chat, left) {
                let eol = shared.config.eol();
                let notice = format!(
                    "* {} left ({}) ({} online){eol}",
                    left.name,
                    self.reason,
                    left.members.online()
                );
                shared
                    .registry
                    .notify(&left.members, None, &Chunk::from(notice.as_bytes()));
            }
            self.peer
                .flush(Instant::now() + shared.config.write_timeout);
            self.peer.close(&self.reason, None);
        }
        let count = shared.registry.len();
        info!(
            "client {} {} disconnected: {} ({count} clients)",
            self.peer.id(),
            self.addr,
            self.reason
        );
        shared.reader_done();
    }
}
