//! relayd relays lines between TCP clients: every line one client sends reaches every other
//! connected client.
//!
//! Where to look, from the outside in (each module uses only those listed after it):
//! - [`server`]: the daemon's lifecycle (start, shutdown); `accept`: the accept loop.
//! - `client`: one client's life on its own thread (authenticate, read, frame, hand on);
//!   `tcp`: its transport; `telnet`: telnet commands taken out in chat mode.
//! - [`chat`]: `--chat` mode: names, rooms, commands, what others see. [`framing`]: what a
//!   line is, and the `--max-line` limit.
//! - [`admin`], `console`: the operator's control socket and `--console`, which act through
//!   the daemon.
//! - `daemon`: the daemon's shared state behind one handle — admission, relaying, pushes,
//!   kicks — and a client's `Slot`, released on `Drop`.
//! - `registry`: who is connected, in which room, and delivery to them; `peer`: one client's
//!   queue, the deliverer thread that sends what is queued, writers for full sockets, and the
//!   slow-consumer policy; `notice`: every line relayd writes
//!   itself, and why a client left; `echo`: `--console`'s output.
//! - [`reload`]: SIGHUP and the admin `reload`; `metrics`: `--metrics`, the Prometheus
//!   endpoint.
//! - [`access`], [`secret`], [`rate`], `history`, `stats`, [`config`], [`shutdown`]: who may
//!   connect, the shared secret, flood control, room history, counters, tunables, the stop
//!   handle. [`settings`]: the rules, secret and motd a reload reads again; `latency`: the
//!   line-wait histogram; [`systemd`]: readiness, watchdog and socket activation. `sys`:
//!   every `unsafe` system call. `cluster`: `--redis`, the link that relays lines, notices,
//!   presence and names between nodes through Redis; `presence`: who is on the other nodes.

mod accept;
pub mod access;
pub mod admin;
pub mod chat;
mod chunk;
mod client;
mod cluster;
pub mod config;
mod console;
mod daemon;
mod echo;
pub mod framing;
mod history;
mod http;
mod latency;
mod metrics;
mod notice;
mod peer;
mod presence;
pub mod rate;
mod registry;
pub mod reload;
pub mod secret;
pub mod server;
pub mod settings;
pub mod shutdown;
mod stats;
mod sync;
mod sys;
pub mod systemd;
mod tcp;
mod telnet;
mod ws;
mod ws_frame;

pub use cluster::{check_names as check_cluster_names, check_url as check_redis_url};
pub use config::{ClusterConfig, Config};
pub use server::{Listeners, bind, run, serve};
pub use shutdown::Shutdown;
pub use ws::check_origin as check_ws_origin;
