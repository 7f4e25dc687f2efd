//! The server under test: the relayd built alongside this tool, any other line relay started
//! from a command line, or a server already running. Starting it here (fresh for every run,
//! on a free port) is what lets two servers be measured by the same code in the same run.
//! With `--nodes N`, "the server" is N relayd nodes linked by a redis-server of the run's own
//! (see [`start_all`]).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::sys::{self, Cpus};

/// How to reach (and maybe start) a server.
#[derive(Clone, Debug)]
pub enum Spec {
    /// The relayd next to this binary, with extra arguments; `nodes` above 1 starts that many
    /// nodes linked through a redis-server started for the run.
    Relayd { args: Vec<String>, nodes: usize },
    /// A shell command with `{port}` in it.
    Command(String),
    /// A server someone else runs.
    Connect(String),
}

impl Spec {
    /// How many relayd nodes it starts (1 for anything but a cluster of relayd).
    pub fn nodes(&self) -> usize {
        match self {
            Spec::Relayd { nodes, .. } => *nodes,
            _ => 1,
        }
    }

    /// A short name for tables.
    pub fn label(&self) -> String {
        match self {
            Spec::Relayd { nodes: 1, .. } => "relayd".into(),
            Spec::Relayd { nodes, .. } => format!("relayd/{nodes}n"),
            Spec::Command(cmd) => cmd.split_whitespace().next().unwrap_or("cmd").to_string(),
            Spec::Connect(addr) => addr.clone(),
        }
    }
}

/// A server ready for clients. Stops the server on drop if we started it.
pub struct Server {
    pub addr: SocketAddr,
    /// relayd's WebSocket listener (`--ws-bind`), when the run asked for one (`--ws`).
    pub ws_addr: Option<SocketAddr>,
    /// Known when we started it; its /proc entry gives CPU, memory and threads.
    pub pid: Option<u32>,
    child: Option<Child>,
}

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts (or finds) the server. `clients` sizes relayd's `--max-clients`; `cpus`, if given,
/// is where a server started here runs (set before it execs, so all its threads inherit it).
/// With `ws`, relayd also gets `--ws-bind` on a second free port (only relayd speaks
/// WebSocket; `main` refuses `--ws` with any other target).
pub fn start(spec: &Spec, clients: usize, cpus: Option<&Cpus>, ws: bool) -> Result<Server, String> {
    match spec {
        Spec::Connect(addr) => Ok(Server {
            addr: loopback(addr)?,
            ws_addr: None,
            pid: None,
            child: None,
        }),
        Spec::Relayd { args, .. } => start_relayd(args, &[], clients, cpus, ws),
        Spec::Command(template) => {
            if !template.contains("{port}") {
                return Err(format!(
                    "server command '{template}' has no {{port}} to put the port in"
                ));
            }
            let port = free_port()?;
            let line = template.replace("{port}", &port.to_string());
            // `exec` makes the server itself the child, so its PID is the one we watch.
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(format!("exec {line}"));
            spawn(cmd, port, cpus, &line)
        }
    }
}

/// Starts the relayd next to this binary with `args`, then `extra`.
fn start_relayd(
    args: &[String],
    extra: &[String],
    clients: usize,
    cpus: Option<&Cpus>,
    ws: bool,
) -> Result<Server, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find my own binary: {e}"))?
        .with_file_name("relayd");
    if !exe.exists() {
        return Err(format!(
            "{} not found; build it with `cargo build --release`",
            exe.display()
        ));
    }
    let port = free_port()?;
    let mut cmd = Command::new(&exe);
    cmd.arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-q")
        .arg("--max-clients")
        .arg((clients + 64).to_string());
    let mut ws_addr = None;
    if ws {
        let mut ws_port = free_port()?;
        while ws_port == port {
            ws_port = free_port()?;
        }
        cmd.arg("--ws-bind").arg(format!("127.0.0.1:{ws_port}"));
        ws_addr = Some(SocketAddr::from(([127, 0, 0, 1], ws_port)));
    }
    cmd.args(args).args(extra);
    let mut server = spawn(cmd, port, cpus, &exe.display().to_string())?;
    if let Some(ws) = ws_addr {
        // Both listeners are bound before relayd serves anyone, but do not count on it.
        let until = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&ws, Duration::from_millis(200)).is_err() {
            if Instant::now() >= until {
                return Err(format!(
                    "relayd did not accept WebSocket connections on {ws}"
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    server.ws_addr = ws_addr;
    Ok(server)
}

/// Every process of one run's server: one server, or with `--nodes N` N relayd nodes and the
/// redis-server that links them. Dropping it stops the nodes, then Redis, each by its PID, and
/// removes Redis's directory.
pub struct Servers {
    /// Node 0 first: the senders connect there.
    pub nodes: Vec<Server>,
    redis: Option<Server>,
    /// Redis's working directory, a fresh one under the system's temp directory.
    dir: Option<PathBuf>,
}

impl Servers {
    /// Where the senders connect.
    pub fn first(&self) -> &Server {
        &self.nodes[0]
    }

    /// The processes started here: every node, then Redis. Empty with `--connect`.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .chain(&self.redis)
            .filter_map(|s| s.pid)
            .collect()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        // Nodes first, so that none logs a lost link on the way out.
        self.nodes.clear();
        self.redis = None;
        if let Some(dir) = self.dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Starts the server of one run (see [`start`]). For a relayd of several nodes: a
/// redis-server on a free port, without persistence, in a fresh temp directory, then each
/// node with `--redis` pointing at it, its own `--node-id` (n0, n1, ...) and `--cluster`
/// `cluster` (unique per run). With `cpus`, every one of them runs there. A node's link to
/// Redis comes up in the background: the scenario's probe lines, sent on node 0 until every
/// receiver on every node has one, are what proves the links up.
pub fn start_all(
    spec: &Spec,
    clients: usize,
    cpus: Option<&Cpus>,
    ws: bool,
    cluster: &str,
) -> Result<Servers, String> {
    let (args, nodes) = match spec {
        Spec::Relayd { args, nodes } if *nodes > 1 => (args, *nodes),
        _ => {
            return Ok(Servers {
                nodes: vec![start(spec, clients, cpus, ws)?],
                redis: None,
                dir: None,
            });
        }
    };
    let mut all = Servers {
        nodes: Vec::with_capacity(nodes),
        redis: None,
        dir: None,
    };
    let dir = std::env::temp_dir().join(cluster);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    all.dir = Some(dir.clone());
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .current_dir(&dir);
    let redis = spawn(
        cmd,
        port,
        cpus,
        "redis-server (Debian: apt-get install redis-server)",
    )?;
    let url = format!("redis://127.0.0.1:{port}/");
    all.redis = Some(redis);
    pings(port)?;
    for k in 0..nodes {
        let extra = [
            "--redis",
            &url,
            "--node-id",
            &format!("n{k}"),
            "--cluster",
            cluster,
        ]
        .map(String::from);
        all.nodes
            .push(start_relayd(args, &extra, clients, cpus, ws)?);
    }
    Ok(all)
}

/// Waits until the Redis on `port` answers PING (it accepted a connection already).
fn pings(port: u16) -> Result<(), String> {
    let until = Instant::now() + START_TIMEOUT;
    loop {
        let answer = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.set_write_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf)?;
            Ok(buf)
        });
        match answer {
            Ok(buf) if &buf == b"+PONG\r\n" => return Ok(()),
            _ if Instant::now() >= until => {
                return Err(format!("redis-server on port {port} does not answer PING"));
            }
            _ => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn spawn(mut cmd: Command, port: u16, cpus: Option<&Cpus>, what: &str) -> Result<Server, String> {
    if let Some(cpus) = cpus {
        sys::pin_child(&mut cmd, cpus);
    }
    sys::die_with_parent(&mut cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match cpus {
            Some(c) => format!("cannot start '{what}' on CPUs {c}: {e}"),
            None => format!("cannot start '{what}': {e}"),
        })?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut server = Server {
        addr,
        ws_addr: None,
        pid: Some(child.id()),
        child: Some(child),
    };
    let until = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(server);
        }
        if let Some(child) = server.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            server.child = None;
            return Err(format!("'{what}' exited at start ({status})"));
        }
        if Instant::now() >= until {
            return Err(format!(
                "'{what}' did not accept connections on {addr} within {} s",
                START_TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Resolves `spec` and refuses anything but a loopback address: load goes to this machine only.
pub fn loopback(spec: &str) -> Result<SocketAddr, String> {
    let addr = spec
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {spec}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {spec}: no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address; relay-bench only loads 127.0.0.0/8 and ::1"
        ));
    }
    Ok(addr)
}

/// A port that was free a moment ago: bind port 0, read the port, let it go.
fn free_port() -> Result<u16, String> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        sys::signal(child.id(), libc::SIGTERM);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
