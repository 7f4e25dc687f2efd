//! A `redis-server` and relayd nodes of the test's own, for the cluster tests
//! (`tests/cluster.rs`, raw mode; `tests/cluster_chat.rs`, chat mode).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{Client, Daemon, admin_command, eventually, stat_in, temp_path};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    Daemon::free_addr()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether Redis on the other end of `s` (with a read timeout) answers PING.
pub fn answers_ping<S: Read + Write>(mut s: S) -> bool {
    let mut answer = String::new();
    s.write_all(b"PING\r\n").is_ok()
        && BufReader::new(s).read_line(&mut answer).is_ok()
        && answer.starts_with("+PONG")
}

/// A `redis-server` of the test's own, without persistence.
pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Starts Redis on `port` and waits until it answers PING.
    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package)");
        let redis = Redis { child, port };
        eventually("redis-server to answer PING", || redis.pings());
        redis
    }

    /// Starts Redis on the Unix socket `sock` only, and waits until it answers PING there.
    pub fn start_unix(sock: &Path) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket", sock.to_str().unwrap()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package)");
        // Stopped by pid when the test ends, however it ends.
        let redis = Redis { child, port: 0 };
        eventually("redis-server to answer PING on its socket", || {
            let Ok(s) = UnixStream::connect(sock) else {
                return false;
            };
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            answers_ping(s)
        });
        redis
    }

    pub fn pings(&self) -> bool {
        let Ok(s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        answers_ping(s)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it (SIGKILL, by pid) and waits for it to be gone.
    pub fn kill(mut self) -> u16 {
        self.stop();
        self.port
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A relayd node in the cluster at `url`, with a control socket for `stats`.
pub struct Node {
    pub daemon: Daemon,
    pub admin: PathBuf,
}

impl Node {
    pub fn start(url: &str, id: &str) -> Node {
        Node::start_with(url, id, &[])
    }

    /// A node with more options (`--chat`, `--history N`, ...).
    pub fn start_with(url: &str, id: &str, more: &[&str]) -> Node {
        let admin = temp_path(&format!("cluster-{id}"));
        let mut args = vec![
            "--redis",
            url,
            "--node-id",
            id,
            "--admin",
            admin.to_str().unwrap(),
        ];
        args.extend_from_slice(more);
        let daemon = Daemon::spawn(&args);
        Node { daemon, admin }
    }

    /// One command on its control socket, the answer without its closing empty line.
    pub fn admin(&self, command: &str) -> String {
        admin_command(&self.admin, command)
    }

    pub fn stat(&self, key: &str) -> u64 {
        stat_in(&admin_command(&self.admin, "stats"), key)
    }

    pub fn wait_linked(&self) {
        eventually("the cluster link", || self.stat("redis_connected") == 1);
    }

    pub fn connect(&self) -> Client {
        self.daemon.connect()
    }
}

/// One Redis command over RESP (arguments without spaces), its first reply line, e.g.
/// `$5` for a string (see [`Redis::get`]).
impl Redis {
    pub fn get(&self, key: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("GET {key}\r\n").as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        r.read_line(&mut head).unwrap();
        if head.starts_with("$-1") {
            return None;
        }
        let mut value = String::new();
        r.read_line(&mut value).unwrap();
        Some(value.trim_end().to_string())
    }
}

impl Redis {
    /// `SET key value` (any bytes), for a test that plays another node.
    pub fn set(&self, key: &str, value: &[u8]) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut cmd = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
            key.len(),
            value.len()
        )
        .into_bytes();
        cmd.extend_from_slice(value);
        cmd.extend_from_slice(b"\r\n");
        s.write_all(&cmd).unwrap();
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).unwrap();
        assert_eq!(answer, "+OK\r\n");
    }
}
