//! The server under test: the relayd built alongside this tool, any other line relay started
//! from a command line, or a server already running. Starting it here (fresh for every run,
//! on a free port) is what lets two servers be measured by the same code in the same run.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::sys::{self, Cpus};

/// How to reach (and maybe start) a server.
#[derive(Clone, Debug)]
pub enum Spec {
    /// The relayd next to this binary, with extra arguments.
    Relayd { args: Vec<String> },
    /// A shell command with `{port}` in it.
    Command(String),
    /// A server someone else runs.
    Connect(String),
}

impl Spec {
    /// A short name for tables.
    pub fn label(&self) -> String {
        match self {
            Spec::Relayd { .. } => "relayd".into(),
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
        Spec::Relayd { args } => {
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
            cmd.args(args);
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
