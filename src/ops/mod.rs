//! The operator's ways in, each acting through the daemon's handle: the control socket and
//! `relayd ctl` (`admin`), `--console` (`console`), Prometheus `/metrics` (`metrics`), and
//! SIGHUP or `reload` reading the settings again (`reload`); `listening`, a listener served
//! by a thread until stopped (`--metrics`, `--api`).

pub(crate) mod admin;
pub(crate) mod console;
pub(crate) mod listening;
pub(crate) mod metrics;
pub(crate) mod reload;
