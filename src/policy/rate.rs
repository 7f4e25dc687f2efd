//! Flood control: a token bucket per client (`--rate LINES/SECONDS`).
//!
//! A bucket rather than a fixed window because it lets a client send a burst of up to LINES
//! lines at once (a paste, a quick exchange) while holding its long-run average to
//! LINES/SECONDS, with no cliff at a window boundary where twice the rate gets through.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A rate as given on the command line: `lines` per `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub lines: u32,
    pub seconds: u32,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("invalid rate {s:?}: expected LINES/SECONDS, e.g. 20/5");
        let (lines, seconds) = s.split_once('/').ok_or_else(bad)?;
        let lines: u32 = lines.trim().parse().map_err(|_| bad())?;
        let seconds: u32 = seconds.trim().parse().map_err(|_| bad())?;
        if lines == 0 || seconds == 0 {
            return Err(bad());
        }
        Ok(Rate { lines, seconds })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = if self.lines == 1 { "line" } else { "lines" };
        write!(f, "{} {lines} per {} s", self.lines, self.seconds)
    }
}

/// One client's bucket. Lives on the client's own thread, so it needs no lock.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
    /// When the client was last told it is over the rate; it is told at most once per
    /// `rate.seconds`, so the warnings themselves cannot flood it.
    warned: Option<Instant>,
}

impl Bucket {
    pub(crate) fn new(rate: Rate) -> Bucket {
        Bucket {
            rate,
            tokens: f64::from(rate.lines),
            last: Instant::now(),
            warned: None,
        }
    }

    /// Takes up to `n` tokens and returns how many lines may be relayed (the first ones).
    pub(crate) fn take(&mut self, n: usize, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let per_second = f64::from(self.rate.lines) / f64::from(self.rate.seconds);
        self.tokens = (self.tokens + elapsed * per_second).min(f64::from(self.rate.lines));
        let allowed = (self.tokens.floor() as usize).min(n);
        self.tokens -= allowed as f64;
        allowed
    }

    /// The notice for something dropped (`what`: "line", "/nick"), if the client has not had
    /// one in the last `rate.seconds`.
    pub(crate) fn warning(&mut self, now: Instant, what: &str) -> Option<String> {
        let quiet = Duration::from_secs(u64::from(self.rate.seconds));
        if self
            .warned
            .is_some_and(|at| now.saturating_duration_since(at) < quiet)
        {
            return None;
        }
        self.warned = Some(now);
        Some(format!(
            "relayd: rate limit exceeded ({}), {what} dropped",
            self.rate
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            "20/5".parse(),
            Ok(Rate {
                lines: 20,
                seconds: 5
            })
        );
        assert!("20".parse::<Rate>().is_err());
        assert!("0/5".parse::<Rate>().is_err());
        assert!("5/0".parse::<Rate>().is_err());
    }

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Rate {
            lines: 4,
            seconds: 2,
        });
        assert_eq!(b.take(3, t0), 3);
        assert_eq!(b.take(3, t0), 1);
        assert_eq!(b.take(1, t0), 0);
        // 2 tokens per second.
        assert_eq!(b.take(5, t0 + Duration::from_secs(1)), 2);
        assert_eq!(b.take(9, t0 + Duration::from_secs(100)), 4);
    }

    #[test]
    fn warns_once_per_period() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Rate {
            lines: 20,
            seconds: 5,
        });
        assert_eq!(
            b.warning(t0, "line").as_deref(),
            Some("relayd: rate limit exceeded (20 lines per 5 s), line dropped")
        );
        assert!(b.warning(t0 + Duration::from_secs(4), "line").is_none());
        assert!(b.warning(t0 + Duration::from_secs(5), "line").is_some());
        // One line, and a command rather than a line.
        let mut b = Bucket::new(Rate {
            lines: 1,
            seconds: 60,
        });
        assert_eq!(
            b.warning(t0, "/nick").as_deref(),
            Some("relayd: rate limit exceeded (1 line per 60 s), /nick dropped")
        );
    }
}
