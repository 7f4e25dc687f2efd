//! 2,000 clients at once (issue 5: the best-known tool of this kind aborts near client 1,021,
//! where descriptors pass select(2)'s FD_SETSIZE). Alone in its test binary (not a module of
//! `tests/integration`) because it raises this process's `RLIMIT_NOFILE`, which would change
//! every other test sharing the process.

// Most of the helpers are the integration tests'; this test uses two.
#[allow(dead_code)]
mod common;

use crate::common::{Client, Daemon};

const CLIENTS: usize = 2000;

/// Raises this process's soft descriptor limit to `want` (each test client holds two
/// descriptors: its stream and the reader's clone) and returns the hard limit. Fails, rather
/// than skips, if the hard limit is too low, so a CI machine that cannot run the test says so.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        assert!(
            lim.rlim_max >= want,
            "hard RLIMIT_NOFILE {} is below the {want} this test needs",
            lim.rlim_max
        );
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    lim.rlim_max
}

#[test]
fn two_thousand_clients_all_connect_and_all_receive() {
    two_thousand_clients(&[]);
}

/// 2,000 clients connect to the binary (started with a soft limit of 1,024, which it must
/// raise to the hard limit itself; `--max-clients` allows them). A client numbered past 1,024 (its descriptors in
/// the daemon are past FD_SETSIZE) sends a line: all 1,999 others get it. Then the last one
/// sends: all others, including the first, get that too, proving every one of them is served
/// both ways, not merely accepted.
fn two_thousand_clients(args: &[&str]) {
    let hard = raise_nofile(2 * CLIENTS as u64 + 256);
    // The daemon starts with the common default soft limit of 1,024, as under a login shell
    // or systemd, so it serves 2,000 only if it raises its own limit as it says it does.
    let d = Daemon::spawn_limited(
        &[args, &["--max-clients", "2100"]].concat(),
        Some((1024, hard)),
    );
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| d.connect()).collect();
    let mid = 1500;
    // Admission is in connect order, so once the last client's line arrives all are in.
    clients[CLIENTS - 1].send(b"last is in\n");
    for c in &mut clients[..CLIENTS - 1] {
        c.expect(b"last is in\n");
    }
    clients[mid].send(b"from client 1500\n");
    for (i, c) in clients.iter_mut().enumerate() {
        if i != mid {
            c.expect(b"from client 1500\n");
        }
    }
    clients[0].send(b"from the first\n");
    for c in &mut clients[1..] {
        c.expect(b"from the first\n");
    }
}
