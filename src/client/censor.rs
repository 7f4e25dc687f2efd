//! The word filter applied to what one client sends (`--filter-file`): each line it would
//! relay, and what else of its own others see (`/me`, `/msg`, a `/nick`, a `/quit` reason).
//! The list and its matching are `policy::filter`'s; this is the client's side: the list
//! in force, the sender's notice, the counters.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

use crate::daemon::Daemon;
use crate::delivery::peer::Peer;
use crate::policy::filter::{Action, Filter};
use crate::stats::add;

/// A sender is told of a dropped line at most once a second: a paste of a hundred filtered
/// lines gets one notice, someone typing gets one per line.
const NOTICE_QUIET: Duration = Duration::from_secs(1);

pub(crate) const DROPPED: &str = "relayd: your line was not sent (filtered)";

/// One client's filter, owned by its thread.
#[derive(Default)]
pub(crate) struct Censor {
    filter: Option<Arc<Filter>>,
    action: Action,
    warned: Option<Instant>,
}

impl Censor {
    /// Takes the list in force now: a reload may have changed it since the last read.
    pub(crate) fn refresh(&mut self, daemon: &Daemon) {
        let config = daemon.config();
        if config.filter.is_none() && config.sources.filter_file.is_none() {
            return;
        }
        self.action = config.filter_action;
        self.filter = daemon.settings().filter.clone().filter(|f| !f.is_empty());
    }

    /// Whether a list is in force.
    pub(crate) fn is_on(&self) -> bool {
        self.filter.is_some()
    }

    /// `line` as it may reach others, masked if need be; `None` if it is dropped (its sender
    /// is told, see [`NOTICE_QUIET`]).
    pub(crate) fn pass<'a>(
        &mut self,
        daemon: &Daemon,
        peer: &Arc<Peer>,
        line: &'a [u8],
    ) -> Option<Cow<'a, [u8]>> {
        let Some(filter) = &self.filter else {
            return Some(Cow::Borrowed(line));
        };
        match self.action {
            Action::Mask => match filter.mask(line) {
                Some(masked) => {
                    add(&daemon.stats().filtered_masked, 1);
                    Some(Cow::Owned(masked))
                }
                None => Some(Cow::Borrowed(line)),
            },
            Action::Drop if !filter.hits(line) => Some(Cow::Borrowed(line)),
            Action::Drop => {
                add(&daemon.stats().filtered_dropped, 1);
                let now = Instant::now();
                if self
                    .warned
                    .is_none_or(|at| now.saturating_duration_since(at) >= NOTICE_QUIET)
                {
                    self.warned = Some(now);
                    // What it said is not logged: the log is not a copy of the abuse.
                    info!("client {}: a filtered line dropped", peer.id());
                    daemon.reply(peer, &daemon.notices().line(DROPPED));
                }
                None
            }
        }
    }

    /// [`Censor::pass`] for text (a chat line, cleaned): a mask replaces whole matches,
    /// which start and end on character boundaries, with ASCII, so it stays UTF-8.
    pub(crate) fn pass_text<'a>(
        &mut self,
        daemon: &Daemon,
        peer: &Arc<Peer>,
        text: &'a str,
    ) -> Option<Cow<'a, str>> {
        Some(match self.pass(daemon, peer, text.as_bytes())? {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        })
    }

    /// Whether a name may be taken: not one holding a listed word, whatever the action (a
    /// masked name would be nobody's).
    pub(crate) fn allows_name(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| !filter.hits(name.as_bytes()))
    }
}
