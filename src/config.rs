//! The daemon's tunables, separate from how they are spelled on the command line so that
//! tests (and any future front end) can build a `Config` directly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::access::{Net, Rules};
use crate::policy::api_key::ApiKey;
use crate::policy::filter::{Action, Filter};
// The name rules live in `policy::names`, below the chat, the cluster and signed tokens, so
// that each applies the same rule; the chat and the cluster name them `config::…`.
pub(crate) use crate::policy::names::{is_token, valid_name, valid_room};
use crate::policy::rate::Rate;
use crate::policy::settings::Sources;
use crate::policy::token::Keys;

/// Limits that keep one client from costing the others. See README.md for the semantics.
#[derive(Debug, Clone)]
pub struct Config {
    /// Longest line relayed, in bytes, counting its `\n`.
    pub max_line: usize,
    /// Clients served at once; the next one is told the server is full.
    pub max_clients: usize,
    /// Bytes queued for one peer (not yet accepted by its socket) before senders must wait.
    pub max_pending: usize,
    /// How long a sender waits for full peers before cutting them off; zero never waits.
    pub stall_timeout: Duration,
    /// How long one blocking write to a peer may make no progress.
    pub write_timeout: Duration,
    /// Disconnect a client that sends nothing for this long.
    pub idle_timeout: Option<Duration>,
    /// How long shutdown waits for queued bytes to reach their peers.
    pub shutdown_grace: Duration,
    /// Which client addresses may connect, at startup (a reload may change them: see
    /// `sources`).
    pub rules: Rules,
    /// Connections from one address at once; 0: no limit.
    pub max_per_ip: usize,
    /// `--proxy-protocol`: the proxies whose PROXY header (and `X-Forwarded-For`) says who
    /// the client is.
    pub proxies: Vec<Net>,
    /// The line a client must send first, if any (without its line ending), at startup.
    pub secret: Option<Vec<u8>>,
    /// How long a client has to send the secret.
    pub auth_timeout: Duration,
    /// How long a client that sent a wrong secret waits for its connection to close: each
    /// guess costs a guesser this much.
    pub auth_failure_delay: Duration,
    /// Chat mode (`--chat`): names, rooms, commands and notices instead of a raw byte pipe.
    pub chat: bool,
    /// `--binary`: relay every byte a TCP client sends as it is, telnet's commands (0xFF …)
    /// included; without it, telnet's commands are taken out and its options refused.
    pub binary: bool,
    /// End the lines the daemon writes in chat mode with `\r\n` instead of `\n`.
    pub crlf: bool,
    /// Relayed lines each room replays to whoever joins it without `since`; 0: none.
    pub history: usize,
    /// How long a room keeps a line for a client that comes back to recover it (`since`),
    /// as well as the `history` lines; zero: no recovery, `history` lines kept however old.
    pub history_age: Duration,
    /// Lines sent after the welcome line in chat mode (the contents of `--motd FILE`), at
    /// startup.
    pub motd: Vec<String>,
    /// The keys signed tokens are checked with, at startup (`--token-key`,
    /// `--token-public-key`; a reload may change them: see `sources`).
    pub token_keys: Keys,
    /// `--token-audience`, `--token-issuer`: what a token's `aud` and `iss` must be.
    pub token_audience: Option<String>,
    pub token_issuer: Option<String>,
    /// `--require-token`: a client must send a valid token first.
    pub require_token: bool,
    /// `--api-key-file`: the key every HTTP API request must carry, at startup (a reload may
    /// change it); `None`: the API asks for none (it is then on a loopback address).
    pub api_key: Option<ApiKey>,
    /// `--filter-file`, at startup (a reload may change it), and `--filter-action`.
    pub filter: Option<Arc<Filter>>,
    pub filter_action: Action,
    /// The files `rules`, `secret`, `motd`, `token_keys` and `api_key` came from, read again
    /// on every reload.
    pub sources: Sources,
    /// Flood control: at most this many lines per client, with bursts up to its `lines`.
    pub rate: Option<Rate>,
    /// Where to open the operator's control socket.
    pub admin: Option<PathBuf>,
    /// How long an operator's connection to the control socket may stay silent.
    pub admin_idle_timeout: Duration,
    /// Echo relayed lines on stdout and push each line read from stdin to every client.
    pub console: bool,
    /// `--ws-origin`: the only origins a browser may open a WebSocket from; empty: any.
    pub ws_origins: Vec<String>,
    /// A WebSocket client that sent nothing for this long is pinged.
    pub ws_ping_interval: Duration,
    /// `--live-room`: rooms whose delivery is live (a trailing `*` matches a prefix); the
    /// operator may turn others live, or these lossless, while the daemon runs.
    pub live_rooms: Vec<String>,
    /// `--live-rate`: relayed lines a second each viewer of a live room is shown at most.
    pub live_rate: u32,
    /// `--live-max-age`: a relayed line older than this is never written to a live room's
    /// viewer.
    pub live_max_age: Duration,
    /// `--redis`: join a cluster of nodes that relay each other's lines; `None`: this node
    /// alone.
    pub cluster: Option<ClusterConfig>,
    /// `--state-dir`: where bans and mutes are kept across restarts; `None`: in memory.
    pub state_dir: Option<PathBuf>,
}

/// Where the cluster's Redis is, which cluster on it, and this node's name in it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://…` or `redis+unix://…`.
    pub url: String,
    /// `--cluster`: separates several clusters sharing one Redis (the channel's prefix).
    pub name: String,
    /// `--node-id`: how this node's messages are told from the others' (letters, digits,
    /// `_ - .`).
    pub node_id: String,
    /// How long a node's word holds: its presence in others' lists and its name keys.
    pub ttl: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_line: 65536,
            max_clients: 1024,
            max_pending: 8 << 20,
            stall_timeout: Duration::from_millis(2000),
            write_timeout: Duration::from_secs(10),
            idle_timeout: None,
            shutdown_grace: Duration::from_secs(3),
            rules: Rules::default(),
            max_per_ip: 0,
            proxies: Vec::new(),
            secret: None,
            auth_timeout: Duration::from_secs(10),
            auth_failure_delay: Duration::from_secs(1),
            chat: false,
            binary: false,
            crlf: false,
            history: 0,
            history_age: Duration::from_secs(300),
            motd: Vec::new(),
            token_keys: Keys::default(),
            token_audience: None,
            token_issuer: None,
            require_token: false,
            api_key: None,
            filter: None,
            filter_action: Action::Drop,
            sources: Sources::default(),
            rate: None,
            admin: None,
            admin_idle_timeout: Duration::from_secs(60),
            console: false,
            ws_origins: Vec::new(),
            ws_ping_interval: Duration::from_secs(30),
            live_rooms: Vec::new(),
            live_rate: 30,
            live_max_age: Duration::from_millis(2000),
            cluster: None,
            state_dir: None,
        }
    }
}
