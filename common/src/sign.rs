//! Signed messages: ed25519 key pairs, the canonical form a signature
//! covers, signing, a directory of trusted public keys, and verification.
//!
//! A signed envelope carries one more top-level field:
//!
//! ```json
//! "sig": {"signer": "git-pkgs01", "alg": "ed25519", "value": "<base64 of 64 bytes>"}
//! ```
//!
//! The signature covers the *canonical form* of the envelope object
//! without its `sig` field ([`canonical_json`]): keys sorted by Unicode code
//! point at every level, no insignificant whitespace, strings escaped as
//! JSON requires and no more (`"` `\` and control characters; everything
//! else is written as UTF-8), numbers as serde_json writes them. Because the
//! form is computed from the parsed JSON, a relay may re-indent or reorder
//! the keys of a message and the signature still verifies; a change of any
//! value (one byte of the body, the topic, the time) breaks it. The exact
//! rules are docs/PROTOCOL.md section "Signed messages".
//!
//! Keys are plain one-line text files (like an SSH public key), so that
//! other languages read them without a PEM or DER parser:
//! - secret key `NAME.key`, mode 0600: `signalbox-ed25519-secret NAME <base64 seed>`
//! - public key `NAME.pub`: `signalbox-ed25519 NAME <base64 public key>`
//!
//! ed25519 comes from `ring`, which rustls already builds into every
//! signalbox binary: no second crypto library.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde_json::{Map, Value};

use crate::envelope::Envelope;

/// The envelope field that carries the signature.
pub const SIG_FIELD: &str = "sig";
/// The one signature algorithm signalbox writes and accepts.
pub const ALG_ED25519: &str = "ed25519";
/// First word of a public key file's line.
const PUBLIC_TAG: &str = "signalbox-ed25519";
/// First word of a secret key file's line.
const SECRET_TAG: &str = "signalbox-ed25519-secret";
/// Longest signer name: it is a file name and a label in the console.
const MAX_NAME: usize = 64;

/// Errors of keys, key files and signing.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A signer name that cannot be a file name or a label.
    #[error("invalid signer name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A key file cannot be read or written.
    #[error("{action} key file {path}: {reason}")]
    Io {
        /// "cannot read", "cannot write", …
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The trust directory cannot be listed.
    #[error("cannot read the trust directory {path}: {reason}")]
    TrustDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// A key file exists and would be overwritten.
    #[error("key file {path} already exists: remove it first or choose another name")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A key file's content is not what signalbox writes.
    #[error("key file {path}: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when there are several.
        reason: String,
    },
    /// A secret key file others can read.
    #[error(
        "secret key file {path} is readable by other users (mode {mode:04o}): run chmod 600 {path}"
    )]
    OpenPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Two trusted keys claim the same signer name.
    #[error(
        "trust directory {dir}: signer {name:?} has two different keys ({first} and {second})"
    )]
    DuplicateSigner {
        /// The directory.
        dir: PathBuf,
        /// The signer.
        name: String,
        /// The first file naming it.
        first: PathBuf,
        /// The second.
        second: PathBuf,
    },
    /// A payload to sign is not a JSON object (an envelope).
    #[error("cannot sign: the payload is not a JSON object (only envelopes are signed)")]
    NotAnObject,
}

/// Whether a name is usable as a signer name (and so as a file name).
pub fn valid_signer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The canonical form of a JSON value: the bytes a signature covers.
///
/// Object keys are sorted by Unicode code point (byte order of their UTF-8)
/// at every level; no whitespace; strings escaped as serde_json and
/// Python's `json.dumps(ensure_ascii=False)` both do (`\"` `\\` `\b` `\f`
/// `\n` `\r` `\t`, other control characters `\u00xx`, nothing else);
/// numbers as serde_json writes them (integers in decimal; other numbers
/// in their shortest round-trip form). Python's
/// `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
/// gives the same bytes for every envelope whose numbers are integers.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_string(s, out),
        // null, booleans and numbers: serde_json's compact form. Writing
        // into a Vec cannot fail.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes exactly the characters JSON requires.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The bytes a signature of `object` covers: the canonical form of the
/// object without its `sig` field.
pub fn signing_bytes(object: &Map<String, Value>) -> Vec<u8> {
    let mut unsigned = object.clone();
    unsigned.remove(SIG_FIELD);
    canonical_json(&Value::Object(unsigned))
}

/// An ed25519 secret key and the signer name it signs as.
pub struct SigningKey {
    name: String,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key for `name`.
    pub fn generate(name: &str) -> Result<(SigningKey, [u8; 32]), SignError> {
        if !valid_signer_name(name) {
            return Err(SignError::InvalidName { name: name.into() });
        }
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| SignError::Io {
                action: "cannot make",
                path: PathBuf::from(name),
                reason: "the system random number generator failed".into(),
            })?;
        let key = SigningKey::from_seed(name, &seed)?;
        Ok((key, seed))
    }

    /// The key for a 32-byte seed (the secret key file's content).
    pub fn from_seed(name: &str, seed: &[u8]) -> Result<SigningKey, SignError> {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| SignError::BadKeyFile {
                path: PathBuf::from(name),
                reason: "an ed25519 secret key is 32 bytes".into(),
            })?;
        Ok(SigningKey {
            name: name.to_string(),
            pair,
        })
    }

    /// Reads a secret key file. Refuses one that other users can read.
    pub fn load(path: &Path) -> Result<SigningKey, SignError> {
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| SignError::Io {
            action: "cannot read",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let bad = |reason: &str| SignError::BadKeyFile {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| bad("empty"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [tag, name, seed] if *tag == SECRET_TAG => {
                if !valid_signer_name(name) {
                    return Err(bad(&format!("invalid signer name {name:?}")));
                }
                let seed = B64
                    .decode(seed)
                    .map_err(|e| bad(&format!("the key is not base64: {e}")))?;
                if seed.len() != 32 {
                    return Err(bad("an ed25519 secret key is 32 bytes"));
                }
                SigningKey::from_seed(name, &seed)
            }
            [tag, ..] if *tag == PUBLIC_TAG => Err(bad(
                "this is a public key; sign with the .key file of the pair",
            )),
            _ => Err(bad(&format!(
                "expected one line `{SECRET_TAG} NAME BASE64` (made by `signalbox keygen`)"
            ))),
        }
    }

    /// The signer name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32 bytes of the public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key file's line.
    pub fn public_line(&self) -> String {
        format!(
            "{PUBLIC_TAG} {} {}",
            self.name,
            B64.encode(self.public_key())
        )
    }

    /// The `sig` value for an object (any `sig` it has is ignored).
    pub fn signature_for(&self, object: &Map<String, Value>) -> Value {
        let signature = self.pair.sign(&signing_bytes(object));
        serde_json::json!({
            "signer": self.name,
            "alg": ALG_ED25519,
            "value": B64.encode(signature.as_ref()),
        })
    }

    /// Signs an envelope in place: its `sig` field (kept in
    /// [`Envelope::extra`]) is set, replacing any older signature.
    pub fn sign_envelope(&self, envelope: &mut Envelope) {
        envelope.extra.remove(SIG_FIELD);
        // An envelope always serialises to an object.
        if let Ok(Value::Object(map)) = serde_json::to_value(&*envelope) {
            let sig = self.signature_for(&map);
            envelope.extra.insert(SIG_FIELD.to_string(), sig);
        }
    }

    /// Signs a JSON object payload (an envelope on the wire) and returns
    /// the new payload, compact. Anything else is refused.
    pub fn sign_payload(&self, payload: &[u8]) -> Result<Vec<u8>, SignError> {
        let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(payload) else {
            return Err(SignError::NotAnObject);
        };
        let sig = self.signature_for(&map);
        map.insert(SIG_FIELD.to_string(), sig);
        Ok(serde_json::to_vec(&Value::Object(map)).unwrap_or_default())
    }
}

/// Makes a key pair for `name` in `dir` (created 0700 when missing):
/// `NAME.key` (mode 0600) and `NAME.pub`. Never overwrites. Returns the
/// two paths.
pub fn write_key_pair(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), SignError> {
    let (key, seed) = SigningKey::generate(name)?;
    crate::spool::create_private_dir(dir).map_err(|e| SignError::Io {
        action: "cannot create the directory of the",
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let secret_path = dir.join(format!("{name}.key"));
    let public_path = dir.join(format!("{name}.pub"));
    for path in [&secret_path, &public_path] {
        if path.exists() {
            return Err(SignError::Exists { path: path.clone() });
        }
    }
    let secret = format!("{SECRET_TAG} {name} {}\n", B64.encode(seed));
    write_new(&secret_path, secret.as_bytes(), 0o600)?;
    let public = format!("{}\n", key.public_line());
    if let Err(e) = write_new(&public_path, public.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&secret_path);
        return Err(e);
    }
    Ok((secret_path, public_path))
}

/// Creates `path` (failing if it exists) with `mode`, writes and syncs.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SignError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| SignError::Io {
        action: "cannot write",
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                SignError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io(e)
            }
        })?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Refuses a secret file that group or others may read.
fn check_private(path: &Path) -> Result<(), SignError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| SignError::Io {
        action: "cannot read",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SignError::OpenPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// What a signature check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a trusted key, and the content is what was signed.
    Valid {
        /// The signer's name.
        signer: String,
    },
    /// Signed, but the signature does not hold (wrong key, tampered content,
    /// unknown signer, malformed `sig`).
    Invalid {
        /// The signer named in `sig`, when there is one.
        signer: Option<String>,
        /// Why, for the failure record and the console.
        reason: String,
    },
    /// No `sig` field (or not an envelope at all).
    Unsigned,
}

impl Verdict {
    /// A short mark for one line: `✓ NAME`, `✗ NAME` or `unsigned`.
    pub fn mark(&self) -> String {
        match self {
            Verdict::Valid { signer } => format!("✓ {signer}"),
            Verdict::Invalid {
                signer: Some(signer),
                ..
            } => format!("✗ {signer}"),
            Verdict::Invalid { signer: None, .. } => "✗".into(),
            Verdict::Unsigned => "unsigned".into(),
        }
    }

    /// One line for a failure record or a detail view.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Valid { signer } => format!("signature valid: signed by {signer}"),
            Verdict::Invalid { reason, .. } => format!("bad signature: {reason}"),
            Verdict::Unsigned => "unsigned message".into(),
        }
    }

    /// Whether the signature holds.
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid { .. })
    }
}

/// The signer named by a payload's `sig`, without checking anything (for
/// a console that has no trust directory).
pub fn claimed_signer(payload: &[u8]) -> Option<String> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    map.get(SIG_FIELD)?
        .get("signer")?
        .as_str()
        .map(str::to_string)
}

/// How listeners treat messages whose signature does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignaturePolicy {
    /// Hand every message to the handler, with its verdict (the default
    /// when a trust directory is configured: see what is signed first).
    #[default]
    Mark,
    /// Refuse unsigned messages and bad signatures: a failure record with
    /// the reason, the handler never runs.
    Require,
}

impl std::str::FromStr for SignaturePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mark" => Ok(SignaturePolicy::Mark),
            "require" => Ok(SignaturePolicy::Require),
            _ => Err("must be `require` or `mark`".into()),
        }
    }
}

impl fmt::Display for SignaturePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignaturePolicy::Mark => "mark",
            SignaturePolicy::Require => "require",
        })
    }
}

/// Trusted public keys by signer name: a directory of `*.pub` files.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: BTreeMap<String, Vec<u8>>,
}

impl TrustStore {
    /// Reads every `*.pub` file of `dir`: each non-comment line is
    /// `signalbox-ed25519 NAME BASE64`. A malformed file is an error (a
    /// key silently skipped would turn into "bad signature" later).
    pub fn load(dir: &Path) -> Result<TrustStore, SignError> {
        let entries = std::fs::read_dir(dir).map_err(|e| SignError::TrustDir {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pub") && p.is_file())
            .collect();
        paths.sort();
        let mut store = TrustStore::default();
        let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| SignError::Io {
                action: "cannot read",
                path: path.clone(),
                reason: e.to_string(),
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (name, key) =
                    parse_public_line(line).map_err(|reason| SignError::BadKeyFile {
                        path: path.clone(),
                        reason: format!("line {}: {reason}", n + 1),
                    })?;
                if let Some(existing) = store.keys.get(&name) {
                    if *existing != key {
                        return Err(SignError::DuplicateSigner {
                            dir: dir.to_path_buf(),
                            name: name.clone(),
                            first: origin.get(&name).cloned().unwrap_or_default(),
                            second: path.clone(),
                        });
                    }
                }
                origin.insert(name.clone(), path.clone());
                store.keys.insert(name, key);
            }
        }
        Ok(store)
    }

    /// Adds a key (tests, programs that hold keys themselves).
    pub fn insert(&mut self, name: &str, public_key: &[u8]) {
        self.keys.insert(name.to_string(), public_key.to_vec());
    }

    /// The trusted signer names.
    pub fn signers(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No key trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a payload's signature. Never panics, whatever the payload.
    pub fn verify(&self, payload: &[u8]) -> Verdict {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(payload) else {
            return Verdict::Unsigned;
        };
        self.verify_object(&map)
    }

    /// Checks the signature of a parsed envelope object.
    pub fn verify_object(&self, map: &Map<String, Value>) -> Verdict {
        let Some(sig) = map.get(SIG_FIELD) else {
            return Verdict::Unsigned;
        };
        let signer = sig
            .get("signer")
            .and_then(Value::as_str)
            .map(str::to_string);
        let invalid = |reason: String| Verdict::Invalid {
            signer: signer.clone(),
            reason,
        };
        let Some(name) = signer.as_deref() else {
            return invalid("`sig` names no signer".into());
        };
        match sig.get("alg").and_then(Value::as_str) {
            Some(ALG_ED25519) => {}
            Some(other) => return invalid(format!("unsupported algorithm {other:?}")),
            None => return invalid("`sig` names no algorithm".into()),
        }
        let Some(value) = sig.get("value").and_then(Value::as_str) else {
            return invalid("`sig` has no value".into());
        };
        let Ok(signature) = B64.decode(value) else {
            return invalid("the signature value is not base64".into());
        };
        let Some(key) = self.keys.get(name) else {
            return invalid(format!(
                "unknown signer {name:?} (not in the trust directory)"
            ));
        };
        match UnparsedPublicKey::new(&ED25519, key).verify(&signing_bytes(map), &signature) {
            Ok(()) => Verdict::Valid {
                signer: name.to_string(),
            },
            Err(_) => invalid(format!(
                "the content does not match the signature of {name:?} (changed after signing, or signed with another key)"
            )),
        }
    }
}

fn parse_public_line(line: &str) -> Result<(String, Vec<u8>), String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [tag, name, key] if *tag == PUBLIC_TAG => {
            if !valid_signer_name(name) {
                return Err(format!("invalid signer name {name:?}"));
            }
            let key = B64
                .decode(key)
                .map_err(|e| format!("the key is not base64: {e}"))?;
            if key.len() != 32 {
                return Err("an ed25519 public key is 32 bytes".into());
            }
            Ok((name.to_string(), key))
        }
        [tag, ..] if *tag == SECRET_TAG => {
            Err("this is a SECRET key: never put it in a trust directory".into())
        }
        _ => Err(format!("expected `{PUBLIC_TAG} NAME BASE64`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> (SigningKey, TrustStore) {
        let key = SigningKey::from_seed("test-signer", &[7u8; 32]).expect("key");
        let mut trust = TrustStore::default();
        trust.insert("test-signer", key.public_key());
        (key, trust)
    }

    fn envelope() -> Envelope {
        Envelope::builder("signalbox/prod/git/kernel/commit", "jkeating pushed")
            .bridge("git")
            .host("pkgs01")
            .body(serde_json::json!({"branch": "f14", "count": 3, "ok": true, "ü": "ß\n\"x\""}))
            .build()
            .expect("envelope")
    }

    #[test]
    fn canonical_form_is_sorted_and_compact() {
        let v: Value =
            serde_json::from_str(r#"{ "b" : [1, {"z":null, "a":"\u00e9\n"}], "a": true }"#)
                .expect("json");
        assert_eq!(
            String::from_utf8(canonical_json(&v)).expect("utf-8"),
            "{\"a\":true,\"b\":[1,{\"a\":\"é\\n\",\"z\":null}]}"
        );
    }

    #[test]
    fn a_signed_envelope_verifies_and_names_its_signer() {
        let (key, trust) = key();
        let mut e = envelope();
        key.sign_envelope(&mut e);
        let wire = e.to_vec();
        assert_eq!(
            trust.verify(&wire),
            Verdict::Valid {
                signer: "test-signer".into()
            }
        );
        assert_eq!(claimed_signer(&wire).as_deref(), Some("test-signer"));
        // A parsed and re-serialised envelope still verifies.
        let again = Envelope::from_slice(&wire).expect("parses").to_vec();
        assert!(trust.verify(&again).is_valid());
        // So does the pretty form.
        assert!(trust.verify(e.to_json_pretty().as_bytes()).is_valid());
    }

    #[test]
    fn tampering_with_body_topic_or_time_breaks_the_signature() {
        let (key, trust) = key();
        let mut e = envelope();
        key.sign_envelope(&mut e);
        let wire = String::from_utf8(e.to_vec()).expect("utf-8");
        let time = crate::envelope::format_time(&e.time);
        let mut later = time.clone().into_bytes();
        // One byte of the milliseconds.
        let i = later.len() - 2;
        later[i] = if later[i] == b'9' { b'8' } else { later[i] + 1 };
        let later = String::from_utf8(later).expect("ascii");
        for (what, from, to) in [
            ("body", "\"count\":3", "\"count\":4"),
            ("topic", "kernel/commit", "kernel/commiT"),
            ("time", time.as_str(), later.as_str()),
        ] {
            assert!(wire.contains(from), "{what}: {wire}");
            let tampered = wire.replacen(from, to, 1);
            match trust.verify(tampered.as_bytes()) {
                Verdict::Invalid { signer, reason } => {
                    assert_eq!(signer.as_deref(), Some("test-signer"), "{what}");
                    assert!(reason.contains("does not match"), "{what}: {reason}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_signers_and_malformed_sigs_are_invalid_and_unsigned_is_unsigned() {
        let (key, _) = key();
        let mut e = envelope();
        key.sign_envelope(&mut e);
        let empty = TrustStore::default();
        assert!(matches!(
            empty.verify(&e.to_vec()),
            Verdict::Invalid { ref reason, .. } if reason.contains("unknown signer")
        ));
        let (_, trust) = self::key();
        assert_eq!(trust.verify(&envelope().to_vec()), Verdict::Unsigned);
        assert_eq!(trust.verify(b"\xff\x00binary"), Verdict::Unsigned);
        for sig in [
            serde_json::json!("x"),
            serde_json::json!({"signer": "test-signer", "alg": "rsa", "value": "AA=="}),
            serde_json::json!({"signer": "test-signer", "alg": "ed25519", "value": "!!"}),
            serde_json::json!({"signer": "test-signer", "alg": "ed25519", "value": "AAAA"}),
        ] {
            let mut e = envelope();
            e.extra.insert(SIG_FIELD.into(), sig.clone());
            assert!(
                matches!(trust.verify(&e.to_vec()), Verdict::Invalid { .. }),
                "{sig}"
            );
        }
    }

    #[test]
    fn key_files_round_trip_with_private_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let (secret, public) = write_key_pair(&keys, "git-pkgs01").expect("keygen");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&secret), 0o600);
        assert_eq!(mode(&keys), 0o700);
        assert!(matches!(
            write_key_pair(&keys, "git-pkgs01"),
            Err(SignError::Exists { .. })
        ));
        let key = SigningKey::load(&secret).expect("loads");
        assert_eq!(key.name(), "git-pkgs01");
        let trust = TrustStore::load(&keys).expect("trust");
        let signed = key.sign_payload(&envelope().to_vec()).expect("signs");
        assert!(trust.verify(&signed).is_valid());
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = SigningKey::load(&secret).expect_err("open key").to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(SigningKey::load(&public).is_err());
        std::fs::write(keys.join("bad.pub"), "signalbox-ed25519 x notbase64!\n").expect("write");
        let err = TrustStore::load(&keys).expect_err("bad file").to_string();
        assert!(err.contains("bad.pub") && err.contains("line 1"), "{err}");
        assert!(matches!(
            write_key_pair(&keys, "../evil"),
            Err(SignError::InvalidName { .. })
        ));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-zé\"\\\\\n\u{1}-]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-zA-Z_é]{1,6}", inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// The same object written with its keys in another order.
    fn write_shuffled(value: &Value, reverse: bool, pretty: bool) -> String {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                if reverse {
                    keys.reverse();
                }
                let parts: Vec<String> = keys
                    .into_iter()
                    .map(|k| {
                        format!(
                            "{}{}:{}{}",
                            serde_json::to_string(k).unwrap_or_default(),
                            if pretty { " " } else { "" },
                            if pretty { "\n  " } else { "" },
                            write_shuffled(&map[k], !reverse, pretty)
                        )
                    })
                    .collect();
                format!("{{{}}}", parts.join(if pretty { " ,\n\t" } else { "," }))
            }
            Value::Array(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| write_shuffled(i, reverse, pretty))
                    .collect::<Vec<_>>()
                    .join(if pretty { ", " } else { "," })
            ),
            other => serde_json::to_string(other).unwrap_or_default(),
        }
    }

    proptest! {
        #[test]
        fn canonical_form_is_stable_under_key_order_and_whitespace(v in json_value()) {
            let canonical = canonical_json(&v);
            for (reverse, pretty) in [(false, true), (true, false), (true, true)] {
                let text = write_shuffled(&v, reverse, pretty);
                let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
                prop_assert_eq!(&canonical_json(&parsed), &canonical, "{}", text);
            }
            // The canonical form is itself JSON of the same value.
            let back: Value = serde_json::from_slice(&canonical).expect("canonical is JSON");
            prop_assert_eq!(back, v);
        }

        #[test]
        fn signatures_survive_reordering_and_whitespace(body in json_value()) {
            let (key, trust) = key();
            let mut e = envelope();
            e.body = body;
            key.sign_envelope(&mut e);
            let value = serde_json::to_value(&e).expect("value");
            for (reverse, pretty) in [(true, false), (false, true)] {
                let text = write_shuffled(&value, reverse, pretty);
                prop_assert!(trust.verify(text.as_bytes()).is_valid(), "{}", text);
            }
        }
    }
}
