//! Talking to the service manager (systemd, or anything that speaks its protocols): readiness,
//! status, stopping and reloading notifications, the watchdog, and socket activation.
//!
//! Without `NOTIFY_SOCKET` in the environment every notification is a no-op, so relayd run by
//! hand or under any other supervisor behaves as before.
//!
//! The watchdog is fed from the accept loops, not from a timer of its own: a timer thread
//! would keep reporting "alive" while the daemon is wedged. Each accept loop wakes at least
//! every [`Notifier::tick_interval`] (a receive timeout on its listener) and reports in; a
//! ping goes out only when every loop has reported in recently, and only after the registry
//! answered (the client count is read under its lock), so a stuck accept loop or a
//! deadlocked registry stops the pings and systemd restarts the daemon.

use std::env;
use std::io;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{debug, warn};
use sd_notify::NotifyState;
use socket2::{Domain, SockRef, Type};

use crate::sync::lock;
use crate::sys;

/// How often the status line may change: systemd keeps every update, and `systemctl status`
/// is read by people.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The longest an accept loop blocks before reporting in.
const MAX_TICK: Duration = Duration::from_secs(1);

/// Notifications to the service manager.
pub(crate) struct Notifier {
    /// Whether a service manager listens (`NOTIFY_SOCKET` is set).
    active: bool,
    /// `WATCHDOG_USEC`: the manager restarts the daemon after this long without a ping.
    watchdog: Option<Duration>,
    state: Mutex<State>,
}

struct State {
    /// When each accept loop last reported in, by the index [`Notifier::add_loop`] gave it.
    beats: Vec<Instant>,
    last_ping: Option<Instant>,
    /// The client count last reported, and when.
    status: Option<(Instant, usize)>,
    /// A failed notification is logged once at warning level, then at debug level.
    warned: bool,
}

impl Notifier {
    pub(crate) fn from_env() -> Notifier {
        let active = env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero() && active);
        Notifier {
            active,
            watchdog,
            state: Mutex::new(State {
                beats: Vec::new(),
                last_ping: None,
                status: None,
                warned: false,
            }),
        }
    }

    /// How long an accept loop may block before it reports in: often enough for a ping every
    /// half watchdog period, with room for one slow admission.
    pub(crate) fn tick_interval(&self) -> Duration {
        match self.watchdog {
            Some(wd) => (wd / 4).clamp(Duration::from_millis(10), MAX_TICK),
            None => MAX_TICK,
        }
    }

    /// Registers an accept loop; the watchdog waits for it from now on.
    pub(crate) fn add_loop(&self) -> usize {
        let mut st = lock(&self.state);
        st.beats.push(Instant::now());
        st.beats.len() - 1
    }

    /// Every listener is bound and the control socket open: `READY=1`.
    pub(crate) fn ready(&self, clients: usize) {
        let status = status(clients);
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        lock(&self.state).status = Some((Instant::now(), clients));
    }

    /// Shutdown has started: `STOPPING=1`.
    pub(crate) fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// A reload has started: `RELOADING=1`, with the `MONOTONIC_USEC` that `Type=notify-reload`
    /// (systemd 253 and later) requires and older managers ignore.
    pub(crate) fn reloading(&self) {
        if !self.active {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// The reload is over, whether it changed anything or not: `READY=1` again.
    pub(crate) fn reloaded(&self, clients: usize) {
        self.ready(clients);
    }

    /// An accept loop reports in. Sends the client count (`clients` is only called when an
    /// update or a ping is due) and the watchdog ping when they are due.
    pub(crate) fn tick(&self, index: usize, clients: impl FnOnce() -> usize) {
        if !self.active {
            return;
        }
        let now = Instant::now();
        let (status_due, ping_due) = {
            let mut st = lock(&self.state);
            if let Some(beat) = st.beats.get_mut(index) {
                *beat = now;
            }
            let status_due = st
                .status
                .is_none_or(|(at, _)| now.duration_since(at) >= STATUS_EVERY);
            let ping_due = self.watchdog.is_some_and(|wd| {
                st.last_ping
                    .is_none_or(|at| now.duration_since(at) >= wd / 2)
                    && st.beats.iter().all(|b| now.duration_since(*b) < wd / 2)
            });
            if ping_due {
                st.last_ping = Some(now);
            }
            (status_due, ping_due)
        };
        if !status_due && !ping_due {
            return;
        }
        // Read without the state lock: it takes the registry's lock, which is the point.
        let clients = clients();
        if status_due {
            let changed = {
                let mut st = lock(&self.state);
                let changed = st.status.is_none_or(|(_, n)| n != clients);
                if changed {
                    st.status = Some((now, clients));
                }
                changed
            };
            if changed {
                self.send(&[NotifyState::Status(&status(clients))]);
            }
        }
        if ping_due {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.active {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            let mut st = lock(&self.state);
            if st.warned {
                debug!("cannot notify the service manager: {e}");
            } else {
                st.warned = true;
                warn!("cannot notify the service manager: {e}");
            }
        }
    }
}

fn status(clients: usize) -> String {
    format!("{clients} clients")
}

/// What a socket passed by the service manager is for, by its `FileDescriptorName=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain TCP clients: named `relay` or `tcp`; also a socket without a name of its own
    /// (`unknown` from `systemd-socket-activate`, the unit's name such as `relayd.socket` from
    /// a socket unit without `FileDescriptorName=`).
    Relay,
    /// Browsers (the page and WebSocket clients), like `--ws-bind`: named `ws`.
    Ws,
    /// The Prometheus endpoint, like `--metrics`: named `metrics`.
    Metrics,
}

impl Kind {
    fn of(name: &str) -> Option<Kind> {
        match name {
            "relay" | "tcp" | "unknown" | "" => Some(Kind::Relay),
            "metrics" => Some(Kind::Metrics),
            "ws" => Some(Kind::Ws),
            n if n.ends_with(".socket") => Some(Kind::Relay),
            _ => None,
        }
    }
}

/// The listening sockets the service manager passed (`LISTEN_FDS`, `LISTEN_PID`,
/// `LISTEN_FDNAMES`), each with its kind. Empty when relayd was not socket-activated.
///
/// A socket relayd cannot serve is an error rather than a warning: systemd keeps accepting
/// connections on it, and clients would wait forever for an answer that never comes. That
/// includes sockets for a kind of listener relayd does not have and sockets that are not listening TCP stream sockets.
///
/// Call once, at startup: it takes ownership of the descriptors.
pub fn passed_listeners() -> Result<Vec<(Kind, TcpListener)>, String> {
    let passed = sd_notify::listen_fds_with_names()
        .map_err(|e| format!("socket activation: {e}"))?
        .collect::<Vec<_>>();
    let mut listeners = Vec::new();
    for (fd, name) in passed {
        let kind = Kind::of(&name).ok_or_else(|| {
            format!(
                "socket activation: the socket named '{name}' (FileDescriptorName=) is for no \
                 listener relayd has; name plain TCP sockets 'relay', browsers' sockets 'ws' \
                 and the metrics socket 'metrics'"
            )
        })?;
        let listener = sys::take_listener(fd);
        check_listener(&listener)
            .map_err(|e| format!("socket activation: the socket named '{name}': {e}"))?;
        listeners.push((kind, listener));
    }
    Ok(listeners)
}

fn check_listener(listener: &TcpListener) -> io::Result<()> {
    let sock = SockRef::from(listener);
    let ok = sock.r#type()? == Type::STREAM
        && matches!(sock.domain()?, Domain::IPV4 | Domain::IPV6)
        && sock.is_listener()?;
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening TCP socket (use ListenStream= with an IP address and port)",
        ))
    }
}
