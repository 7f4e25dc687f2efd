//! How a client's bytes come in: plain TCP (`tcp`, with `telnet`'s commands taken out), and
//! browsers through the HTTP front (`http`: the page, upgrades) and WebSocket (`ws`).
//! `http`'s request reader serves `--metrics` too.

pub(crate) mod http;
pub(crate) mod tcp;
pub(crate) mod telnet;
pub(crate) mod ws;
