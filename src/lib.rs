//! relayd relays lines between TCP clients: every line one client sends reaches every other
//! connected client.
//!
//! Where to look:
//! - [`server`]: the accept loop and the daemon's lifecycle (start, shutdown).
//! - [`registry`]: who is connected, and [`registry::Registry::deliver`], the one function
//!   that hands a chunk of lines to local peers.
//! - [`connection`]: one client's thread, reading and framing its lines.
//! - [`framing`]: what a line is, and the `--max-line` limit.
//! - [`outbound`]: a peer's queue and writer, and the slow-consumer policy.
//! - [`access`], [`secret`]: who may connect, and the shared secret.
//! - [`config`], [`shutdown`]: the tunables, and the stop handle.
//! - [`chat`]: `--chat` mode: names, rooms, commands, what others see.
//! - [`history`], [`rate`]: `--history` replay and `--rate` flood control.
//! - [`admin`], [`stats`], [`console`]: the operator's control socket, its counters, and
//!   `--console`.

pub mod access;
pub mod admin;
pub mod chat;
pub mod config;
pub mod connection;
pub mod console;
pub mod framing;
pub mod history;
pub mod outbound;
pub mod rate;
pub mod registry;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod stats;
mod sync;

pub use config::Config;
pub use server::{bind, run};
pub use shutdown::Shutdown;
