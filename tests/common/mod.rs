//! Test helpers: a server on 127.0.0.1 port 0 (in-process or the built binary) and clients
//! whose every read has a deadline.
//!
//! Synchronisation without sleeps: the accept loop admits connections in the order they were
//! made, so once a line sent by the most recently connected client has reached anyone, every
//! earlier client is registered too.
//!
//! One tree, included once by each test binary as its `common` module. The submodules build
//! on this module (`super`), never the other way round: `chat`, a chat-mode server with its
//! control socket and clients of its own; `cluster`, a `redis-server` and relayd nodes; `ws`,
//! WebSocket clients; `json`, `relayd.v1.json` clients; `api`, the HTTP API with curl;
//! `tokens`, signed tokens; `browser`, headless Chromium; `page`, relayd's page in it, read
//! and driven through DevTools; `link`, a TCP link the test can cut.

pub mod api;
pub mod browser;
pub mod chat;
pub mod cluster;
pub mod json;
pub mod link;
pub mod page;
pub mod tls;
pub mod tokens;
pub mod ws;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown as SocketShutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use relayd::{Config, Shutdown};

/// How long any single read in a test may block before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A relayd running in this process, on its own thread.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    pub fn start(config: Config) -> Server {
        Server::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), config)
    }

    /// Like [`Server::start`], on a listener the caller bound (with `relayd::bind`, say).
    pub fn start_on(listener: TcpListener, config: Config) -> Server {
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let thread = thread::spawn(move || relayd::run(vec![listener], config, s));
        Server {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Triggers shutdown and waits for `run` to return.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            t.join()
                .expect("server thread panicked")
                .expect("run failed");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !thread::panicking() {
            self.stop_inner();
        } else {
            self.shutdown.trigger();
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).unwrap())
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        let reader = BufReader::with_capacity(64 * 1024, stream.try_clone().unwrap());
        Client { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one line (through `\n`); fails the test on timeout or end of stream.
    pub fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(_) if line.ends_with(b"\n") => line,
            Ok(_) => panic!("stream ended after {:?}", String::from_utf8_lossy(&line)),
            Err(e) => panic!(
                "no line within {TIMEOUT:?} ({e}); got {:?}",
                String::from_utf8_lossy(&line)
            ),
        }
    }

    /// Reads up to and including the next `\n`, or what is left before end of stream (empty
    /// at end of stream). For readers that must tell EOF, a reset and a timeout apart.
    pub fn try_line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        Ok(line)
    }

    pub fn expect(&mut self, want: &[u8]) {
        let got = self.line();
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    }

    /// The buffered reading side, for reads the helpers here do not cover.
    pub fn reader_mut(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.reader
    }

    /// Reads exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        read_exactly(&mut self.reader, n)
    }

    /// Asserts the server closes the connection without sending anything more.
    pub fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "expected end of stream, got {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) => panic!("no end of stream within {TIMEOUT:?}: {e}"),
        }
    }

    /// Reads everything until the server closes the connection.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        if let Err(e) = self.reader.read_to_end(&mut rest) {
            panic!(
                "no end of stream within {TIMEOUT:?}: {e} (after {} bytes)",
                rest.len()
            );
        }
        rest
    }

    pub fn half_close(&self) {
        self.stream.shutdown(SocketShutdown::Write).unwrap();
    }

    /// Vanishes abruptly: closes with `SO_LINGER` 0, so the server gets an RST, not a FIN.
    pub fn reset(self) {
        reset(self.stream);
    }
}

/// The built `relayd` binary, running on 127.0.0.1 port 0, with its log captured.
pub struct Daemon {
    pub child: Child,
    pub addrs: Vec<SocketAddr>,
    log: Receiver<String>,
}

impl Daemon {
    /// Starts `relayd ARGS` (plus `--bind 127.0.0.1:0` unless ARGS bind) and waits for it to
    /// log its listen addresses.
    pub fn spawn(args: &[&str]) -> Daemon {
        Daemon::spawn_limited(args, None)
    }

    /// Like [`Daemon::spawn`], with `RLIMIT_NOFILE` set to `(soft, hard)` in the child before
    /// it starts. To cap relayd, set both: it raises its soft limit to the hard one.
    pub fn spawn_limited(args: &[&str], nofile: Option<(u64, u64)>) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relayd"));
        if let Some((soft, hard)) = nofile {
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Daemon::spawn_command(cmd, args)
    }

    /// Like [`Daemon::spawn`], with these environment variables set for the daemon.
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relayd"));
        cmd.envs(env.iter().copied());
        Daemon::spawn_command(cmd, args)
    }

    /// Starts `cmd`, the relayd binary, with `args` (and `--bind 127.0.0.1:0` unless they
    /// bind), its log captured, and waits for it to listen.
    fn spawn_command(mut cmd: Command, args: &[&str]) -> Daemon {
        if !args.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        cmd.args(args);
        let mut daemon = Daemon::start(cmd);
        if args.contains(&"-q") {
            // Listen addresses are logged at info, which -q hides: the caller bound a known
            // port, and we wait for it to accept.
            let spec = args[args.iter().position(|a| *a == "--bind").unwrap() + 1];
            let addr: SocketAddr = spec.parse().unwrap();
            eventually("relayd to listen", || TcpStream::connect(addr).is_ok());
            daemon.addrs.push(addr);
            return daemon;
        }
        let binds = args.iter().filter(|a| **a == "--bind").count().max(1);
        daemon.wait_listening(binds);
        daemon
    }

    /// Starts `cmd` (relayd, or a program that runs it) with its log captured, without
    /// waiting for anything.
    pub fn start(mut cmd: Command) -> Daemon {
        // The test's own RUST_LOG is not the daemon's; one the test gives it (`spawn_env`)
        // is.
        if !cmd.get_envs().any(|(k, v)| k == "RUST_LOG" && v.is_some()) {
            cmd.env_remove("RUST_LOG");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = lines_of(child.stderr.take().unwrap());
        Daemon {
            child,
            addrs: Vec::new(),
            log,
        }
    }

    /// Waits until the daemon has logged `n` more listen addresses, and records them.
    pub fn wait_listening(&mut self, n: usize) {
        for _ in 0..n {
            let line = self.wait_log("listening on ");
            let addr = line.rsplit("listening on ").next().unwrap().trim();
            self.addrs.push(addr.parse().unwrap());
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addrs[0])
    }

    /// A port on 127.0.0.1 that was free a moment ago, for a daemon whose log is too quiet
    /// to tell its port.
    pub fn free_addr() -> String {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        self.log_until(needle).pop().unwrap()
    }

    /// The address of the daemon's (first) `--ws-bind` listener, as its log tells it.
    pub fn ws_addr(&self) -> SocketAddr {
        let line = self.wait_log("listening for browsers on http://");
        line.rsplit("http://")
            .next()
            .unwrap()
            .trim_end_matches('/')
            .parse()
            .unwrap()
    }

    /// The log lines logged so far and not yet consumed, for failure messages.
    pub fn log_so_far(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// Stops the daemon (SIGTERM), and returns its whole log, which it checks reached the
    /// daemon's last line: for checks of what was never logged, which the lines read so far
    /// cannot prove (the reading thread may lag behind).
    pub fn stop_and_read_log(&mut self) -> (Option<i32>, Vec<String>) {
        self.signal(libc::SIGTERM);
        let code = self.wait_exit();
        let log = self.log_to_end();
        assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
        (code, log)
    }

    /// Every log line until its stderr ends (the process exited and the reading thread
    /// passed on all it read), within [`TIMEOUT`]: after [`Daemon::wait_exit`], what
    /// `log_so_far` may not have yet.
    pub fn log_to_end(&self) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(RecvTimeoutError::Disconnected) => return seen,
                Err(RecvTimeoutError::Timeout) => panic!("stderr still open: {seen:?}"),
            }
        }
    }

    /// Returns the log lines up to and including the first that contains `needle`.
    pub fn log_until(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => panic!("relayd never logged {needle:?}; it logged {seen:?}"),
            }
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "relayd did not exit within {TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's peak resident memory (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmRSS:")
    }

    /// Asserts the daemon's peak resident memory stayed under `baseline_kib + slack_kib`.
    pub fn assert_peak_rss_within(&self, baseline_kib: u64, slack_kib: u64) {
        let peak = self.peak_rss_kib();
        assert!(
            peak < baseline_kib + slack_kib,
            "peak RSS {peak} KiB, baseline {baseline_kib} KiB"
        );
    }

    pub fn threads(&self) -> u64 {
        status_field(self.child.id(), "Threads:")
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// CPU time the daemon has used so far (user + system, all threads).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_field(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line[key.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A path in the temporary directory that no other test (or test process) uses.
pub fn temp_path(what: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "relayd-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Closes `stream` with `SO_LINGER` 0: the kernel sends an RST instead of a FIN.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// Lines of 1 KiB, each numbered, so a receiver can tell loss, order and corruption apart.
pub fn numbered_lines(count: usize) -> Vec<u8> {
    let mut all = Vec::with_capacity(count * 1024);
    for i in 0..count {
        let start = all.len();
        write!(all, "{i:08} ").unwrap();
        all.resize(start + 1023, b'a' + (i % 26) as u8);
        all.push(b'\n');
    }
    all
}

/// Polls `cond` every few milliseconds until it holds; fails the test after `TIMEOUT`.
/// For conditions no event announces (a thread count falling back), never as a stand-in
/// for reading the bytes a test expects.
pub fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_within(what, TIMEOUT, cond);
}

/// [`eventually`] with another limit than `TIMEOUT`, for helpers whose tests wait less.
pub fn eventually_within(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reads exactly `n` bytes from `reader`, failing the test if they do not come.
pub fn read_exactly(reader: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    reader.read_exact(&mut buf).unwrap();
    buf
}

/// Each line `output` yields (a child's stdout or log), sent on as it comes by a thread of
/// its own, until the end of the output or until the receiver is dropped.
pub fn lines_of(output: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A TCP connection to `addr` whose receive buffer is set to `rcvbuf` bytes before it
/// connects (the kernel fixes the window scale then), so the daemon's writes to it fill up
/// quickly.
pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(rcvbuf).unwrap();
    s.connect(&addr.into()).unwrap();
    s.into()
}

/// A connection to the daemon's control socket.
pub struct AdminConn {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl AdminConn {
    /// Wraps a connected control socket; each read waits at most `timeout`.
    pub fn new(s: UnixStream, timeout: Duration) -> AdminConn {
        s.set_read_timeout(Some(timeout)).unwrap();
        AdminConn {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    /// One command; its answer without the closing empty line.
    pub fn command(&mut self, command: &str) -> String {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .unwrap();
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            self.reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("no answer to {command:?}: {e} (got {answer:?})"));
            assert!(
                line.ends_with('\n'),
                "admin answer cut short: {answer}{line}"
            );
            if line == "\n" {
                return answer;
            }
            answer.push_str(&line);
        }
    }
}

/// One command over the control socket at `path` (reads wait at most [`TIMEOUT`]); the
/// answer without its closing empty line.
pub fn admin_command(path: &Path, command: &str) -> String {
    AdminConn::new(UnixStream::connect(path).unwrap(), TIMEOUT).command(command)
}

/// The value of the counter `key` in the answer to an admin `stats`.
pub fn stat_in(stats: &str, key: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key} in {stats}"))
        .parse()
        .unwrap()
}

/// Waits until the thread `flooding`, which counts the bytes it has written in `written`, is
/// paced on a slow receiver: `pending` (the bytes the daemon holds for the receiver) is at
/// least 32 KiB and `written` has not moved for half a second. `sender` and `receiver` name
/// the two in failure messages. Fails if the flood ends first or after 20 s.
pub fn wait_until_paced<T>(
    sender: &str,
    receiver: &str,
    written: &AtomicUsize,
    flooding: &JoinHandle<T>,
    mut pending: impl FnMut() -> usize,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let pending = pending();
        let now = written.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        }
        assert!(
            !flooding.is_finished(),
            "{sender}'s flood ended before it was paced ({now} bytes written)"
        );
        if pending >= 32 * 1024 && since.elapsed() >= Duration::from_millis(500) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{sender} was never paced on {receiver} ({receiver} pending {pending}, {sender} \
             wrote {now} bytes)"
        );
        // Polling interval for the admin list and the sender's progress, not a
        // synchronisation.
        thread::sleep(Duration::from_millis(50));
    }
}

/// `relayd --bind 127.0.0.1:0 --console`, with its stdin, stdout and stderr piped.
pub fn spawn_console() -> Child {
    Command::new(env!("CARGO_BIN_EXE_relayd"))
        .args(["--bind", "127.0.0.1:0", "--console"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Whether a socket error only means "not now" (a timeout set so that a loop can look at its
/// stop flag, or a signal): the loop goes on rather than ending.
pub fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// One HTTP request to `addr` (`GET /metrics`, say): the status line and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: relayd\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// A child process (stunnel, a browser) killed and reaped when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A connection to `to` from the local address `src` (any of 127.0.0.0/8 is this machine),
/// so that one test can be several client addresses.
pub fn connect_from(src: &str, to: SocketAddr) -> Client {
    let src: std::net::IpAddr = src.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(src, 0).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    Client::from_stream(TcpStream::from(socket))
}
