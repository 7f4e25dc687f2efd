//! The command line: clap's definition of `relayd`'s options and subcommands (from which
//! `--help`, the man page and the completion scripts are all generated), and what the options
//! make: the daemon's [`Config`] and the log level.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use log::LevelFilter;

use relayd::{Config, FilterAction, Rate, Sources};

const AFTER_HELP: &str = "\
EXAMPLE:
    Serve others on port 12345, then chat from two terminals:

        relayd --bind 0.0.0.0:12345
        nc HOST 12345        # terminal 1
        nc HOST 12345        # terminal 2: lines typed here appear in terminal 1

    Every line a client sends reaches every other connected client, byte for byte; the
    sender does not get its own line back. Messages from relayd itself start with 'relayd: '.

    For people rather than programs, add --chat (names, rooms, /help); to kick, push and
    watch, add --admin PATH and use 'relayd ctl --admin PATH help'.

    For browsers, add --ws-bind 127.0.0.1:8080 and open http://127.0.0.1:8080/ (chat view;
    ?view=danmaku for comments flying over the page, ?room=NAME and ?name=NAME in --chat
    mode). Browsers and nc users share the same rooms.

SIGNALS:
    SIGINT, SIGTERM   stop accepting, flush what is queued, tell each client
                      'relayd: shutting down', close, exit 0. A second signal exits at once.
    SIGHUP            read --allow-file, --deny-file, --secret-file, --motd, --token-key,
                      --token-public-key, --api-key-file and --filter-file again; a
                      file that no longer parses leaves the old settings in force. Clients
                      stay, except those the new rules refuse ('relayd: no longer allowed').

ENVIRONMENT:
    RUST_LOG          log filter (e.g. 'debug', 'relayd=trace'); overrides -v/-q.
    NOTIFY_SOCKET, WATCHDOG_USEC, LISTEN_FDS, LISTEN_FDNAMES
                      set by systemd: readiness and watchdog notifications (Type=notify),
                      socket activation (sockets named 'relay' or 'tcp' for clients,
                      'ws' for browsers, 'metrics' for --metrics). See README.md.

MAN PAGE AND COMPLETIONS:
    relayd generate man|bash|zsh|fish   print them on stdout";

/// The longest any timeout may be: a year. Longer ones are typing mistakes, and would overflow
/// the clock arithmetic they feed.
const MAX_SECS: u64 = 365 * 24 * 3600;

/// relayd — relay lines between TCP clients.
///
/// Every line (bytes up to and including a newline) that a connected client sends is
/// forwarded, byte-exact and whole, to every other connected client.
#[derive(Parser, Debug)]
#[command(
    name = "relayd",
    version,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    /// Address to listen on; repeat for several (e.g. `--bind 0.0.0.0:12345 --bind [::]:12345`).
    /// The default serves this machine only.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:12345")]
    pub(crate) bind: Vec<String>,

    /// Longest line relayed, in bytes, counting its newline. A longer line is discarded
    /// whole and its sender told so.
    #[arg(long, value_name = "BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..))]
    max_line: u64,

    /// Clients served at once; the next one is told `relayd: server full (N clients)`.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_clients: u64,

    /// Bytes queued for one client that its socket has not accepted yet. A sender whose
    /// line does not fit waits up to --stall-timeout for that client to catch up.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    max_pending: usize,

    /// How long a sender waits for clients whose queue is full before disconnecting them as
    /// too slow. 0: never wait, disconnect a client as soon as its queue is full.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(..=MAX_SECS * 1000))]
    stall_timeout: u64,

    /// Disconnect a client whose socket accepts no bytes for this long.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    write_timeout: u64,

    /// Disconnect a client that sends nothing for this long. 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=MAX_SECS))]
    idle_timeout: u64,

    /// Admit clients from this address or network (CIDR, IPv4 or IPv6; repeatable). With any
    /// --allow, every other address is refused.
    #[arg(long, value_name = "CIDR")]
    allow: Vec<String>,

    /// Refuse clients from this address or network (repeatable). Deny wins over allow.
    #[arg(long, value_name = "CIDR")]
    deny: Vec<String>,

    /// Read --allow entries from FILE: one per line, blank lines and # comments ignored.
    #[arg(long, value_name = "FILE")]
    allow_file: Vec<String>,

    /// Read --deny entries from FILE, like --allow-file.
    #[arg(long, value_name = "FILE")]
    deny_file: Vec<String>,

    /// Connections from one address at once; the next gets `relayd: too many connections from
    /// your address`. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_per_ip: usize,

    /// A trusted proxy's address or network (CIDR; repeatable): its connections must start
    /// with a PROXY protocol header (v1 or v2; HAProxy's send-proxy, stunnel's protocol =
    /// proxy), on --ws-bind may instead carry X-Forwarded-For, and the client's address they
    /// give is used for --allow/--deny, --max-per-ip, the log and `clients`. Nobody else's
    /// header is ever read.
    #[arg(long, value_name = "CIDR")]
    proxy_protocol: Vec<String>,

    /// Require every client to send the first line of FILE as its first line before it sends
    /// or receives anything. Not encryption: see README.md for TLS in front.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<String>,

    /// Check signed tokens (JWT, HS256) with the secrets in FILE: one a line, at least 32
    /// bytes each (`openssl rand -base64 32`), each optionally after a `kid: NAME` line for
    /// rotation; # comments. Read again on SIGHUP and `reload`. A client presents a token
    /// with the line `/auth TOKEN` (a browser: `?token=`). See README.md, Signed tokens.
    #[arg(long, value_name = "FILE")]
    token_key: Option<PathBuf>,

    /// Check signed tokens (JWT: RS256, ES256, EdDSA) with the PEM public keys in FILE
    /// (`openssl pkey -pubout`), one block after another, each optionally after a `kid: NAME`
    /// line. Read again on SIGHUP and `reload`.
    #[arg(long, value_name = "FILE")]
    token_public_key: Option<PathBuf>,

    /// Accept only tokens whose `aud` names AUD. Without it, a token carrying `aud` is
    /// refused.
    #[arg(long, value_name = "AUD")]
    token_audience: Option<String>,

    /// Accept only tokens whose `iss` is ISS.
    #[arg(long, value_name = "ISS")]
    token_issuer: Option<String>,

    /// Close every client that does not present a valid signed token (`/auth TOKEN`, or a
    /// browser's `?token=`) as its first line, within 10 s (`relayd: a token is required`).
    /// Needs --token-key or --token-public-key.
    #[arg(long)]
    require_token: bool,

    /// Chat mode for people using nc/telnet: names, rooms, commands (/help), join and leave
    /// notices, and `<name> ` before every line.
    #[arg(long)]
    chat: bool,

    /// Relay every byte as it is, for programs that send binary data: without it, telnet's
    /// commands (bytes from 0xFF on) are taken out of what TCP clients send and its option
    /// negotiations refused, so a telnet user's Ctrl-C reaches nobody. Not with --chat.
    #[arg(long, conflicts_with = "chat")]
    binary: bool,

    /// In chat mode, end every line relayd writes with CR LF instead of LF.
    #[arg(long)]
    pub(crate) crlf: bool,

    /// Relayed lines each room replays to whoever joins it (without `since`).
    #[arg(long, value_name = "N", default_value_t = 0)]
    history: usize,

    /// How long a room keeps its lines (at least its last 1000) for a client that comes back
    /// to recover what it missed: 30s, 10m, 2h; 0: no recovery, --history lines kept however
    /// old.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = history_age)]
    history_age: Duration,

    /// In chat mode, send the lines of FILE after the welcome line.
    #[arg(long, value_name = "FILE")]
    pub(crate) motd: Option<PathBuf>,

    /// Flood control: at most LINES lines per SECONDS per client (bursts up to LINES);
    /// excess lines are dropped. E.g. 20/5. Default: off.
    #[arg(long, value_name = "LINES/SECONDS")]
    rate: Option<Rate>,

    /// Word filter: one word or phrase per line of FILE (blank lines and # comments skipped),
    /// matched as whole words, ASCII letters in any case, in what clients send (chat lines,
    /// /me, /msg, /nick; raw lines). Read again on SIGHUP and `reload`. Not with --binary.
    #[arg(long, value_name = "FILE", conflicts_with = "binary")]
    filter_file: Option<PathBuf>,

    /// What a filtered line becomes: `drop` (not sent; its sender is told `relayd: your line
    /// was not sent (filtered)`) or `mask` (sent with each listed word as `***`).
    #[arg(long, value_name = "ACTION", default_value_t = FilterAction::Drop, requires = "filter_file")]
    filter_action: FilterAction,

    /// Make ROOM live (repeatable; a trailing * matches every room starting with what precedes
    /// it): no sender ever waits for its viewers, each viewer is shown at most --live-rate
    /// lines a second and nothing older than --live-max-age, and a viewer that stops reading
    /// misses lines instead of being cut off. The operator's `live ROOM on|off` changes it.
    #[arg(long, value_name = "ROOM")]
    live_room: Vec<String>,

    /// Lines a second each viewer of a live room is shown at most; the rest are dropped for
    /// it (moderators', the operator's and relayd's own lines never are).
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    live_rate: u32,

    /// A line older than this is never written to a viewer of a live room.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=MAX_SECS * 1000))]
    live_max_age: u64,

    /// Open the operator's control socket at PATH (mode 0600): clients, kick, broadcast,
    /// send, publish, presence, rooms, history, stats, reload. See `relayd ctl`.
    #[arg(long, value_name = "PATH")]
    admin: Option<PathBuf>,

    /// Close an operator's connection to the control socket after this long without a
    /// command.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    admin_idle_timeout: u64,

    /// Print relayed lines on stdout and push each line typed on stdin to every client.
    #[arg(long)]
    console: bool,

    /// Serve browsers on ADDR (HTTP): the page at `/` and WebSocket clients, in the same rooms
    /// as TCP clients; repeat for several. Default: off.
    #[arg(long, value_name = "ADDR")]
    pub(crate) ws_bind: Vec<String>,

    /// Accept WebSocket connections only from a page of this origin (e.g.
    /// `https://chat.example.org`); repeat for several. Without it, any origin is accepted:
    /// any web page a visitor opens can connect to relayd as that visitor.
    #[arg(long, value_name = "ORIGIN")]
    ws_origin: Vec<String>,

    /// Ping a WebSocket client that sent nothing for this long (it must answer within
    /// --write-timeout), so that a browser gone without a word is noticed.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    ws_ping_interval: u64,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9123). Its own
    /// listener, never the relay port. Default: off.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<String>,

    /// Serve the HTTP API (JSON: publish, broadcast, send, kick, presence, rooms, history,
    /// stats, and /metrics) on ADDR, for a web application's backend. Without
    /// --api-key-file, ADDR must be a loopback address. Default: off. See README.md, HTTP API.
    #[arg(long, value_name = "ADDR")]
    pub(crate) api: Option<String>,

    /// The key every --api request must carry (`Authorization: Bearer KEY`): the first line
    /// of FILE, at least 16 bytes (`openssl rand -base64 32`). Read again on SIGHUP and
    /// `reload`.
    #[arg(long, value_name = "FILE", requires = "api")]
    pub(crate) api_key_file: Option<PathBuf>,

    /// Join a cluster of relayd nodes that share their clients (lines, and in chat mode rooms,
    /// names, history and the operator's commands) through this Redis (redis://HOST:PORT/ or
    /// redis+unix:///PATH). Default: off.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,

    /// The cluster's name, which separates several clusters sharing one Redis.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "relayd",
        requires = "redis"
    )]
    cluster: String,

    /// This node's name in the cluster, unique among its nodes (letters, digits, _ - .): a node
    /// started with the id of a live one exits 1. Default: host name and pid.
    #[arg(long, value_name = "ID", requires = "redis")]
    node_id: Option<String>,

    /// How long a node's word holds in the cluster: a node not heard from for this long is
    /// taken for dead (its clients leave other nodes' lists), and the names it held come free.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), requires = "redis")]
    cluster_ttl: u64,

    /// Keep bans and mutes in DIR/state.json, so that they survive a restart (DIR is created
    /// if missing).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Less log output (-q: warnings and errors, -qq: errors only).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    quiet: u8,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Send one command to a running relayd's control socket and print the answer; exits 1
    /// if the answer is an error. E.g. `relayd ctl --admin /run/relayd.sock kick alice spam`.
    Ctl {
        /// The daemon's --admin socket.
        #[arg(long, value_name = "PATH")]
        admin: PathBuf,
        /// The command and its arguments (try `help`).
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Print the man page (roff) or a shell's completion script on stdout, generated from
    /// this very command line definition. See README.md for where to install them.
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Generated {
    Man,
    Bash,
    Zsh,
    Fish,
}

impl Args {
    pub(crate) fn config(&self) -> Result<Config, String> {
        let mut sources = Sources {
            allow_files: self.allow_file.iter().map(PathBuf::from).collect(),
            deny_files: self.deny_file.iter().map(PathBuf::from).collect(),
            secret_file: self.secret_file.as_ref().map(PathBuf::from),
            motd: self.motd.clone(),
            token_key: self.token_key.clone(),
            token_public_key: self.token_public_key.clone(),
            api_key_file: self.api_key_file.clone(),
            filter_file: self.filter_file.clone(),
            ..Sources::default()
        };
        if self.require_token && !sources.has_token_keys() {
            return Err("--require-token needs --token-key or --token-public-key".into());
        }
        for (list, flag, entries) in [
            (&mut sources.allow, "--allow", &self.allow),
            (&mut sources.deny, "--deny", &self.deny),
        ] {
            for entry in entries {
                list.push(entry.parse().map_err(|e| format!("{flag} {e}"))?);
            }
        }
        let mut proxies = Vec::new();
        for entry in &self.proxy_protocol {
            proxies.push(entry.parse().map_err(|e| format!("--proxy-protocol {e}"))?);
        }
        for origin in &self.ws_origin {
            relayd::check_ws_origin(origin)?;
        }
        let settings = sources.load(self.max_line as usize)?;
        let cluster = match &self.redis {
            None => None,
            Some(url) => {
                relayd::check_redis_url(url)?;
                let node_id = self.node_id.clone().unwrap_or_else(|| {
                    // The kernel's host name, without a syscall wrapper; a node in a
                    // container without /proc still gets a pid-based id.
                    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .map(|h| h.trim().to_owned())
                        .unwrap_or_else(|_| "relayd".into());
                    format!("{host}-{}", std::process::id())
                });
                relayd::check_cluster_names(&self.cluster, &node_id)?;
                Some(relayd::ClusterConfig {
                    url: url.clone(),
                    name: self.cluster.clone(),
                    node_id,
                    ttl: Duration::from_secs(self.cluster_ttl),
                })
            }
        };
        Ok(Config {
            cluster,
            rules: settings.rules,
            max_per_ip: self.max_per_ip,
            proxies,
            secret: settings.secret,
            max_line: self.max_line as usize,
            max_clients: usize::try_from(self.max_clients).unwrap_or(usize::MAX),
            max_pending: self.max_pending,
            stall_timeout: Duration::from_millis(self.stall_timeout),
            write_timeout: Duration::from_secs(self.write_timeout),
            idle_timeout: Some(Duration::from_secs(self.idle_timeout)).filter(|t| !t.is_zero()),
            chat: self.chat,
            binary: self.binary,
            crlf: self.crlf,
            history: self.history,
            history_age: self.history_age,
            motd: settings.motd,
            token_keys: settings.keys,
            api_key: settings.api_key,
            filter: settings.filter,
            filter_action: self.filter_action,
            token_audience: self.token_audience.clone(),
            token_issuer: self.token_issuer.clone(),
            require_token: self.require_token,
            sources,
            rate: self.rate,
            admin: self.admin.clone(),
            admin_idle_timeout: Duration::from_secs(self.admin_idle_timeout),
            console: self.console,
            ws_origins: self.ws_origin.clone(),
            ws_ping_interval: Duration::from_secs(self.ws_ping_interval),
            state_dir: self.state_dir.clone(),
            live_rooms: self.live_rooms()?,
            live_rate: self.live_rate,
            live_max_age: Duration::from_millis(self.live_max_age),
            ..Config::default()
        })
    }

    /// `--live-room`s, each a room name, or the start of one followed by `*`.
    fn live_rooms(&self) -> Result<Vec<String>, String> {
        for room in &self.live_room {
            let name = room.strip_suffix('*').unwrap_or(room);
            if !(relayd::valid_room(name) || (name.is_empty() && room == "*")) {
                return Err(format!(
                    "--live-room {room}: a room is 1-32 letters, digits, _ - . (a trailing * \
                     matches a prefix)"
                ));
            }
        }
        Ok(self.live_room.clone())
    }

    pub(crate) fn log_level(&self) -> LevelFilter {
        match (self.verbose, self.quiet) {
            (0, 0) => LevelFilter::Info,
            (1, _) => LevelFilter::Debug,
            (_, 1) => LevelFilter::Warn,
            (_, 0) => LevelFilter::Trace,
            (0, _) => LevelFilter::Error,
            _ => LevelFilter::Info,
        }
    }
}

/// A clap error as one line, like every other startup error: its first line, which names the
/// option and the value, without its "error: ", and what it lists on the indented lines
/// after it (the missing arguments, say); not the usage that follows.
pub(crate) fn one_line(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let listed: Vec<&str> = lines
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    if listed.is_empty() {
        first.to_owned()
    } else {
        format!("{first} {}", listed.join(", "))
    }
}

/// `--history-age`: `0`, or a number and a unit, `s`, `m`, `h` (up to a day: what a room
/// keeps is bounded by lines anyway).
fn history_age(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("{s}: not a duration (0, 30s, 10m, 2h)");
    let unit = match s.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        _ => return Err(bad()),
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(unit) {
        Some(secs) if secs <= 24 * 3600 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{s}: at most 24h")),
    }
}
