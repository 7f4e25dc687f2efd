//! The operator's control socket (`--admin PATH`) and its client (`relayd ctl`).
//!
//! A Unix socket rather than a TCP port: file permissions (mode 0600) decide who may kick and
//! push, with no password to manage, and it cannot be reached from the network by mistake.
//!
//! The protocol is made for both people (`nc -U PATH`) and scripts: one command per line, as
//! many per connection as wanted; every answer ends with an empty line, so a script knows
//! where it stops; actions answer `ok` or `error: …`.
//!
//! Each admin connection gets a thread of its own: there are a handful at most, and it keeps
//! the control path as plain blocking code as the client path.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown as SocketShutdown;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, info, warn};

use crate::chat;
use crate::outbound::Chunk;
use crate::server::Shared;
use crate::stats::add;
use crate::sync::lock;

/// Longest command line accepted.
const MAX_COMMAND: u64 = 64 * 1024;
/// Admin connections served at once; more are told to come back later.
const MAX_CONNECTIONS: usize = 16;

const HELP: &str = "\
clients                    one line per client: id address name room seconds lines_in lines_out bytes_pending
kick ID|NAME [REASON]      disconnect a client, telling it and its room why
broadcast TEXT             push TEXT to every client
send ID|NAME TEXT          push TEXT to one client
stats                      counters, one 'key value' line each
help                       this list
";

/// Opens the control socket at `path`, readable and writable by the daemon's user only.
/// A socket file left by a crashed run is replaced; one that a live daemon answers on is an
/// error, as is any other kind of file.
pub fn open(path: &Path) -> io::Result<UnixListener> {
    let listener = match bind_private(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let meta = fs::symlink_metadata(path)?;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running daemon", path.display()),
                ));
            }
            info!("replacing stale admin socket {}", path.display());
            fs::remove_file(path)?;
            bind_private(path)?
        }
        other => other?,
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Binds with a umask that leaves the socket file mode 0600 from the start, so there is no
/// moment at which others could connect. This runs before any client thread exists.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    // SAFETY: umask only swaps the process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    bound
}

/// The running control socket.
pub struct Admin {
    path: PathBuf,
    listener: Arc<UnixListener>,
    thread: JoinHandle<()>,
    connections: Connections,
}

/// Open admin connections, so that shutdown can end them.
type Connections = Arc<Mutex<HashMap<u64, UnixStream>>>;

/// Serves `listener` (from [`open`]) on its own thread until [`Admin::stop`].
pub fn start(shared: Arc<Shared>, listener: UnixListener, path: PathBuf) -> io::Result<Admin> {
    let listener = Arc::new(listener);
    let connections = Connections::default();
    let thread = {
        let (listener, connections) = (Arc::clone(&listener), Arc::clone(&connections));
        thread::Builder::new()
            .name("admin".into())
            .spawn(move || accept_loop(&shared, &listener, &connections))?
    };
    info!("admin socket at {}", path.display());
    Ok(Admin {
        path,
        listener,
        thread,
        connections,
    })
}

impl Admin {
    /// Stops accepting, ends open admin connections and removes the socket file. Call after
    /// the shutdown handle was triggered.
    pub fn stop(self) {
        // A connection wakes the accept loop, which then sees the shutdown; shutting the
        // listener down is the fallback if the file is already gone.
        if UnixStream::connect(&self.path).is_err() {
            // SAFETY: plain syscall on a descriptor we own.
            unsafe {
                libc::shutdown(
                    std::os::fd::AsRawFd::as_raw_fd(&*self.listener),
                    libc::SHUT_RDWR,
                )
            };
        }
        let _ = self.thread.join();
        for conn in lock(&self.connections).values() {
            let _ = conn.shutdown(SocketShutdown::Both);
        }
        if let Err(e) = fs::remove_file(&self.path) {
            warn!("cannot remove admin socket {}: {e}", self.path.display());
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener, connections: &Connections) {
    let mut next = 0u64;
    loop {
        let accepted = listener.accept();
        if shared.shutdown.is_triggered() {
            return;
        }
        let mut stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("admin accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let registered = stream.try_clone().map(|clone| {
            let mut conns = lock(connections);
            if conns.len() >= MAX_CONNECTIONS {
                return false;
            }
            next += 1;
            conns.insert(next, clone);
            true
        });
        if !matches!(registered, Ok(true)) {
            let _ = stream.write_all(b"error: too many admin connections\n\n");
            continue;
        }
        let (id, shared, conns) = (next, Arc::clone(shared), Arc::clone(connections));
        let spawned = thread::Builder::new()
            .name(format!("admin-{id}"))
            .spawn(move || {
                if let Err(e) = serve(&shared, stream) {
                    debug!("admin connection {id}: {e}");
                }
                lock(&conns).remove(&id);
            });
        if let Err(e) = spawned {
            warn!("cannot start an admin thread: {e}");
            lock(connections).remove(&id);
        }
    }
}

/// Answers the commands of one admin connection until it closes.
fn serve(shared: &Shared, stream: UnixStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_COMMAND)
            .read_until(b'\n', &mut line)?;
        if n == 0 || shared.shutdown.is_triggered() {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && n as u64 == MAX_COMMAND {
            writer.write_all(b"error: command too long\n\n")?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let command = text.trim_end_matches(['\n', '\r']).trim();
        if command.is_empty() {
            continue;
        }
        let mut answer = execute(shared, command);
        answer.push('\n');
        writer.write_all(answer.as_bytes())?;
    }
}

/// Runs one command; the answer ends with `\n` (the caller adds the empty line).
fn execute(shared: &Shared, command: &str) -> String {
    let (verb, arg) = split_word(command);
    match verb {
        "clients" => {
            let mut out = String::new();
            for c in shared.registry.clients() {
                let (lines_in, lines_out) = c.peer.line_counts();
                out.push_str(&format!(
                    "{} {} {} {} {} {lines_in} {lines_out} {}\n",
                    c.id,
                    c.addr,
                    c.name,
                    c.room,
                    c.connected.as_secs(),
                    c.peer.pending(),
                ));
            }
            out
        }
        "kick" if !arg.is_empty() => {
            let (target, reason) = split_word(arg);
            let Some((name, peer)) = shared.registry.find(target) else {
                return "error: no such client\n".into();
            };
            let eol = shared.config.eol();
            let (why, notice) = if reason.is_empty() {
                (
                    "kicked by operator".to_string(),
                    format!("relayd: kicked by operator{eol}"),
                )
            } else {
                (
                    format!("kicked by operator: {reason}"),
                    format!("relayd: kicked by operator: {reason}{eol}"),
                )
            };
            if !peer.close(&why, Some(notice.as_bytes())) {
                return "error: no such client\n".into();
            }
            info!("admin: kicked client {} ({name}): {why}", peer.id());
            "ok\n".into()
        }
        "broadcast" if !arg.is_empty() => {
            let n = broadcast(shared, arg);
            info!("admin: pushed a line to {n} clients");
            "ok\n".into()
        }
        "send" => {
            let (target, text) = split_word(arg);
            if text.is_empty() {
                return "error: usage: send ID|NAME TEXT\n".into();
            }
            let Some((_, peer)) = shared.registry.find(target) else {
                return "error: no such client\n".into();
            };
            let chunk = push_line(shared, text);
            add(&shared.stats.bytes_out, chunk.len() as u64);
            peer.push_notice(&chunk);
            "ok\n".into()
        }
        "stats" => {
            let registry = &shared.registry;
            shared.stats.report(registry.len(), registry.rooms().len())
        }
        "help" => HELP.into(),
        "kick" => "error: usage: kick ID|NAME [REASON]\n".into(),
        "broadcast" => "error: usage: broadcast TEXT\n".into(),
        _ => "error: unknown command\n".into(),
    }
}

/// Pushes `text` to every client, as a server line; returns to how many.
pub fn broadcast(shared: &Shared, text: &str) -> usize {
    let chunk = push_line(shared, text);
    let peers = shared.registry.peers();
    for peer in &peers {
        peer.push_notice(&chunk);
    }
    add(&shared.stats.bytes_out, (chunk.len() * peers.len()) as u64);
    peers.len()
}

/// An operator's push as a client sees it: `* [server] TEXT` in chat mode (cleaned like any
/// chat line), the bare line in raw mode.
fn push_line(shared: &Shared, text: &str) -> Chunk {
    let config = &shared.config;
    if config.chat {
        let text = chat::clean(text.as_bytes());
        Chunk::from(format!("* [server] {text}{}", config.eol()).as_bytes())
    } else {
        Chunk::from(format!("{text}\n").as_bytes())
    }
}

/// The first word and the (trimmed) rest.
fn split_word(s: &str) -> (&str, &str) {
    match s.split_once([' ', '\t']) {
        Some((word, rest)) => (word, rest.trim()),
        None => (s, ""),
    }
}

/// `relayd ctl`: sends one command to the control socket at `path` and returns the answer
/// without its closing empty line.
pub fn ctl(path: &Path, command: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        answer.push_str(&line);
        answer.push('\n');
    }
    Ok(answer)
}
