//! TLS in front of relayd with stunnel, exactly as README.md's "Security" section shows: two
//! `openssl s_client` users talk through stunnel to relayd. `.ci/run` installs stunnel4.

use crate::common::Daemon;
use crate::common::tls::{Stunnel, have_stunnel};

#[test]
fn two_tls_clients_talk_through_stunnel() {
    if !have_stunnel() {
        return;
    }
    let d = Daemon::spawn(&[]);
    let stunnel = Stunnel::start(d.addrs[0], "");
    let mut a = stunnel.client(None);
    d.wait_log("(1 clients)");
    let mut b = stunnel.client(None);
    d.wait_log("(2 clients)");
    a.send("hello over tls\n");
    assert_eq!(b.line(), "hello over tls");
    b.send("and back\n");
    assert_eq!(a.line(), "and back");
}
