//! Reloading without a restart (SIGHUP, the admin `reload`): the files behind `--allow-file`,
//! `--deny-file`, `--secret-file`, `--motd`, `--token-key`, `--token-public-key` and
//! `--api-key-file` and `--filter-file` are read
//! again and, if every one of them still parses, put in force at once. Connected clients
//! stay, except those the new rules refuse.
//!
//! The service manager hears `RELOADING=1` before and `READY=1` after, whether the reload
//! worked or not: the daemon is serving with a complete configuration either way.

use std::sync::{Arc, Condvar, Mutex};

use log::{info, warn};

use crate::daemon::Daemon;
use crate::sync::{self, lock};

/// One reload at a time: two at once (a SIGHUP during an admin `reload`) could otherwise put
/// the older reading of a file in force last.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Reads the files again and puts what they say in force. Returns what changed for the
/// operator, or why nothing did (the previous settings stay, whole). Logs one line either way.
pub(crate) fn reload(daemon: &Daemon) -> Result<String, String> {
    let _one = lock(&ONE_AT_A_TIME);
    let notifier = daemon.notifier();
    notifier.reloading();
    let config = daemon.config();
    let result = if config.sources.has_files() {
        match config.sources.reload(&daemon.settings(), config.max_line) {
            Ok(settings) => {
                let refused = daemon.apply(settings);
                let done = format!("reloaded; {refused} clients no longer allowed");
                info!("{done}");
                Ok(done)
            }
            Err(e) => {
                warn!("reload failed, keeping the previous settings: {e}");
                Err(e)
            }
        }
    } else {
        let nothing = "reload: nothing to reload (no --allow-file, --deny-file, --secret-file, \
                       --motd, --token-key, --token-public-key, --api-key-file or --filter-file)";
        info!("{nothing}");
        Ok(nothing.to_string())
    };
    notifier.reloaded(daemon.client_count());
    result
}

/// Reload requests from the signal handler, served one after the other by a thread of the
/// server's. Requests that arrive during a reload are served by one more reload.
#[derive(Clone, Default)]
pub struct Reloads(Arc<(Mutex<Pending>, Condvar)>);

#[derive(Default)]
struct Pending {
    requested: bool,
    closed: bool,
}

impl Reloads {
    pub fn new() -> Reloads {
        Reloads::default()
    }

    /// Asks for a reload (SIGHUP); returns at once.
    pub fn request(&self) {
        lock(&self.0.0).requested = true;
        self.0.1.notify_all();
    }

    /// Waits for a request; false once the server has stopped.
    pub(crate) fn wait(&self) -> bool {
        let mut pending =
            sync::wait_while(&self.0.1, lock(&self.0.0), |p| !p.closed && !p.requested);
        if pending.closed {
            return false;
        }
        pending.requested = false;
        true
    }

    /// Ends [`Reloads::wait`], for shutdown.
    pub(crate) fn close(&self) {
        lock(&self.0.0).closed = true;
        self.0.1.notify_all();
    }
}
