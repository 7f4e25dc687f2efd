//! `danmaku`: bullet comments to a crowd. Thousands of viewers (WebSocket, TCP or a mix) that
//! only read, a few TCP senders sharing one total rate, and `--slow` viewers that never read.
//! The viewers are read by the same epoll receiver threads as every other scenario's clients
//! (`--rx-threads`), never a thread per viewer, and each keeps its own figures
//! ([`crate::receiver::ViewerStats`]), summed up in [`crate::viewers`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::params::Params;
use crate::procstat;
use crate::receiver::{self, Progress, RxConn};
use crate::report::Measure;
use crate::sender;
use crate::setup::{
    Clock, connect, connect_one, connect_ws_one, join_receiver, receive_registered,
};
use crate::sys;
use crate::target::Servers;
use crate::viewers::{Slow, Viewers};

/// How long after `--duration` a sender may still hand the lines due by then to the kernel.
/// Whatever it could not write by then is never sent: that is a sender paced by the relay.
const LAST_LINES: Duration = Duration::from_millis(100);

/// A viewer's socket, and for a WebSocket viewer what its handshake read past the response.
type Viewer = (Arc<TcpStream>, Option<Vec<u8>>);

/// One run (on one node: `main` refuses `--nodes`): connect everyone, wait until every viewer
/// is registered, send for `--duration`, then read the slow viewers' fate.
pub fn run(p: &Params, servers: &Servers, until: Instant) -> Result<(Measure, Viewers), String> {
    let server = servers.first();
    let pids = servers.pids();
    let rss_before = procstat::total(&pids, procstat::rss_kib);
    let viewers = connect_viewers(p, server.addr, server.ws_addr, 0, p.clients, "viewer")?;
    let slow = connect_viewers(
        p,
        server.addr,
        server.ws_addr,
        p.clients,
        p.slow,
        "slow viewer",
    )?;
    let senders = connect(&server.addr, p.senders, "sender")?;
    if p.chat && p.room != "lobby" {
        for (sock, ws) in viewers.iter().chain(&slow) {
            join(sock, ws.is_some(), &p.room)?;
        }
        for s in &senders {
            join(s, false, &p.room)?;
        }
    }
    let progress = Progress::new(p.senders);
    let mut conns: Vec<RxConn> = viewers
        .into_iter()
        .map(|(sock, ws)| RxConn {
            ws,
            viewer: true,
            ..RxConn::listener(sock)
        })
        .collect();
    // The senders hear each other: read them too, or the relay would cut them off as
    // stalled. Sender 0 sends the probes, so it counts as registered.
    conns.extend(senders.iter().enumerate().map(|(i, s)| RxConn {
        own: Some(i as u16),
        prober: i == 0,
        ..RxConn::listener(Arc::clone(s))
    }));
    let rx = receive_registered(conns, &senders[0], p, &progress, until)?;
    let rss_idle = procstat::total(&pids, procstat::rss_kib);
    let clock = Clock::start(pids);
    let rate = p.rate.unwrap_or(2000.0);
    let stop = (Instant::now() + p.duration + LAST_LINES).min(until);
    let each = rate / p.senders as f64;
    let sent = sender::chatter(&senders, each, p.duration, p.size, &progress, stop);
    let rep = join_receiver(rx, &progress)?;
    sent.map_err(|e| format!("sender: {e}"))?;
    let m = clock.measure(&rep, &progress, p.size);
    let slow_fate = read_slow(&slow);
    let idle_rss = rss_before.zip(rss_idle);
    Ok((m, Viewers::new(p, rep, &progress, slow_fate, idle_rss)))
}

/// `n` viewers, numbered from `first` (which decides each one's transport with `--transport
/// mix`), connected to `addr` (TCP) or `ws` (WebSocket).
fn connect_viewers(
    p: &Params,
    addr: SocketAddr,
    ws: Option<SocketAddr>,
    first: usize,
    n: usize,
    what: &str,
) -> Result<Vec<Viewer>, String> {
    (first..first + n)
        .map(|i| {
            let what = format!("{what} {} of {n}", i - first);
            if !p.transport.ws(i) {
                return Ok((connect_one(&addr, &what)?, None));
            }
            let ws = ws.ok_or("WebSocket viewers need the relayd started here")?;
            let (sock, tail) = connect_ws_one(&ws, &what)?;
            Ok((sock, Some(tail)))
        })
        .collect()
}

/// `/join ROOM` (relayd's `--chat`), as a line or, from a WebSocket client, a masked text
/// frame. The socket is still blocking; a line this short goes out whole.
fn join(sock: &TcpStream, ws: bool, room: &str) -> Result<(), String> {
    let line = format!("/join {room}");
    let bytes = if ws {
        let mut frame = Frame::message(line.into_bytes(), OpCode::Data(Data::Text), true);
        frame.header_mut().mask = Some(receiver::mask());
        let mut out = Vec::new();
        // Formatting into a Vec cannot fail.
        let _ = frame.format(&mut out);
        out
    } else {
        (line + "\n").into_bytes()
    };
    let mut s = sock;
    s.write_all(&bytes)
        .map_err(|e| format!("/join {room}: {e}"))
}

/// What became of the viewers that never read: now each is read to its end. One the server
/// closed reaches end of stream (or a reset) once what was in flight is read; one it still
/// holds gives what was waiting for it, then nothing. Read until every one is decided or
/// 300 ms pass without a byte, 5 s at most.
fn read_slow(slow: &[Viewer]) -> Slow {
    let mut fate = Slow {
        count: slow.len(),
        cut: 0,
        bytes_waiting: 0,
    };
    let mut open: Vec<&TcpStream> = slow.iter().map(|(s, _)| &**s).collect();
    for s in &open {
        let _ = s.set_nonblocking(true);
    }
    let mut buf = vec![0u8; 256 * 1024];
    let (start, mut quiet) = (Instant::now(), Instant::now());
    while !open.is_empty()
        && quiet.elapsed() < Duration::from_millis(300)
        && start.elapsed() < Duration::from_secs(5)
    {
        open.retain(|s| {
            let mut s = *s;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(n) => {
                        fate.bytes_waiting += n as u64;
                        quiet = Instant::now();
                    }
                    Err(e) if sys::retryable(&e) => return true,
                    Err(_) => return false,
                }
            }
        });
        thread::sleep(Duration::from_millis(5));
    }
    fate.cut = slow.len() - open.len();
    fate
}
