//! The client's real address behind a trusted proxy (`--proxy-protocol`): the PROXY
//! protocol header (v1, text, or v2, binary) that HAProxy, stunnel or nginx send first on a
//! connection, and for WebSocket behind an HTTP proxy the `X-Forwarded-For` header.
//!
//! Only a peer listed in `--proxy-protocol` is ever read for either: from anyone else a
//! PROXY header is just the client's first bytes and an `X-Forwarded-For` is ignored, so
//! nobody can claim another address. The header is parsed by the `ppp` crate; this module
//! only reads exactly its bytes off the socket (none of the client's own after it), within
//! a deadline.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ppp::{HeaderResult, v1, v2};

use crate::policy::access::Net;

/// How long a trusted proxy has to send the header: it sends it at once, on connecting.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// v1's `PROXY ` and v2's first six signature bytes: how a header starts.
const V1_START: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// Why a peer that sent nothing at all was not read: a proxy's health check, if it is not
/// told to send a header (HAProxy's `check` without `check-send-proxy`), so not a warning.
pub(crate) const CLOSED: &str = "closed before its PROXY protocol header";

/// A v1 header's longest form, CR LF included.
const V1_MAX: usize = 107;

/// Whether `ip` is a trusted proxy's.
pub(crate) fn trusted(proxies: &[Net], ip: IpAddr) -> bool {
    proxies.iter().any(|net| net.contains(ip))
}

/// Reads the header a trusted proxy sends first and returns the client's address in it, or
/// `None` for a connection the proxy makes on its own behalf (v2 `LOCAL`, v1 `UNKNOWN`: a
/// health check). `required`: whether bytes that do not start a header are an error (on
/// `--bind`) or the request itself (on `--ws-bind`, where a proxy may speak HTTP and send
/// `X-Forwarded-For` instead); then nothing is read. Errors say why, for the log line.
pub(crate) fn read_header(sock: &TcpStream, required: bool) -> Result<Option<SocketAddr>, String> {
    let deadline = Instant::now() + HEADER_TIMEOUT;
    let mut start = [0u8; 6];
    peek_exact(sock, &mut start, deadline)?;
    let v1 = start == V1_START;
    if !v1 && start != V2_SIGNATURE[..6] {
        return if required {
            Err("no PROXY protocol header from a --proxy-protocol peer".into())
        } else {
            Ok(None)
        };
    }
    let mut header = Vec::with_capacity(V1_MAX);
    if v1 {
        // Byte by byte to its line end: what follows it is the client's.
        while !header.ends_with(b"\r\n") {
            if header.len() == V1_MAX {
                return Err("PROXY v1 header longer than 107 bytes".into());
            }
            let mut byte = [0u8];
            read_exact(sock, &mut byte, deadline)?;
            header.push(byte[0]);
        }
    } else {
        header.resize(16, 0);
        read_exact(sock, &mut header, deadline)?;
        let rest = usize::from(u16::from_be_bytes([header[14], header[15]]));
        header.resize(16 + rest, 0);
        read_exact(sock, &mut header[16..], deadline)?;
    }
    source(&header)
}

/// The client's address a complete header carries.
fn source(header: &[u8]) -> Result<Option<SocketAddr>, String> {
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) => match (h.command, h.addresses) {
            (v2::Command::Local, _) => Ok(None),
            (_, v2::Addresses::IPv4(a)) => Ok(Some(SocketAddr::new(
                a.source_address.into(),
                a.source_port,
            ))),
            (_, v2::Addresses::IPv6(a)) => Ok(Some(SocketAddr::new(
                a.source_address.into(),
                a.source_port,
            ))),
            (_, other) => Err(format!("PROXY v2 header for a non-IP client: {other:?}")),
        },
        HeaderResult::V1(Err(e)) => Err(format!("malformed PROXY v1 header: {e}")),
        HeaderResult::V2(Err(e)) => Err(format!("malformed PROXY v2 header: {e}")),
    }
}

/// The client's address in the `X-Forwarded-For` headers of a request from a trusted proxy:
/// the rightmost address that is not itself a trusted proxy's (every proxy appends the one
/// it got the request from, so the ones left of it could be anyone's word). `None` without
/// the header, or when every address in it is a proxy's; an error when one does not parse.
pub(crate) fn forwarded_for(
    headers: &[(&str, &[u8])],
    proxies: &[Net],
) -> Result<Option<IpAddr>, String> {
    let mut hops = Vec::new();
    for (_, value) in headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-forwarded-for"))
    {
        let value = std::str::from_utf8(value).map_err(|_| "X-Forwarded-For not text")?;
        for hop in value.split(',').map(str::trim) {
            let ip: IpAddr = hop
                .parse()
                .map_err(|_| format!("X-Forwarded-For: {hop:?} is not an address"))?;
            hops.push(ip);
        }
    }
    Ok(hops.into_iter().rev().find(|ip| !trusted(proxies, *ip)))
}

/// Waits, up to `deadline`, for `buf.len()` bytes to be there, and copies them without
/// taking them.
fn peek_exact(sock: &TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), String> {
    loop {
        arm(sock, deadline)?;
        match sock.peek(buf) {
            Ok(0) => return Err(CLOSED.into()),
            Ok(n) if n == buf.len() => return Ok(()),
            // Fewer so far: wait for more (a peek returns at once while any are there).
            Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(read_error(&e)),
        }
    }
}

fn read_exact(mut sock: &TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), String> {
    let mut at = 0;
    while at < buf.len() {
        arm(sock, deadline)?;
        match sock.read(&mut buf[at..]) {
            Ok(0) => return Err("closed inside its PROXY protocol header".into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(&e)),
        }
    }
    Ok(())
}

/// Sets the socket's receive timeout to what is left until `deadline`.
fn arm(sock: &TcpStream, deadline: Instant) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    sock.set_read_timeout(Some(left))
        .map_err(|e| format!("cannot set a timeout: {e}"))
}

fn read_error(e: &io::Error) -> String {
    if crate::sys::timed_out(e) {
        timed_out()
    } else {
        format!("reading its PROXY protocol header: {e}")
    }
}

fn timed_out() -> String {
    format!("no complete PROXY protocol header within {HEADER_TIMEOUT:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 12345\r\n";
        assert_eq!(
            source(v1).unwrap(),
            Some("203.0.113.7:40000".parse().unwrap())
        );
        assert_eq!(source(b"PROXY UNKNOWN\r\n").unwrap(), None);
        assert!(source(b"PROXY TCP4 nonsense\r\n").is_err());
        let v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "[2001:db8::1]:5000".parse::<SocketAddr>().unwrap(),
                "[::1]:80".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        assert_eq!(
            source(&v2).unwrap(),
            Some("[2001:db8::1]:5000".parse().unwrap())
        );
    }

    #[test]
    fn forwarded_for_is_the_rightmost_untrusted() {
        let proxies: Vec<Net> = vec!["10.0.0.0/8".parse().unwrap()];
        let headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"x"),
            ("X-Forwarded-For", b"198.51.100.1, 203.0.113.7"),
            ("x-forwarded-for", b"10.1.1.1"),
        ];
        assert_eq!(
            forwarded_for(&headers, &proxies).unwrap(),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(forwarded_for(&headers[..1], &proxies).unwrap(), None);
        let bad: Vec<(&str, &[u8])> = vec![("X-Forwarded-For", b"unknown")];
        assert!(forwarded_for(&bad, &proxies).is_err());
    }
}
