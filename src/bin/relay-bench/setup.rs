//! What every scenario does around its measured phase: connecting clients (TCP, or WebSocket
//! after tungstenite's handshake), starting the receiver threads and waiting until the relay
//! has registered every client (probe lines), the CPU clock of the phase, and joining the
//! receivers at its end.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::protocol::WebSocketConfig;

use crate::params::Params;
use crate::procstat;
use crate::receiver::{self, Limits, Progress, RxConn, RxReport, Shared};
use crate::report::Measure;
use crate::sender;
use crate::sys;

pub fn connect(addr: &SocketAddr, n: usize, what: &str) -> Result<Vec<Arc<TcpStream>>, String> {
    (0..n)
        .map(|i| connect_one(addr, &format!("{what} {i} of {n}")))
        .collect()
}

pub fn connect_one(addr: &SocketAddr, what: &str) -> Result<Arc<TcpStream>, String> {
    let s = TcpStream::connect_timeout(addr, Duration::from_secs(5))
        .map_err(|e| format!("{what}: cannot connect to {addr}: {e}"))?;
    s.set_nodelay(true)
        .map_err(|e| format!("{what}: set TCP_NODELAY: {e}"))?;
    Ok(Arc::new(s))
}

/// A WebSocket client after its handshake: the socket, and what the handshake read past the
/// response.
pub type WsClient = (Arc<TcpStream>, Vec<u8>);

/// `n` WebSocket clients of relayd's `--ws-bind` listener at `addr`: a TCP connection, then
/// tungstenite's client handshake on it, blocking with a timeout. The receiver makes them
/// non-blocking afterwards and reads the frames itself, starting with the bytes the handshake
/// read past the response (returned beside each socket).
pub fn connect_ws(addr: &SocketAddr, n: usize, what: &str) -> Result<Vec<WsClient>, String> {
    (0..n)
        .map(|i| connect_ws_one(addr, &format!("{what} {i} of {n}")))
        .collect()
}

/// One WebSocket client, as [`connect_ws`] makes them.
pub fn connect_ws_one(addr: &SocketAddr, what: &str) -> Result<WsClient, String> {
    let url = format!("ws://{addr}/ws");
    // The WebSocket lives only for the handshake, but tungstenite allocates its whole read
    // buffer up front (128 KiB by default): take 16 KiB, what relayd writes at a time.
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let limit = Some(Duration::from_secs(5));
    let fail = |e: String| format!("{what}: {addr}: {e}");
    let s = TcpStream::connect_timeout(addr, Duration::from_secs(5))
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    s.set_nodelay(true)
        .and_then(|_| s.set_read_timeout(limit))
        .and_then(|_| s.set_write_timeout(limit))
        .map_err(|e| fail(e.to_string()))?;
    let sock = Arc::new(s);
    let (ws, _) = tungstenite::client::client_with_config(
        url.as_str(),
        Shared::new(Arc::clone(&sock)),
        Some(config),
    )
    .map_err(|e| fail(format!("WebSocket handshake: {e}")))?;
    let tail = ws.get_ref().tail().map_err(fail)?;
    sock.set_read_timeout(None)
        .and_then(|_| sock.set_write_timeout(None))
        .map_err(|e| fail(e.to_string()))?;
    Ok((sock, tail))
}

/// Seconds to let the relay register `n` clients before calling it stuck.
pub fn register_timeout(n: usize) -> Duration {
    Duration::from_secs(10) + Duration::from_millis(n as u64)
}

pub type Rx = Vec<thread::JoinHandle<io::Result<RxReport>>>;

/// Starts `threads` receiver threads, each with its own share of `conns` (dealt out in
/// turn). Should one fail to start, those already started are stopped and joined.
pub fn spawn_receiver(
    conns: Vec<RxConn>,
    size: usize,
    progress: &Arc<Progress>,
    limits: Limits,
    threads: usize,
) -> Result<Rx, String> {
    let threads = threads.clamp(1, conns.len().max(1));
    let mut groups: Vec<Vec<RxConn>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        groups[i % threads].push(c);
    }
    let mut rx = Vec::with_capacity(threads);
    for group in groups {
        let mine = Arc::clone(progress);
        match thread::Builder::new()
            .name("receiver".into())
            .spawn(move || receiver::receive(group, size, mine, limits))
        {
            Ok(h) => rx.push(h),
            Err(e) => {
                progress.stop.store(true, Ordering::SeqCst);
                let _ = join_receiver(rx, progress);
                return Err(format!("cannot start a receiver thread: {e}"));
            }
        }
    }
    Ok(rx)
}

/// Starts the receiver on `conns`, then sends probe lines from `prober` until the relay has
/// registered every one of `conns`. Should it never, the receiver is stopped and joined
/// before the error returns, so that no thread of a failed run lives on.
pub fn receive_registered(
    conns: Vec<RxConn>,
    prober: &TcpStream,
    p: &Params,
    progress: &Arc<Progress>,
    until: Instant,
) -> Result<Rx, String> {
    let need = conns.len();
    let across_redis = conns.iter().any(|c| c.node != 0);
    let limits = Limits {
        deadline: until,
        drain: p.drain,
    };
    let rx = spawn_receiver(conns, p.size, progress, limits, p.rx_threads)?;
    if let Err(e) = sender::probe(prober, 0, p.size, need, progress, register_timeout(need)) {
        progress.stop.store(true, Ordering::SeqCst);
        let _ = join_receiver(rx, progress);
        if across_redis {
            return Err(format!(
                "{e} (a receiver on another node hears node 0 only through Redis: is its link \
                 up?)"
            ));
        }
        return Err(e);
    }
    Ok(rx)
}

pub fn join_receiver(rx: Rx, progress: &Progress) -> Result<RxReport, String> {
    let mut all: Option<RxReport> = None;
    let mut err = None;
    for h in rx {
        match h.join() {
            Ok(Ok(rep)) => match &mut all {
                Some(a) => a.merge(rep),
                None => all = Some(rep),
            },
            Ok(Err(e)) => err = err.or(Some(format!("receiver: {e}"))),
            Err(_) => err = err.or(Some("receiver thread panicked".into())),
        }
        if err.is_some() {
            // One thread's failure ends the run: the others stop rather than wait it out.
            progress.stop.store(true, Ordering::SeqCst);
        }
    }
    progress.stop.store(true, Ordering::SeqCst);
    match (err, all) {
        (Some(e), _) => Err(e),
        (None, Some(rep)) => Ok(rep),
        (None, None) => Err("no receiver thread".into()),
    }
}

/// CPU readings at the start of the measured phase.
pub struct Clock {
    wall: Instant,
    own: Duration,
    server: Option<f64>,
    /// Every process of the server (all nodes and Redis, with `--nodes`).
    pids: Vec<u32>,
}

impl Clock {
    pub fn start(pids: Vec<u32>) -> Clock {
        Clock {
            wall: Instant::now(),
            own: sys::own_cpu_time(),
            server: procstat::total(&pids, procstat::cpu_secs),
            pids,
        }
    }

    pub fn measure(&self, rep: &RxReport, progress: &Progress, size: usize) -> Measure {
        let start_ns = progress.start_ns.load(Ordering::SeqCst);
        let done_ns = progress.done_ns.load(Ordering::SeqCst);
        let wall = self.wall.elapsed().as_secs_f64();
        let own = (sys::own_cpu_time() - self.own).as_secs_f64();
        let server_secs = match (procstat::total(&self.pids, procstat::cpu_secs), self.server) {
            (Some(b), Some(a)) => Some(b - a),
            _ => None,
        };
        let server = server_secs.map(|s| 100.0 * s / wall);
        Measure::new(
            rep,
            start_ns,
            done_ns,
            size,
            100.0 * own / wall,
            server,
            server_secs,
        )
    }
}
