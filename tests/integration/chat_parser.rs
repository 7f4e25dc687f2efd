//! Properties of the chat line parser and name rules: any bytes at all are read without a
//! panic, and what comes out is safe to show on someone else's terminal.

use proptest::prelude::*;
use relayd::{Input, parse, reserved, valid_name};

/// Bytes weighted towards what matters here: slashes, spaces, line ends, escapes.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'/'),
            Just(b' '),
            Just(b'\t'),
            Just(b'\r'),
            Just(b'\n'),
            Just(0x1b),
            Just(b'a'),
            any::<u8>()
        ],
        0..80,
    )
}

fn safe(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() && c != '\t')
}

proptest! {
    #[test]
    fn any_bytes_parse_to_something_safe(bytes in line()) {
        match parse(&bytes) {
            Input::Empty => {}
            Input::Text(text) => prop_assert!(!text.is_empty() && safe(&text)),
            Input::Command { name, arg } => {
                prop_assert!(safe(&name) && safe(&arg));
                prop_assert!(!name.contains([' ', '\t']));
                prop_assert_eq!(arg.trim(), arg.as_str());
            }
        }
    }

    #[test]
    fn a_double_slash_is_a_message_starting_with_one(rest in "[a-z /]{0,20}") {
        prop_assert_eq!(parse(format!("//{rest}\n").as_bytes()), Input::Text(format!("/{rest}")));
    }

    #[test]
    fn the_line_end_does_not_matter(text in "[ -~]{0,40}") {
        let bare = parse(text.as_bytes());
        prop_assert_eq!(parse(format!("{text}\n").as_bytes()), parse(format!("{text}\r\n").as_bytes()));
        prop_assert_eq!(parse(format!("{text}\n").as_bytes()), bare);
    }

    #[test]
    fn names_are_what_the_rules_say(name in "\\PC{0,40}") {
        let by_rule = (1..=32).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            && !name.bytes().all(|b| b.is_ascii_digit());
        prop_assert_eq!(valid_name(&name), by_rule);
        if reserved(&name) {
            prop_assert!(name.to_ascii_lowercase().starts_with("guest"));
        }
    }
}

#[test]
fn commands_split_at_the_first_blank() {
    assert_eq!(
        parse(b"/msg  bob  hi there \r\n"),
        Input::Command {
            name: "msg".into(),
            arg: "bob  hi there".into()
        }
    );
    assert_eq!(
        parse(b"/who\n"),
        Input::Command {
            name: "who".into(),
            arg: String::new()
        }
    );
    assert_eq!(parse(b"\x1b[2J\n"), Input::Text("[2J".into()));
    assert_eq!(parse(b"\r\n"), Input::Empty);
}
