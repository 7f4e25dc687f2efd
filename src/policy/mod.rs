//! Who may connect and how much they may send: the address rules, the shared secret, signed
//! tokens, the HTTP API's key, the word filter, what a name may be, flood control, and the
//! settings a reload reads again (rules, secret, motd, keys, filter); bans and mutes
//! (`moderation`), a room's slow mode and moderators (`rooms`), and the `--state-dir` file that keeps them (`state`). Plain values and
//! checks, with no thread or socket of their own, so
//! everything above can use them.

pub(crate) mod access;
pub(crate) mod api_key;
pub(crate) mod filter;
pub(crate) mod moderation;
pub(crate) mod names;
pub(crate) mod rate;
pub(crate) mod rooms;
pub(crate) mod secret;
pub(crate) mod settings;
pub(crate) mod state;
pub(crate) mod token;
