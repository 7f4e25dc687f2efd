//! Connections come and go without leaving threads behind. Alone in its test binary (not a
//! module of `tests/integration`), so the process's thread count is the server's and this
//! test's only: any other test in the process would start and end threads of its own.

// Most of the helpers are the integration tests'; this test uses two.
#[allow(dead_code)]
mod common;

use crate::common::{Server, eventually};
use relayd::Config;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn two_thousand_connect_disconnect_cycles_leak_no_threads() {
    let server = Server::start(Config::default());
    let mut watcher = server.connect();
    let mut first = server.connect();
    first.send(b"ready\n");
    watcher.expect(b"ready\n");
    // Now the watcher's and the first client's threads both run; the first is about to go.
    let baseline = threads() - 1;
    drop(first);
    eventually("the first client's thread to end", || threads() <= baseline);
    for i in 0..2000 {
        let mut c = server.connect();
        c.send(format!("cycle {i}\n").as_bytes());
        watcher.expect(format!("cycle {i}\n").as_bytes());
    }
    eventually("client threads to end", || threads() <= baseline);
    watcher.send(b"bye\n");
}
