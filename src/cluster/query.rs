//! Commands that wait for Redis's answer, each on a connection of its own from a small pool:
//! a client's name claim or a room's history read (the clients' pool), and the heartbeat's
//! renewals (a pool of one, its own). A slow or frozen Redis so costs a client that asks one
//! pause of at most the pool's timeout, never a place in a queue behind other clients or the
//! heartbeat: one that finds every connection busy is told "unavailable" at once.
//!
//! The timeout bounds the whole, connecting included. redis-rs waits up to a connection's read
//! timeout for each answer, not for all of them together (a frozen Redis would hold a
//! pipeline of N commands N times the timeout), so the answers are read here, one by one,
//! each within what is left.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::debug;
use redis::{FromRedisValue, RedisResult, Value};

use crate::sync::{Counted, lock};

/// Connections at most, idle and busy together, and how long one query may take on them.
pub(super) struct Pool {
    client: redis::Client,
    idle: Mutex<Vec<Pooled>>,
    open: Arc<AtomicUsize>,
    max: usize,
    timeout: Duration,
    /// For the log: whose connections these are.
    what: &'static str,
}

/// A connection, holding its place among the pool's `max` until dropped.
struct Pooled {
    con: redis::Connection,
    _place: Counted,
}

impl Pool {
    pub(super) fn new(
        what: &'static str,
        max: usize,
        timeout: Duration,
        client: redis::Client,
    ) -> Pool {
        Pool {
            client,
            idle: Mutex::new(Vec::new()),
            open: Arc::default(),
            max,
            timeout,
            what,
        }
    }

    /// [`Pool::query`] of one command.
    pub(super) fn one<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone());
        self.query(&pipe)?.pop()
    }

    /// Sends `cmds` on an idle connection, or on a new one if none is idle and the pool has
    /// room, and returns their answers; `None` if Redis did not answer all within the pool's
    /// timeout (all of it counted from now), or if every connection is busy. A kept
    /// connection that fails at once (it died with a restarted Redis) is dropped and `cmds`
    /// sent once more on a new one: every command sent here is safe to repeat.
    pub(super) fn query<T: FromRedisValue>(&self, cmds: &redis::Pipeline) -> Option<Vec<T>> {
        let deadline = Instant::now() + self.timeout;
        let mut reuse = true;
        loop {
            let (mut pooled, kept) = self.take(reuse, deadline)?;
            match send(&mut pooled.con, cmds, deadline) {
                Ok(v) => {
                    lock(&self.idle).push(pooled);
                    return Some(v);
                }
                Err(e) => {
                    // After a timeout a late answer would be read as the next command's: the
                    // connection goes either way.
                    debug!("cluster: {} failed: {e}", self.what);
                    drop(pooled);
                    if !kept || e.is_timeout() || !reuse {
                        return None;
                    }
                    reuse = false;
                }
            }
        }
    }

    /// An idle connection (`true`: kept from before), or a new one made by `deadline`.
    fn take(&self, reuse: bool, deadline: Instant) -> Option<(Pooled, bool)> {
        if reuse && let Some(pooled) = lock(&self.idle).pop() {
            return Some((pooled, true));
        }
        let Some(place) = Counted::take(&self.open, self.max) else {
            debug!("cluster: all {} {} connections busy", self.max, self.what);
            return None;
        };
        // Connecting may ask Redis for its password and database, each answer waited for
        // up to the timeout given: so each gets its share.
        let info = self.client.get_connection_info().redis_settings();
        let asks = u32::from(info.password().is_some()) + u32::from(info.db() != 0);
        let timeout = left(deadline) / asks.max(1);
        match self.client.get_connection_with_timeout(timeout) {
            Ok(con) => Some((Pooled { con, _place: place }, false)),
            Err(e) => {
                debug!("cluster: {} connection: {e}", self.what);
                None
            }
        }
    }
}

/// Sends `cmds` and reads their answers, each within what is left until `deadline`.
fn send<T: FromRedisValue>(
    con: &mut redis::Connection,
    cmds: &redis::Pipeline,
    deadline: Instant,
) -> RedisResult<Vec<T>> {
    con.set_write_timeout(Some(left(deadline)))?;
    con.send_packed_command(&cmds.get_packed_pipeline())?;
    let mut answers = Vec::new();
    for _ in cmds.cmd_iter() {
        con.set_read_timeout(Some(left(deadline)))?;
        let answer: Value = con.recv_response()?.extract_error()?;
        answers.push(redis::from_redis_value(answer)?);
    }
    Ok(answers)
}

/// What is left until `deadline`; at least a millisecond, as zero is no timeout to a socket.
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}
