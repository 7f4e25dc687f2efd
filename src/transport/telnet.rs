//! Telnet commands taken out of a TCP client's input, and every option refused.
//!
//! People connect with `telnet` as often as with `nc`, in raw mode as in `--chat` mode (the
//! README's first session offers both), and telnet mixes its
//! commands (RFC 854) into what the user types: Ctrl-C sends `IAC IP IAC DO TIMING-MARK`, and a
//! client that negotiates offers options (`IAC WILL TERMINAL-TYPE`, `IAC SB ... IAC SE`). Taken
//! as text, those bytes reached everyone as `����`. Worse, after asking `DO TIMING-MARK` the
//! telnet client throws away everything the server sends until it gets an answer, so the user
//! saw the chat go silent after the first Ctrl-C.
//!
//! Relaying needs nothing beyond the plain network virtual terminal, so relayd enables no option:
//! it answers `DO x` with `WONT x` and `WILL x` with `DONT x`, and never answers `WONT` or
//! `DONT` (a refusal that answered refusals could loop forever between two such ends, RFC 1143).
//! Every other command, and the contents of subnegotiations, is dropped; `IAC IAC` is the data
//! byte 0xFF. `CR NUL` (the NVT's bare CR) passes through unchanged: the NUL is a control
//! character, which the chat layer removes from every line anyway. Programs that need every
//! byte relayed as it is, 0xFF included, run relayd with `--binary`, which turns this off.
//!
//! Hand-written, not a crate: the maintained-looking parsers (`libtelnet-rs`, and its forks
//! `libmudtelnet`, `libmudtelnet-rs`) turn `IAC IP IAC DO TIMING-MARK` into text, lose the data
//! after `IAC IAC`, mis-parse a command split across two reads, and keep an unfinished
//! subnegotiation in a buffer that grows and is rescanned on every read; `telnet` owns the
//! socket and forgets a half-read command between reads; `nectar`, `telnet-codec` and `tellem`
//! are tokio codecs over `bytes`. What relayd needs is the few states below and no buffer at
//! all, so no client can make it hold memory, however long its subnegotiation.

use memchr::memchr;

/// "Interpret as command": starts every telnet command; doubled, it is the data byte 0xFF.
const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
/// Subnegotiation begin; its contents run up to `IAC SE`.
const SB: u8 = 250;
const SE: u8 = 240;

/// Where the parser is in the byte stream: a read may end anywhere inside a command, so this is
/// all that must survive from one read to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Data,
    /// After an `IAC`.
    Command,
    /// After `IAC` and this `WILL`/`WONT`/`DO`/`DONT`: the option byte comes next.
    Option(u8),
    /// Inside `IAC SB ... IAC SE`, whose bytes are dropped.
    Sub,
    /// After an `IAC` inside a subnegotiation.
    SubCommand,
}

/// One TCP client's telnet state, kept across reads.
pub(crate) struct Telnet {
    state: State,
}

impl Telnet {
    pub(crate) fn new() -> Telnet {
        Telnet { state: State::Data }
    }

    /// Whether `data` is text as it stands: no command in it and none begun before it, so it
    /// can be framed without the copy [`Telnet::feed`] makes (a read from `nc` or a program
    /// never holds 0xFF unless it is binary).
    pub(crate) fn passes(&self, data: &[u8]) -> bool {
        self.state == State::Data && memchr(IAC, data).is_none()
    }

    /// Feeds bytes read from the client. Data bytes (with IAC IAC turned into one 0xFF) are
    /// appended to `text`; the bytes relayd must send back (refusals) are appended to `reply`.
    pub(crate) fn feed(&mut self, mut data: &[u8], text: &mut Vec<u8>, reply: &mut Vec<u8>) {
        // Only commands are looked at byte by byte: the runs of text between them (all of a read,
        // usually, since UTF-8 never contains 0xFF) and the bodies of subnegotiations are found
        // with memchr and copied, or skipped, whole.
        while !data.is_empty() {
            match self.state {
                State::Data => match memchr(IAC, data) {
                    None => {
                        text.extend_from_slice(data);
                        return;
                    }
                    Some(at) => {
                        text.extend_from_slice(&data[..at]);
                        self.state = State::Command;
                        data = &data[at + 1..];
                    }
                },
                State::Sub => match memchr(IAC, data) {
                    None => return,
                    Some(at) => {
                        self.state = State::SubCommand;
                        data = &data[at + 1..];
                    }
                },
                State::Command => {
                    self.state = command(data[0], text);
                    data = &data[1..];
                }
                State::Option(verb) => {
                    // Refuse whatever is asked or offered, so that the client never waits for an
                    // answer (TIMING-MARK after Ctrl-C, above all).
                    match verb {
                        DO => reply.extend_from_slice(&[IAC, WONT, data[0]]),
                        WILL => reply.extend_from_slice(&[IAC, DONT, data[0]]),
                        _ => {}
                    }
                    self.state = State::Data;
                    data = &data[1..];
                }
                State::SubCommand => {
                    self.state = match data[0] {
                        SE => State::Data,
                        // An escaped 0xFF in the subnegotiation's body.
                        IAC => State::Sub,
                        // Not allowed inside a subnegotiation: take it as the client having
                        // abandoned the subnegotiation, as libtelnet does, rather than wait for
                        // an `IAC SE` that may never come and swallow all the user's text.
                        byte => command(byte, text),
                    };
                    data = &data[1..];
                }
            }
        }
    }
}

/// The state after `IAC byte`.
fn command(byte: u8, text: &mut Vec<u8>) -> State {
    match byte {
        IAC => {
            text.push(IAC);
            State::Data
        }
        WILL | WONT | DO | DONT => State::Option(byte),
        SB => State::Sub,
        // IP, AO, AYT, EC, EL, BRK, NOP, DM, GA, a stray SE, or no command at all: none of them
        // means anything to a chat, and none is text.
        _ => State::Data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IP: u8 = 244;
    const AYT: u8 = 246;
    const NOP: u8 = 241;
    const TIMING_MARK: u8 = 6;
    const TERMINAL_TYPE: u8 = 24;

    /// Feeds `chunks` one after another, as successive reads, to one parser.
    fn feed(chunks: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let mut telnet = Telnet::new();
        let (mut text, mut reply) = (Vec::new(), Vec::new());
        for chunk in chunks {
            telnet.feed(chunk, &mut text, &mut reply);
        }
        (text, reply)
    }

    #[test]
    fn plain_data_passes_through() {
        assert_eq!(feed(&[b"hello\r\n"]), (b"hello\r\n".to_vec(), vec![]));
        assert_eq!(
            feed(&["h\u{e9}\u{1F600}\n".as_bytes()]).0,
            "h\u{e9}\u{1F600}\n".as_bytes()
        );
        assert_eq!(feed(&[b"", b"a", b""]), (b"a".to_vec(), vec![]));
    }

    #[test]
    fn doubled_iac_is_one_data_byte() {
        assert_eq!(feed(&[b"a\xff\xffb\n"]), (b"a\xffb\n".to_vec(), vec![]));
        assert_eq!(feed(&[b"\xff\xff\xff\xff"]).0, b"\xff\xff");
        assert_eq!(feed(&[b"\xff", b"\xff"]).0, b"\xff");
    }

    #[test]
    fn ctrl_c_is_no_text_and_timing_mark_is_refused() {
        // What telnet sends for Ctrl-C: IAC IP, IAC DO TIMING-MARK.
        let ctrl_c = [IAC, IP, IAC, DO, TIMING_MARK];
        assert_eq!(feed(&[&ctrl_c]), (vec![], vec![IAC, WONT, TIMING_MARK]));
        let mut line = ctrl_c.to_vec();
        line.extend_from_slice(b"after ctrl-c\r\n");
        assert_eq!(feed(&[&line]).0, b"after ctrl-c\r\n");
    }

    #[test]
    fn offers_are_refused() {
        assert_eq!(
            feed(&[&[IAC, WILL, TERMINAL_TYPE]]),
            (vec![], vec![IAC, DONT, TERMINAL_TYPE])
        );
        // Option 255 is a byte like any other after a verb.
        assert_eq!(feed(&[&[IAC, DO, IAC]]), (vec![], vec![IAC, WONT, IAC]));
    }

    #[test]
    fn refusals_are_not_answered() {
        let refusals = [IAC, WONT, TIMING_MARK, IAC, DONT, TERMINAL_TYPE];
        assert_eq!(feed(&[&refusals]), (vec![], vec![]));
    }

    #[test]
    fn other_commands_are_dropped() {
        assert_eq!(
            feed(&[&[b'a', IAC, AYT, b'b', IAC, NOP, IAC, SE, b'c']]).0,
            b"abc"
        );
    }

    #[test]
    fn subnegotiation_is_dropped() {
        // IAC SB TERMINAL-TYPE IS "xterm" (with an escaped 0xFF) IAC SE
        let mut input = b"x".to_vec();
        input.extend_from_slice(&[IAC, SB, TERMINAL_TYPE, 0]);
        input.extend_from_slice(b"xt\xff\xfferm");
        input.extend_from_slice(&[IAC, SE]);
        input.extend_from_slice(b"y");
        assert_eq!(feed(&[&input]), (b"xy".to_vec(), vec![]));
    }

    #[test]
    fn command_inside_subnegotiation_ends_it() {
        let input = [IAC, SB, TERMINAL_TYPE, b'z', IAC, WILL, TERMINAL_TYPE, b'a'];
        assert_eq!(
            feed(&[&input]),
            (b"a".to_vec(), vec![IAC, DONT, TERMINAL_TYPE])
        );
    }

    #[test]
    fn split_anywhere_is_the_same_as_whole() {
        let mut input = b"hi ".to_vec();
        input.extend_from_slice(&[IAC, IP, IAC, DO, TIMING_MARK]);
        input.extend_from_slice(b"a\xff\xffb");
        input.extend_from_slice(&[IAC, WILL, TERMINAL_TYPE, IAC, WONT, 1, IAC, AYT]);
        input.extend_from_slice(&[IAC, SB, TERMINAL_TYPE, 0, b'v', IAC, IAC, b't', IAC, SE]);
        input.extend_from_slice(b"after\r\n");
        let whole = feed(&[&input]);
        assert_eq!(whole.0, b"hi a\xffbafter\r\n");
        assert_eq!(whole.1, [IAC, WONT, TIMING_MARK, IAC, DONT, TERMINAL_TYPE]);
        for at in 0..=input.len() {
            assert_eq!(feed(&[&input[..at], &input[at..]]), whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(&bytes), whole, "one byte per read");
    }

    #[test]
    fn long_subnegotiation_holds_no_memory() {
        let mut telnet = Telnet::new();
        let (mut text, mut reply) = (Vec::new(), Vec::new());
        telnet.feed(&[IAC, SB, TERMINAL_TYPE], &mut text, &mut reply);
        let body = [b'x'; 64 * 1024];
        for _ in 0..160 {
            telnet.feed(&body, &mut text, &mut reply);
        }
        // 10 MiB later: nothing kept or produced, and the parser owns no heap memory at all.
        assert!(text.is_empty() && reply.is_empty());
        assert!(text.capacity() == 0 && reply.capacity() == 0);
        assert!(size_of::<Telnet>() <= 2);
        telnet.feed(&[IAC, SE, b'o', b'k'], &mut text, &mut reply);
        assert_eq!(text, b"ok");
    }

    /// A piece of what a client may send, and what relayd should make of it.
    #[derive(Clone, Debug)]
    enum Piece {
        Data(Vec<u8>),
        Command(u8),
        Negotiation(u8, u8),
        Sub(Vec<u8>),
    }

    fn escaped(bytes: &[u8]) -> Vec<u8> {
        bytes
            .iter()
            .flat_map(|&b| if b == IAC { vec![IAC, IAC] } else { vec![b] })
            .collect()
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            3 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(Piece::Data),
            1 => (241..=249u8).prop_map(Piece::Command),
            1 => (251..=254u8, any::<u8>()).prop_map(|(v, o)| Piece::Negotiation(v, o)),
            1 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(Piece::Sub),
        ]
    }

    proptest! {
        #[test]
        fn any_input_in_any_reads_never_panics(
            input in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let whole = feed(&[&input]);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for &to in &cuts {
                chunks.push(&input[from..to]);
                from = to;
            }
            chunks.push(&input[from..]);
            prop_assert_eq!(feed(&chunks), whole);
        }

        #[test]
        fn input_without_iac_is_all_text(input in proptest::collection::vec(0..=254u8, 0..300)) {
            prop_assert_eq!(feed(&[&input]), (input, vec![]));
        }

        #[test]
        fn commands_leave_exactly_the_data(
            pieces in proptest::collection::vec(piece(), 0..20),
            read in 1..16usize,
        ) {
            let (mut input, mut text, mut reply) = (Vec::new(), Vec::new(), Vec::new());
            for piece in &pieces {
                match piece {
                    Piece::Data(data) => {
                        input.extend(escaped(data));
                        text.extend_from_slice(data);
                    }
                    Piece::Command(command) => input.extend_from_slice(&[IAC, *command]),
                    Piece::Negotiation(verb, option) => {
                        input.extend_from_slice(&[IAC, *verb, *option]);
                        match *verb {
                            DO => reply.extend_from_slice(&[IAC, WONT, *option]),
                            WILL => reply.extend_from_slice(&[IAC, DONT, *option]),
                            _ => {}
                        }
                    }
                    Piece::Sub(body) => {
                        input.extend_from_slice(&[IAC, SB]);
                        input.extend(escaped(body));
                        input.extend_from_slice(&[IAC, SE]);
                    }
                }
            }
            let reads: Vec<&[u8]> = input.chunks(read).collect();
            prop_assert_eq!(feed(&reads), (text, reply));
        }
    }
}
