//! Issue 22, point 5: relayd's page speaks `relayd.v1.json`, in headless Chromium against a
//! real daemon, with TCP clients in its rooms. The test reads what the page shows through
//! the DevTools protocol (`tests/common/page.rs`: the page's `selftest.view()`) and acts as
//! a person would (types, clicks), polling with deadlines.

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::link::Link;
use crate::common::page::{PAGE_TIMEOUT, Page};
use crate::common::tokens::{SECRET, mint, moderated, now, with_admin};
use crate::common::{Client, Daemon, admin_command, eventually_within};

/// A chat daemon with browsers on `--ws-bind` and a control socket, and `more` arguments.
fn daemon(more: &[&str]) -> (Daemon, PathBuf) {
    let mut args = vec!["--chat", "--ws-bind", "127.0.0.1:0"];
    args.extend_from_slice(more);
    with_admin("page-admin", &args)
}

/// A TCP client of `d` named `name`, in `room` once this returns.
fn tcp_in(d: &Daemon, name: &str, room: &str) -> Client {
    let mut c = d.connect();
    c.reader_mut()
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert!(text(&c.line()).starts_with("* welcome"));
    c.send(format!("/nick {name}\n").as_bytes());
    c.expect(format!("* you are now {name}\n").as_bytes());
    c.send(format!("/join {room}\n").as_bytes());
    let entered = format!("* you are now in {room} ");
    while !text(&c.line()).starts_with(&entered) {}
    c
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

/// The lines the page shows, as a TCP client would get them (`<alice> hi`).
fn lines(view: &Value) -> Vec<String> {
    of_each_line(view, "text")
}

fn ids(view: &Value) -> Vec<String> {
    of_each_line(view, "id")
}

/// Field `key` of each line the page shows.
fn of_each_line(view: &Value, key: &str) -> Vec<String> {
    view["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l[key].as_str().unwrap().to_string())
        .collect()
}

fn notices(view: &Value) -> Vec<(String, String)> {
    view["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap().to_string(),
                n["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn member_names(view: &Value) -> Vec<String> {
    let mut names: Vec<String> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Waits until the page is in `room` under the name `me`, its own member in the list.
fn entered(page: &mut Page, room: &str, me: &str) -> Value {
    page.wait(&format!("{me} in {room}"), |v| {
        v["room"] == room && v["me"] == me && member_names(v).contains(&me.to_string())
    })
}

/// Lines [`stream`] sends.
const STREAMED: usize = 500;

/// Sends `line-0000` … `line-0499` from `sender`, 100 a second, on a thread of its own.
fn stream(mut sender: Client) -> thread::JoinHandle<Client> {
    thread::spawn(move || {
        for i in 0..STREAMED {
            sender.send(format!("line-{i:04}\n").as_bytes());
            // Pacing, not synchronisation: lines keep coming while the page is away.
            thread::sleep(Duration::from_millis(10));
        }
        sender
    })
}

/// Asserts that the page holds every line [`stream`] sent by `sender`, once each, in order,
/// each with its own id.
fn holds_every_streamed_line_once(view: &Value) {
    let want: Vec<String> = (0..STREAMED)
        .map(|i| format!("<sender> line-{i:04}"))
        .collect();
    assert_eq!(lines(view), want);
    let mut unique = ids(view);
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), STREAMED, "ids are not one per line");
}

/// Proves point 3's recovery in the page: a TCP sender sends 100 lines/s into the room; the
/// page's connection is cut by the operator's `kick` of it after its first 100 lines; the
/// page says it was kicked and why (the `moderation` notice before the close) and that it
/// reconnects, reconnects on its own (`?room=` and `?since=` its last line's id), and then
/// holds every line the sender sent exactly once, in order, and says nothing was missed.
#[test]
fn a_kicked_page_reconnects_and_holds_every_line_once_in_order() {
    let (d, admin) = daemon(&[]);
    let sender = tcp_in(&d, "sender", "stream");
    let mut page = Page::open(&format!("http://{}/?room=stream&name=viewer", d.ws_addr()));
    entered(&mut page, "stream", "viewer");

    let total = STREAMED;
    let sending = stream(sender);
    page.wait("the first 100 lines", |v| lines(v).len() >= 100);
    assert_eq!(admin_command(&admin, "kick viewer cut by the test"), "ok\n");
    let kicked = page.wait("the kick, and why", |v| {
        notices(v).iter().any(|(_, t)| t.starts_with("kicked: "))
    });
    let said: Vec<_> = notices(&kicked);
    assert!(
        said.contains(&(
            "moderation".into(),
            "relayd: kicked by operator: cut by the test".into()
        )),
        "{said:?}"
    );
    assert!(
        said.iter().any(|(kind, t)| kind == "notice"
            && t.starts_with(
                "kicked: relayd: kicked by operator: cut by the test; reconnecting in "
            )),
        "{said:?}"
    );
    let _sender = sending.join().unwrap();
    let last = format!("<sender> line-{:04}", total - 1);
    let view = page.wait("every line, after the reconnect", |v| {
        !v["resumed"].is_null() && lines(v).last() == Some(&last)
    });
    holds_every_streamed_line_once(&view);
    assert_eq!(
        view["resumed"],
        json!({"recovered": true, "missed": 0, "text": "reconnected: nothing missed"})
    );
    assert!(
        notices(&view).contains(&("recovery".into(), "reconnected: nothing missed".into())),
        "{view:#}"
    );
    assert!(view["up"].as_bool().unwrap(), "{view:#}");
}

/// A daemon keeping 1,000 lines a room, TCP clients `sender` and `observer` in `stream`, and
/// the page in it as `viewer` through a link the test can cut.
fn behind_a_link() -> (Daemon, Link, Client, Client, Page) {
    let (d, _admin) = daemon(&["--history", "1000"]);
    let link = Link::to(d.ws_addr());
    let sender = tcp_in(&d, "sender", "stream");
    let observer = tcp_in(&d, "observer", "stream");
    let mut page = Page::open(&format!("http://{}/?room=stream&name=viewer", link.addr));
    entered(&mut page, "stream", "viewer");
    (d, link, sender, observer, page)
}

/// Proves the same beyond what the room keeps: the network between the page and relayd is
/// cut (a TCP link the test cuts, not relayd's doing) while 1,100 lines are sent, more than
/// the 1,000 a room keeps with `--history 1000`; once the link is back, the page
/// reconnects by itself, shows "missed 100 lines" and holds the lines after those, in order,
/// each once, up to the last.
#[test]
fn a_page_cut_off_longer_than_the_history_says_how_many_lines_it_missed() {
    let (_d, link, mut sender, mut observer, mut page) = behind_a_link();
    for i in 0..20 {
        sender.send(format!("before-{i:02}\n").as_bytes());
    }
    page.wait("the lines before the cut", |v| lines(v).len() == 20);

    link.cut();
    page.wait("the cut", |v| v["up"] == false);
    let during = 1100;
    let mut burst = String::new();
    for i in 0..during {
        burst.push_str(&format!("during-{i:04}\n"));
    }
    sender.send(burst.as_bytes());
    // The whole burst is in the room's history once another member has its last line.
    let last = format!("<sender> during-{:04}", during - 1);
    while text(&observer.line()).trim_end() != last {}
    link.restore();

    let view = page.wait("the reconnect's resumed", |v| !v["resumed"].is_null());
    assert_eq!(
        view["resumed"],
        json!({"recovered": false, "missed": 100, "text": "reconnected: missed 100 lines"})
    );
    let view = page.wait("the last line", |v| lines(v).last() == Some(&last));
    assert!(
        notices(&view).contains(&(
            "recovery missed".into(),
            "reconnected: missed 100 lines".into()
        )),
        "{view:#}"
    );
    // What the room still kept: the last 1,000, after the 20 from before; the page shows
    // the end of that (its list holds 1,000 items, the notices among them).
    let want: Vec<String> = (0..20)
        .map(|i| format!("<sender> before-{i:02}"))
        .chain((100..during).map(|i| format!("<sender> during-{i:04}")))
        .collect();
    let shown = lines(&view);
    assert!(shown.len() > 900, "{}", shown.len());
    assert_eq!(shown, want[want.len() - shown.len()..]);
}

/// Proves that the page's own lines are not shown twice by a recovery: relayd does not send
/// a client its own lines live, so the page shows what it sent at once; after a cut, the
/// recovery replays that line (it came after the page's last line from relayd), and the page
/// takes it for the one it shows (giving it its id), not a new one.
#[test]
fn a_recovery_does_not_show_the_page_its_own_line_twice() {
    let (_d, link, mut sender, mut observer, mut page) = behind_a_link();
    sender.send(b"hello\n");
    page.wait("sender's line", |v| lines(v) == ["<sender> hello"]);
    page.type_line("mine");
    while text(&observer.line()) != "<viewer> mine\n" {}

    link.cut();
    page.wait("the cut", |v| v["up"] == false);
    link.restore();
    let view = page.wait("the recovery", |v| !v["resumed"].is_null());
    assert_eq!(view["resumed"]["recovered"], true, "{view:#}");
    let view = page.wait("its line, with its id", |v| {
        lines(v) == ["<sender> hello", "<viewer> mine"]
    });
    assert!(
        !notices(&view).iter().any(|(_, t)| t == "<viewer> mine"),
        "{view:#}"
    );
}

/// Proves point 4 in the page: a moderator's page (its token's role `mod`; its own member
/// marked `mod` in the member list) offers recall on a line, and clicking it takes the line
/// off the page; the operator's `recall ROOM ID` takes another off too; the rest stays.
#[test]
fn a_moderator_recalls_a_line_from_the_page() {
    let (d, admin) = moderated(&["--ws-bind", "127.0.0.1:0"]);
    let claims = json!({"sub": "m1", "name": "mo", "role": "mod", "exp": now() + 3600});
    let token = mint(&claims, SECRET, None);
    let mut sender = tcp_in(&d, "sender", "stream");
    let mut page = Page::open(&format!(
        "http://{}/?room=stream&token={token}",
        d.ws_addr()
    ));
    let view = entered(&mut page, "stream", "mo");
    assert!(view["mod"].as_bool().unwrap(), "{view:#}");
    assert!(
        view["shownMembers"]
            .as_array()
            .unwrap()
            .contains(&json!("mo mod me")),
        "{view:#}"
    );

    sender.send(b"take this back\nthis stays\noperator takes this\n");
    let view = page.wait("three lines", |v| lines(v).len() == 3);
    let ids = ids(&view);
    let button = format!(
        "document.querySelector('#chat li[data-id=\"' + {} + '\"] .recall')",
        json!(ids[0])
    );
    assert_ne!(
        page.eval(&format!("getComputedStyle({button}).display")),
        "none"
    );
    page.eval(&format!("{button}.click()"));
    page.wait("the recalled line gone", |v| {
        lines(v) == ["<sender> this stays", "<sender> operator takes this"]
    });

    let answer = admin_command(&admin, &format!("recall stream {}", ids[2]));
    assert!(answer.starts_with("ok"), "{answer}");
    page.wait("the operator's recall", |v| {
        lines(v) == ["<sender> this stays"]
    });
}

/// Proves point 5's chat cap: 5,000 lines into the room, and the page's list holds the last
/// 1,000 of them, in order, and nothing more.
#[test]
fn the_chat_view_keeps_the_last_thousand_lines() {
    let (d, _admin) = daemon(&[]);
    let mut sender = tcp_in(&d, "sender", "stream");
    let mut page = Page::open(&format!("http://{}/?room=stream&name=viewer", d.ws_addr()));
    entered(&mut page, "stream", "viewer");
    let mut all = String::new();
    for i in 0..5000 {
        all.push_str(&format!("n-{i:04}\n"));
    }
    sender.send(all.as_bytes());
    let view = page.wait("the last line", |v| {
        lines(v).last().map(String::as_str) == Some("<sender> n-4999")
    });
    assert_eq!(view["items"], 1000);
    let want: Vec<String> = (4000..5000).map(|i| format!("<sender> n-{i:04}")).collect();
    assert_eq!(lines(&view), want);
    // It was at the bottom when the lines came: it follows them (scrolled once a frame).
    let at_bottom = "chat.scrollHeight > chat.clientHeight \
        && chat.scrollTop + chat.clientHeight >= chat.scrollHeight - 4";
    eventually_within("the page to scroll to its last line", PAGE_TIMEOUT, || {
        page.eval(at_bottom) == json!(true)
    });
}

/// Proves point 5's room view: the page shows its room's name, the online count and the
/// member list, kept up to date as others join; its room switch (the side's form) moves it
/// to another room, whose members and lines it then shows, and only those.
#[test]
fn the_page_shows_its_room_and_members_and_switches_rooms() {
    let (d, _admin) = daemon(&[]);
    let mut alice = tcp_in(&d, "alice", "games");
    let mut bob = tcp_in(&d, "bob", "music");
    let mut page = Page::open(&format!("http://{}/?room=games&name=viewer", d.ws_addr()));
    let view = entered(&mut page, "games", "viewer");
    assert_eq!(member_names(&view), ["alice", "viewer"]);
    assert_eq!(
        view["header"],
        json!({"room": "games", "online": "2 online"})
    );

    let _carol = tcp_in(&d, "carol", "games");
    let view = page.wait("carol", |v| member_names(v).len() == 3);
    assert_eq!(member_names(&view), ["alice", "carol", "viewer"]);
    assert_eq!(
        view["header"],
        json!({"room": "games", "online": "3 online"})
    );
    alice.send(b"hello games\n");
    page.wait("alice's line", |v| lines(v) == ["<alice> hello games"]);

    page.eval(
        "document.getElementById('room-input').value = 'music'; \
         document.getElementById('switch').requestSubmit()",
    );
    let view = entered(&mut page, "music", "viewer");
    assert_eq!(member_names(&view), ["bob", "viewer"]);
    assert_eq!(
        view["header"],
        json!({"room": "music", "online": "2 online"})
    );
    assert_eq!(lines(&view), Vec::<String>::new());
    bob.send(b"hello music\n");
    page.wait("bob's line", |v| lines(v) == ["<bob> hello music"]);
    page.type_line("hi bob");
    loop {
        let line = text(&bob.line());
        if line.starts_with('<') {
            assert_eq!(line, "<viewer> hi bob\n");
            break;
        }
    }
}

/// Proves that only a ban of its own keeps the page out: a room moderator's ban of another
/// member (a `moderation` notice with `"action":"ban"` about bob) does not, the operator's
/// kick of the page does not (it reconnects, recovering), and the operator's ban of the page
/// does: it says so with relayd's reason and does not schedule a reconnect (no
/// "reconnecting" on screen after it).
#[test]
fn only_its_own_ban_keeps_the_page_out() {
    let (d, admin) = daemon(&[]);
    let _bob = tcp_in(&d, "bob", "stream");
    let mut carol = tcp_in(&d, "carol", "stream");
    assert_eq!(admin_command(&admin, "op carol stream"), "ok\n");
    let mut page = Page::open(&format!("http://{}/?room=stream&name=viewer", d.ws_addr()));
    entered(&mut page, "stream", "viewer");
    carol.send(b"/ban bob 10m spam\n");
    page.wait("bob's ban", |v| {
        notices(v).contains(&(
            "moderation".into(),
            "* bob was banned for 10m by carol: spam".into(),
        ))
    });
    carol.send(b"still here\n");
    page.wait("carol's line", |v| lines(v) == ["<carol> still here"]);

    assert_eq!(admin_command(&admin, "kick viewer bye"), "ok\n");
    let view = page.wait("the reconnect", |v| {
        !v["resumed"].is_null() && v["up"] == true
    });
    assert_eq!(view["resumed"]["recovered"], true, "{view:#}");
    entered(&mut page, "stream", "viewer");

    let answer = admin_command(&admin, "ban viewer 10m spam");
    assert!(answer.starts_with("ok"), "{answer}");
    let view = page.wait("the ban", |v| {
        v["state"].as_str().unwrap().starts_with("banned: relayd: ")
    });
    let said = notices(&view);
    let ban = said
        .iter()
        .rposition(|(kind, t)| kind == "moderation" && t.starts_with("relayd: "))
        .unwrap_or_else(|| panic!("{said:?}"));
    assert!(
        !said[ban..].iter().any(|(_, t)| t.contains("reconnecting")),
        "{said:?}"
    );
}

/// Proves recovery across a cluster in the page: nodes a and b share rooms through Redis; a
/// TCP sender on node a sends 100 lines/s; the page, on node a through a link, is cut off
/// after its first 100 lines, and the link then leads to node b (as a load balancer's would
/// after node a went away): the page reconnects to node b with `since` its last line's id
/// and holds every line exactly once, in order, and says nothing was missed — the ids are
/// the room's Redis stream's, the same on both nodes.
#[test]
fn a_page_cut_off_node_a_recovers_on_node_b() {
    use crate::common::cluster::{Node, Redis};
    let redis = Redis::start();
    let url = redis.url();
    let web = ["--chat", "--ws-bind", "127.0.0.1:0"];
    let a = Node::start_with(&url, "a", &web);
    let b = Node::start_with(&url, "b", &web);
    a.wait_linked();
    b.wait_linked();
    let link = Link::to(a.daemon.ws_addr());
    let sender = tcp_in(&a.daemon, "sender", "stream");
    let mut page = Page::open(&format!("http://{}/?room=stream&name=viewer", link.addr));
    entered(&mut page, "stream", "viewer");

    let total = STREAMED;
    let sending = stream(sender);
    page.wait("the first 100 lines", |v| lines(v).len() >= 100);
    link.retarget(b.daemon.ws_addr());
    link.cut();
    page.wait("the cut", |v| v["up"] == false);
    link.restore();
    let _sender = sending.join().unwrap();
    let last = format!("<sender> line-{:04}", total - 1);
    let view = page.wait("every line, after the reconnect to node b", |v| {
        v["up"] == true && !v["resumed"].is_null() && lines(v).last() == Some(&last)
    });
    holds_every_streamed_line_once(&view);
    assert_eq!(
        view["resumed"],
        json!({"recovered": true, "missed": 0, "text": "reconnected: nothing missed"})
    );
    // It is on node b now: node b's `clients` lists a WebSocket client in the room.
    let clients = b.admin("clients");
    assert!(
        clients
            .lines()
            .any(|l| l.contains(" stream ") && l.contains(" ws ")),
        "{clients}"
    );
}
