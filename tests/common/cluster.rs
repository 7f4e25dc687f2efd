//! A `redis-server` and relayd nodes of the test's own, for the cluster tests (`cluster`, raw
//! mode; `cluster_chat`, chat mode).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Client, Daemon, admin_command, eventually, stat_in, temp_path};

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
    pub at: At,
}

/// Where a Redis listens.
#[derive(Clone)]
pub enum At {
    Port(u16),
    Socket(PathBuf),
}

/// A connection to Redis, over TCP or a Unix socket.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Redis {
    /// Redis on a free TCP port.
    pub fn start() -> Redis {
        Redis::start_at(At::Port(free_port()))
    }

    /// Redis on a Unix socket in a directory of the test's own. Nothing else can listen
    /// there, also while it is down: a test that kills and restarts it gets its own back,
    /// where a freed TCP port could be taken by another test's Redis meanwhile.
    pub fn start_private(what: &str) -> Redis {
        let dir = temp_path(what);
        std::fs::create_dir_all(&dir).unwrap();
        Redis::start_at(At::Socket(dir.join("redis.sock")))
    }

    /// Starts Redis at `at` and waits until it answers PING there.
    pub fn start_at(at: At) -> Redis {
        let mut cmd = Command::new("redis-server");
        match &at {
            At::Port(port) => cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]),
            At::Socket(sock) => cmd.args(["--port", "0", "--unixsocket", sock.to_str().unwrap()]),
        };
        let child = cmd
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package)");
        // Stopped by pid when the test ends, however it ends.
        let redis = Redis { child, at };
        eventually("redis-server to answer PING", || redis.pings());
        redis
    }

    /// A connection with a read timeout, or the error.
    fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        let timeout = Some(Duration::from_secs(5));
        Ok(match &self.at {
            At::Port(port) => {
                let s = TcpStream::connect(("127.0.0.1", *port))?;
                s.set_read_timeout(timeout)?;
                Box::new(s)
            }
            At::Socket(sock) => {
                let s = UnixStream::connect(sock)?;
                s.set_read_timeout(timeout)?;
                Box::new(s)
            }
        })
    }

    pub fn pings(&self) -> bool {
        self.connect().is_ok_and(answers_ping)
    }

    pub fn url(&self) -> String {
        match &self.at {
            At::Port(port) => format!("redis://127.0.0.1:{port}/"),
            At::Socket(sock) => format!("redis+unix://{}", sock.display()),
        }
    }

    /// Kills it (SIGKILL, by pid), waits for it to be gone, and says where it was.
    pub fn kill(mut self) -> At {
        self.stop();
        self.at.clone()
    }

    /// Kills it; a socket it leaves behind is removed (its directory stays, for a restart).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let At::Socket(sock) = &self.at {
            let _ = std::fs::remove_file(sock);
        }
    }

    /// `GET key`: its value, if it has one.
    pub fn get(&self, key: &str) -> Option<String> {
        let mut s = self.connect().unwrap();
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

    /// `SET key value` (any bytes), for a test that plays another node.
    pub fn set(&self, key: &str, value: &[u8]) {
        let mut s = self.connect().unwrap();
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

    /// Any command (arguments as bytes), and Redis's reply.
    pub fn command(&self, args: &[&[u8]]) -> Reply {
        let mut s = self.connect().unwrap();
        let mut cmd = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            cmd.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            cmd.extend_from_slice(arg);
            cmd.extend_from_slice(b"\r\n");
        }
        s.write_all(&cmd).unwrap();
        read_reply(&mut BufReader::new(s))
    }

    /// `KEYS pattern`, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let Reply::Array(keys) = self.command(&[b"KEYS", pattern.as_bytes()]) else {
            panic!("KEYS answered with something else");
        };
        let mut keys: Vec<String> = keys
            .into_iter()
            .map(|k| match k {
                Reply::Bulk(Some(k)) => String::from_utf8(k).unwrap(),
                other => panic!("a key: {other:?}"),
            })
            .collect();
        keys.sort();
        keys
    }

    /// `TTL key`: seconds left, -1 if it never expires, -2 if there is no such key.
    pub fn ttl(&self, key: &str) -> i64 {
        match self.command(&[b"TTL", key.as_bytes()]) {
            Reply::Int(n) => n,
            other => panic!("TTL answered {other:?}"),
        }
    }

    /// Publishes `message` on `channel`, as a node (or a forger) would.
    pub fn publish(&self, channel: &str, message: &[u8]) {
        let reply = self.command(&[b"PUBLISH", channel.as_bytes(), message]);
        assert!(matches!(reply, Reply::Int(_)), "PUBLISH answered {reply:?}");
    }

    /// Its process id, to signal this Redis and no other.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A reply from Redis (RESP2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

fn read_reply(r: &mut impl BufRead) -> Reply {
    let mut head = String::new();
    r.read_line(&mut head).unwrap();
    let head = head.trim_end();
    let (kind, rest) = head.split_at(1);
    match kind {
        "+" => Reply::Status(rest.into()),
        "-" => Reply::Error(rest.into()),
        ":" => Reply::Int(rest.parse().unwrap()),
        "$" => {
            let Ok(len) = usize::try_from(rest.parse::<i64>().unwrap()) else {
                return Reply::Bulk(None);
            };
            let mut bytes = vec![0; len + 2];
            r.read_exact(&mut bytes).unwrap();
            bytes.truncate(len);
            Reply::Bulk(Some(bytes))
        }
        "*" => {
            let n = rest.parse::<i64>().unwrap().max(0);
            Reply::Array((0..n).map(|_| read_reply(r)).collect())
        }
        _ => panic!("not a RESP reply: {head:?}"),
    }
}

/// Redis stopped with SIGSTOP (frozen, not dead: its sockets stay open and unanswered) until
/// this is dropped, which sends SIGCONT, however the test ends. Only the test's own Redis,
/// by pid; the borrow keeps that Redis (and so its pid) alive while it is frozen.
pub struct Frozen<'a>(&'a Redis);

impl Frozen<'_> {
    pub fn new(redis: &Redis) -> Frozen<'_> {
        // SAFETY: kill(2) on the pid of the test's own redis-server child, not yet reaped.
        assert_eq!(unsafe { libc::kill(redis.pid(), libc::SIGSTOP) }, 0);
        Frozen(redis)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0.pid(), libc::SIGCONT) };
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

    /// Chat nodes `a` and `b` of the cluster at `url`, both linked.
    pub fn chat_pair(url: &str) -> (Node, Node) {
        let a = Node::start_with(url, "a", &["--chat"]);
        let b = Node::start_with(url, "b", &["--chat"]);
        a.wait_linked();
        b.wait_linked();
        (a, b)
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
