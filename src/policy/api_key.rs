//! The HTTP API's key (`--api-key-file`): the bearer token every API request carries.
//!
//! Compared with `subtle`'s constant-time equality rather than a loop of our own: the
//! compiler may turn a hand-written early-exit-free loop back into one that stops at the
//! first difference, which `subtle` is written to prevent. The key never reaches a log line:
//! its `Debug` says only how long it is.

use std::fmt;
use std::fs;
use std::path::Path;

use subtle::ConstantTimeEq;

use crate::framing::without_line_end;

/// Shorter keys are refused: 16 bytes of `openssl rand -base64 16` (24 characters) is the
/// least worth calling a key.
pub(crate) const MIN_KEY: usize = 16;

/// The key, as the file's first line says it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Vec<u8>);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({} bytes)", self.0.len())
    }
}

impl ApiKey {
    /// Reads the key: the file's first line, without its line ending, at least [`MIN_KEY`]
    /// bytes. Errors name the option and the file, never the key.
    pub(crate) fn load(path: &Path) -> Result<ApiKey, String> {
        let p = path.display();
        let text = fs::read(path).map_err(|e| format!("--api-key-file {p}: {e}"))?;
        let key = without_line_end(text.split_inclusive(|&b| b == b'\n').next().unwrap_or(b""));
        if key.len() < MIN_KEY {
            return Err(format!(
                "--api-key-file {p}: the key (the first line) must be at least {MIN_KEY} bytes"
            ));
        }
        Ok(ApiKey(key.to_vec()))
    }

    /// Whether `presented` is the key, in a time that depends on its length only.
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.ct_eq(presented))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_keys_and_never_shows_one() {
        let key = ApiKey(b"0123456789abcdef".to_vec());
        assert!(key.matches(b"0123456789abcdef"));
        assert!(!key.matches(b"0123456789abcdeX"));
        assert!(!key.matches(b"0123456789abcde"));
        assert!(!key.matches(b""));
        assert_eq!(format!("{key:?}"), "ApiKey(16 bytes)");
    }

    #[test]
    fn a_short_key_is_refused() {
        let path = std::env::temp_dir().join(format!("relayd-api-key-{}", std::process::id()));
        fs::write(&path, "short\n").unwrap();
        let err = ApiKey::load(&path).unwrap_err();
        assert!(err.contains("at least 16 bytes"), "{err}");
        assert!(!err.contains("short"), "{err}");
        fs::write(&path, "0123456789abcdef\r\nsecond line\n").unwrap();
        assert!(ApiKey::load(&path).unwrap().matches(b"0123456789abcdef"));
        let _ = fs::remove_file(&path);
    }
}
