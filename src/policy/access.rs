//! Who may connect: address rules (`--allow`, `--deny`) and the per-address connection limit
//! (`--max-per-ip`). Both are decided in the accept loop, before a client costs a thread.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;

use crate::sync::lock;

/// A network in CIDR notation. A bare address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Net {
    type Err = String;

    /// Rejects an entry with host bits set (`10.0.0.1/8`): it is almost always a typo for
    /// either the network or the host, and guessing which would silently admit the wrong
    /// clients.
    fn from_str(s: &str) -> Result<Net, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s}: not an IP address or network"))?;
        // An IPv4-mapped network (`::ffff:10.0.0.0/104`) is the IPv4 network it maps: clients
        // are matched as IPv4, so the rule must be too, with its prefix counted in IPv4 bits.
        let mapped = addr.is_ipv6() && canonical(addr).is_ipv4();
        let addr = canonical(addr);
        let (min, max) = match (addr.is_ipv4(), mapped) {
            (true, true) => (96, 128),
            (true, false) => (0, 32),
            (false, _) => (0, 128),
        };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if (min..=max).contains(&p) => p,
                _ => return Err(format!("{s}: prefix length must be {min} to {max}")),
            },
        } - min;
        let net = Net { addr, prefix };
        let network = net.network();
        if network != addr {
            return Err(format!(
                "{s}: host bits set; the network is {network}/{prefix}"
            ));
        }
        Ok(net)
    }
}

impl Net {
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4 client arriving on an IPv6 listener shows up as `::ffff:a.b.c.d`; rules written
/// for IPv4 must still match it.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `--allow` and `--deny` rules. Deny wins; with any allow rule present, everything not
/// allowed is denied; with none, everything not denied is allowed.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub allow: Vec<Net>,
    pub deny: Vec<Net>,
}

impl Rules {
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|n| n.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(ip))
    }
}

/// Parses a rules file: one entry per line; blank lines and `#` comments are ignored.
/// Errors name the line, for the startup error message.
pub(crate) fn parse_rules_file(text: &str) -> Result<Vec<Net>, String> {
    let mut nets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if !entry.is_empty() {
            nets.push(entry.parse().map_err(|e| format!("line {}: {e}", i + 1))?);
        }
    }
    Ok(nets)
}

/// Open connections per client address, for `--max-per-ip`.
#[derive(Default)]
pub(crate) struct PerAddress {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// Counts one more connection from `ip`, unless it already has `max` (0: no limit).
    pub(crate) fn try_add(&self, ip: IpAddr, max: usize) -> bool {
        let mut counts = lock(&self.counts);
        let n = counts.entry(canonical(ip)).or_insert(0);
        if max > 0 && *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    pub(crate) fn remove(&self, ip: IpAddr) {
        let mut counts = lock(&self.counts);
        let ip = canonical(ip);
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_matches_v4_and_v6() {
        assert!(net("10.0.0.0/8").contains("10.200.1.1".parse().unwrap()));
        assert!(!net("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(net("192.0.2.7").contains("192.0.2.7".parse().unwrap()));
        assert!(!net("192.0.2.7").contains("192.0.2.8".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(net("2001:db8::/32").contains("2001:db8::1".parse().unwrap()));
        assert!(!net("2001:db8::/32").contains("10.0.0.1".parse().unwrap()));
        assert!(net("::/0").contains("::1".parse().unwrap()));
    }

    #[test]
    fn mapped_ipv4_matches_ipv4_rules() {
        assert!(net("127.0.0.0/8").contains("::ffff:127.0.0.1".parse().unwrap()));
        // Mapped networks are the IPv4 networks they map, their prefixes counted from 96.
        assert_eq!(net("::ffff:0:0/96"), net("0.0.0.0/0"));
        assert_eq!(net("::ffff:127.0.0.0/104"), net("127.0.0.0/8"));
        assert_eq!(net("::ffff:10.1.2.3"), net("10.1.2.3"));
        assert!("::ffff:0:0/95".parse::<Net>().is_err());
    }

    #[test]
    fn host_bits_are_an_error_naming_the_network() {
        assert_eq!(
            "10.0.0.1/8".parse::<Net>().unwrap_err(),
            "10.0.0.1/8: host bits set; the network is 10.0.0.0/8"
        );
        assert!("10.0.0.0/33".parse::<Net>().is_err());
        assert!("nonsense".parse::<Net>().is_err());
    }

    #[test]
    fn deny_wins_and_any_allow_denies_the_rest() {
        let rules = Rules {
            allow: vec![net("10.0.0.0/8")],
            deny: vec![net("10.0.0.5")],
        };
        assert!(rules.permits("10.0.0.4".parse().unwrap()));
        assert!(!rules.permits("10.0.0.5".parse().unwrap()));
        assert!(!rules.permits("192.168.0.1".parse().unwrap()));
        assert!(Rules::default().permits("192.168.0.1".parse().unwrap()));
    }

    #[test]
    fn rules_file_skips_comments_and_blanks_and_names_bad_lines() {
        assert_eq!(
            parse_rules_file("# office\n10.0.0.0/8\n\n  ::1  # me\n").unwrap(),
            vec![net("10.0.0.0/8"), net("::1")]
        );
        assert_eq!(
            parse_rules_file("10.0.0.0/8\nbad\n").unwrap_err(),
            "line 2: bad: not an IP address or network"
        );
    }
}
