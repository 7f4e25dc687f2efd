//! What a run is asked to do: the scenario's kind and every parameter, with its defaults
//! filled in. Shared by the scenarios that run it and the report that shows its results.

use std::time::Duration;

use crate::sys::Cpus;

/// Which scenario a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fanout,
    Chatter,
    Slow,
    Connscale,
    Ceiling,
    Danmaku,
}

/// How `danmaku`'s viewers connect (`--transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Ws,
    /// Every other viewer WebSocket, the others TCP (viewer 0 is WebSocket).
    Mix,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
            Transport::Mix => "mix",
        }
    }

    /// Whether viewer `i` is a WebSocket client.
    pub fn ws(self, i: usize) -> bool {
        match self {
            Transport::Tcp => false,
            Transport::Ws => true,
            Transport::Mix => i.is_multiple_of(2),
        }
    }
}

impl Kind {
    /// Its name on the command line, in the table and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fanout => "fanout",
            Kind::Chatter => "chatter",
            Kind::Slow => "slow",
            Kind::Connscale => "connscale",
            Kind::Ceiling => "ceiling",
            Kind::Danmaku => "danmaku",
        }
    }
}

/// Everything a run needs to know, with each scenario's defaults already filled in.
#[derive(Clone, Debug)]
pub struct Params {
    pub kind: Kind,
    /// Receivers (fanout, slow, connscale, ceiling), clients (chatter) or viewers (danmaku).
    pub clients: usize,
    /// Measured lines the sender sends (not chatter).
    pub lines: u64,
    /// Bytes per line, newline included.
    pub size: usize,
    /// Lines per second: the sender's (fanout, slow, connscale), each client's (chatter) or
    /// all senders' together (danmaku).
    pub rate: Option<f64>,
    /// How long chatter's clients (danmaku's senders) send.
    pub duration: Duration,
    /// Hard limit on one run, connecting included.
    pub timeout: Duration,
    /// How long to wait for missing lines after the last one is sent.
    pub drain: Duration,
    /// Where a server started here runs (--server-cpus; the CPUs this process had at start
    /// when only --client-cpus is given, so that it does not inherit the generator's).
    pub server_cpus: Option<Cpus>,
    /// Where this generator runs (--client-cpus), applied in `main` before any thread.
    pub client_cpus: Option<Cpus>,
    /// --ws: the receivers (fanout, slow, connscale) are WebSocket clients of relayd's
    /// `--ws-bind` listener; senders, the stalled and the fresh client stay TCP.
    pub ws: bool,
    /// fanout, connscale: TCP senders (--senders). With more than one, each sends `lines`
    /// lines at `rate` lines/s, and they hear each other like any other client.
    pub senders: usize,
    /// Receiver threads (--rx-threads), each reading its share of the clients.
    pub rx_threads: usize,
    /// danmaku: how the viewers connect (TCP with every other scenario, WebSocket with --ws).
    pub transport: Transport,
    /// danmaku: viewers that connect and never read (--slow), on top of `clients`.
    pub slow: usize,
    /// danmaku: the room everyone is in (--room); other than lobby only with relayd's --chat
    /// (`chat`), where everyone `/join`s it first.
    pub room: String,
    pub chat: bool,
}
