//! `relay-bench`: relayd's own load generator. It measures relayd, or any other line relay,
//! with the same code in the same run, so that ratios hold on a noisy shared machine.
//!
//! Modules, one job each:
//! - [`params`]: what a run is asked to do (the scenario's kind and parameters).
//! - [`scenario`]: what each scenario connects, sends and measures; [`danmaku`] is the one
//!   with thousands of viewers and per-viewer figures ([`viewers`]).
//! - [`setup`]: connecting clients, starting the receivers until every client is registered,
//!   the phase's CPU clock.
//! - [`sender`], [`receiver`]: the two sides of a run (one thread each).
//! - [`payload`]: the self-checking line format; [`histogram`]: latency percentiles.
//! - [`target`]: starting or finding the server; [`procstat`]: its cost from /proc.
//! - [`report`]: one run's results, as a table row or JSON ([`json`]); [`compare`]:
//!   `--compare` ratios.
//! - [`sys`]: epoll and friends.

// Every `unsafe` block is in `sys`, each with the reason it is sound.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod compare;
mod danmaku;
mod histogram;
mod json;
mod params;
mod payload;
mod procstat;
mod receiver;
mod report;
mod scenario;
mod sender;
mod setup;
#[allow(unsafe_code)]
mod sys;
mod target;
mod viewers;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use params::{Kind, Params, Transport};
use report::Outcome;
use sys::Cpus;
use target::Spec;

const AFTER_HELP: &str = "\
SCENARIOS:
    fanout      One sender, --clients receivers (default 100), --lines lines (default
                500000) of --size bytes, as fast as the server takes them, or at --rate
                lines/s. The basic throughput and latency test.
    chatter     --clients clients (default 50), each sending --rate lines/s (default 100)
                for --duration seconds (default 5) to all the others. Latency under many
                concurrent senders.
    slow        fanout twice on one server: once as is, once with one more client that
                connects and never reads. Reports both rows, the share of deliveries/s the
                healthy receivers kept, and how long a client that connects a quarter of the
                way through the stalled run waits for its first line (given up after 1 s).
                Defaults: 50 receivers, 100000 lines.
    connscale   --clients idle clients (default 1000), then a fanout of --lines lines
                (default 1000) to all of them. Shows per-connection memory (peak RSS divided
                by clients) and throughput at scale. Add --relayd-args for relayd's limits
                if needed; its --max-clients is sized for the run already.
    danmaku     Bullet comments to a crowd: --viewers viewers (default 1000) over
                --transport ws (default), tcp or mix (every other one WebSocket), and
                --senders TCP senders (default 20) at --rate lines/s in all (default 2000,
                spread evenly over the senders and over each second) for --duration seconds
                (default 5); --slow K more viewers connect and never read. Reports per viewer
                the received rate (min/median/max), the age of what it got (p50 and p99 over
                all deliveries to viewers, and the worst viewer's p99), the drops (lines sent
                x viewers - lines received) and the viewers cut off; the senders' achieved
                rate against the offered one (a sender that cannot hand its lines to the
                kernel falls behind; what is not written by the end of --duration is never
                sent); the server's CPU; and its RSS per viewer (after every viewer is
                connected and has seen a probe line, minus before any connected, divided by
                the viewers and slow viewers). The slow viewers are read at the end: each is
                either cut off by the server or still connected (stalled), with the bytes
                that were waiting for it. --room NAME: with --relayd-args '--chat' everyone
                /join-s NAME first (relayd's default raw mode has one room, lobby). Daemon
                options for the room (say, a live room's) go in --relayd-args.
    ceiling     No server at all: this process writes one pre-built buffer of all the lines,
                16 KiB at a time, to each of --clients sockets (default 100; --lines default
                500000), and reads them
                back with the same checking receiver. What this machine's loopback can do:
                the limit a relay is measured against. It has no latency figures.

TARGET:
    By default every run starts a fresh copy of the relayd built next to this binary
    (target/release/relayd) on a free 127.0.0.1 port, with -q and --max-clients sized for
    the run, and stops it afterwards. --server-cmd starts any other line relay the same
    way; --connect uses one already running (no server CPU or memory figures then).
    --compare CMD runs relayd and CMD alternately (A B A B ...) --repeat times and prints,
    for each figure, both medians and the median of the per-pair ratios relayd/CMD.

WEBSOCKET:
    --ws (fanout, slow, connscale) starts relayd with --ws-bind on a second free 127.0.0.1
    port too, and the receivers connect there as WebSocket clients (ws://ADDR/ws, handshake
    by tungstenite); each text message is one line and gets the same checks as a TCP line.
    The senders stay TCP, like a bot feeding browsers; so do slow's stalled and fresh
    clients. Rows are labelled relayd/ws. A danmaku-like run, 1000 browser viewers and 20
    senders at 10 lines/s each for 5 s:
        relay-bench fanout --ws --clients 1000 --senders 20 --rate 10 --lines 50

SEVERAL NODES:
    --nodes N starts N relayd nodes linked the way README's More than one machine does it:
    first a redis-server of the run's own (on a free 127.0.0.1 port, --save '' --appendonly
    no, in a fresh temp directory; Debian's redis-server package), then each node with
    --redis pointing at it, --node-id n0 .. nN-1 and a --cluster name no other run uses.
    The senders connect to node 0; the receivers are dealt round-robin over the nodes
    (receiver i on node i mod N; chatter's clients likewise), so with 3 nodes two thirds of
    them get every line one Redis hop away. Probe lines from node 0 go on until every
    receiver on every node has one, which is what proves each node's link up: no line is
    measured before. A delivery on another node than its sender's counts as across Redis:
    the table's note and --json (remote_deliveries, remote_p50_us, remote_p99_us, and
    local_p50_us, local_p99_us for the sender's node) give its latency apart. Server CPU,
    peak RSS and threads are every node's and Redis's added up; --server-cpus places every
    node and Redis. Everything is stopped by PID at the end of each run, or if it fails.
    --compare-nodes M runs relayd on --nodes nodes and on M nodes alternately (A B A B),
    with the ratio of every figure as for --compare, and when one side is a single node,
    what the Redis hop added: the latency across Redis minus the single node's, pair by
    pair. 100 receivers at 2,000 lines/s, three nodes against one:
        relay-bench fanout --rate 2000 --lines 10000 --nodes 3 --compare-nodes 1

CPU PLACEMENT:
    --server-cpus LIST runs every server started here (relayd, --server-cmd, and both
    targets of --compare) on the CPUs in LIST; --client-cpus LIST runs this generator, all
    its threads, on those. LIST is CPU numbers and ranges: 0, 1, 0-1, 0,2-3. Each CPU must
    be online on this machine; the lists may overlap. The server's mask is set in its
    process before it execs, so every thread it ever starts inherits it; the generator sets
    its own before it starts any thread. With only --client-cpus, the server gets the CPUs
    this process had at start, not the generator's. Not with --connect (a server started
    elsewhere); the table notes where both ran, and --json gives server_cpus (read back
    from /proc/PID/status) and client_cpus.

HOW IT MEASURES:
    Every line carries its sender, a sequence number and the time it was sent on the
    generator's monotonic clock, plus padding that depends on both, so each receiver checks
    loss, order, duplication and corruption line by line. Before measuring, probe lines are
    sent until every client has seen one, so a client the server has not registered yet is
    never counted as loss. One thread sends, one thread reads every socket through epoll
    (--rx-threads N: N threads, each with its share of the sockets).

FIGURES:
    deliveries/s  measured lines received (each line counts once per receiver) divided by
                  the time from the first line sent to the last line received.
    MB/s          the same in bytes of line.
    lost          lines owed to a receiver that it never got (includes disconnected ones).
    ooo           lines that arrived after a later line from the same sender (reordered or
                  duplicated).
    bad           lines that failed the format check (corrupt, spliced, echoed to sender).
    disc          receivers the server disconnected during the run.
    p50 .. max    per-delivery latency: receive time minus send time. At full speed it is
                  dominated by queueing; use --rate for latency figures that mean something.
    srvCPU%       server CPU (user+system) over the measured phase; 100 = one core.
    CPU-s per M   (note under the row; 'server CPU-s / M deliveries' in --compare,
                  server_cpu_s_per_m_deliveries in --json) server CPU seconds over the
                  measured phase per million deliveries: what each delivery cost the server,
                  apart from its latency. Counted in clock ticks (10 ms), so a phase that
                  costs the server under a second of CPU is only roughly measured.
    srvRSS        server peak resident memory (VmHWM) over its whole life.
    thr           most server threads seen (sampled every 50 ms).
    genCPU%       this generator's CPU over the measured phase. If it is near 100 per busy
                  thread, the generator, not the server, may be the limit.

EXAMPLES:
    cargo build --release
    cargo run --release --bin relay-bench -- fanout
    cargo run --release --bin relay-bench -- fanout --compare 'ncat -l 127.0.0.1 {port} --broker'
    cargo run --release --bin relay-bench -- fanout --rate 2000 --lines 10000
    cargo run --release --bin relay-bench -- chatter --server-cpus 0 --client-cpus 1 \\
        --compare 'ncat -l 127.0.0.1 {port} --broker -m 20000'
    cargo run --release --bin relay-bench -- connscale --clients 10000 --lines 200
    cargo run --release --bin relay-bench -- fanout --nodes 3 --compare-nodes 1
    cargo run --release --bin relay-bench -- ceiling --json

Every run is bounded by --timeout and targets 127.0.0.1 only.";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScenarioArg {
    Fanout,
    Chatter,
    Slow,
    Connscale,
    Ceiling,
    Danmaku,
}

/// relay-bench — load generator for relayd and other line relays.
///
/// Runs one scenario against a freshly started relayd (or another server) on 127.0.0.1 and
/// reports deliveries/s, MB/s, loss, latency percentiles, and the server's and its own cost.
#[derive(Parser, Debug)]
#[command(name = "relay-bench", version, after_help = AFTER_HELP)]
struct Args {
    /// What to measure; see SCENARIOS below.
    #[arg(value_enum)]
    scenario: ScenarioArg,

    /// Receivers (fanout, slow, connscale, ceiling), clients (chatter) or viewers (danmaku;
    /// --viewers is the same option).
    #[arg(short = 'n', long, visible_alias = "viewers", value_name = "N")]
    clients: Option<usize>,

    /// Measured lines sent (fanout, slow, connscale, ceiling).
    #[arg(short = 'm', long, value_name = "M")]
    lines: Option<u64>,

    /// Bytes per line, newline included (34 to 65536).
    #[arg(short, long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(payload::MIN_SIZE as u64..=payload::MAX_SIZE as u64))]
    size: u64,

    /// Lines per second: the sender's (fanout, slow, connscale), each client's (chatter,
    /// default 100) or all senders' together (danmaku, default 2000). Without it, fanout
    /// sends as fast as the server takes lines.
    #[arg(short, long, value_name = "LINES")]
    rate: Option<f64>,

    /// How long chatter's clients (danmaku's senders) send, in seconds.
    #[arg(short, long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,

    /// Use a server already listening on HOST:PORT (loopback only).
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["server_cmd", "compare"])]
    connect: Option<String>,

    /// Start this server instead of relayd, e.g. 'ncat -l 127.0.0.1 {port} --broker'.
    #[arg(long, value_name = "CMD", conflicts_with = "compare")]
    server_cmd: Option<String>,

    /// Run against relayd and CMD alternately and print the ratio of every figure.
    #[arg(long, value_name = "CMD")]
    compare: Option<String>,

    /// Start N relayd nodes linked through a redis-server of the run's own; senders on node
    /// 0, receivers round-robin over all. See SEVERAL NODES.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=16),
          conflicts_with_all = ["connect", "server_cmd"])]
    nodes: u64,

    /// Run relayd on --nodes nodes and on M nodes alternately and print the ratio of every
    /// figure, and what the Redis hop added; see SEVERAL NODES.
    #[arg(long, value_name = "M",
          value_parser = clap::value_parser!(u64).range(1..=16),
          conflicts_with_all = ["connect", "server_cmd", "compare"])]
    compare_nodes: Option<u64>,

    /// Runs per target (default: 3 with --compare or --compare-nodes, else 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100))]
    repeat: Option<u64>,

    /// Extra arguments for the relayd started here, split on whitespace
    /// (e.g. '--stall-timeout 500').
    #[arg(
        long,
        value_name = "ARGS",
        allow_hyphen_values = true,
        default_value = ""
    )]
    relayd_args: String,

    /// Longest one run may take, in seconds, connecting included.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,

    /// After the last line is sent, how long to wait for missing lines, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    drain: u64,

    /// One JSON object per result (and per compared figure) instead of the table.
    #[arg(long)]
    json: bool,

    /// Run the server (relayd, --server-cmd, and both targets of --compare) on these CPUs,
    /// e.g. 0, 0-1 or 0,2; see CPU PLACEMENT.
    #[arg(long, value_name = "LIST", conflicts_with = "connect")]
    server_cpus: Option<String>,

    /// Run this generator (all its threads) on these CPUs; see CPU PLACEMENT.
    #[arg(long, value_name = "LIST")]
    client_cpus: Option<String>,

    /// Receivers are WebSocket clients (relayd started here with --ws-bind); see WEBSOCKET.
    #[arg(long, conflicts_with_all = ["connect", "server_cmd", "compare"])]
    ws: bool,

    /// TCP senders (fanout, connscale: default 1; more than one needs --rate, each sends
    /// --lines lines at --rate lines/s. danmaku: default 20, sharing --rate).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    senders: Option<u64>,

    /// Receiver threads, each reading its share of the clients through its own epoll set.
    /// More than one when the generator's single reader is the limit (see genCPU%).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=16))]
    rx_threads: u64,

    /// danmaku: how the viewers connect: ws (WebSocket), tcp, or mix (every other one).
    #[arg(long, value_enum, value_name = "HOW")]
    transport: Option<TransportArg>,

    /// danmaku: this many more viewers that connect and never read.
    #[arg(long, value_name = "K", default_value_t = 0)]
    slow: usize,

    /// danmaku: the room (lobby by default; another one needs --relayd-args '--chat').
    #[arg(long, value_name = "NAME")]
    room: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TransportArg {
    Ws,
    Tcp,
    Mix,
}

fn params(a: &Args) -> Result<Params, String> {
    let (kind, clients, lines) = match a.scenario {
        ScenarioArg::Fanout => (Kind::Fanout, 100, 500_000),
        ScenarioArg::Chatter => (Kind::Chatter, 50, 0),
        ScenarioArg::Slow => (Kind::Slow, 50, 100_000),
        ScenarioArg::Connscale => (Kind::Connscale, 1000, 1000),
        ScenarioArg::Ceiling => (Kind::Ceiling, 100, 500_000),
        ScenarioArg::Danmaku => (Kind::Danmaku, 1000, 0),
    };
    let danmaku = kind == Kind::Danmaku;
    let clients = a.clients.unwrap_or(clients);
    if clients == 0 || clients > 60_000 {
        return Err(format!("--clients must be 1 to 60000, not {clients}"));
    }
    if kind == Kind::Chatter && clients > u16::MAX as usize {
        return Err("chatter supports at most 65535 clients".into());
    }
    if let Some(r) = a.rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(format!("--rate must be a positive number, not {r}"));
    }
    if !(a.duration.is_finite() && a.duration > 0.0 && a.duration <= 3600.0) {
        return Err("--duration must be between 0 and 3600 seconds".into());
    }
    if a.ws && matches!(kind, Kind::Ceiling | Kind::Chatter) {
        return Err(format!(
            "{} has no --ws (fanout, slow and connscale have)",
            kind.name()
        ));
    }
    let transport = match (a.transport, danmaku) {
        (_, false) if a.transport.is_some() || a.slow > 0 || a.room.is_some() => {
            return Err("--transport, --slow and --room are for danmaku".into());
        }
        (_, true) if a.ws => return Err("danmaku takes --transport ws, not --ws".into()),
        (Some(TransportArg::Tcp), _) => Transport::Tcp,
        (Some(TransportArg::Mix), _) => Transport::Mix,
        (Some(TransportArg::Ws), _) | (None, true) => Transport::Ws,
        (None, false) if a.ws => Transport::Ws,
        (None, false) => Transport::Tcp,
    };
    let relayd_started = a.connect.is_none() && a.server_cmd.is_none() && a.compare.is_none();
    if danmaku && transport != Transport::Tcp && !relayd_started {
        return Err(format!(
            "--transport {} needs the relayd started here (only it speaks WebSocket): \
             use --transport tcp with --connect, --server-cmd or --compare",
            transport.name()
        ));
    }
    if danmaku && (a.nodes > 1 || a.compare_nodes.is_some()) {
        return Err("danmaku runs on one relayd node (no --nodes, --compare-nodes)".into());
    }
    let chat = a.relayd_args.split_whitespace().any(|w| w == "--chat");
    let room = a.room.clone().unwrap_or_else(|| "lobby".into());
    if room != "lobby" && !chat {
        return Err(format!(
            "--room {room}: relayd has rooms only in --chat mode (--relayd-args '--chat')"
        ));
    }
    let senders = a.senders.unwrap_or(if danmaku { 20 } else { 1 }) as usize;
    if danmaku && senders > u16::MAX as usize {
        return Err("danmaku supports at most 65535 senders".into());
    }
    if senders > 1 && !danmaku {
        if !matches!(kind, Kind::Fanout | Kind::Connscale) {
            return Err("--senders is for fanout and connscale".into());
        }
        if a.rate.is_none() {
            return Err("--senders above 1 needs --rate (lines/s per sender)".into());
        }
    }
    Ok(Params {
        kind,
        clients,
        lines: a.lines.unwrap_or(lines),
        size: a.size as usize,
        rate: a.rate.or(danmaku.then_some(2000.0)),
        duration: Duration::from_secs_f64(a.duration),
        timeout: Duration::from_secs(a.timeout.max(1)),
        drain: Duration::from_millis(a.drain),
        server_cpus: None,
        client_cpus: None,
        ws: transport != Transport::Tcp,
        senders,
        rx_threads: a.rx_threads as usize,
        transport,
        slow: a.slow,
        room,
        chat,
    })
}

/// Parses the CPU list given to `flag` and checks that this machine has every CPU in it.
fn cpu_list(flag: &str, list: &str, online: &Cpus) -> Result<Cpus, String> {
    let cpus = Cpus::parse(list)
        .map_err(|e| format!("{flag} '{list}': {e} (a CPU list is like 0, 1, 0-1 or 0,2)"))?;
    let missing = cpus.missing_from(online);
    if !missing.is_empty() {
        return Err(format!(
            "{flag} '{list}': no CPU {missing} on this machine (it has {online})"
        ));
    }
    Ok(cpus)
}

/// Applies --client-cpus to this process and works out where the server goes. Must run
/// before any thread starts, so that every thread inherits the generator's CPUs.
fn place(a: &Args, p: &mut Params) -> Result<(), String> {
    if a.server_cpus.is_none() && a.client_cpus.is_none() {
        return Ok(());
    }
    let online = sys::online_cpus().map_err(|e| format!("cannot list this machine's CPUs: {e}"))?;
    let server = match &a.server_cpus {
        Some(list) => Some(cpu_list("--server-cpus", list, &online)?),
        None => None,
    };
    let client = match &a.client_cpus {
        Some(list) => Some(cpu_list("--client-cpus", list, &online)?),
        None => None,
    };
    if p.kind == Kind::Ceiling && server.is_some() {
        return Err("ceiling runs without a server; --server-cpus does not apply".into());
    }
    // Read before pinning: a server without --server-cpus gets what this process had, not
    // the generator's CPUs it would otherwise inherit.
    let before = sys::own_affinity().map_err(|e| format!("cannot read my CPU affinity: {e}"))?;
    if let Some(c) = &client {
        sys::pin_self(c).map_err(|e| format!("--client-cpus '{c}': cannot run there: {e}"))?;
    }
    p.server_cpus = server.or(client.is_some().then_some(before));
    p.client_cpus = client;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(msg) => {
            eprintln!("relay-bench: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Runs everything asked for; returns whether every run completed (a run with loss still
/// completes: loss is a result, not an error).
fn run(a: &Args) -> Result<bool, String> {
    let mut p = params(a)?;
    place(a, &mut p)?;
    // One descriptor per client; ceiling holds both ends of each connection.
    let ends = if p.kind == Kind::Ceiling { 2 } else { 1 };
    let need = (p.clients + p.slow + p.senders) as u64 * ends + 64;
    // connscale holds one descriptor per simulated client, far past the usual soft limit.
    match relayd::raise_fd_limit() {
        Ok(limit) if limit < need => {
            return Err(format!(
                "{} clients need about {need} open files; the limit here is {limit}",
                p.clients
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(format!("cannot raise the open file limit: {e}")),
    }
    let relayd = |nodes: u64| Spec::Relayd {
        args: a.relayd_args.split_whitespace().map(String::from).collect(),
        nodes: nodes as usize,
    };
    if let Some(addr) = &a.connect {
        target::loopback(addr)?;
    }
    let (first, second) = match (&a.connect, &a.server_cmd, &a.compare, a.compare_nodes) {
        (Some(addr), ..) => (Spec::Connect(addr.clone()), None),
        (_, Some(cmd), ..) => (Spec::Command(cmd.clone()), None),
        (_, _, Some(cmd), _) => (relayd(a.nodes), Some(Spec::Command(cmd.clone()))),
        (.., Some(m)) => (relayd(a.nodes), Some(relayd(m))),
        _ => (relayd(a.nodes), None),
    };
    if p.kind == Kind::Ceiling && second.is_some() {
        return Err("ceiling runs without a server; --compare does not apply".into());
    }
    // (--compare-nodes sets `second`: refused just above.)
    if p.kind == Kind::Ceiling && a.nodes > 1 {
        return Err("ceiling runs without a server; --nodes does not apply".into());
    }
    let repeat = a.repeat.unwrap_or(if second.is_some() { 3 } else { 1 }) as usize;
    let mut out = std::io::stdout();
    if !a.json {
        let _ = writeln!(out, "{}", report::TABLE_HEAD);
    }
    let (mut ra, mut rb): (Vec<Outcome>, Vec<Outcome>) = (Vec::new(), Vec::new());
    let mut ok = true;
    for i in 1..=repeat {
        for (spec, results) in [(Some(&first), &mut ra), (second.as_ref(), &mut rb)] {
            let Some(spec) = spec else { continue };
            let o = scenario::run(&p, spec, i);
            ok &= o.error.is_none();
            let text = if a.json {
                report::json(&o) + "\n"
            } else {
                report::table(&o)
            };
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            results.push(o);
        }
    }
    if second.is_some() {
        let _ = out.write_all(compare::compare(&ra, &rb, a.json).as_bytes());
    }
    Ok(ok)
}
