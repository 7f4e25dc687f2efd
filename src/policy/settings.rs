//! The settings an operator may change without a restart: the `--allow`/`--deny` rules, the
//! shared secret, the motd, the signed tokens' keys (`--token-key`, `--token-public-key`) and
//! the HTTP API's key (`--api-key-file`) and the word filter (`--filter-file`).
//! Read from their files at startup and again on every reload (SIGHUP, the admin `reload`),
//! by the same code, so that a file means the same thing both times.
//!
//! A reload is all or nothing: every file is read and parsed before anything changes, so a
//! broken file never leaves a half-applied configuration behind.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use crate::policy::access::{self, Net, Rules};
use crate::policy::api_key::ApiKey;
use crate::policy::filter::Filter;
use crate::policy::secret;
use crate::policy::token::Keys;

/// Where the reloadable settings come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--allow` and `--deny` entries from the command line: they stay across reloads.
    pub allow: Vec<Net>,
    pub deny: Vec<Net>,
    pub allow_files: Vec<PathBuf>,
    pub deny_files: Vec<PathBuf>,
    pub secret_file: Option<PathBuf>,
    pub motd: Option<PathBuf>,
    /// `--token-key` (HS256 secrets) and `--token-public-key` (PEM public keys).
    pub token_key: Option<PathBuf>,
    pub token_public_key: Option<PathBuf>,
    /// `--api-key-file`: the key HTTP API requests must carry.
    pub api_key_file: Option<PathBuf>,
    /// `--filter-file`: the words a client's lines may not carry.
    pub filter_file: Option<PathBuf>,
}

/// The settings in force.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub rules: Rules,
    /// The line a client must send first, if any (without its line ending).
    pub secret: Option<Vec<u8>>,
    /// Lines sent after the chat welcome.
    pub motd: Vec<String>,
    /// The keys signed tokens are checked with; none without `--token-key` or
    /// `--token-public-key`.
    pub keys: Keys,
    /// The HTTP API's key; none without `--api-key-file` (the API is then on a loopback
    /// address, which `main` checks).
    pub api_key: Option<ApiKey>,
    /// The word filter; none without `--filter-file`. Shared: every chat line reads it.
    pub filter: Option<Arc<Filter>>,
}

impl Sources {
    /// Reads every file. Errors name the option and the file, for the startup error or the
    /// reload's log line.
    pub fn load(&self, max_line: usize) -> Result<Settings, String> {
        self.reload(&Settings::default(), max_line)
    }

    /// Reads every file again; what has no file behind it (rules given only on the command
    /// line, say, or a `Config` built by hand) is kept from `current`.
    pub fn reload(&self, current: &Settings, max_line: usize) -> Result<Settings, String> {
        let mut next = current.clone();
        if !(self.allow.is_empty()
            && self.deny.is_empty()
            && self.allow_files.is_empty()
            && self.deny_files.is_empty())
        {
            next.rules = Rules {
                allow: self.allow.clone(),
                deny: self.deny.clone(),
            };
            for (list, flag, files) in [
                (&mut next.rules.allow, "--allow-file", &self.allow_files),
                (&mut next.rules.deny, "--deny-file", &self.deny_files),
            ] {
                for path in files {
                    let p = path.display();
                    let text = fs::read_to_string(path).map_err(|e| format!("{flag} {p}: {e}"))?;
                    list.extend(
                        access::parse_rules_file(&text).map_err(|e| format!("{flag} {p}: {e}"))?,
                    );
                }
            }
        }
        if let Some(path) = &self.secret_file {
            let secret = secret::load(&path.to_string_lossy())?;
            if secret.len() + 1 > max_line {
                return Err(format!(
                    "--secret-file {}: the secret is longer than --max-line {max_line} allows",
                    path.display()
                ));
            }
            next.secret = Some(secret);
        }
        if let Some(path) = &self.motd {
            next.motd = read_motd(path)?;
        }
        if self.has_token_keys() {
            next.keys = Keys::load(self.token_key.as_deref(), self.token_public_key.as_deref())?;
        }
        if let Some(path) = &self.api_key_file {
            next.api_key = Some(ApiKey::load(path)?);
        }
        if let Some(path) = &self.filter_file {
            next.filter = Some(Arc::new(Filter::load(path)?));
        }
        Ok(next)
    }

    /// Whether any setting comes from a file, i.e. whether a reload can change anything.
    pub fn has_files(&self) -> bool {
        !self.allow_files.is_empty()
            || !self.deny_files.is_empty()
            || self.secret_file.is_some()
            || self.motd.is_some()
            || self.has_token_keys()
            || self.api_key_file.is_some()
            || self.filter_file.is_some()
    }

    /// Whether signed tokens can be checked: `--token-key` or `--token-public-key` is given.
    pub fn has_token_keys(&self) -> bool {
        self.token_key.is_some() || self.token_public_key.is_some()
    }
}

/// The motd's lines, without line endings; a final newline does not make an empty last line.
fn read_motd(path: &PathBuf) -> Result<Vec<String>, String> {
    let bytes =
        fs::read(path).map_err(|e| format!("cannot read --motd {}: {e}", path.display()))?;
    let mut lines: Vec<String> = bytes
        .split(|&b| b == b'\n')
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_has_no_file_is_kept_on_reload() {
        let current = Settings {
            rules: Rules {
                allow: vec!["10.0.0.0/8".parse().unwrap()],
                deny: Vec::new(),
            },
            secret: Some(b"s".to_vec()),
            motd: vec!["hi".into()],
            keys: Keys::default(),
            api_key: None,
            filter: None,
        };
        let kept = Sources::default().reload(&current, 100).unwrap();
        assert_eq!(kept.rules.allow, current.rules.allow);
        assert_eq!(kept.secret, current.secret);
        assert_eq!(kept.motd, current.motd);
    }

    #[test]
    fn a_missing_file_is_an_error_naming_option_and_path() {
        let sources = Sources {
            allow_files: vec!["/nonexistent/allow".into()],
            ..Sources::default()
        };
        let err = sources.load(100).unwrap_err();
        assert!(
            err.starts_with("--allow-file /nonexistent/allow: "),
            "{err}"
        );
    }
}
