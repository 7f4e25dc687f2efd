//! The scenarios: how many clients, who sends what, and what is measured. Each one connects
//! its clients, waits until the relay has registered all of them (probe lines), then runs the
//! measured phase with one sending thread and one receiving thread.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::danmaku;
use crate::params::{Kind, Params};
use crate::payload::{self, now_ns};
use crate::procstat::{self, ThreadSampler};
use crate::receiver::{Limits, Progress, RxConn};
use crate::report::{Fresh, Measure, Outcome, ServerCost};
use crate::sender;
use crate::setup::{
    Clock, connect, connect_one, connect_ws, join_receiver, receive_registered, spawn_receiver,
};
use crate::sys;
use crate::target::{self, Servers, Spec};

/// Runs one scenario against a fresh instance of `spec` (or no server at all, for ceiling).
pub fn run(params: &Params, spec: &Spec, run: usize) -> Outcome {
    let mut out = Outcome::new(params, spec, run);
    let result = match params.kind {
        Kind::Ceiling => ceiling(params).map(|m| out.main = Some(m)),
        _ => with_server(params, spec, &mut out),
    };
    if let Err(e) = result {
        out.error = Some(e);
    }
    out
}

/// A cluster name no other run uses (`--nodes`): this process's id and a run counter.
fn cluster_name() -> String {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::SeqCst);
    format!("relay-bench-{}-{n}", std::process::id())
}

fn with_server(params: &Params, spec: &Spec, out: &mut Outcome) -> Result<(), String> {
    let servers = target::start_all(
        spec,
        params.clients + params.slow + params.senders + 2,
        params.server_cpus.as_ref(),
        params.ws,
        &cluster_name(),
    )?;
    let pids = servers.pids();
    let sampler = (!pids.is_empty()).then(|| ThreadSampler::start(pids.clone()));
    let until = Instant::now() + params.timeout;
    let result = match params.kind {
        Kind::Fanout => {
            fanout(params, &servers, false, until, None).map(|(m, _)| out.main = Some(m))
        }
        Kind::Connscale => {
            let before = procstat::total(&pids, procstat::rss_kib);
            let mut idle = None;
            let (m, _) = fanout(params, &servers, false, until, Some(&mut idle))?;
            out.main = Some(m);
            out.idle_rss_kib = before.zip(idle);
            Ok(())
        }
        Kind::Slow => fanout(params, &servers, false, until, None).and_then(|(b, _)| {
            out.baseline = Some(b);
            let (m, fresh) = fanout(params, &servers, true, until, None)?;
            out.main = Some(m);
            out.fresh = fresh;
            Ok(())
        }),
        Kind::Chatter => chatter(params, &servers, until).map(|m| out.main = Some(m)),
        Kind::Danmaku => danmaku::run(params, &servers, until).map(|(m, v)| {
            out.main = Some(m);
            out.viewers = Some(v);
        }),
        Kind::Ceiling => unreachable!("ceiling runs without a server"),
    };
    if let Some(sampler) = sampler {
        out.server = Some(ServerCost {
            peak_rss_kib: procstat::total(&pids, procstat::peak_rss_kib),
            threads_max: sampler.finish(&pids),
            cpus_allowed: procstat::cpus_allowed_all(&pids),
        });
    }
    result
}

/// The `n` clients that only listen, TCP or WebSocket with --ws, dealt round-robin over the
/// nodes (`--nodes`): node k gets receivers k, k + N, k + 2N, ...
fn listeners(p: &Params, servers: &Servers, n: usize) -> Result<Vec<RxConn>, String> {
    let nodes = servers.nodes.len();
    let mut all = Vec::with_capacity(n);
    for (k, server) in servers.nodes.iter().enumerate() {
        let (count, node) = ((n + nodes - 1 - k) / nodes, k as u16);
        let what = |kind: &str| match nodes {
            1 => kind.to_string(),
            _ => format!("node {k}'s {kind}"),
        };
        if !p.ws {
            let socks = connect(&server.addr, count, &what("receiver"))?;
            all.extend(socks.into_iter().map(|sock| RxConn {
                node,
                ..RxConn::listener(sock)
            }));
            continue;
        }
        let addr = server
            .ws_addr
            .ok_or("--ws needs a server with a WebSocket listener (the relayd started here)")?;
        let clients = connect_ws(&addr, count, &what("WebSocket receiver"))?;
        all.extend(clients.into_iter().map(|(sock, tail)| RxConn {
            ws: Some(tail),
            node,
            ..RxConn::listener(sock)
        }));
    }
    Ok(all)
}

/// One sender (or --senders), `clients` receivers; with `stalled`, one more client that
/// never reads, and a fresh client that connects a quarter of the way through and times its
/// first line. `idle`, if given, gets the server's resident memory once every client is
/// registered, before the measured lines.
fn fanout(
    p: &Params,
    servers: &Servers,
    stalled: bool,
    until: Instant,
    idle: Option<&mut Option<u64>>,
) -> Result<(Measure, Option<Fresh>), String> {
    // The senders (and slow's stalled and fresh clients) on node 0, the receivers on all.
    let addr = &servers.first().addr;
    let mut conns = listeners(p, servers, p.clients)?;
    let senders = connect(addr, p.senders, "sender")?;
    let _stalled = if stalled {
        Some(connect(addr, 1, "stalled client")?)
    } else {
        None
    };
    let progress = Progress::new(p.senders);
    if p.senders > 1 {
        // Several senders hear each other: read them too, or the relay would cut them off
        // as stalled. Sender 0 sends the probes, so it counts as registered.
        conns.extend(senders.iter().enumerate().map(|(i, s)| RxConn {
            own: Some(i as u16),
            prober: i == 0,
            ..RxConn::listener(Arc::clone(s))
        }));
    }
    let rx = receive_registered(conns, &senders[0], p, &progress, until)?;
    let pids = servers.pids();
    if let Some(idle) = idle {
        *idle = procstat::total(&pids, procstat::rss_kib);
    }
    let clock = Clock::start(pids);
    let fresh = stalled.then(|| {
        let (progress, addr, quarter) = (Arc::clone(&progress), *addr, p.lines / 4);
        thread::spawn(move || fresh_client(&addr, &progress, quarter))
    });
    let sent = match (p.senders, p.rate) {
        (1, rate) => sender::fanout(&senders[0], p.lines, p.size, rate, &progress, until),
        (_, Some(rate)) => {
            let duration = Duration::from_secs_f64(p.lines as f64 / rate);
            sender::chatter(&senders, rate, duration, p.size, &progress, until)
        }
        (_, None) => unreachable!("main requires --rate with --senders"),
    };
    let rep = join_receiver(rx, &progress)?;
    sent.map_err(|e| format!("sender: {e}"))?;
    let m = clock.measure(&rep, &progress, p.size);
    let fresh = fresh.map(|h| h.join().unwrap_or(Fresh::Failed("thread panicked".into())));
    Ok((m, fresh))
}

/// Connects once `after` lines are sent and times the first whole line, up to 1 s; then keeps
/// reading so that it does not become a second stalled client.
fn fresh_client(addr: &SocketAddr, progress: &Progress, after: u64) -> Fresh {
    while progress.sent[0].load(Ordering::SeqCst) < after {
        if progress.stop.load(Ordering::SeqCst) || progress.done_sending.load(Ordering::SeqCst) {
            return Fresh::Failed("the run ended before it connected".into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    let t0 = Instant::now();
    let mut sock = match TcpStream::connect_timeout(addr, Duration::from_secs(1)) {
        Ok(s) => s,
        Err(e) => return Fresh::Failed(format!("cannot connect: {e}")),
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = None;
    loop {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if first.is_none() && buf[..n].contains(&b'\n') {
                    first = Some(t0.elapsed());
                }
            }
            Err(e) if sys::retryable(&e) => {}
            Err(_) => break,
        }
        if first.is_none() && t0.elapsed() >= Duration::from_secs(1) {
            return Fresh::Failed("no line within 1 s".into());
        }
        if first.is_some() && progress.stop.load(Ordering::SeqCst) {
            break;
        }
    }
    match first {
        Some(d) => Fresh::FirstLine(d),
        None => Fresh::Failed("connection closed before a line".into()),
    }
}

/// `clients` clients, each sending `rate` lines/s for `duration` to all the others; client i
/// on node i mod N (`--nodes`).
fn chatter(p: &Params, servers: &Servers, until: Instant) -> Result<Measure, String> {
    if p.clients < 2 {
        return Err("chatter needs at least 2 clients".into());
    }
    let nodes = servers.nodes.len();
    let node_of = |i: usize| (i % nodes) as u16;
    let socks = (0..p.clients)
        .map(|i| {
            let addr = &servers.nodes[i % nodes].addr;
            connect_one(addr, &format!("client {i} of {}", p.clients))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let progress = Progress::on_nodes((0..p.clients).map(node_of).collect());
    let conns = socks
        .iter()
        .enumerate()
        .map(|(i, sock)| RxConn {
            own: Some(i as u16),
            prober: i == 0,
            node: node_of(i),
            ..RxConn::listener(Arc::clone(sock))
        })
        .collect();
    let rx = receive_registered(conns, &socks[0], p, &progress, until)?;
    let clock = Clock::start(servers.pids());
    let rate = p.rate.unwrap_or(100.0);
    let sent = sender::chatter(&socks, rate, p.duration, p.size, &progress, until);
    let rep = join_receiver(rx, &progress)?;
    sent.map_err(|e| format!("sender: {e}"))?;
    Ok(clock.measure(&rep, &progress, p.size))
}

/// The machine's loopback without a relay: this process writes one pre-built buffer of all
/// the lines, in 16 KiB pieces (what relayd reads at a time), to each of `clients` sockets in
/// turn, and the same receiver as in every other scenario reads and checks them.
fn ceiling(p: &Params) -> Result<Measure, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("ceiling: cannot listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("ceiling: {e}"))?;
    let mut receivers = Vec::with_capacity(p.clients);
    let mut writers = Vec::with_capacity(p.clients);
    for _ in 0..p.clients {
        receivers.push(connect(&addr, 1, "receiver")?.remove(0));
        let (w, _) = listener
            .accept()
            .map_err(|e| format!("ceiling: accept: {e}"))?;
        w.set_nodelay(true).map_err(|e| format!("ceiling: {e}"))?;
        w.set_write_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| format!("ceiling: {e}"))?;
        writers.push(w);
    }
    let ts = now_ns();
    let mut all = Vec::with_capacity(p.lines as usize * p.size);
    for seq in 0..p.lines {
        payload::encode(&mut all, false, 0, seq, ts, p.size);
    }
    let progress = Progress::new(1);
    let conns = receivers.into_iter().map(RxConn::listener).collect();
    let limits = Limits {
        deadline: Instant::now() + p.timeout,
        drain: p.drain,
    };
    let rx = spawn_receiver(conns, p.size, &progress, limits, p.rx_threads)?;
    let clock = Clock::start(Vec::new());
    progress.start_ns.store(now_ns(), Ordering::SeqCst);
    let piece = (16 * 1024 / p.size).max(1) * p.size;
    let mut result = Ok(());
    'send: for (k, chunk) in all.chunks(piece).enumerate() {
        for w in &writers {
            if let Err(e) = io::Write::write_all(&mut &*w, chunk) {
                result = Err(format!("ceiling: write: {e}"));
                break 'send;
            }
        }
        let lines = ((k + 1) * piece / p.size).min(p.lines as usize);
        progress.sent[0].store(lines as u64, Ordering::SeqCst);
    }
    progress.finish_sending();
    let rep = join_receiver(rx, &progress)?;
    result?;
    let mut m = clock.measure(&rep, &progress, p.size);
    // The lines were stamped when the buffer was built, not when sent.
    m.latency = None;
    Ok(m)
}
