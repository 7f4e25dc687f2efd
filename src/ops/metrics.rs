//! `--metrics ADDR`: `GET /metrics` in the Prometheus text format (version 0.0.4), on a
//! listener of its own, never the relay port.
//!
//! A scrape cannot slow relaying: the figures are gathered first (each lock taken briefly,
//! none held while writing), and each scrape is served on its own thread, with read and write
//! timeouts, at most [`MAX_SCRAPES`] at once. A scraper that connects and never reads (or
//! never asks) holds one of those threads until its timeout, and nothing else. The request
//! head is read by the same reader as the `--ws-bind` front's (`transport/http.rs`), with
//! bounds of its own.
//!
//! The text format is written by hand: it is a dozen lines of `name value`, and
//! `tests/integration/metrics.rs` parses it with a Prometheus parser.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{Shutdown as SocketShutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use log::{debug, info, warn};

use crate::daemon::Daemon;
use crate::ops::listening::{self, Listening};
use crate::policy::token::TokenError;
use crate::sync::Counted;
use crate::transport::http::{self, HeadError};

/// Scrapes served at once; more are closed unanswered until one ends. Prometheus makes one
/// at a time per target; the rest is room for people with curl and for stuck connections.
const MAX_SCRAPES: usize = 16;
/// How long a scraper has to send its request (a real one sends it at once)...
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// ...and to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head (request line and headers); a longer one is a bad request.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves `listener` on a thread of its own until it is stopped.
pub(crate) fn start(daemon: Arc<Daemon>, listener: TcpListener) -> io::Result<Listening> {
    info!("metrics on http://{}/metrics", listener.local_addr()?);
    listening::start("metrics", listener, move |l| accept_loop(&daemon, l))
}

fn accept_loop(daemon: &Arc<Daemon>, listener: &TcpListener) {
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if daemon.is_stopping() {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!("metrics accept: {e}");
                // Out of descriptors, say: the relay matters more than a scrape.
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Some(place) = Counted::take(&busy, MAX_SCRAPES) else {
            debug!("metrics: {MAX_SCRAPES} scrapes already in progress, closing one more");
            continue;
        };
        let daemon = Arc::clone(daemon);
        // The place goes with the thread, and is given back when it ends (or never starts).
        let spawned = thread::Builder::new()
            .name("metrics-scrape".into())
            .spawn(move || {
                let _place = place;
                if let Err(e) = serve(&daemon, stream) {
                    debug!("metrics scrape: {e}");
                }
            });
        if let Err(e) = spawned {
            warn!("cannot start a metrics thread: {e}");
        }
    }
}

/// Answers one request, then closes the connection.
fn serve(daemon: &Daemon, mut stream: TcpStream) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let route = match http::read_head(&stream, MAX_REQUEST, REQUEST_TIMEOUT) {
        Ok(head) => route(&head),
        Err(HeadError::TimedOut) => {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request too slow"));
        }
        Err(HeadError::Failed(e)) => return Err(e),
        // Cut short, too long or not HTTP: a scraper never sends such a thing, a person
        // trying things by hand might, and is told.
        Err(
            HeadError::Closed
            | HeadError::TooLarge
            | HeadError::TooManyHeaders
            | HeadError::NotHttp,
        ) => Route::BadRequest,
    };
    let response = match route {
        Route::Metrics => respond(
            "200 OK",
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
            &render(daemon),
        ),
        Route::NotFound => respond("404 Not Found", "", "only /metrics is served here\n"),
        Route::BadMethod => respond(
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "only GET is served here\n",
        ),
        Route::BadRequest => respond("400 Bad Request", "", "bad request\n"),
    };
    stream.write_all(response.as_bytes())?;
    let _ = stream.shutdown(SocketShutdown::Write);
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
    BadRequest,
}

/// Where the request head at the start of `head` goes.
fn route(head: &[u8]) -> Route {
    let Ok(Some(request)) = http::parse(head) else {
        return Route::BadRequest;
    };
    match (request.path, request.method) {
        ("/metrics", "GET") => Route::Metrics,
        ("/metrics", _) => Route::BadMethod,
        _ => Route::NotFound,
    }
}

fn respond(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The exposition: every counter of the admin `stats`, the gauges, and the histogram.
pub(crate) fn render(daemon: &Daemon) -> String {
    let stats = daemon.stats();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    // Each peer's lock in turn, after the registry's is released.
    let pending: usize = daemon.all_peers().iter().map(|p| p.pending()).sum();
    let gauges: [(&str, &str, u64); 8] = [
        (
            "relayd_uptime_seconds",
            "Seconds since the daemon started.",
            stats.started.elapsed().as_secs(),
        ),
        (
            "relayd_clients",
            "Clients connected now, authenticated or not (each holds a --max-clients slot).",
            daemon.client_count() as u64,
        ),
        (
            "relayd_max_clients",
            "The --max-clients limit.",
            daemon.config().max_clients as u64,
        ),
        (
            "relayd_peak_clients",
            "The most clients connected at once since the daemon started.",
            get(&stats.peak_clients),
        ),
        (
            "relayd_rooms",
            "Rooms with at least one member on this node.",
            daemon.room_count() as u64,
        ),
        (
            "relayd_pending_bytes",
            "Bytes queued for clients that their sockets have not taken yet.",
            pending as u64,
        ),
        (
            "relayd_redis_connected",
            "1 while this node's link to the cluster's Redis (--redis) is up.",
            get(&stats.redis_connected),
        ),
        (
            "relayd_cluster_queue_bytes",
            "Bytes of local lines waiting to be published to the cluster.",
            get(&stats.cluster_queue_bytes),
        ),
    ];
    let counters: [(&str, &str, u64); 20] = [
        (
            "relayd_connections_accepted_total",
            "Connections admitted.",
            get(&stats.accepted),
        ),
        (
            "relayd_connections_refused_full_total",
            "Connections refused because --max-clients were connected.",
            get(&stats.refused_full),
        ),
        (
            "relayd_received_lines_total",
            "Complete lines read from clients.",
            get(&stats.lines_in),
        ),
        (
            "relayd_queued_lines_total",
            "Relayed lines queued for recipients, once per recipient.",
            get(&stats.lines_out),
        ),
        (
            "relayd_received_bytes_total",
            "Bytes read from clients.",
            get(&stats.bytes_in),
        ),
        (
            "relayd_queued_bytes_total",
            "Bytes queued for clients, relayd's own lines included.",
            get(&stats.bytes_out),
        ),
        (
            "relayd_rate_limited_lines_total",
            "Lines dropped by --rate.",
            get(&stats.dropped_rate_limit),
        ),
        (
            "relayd_too_long_lines_total",
            "Lines longer than --max-line, discarded.",
            get(&stats.too_long),
        ),
        (
            "relayd_filtered_dropped_lines_total",
            "Lines the word filter (--filter-file) dropped.",
            get(&stats.filtered_dropped),
        ),
        (
            "relayd_filtered_masked_lines_total",
            "Lines the word filter (--filter-file) relayed masked.",
            get(&stats.filtered_masked),
        ),
        (
            "relayd_refused_banned_total",
            "Connections, /auths and /joins refused for a ban.",
            get(&stats.refused_banned),
        ),
        (
            "relayd_muted_dropped_lines_total",
            "Lines of muted clients, not relayed.",
            get(&stats.dropped_muted),
        ),
        (
            "relayd_slow_mode_dropped_lines_total",
            "Lines over a room's slow mode, not relayed.",
            get(&stats.dropped_slow),
        ),
        (
            "relayd_slow_consumer_disconnects_total",
            "Clients disconnected as too slow (--stall-timeout, --max-pending, --write-timeout).",
            get(&stats.slow_consumer_kicks),
        ),
        (
            "relayd_live_dropped_lines_total",
            "Relayed lines dropped for viewers of live rooms (--live-rate, --live-max-age).",
            get(&stats.live_dropped),
        ),
        (
            "relayd_idle_disconnects_total",
            "Clients disconnected by --idle-timeout.",
            get(&stats.idle_kicks),
        ),
        (
            "relayd_cluster_published_lines_total",
            "Local lines published to the other nodes.",
            get(&stats.cluster_published),
        ),
        (
            "relayd_cluster_received_lines_total",
            "Lines received from other nodes.",
            get(&stats.cluster_received),
        ),
        (
            "relayd_cluster_dropped_lines_total",
            "Local lines not published: the cluster queue was full or Redis failed.",
            get(&stats.cluster_dropped),
        ),
        (
            "relayd_tokens_accepted_total",
            "Signed tokens accepted (a client identified, or its token refreshed).",
            get(&stats.tokens_accepted),
        ),
    ];
    let mut out = String::new();
    for (kind, rows) in [("gauge", &gauges[..]), ("counter", &counters[..])] {
        for (name, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
    }
    // One series per reason, each always present so that a rate() has a start; the label is
    // the word the client was told, `_` for its spaces, as PromQL users type labels.
    let name = "relayd_tokens_refused_total";
    let _ = writeln!(
        out,
        "# HELP {name} Signed tokens refused, by the reason the client was told."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (reason, n) in TokenError::REASONS.iter().zip(&stats.tokens_refused) {
        let reason = reason.replace(' ', "_");
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", get(n));
    }
    stats.line_wait.expose(
        "relayd_line_wait_seconds",
        "How long relayed lines waited in relayd, from read to written to a recipient's socket.",
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_get_metrics() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"hello\n\n"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }
}
