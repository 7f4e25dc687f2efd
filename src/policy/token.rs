//! Signed tokens (JWT) that fix who a client is: the keys they are checked with
//! (`--token-key`, `--token-public-key`) and [`verify`], which turns a token into an
//! [`Identity`] or says in a word or two why not.
//!
//! Signatures, the algorithm check and `aud`/`iss` are the `jsonwebtoken` crate's (HMAC tags
//! are compared in constant time there, by RustCrypto's `hmac`; nothing here compares a secret).
//! This module picks the keys a token may be checked with, reads the claims relayd gives a
//! meaning to, and checks `exp` and `nbf` against the clock it is handed, so that the daemon's
//! expiry timer and the tests use the same instant.
//!
//! # Key files
//!
//! Both files are read line by line; blank lines and lines starting with `#` are skipped, and
//! a line `kid: NAME` names the key that follows it (the token header's `kid` picks it). A key
//! without such a line has no kid. The same rule in both files, so that rotating is the same
//! gesture for either: add the new key under a new `kid:`, hand the app the new key, remove the
//! old one, reload.
//!
//! - `--token-key FILE`: HS256 secrets, one a line, each the text the app signs with (as
//!   `firebase/php-jwt` or PyJWT take it; not base64-decoded), without the spaces around it,
//!   at least 32 bytes (RFC 7518 §3.2: a key as long as the hash); `openssl rand -base64 32`
//!   makes one. A one-line file holding just the secret, as `--secret-file` has it, is valid.
//! - `--token-public-key FILE`: PEM public keys, as `openssl pkey -pubout` writes them
//!   (`BEGIN PUBLIC KEY`: RSA for RS256, EC P-256 for ES256, Ed25519 for EdDSA; or PKCS#1
//!   `BEGIN RSA PUBLIC KEY`), one block after another. A `kid:` line before a block is what RFC
//!   7468 calls explanatory text, as the `friendlyName:` lines `openssl pkcs12` writes before a
//!   block: `openssl pkey -pubin -in FILE` still reads the file. A private key or a
//!   certificate is refused, with the `openssl` command that gives the public key.
//!
//! ```text
//! # --token-key: each secret is one line of `openssl rand -base64 32`
//! kid: 2026-02
//! <the new secret>
//! kid: 2026-01
//! <the secret being retired>
//! ```
//!
//! Each key serves one algorithm, decided by the key, never by the token: an HMAC secret
//! checks HS256 tokens only, an RSA key RS256, and so on, so that a token cannot have a
//! public key used as an HMAC secret. Loading errors are one line naming the option, the file
//! and the line; no error, `Debug` or log line shows a key.
//!
//! # Which keys check a token
//!
//! Among the keys of the token's `alg`:
//! - a token whose `kid` names a key is checked with that key only;
//! - a token whose `kid` names no key, and a token without `kid`, are checked with each key
//!   that has no kid (the app need not send the kids the operator wrote down);
//! - a token without `kid`, where every key has one, is checked with the key if there is only
//!   one, and refused (`bad signature`) if there are several: guessing would make the kids
//!   pointless.
//!
//! # What a bad token is told
//!
//! [`TokenError`] displays the words after `relayd: bad token: `, one of the issue's five;
//! [`TokenError::detail`] says more for the log, never anything from the token itself:
//! - `expired`: `exp` is not after now (no leeway: see [`NBF_LEEWAY`]).
//! - `not yet valid`: `nbf` is more than [`NBF_LEEWAY`] ahead.
//! - `bad signature`: no key of ours vouches for it: the signature does not match, no key
//!   serves its `alg` (HS384 or PS256, say, or HS256 with only public keys loaded), its `kid`
//!   names no key and no key lacks a kid, or it has no `kid` and several keys all have one.
//! - `wrong audience`: `aud` or `iss` is missing, not a string, or not the
//!   `--token-audience` / `--token-issuer` given (one line for both: the token is not meant
//!   for this relayd; the detail says which), or the token has an `aud` and relayd was given
//!   no `--token-audience` (RFC 7519 §4.1.3: a recipient not named in `aud` must refuse it).
//! - `malformed`: anything else: not three base64url parts; a header or claims that are not
//!   JSON; an `alg` that is no algorithm (`none` included); `sub` missing, empty, not a string
//!   or holding a control character or white space (it is a column of the operator's
//!   `clients`); a `name` (or, without one, `sub`) that is not a chat name
//!   (1–32 letters, digits, `_ - .`, not only digits: a numeric user id needs a `name`) or is
//!   a guest's (`guest` and digits, which relayd hands out);
//!   `rooms` not an array of room names; `role` not `user` or `mod`; `exp` or `nbf` not a
//!   number of seconds; `aud` or `iss` neither a string nor an array of strings where no
//!   `--token-audience` / `--token-issuer` is given; a signature that is not base64url.
//!
//! The signature is checked before any claim (only the header's `alg` and `kid` are read
//! first, to pick the keys), so nothing is said about the claims of a token no key signed.

use std::fmt;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::policy::names::{reserved, valid_name, valid_room};

/// How far ahead of this host's clock a token's `nbf` may be. An app that mints a token with
/// `nbf` (or `iat` copied into it) at its own "now" and hands it to a browser that connects at
/// once would otherwise be refused for the fraction of a second, or the few seconds, by which
/// the two clocks differ. Five seconds covers hosts kept by NTP and a VM's drift; more would
/// only hide a clock that needs fixing. `exp` gets none: relayd closes a client at `exp`
/// itself, and a token accepted after its `exp` would be closed at once.
pub(crate) const NBF_LEEWAY: Duration = Duration::from_secs(5);

/// The shortest HS256 secret, in bytes: RFC 7518 §3.2 asks for a key at least as long as the
/// hash, 256 bits.
const MIN_SECRET: usize = 32;

/// The keys tokens are checked with. Read again as a whole on a reload.
#[derive(Clone, Default)]
pub struct Keys {
    keys: Vec<Key>,
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
    /// The option, the file and the line it came from, for errors that name it.
    origin: String,
}

/// How one kind of key file is read.
type Parse = fn(&str) -> Result<Vec<Parsed>, String>;

/// A key as a file gives it, before it is added to the others.
struct Parsed {
    line: usize,
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// What a token is checked against besides its keys: `--token-audience`, `--token-issuer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Expect {
    pub(crate) audience: Option<String>,
    pub(crate) issuer: Option<String>,
}

/// Who a valid token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The user id (`sub`): one user's connections share it.
    pub(crate) sub: String,
    /// The name others see (`name`, else `sub`); a valid chat name.
    pub(crate) name: String,
    /// The rooms the user may join; `None` means any.
    pub(crate) rooms: Option<Vec<String>>,
    pub(crate) role: Role,
    /// When the token stops being valid; `None`: never.
    pub(crate) exp: Option<SystemTime>,
}

/// The token's `role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    User,
    Mod,
}

/// Why a token was refused. `Display` gives the words after `relayd: bad token: `; the
/// `&'static str` of some kinds (see [`TokenError::detail`]) is for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    Expired,
    NotYetValid,
    BadSignature(&'static str),
    /// `aud` or `iss`.
    WrongAudience(&'static str),
    Malformed(&'static str),
}

impl TokenError {
    /// Every refusal's word, in a fixed order, for the counters (see [`TokenError::index`]).
    pub(crate) const REASONS: [&'static str; 5] = [
        "expired",
        "not yet valid",
        "bad signature",
        "wrong audience",
        "malformed",
    ];

    /// This refusal's place in [`TokenError::REASONS`].
    pub(crate) fn index(&self) -> usize {
        match self {
            TokenError::Expired => 0,
            TokenError::NotYetValid => 1,
            TokenError::BadSignature(_) => 2,
            TokenError::WrongAudience(_) => 3,
            TokenError::Malformed(_) => 4,
        }
    }

    /// What exactly was wrong, for the log: fixed text, nothing taken from the token.
    pub(crate) fn detail(&self) -> &'static str {
        match self {
            TokenError::Expired => "exp has passed",
            TokenError::NotYetValid => "nbf is ahead",
            TokenError::BadSignature(why)
            | TokenError::WrongAudience(why)
            | TokenError::Malformed(why) => why,
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(TokenError::REASONS[self.index()])
    }
}

impl fmt::Debug for Keys {
    /// Which keys there are, never what they are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.keys).finish()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "{:?} key {kid:?} from {}", self.alg, self.origin),
            None => write!(f, "{:?} key without kid from {}", self.alg, self.origin),
        }
    }
}

impl Keys {
    /// Whether no key is loaded: tokens are not enabled.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Reads `--token-key` (HS256 secrets) and `--token-public-key` (PEM public keys), either
    /// or both. An error is one line naming the option, the file and, where it is about one,
    /// the line.
    pub(crate) fn load(secrets: Option<&Path>, public: Option<&Path>) -> Result<Keys, String> {
        let mut keys = Keys::default();
        for (flag, path, parse) in [
            ("--token-key", secrets, parse_secrets as Parse),
            ("--token-public-key", public, parse_public),
        ] {
            if let Some(path) = path {
                let p = path.display();
                let text = fs::read_to_string(path).map_err(|e| format!("{flag} {p}: {e}"))?;
                keys.add(&format!("{flag} {p}"), &text, parse)?;
            }
        }
        Ok(keys)
    }

    /// Adds the keys of one file's `text`; `p` is the option and the file, for errors.
    fn add(&mut self, p: &str, text: &str, parse: Parse) -> Result<(), String> {
        let parsed = parse(text).map_err(|e| format!("{p}: {e}"))?;
        if parsed.is_empty() {
            return Err(format!("{p}: no key in the file"));
        }
        for Parsed {
            line,
            kid,
            alg,
            key,
        } in parsed
        {
            if let Some(kid) = &kid
                && let Some(other) = self.keys.iter().find(|k| k.kid.as_ref() == Some(kid))
            {
                return Err(format!(
                    "{p}: line {line}: kid {kid} is already the kid of {}",
                    other.origin
                ));
            }
            let origin = format!("{p} line {line}");
            self.keys.push(Key {
                kid,
                alg,
                key,
                origin,
            });
        }
        Ok(())
    }

    /// The keys a token with this `alg` and `kid` is checked with (see the module's doc).
    fn for_token(&self, alg: Algorithm, kid: Option<&str>) -> Result<Vec<&Key>, TokenError> {
        let served: Vec<&Key> = self.keys.iter().filter(|k| k.alg == alg).collect();
        if served.is_empty() {
            return Err(TokenError::BadSignature("no key for the token's alg"));
        }
        if let Some(kid) = kid
            && let Some(key) = served.iter().find(|k| k.kid.as_deref() == Some(kid))
        {
            return Ok(vec![key]);
        }
        let unnamed: Vec<&Key> = served.iter().copied().filter(|k| k.kid.is_none()).collect();
        match (unnamed.is_empty(), kid, served.as_slice()) {
            (false, _, _) => Ok(unnamed),
            (true, None, [only]) => Ok(vec![only]),
            (true, None, _) => Err(TokenError::BadSignature(
                "the token has no kid and several keys have one",
            )),
            (true, Some(_), _) => Err(TokenError::BadSignature("no key has the token's kid")),
        }
    }
}

/// Checks `token` (the text after `/auth ` or in `?token=`, as sent) with `keys`, at `now`.
pub(crate) fn verify(
    keys: &Keys,
    token: &str,
    now: SystemTime,
    expect: &Expect,
) -> Result<Identity, TokenError> {
    // Read without checking, only to pick the keys; `decode` reads it again, checked.
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| TokenError::Malformed("not a JWT with a JSON header and a known alg"))?;
    let validation = expect.validation(header.alg);
    for key in keys.for_token(header.alg, header.kid.as_deref())? {
        match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
            Ok(data) => return data.claims.identity(now),
            Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
            Err(e) => return Err(expect.refusal(e.kind())),
        }
    }
    Err(TokenError::BadSignature("the signature matches no key"))
}

impl Expect {
    /// What `jsonwebtoken` checks: the signature with the algorithm of the key, `sub`
    /// present, and `aud` and `iss` (required when expected). Not `exp` and `nbf`, which
    /// `Claims::identity` checks against the time it is given.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.leeway = 0;
        let mut required = vec!["sub"];
        if let Some(audience) = &self.audience {
            v.set_audience(&[audience]);
            required.push("aud");
        }
        if let Some(issuer) = &self.issuer {
            v.set_issuer(&[issuer]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// The refusal for what `jsonwebtoken` found wrong, once the signature was not the issue.
    fn refusal(&self, kind: &ErrorKind) -> TokenError {
        match kind {
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "aud" => TokenError::WrongAudience(
                    "no aud (or not a string), and --token-audience is given",
                ),
                "iss" => TokenError::WrongAudience(
                    "no iss (or not a string), and --token-issuer is given",
                ),
                _ => TokenError::Malformed("no sub, or sub is not a string"),
            },
            ErrorKind::InvalidAudience if self.audience.is_none() => {
                TokenError::WrongAudience("the token has an aud and no --token-audience is given")
            }
            ErrorKind::InvalidAudience => {
                TokenError::WrongAudience("aud does not name --token-audience")
            }
            ErrorKind::InvalidIssuer => TokenError::WrongAudience("iss is not --token-issuer"),
            ErrorKind::InvalidClaimFormat(_) => {
                TokenError::Malformed("aud or iss is not a string or an array of strings")
            }
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::Json(_) => TokenError::Malformed(
                "a claim is not JSON of its type (sub, name, role: strings; \
                 rooms: array of strings; exp, nbf: numbers)",
            ),
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                TokenError::Malformed("not a JWT: three base64url parts of JSON")
            }
            // A key that cannot check the algorithm it was loaded for (checked at loading,
            // so not expected), or whatever else the crate may add.
            _ => TokenError::BadSignature("the key cannot check this token"),
        }
    }
}

/// The claims relayd reads; others (`iat`, `jti`, the app's own) are ignored. Each is
/// optional here so that a missing one gets its own refusal.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    name: Option<String>,
    rooms: Option<Vec<String>>,
    role: Option<String>,
    /// NumericDate: seconds since the epoch, which RFC 7519 allows to have a fraction.
    exp: Option<f64>,
    nbf: Option<f64>,
}

impl Claims {
    fn identity(self, now: SystemTime) -> Result<Identity, TokenError> {
        let exp = self.exp.map(time).transpose()?;
        if exp.is_some_and(|exp| now >= exp) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = self.nbf.map(time).transpose()?
            && nbf > now + NBF_LEEWAY
        {
            return Err(TokenError::NotYetValid);
        }
        let sub = self.sub.unwrap_or_default();
        if sub.is_empty() {
            return Err(TokenError::Malformed("sub is empty"));
        }
        // It is a column of the operator's space-separated `clients`.
        if sub.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(TokenError::Malformed(
                "sub holds a control character or a space",
            ));
        }
        let name = self.name.unwrap_or_else(|| sub.clone());
        if !valid_name(&name) {
            return Err(TokenError::Malformed(
                "name (or sub, without a name) is not 1-32 letters, digits, _ - . \
                 and not only digits",
            ));
        }
        if reserved(&name) {
            return Err(TokenError::Malformed(
                "name (or sub, without a name) is a guest name, which relayd hands out",
            ));
        }
        if let Some(rooms) = &self.rooms
            && !rooms.iter().all(|r| valid_room(r))
        {
            return Err(TokenError::Malformed(
                "a room in rooms is not 1-32 letters, digits, _ - .",
            ));
        }
        let role = match self.role.as_deref() {
            None | Some("user") => Role::User,
            Some("mod") => Role::Mod,
            Some(_) => return Err(TokenError::Malformed("role is neither user nor mod")),
        };
        Ok(Identity {
            sub,
            name,
            rooms: self.rooms,
            role,
            exp,
        })
    }
}

/// A NumericDate as a time.
fn time(seconds: f64) -> Result<SystemTime, TokenError> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .ok_or(TokenError::Malformed(
            "exp or nbf is not a time (seconds since 1970)",
        ))
}

/// The lines of a key file still to read, numbered from 0.
type Lines<'a> = std::iter::Enumerate<std::str::Lines<'a>>;

/// Reads a key file (see the module's doc): skips blank lines and `#` comments, keeps a
/// `kid: NAME` line for the key after it, and hands every other line, trimmed, with its
/// number and the lines after it, to `key`, which reads one key from there.
fn read_keys(
    text: &str,
    mut key: impl FnMut(usize, &str, &mut Lines) -> Result<(Algorithm, DecodingKey), String>,
) -> Result<Vec<Parsed>, String> {
    let mut keys = Vec::new();
    // The pending `kid:` line's number and name.
    let mut kid: Option<(usize, String)> = None;
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("kid:").map(str::trim) {
            if name.is_empty() {
                return Err(format!("line {n}: kid: without a name"));
            }
            if let Some((before, _)) = kid {
                return Err(format!(
                    "line {n}: a second kid: line with no key after the one on line {before}"
                ));
            }
            kid = Some((n, name.to_string()));
            continue;
        }
        let (alg, key) = key(n, line, &mut lines)?;
        let kid = kid.take().map(|(_, name)| name);
        keys.push(Parsed {
            line: n,
            kid,
            alg,
            key,
        });
    }
    match kid {
        Some((n, _)) => Err(format!("line {n}: kid: with no key after it")),
        None => Ok(keys),
    }
}

/// `--token-key`: HS256 secrets, one a line.
fn parse_secrets(text: &str) -> Result<Vec<Parsed>, String> {
    read_keys(text, |n, line, _| {
        if line.len() < MIN_SECRET {
            return Err(format!(
                "line {n}: a secret must be at least {MIN_SECRET} bytes \
                 (`openssl rand -base64 32` makes one)"
            ));
        }
        let key = DecodingKey::from_secret(line.as_bytes())
            .map_err(|_| format!("line {n}: not a secret"))?;
        Ok((Algorithm::HS256, key))
    })
}

/// `--token-public-key`: PEM public keys, each a block from its `BEGIN` line to its `END`.
fn parse_public(text: &str) -> Result<Vec<Parsed>, String> {
    read_keys(text, |n, line, lines| {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        else {
            return Err(format!(
                "line {n}: neither a PEM block, a kid: line nor a # comment"
            ));
        };
        let end = format!("-----END {label}-----");
        let mut block = format!("{line}\n");
        loop {
            let Some((_, next)) = lines.next() else {
                return Err(format!("line {n}: {line} has no {end}"));
            };
            block.push_str(next.trim());
            block.push('\n');
            if next.trim() == end {
                break;
            }
        }
        public_key(label, &block).map_err(|e| format!("line {n}: {e}"))
    })
}

/// One PEM block's key and the one algorithm it serves.
fn public_key(label: &str, pem: &str) -> Result<(Algorithm, DecodingKey), String> {
    match label {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
        "CERTIFICATE" => {
            return Err("a certificate: give its public key \
                        (`openssl x509 -in CERT -pubkey -noout`)"
                .to_string());
        }
        _ if label.ends_with("PRIVATE KEY") => {
            return Err("a private key: relayd needs only the public key \
                        (`openssl pkey -in KEY -pubout`)"
                .to_string());
        }
        _ => return Err(format!("{label}: not a public key")),
    }
    let unreadable = || "not an RSA, EC P-256 or Ed25519 public key".to_string();
    // The key's own algorithm identifier decides which of these reads it.
    let pem = pem.as_bytes();
    let key = DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|_| unreadable())?;
    // Reading the key as a JWK parses it (the RSA modulus, the EC curve, the Ed25519 length).
    let alg = match Jwk::from_decoding_key(&key, None)
        .map_err(|_| unreadable())?
        .algorithm
    {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::EllipticCurve(_) => {
            return Err("an EC key on another curve than P-256 (ES256)".to_string());
        }
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        _ => return Err(unreadable()),
    };
    // Making a verifier checks that an EC or Ed25519 key is a point on its curve; a check
    // that fails because the empty signature is wrong is the expected answer.
    jsonwebtoken::crypto::verify("", b"", &key, alg).map_err(|_| unreadable())?;
    Ok((alg, key))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    use super::*;

    // Test-only keys, made once with `openssl genpkey` (see tests/keys/README.md).
    const RSA_KEY: &str = include_str!("../../tests/keys/rsa.key");
    const RSA_PUB: &str = include_str!("../../tests/keys/rsa.pub");
    const RSA_PKCS1_PUB: &str = include_str!("../../tests/keys/rsa-pkcs1.pub");
    const EC_KEY: &str = include_str!("../../tests/keys/ec.key");
    const EC_PUB: &str = include_str!("../../tests/keys/ec.pub");
    const ED_KEY: &str = include_str!("../../tests/keys/ed.key");
    const ED_PUB: &str = include_str!("../../tests/keys/ed.pub");
    const ED2_KEY: &str = include_str!("../../tests/keys/ed2.key");
    const ED2_PUB: &str = include_str!("../../tests/keys/ed2.pub");
    const P384_PUB: &str = include_str!("../../tests/keys/p384.pub");
    const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";
    const OTHER: &str = "another-test-only-secret-0123456789abcdef";
    /// The tests' "now".
    const NOW: u64 = 1_800_000_000;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    /// Keys as `Keys::load` reads them from files holding these texts ("" for no file).
    fn keys(secrets: &str, public: &str) -> Result<Keys, String> {
        let mut keys = Keys::default();
        if !secrets.is_empty() {
            keys.add("--token-key k", secrets, parse_secrets)?;
        }
        if !public.is_empty() {
            keys.add("--token-public-key p", public, parse_public)?;
        }
        Ok(keys)
    }

    fn mint(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        encode(&header, claims, key).unwrap()
    }

    /// An HS256 token signed with `secret`.
    fn hs(claims: Value, kid: Option<&str>, secret: &str) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
        mint(Algorithm::HS256, kid, &key, &claims)
    }

    /// A token signed with a PEM private key.
    fn signed(alg: Algorithm, kid: Option<&str>, private: &str, claims: Value) -> String {
        let pem = private.as_bytes();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_ed_pem(pem),
        };
        mint(alg, kid, &key.unwrap(), &claims)
    }

    /// A token's three parts.
    fn parts(token: &str) -> [&str; 3] {
        let parts: Vec<&str> = token.split('.').collect();
        parts.try_into().unwrap()
    }

    fn check(keys: &Keys, token: &str) -> Result<Identity, TokenError> {
        verify(keys, token, at(NOW), &Expect::default())
    }

    /// What a client would be told about `token`, or `ok NAME`.
    fn told(keys: &Keys, token: &str, expect: &Expect) -> String {
        match verify(keys, token, at(NOW), expect) {
            Ok(id) => format!("ok {}", id.name),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_hs256_token_gives_its_identity() {
        let keys = keys(SECRET, "").unwrap();
        let token = hs(json!({"sub": "alice", "exp": NOW + 60}), None, SECRET);
        assert_eq!(
            check(&keys, &token).unwrap(),
            Identity {
                sub: "alice".into(),
                name: "alice".into(),
                rooms: None,
                role: Role::User,
                exp: Some(at(NOW + 60)),
            }
        );
        let token = hs(json!({"sub": "u-1"}), None, SECRET);
        assert_eq!(check(&keys, &token).unwrap().exp, None, "no exp: never");
    }

    #[test]
    fn each_public_key_algorithm_verifies_its_own_tokens_only() {
        for (alg, private, public) in [
            (Algorithm::RS256, RSA_KEY, RSA_PUB),
            (Algorithm::RS256, RSA_KEY, RSA_PKCS1_PUB),
            (Algorithm::ES256, EC_KEY, EC_PUB),
            (Algorithm::EdDSA, ED_KEY, ED_PUB),
        ] {
            let keys = keys("", public).unwrap();
            let token = signed(alg, None, private, json!({"sub": "u-7", "name": "bob"}));
            assert_eq!(check(&keys, &token).unwrap().name, "bob", "{alg:?}");
        }
        // Signed by another key of the same algorithm.
        let keys = keys("", ED_PUB).unwrap();
        let token = signed(Algorithm::EdDSA, None, ED2_KEY, json!({"sub": "u-7"}));
        assert_eq!(
            check(&keys, &token),
            Err(TokenError::BadSignature("the signature matches no key"))
        );
        // An algorithm no key serves.
        let token = signed(Algorithm::ES256, None, EC_KEY, json!({"sub": "u-7"}));
        assert_eq!(
            check(&keys, &token),
            Err(TokenError::BadSignature("no key for the token's alg"))
        );
    }

    #[test]
    fn a_public_key_is_never_taken_for_an_hmac_secret() {
        // The classic confusion: an HS256 token "signed" with the server's public key.
        let keys = keys("", RSA_PUB).unwrap();
        let token = hs(json!({"sub": "mallory"}), None, RSA_PUB);
        assert_eq!(told(&keys, &token, &Expect::default()), "bad signature");
        // And an HMAC secret serves HS256 only.
        let keys = super::tests::keys(SECRET, "").unwrap();
        let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        let token = mint(Algorithm::HS512, None, &key, &json!({"sub": "a"}));
        assert_eq!(told(&keys, &token, &Expect::default()), "bad signature");
    }

    #[test]
    fn each_refusal_says_why_in_the_issues_words() {
        let keys = keys(SECRET, "").unwrap();
        let tok = |claims: Value| hs(claims, None, SECRET);
        let good = tok(json!({"sub": "a"}));
        let other = tok(json!({"sub": "b"}));
        let [head, payload, signature] = parts(&good);
        let [_, other_payload, other_signature] = parts(&other);
        let cases = [
            (tok(json!({"sub": "a", "exp": NOW + 1})), "ok a"),
            (tok(json!({"sub": "a", "exp": NOW as f64 + 0.5})), "ok a"),
            (tok(json!({"sub": "a", "exp": NOW})), "expired"),
            (tok(json!({"sub": "a", "exp": NOW - 3600})), "expired"),
            (tok(json!({"sub": "a", "exp": 0})), "expired"),
            (tok(json!({"sub": "a", "nbf": NOW + 5})), "ok a"),
            (tok(json!({"sub": "a", "nbf": NOW + 6})), "not yet valid"),
            (hs(json!({"sub": "a"}), None, OTHER), "bad signature"),
            // Another payload under the first token's signature, and the reverse.
            (
                format!("{head}.{other_payload}.{signature}"),
                "bad signature",
            ),
            (
                format!("{head}.{payload}.{other_signature}"),
                "bad signature",
            ),
            (format!("{head}.{payload}.AAAA{signature}"), "bad signature"),
            // A signature that is not base64url (one character short).
            (format!("{head}.{payload}.{}", &signature[1..]), "malformed"),
            ("".to_string(), "malformed"),
            ("not a token".to_string(), "malformed"),
            (format!("{head}.{payload}"), "malformed"),
            (format!("{good}.{signature}"), "malformed"),
            (format!("{head}.{payload}.%%%"), "malformed"),
            (format!("{head}.%%%.{signature}"), "bad signature"),
            // {"alg":"none"}.{"sub":"a"}. and a header that is not JSON.
            (
                "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.".to_string(),
                "malformed",
            ),
            (
                format!("bm90IGpzb24.eyJzdWIiOiJhIn0.{signature}"),
                "malformed",
            ),
            (tok(json!({"name": "a"})), "malformed"),
            (tok(json!({"sub": ""})), "malformed"),
            (tok(json!({"sub": 42, "name": "a"})), "malformed"),
            (tok(json!({"sub": "a\nb", "name": "ab"})), "malformed"),
            (tok(json!({"sub": "a", "exp": "tomorrow"})), "malformed"),
            (tok(json!({"sub": "a", "exp": -1})), "malformed"),
            (tok(json!({"sub": "a", "nbf": [1]})), "malformed"),
        ];
        for (token, line) in cases {
            assert_eq!(told(&keys, &token, &Expect::default()), line, "{token}");
        }
        // The log's detail, fixed text.
        let token = tok(json!({"sub": ""}));
        assert_eq!(check(&keys, &token).unwrap_err().detail(), "sub is empty");
        let token = tok(json!({"sub": "a", "exp": NOW}));
        assert_eq!(check(&keys, &token).unwrap_err().detail(), "exp has passed");
    }

    #[test]
    fn audience_and_issuer_are_checked_when_given() {
        let keys = keys(SECRET, "").unwrap();
        let expect = Expect {
            audience: Some("relayd".into()),
            issuer: Some("https://app.example".into()),
        };
        let iss = "https://app.example";
        let tok = |claims: Value| hs(claims, None, SECRET);
        let cases = [
            (json!({"sub": "a", "aud": "relayd", "iss": iss}), "ok a"),
            (
                json!({"sub": "a", "aud": ["web", "relayd"], "iss": iss}),
                "ok a",
            ),
            (
                json!({"sub": "a", "aud": "web", "iss": iss}),
                "wrong audience",
            ),
            (json!({"sub": "a", "aud": [], "iss": iss}), "wrong audience"),
            (json!({"sub": "a", "iss": iss}), "wrong audience"),
            (
                json!({"sub": "a", "aud": "relayd", "iss": "https://evil"}),
                "wrong audience",
            ),
            (json!({"sub": "a", "aud": "relayd"}), "wrong audience"),
            (json!({"sub": "a", "aud": 7, "iss": iss}), "wrong audience"),
        ];
        for (claims, line) in cases {
            assert_eq!(told(&keys, &tok(claims.clone()), &expect), line, "{claims}");
        }
        let token = tok(json!({"sub": "a", "aud": "relayd"}));
        let err = verify(&keys, &token, at(NOW), &expect).unwrap_err();
        assert_eq!(
            err.detail(),
            "no iss (or not a string), and --token-issuer is given"
        );
        // Without --token-audience, a token meant for a named audience is not for relayd
        // (RFC 7519 4.1.3); without --token-issuer, any iss will do.
        assert_eq!(
            check(&keys, &token),
            Err(TokenError::WrongAudience(
                "the token has an aud and no --token-audience is given"
            ))
        );
        let token = tok(json!({"sub": "a", "iss": "anyone"}));
        assert_eq!(told(&keys, &token, &Expect::default()), "ok a");
        let token = tok(json!({"sub": "a", "aud": 7}));
        assert_eq!(told(&keys, &token, &Expect::default()), "malformed");
    }

    #[test]
    fn the_name_follows_the_chat_name_rule() {
        let keys = keys(SECRET, "").unwrap();
        let long = "x".repeat(33);
        for (claims, line) in [
            (
                json!({"sub": "u1", "name": "alice_B-2.0"}),
                "ok alice_B-2.0",
            ),
            (json!({"sub": "u1", "name": "7a"}), "ok 7a"),
            (
                json!({"sub": "u1", "name": "x".repeat(32)}),
                "ok xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            ),
            (json!({"sub": "u1", "name": null}), "ok u1"),
            (json!({"sub": "u1", "name": "7"}), "malformed"),
            (json!({"sub": "u1", "name": "007"}), "malformed"),
            (json!({"sub": "u1", "name": ""}), "malformed"),
            (json!({"sub": "u1", "name": long}), "malformed"),
            (json!({"sub": "u1", "name": "al ice"}), "malformed"),
            (json!({"sub": "u1", "name": "älice"}), "malformed"),
            (json!({"sub": "u1", "name": 7}), "malformed"),
            // Without a name, sub is the name: a numeric user id needs a name.
            (json!({"sub": "12345"}), "malformed"),
            (json!({"sub": "12345", "name": "carol"}), "ok carol"),
            (
                json!({"sub": "user@example.org", "name": "dave"}),
                "ok dave",
            ),
        ] {
            let token = hs(claims.clone(), None, SECRET);
            assert_eq!(told(&keys, &token, &Expect::default()), line, "{claims}");
        }
    }

    #[test]
    fn rooms_and_role_are_read() {
        let keys = keys(SECRET, "").unwrap();
        let read = |claims: Value| check(&keys, &hs(claims, None, SECRET));
        let id = read(json!({"sub": "a", "rooms": ["lobby", "dev.2"], "role": "mod"})).unwrap();
        assert_eq!(
            id.rooms,
            Some(vec!["lobby".to_string(), "dev.2".to_string()])
        );
        assert_eq!(id.role, Role::Mod);
        let id = read(json!({"sub": "a", "rooms": [], "role": "user"})).unwrap();
        assert_eq!((id.rooms, id.role), (Some(vec![]), Role::User));
        let id = read(json!({"sub": "a", "rooms": null})).unwrap();
        assert_eq!((id.rooms, id.role), (None, Role::User));
        for claims in [
            json!({"sub": "a", "rooms": "lobby"}),
            json!({"sub": "a", "rooms": ["lobby", "no room"]}),
            json!({"sub": "a", "rooms": ["lobby", 7]}),
            json!({"sub": "a", "rooms": [""]}),
            json!({"sub": "a", "role": "admin"}),
            json!({"sub": "a", "role": "MOD"}),
            json!({"sub": "a", "role": 1}),
        ] {
            assert!(
                matches!(read(claims.clone()), Err(TokenError::Malformed(_))),
                "{claims}"
            );
        }
    }

    #[test]
    fn rotation_picks_the_key_by_kid() {
        let claims = || json!({"sub": "a"});
        let keys = keys(&format!("kid: new\n{OTHER}\nkid: old\n{SECRET}\n"), "").unwrap();
        let expect = Expect::default();
        assert_eq!(
            told(&keys, &hs(claims(), Some("old"), SECRET), &expect),
            "ok a"
        );
        assert_eq!(
            told(&keys, &hs(claims(), Some("new"), OTHER), &expect),
            "ok a"
        );
        // The kid's key only, not every key.
        let token = hs(claims(), Some("old"), OTHER);
        assert_eq!(told(&keys, &token, &expect), "bad signature");
        assert_eq!(
            check(&keys, &hs(claims(), Some("gone"), SECRET)),
            Err(TokenError::BadSignature("no key has the token's kid"))
        );
        assert_eq!(
            check(&keys, &hs(claims(), None, SECRET)),
            Err(TokenError::BadSignature(
                "the token has no kid and several keys have one"
            ))
        );
        // Keys without a kid take the tokens whose kid names no key, and those without one.
        let keys = super::tests::keys(&format!("kid: new\n{OTHER}\n{SECRET}\n"), "").unwrap();
        assert_eq!(
            told(&keys, &hs(claims(), Some("gone"), SECRET), &expect),
            "ok a"
        );
        assert_eq!(told(&keys, &hs(claims(), None, SECRET), &expect), "ok a");
        let token = hs(claims(), None, OTHER);
        assert_eq!(told(&keys, &token, &expect), "bad signature");
        // Several keys without a kid are each tried.
        let keys = super::tests::keys(&format!("{OTHER}\n{SECRET}\n"), "").unwrap();
        assert_eq!(told(&keys, &hs(claims(), None, SECRET), &expect), "ok a");
        assert_eq!(told(&keys, &hs(claims(), None, OTHER), &expect), "ok a");
        // A single key with a kid takes tokens without one.
        let keys = super::tests::keys(&format!("kid: only\n{SECRET}\n"), "").unwrap();
        assert_eq!(told(&keys, &hs(claims(), None, SECRET), &expect), "ok a");
        // Public keys rotate the same way, in one file with other algorithms.
        let public = format!("kid: a\n{ED_PUB}\n# the next one\nkid: b\n{ED2_PUB}{RSA_PUB}");
        let keys = super::tests::keys(SECRET, &public).unwrap();
        let ed = |kid, private| signed(Algorithm::EdDSA, Some(kid), private, claims());
        assert_eq!(told(&keys, &ed("a", ED_KEY), &expect), "ok a");
        assert_eq!(told(&keys, &ed("b", ED2_KEY), &expect), "ok a");
        assert_eq!(told(&keys, &ed("a", ED2_KEY), &expect), "bad signature");
        let rs = signed(Algorithm::RS256, Some("a"), RSA_KEY, claims());
        assert_eq!(told(&keys, &rs, &expect), "ok a", "kid a is an EdDSA key's");
        assert_eq!(told(&keys, &hs(claims(), None, SECRET), &expect), "ok a");
    }

    #[test]
    fn key_files_are_checked_line_by_line() {
        let short = "too-short-a-secret";
        for (secrets, public, error) in [
            (
                short,
                "",
                "--token-key k: line 1: a secret must be at least 32 bytes",
            ),
            ("# none\n\n", "", "--token-key k: no key in the file"),
            ("kid:\nS", "", "--token-key k: line 1: kid: without a name"),
            (
                &format!("kid: a\nkid: b\n{SECRET}"),
                "",
                "--token-key k: line 2: a second kid: line with no key after the one on line 1",
            ),
            (
                &format!("{SECRET}\nkid: a\n"),
                "",
                "--token-key k: line 2: kid: with no key after it",
            ),
            (
                &format!("kid: a\n{SECRET}\nkid: a\n{OTHER}"),
                "",
                "--token-key k: line 4: kid a is already the kid of --token-key k line 2",
            ),
            (
                &format!("kid: a\n{SECRET}"),
                &format!("kid: a\n{ED_PUB}"),
                "--token-public-key p: line 2: kid a is already the kid of --token-key k line 2",
            ),
            ("", ED_KEY, "--token-public-key p: line 1: a private key"),
            ("", RSA_KEY, "--token-public-key p: line 1: a private key"),
            (
                "",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "--token-public-key p: line 1: a certificate",
            ),
            (
                "",
                "\n-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n",
                "--token-public-key p: line 2: FOO: not a public key",
            ),
            (
                "",
                "-----BEGIN PUBLIC KEY-----\nAAAA\n",
                "--token-public-key p: line 1: -----BEGIN PUBLIC KEY----- has no -----END",
            ),
            (
                "",
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "--token-public-key p: line 1: not an RSA, EC P-256 or Ed25519 public key",
            ),
            (
                "",
                &format!("{ED_PUB}kd: b\n{ED2_PUB}"),
                "--token-public-key p: line 4: neither a PEM block, a kid: line nor a # comment",
            ),
            (
                "",
                P384_PUB,
                "--token-public-key p: line 1: an EC key on another curve",
            ),
        ] {
            let got = keys(secrets, public).unwrap_err();
            assert!(got.starts_with(error), "{got}\nshould start with\n{error}");
            assert!(!got.contains(SECRET) && !got.contains(short) && !got.contains("MC"));
        }
        // Spaces around a secret and CRLF line ends are not part of it.
        let keys = keys(&format!("# keys\r\n  {SECRET}  \r\n"), "").unwrap();
        assert_eq!(
            check(&keys, &hs(json!({"sub": "a"}), None, SECRET))
                .unwrap()
                .sub,
            "a"
        );
    }

    #[test]
    fn keys_load_from_their_files_and_never_show() {
        let dir = std::env::temp_dir().join(format!("relayd-token-keys-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (secrets, public) = (dir.join("hmac"), dir.join("public.pem"));
        fs::write(&secrets, format!("kid: k1\n{SECRET}\n")).unwrap();
        fs::write(&public, format!("{EC_PUB}{ED_PUB}")).unwrap();
        let keys = Keys::load(Some(&secrets), Some(&public)).unwrap();
        let shown = format!("{keys:?}");
        assert!(
            shown.starts_with("[HS256 key \"k1\" from --token-key "),
            "{shown}"
        );
        let last = format!(
            ", EdDSA key without kid from --token-public-key {} line 5]",
            public.display()
        );
        assert!(shown.ends_with(&last), "{shown}");
        for secret in [
            SECRET,
            "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
            "MCowBQYDK2Vw",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let token = signed(Algorithm::ES256, None, EC_KEY, json!({"sub": "a"}));
        assert_eq!(check(&keys, &token).unwrap().sub, "a");
        let only_public = Keys::load(None, Some(&public)).unwrap();
        assert_eq!(check(&only_public, &token).unwrap().sub, "a");
        let missing = dir.join("missing");
        let err = Keys::load(Some(&missing), None).unwrap_err();
        assert!(
            err.starts_with(&format!("--token-key {}: ", missing.display())),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Tokens minted once by PyJWT 2.6.0 (Debian's python3-jwt) with
    /// tests/keys/pyjwt-mint.py: the crate is checked against another implementation, not
    /// only against itself.
    const PYJWT: [(&str, &str); 4] = [
        (
            "HS256",
            "eyJhbGciOiJIUzI1NiIsImtpZCI6IjIwMjYtMDEiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ1LTQyIiwibmFtZSI6ImFsaWNlIiwicm9vbXMiOlsibG9iYnkiLCJkZXYiXSwicm9sZSI6Im1vZCIsImV4cCI6NDEwMjQ0NDgwMCwibmJmIjoxNzAwMDAwMDAwLCJpYXQiOjE3MDAwMDAwMDAsImF1ZCI6InJlbGF5ZCIsImlzcyI6Imh0dHBzOi8vYXBwLmV4YW1wbGUifQ.dHnB1F5sv-FYiQfVgcNkiQ6HDwqO3j8RB5vP0jXxJJU",
        ),
        (
            "RS256",
            "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1LTciLCJleHAiOjQxMDI0NDQ4MDB9.qezpU3P0tqKXMlH3zCEZm47LRJg_xFRkOvre4PCslurZJGZyzcNIfPekc7UzPuoNKm9IOwukVErUxCZ2n0ZEQqn_zMpBt3MFaCQoi0KlgC07mvq8RIbdOAEftn-yQOZfHNrFsONVmB0s6ALX8wnB0kfP2DDx4AS3J9H78sd_3ep06kDsnuOTEpP6yK4eOEy9CNBEgpNNhvubVK4c1UfmD7RamdqxnOEMdMJ0otraz3-ZvjsfK9_xLb7Qqq-KBctLGgEzXlaMns4L2ugi6yA6mtrVXWOvfyWjwU4-S0GR18dtVNtdv9BopiwxAD0IAvA4dnoGxXOg-12MkwBzwZ0F3g",
        ),
        (
            "ES256",
            "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1LTciLCJleHAiOjQxMDI0NDQ4MDB9.cW38PpJs3t6S08UULo5sj2fuYrQzULrQJM4dPF8S-EnmimGq7IWkt4_4soF2pbLoOMosbzzFI_6aGm7ZkhLQ_g",
        ),
        (
            "EdDSA",
            "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1LTciLCJleHAiOjQxMDI0NDQ4MDB9.0u0OsVIYa1W8tAACrXpQSfMKrWatqbO9gccJQFShPJiHqm28jLOvjX_j7L06mS1-QBLJKszZxln3byMOBbRQDQ",
        ),
    ];

    /// Checks a token from tests/keys/pyjwt-mint.py.
    fn check_pyjwt(alg: &str, token: &str) {
        let keys = keys(
            &format!("kid: 2026-01\n{SECRET}\n"),
            &format!("{RSA_PUB}{EC_PUB}{ED_PUB}"),
        )
        .unwrap();
        let year_2100 = Some(at(4_102_444_800));
        if alg == "HS256" {
            let expect = Expect {
                audience: Some("relayd".into()),
                issuer: Some("https://app.example".into()),
            };
            let id = verify(&keys, token, at(NOW), &expect).unwrap();
            assert_eq!(
                id,
                Identity {
                    sub: "u-42".into(),
                    name: "alice".into(),
                    rooms: Some(vec!["lobby".into(), "dev".into()]),
                    role: Role::Mod,
                    exp: year_2100,
                }
            );
            // Its nbf, 2023-11-14, is honoured too.
            let before = verify(&keys, token, at(1_699_999_990), &expect);
            assert_eq!(before, Err(TokenError::NotYetValid));
        } else {
            let id = check(&keys, token).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
            assert_eq!(
                (id.sub.as_str(), id.name.as_str(), id.exp),
                ("u-7", "u-7", year_2100)
            );
        }
        let (head, _) = token.rsplit_once('.').unwrap();
        assert_eq!(
            told(&keys, &format!("{head}.AAAA"), &Expect::default()),
            "bad signature"
        );
    }

    #[test]
    fn tokens_minted_by_pyjwt_are_accepted() {
        for (alg, token) in PYJWT {
            check_pyjwt(alg, token);
        }
    }

    /// The same script run now, where a Python with PyJWT and cryptography is at hand (the
    /// first `python3` on PATH, or Debian's); without one, the tokens above stand alone.
    #[test]
    fn tokens_minted_by_pyjwt_now_are_accepted() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
        for python in ["python3", "/usr/bin/python3"] {
            let Ok(out) = Command::new(python)
                .arg("pyjwt-mint.py")
                .current_dir(dir)
                .output()
            else {
                continue;
            };
            if !out.status.success() {
                continue;
            }
            let out = String::from_utf8(out.stdout).unwrap();
            let tokens: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once(' ')).collect();
            assert_eq!(tokens.len(), 4, "{out}");
            for (alg, token) in tokens {
                check_pyjwt(alg, token);
            }
            return;
        }
        eprintln!("no python3 with PyJWT: only the tokens it minted once were checked");
    }
}
