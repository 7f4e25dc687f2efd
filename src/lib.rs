//! relayd relays lines between clients: every line one client sends reaches every other
//! client in its room (all of them, in raw mode), over TCP (`nc`, `telnet`, programs) or
//! WebSocket (browsers), on one node or across several through Redis.
//!
//! # Where to look
//!
//! Modules from the outside in. Each may use only the modules listed after it (its own
//! folder's files may use each other, one way); `../shared/tools/modcycles` checks the folder
//! level.
//!
//! - `server`: the daemon's start and stop — listeners, the accept threads, the reloader, the
//!   operator's sockets, the HTTP API — everything it started held by one guard that stops it
//!   on `Drop`.
//! - `api/`: `--api`, the HTTP API for a web app's backend — `mod` (the listener, its request
//!   threads and limits, reading a request and its key), `routes` (each endpoint, calling the
//!   daemon's operator commands, as the control socket does), `json` (requests and answers).
//! - `client/`: a client's life. `accept` (the accept loop: admission, refusals, the HTTP
//!   front's threads), `mod` (one client's thread: authenticate, read, frame, hand on, leave),
//!   `json` (what a `relayd.v1.json` client sends, read into the lines it stands for),
//!   `auth` (its signed token: `/auth TOKEN` and `?token=`, refresh, expiry), `chat`
//!   (`--chat`: names, rooms, commands, what others see), `moderator` (a room's moderators'
//!   commands, and slow mode's pace), `censor` (the word filter on what it sends).
//! - `ops/`: the operator's ways in, acting through the daemon — `admin` (the control socket
//!   and `relayd ctl`), `console` (`--console`), `metrics` (`/metrics`), `reload` (SIGHUP and
//!   `reload`), `listening` (a listener served by a thread until stopped).
//! - `transport/`: how a client's bytes come in — `tcp`, `telnet` (its commands taken out
//!   unless `--binary`), `http` (the one HTTP request reader; the page and upgrades), `ws`
//!   (the WebSocket handshake, `relayd.v1.json`'s negotiation, and messages), `proxy` (the
//!   client's address a trusted proxy passes on: PROXY header, `X-Forwarded-For`);
//!   `ReadError`, why a read ended.
//! - `daemon/`: the shared state behind one handle, `Arc<Daemon>` — `mod` (admission,
//!   relaying, rooms, names), `slot` (a client's hold on the daemon, given back on `Drop`),
//!   `operator` (clients, kick, send, broadcast, publish, presence, history, stats), `users`
//!   (signed-in users: their names, and every connection of one user), `moderation` (bans and
//!   mutes: the operator's verbs and the checks), `rooms` (a room's moderators, its bans,
//!   mutes and slow mode), `recall` (a line taken back), `remote` (what other nodes say), `live` (the operator's
//!   `live ROOM on|off`).
//! - `cluster/`: `--redis` — `mod` (the handle and its queue), `wire` (every message's bytes),
//!   `link` (up or down, logged once each way), `publisher`, `subscriber`, `heartbeat`,
//!   `presence` (who is on the other nodes), `moderation` (bans, mutes, slow modes and
//!   moderators in Redis).
//! - `delivery/`: getting a line to its clients — `registry` (who is where; `registry/users`:
//!   names, renames, and signed-in users' connections; `registry/live`: which rooms are live,
//!   and each live room's gate; `registry/presence`: a room's members, as notices reach them
//!   and as JSON clients see them; `registry/recovery`: what a client entering a room is
//!   queued, a JSON client's recovery after `since` included; `registry/empty`: rooms
//!   nobody is in, kept for their history;
//!   `registry/recall`: a line out of it; `registry/stream`: in a cluster, a room's lines in
//!   its Redis stream's order, with the stream's ids), `peer` (a client's bounded queue, its
//!   role and the slow-consumer rule; `peer/write`: writing it to the socket, and writer
//!   threads; `peer/live`: a viewer in a live room, its age limit and small send buffer),
//!   `deliverer` (the one delivery thread), `chunk` (a line's shared bytes, who sent them and
//!   where they went, and how each kind of peer is written; `ws_frame`, their WebSocket
//!   frames; `json_event`, their `relayd.v1.json` events), `line_id` (a relayed line's id in
//!   its room), `history` (what a room keeps: replay, recovery, recall), `notice` (every line
//!   relayd writes itself, what it is to JSON clients, and why a client left), `echo`
//!   (`--console`'s printed copy).
//! - `stats/` (counters; `latency`, the line-wait histogram), `policy/` (`access` rules,
//!   `secret`, `api_key` (the HTTP API's key), `token` (signed tokens: their keys, and who a
//!   token says a client is), `names` (what a chat name or room may be), `rate`, `filter`
//!   (`--filter-file`'s words), `moderation` (bans and mutes: targets, durations, expiry, everywhere or in one
//!   room), `rooms` (slow modes and the moderators the operator made),
//!   `state` (`--state-dir`'s file), and the `settings` a reload reads again), `config` (the
//!   tunables).
//! - `systemd` (readiness, watchdog, socket activation), `shutdown` (the stop flag),
//!   `framing` (what a line is; `--max-line`), `sync` (lock helpers, the only place a
//!   poisoned lock is recovered; `Counted`, a counted place given back on `Drop`), `sys`
//!   (every `unsafe` system call; `timed_out`).
//!
//! # Threads
//!
//! Who starts each, what it owns, how it ends:
//! - `accept-ADDR` (one per `--bind` and `--ws-bind` listener; `server`): accepts, admits or
//!   refuses, starts a client's or a request's thread. Ends at shutdown.
//! - `client-ID` (`client::accept`): one client's reader; owns its `Slot`, its transport and
//!   its line buffers. Ends when the client leaves, however (its `Slot`'s `Drop` gives back
//!   everything). `http-ADDR` (`client::accept`): one HTTP request to the front (the page,
//!   or an upgrade, which then goes on as that client's thread); holds one of the front's
//!   counted places; ends with the request. `proxy-ADDR` (`client::accept`, for a
//!   `--proxy-protocol` peer on `--bind`): reads its PROXY header, admits the client it
//!   names, and ends; holds one of those places meanwhile.
//! - `deliverer` (`delivery::deliverer`, started by the daemon): sends every peer's queue with
//!   non-blocking writes; owns the run list. Ends at shutdown (or when the daemon is dropped).
//! - `writer-ID` (`delivery::peer::write`): drains one peer whose socket is full, with
//!   blocking writes (a live room's viewer: waiting for room in short steps); ends when its
//!   queue is empty or the peer is cut off. `farewell-ID`:
//!   writes a closed peer's last bytes within `--write-timeout`, then ends.
//! - `admin` and its connections' threads (`ops::admin`), `metrics` and `metrics-scrape`
//!   (`ops::metrics`), `api` and `api-request` (`api`: one request each, at most 64 at once),
//!   `console` and `console-out` (`ops::console`, `delivery::echo`): end at shutdown, or with
//!   their connection, within their timeouts.
//! - `reload` (`server`): serves SIGHUP and `reload` requests; ends when they are closed at
//!   shutdown. `signals` (`main`): turns signals into shutdown and reloads; ends with the
//!   process.
//! - `cluster-pub`, `cluster-sub`, `cluster-beat` (`cluster`, with `--redis`): the publisher,
//!   the subscriber and the heartbeat; end at shutdown, after the farewell.

// Every `unsafe` block is in `sys`, each with the reason it is sound.
#![deny(unsafe_code)]
#![warn(unreachable_pub, clippy::undocumented_unsafe_blocks)]

mod api;
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
#[allow(unsafe_code)]
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
pub use policy::api_key::ApiKey;
pub use policy::filter::{Action as FilterAction, Filter};
pub use policy::names::valid_room;
pub use policy::rate::Rate;
pub use policy::settings::Sources;
pub use policy::token::Keys;
pub use server::{Listeners, bind, raise_fd_limit, run, serve};
pub use shutdown::Shutdown;
pub use systemd::{Kind, passed_listeners};
pub use transport::ws::check_origin as check_ws_origin;
