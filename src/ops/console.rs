//! `--console`'s input side: each line typed on stdin is pushed to every client the way the
//! admin `broadcast` command does. (Its output side, relayed lines on stdout, is `echo.rs`.)

use std::io::{self, BufRead};
use std::sync::Arc;
use std::thread;

use log::{info, warn};

use crate::daemon::Daemon;

/// Starts the thread that reads stdin and broadcasts each line. It ends at end of input; at
/// shutdown it is left blocked in `read`, which the process exit ends.
pub(crate) fn spawn(daemon: Arc<Daemon>) -> io::Result<()> {
    thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let stdin = io::stdin();
            for line in stdin.lock().split(b'\n') {
                let Ok(line) = line else { break };
                if daemon.is_stopping() {
                    return;
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.strip_suffix('\r').unwrap_or(&text);
                if !text.is_empty() {
                    let n = daemon.broadcast(text);
                    info!("console: pushed a line to {n} clients");
                }
            }
            warn!("console: end of standard input, no more pushes");
        })?;
    Ok(())
}
