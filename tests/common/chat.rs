//! A real relayd on 127.0.0.1 port 0 with its control socket, and line-oriented clients with
//! read timeouts, for the chat/admin tests. Every wait is bounded.
//!
//! The in-process server and the polling are the raw-mode helpers' own (`super`), shared
//! rather than written twice; only the admin socket and the timeout are this module's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use relayd::Config;

/// How long any single expected event may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    pub addr: SocketAddr,
    pub admin: PathBuf,
    running: super::Server,
}

/// A fresh admin socket path for this test.
pub fn socket_path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "relayd-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Polls `ready` until it holds, failing the test after [`TIMEOUT`].
pub fn wait_until(what: &str, ready: impl FnMut() -> bool) {
    super::eventually_within(what, TIMEOUT, ready);
}

pub fn chat_config() -> Config {
    Config {
        chat: true,
        ..Config::default()
    }
}

impl Server {
    pub fn start(mut config: Config) -> Server {
        let admin = socket_path();
        config.admin = Some(admin.clone());
        let listener = relayd::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let running = super::Server::start_on(listener, config);
        // The admin socket is opened before the first client is accepted.
        wait_until("the admin socket", || UnixStream::connect(&admin).is_ok());
        Server {
            addr: running.addr,
            admin,
            running,
        }
    }

    pub fn connect(&self) -> Client {
        Client::new(TcpStream::connect(self.addr).unwrap())
    }

    /// Connects in chat mode and reads the welcome line; returns the client's name.
    pub fn join(&self) -> (Client, String) {
        let mut c = self.connect();
        let welcome = c.line();
        let name = welcome
            .strip_prefix("* welcome to relayd, you are ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("not a welcome line: {welcome:?}"))
            .to_string();
        (c, name)
    }

    /// Two clients, guest1 and guest2 (a fresh server's first two), the first having heard
    /// the second join.
    pub fn join_two(&self) -> [Client; 2] {
        let (mut a, _) = self.join();
        let (b, _) = self.join();
        a.expect("* guest2 joined (2 online)\n");
        [a, b]
    }

    /// Three clients, guest1 to guest3 (a fresh server's first three), each having heard the
    /// join notices of those after it.
    pub fn join_three(&self) -> [Client; 3] {
        let [mut a, mut b] = self.join_two();
        let (c, _) = self.join();
        a.expect("* guest3 joined (3 online)\n");
        b.expect("* guest3 joined (3 online)\n");
        [a, b, c]
    }

    /// `N` raw-mode clients on a fresh server, connected in order, once the server has
    /// registered all of them (raw mode sends nothing that would tell).
    pub fn connect_registered<const N: usize>(&self) -> [Client; N] {
        let clients = std::array::from_fn(|_| self.connect());
        self.wait_clients(N);
        clients
    }

    /// One admin command over the control socket; the answer without its closing empty line.
    pub fn admin(&self, command: &str) -> String {
        let mut admin = Admin::connect(self);
        admin.command(command)
    }

    /// Waits until the server has exactly `n` clients (per the admin `stats`).
    pub fn wait_clients(&self, n: usize) {
        let want = format!("\nclients {n}\n");
        wait_until(&format!("{n} clients"), || {
            self.admin("stats").contains(&want)
        });
    }

    /// The value of one `stats` counter.
    pub fn stat(&self, key: &str) -> u64 {
        super::stat_in(&self.admin("stats"), key)
    }

    pub fn stop(self) {
        self.running.stop();
    }
}

/// A connection to the control socket.
pub struct Admin(super::AdminConn);

impl Admin {
    pub fn connect(server: &Server) -> Admin {
        Admin(super::AdminConn::new(
            UnixStream::connect(&server.admin).unwrap(),
            TIMEOUT,
        ))
    }

    pub fn command(&mut self, command: &str) -> String {
        self.0.command(command)
    }
}

pub struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn new(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    pub fn send(&mut self, data: &str) {
        self.send_bytes(data.as_bytes());
    }

    pub fn send_bytes(&mut self, data: &[u8]) {
        self.stream.write_all(data).unwrap();
    }

    /// The next line, with its line end.
    pub fn line_bytes(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader
            .read_until(b'\n', &mut line)
            .unwrap_or_else(|e| panic!("reading a line (got {line:?}): {e}"));
        assert!(
            line.ends_with(b"\n"),
            "connection closed mid-line: {line:?}"
        );
        line
    }

    pub fn line(&mut self) -> String {
        String::from_utf8(self.line_bytes()).unwrap()
    }

    /// Asserts the next line is exactly `want` (line end included).
    pub fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want);
    }

    /// Reads exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        super::read_exactly(&mut self.reader, n)
    }

    /// Asserts the server closed the connection (after everything read so far).
    pub fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "unexpected bytes before EOF: {rest:?}"),
            // A reset after everything was read is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected EOF: {e}"),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}
