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

mod client;
mod cluster;
mod config;
mod daemon;
mod delivery;
mod framing;
mod ops;
mod policy;
mod server;
mod shutdown;
mod stats;
mod sync;
mod sys;
mod systemd;
mod transport;

pub use client::chat::{Input, parse, reserved, valid_name};
pub use cluster::{check_names as check_cluster_names, check_url as check_redis_url};
pub use config::{ClusterConfig, Config};
pub use framing::Framer;
pub use ops::admin::ctl;
pub use ops::reload::Reloads;
pub use policy::access::Rules;
pub use policy::rate::Rate;
pub use policy::settings::Sources;
pub use server::{Listeners, bind, raise_fd_limit, run, serve};
pub use shutdown::Shutdown;
pub use systemd::{Kind, passed_listeners};
pub use transport::ws::check_origin as check_ws_origin;
