//! The shared secret (`--secret-file`): a password every client sends as its first line.
//!
//! It keeps strangers from reading or writing the stream; it is not encryption (anyone on the
//! path sees it and the traffic; put TLS in front for that, see README.md).

use std::fs;

use subtle::ConstantTimeEq;

use crate::framing::without_line_end;

/// Reads the secret: the file's first line, without its `\n` or `\r\n`, nothing else trimmed.
pub(crate) fn load(path: &str) -> Result<Vec<u8>, String> {
    let text = fs::read(path).map_err(|e| format!("--secret-file {path}: {e}"))?;
    let secret = without_line_end(text.split_inclusive(|&b| b == b'\n').next().unwrap_or(b""));
    if secret.is_empty() {
        return Err(format!("--secret-file {path}: the first line is empty"));
    }
    Ok(secret.to_vec())
}

/// Whether a client's first line (with its newline) is the secret, in a time that depends on
/// the lengths only, so response timing does not reveal how much of a guess was right:
/// `subtle`'s comparison, as for the API key (`policy::api_key`), which the compiler cannot
/// turn back into one that stops at the first difference.
pub(crate) fn matches(secret: &[u8], line: &[u8]) -> bool {
    bool::from(secret.ct_eq(without_line_end(line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_without_the_line_ending_only() {
        assert!(matches(b"s3cret", b"s3cret\n"));
        assert!(matches(b"s3cret", b"s3cret\r\n"));
        assert!(!matches(b"s3cret", b"s3cret \n"));
        assert!(!matches(b"s3cret", b"s3cre\n"));
        assert!(!matches(b"s3cret", b"s3crett\n"));
        assert!(!matches(b"s3cret", b"\n"));
        assert!(matches(b" x ", b" x \n"));
    }
}
