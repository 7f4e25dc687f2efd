//! The word filter (`--filter-file`, `--filter-action`): words and phrases that a client's
//! lines may not carry to others.
//!
//! Matching is by aho-corasick (every pattern in one pass over the line, however long the
//! list), ASCII case-insensitive: `Spam` matches `sPaM`, but a non-ASCII letter only matches
//! itself (`é` not `É`), because folding other letters can change a text's length in bytes
//! and so the positions a mask replaces. A list that needs both spellings lists both.
//!
//! A match counts only as a whole word: not when a letter or digit touches it on a side
//! where the pattern itself starts or ends with one. A filter on `ass` must not eat `class`
//! or `passage` (the Scunthorpe problem), so the list names the forms it means (`ass`,
//! `asses`). A pattern's edge that is not a letter (`:)`, `f*ck`) matches anywhere.

use std::fmt;
use std::fs;
use std::path::Path;
use std::str::FromStr;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// What becomes of a line that matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Action {
    /// Not relayed; its sender is told.
    #[default]
    Drop,
    /// Relayed with each match replaced by [`MASK`].
    Mask,
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Action, String> {
        match s {
            "drop" => Ok(Action::Drop),
            "mask" => Ok(Action::Mask),
            _ => Err(format!(
                "invalid filter action {s:?}: expected drop or mask"
            )),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Drop => "drop",
            Action::Mask => "mask",
        })
    }
}

/// What a masked match becomes, whatever its length (its length would tell the word).
pub(crate) const MASK: &str = "***";

/// The longest pattern, in bytes: longer is not a word or a phrase but a mistake.
const MAX_PATTERN: usize = 256;

/// A loaded list of patterns.
#[derive(Clone)]
pub struct Filter {
    matcher: AhoCorasick,
    patterns: usize,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Filter({} patterns)", self.patterns)
    }
}

impl Filter {
    /// Reads `--filter-file`. Errors name the option, the file and, for a bad line, its
    /// number: one line, for the startup error or the reload's log line.
    pub fn load(path: &Path) -> Result<Filter, String> {
        let p = path.display();
        let text = fs::read_to_string(path).map_err(|e| format!("--filter-file {p}: {e}"))?;
        Filter::parse(&text).map_err(|e| format!("--filter-file {p}: {e}"))
    }

    /// One word or phrase per line; blank lines and `#` comments skipped; surrounding
    /// blanks trimmed.
    pub(crate) fn parse(text: &str) -> Result<Filter, String> {
        let mut patterns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() > MAX_PATTERN {
                return Err(format!("line {}: longer than {MAX_PATTERN} bytes", i + 1));
            }
            if line.chars().any(char::is_control) {
                return Err(format!("line {}: a control character", i + 1));
            }
            patterns.push(line.to_string());
        }
        // Standard semantics, so that every match, overlapping ones included, is reported:
        // a match rejected as part of a word must not hide one that overlaps it.
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .map_err(|e| format!("cannot build the matcher: {e}"))?;
        Ok(Filter {
            matcher,
            patterns: patterns.len(),
        })
    }

    /// How many patterns the list has.
    pub fn len(&self) -> usize {
        self.patterns
    }

    /// Whether the list has no pattern (an empty file filters nothing).
    pub fn is_empty(&self) -> bool {
        self.patterns == 0
    }

    /// The whole-word matches in `text`, as non-overlapping byte ranges in order (of
    /// overlapping ones, the earliest and then longest).
    fn matches(&self, text: &[u8]) -> Vec<(usize, usize)> {
        let mut found: Vec<(usize, usize)> = self
            .matcher
            .find_overlapping_iter(text)
            .map(|m| (m.start(), m.end()))
            .filter(|&(start, end)| whole_word(text, start, end))
            .collect();
        found.sort_by_key(|&(start, end)| (start, std::cmp::Reverse(end)));
        let mut kept: Vec<(usize, usize)> = Vec::with_capacity(found.len());
        for (start, end) in found {
            match kept.last() {
                Some(&(_, last_end)) if start < last_end => {}
                _ => kept.push((start, end)),
            }
        }
        kept
    }

    /// Whether `text` holds a listed word.
    pub(crate) fn hits(&self, text: &[u8]) -> bool {
        !self.matches(text).is_empty()
    }

    /// `text` with each listed word replaced by [`MASK`], or `None` if it holds none.
    pub(crate) fn mask(&self, text: &[u8]) -> Option<Vec<u8>> {
        let found = self.matches(text);
        if found.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in found {
            out.extend_from_slice(&text[at..start]);
            out.extend_from_slice(MASK.as_bytes());
            at = end;
        }
        out.extend_from_slice(&text[at..]);
        Some(out)
    }
}

/// Whether the match `text[start..end]` is not part of a longer word: a word character
/// (letter, digit, `_`, Unicode's included) at its edge must not have another beside it.
fn whole_word(text: &[u8], start: usize, end: usize) -> bool {
    let first = char_at(text, start);
    let last = char_before(text, end);
    let before = char_before(text, start);
    let after = char_at(text, end);
    let glued_before = is_word(first) && is_word(before);
    let glued_after = is_word(last) && is_word(after);
    !glued_before && !glued_after
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// The character that starts at byte `i`; `None` at the end or inside invalid UTF-8.
fn char_at(text: &[u8], i: usize) -> Option<char> {
    let rest = text.get(i..)?;
    let n = rest.len().min(4);
    (1..=n).find_map(|k| std::str::from_utf8(&rest[..k]).ok()?.chars().next())
}

/// The character that ends at byte `i`; `None` at the start or inside invalid UTF-8.
fn char_before(text: &[u8], i: usize) -> Option<char> {
    let head = text.get(..i)?;
    let n = head.len().min(4);
    (1..=n).find_map(|k| {
        std::str::from_utf8(&head[head.len() - k..])
            .ok()?
            .chars()
            .next()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(filter: &Filter, text: &str) -> String {
        filter
            .mask(text.as_bytes())
            .map_or_else(|| text.to_string(), |m| String::from_utf8(m).unwrap())
    }

    #[test]
    fn whole_words_only_and_any_ascii_case() {
        let f = Filter::parse("# rude\nass\n\n  darn it  \n:)\n").unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(
            masked(&f, "a class of ASS and Ass."),
            "a class of *** and ***."
        );
        assert_eq!(masked(&f, "passage, assess, ass_"), "passage, assess, ass_");
        assert_eq!(masked(&f, "oh DARN IT!"), "oh ***!");
        assert_eq!(masked(&f, "darn items"), "darn items");
        // A pattern edge that is not a letter matches anywhere.
        assert_eq!(masked(&f, "hi:)there"), "hi***there");
    }

    #[test]
    fn a_rejected_match_does_not_hide_an_overlapping_one() {
        let f = Filter::parse("a-b\nb-c\n").unwrap();
        assert_eq!(masked(&f, "xa-b-c"), "xa-***");
        let f = Filter::parse("bad\nbad word\n").unwrap();
        assert_eq!(masked(&f, "a bad word"), "a ***");
    }

    #[test]
    fn non_ascii_letters_match_only_themselves_and_are_word_letters() {
        let f = Filter::parse("ärger\nass\n").unwrap();
        assert!(f.hits("viel ärger".as_bytes()));
        assert!(!f.hits("viel ÄRGER".as_bytes()));
        assert!(f.hits("viel äRGER".as_bytes()));
        assert!(!f.hits("éass".as_bytes()));
        assert!(f.hits(b"\xffass"));
    }

    #[test]
    fn bad_lists() {
        assert_eq!(
            Filter::parse("ok\nbad\u{7}\n").unwrap_err(),
            "line 2: a control character"
        );
        assert!(Filter::parse(&"x".repeat(300)).is_err());
        assert!(Filter::parse("# nothing\n").unwrap().is_empty());
        assert!("pass".parse::<Action>().is_err());
    }
}
