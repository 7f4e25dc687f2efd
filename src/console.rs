//! `--console`: for running relayd in a terminal. Relayed lines are echoed on stdout, tagged
//! with the sender's id, and each line typed on stdin is pushed to every client the way the
//! admin `broadcast` command does.

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::thread;

use log::{info, warn};

use crate::admin;
use crate::outbound::PeerId;
use crate::server::Shared;

/// Prints the lines of a relayed chunk as `[ID] line`.
pub fn echo(from: PeerId, chunk: &[u8]) {
    let mut out = io::stdout().lock();
    for line in chunk.split_inclusive(|&b| b == b'\n') {
        let _ = write!(out, "[{from}] ");
        let _ = out.write_all(line);
    }
    let _ = out.flush();
}

/// Starts the thread that reads stdin and broadcasts each line. It ends at end of input; at
/// shutdown it is left blocked in `read`, which the process exit ends.
pub fn spawn(shared: Arc<Shared>) -> io::Result<()> {
    thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let stdin = io::stdin();
            for line in stdin.lock().split(b'\n') {
                let Ok(line) = line else { break };
                if shared.shutdown.is_triggered() {
                    return;
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.strip_suffix('\r').unwrap_or(&text);
                if !text.is_empty() {
                    let n = admin::broadcast(&shared, text);
                    info!("console: pushed a line to {n} clients");
                }
            }
            warn!("console: end of standard input, no more pushes");
        })?;
    Ok(())
}
