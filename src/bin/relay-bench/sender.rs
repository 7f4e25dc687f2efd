//! The sending side: first probes until the relay has registered every client, then the
//! measured lines, either as fast as the relay takes them or paced to a rate.
//!
//! Each line is stamped just before the `write` that carries it, so a line's latency covers
//! everything after the generator decided to send it: the sender's socket, the relay, the
//! receiver's socket.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::payload::{self, now_ns};
use crate::receiver::Progress;
use crate::sys;

/// A full-speed write carries about this much, the size of a socket buffer's worth of lines.
const BATCH_BYTES: usize = 64 * 1024;
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// Sends probe lines from `sock` until `need` clients are ready or `timeout` passes.
pub fn probe(
    sock: &TcpStream,
    sender: u16,
    size: usize,
    need: usize,
    progress: &Progress,
    timeout: Duration,
) -> Result<(), String> {
    let until = Instant::now() + timeout;
    let mut seq = 0;
    let mut line = Vec::with_capacity(size);
    while progress.ready.load(Ordering::SeqCst) < need {
        if Instant::now() >= until {
            return Err(format!(
                "only {} of {need} clients got a probe line within {:.0} s; \
                 is the server dropping clients?",
                progress.ready.load(Ordering::SeqCst),
                timeout.as_secs_f64()
            ));
        }
        if progress.stop.load(Ordering::SeqCst) {
            return Err("every connection was closed before the run started".into());
        }
        line.clear();
        payload::encode(&mut line, true, sender, seq, now_ns(), size);
        seq += 1;
        write_until(sock, &line, until).map_err(|e| format!("probe: {e}"))?;
        thread::sleep(PROBE_EVERY);
    }
    Ok(())
}

/// Writes all of `buf`, waiting for room (the socket has a 100 ms write timeout) until
/// `until`. Returns false if it gave up.
fn write_until(mut sock: &TcpStream, buf: &[u8], until: Instant) -> io::Result<bool> {
    let mut off = 0;
    while off < buf.len() {
        match sock.write(&buf[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if sys::retryable(&e) => {
                if Instant::now() >= until {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Sends `lines` measured lines from one socket as sender 0, as fast as the relay takes
/// them (`rate` None) or at `rate` lines per second.
pub fn fanout(
    sock: &TcpStream,
    lines: u64,
    size: usize,
    rate: Option<f64>,
    progress: &Progress,
    until: Instant,
) -> io::Result<()> {
    sock.set_write_timeout(Some(Duration::from_millis(100)))?;
    let per_batch = (BATCH_BYTES / size).max(1) as u64;
    let mut buf = Vec::with_capacity(per_batch as usize * size);
    let start = Instant::now();
    progress.start_ns.store(now_ns(), Ordering::SeqCst);
    let mut seq = 0;
    while seq < lines && !progress.stop.load(Ordering::SeqCst) {
        let due = match rate {
            None => per_batch,
            Some(r) => {
                let due = (start.elapsed().as_secs_f64() * r) as u64 + 1;
                if due <= seq {
                    sleep_until(start + Duration::from_secs_f64(seq as f64 / r), until);
                    if Instant::now() >= until {
                        break;
                    }
                    continue;
                }
                (due - seq).min(per_batch)
            }
        };
        let count = due.min(lines - seq);
        buf.clear();
        let ts = now_ns();
        for k in 0..count {
            payload::encode(&mut buf, false, 0, seq + k, ts, size);
        }
        if !write_until(sock, &buf, until)? {
            break;
        }
        seq += count;
        progress.sent[0].store(seq, Ordering::SeqCst);
    }
    progress.finish_sending();
    Ok(())
}

/// Sends from every socket in `socks` (sender i is `socks[i]`), each at `rate` lines per
/// second for `duration`. Senders are spread evenly over each period rather than all
/// writing at once, like independent clients. Writes never block: a socket that cannot take
/// a line now keeps it for its next turn.
pub fn chatter(
    socks: &[Arc<TcpStream>],
    rate: f64,
    duration: Duration,
    size: usize,
    progress: &Progress,
    until: Instant,
) -> io::Result<()> {
    let n = socks.len();
    let per_client = (rate * duration.as_secs_f64()).round() as u64;
    let period = 1.0 / rate;
    let mut sent = vec![0u64; n];
    let mut backlog: Vec<Vec<u8>> = vec![Vec::new(); n];
    for s in socks {
        s.set_nonblocking(true)?;
    }
    let start = Instant::now();
    progress.start_ns.store(now_ns(), Ordering::SeqCst);
    // When client i's line k is due: start + (k + i/n) * period.
    let due_at = |i: usize, k: u64| (k as f64 + i as f64 / n as f64) * period;
    loop {
        if progress.stop.load(Ordering::SeqCst) || Instant::now() >= until {
            break;
        }
        let t = start.elapsed().as_secs_f64();
        let mut next_due = f64::INFINITY;
        let mut busy = false;
        for i in 0..n {
            while sent[i] < per_client && due_at(i, sent[i]) <= t {
                payload::encode(&mut backlog[i], false, i as u16, sent[i], now_ns(), size);
                sent[i] += 1;
            }
            if !backlog[i].is_empty() {
                let mut sock = &*socks[i];
                match sock.write(&backlog[i]) {
                    Ok(w) => {
                        backlog[i].drain(..w);
                    }
                    Err(e) if sys::retryable(&e) => {}
                    Err(e) => return Err(e),
                }
                busy |= !backlog[i].is_empty();
                // Lines count as sent once handed to the kernel, so that the receiver's
                // expectation never runs ahead of what can arrive.
                let whole = sent[i] - backlog[i].len().div_ceil(size) as u64;
                progress.sent[i].store(whole, Ordering::SeqCst);
            }
            if sent[i] < per_client {
                next_due = next_due.min(due_at(i, sent[i]));
            }
        }
        if next_due.is_infinite() && !busy {
            break;
        }
        let wake = if busy {
            Instant::now() + Duration::from_micros(200)
        } else {
            start + Duration::from_secs_f64(next_due)
        };
        sleep_until(wake, until);
    }
    progress.finish_sending();
    Ok(())
}

fn sleep_until(when: Instant, until: Instant) {
    let when = when.min(until);
    let now = Instant::now();
    if when > now {
        thread::sleep(when - now);
    }
}
