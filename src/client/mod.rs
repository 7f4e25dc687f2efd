//! A client's life, on its own thread: authenticate (with `--secret-file`), then read, frame
//! and hand on its lines until it leaves, however it leaves (end of input, error, `/quit`,
//! kick, idle, panic). Its [`Slot`] releases everything it held when the thread ends.
//!
//! A client comes over one of two transports, each in the module named after it: `tcp` (`nc`,
//! `telnet`, programs) and `ws` (browsers, over WebSocket). Past the transport, the two are
//! the same client: same framing, limits, rooms and departures.

pub(crate) mod accept;
mod auth;
mod censor;
pub(crate) mod chat;
mod json;
mod moderator;

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, log_enabled, warn};
use memchr::memchr_iter;

use crate::client::censor::Censor;
use crate::client::chat::Chat;
use crate::daemon::{Daemon, Slot};
use crate::delivery::chunk::Chunk;
use crate::delivery::line_id::LineId;
use crate::delivery::notice::Departure;
use crate::delivery::peer::Peer;
use crate::delivery::registry::{LOBBY, Members};
use crate::framing::Framer;
use crate::policy::rate::{Bucket, Rate};
use crate::policy::secret;
use crate::stats::add;
use crate::transport::ReadError;
use crate::transport::tcp::{READ_BUF, Tcp};
use crate::transport::telnet::Telnet;
use crate::transport::ws::Ws;

/// How a client's bytes come in.
pub(crate) enum Transport {
    Tcp(Tcp),
    Ws(Box<Ws>),
}

impl Transport {
    /// Waits for the next bytes (a TCP read, or a WebSocket message's lines) and leaves them
    /// in `buf`. Returns how many: 0 at end of input.
    /// An error is the connection failing, or the transport's verdict that the client must
    /// leave (a WebSocket client that broke the rules).
    fn read(&mut self, buf: &mut Vec<u8>) -> Result<usize, ReadError> {
        match self {
            Transport::Tcp(tcp) => {
                // Allocated at the first read, not with the client: a WebSocket viewer that
                // never sends never needs one (its messages are copied in, and grow it).
                buf.clear();
                buf.reserve_exact(READ_BUF);
                tcp.read(buf).map_err(ReadError::Io)
            }
            Transport::Ws(ws) => ws.read(buf),
        }
    }

    /// How long a read may wait: `None` for ever.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        match self {
            Transport::Tcp(tcp) => tcp.set_read_timeout(timeout),
            Transport::Ws(ws) => ws.set_read_timeout(timeout),
        }
    }
}

/// What a browser's upgrade URL asks for: `?token=` (its `/auth TOKEN`), `?room=R` (enter R
/// at once) and, for a JSON client, `?since=ID` (recovering R's lines after ID).
// No `Debug`: it holds a token, which is never logged.
#[derive(Default)]
pub(crate) struct Upgrade {
    pub(crate) token: Option<String>,
    pub(crate) room: Option<String>,
    pub(crate) since: Option<String>,
}

impl Upgrade {
    /// Whether the client is to enter the lobby with a `since`: then its own thread enters
    /// it, not its admission.
    pub(crate) fn recovers(&self) -> bool {
        self.since.is_some() && self.room.as_deref().is_none_or(|r| r == LOBBY)
    }
}

/// Buffers that grew past this for one long line are given back afterwards, so that a burst
/// of long lines does not leave every client holding its peak.
const KEEP_CAPACITY: usize = 16 * 1024;

/// How many `line too long` notices a client may get: a burst of 5, then one a second.
const TOO_LONG_NOTICES: Rate = Rate {
    lines: 5,
    seconds: 5,
};

/// Where a client is in its life.
enum Phase {
    /// `--secret-file`: its first line must be the secret, by `deadline` (counted from
    /// connecting, whatever arrives meanwhile).
    AwaitingSecret {
        deadline: Instant,
    },
    /// `--require-token` (or a browser that came with `?token=`): its first line (after the
    /// secret, with `--secret-file`) must be `/auth TOKEN`, by the same deadline.
    AwaitingToken {
        deadline: Instant,
    },
    /// A raw byte pipe; the flood control bucket, with `--rate`; when it was last told it
    /// is muted.
    Raw(Option<Bucket>, Option<Instant>),
    // Boxed: a chat client's state is most of a client's, and only chat clients have it.
    Chat(Box<Chat>),
}

struct Client {
    daemon: Arc<Daemon>,
    slot: Slot,
    transport: Transport,
    /// A TCP client may be telnet: its commands are taken out before framing, unless
    /// `--binary` asks for every byte as it is.
    telnet: Option<Telnet>,
    framer: Framer,
    phase: Phase,
    /// Complete lines of the current read.
    lines: Vec<u8>,
    /// What telnet left of the current read, and what it asks us to answer.
    text: Vec<u8>,
    reply: Vec<u8>,
    /// `line too long` notices are rate-limited (a burst of a few, then one a second), so a
    /// stream of long lines cannot make it queue a stream of notices.
    too_long_notices: Bucket,
    /// The word filter on raw lines (a chat client's is its `Chat`'s).
    censor: Censor,
    /// A browser's `?token=`, until it is checked in place of the first `/auth` line.
    ws_token: Option<String>,
    /// Who its token says it is, once it presented one.
    signed_in: Option<auth::SignedIn>,
    /// When it last sent something: with a token's `exp`, the read timeout is no longer the
    /// idle timeout, which then counts from here.
    heard: Instant,
    /// A JSON client's `?since=` for the lobby, until it enters it.
    lobby_since: Option<LineId>,
    /// `?room=R` (and its `since`): joined as soon as the client is in the lobby.
    pending_join: Option<(String, Option<String>)>,
}

/// Serves one admitted client until it leaves. Runs on the client's own thread. `token`: a
/// browser's `?token=`.
pub(crate) fn serve(daemon: Arc<Daemon>, mut slot: Slot, transport: Transport, upgrade: Upgrade) {
    slot.set_departure(Departure::Panicked);
    let config = daemon.config();
    let deadline = Instant::now() + config.auth_timeout;
    let settings = daemon.settings();
    let recovers = upgrade.recovers();
    let Upgrade { token, room, since } = upgrade;
    let mut lobby_since = None;
    let mut pending_join = None;
    match room.filter(|r| r != LOBBY && config.chat) {
        Some(room) => pending_join = Some((room, since)),
        None if recovers => {
            lobby_since = since.as_deref().and_then(LineId::parse);
            if lobby_since.is_none() {
                let error = daemon.notices().error(chat::bad_since(since.as_deref()));
                daemon.reply(slot.peer(), &error);
            }
        }
        None => {}
    }
    // Without keys a `?token=` means nothing: the browser is a guest.
    let token = token.filter(|_| !settings.keys.is_empty());
    let phase = match (&settings.secret, daemon.awaits_token(token.is_some())) {
        (Some(_), _) => {
            slot.give_up_turn();
            Phase::AwaitingSecret { deadline }
        }
        (None, true) => {
            slot.give_up_turn();
            Phase::AwaitingToken { deadline }
        }
        (None, false) => {
            let lobby = slot.take_lobby(lobby_since.take());
            let name = daemon.guest_name(slot.peer().id());
            joined_phase(&daemon, slot.peer(), lobby, name)
        }
    };
    drop(settings);
    let mut client = Client {
        // Browsers do not speak telnet.
        telnet: (!config.binary && matches!(transport, Transport::Tcp(_))).then(Telnet::new),
        framer: Framer::new(config.max_line),
        daemon: Arc::clone(&daemon),
        slot,
        transport,
        phase,
        lines: Vec::new(),
        text: Vec::new(),
        reply: Vec::new(),
        too_long_notices: Bucket::new(TOO_LONG_NOTICES),
        censor: Censor::default(),
        ws_token: token,
        signed_in: None,
        heard: Instant::now(),
        lobby_since,
        pending_join,
    };
    let why = client.run();
    client.slot.set_departure(why);
}

/// The phase of a client that is in the lobby, named `name`: in chat mode the lobby hears of
/// it. `lobby` is who was there when it entered, if the caller saw it enter.
fn joined_phase(daemon: &Daemon, peer: &Arc<Peer>, lobby: Option<Members>, name: String) -> Phase {
    joined_as(daemon, peer, lobby, name, None)
}

/// [`joined_phase`] for a client that may be a signed-in user already.
fn joined_as(
    daemon: &Daemon,
    peer: &Arc<Peer>,
    lobby: Option<Members>,
    name: String,
    user: Option<&auth::SignedIn>,
) -> Phase {
    let config = daemon.config();
    // What entering queued for it (welcome, history) must fit its queue like anything else.
    daemon.settle(peer);
    if config.chat {
        let mut chat = Chat::new(config, name);
        if let Some(user) = user {
            chat.signed_in(daemon, peer, &user.sub, user.rooms.clone(), false);
        }
        let lobby = lobby.unwrap_or_else(|| daemon.members(LOBBY));
        chat.announce(daemon, peer, &lobby);
        Phase::Chat(Box::new(chat))
    } else {
        Phase::Raw(config.rate.map(Bucket::new), None)
    }
}

impl Client {
    fn peer(&self) -> &Arc<Peer> {
        self.slot.peer()
    }

    /// The read loop. Returns why the client is leaving.
    fn run(&mut self) -> Departure {
        let mut buf = Vec::new();
        loop {
            match self.phase {
                Phase::AwaitingSecret { deadline } | Phase::AwaitingToken { deadline } => {
                    if let Some(why) = self.browser_token() {
                        return why;
                    }
                    if self.signed_in.is_some() {
                        // In by its `?token=`: the expiry arms its reads from now on.
                        continue;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return self.auth_timeout();
                    }
                    self.transport.set_read_timeout(Some(left));
                }
                Phase::Chat(ref mut chat) => {
                    if let Some((room, since)) = self.pending_join.take() {
                        chat.join_since(&self.daemon, self.slot.peer(), &room, since.as_deref());
                    }
                    if let Some(why) = self.arm_expiry() {
                        return why;
                    }
                }
                Phase::Raw(..) => {
                    if let Some(why) = self.arm_expiry() {
                        return why;
                    }
                }
            }
            match self.transport.read(&mut buf) {
                Ok(0) => return self.end_of_input(Departure::ClosedByClient),
                Ok(_) => self.heard = Instant::now(),
                Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(ReadError::Io(e)) if crate::sys::timed_out(&e) => {
                    match self.phase {
                        Phase::AwaitingSecret { .. } | Phase::AwaitingToken { .. } => {
                            return self.auth_timeout();
                        }
                        // SO_RCVTIMEO is otherwise only set when `--idle-timeout` is, or a
                        // token expires: the nearer of the two, and not yet idle is the token.
                        _ => match self.timed_out() {
                            Some(why) => return why,
                            None => continue,
                        },
                    }
                }
                // A reset is the client leaving too, abruptly: what it sent before is kept as
                // with an orderly end of input (the kernel reports a reset on read or, if a
                // send met it first, as end of input: both end the same way).
                Err(ReadError::Io(e)) => {
                    return self.end_of_input(Departure::ReadError(e.to_string()));
                }
                Err(ReadError::Departure(why)) => {
                    warn!("client {}: {why}", self.peer().id());
                    return why;
                }
            }
            // Kicked or cut off: what is still in its socket is never relayed.
            if let Some(why) = self.peer().cut_off() {
                return why;
            }
            if let Transport::Ws(ws) = &self.transport
                && ws.json()
                && !self.decode_json(&mut buf)
            {
                continue;
            }
            if self.command_with_more_lines(&buf) {
                continue;
            }
            self.take(&buf);
            // A WebSocket message can grow the buffer to --max-line; like `lines`, it does
            // not keep that peak (a TCP read never grows it past READ_BUF).
            if buf.capacity() > KEEP_CAPACITY {
                buf = Vec::new();
            }
            if self.daemon.is_stopping() {
                // What was read before the daemon stopped is delivered; a half line is not.
                self.framer.drop_partial();
                self.hand_on();
                return Departure::Shutdown;
            }
            if let Some(why) = self.hand_on() {
                return why;
            }
        }
    }

    /// Reads a JSON client's message in `buf` into the lines it stands for, and says whether
    /// there are any; a `join` is done here, and a message relayd does not understand is
    /// answered with an error, the connection kept.
    fn decode_json(&mut self, buf: &mut Vec<u8>) -> bool {
        let (daemon, peer) = (&*self.daemon, self.slot.peer());
        match json::decode(buf, daemon.config().chat) {
            json::Decoded::Lines(lines) => {
                *buf = lines;
                return true;
            }
            json::Decoded::Error(why) => {
                debug!("client {}: {why}", peer.id());
                daemon.reply(peer, &daemon.notices().error(why));
            }
            json::Decoded::Join { room, since } => match &mut self.phase {
                Phase::Chat(chat) => chat.join_since(daemon, peer, &room, since.as_deref()),
                _ => daemon.reply(peer, &daemon.notices().error("sign in first")),
            },
        }
        false
    }

    /// Refuses, whole, a browser's chat message that starts with a command and goes on past
    /// its first line. A page may paste a link's parameter after `/nick `, and a `%0A` in it
    /// would otherwise make the visitor post lines and run commands they never typed. Plain
    /// text of several lines is still several lines.
    fn command_with_more_lines(&self, message: &[u8]) -> bool {
        if !matches!(
            (&self.transport, &self.phase),
            (Transport::Ws(_), Phase::Chat(_))
        ) || !chat::command_with_more_lines(message)
        {
            return false;
        }
        let peer = self.peer();
        warn!(
            "client {}: a message of {} lines starting with a command refused",
            peer.id(),
            memchr_iter(b'\n', message).count()
        );
        let notice = self.daemon.notices().error("a command is one line");
        self.daemon.reply(peer, &notice);
        true
    }

    /// Frames the bytes of one read into `lines` (taking telnet's commands out first, unless
    /// `--binary`), and tells the client about each line that was too long.
    fn take(&mut self, data: &[u8]) {
        let daemon = &*self.daemon;
        add(&daemon.stats().bytes_in, data.len() as u64);
        let too_long = match &mut self.telnet {
            Some(telnet) if !telnet.passes(data) => {
                self.text.clear();
                self.reply.clear();
                telnet.feed(data, &mut self.text, &mut self.reply);
                if !self.reply.is_empty() {
                    daemon.reply(self.slot.peer(), &Chunk::from(&self.reply[..]));
                }
                self.framer.feed(&self.text, &mut self.lines)
            }
            _ => self.framer.feed(data, &mut self.lines),
        };
        if too_long == 0 {
            return;
        }
        let max_line = daemon.config().max_line;
        add(&daemon.stats().too_long, too_long as u64);
        warn!(
            "client {}: line longer than {max_line} bytes discarded",
            self.peer().id()
        );
        if self.too_long_notices.take(1, Instant::now()) == 1 {
            daemon.reply(self.slot.peer(), &daemon.notices().line_too_long(max_line));
        }
    }

    /// The client's input has ended (`why`): an unfinished line is completed with `\n` and
    /// relayed, unless the daemon closed this client itself, is shutting down (a half line
    /// read then is dropped), or the client never authenticated.
    fn end_of_input(&mut self, why: Departure) -> Departure {
        if let Some(cut_off) = self.peer().cut_off() {
            return cut_off;
        }
        if self.daemon.is_stopping() {
            return Departure::Shutdown;
        }
        if let Phase::AwaitingSecret { .. } | Phase::AwaitingToken { .. } = self.phase {
            return why;
        }
        self.framer.finish(&mut self.lines);
        self.hand_on().unwrap_or(why)
    }

    /// Hands on the complete lines read so far, as the client's phase says. Returns why the
    /// client leaves, if it does.
    fn hand_on(&mut self) -> Option<Departure> {
        if let Phase::AwaitingSecret { .. } = self.phase
            && let Err(why) = self.authenticate()
        {
            return Some(why);
        }
        if let Phase::AwaitingToken { .. } = self.phase
            && let Err(why) = self.await_token()
        {
            return Some(why);
        }
        if self.lines.is_empty() {
            return None;
        }
        let n = memchr_iter(b'\n', &self.lines).count();
        self.peer().count_in(n as u64);
        add(&self.daemon.stats().lines_in, n as u64);
        self.hand_on_signed()
    }

    /// Hands on the complete lines of `lines`, with the client joined: its `/auth` lines, if
    /// tokens are enabled, are taken out and acted on where they are among the others.
    fn hand_on_signed(&mut self) -> Option<Departure> {
        while let Some((start, end)) = self.auth_line() {
            let rest = self.lines.split_off(end);
            let line = self.lines.split_off(start);
            if let Some(why) = self.relay_lines() {
                return Some(why);
            }
            self.lines = rest;
            if let Some(why) = self.auth_again(&line) {
                self.lines.clear();
                return Some(why);
            }
        }
        self.relay_lines()
    }

    /// Hands on the complete lines in `lines`, as the client's phase says.
    fn relay_lines(&mut self) -> Option<Departure> {
        if self.lines.is_empty() {
            return None;
        }
        let n = memchr_iter(b'\n', &self.lines).count();
        let left = match &mut self.phase {
            Phase::AwaitingSecret { .. } | Phase::AwaitingToken { .. } => None,
            Phase::Raw(bucket, told) => {
                if self.daemon.silenced(self.slot.peer(), LOBBY, told) {
                    self.lines.clear();
                    return None;
                }
                self.censor.refresh(&self.daemon);
                relay_raw(
                    &self.daemon,
                    self.slot.peer(),
                    bucket.as_mut(),
                    &mut self.censor,
                    &mut self.lines,
                    n,
                );
                None
            }
            Phase::Chat(chat) => chat
                .handle(&self.daemon, self.slot.peer(), &self.lines)
                .map(Departure::Quit),
        };
        self.lines.clear();
        if self.lines.capacity() > KEEP_CAPACITY {
            self.lines = Vec::new();
        }
        left
    }

    /// Checks the first line, once one is complete, against the secret, and enters the
    /// lobby if it matches; until then `lines` holds no complete line. A wrong secret is the
    /// client's departure.
    fn authenticate(&mut self) -> Result<(), Departure> {
        let Some(end) = memchr::memchr(b'\n', &self.lines) else {
            return Ok(());
        };
        // The secret in force now: a reload may have changed it since the client connected.
        let settings = self.daemon.settings();
        let secret = settings.secret.as_deref().unwrap_or_default();
        let ok = secret::matches(secret, &self.lines[..=end]);
        self.lines.drain(..=end);
        let peer = Arc::clone(self.peer());
        if !ok {
            self.lines.clear();
            // The secret itself is never logged, not even the wrong one.
            warn!("client {}: wrong secret", peer.id());
            self.daemon
                .reply(&peer, &self.daemon.notices().auth_failed());
            // Each guess costs the guesser this long.
            thread::sleep(self.daemon.config().auth_failure_delay);
            return Err(Departure::AuthFailed);
        }
        self.transport
            .set_read_timeout(self.daemon.config().idle_timeout);
        if self.daemon.awaits_token(self.ws_token.is_some()) {
            info!("client {}: authenticated, awaiting its token", peer.id());
            let Phase::AwaitingSecret { deadline } = self.phase else {
                return Ok(());
            };
            self.phase = Phase::AwaitingToken { deadline };
            return self.await_token();
        }
        let lobby = self.daemon.enter(&peer, self.lobby_since.take(), None);
        // Logged once it is in, so that a log reader can count on it.
        info!("client {}: authenticated", peer.id());
        let name = self.daemon.guest_name(peer.id());
        self.phase = joined_phase(&self.daemon, &peer, lobby, name);
        Ok(())
    }
}

/// Forwards the complete lines (`n` of them) of one read as a single shared chunk, byte for
/// byte, less those over the rate limit.
fn relay_raw(
    daemon: &Daemon,
    peer: &Arc<Peer>,
    bucket: Option<&mut Bucket>,
    censor: &mut Censor,
    lines: &mut Vec<u8>,
    mut n: usize,
) {
    if let Some(bucket) = bucket {
        let now = Instant::now();
        let allowed = bucket.take(n, now);
        if allowed < n {
            // The excess is the tail of this read: keep the first `allowed` lines.
            let cut = match allowed {
                0 => 0,
                k => memchr_iter(b'\n', lines).nth(k - 1).map_or(0, |i| i + 1),
            };
            lines.truncate(cut);
            if let Some(warning) = bucket.warning(now, "line") {
                info!("client {}: over the rate limit, dropping lines", peer.id());
                daemon.reply(peer, &daemon.notices().line(warning));
            }
            add(&daemon.stats().dropped_rate_limit, (n - allowed) as u64);
            n = allowed;
            if n == 0 {
                return;
            }
        }
    }
    n = censor_raw(daemon, peer, censor, lines, n);
    if n == 0 {
        return;
    }
    if log_enabled!(log::Level::Debug) {
        for line in lines.split_inclusive(|&b| b == b'\n') {
            debug!(
                "client {}: relaying a line of {} bytes",
                peer.id(),
                line.len()
            );
        }
    }
    daemon.relay(LOBBY, peer.id(), &Chunk::relayed(&lines[..], n), n);
}

/// Passes the `n` lines of `lines` through the word filter, in place; returns how many are
/// left. Raw lines are bytes: a mask keeps each line's own ending.
fn censor_raw(
    daemon: &Daemon,
    peer: &Arc<Peer>,
    censor: &mut Censor,
    lines: &mut Vec<u8>,
    n: usize,
) -> usize {
    if !censor.is_on() {
        return n;
    }
    let mut out = Vec::with_capacity(lines.len());
    let mut left = 0;
    for line in lines.split_inclusive(|&b| b == b'\n') {
        if let Some(passed) = censor.pass(daemon, peer, line) {
            out.extend_from_slice(&passed);
            left += 1;
        }
    }
    *lines = out;
    left
}
