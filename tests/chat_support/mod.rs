//! A real relayd on 127.0.0.1 port 0 with its control socket, and line-oriented clients with
//! read timeouts, for the chat/admin tests. Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use relayd::{Config, Shutdown};

/// How long any single expected event may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    pub addr: SocketAddr,
    pub admin: PathBuf,
    shutdown: Shutdown,
    thread: Option<JoinHandle<std::io::Result<()>>>,
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
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
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
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let thread = {
            let shutdown = shutdown.clone();
            thread::spawn(move || relayd::run(vec![listener], config, shutdown))
        };
        // The admin socket is opened before the first client is accepted.
        wait_until("the admin socket", || UnixStream::connect(&admin).is_ok());
        Server {
            addr,
            admin,
            shutdown,
            thread: Some(thread),
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

    /// Three clients, guest1 to guest3 (a fresh server's first three), each having heard the
    /// join notices of those after it.
    pub fn join_three(&self) -> [Client; 3] {
        let (mut a, _) = self.join();
        let (mut b, _) = self.join();
        a.expect("* guest2 joined (2 online)\n");
        let (c, _) = self.join();
        a.expect("* guest3 joined (3 online)\n");
        b.expect("* guest3 joined (3 online)\n");
        [a, b, c]
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
        let stats = self.admin("stats");
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in {stats}"))
            .parse()
            .unwrap()
    }

    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !thread::panicking() {
            self.finish();
        } else {
            self.shutdown.trigger();
        }
    }
}

/// A connection to the control socket.
pub struct Admin {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Admin {
    pub fn connect(server: &Server) -> Admin {
        let s = UnixStream::connect(&server.admin).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Admin {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    pub fn command(&mut self, command: &str) -> String {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .unwrap();
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
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
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf).unwrap();
        buf
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
