//! A client's signed token: `/auth TOKEN` (or a browser's `?token=`) checked, the client
//! signed in as its token's user, refreshed by a later `/auth` for the same user, and closed
//! when the token expires without a fresh one.
//!
//! With token keys loaded, an `/auth` line is never relayed, in raw or chat mode: it is taken
//! out of the client's lines here, where it stands among them. Nothing here logs a token.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};

use crate::client::chat::{Input, parse};
use crate::client::{Client, Phase, joined_as};
use crate::delivery::notice::Departure;
use crate::delivery::registry::{Identified, LOBBY};
use crate::policy::token::{Expect, Identity, verify};
use crate::stats::add;

/// Who a client's token says it is, as far as its own thread needs it.
pub(super) struct SignedIn {
    pub(super) sub: String,
    /// The rooms it may join; `None`: any.
    pub(super) rooms: Option<Vec<String>>,
    /// When its token expires; `None`: never.
    exp: Option<SystemTime>,
}

impl SignedIn {
    fn new(identity: &Identity) -> SignedIn {
        SignedIn {
            sub: identity.sub.clone(),
            rooms: identity.rooms.clone(),
            exp: identity.exp,
        }
    }
}

/// The token of an `/auth TOKEN` line (command name in any case), or `None` for any other
/// line.
fn token_of(line: &[u8]) -> Option<String> {
    match parse(line) {
        Input::Command { name, arg } if name.eq_ignore_ascii_case("auth") => Some(arg),
        _ => None,
    }
}

impl Client {
    /// A browser's `?token=`, checked as the `/auth` line it stands for once the client is
    /// waiting for one.
    pub(super) fn browser_token(&mut self) -> Option<Departure> {
        if !matches!(self.phase, Phase::AwaitingToken { .. }) {
            return None;
        }
        let token = self.ws_token.take()?;
        self.first_token(&token).err()
    }

    /// Why a client that did not authenticate in time leaves.
    pub(super) fn auth_timeout(&self) -> Departure {
        match self.phase {
            Phase::AwaitingToken { .. } => {
                info!("client {}: no token in time", self.peer().id());
                Departure::TokenRequired
            }
            _ => Departure::AuthTimeout,
        }
    }

    /// `--require-token`: checks the first line, once one is complete, which must be
    /// `/auth TOKEN`, and enters the lobby as the token's user if it is valid.
    pub(super) fn await_token(&mut self) -> Result<(), Departure> {
        if let Some(token) = self.ws_token.take() {
            return self.first_token(&token);
        }
        let Some(end) = memchr::memchr(b'\n', &self.lines) else {
            return Ok(());
        };
        let line: Vec<u8> = self.lines.drain(..=end).collect();
        match token_of(&line) {
            Some(token) => self.first_token(&token),
            None => {
                self.lines.clear();
                info!("client {}: first line is not /auth", self.peer().id());
                Err(Departure::TokenRequired)
            }
        }
    }

    /// Checks the token a client waiting for one presented, and signs it in.
    fn first_token(&mut self, token: &str) -> Result<(), Departure> {
        let identity = self.check(token)?;
        let peer = Arc::clone(self.peer());
        self.identify(&identity)?;
        let signed_in = SignedIn::new(&identity);
        let lobby = self.daemon.enter(&peer, self.lobby_since.take(), None);
        self.phase = joined_as(
            &self.daemon,
            &peer,
            lobby,
            identity.name.clone(),
            Some(&signed_in),
        );
        self.signed_in = Some(signed_in);
        Ok(())
    }

    /// Gives the client its token's identity in the registry.
    fn identify(&mut self, identity: &Identity) -> Result<Identified, Departure> {
        let peer = Arc::clone(self.peer());
        if let Some(ban) = self.daemon.banned_user(Some(&identity.sub), &identity.name) {
            let text = ban.banned_text();
            crate::stats::add(&self.daemon.stats().refused_banned, 1);
            info!(
                "client {}: refused: user {}: {text}",
                peer.id(),
                identity.sub
            );
            return Err(Departure::Banned(text));
        }
        match self.daemon.identify(&peer, identity) {
            Ok(identified) => {
                info!(
                    "client {}: signed in as {} (user {})",
                    peer.id(),
                    identity.name,
                    identity.sub
                );
                Ok(identified)
            }
            Err(_) => {
                warn!(
                    "client {}: refused: the name {} is another signed-in user's",
                    peer.id(),
                    identity.name
                );
                Err(Departure::NameInUse(identity.name.clone()))
            }
        }
    }

    /// Checks `token` with the keys in force now; a refusal is counted, logged (without the
    /// token) and the client's departure.
    fn check(&self, token: &str) -> Result<Identity, Departure> {
        let daemon = &self.daemon;
        let config = daemon.config();
        let expect = Expect {
            audience: config.token_audience.clone(),
            issuer: config.token_issuer.clone(),
        };
        verify(&daemon.settings().keys, token, SystemTime::now(), &expect).map_err(|e| {
            add(&daemon.stats().tokens_refused[e.index()], 1);
            warn!(
                "client {}: bad token: {e} ({})",
                self.peer().id(),
                e.detail()
            );
            Departure::BadToken(e)
        })
    }

    /// Where in `lines` the first `/auth` line is (its start and end), if tokens are
    /// enabled.
    pub(super) fn auth_line(&self) -> Option<(usize, usize)> {
        if !self.lines.contains(&b'/') || self.daemon.settings().keys.is_empty() {
            return None;
        }
        let mut start = 0;
        for line in self.lines.split_inclusive(|&b| b == b'\n') {
            let end = start + line.len();
            if line.contains(&b'/') && token_of(line).is_some() {
                return Some((start, end));
            }
            start = end;
        }
        None
    }

    /// An `/auth` line from a client in a room: signs a guest in, or refreshes a user's
    /// token. Returns why the client leaves, if it does (a bad token).
    pub(super) fn auth_again(&mut self, line: &[u8]) -> Option<Departure> {
        let token = token_of(line)?;
        let identity = match self.check(&token) {
            Ok(identity) => identity,
            Err(why) => return Some(why),
        };
        let peer = Arc::clone(self.peer());
        match &mut self.signed_in {
            Some(current) if current.sub != identity.sub => {
                warn!("client {}: a token for another user refused", peer.id());
                let notice = self
                    .daemon
                    .notices()
                    .error("a token is for one user; reconnect to change user");
                self.daemon.reply(&peer, &notice);
            }
            Some(current) => {
                info!("client {}: token refreshed", peer.id());
                *current = SignedIn::new(&identity);
                self.daemon.refreshed(&peer, &identity);
                if let Phase::Chat(chat) = &mut self.phase {
                    chat.refreshed(identity.rooms.clone());
                }
            }
            None => {
                let identified = match self.identify(&identity) {
                    Ok(identified) => identified,
                    Err(why) => return Some(why),
                };
                let signed_in = SignedIn::new(&identity);
                match &mut self.phase {
                    Phase::Chat(chat) => chat.signed_in(
                        &self.daemon,
                        &peer,
                        &signed_in.sub,
                        signed_in.rooms.clone(),
                        identified.room.is_some(),
                    ),
                    _ => {
                        if identified.room.is_some() {
                            self.daemon.present(peer.id(), &identity.name, LOBBY);
                        }
                    }
                }
                self.signed_in = Some(signed_in);
            }
        }
        None
    }

    /// For a signed-in client, before each read: the read waits until the nearer of its
    /// idle deadline and its token's `exp`. Returns `TokenExpired` once `exp` has passed.
    pub(super) fn arm_expiry(&mut self) -> Option<Departure> {
        let signed_in = self.signed_in.as_ref()?;
        let exp = match signed_in.exp {
            Some(exp) => match exp.duration_since(SystemTime::now()) {
                Ok(left) if !left.is_zero() => Some(left),
                _ => return Some(self.expired()),
            },
            None => None,
        };
        let idle = self
            .daemon
            .config()
            .idle_timeout
            .map(|t| (self.heard + t).saturating_duration_since(Instant::now()));
        let wait = match (exp, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A zero timeout would be no timeout at all.
        self.transport
            .set_read_timeout(wait.map(|w| w.max(Duration::from_millis(1))));
        None
    }

    /// A read timed out, in a room: the token expired, the client was idle, or neither yet
    /// (`None`: read on).
    pub(super) fn timed_out(&mut self) -> Option<Departure> {
        let Some(signed_in) = &self.signed_in else {
            return Some(Departure::IdleTimeout);
        };
        if signed_in.exp.is_some_and(|exp| SystemTime::now() >= exp) {
            return Some(self.expired());
        }
        let idle = self.daemon.config().idle_timeout?;
        (self.heard.elapsed() >= idle).then_some(Departure::IdleTimeout)
    }

    fn expired(&self) -> Departure {
        info!("client {}: token expired", self.peer().id());
        Departure::TokenExpired
    }
}
