//! How a client's bytes come in, and why a read brought none ([`ReadError`]): plain TCP
//! (`tcp`, with `telnet`'s commands taken out), and browsers through the HTTP front (`http`:
//! the page, upgrades) and WebSocket (`ws`); `proxy`, the client's real address a trusted
//! proxy passes on. `http`'s request reader serves `--metrics` too.

pub(crate) mod http;
pub(crate) mod proxy;
pub(crate) mod tcp;
pub(crate) mod telnet;
pub(crate) mod ws;

use std::io;

use crate::delivery::notice::Departure;

/// Why a read brought no bytes.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The connection failed, or the read timed out (`sys::timed_out`: `--idle-timeout`, the
    /// secret's deadline) or was interrupted.
    Io(io::Error),
    /// The transport's verdict: the client broke its rules and must leave, for this reason.
    Departure(Departure),
}
