//! stunnel in front of relayd, as README.md's "Security" section shows, and `openssl
//! s_client` users talking through it. `.ci/run` installs stunnel4.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;

use crate::common::{Daemon, Killed, TIMEOUT, lines_of};

/// Whether stunnel is here; a test without it says so and passes.
pub fn have_stunnel() -> bool {
    let here = Command::new("stunnel").arg("-version").output().is_ok();
    if !here {
        eprintln!(
            "SKIPPED: stunnel is not installed (apt-get install stunnel4); .ci/run installs it"
        );
    }
    here
}

/// A running stunnel that takes TLS on `addr` and passes it on to `to` in the clear,
/// `extra` lines added to its service (`protocol = proxy`, say); its files are removed
/// when it is dropped.
pub struct Stunnel {
    pub addr: String,
    _child: Killed,
    dir: PathBuf,
}

impl Stunnel {
    pub fn start(to: SocketAddr, extra: &str) -> Stunnel {
        let dir = crate::common::temp_path("stunnel");
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "1"])
            .args(["-subj", "/CN=localhost"])
            .current_dir(&dir)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl could not make a certificate");
        let addr = Daemon::free_addr();
        let conf = format!(
            "foreground = yes\npid =\n\n[relayd]\naccept = {addr}\nconnect = {to}\ncert = {}\nkey = {}\n{extra}",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        );
        let conf_path = dir.join("stunnel.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new("stunnel")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = child.stderr.take().unwrap();
        let child = Killed(child);
        wait_for(log, "Configuration successful");
        Stunnel {
            addr,
            _child: child,
            dir,
        }
    }

    /// A TLS user (`openssl s_client`), from the local address `from` if given: the process
    /// and the lines it prints.
    pub fn client(&self, from: Option<&str>) -> TlsUser {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-quiet", "-connect", &self.addr]);
        if let Some(from) = from {
            cmd.args(["-bind", &format!("{from}:0")]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = lines_of(child.stdout.take().unwrap());
        TlsUser {
            child: Killed(child),
            out,
        }
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An `openssl s_client` user.
pub struct TlsUser {
    child: Killed,
    pub out: Receiver<String>,
}

impl TlsUser {
    pub fn send(&mut self, line: &str) {
        let stdin = self.child.0.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
    }

    /// The next line it prints, within [`TIMEOUT`].
    pub fn line(&self) -> String {
        self.out.recv_timeout(TIMEOUT).unwrap()
    }
}

/// Waits for stunnel to say it is ready (it logs to stderr in the foreground).
fn wait_for(log: std::process::ChildStderr, needle: &str) {
    let (tx, rx) = mpsc::channel();
    let needle = needle.to_string();
    thread::spawn(move || {
        for line in BufReader::new(log).lines() {
            let Ok(line) = line else { break };
            if line.contains(&needle) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(TIMEOUT).expect("stunnel did not start");
}
