//! The operator's control socket (`--admin PATH`) and its client (`relayd ctl`). Its verbs and
//! the HTTP API's endpoints (`api/`) call the same daemon commands.
//!
//! A Unix socket rather than a TCP port: file permissions (mode 0600) decide who may kick and
//! push, with no password to manage, and it cannot be reached from the network by mistake.
//!
//! The protocol is made for both people (`nc -U PATH`) and scripts: one command per line, as
//! many per connection as wanted; every answer ends with an empty line, so a script knows
//! where it stops; actions answer `ok` or `error: …`.
//!
//! Each admin connection gets a thread of its own: there are a handful at most, and it keeps
//! the control path as plain blocking code as the client path. At most [`MAX_CONNECTIONS`]
//! are served at once, and one that sends nothing for `--admin-idle-timeout` is closed, so
//! forgotten `nc -U` sessions cannot lock the operator out.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown as SocketShutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, info, warn};
use socket2::SockRef;

use crate::daemon::{Daemon, Found};
use crate::ops::reload;
use crate::policy::moderation::Kind;
use crate::sync::lock;
use crate::sys;

/// Longest command line accepted.
const MAX_COMMAND: u64 = 64 * 1024;
/// Admin connections served at once; more are told to come back later.
const MAX_CONNECTIONS: usize = 16;

const HELP: &str = "\
clients                    one line per client: id address name room seconds lines_in lines_out bytes_pending transport user dropped
kick ID|NAME [REASON]      disconnect a client, telling it and its room why
broadcast TEXT             push TEXT to every client
send ID|NAME TEXT          push TEXT to one client
publish ROOM TEXT          push TEXT to everyone in ROOM
publish-as ROOM NAME TEXT  say TEXT in ROOM as NAME (kept in its history)
presence ROOM              one line per member: id name transport node
rooms                      one line per room: room members
history ROOM               the lines ROOM's history keeps, oldest first: id line
recall ROOM ID             take line ID back: out of ROOM's history, off its JSON clients' screens
live ROOM on|off           make ROOM live (no sender waits; viewers shown --live-rate) or lossless
stats                      counters, one 'key value' line each
ban TARGET [DURATION] [REASON]   ban a user (sub or guest name) or address/network: 30s 10m 2h 7d,
                           none: until lifted; closes its connections
unban TARGET               lift a ban
mute TARGET [DURATION] [REASON]  nothing it sends is relayed
unmute TARGET              lift a mute
bans                       bans and mutes in force: kind target until by reason
op NAME ROOM               make a user (sub or guest name) a moderator of ROOM
deop NAME ROOM             no longer
reload                     read --allow-file, --deny-file, --secret-file, --motd, the token keys
                           and --api-key-file again
help                       this list
";

/// Opens the control socket at `path`, readable and writable by the daemon's user only.
/// A socket file left by a crashed run is replaced; one that a live daemon answers on is an
/// error, as is any other kind of file.
pub(crate) fn open(path: &Path) -> io::Result<UnixListener> {
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

/// Binds mode 0600 from the start. This runs before any client thread exists, so the
/// process-wide umask it changes for a moment affects nothing else.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    sys::bind_unix_private(path)
}

/// The running control socket.
pub(crate) struct Admin {
    path: PathBuf,
    /// The socket file we created, as (device, inode).
    file: (u64, u64),
    listener: Arc<UnixListener>,
    thread: JoinHandle<()>,
    connections: Connections,
}

/// Open admin connections, so that shutdown can end them.
type Connections = Arc<Mutex<HashMap<u64, UnixStream>>>;

/// Serves `listener` (from [`open`]) on its own thread until [`Admin::stop`].
pub(crate) fn start(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    path: PathBuf,
) -> io::Result<Admin> {
    let listener = Arc::new(listener);
    let connections = Connections::default();
    let thread = {
        let (listener, connections) = (Arc::clone(&listener), Arc::clone(&connections));
        thread::Builder::new()
            .name("admin".into())
            .spawn(move || accept_loop(&daemon, &listener, &connections))?
    };
    info!("admin socket at {}", path.display());
    let meta = fs::symlink_metadata(&path)?;
    Ok(Admin {
        file: (meta.dev(), meta.ino()),
        path,
        listener,
        thread,
        connections,
    })
}

impl Admin {
    /// Stops accepting, ends open admin connections and removes the socket file. Call after
    /// the shutdown handle was triggered.
    ///
    /// Never through the path: by now it may belong to another daemon (someone removed our
    /// file and started a second one on the same path), which must neither be woken nor lose
    /// its socket file.
    pub(crate) fn stop(self) {
        // Wakes the accept loop: on Linux accept(2) returns EINVAL once the listening socket
        // is shut down, Unix sockets as TCP ones.
        let _ = SockRef::from(&*self.listener).shutdown(SocketShutdown::Both);
        let _ = self.thread.join();
        for conn in lock(&self.connections).values() {
            let _ = conn.shutdown(SocketShutdown::Both);
        }
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.file => {
                if let Err(e) = fs::remove_file(&self.path) {
                    warn!("cannot remove admin socket {}: {e}", self.path.display());
                }
            }
            Ok(_) => warn!(
                "admin socket {} is no longer ours: left in place",
                self.path.display()
            ),
            Err(_) => {}
        }
    }
}

fn accept_loop(daemon: &Arc<Daemon>, listener: &UnixListener, connections: &Connections) {
    let mut next = 0u64;
    loop {
        let accepted = listener.accept();
        if daemon.is_stopping() {
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
        let (id, daemon, conns) = (next, Arc::clone(daemon), Arc::clone(connections));
        let spawned = thread::Builder::new()
            .name(format!("admin-{id}"))
            .spawn(move || {
                if let Err(e) = serve(&daemon, stream) {
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

/// Answers the commands of one admin connection until it closes or stays idle too long.
fn serve(daemon: &Daemon, stream: UnixStream) -> io::Result<()> {
    stream.set_read_timeout(Some(daemon.config().admin_idle_timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut reader).take(MAX_COMMAND).read_until(b'\n', &mut line) {
            Ok(n) => n,
            Err(e) if crate::sys::timed_out(&e) => {
                writer.write_all(b"error: idle timeout\n\n")?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if n == 0 || daemon.is_stopping() {
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
        let mut answer = execute(daemon, command);
        answer.push('\n');
        writer.write_all(answer.as_bytes())?;
    }
}

/// Runs one command; the answer ends with `\n` (the caller adds the empty line).
fn execute(daemon: &Daemon, command: &str) -> String {
    let (verb, arg) = split_word(command);
    match verb {
        "clients" => {
            let mut out = String::new();
            for c in daemon.clients() {
                let (lines_in, lines_out) = c.peer.line_counts();
                out.push_str(&format!(
                    "{} {} {} {} {} {lines_in} {lines_out} {} {} {} {}\n",
                    c.id,
                    c.addr,
                    c.name,
                    // Not authenticated yet: in no room.
                    c.room.as_deref().unwrap_or("-"),
                    c.connected.as_secs(),
                    c.peer.pending(),
                    c.peer.transport(),
                    // A signed-in user's `sub` (never its token); `-` for a guest.
                    c.user.as_ref().map_or("-", |u| &u.sub),
                    // Relayed lines dropped for it in live rooms.
                    c.peer.dropped(),
                ));
            }
            // Other nodes' clients: what their nodes told this one, no more.
            for (node, c) in daemon.clients_elsewhere() {
                out.push_str(&format!(
                    "{}@{node} - {} {} - - - - node:{node} {} -\n",
                    c.id,
                    c.name,
                    c.room,
                    c.user.as_deref().unwrap_or("-")
                ));
            }
            out
        }
        "kick" if !arg.is_empty() => {
            let (target, reason) = split_word(arg);
            let reason = (!reason.is_empty()).then_some(reason);
            match daemon.kick(target, reason) {
                Ok(Found::Here(id, name)) => {
                    info!("admin: kicked client {id} ({name})");
                    "ok\n".into()
                }
                Ok(Found::There(name, node)) => {
                    info!("admin: asked node {node} to kick {name}");
                    format!("ok: {name} is on node {node}, which kicks it\n")
                }
                Err(_) => "error: no such client\n".into(),
            }
        }
        "broadcast" if !arg.is_empty() => {
            let n = daemon.broadcast(arg);
            info!("admin: pushed a line to {n} clients");
            "ok\n".into()
        }
        "send" => {
            let (target, text) = split_word(arg);
            if text.is_empty() {
                return "error: usage: send ID|NAME TEXT\n".into();
            }
            match daemon.push_to(target, text) {
                Ok(Found::Here(..)) => "ok\n".into(),
                Ok(Found::There(name, node)) => {
                    format!("ok: {name} is on node {node}, which sends it\n")
                }
                Err(_) => "error: no such client\n".into(),
            }
        }
        "publish" | "publish-as" => {
            let (room, rest) = split_word(arg);
            let (from, text) = match verb {
                "publish-as" => {
                    let (from, text) = split_word(rest);
                    (Some(from), text)
                }
                _ => (None, rest),
            };
            if text.is_empty() {
                let usage = match from {
                    Some(_) => "error: usage: publish-as ROOM NAME TEXT\n",
                    None => "error: usage: publish ROOM TEXT\n",
                };
                return usage.into();
            }
            match daemon.publish(room, from, text) {
                Ok(_) => "ok\n".into(),
                Err(e) => format!("error: {e}\n"),
            }
        }
        "presence" if !arg.is_empty() => {
            let mut out = String::new();
            for m in daemon.presence(arg) {
                out.push_str(&format!(
                    "{} {} {} {} {}\n",
                    m.client,
                    m.name,
                    m.transport.unwrap_or("-"),
                    m.node.as_deref().unwrap_or("-"),
                    m.user.as_deref().unwrap_or("-"),
                ));
            }
            out
        }
        "rooms" => daemon
            .rooms()
            .into_iter()
            .map(|(room, n)| format!("{room} {n}\n"))
            .collect(),
        "history" if !arg.is_empty() => daemon
            .history(arg)
            .into_iter()
            .map(|(id, line)| match id {
                Some(id) => format!("{id} {line}\n"),
                None => format!("- {line}\n"),
            })
            .collect(),
        "recall" if !split_word(arg).1.is_empty() => {
            let (room, id) = split_word(arg);
            match daemon.recall(room, id, "operator") {
                Ok(true) => "ok\n".into(),
                Ok(false) => format!("ok: {id} was no longer in {room}'s history\n"),
                Err(e) => format!("error: {e}\n"),
            }
        }
        "live" => live(daemon, arg),
        "stats" => daemon.stats_report(),
        "reload" => match reload::reload(daemon) {
            Ok(done) => format!("ok: {done}\n"),
            Err(e) => format!("error: reload failed, keeping the previous settings: {e}\n"),
        },
        "ban" | "mute" | "unban" | "unmute" if !arg.is_empty() => moderate(daemon, verb, arg),
        "bans" => daemon
            .bans()
            .into_iter()
            .map(|e| {
                // A room's moderator's: `ban@dev`, as the state and Redis keys name it.
                let kind = match &e.room {
                    Some(room) => format!("{}@{room}", e.kind.as_str()),
                    None => e.kind.as_str().to_string(),
                };
                format!(
                    "{kind} {} {} {} {}\n",
                    e.target,
                    e.until_text().as_deref().unwrap_or("-"),
                    e.by,
                    e.reason.as_deref().unwrap_or("-"),
                )
            })
            .collect(),
        "op" | "deop" if !split_word(arg).1.is_empty() => {
            let (user, room) = split_word(arg);
            match daemon.op(user, room, verb == "op", "operator") {
                Ok(()) => "ok\n".into(),
                Err(e) => format!("error: {e}\n"),
            }
        }
        "help" => HELP.into(),
        "ban" | "mute" => format!("error: usage: {verb} TARGET [DURATION] [REASON]\n"),
        "unban" | "unmute" => format!("error: usage: {verb} TARGET\n"),
        "kick" => "error: usage: kick ID|NAME [REASON]\n".into(),
        "op" | "deop" => format!("error: usage: {verb} NAME ROOM\n"),
        "broadcast" => "error: usage: broadcast TEXT\n".into(),
        "presence" => "error: usage: presence ROOM\n".into(),
        "history" => "error: usage: history ROOM\n".into(),
        "recall" => "error: usage: recall ROOM ID\n".into(),
        _ => "error: unknown command\n".into(),
    }
}

/// `ban`, `mute` (`TARGET [DURATION] [REASON]`: a second word starting with a digit is a
/// duration), `unban`, `unmute` (`TARGET`).
fn moderate(daemon: &Daemon, verb: &str, arg: &str) -> String {
    let (target, rest) = split_word(arg);
    let (kind, lift) = match verb {
        "ban" => (Kind::Ban, false),
        "unban" => (Kind::Ban, true),
        "mute" => (Kind::Mute, false),
        _ => (Kind::Mute, true),
    };
    if lift {
        return match daemon.lift(kind, target, "operator") {
            Ok(()) => "ok\n".into(),
            Err(e) => format!("error: {e}\n"),
        };
    }
    let (word, after) = split_word(rest);
    let (duration, reason) = match word.starts_with(|c: char| c.is_ascii_digit()) {
        true => (Some(word), after),
        false => (None, rest),
    };
    let reason = (!reason.is_empty()).then_some(reason);
    match daemon.moderate(kind, target, duration, reason, "operator") {
        Ok((entry, closed)) => {
            let until = entry.until_text().unwrap_or_else(|| "lifted".into());
            match kind {
                Kind::Ban => format!(
                    "ok: {} banned until {until}, {closed} connections closed\n",
                    entry.target
                ),
                Kind::Mute => format!("ok: {} muted until {until}\n", entry.target),
            }
        }
        Err(e) => format!("error: {e}\n"),
    }
}

/// `live ROOM on|off`.
fn live(daemon: &Daemon, arg: &str) -> String {
    let (room, word) = split_word(arg);
    let on = match word {
        "on" => true,
        "off" => false,
        _ => return "error: usage: live ROOM on|off\n".into(),
    };
    match daemon.set_live(room, on) {
        Ok(_) => "ok\n".into(),
        Err(_) => "error: a room is 1-32 letters, digits, _ - .\n".into(),
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
/// without its closing empty line. A command with a line break in it is refused: the socket
/// would read it as two commands.
pub fn ctl(path: &Path, command: &str) -> io::Result<String> {
    if command.contains(['\n', '\r']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a command cannot contain a line break",
        ));
    }
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // A daemon that refuses the connection (too many admin connections) answers and closes
    // at once, often before the command is written: its answer, still readable, says more
    // than the write's `Broken pipe`.
    let written = stream.write_all(format!("{command}\n").as_bytes());
    let mut answer = String::new();
    for line in BufReader::new(stream).lines() {
        let line = match (line, &written) {
            (Ok(line), _) => line,
            (Err(e), Ok(())) => return Err(e),
            (Err(_), Err(_)) => break,
        };
        if line.is_empty() {
            break;
        }
        answer.push_str(&line);
        answer.push('\n');
    }
    match written {
        Err(e) if answer.is_empty() => Err(e),
        _ => Ok(answer),
    }
}
