//! Signed tokens (issue 20): `--token-key`, `--token-public-key`, `--token-audience`,
//! `--token-issuer` and `--require-token` on the real binary: startup errors, `--help`, and
//! the keys read again on SIGHUP and the admin `reload`, all or nothing. Tokens are minted
//! here with the `jsonwebtoken` crate and the test keys in tests/keys/.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Daemon, admin_command, temp_path};

/// An HS256 secret of the tests (32 bytes and more); never a real one.
const SECRET: &str = "relayd-integration-test-secret-0123456789";
const OTHER: &str = "relayd-integration-test-other-secret-9876543210";

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn file(what: &str, contents: &str) -> PathBuf {
    let path = temp_path(what);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Runs relayd with `args` until it exits; its exit code and stderr.
fn startup(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_relayd"))
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Proves: `--require-token` without a key file, a key file that does not exist, a secret
/// shorter than 32 bytes and a private key given as a public key each stop relayd at startup
/// with one line on stderr naming the option (and the file), exit status 1, and without the
/// key's text.
#[test]
fn bad_token_options_are_one_line_startup_errors() {
    let (code, err) = startup(&["--require-token"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "relayd: --require-token needs --token-key or --token-public-key\n"
    );

    let missing = temp_path("no-such-key");
    let (code, err) = startup(&["--token-key", missing.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!("relayd: --token-key {}: ", missing.display())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let short = file("short-key", "kid: a\nshort-secret-of-26-bytes!!\n");
    let (code, err) = startup(&["--token-key", short.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!(
            "relayd: --token-key {}: line 2: a secret must be at least 32 bytes",
            short.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("short-secret"), "{err}");

    let private = keys_dir().join("ed.key");
    let (code, err) = startup(&["--token-public-key", private.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!(
            "relayd: --token-public-key {}: line 1: a private key",
            private.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let key_text = std::fs::read_to_string(&private).unwrap();
    let body = key_text.lines().nth(1).unwrap();
    assert!(!err.contains(body), "{err}");
}

/// Proves: `--help` lists the five options with their arguments.
#[test]
fn help_lists_the_token_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_relayd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--token-key <FILE>",
        "--token-public-key <FILE>",
        "--token-audience <AUD>",
        "--token-issuer <ISS>",
        "--require-token",
    ] {
        assert!(help.contains(option), "{option} missing from --help");
    }
}

/// Proves: the key files are read again on SIGHUP and on the admin `reload`; a file that no
/// longer parses leaves the keys in force (the reload fails, naming the option and the file,
/// without the key), and a fixed one is taken again. Both files at once, public keys too.
#[test]
fn key_files_are_read_again_on_reload_all_or_nothing() {
    let secrets = file("token-key", &format!("kid: one\n{SECRET}\n"));
    let public = file(
        "token-public-key",
        &std::fs::read_to_string(keys_dir().join("ed.pub")).unwrap(),
    );
    let admin = temp_path("token-admin");
    let mut d = Daemon::spawn(&[
        "--token-key",
        secrets.to_str().unwrap(),
        "--token-public-key",
        public.to_str().unwrap(),
        "--admin",
        admin.to_str().unwrap(),
    ]);
    crate::common::eventually("the admin socket", || {
        std::os::unix::net::UnixStream::connect(&admin).is_ok()
    });

    std::fs::write(&secrets, format!("kid: one\n{SECRET}\nkid: two\n{OTHER}\n")).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("reloaded; 0 clients no longer allowed");

    std::fs::write(&secrets, "kid: two\nnot-32-bytes\n").unwrap();
    let answer = admin_command(&admin, "reload");
    assert!(
        answer.starts_with(&format!(
            "error: reload failed, keeping the previous settings: --token-key {}: line 2: \
             a secret must be at least 32 bytes",
            secrets.display()
        )),
        "{answer}"
    );
    assert!(!answer.contains("not-32-bytes"), "{answer}");
    let line = d.wait_log("reload failed");
    assert!(!line.contains("not-32-bytes"), "{line}");

    std::fs::write(&secrets, format!("kid: two\n{OTHER}\n")).unwrap();
    let answer = admin_command(&admin, "reload");
    assert_eq!(answer, "ok: reloaded; 0 clients no longer allowed\n");

    std::fs::write(&public, "-----BEGIN PUBLIC KEY-----\nAAAA\n").unwrap();
    d.signal(libc::SIGHUP);
    let line = d.wait_log("reload failed");
    assert!(line.contains("--token-public-key"), "{line}");
    let (_, log) = d.stop_and_read_log();
    for line in log {
        assert!(!line.contains(SECRET) && !line.contains(OTHER), "{line}");
    }
}
