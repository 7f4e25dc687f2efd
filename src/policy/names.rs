//! What a name may be: the rule for chat names and rooms, and the characters node ids and
//! cluster names share with them. It sits in `policy`, below everything that reads a name (the
//! chat, the cluster, signed tokens), so that each applies the same rule.

/// The longest chat name or room, in bytes.
pub(crate) const MAX_NAME: usize = 32;

/// Whether `s` is 1 to `max` letters, digits, `_`, `-` or `.`: the characters of chat names
/// and rooms, node ids and cluster names, which go into lines, lists and Redis keys alike.
pub(crate) fn is_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A valid room name: 1–32 letters, digits, `_`, `-` or `.`.
pub fn valid_room(name: &str) -> bool {
    is_token(name, MAX_NAME)
}

/// A valid name: as a room name, but not only digits, so that the operator's `kick 7` can only
/// mean client id 7.
pub fn valid_name(name: &str) -> bool {
    valid_room(name) && !name.bytes().all(|b| b.is_ascii_digit())
}

/// `guest<digits>` names are handed out by the daemon; nobody may take one, not even with a
/// signed token.
pub fn reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower
        .strip_prefix("guest")
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}
