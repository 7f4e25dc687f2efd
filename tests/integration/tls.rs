//! TLS in front of relayd with stunnel, exactly as README.md's "Security" section shows: two
//! `openssl s_client` users talk through stunnel to relayd. `.ci/run` installs stunnel4.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use crate::common::{Daemon, Killed, TIMEOUT, lines_of};

#[test]
fn two_tls_clients_talk_through_stunnel() {
    if Command::new("stunnel").arg("-version").output().is_err() {
        eprintln!(
            "SKIPPED: stunnel is not installed (apt-get install stunnel4); .ci/run installs it"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("relayd-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args([
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .current_dir(&dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl could not make a certificate");

    let d = Daemon::spawn(&[]);
    let tls_addr = Daemon::free_addr();
    let conf = format!(
        "foreground = yes\npid =\n\n[relayd]\naccept = {tls_addr}\nconnect = {}\ncert = {}\nkey = {}\n",
        d.addrs[0],
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let conf_path = dir.join("stunnel.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut stunnel = Command::new("stunnel")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = stunnel.stderr.take().unwrap();
    let _stunnel = Killed(stunnel);
    wait_for(log, "Configuration successful");

    let s_client = || {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &tls_addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = lines_of(child.stdout.take().unwrap());
        (Killed(child), out)
    };
    let (mut a, out_a) = s_client();
    d.wait_log("(1 clients)");
    let (mut b, out_b) = s_client();
    d.wait_log("(2 clients)");
    a.0.stdin
        .as_mut()
        .unwrap()
        .write_all(b"hello over tls\n")
        .unwrap();
    assert_eq!(out_b.recv_timeout(TIMEOUT).unwrap(), "hello over tls");
    b.0.stdin
        .as_mut()
        .unwrap()
        .write_all(b"and back\n")
        .unwrap();
    assert_eq!(out_a.recv_timeout(TIMEOUT).unwrap(), "and back");
    let _ = std::fs::remove_dir_all(Path::new(&dir));
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
