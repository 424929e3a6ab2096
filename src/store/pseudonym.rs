//! Pseudonymisation: turns a raw visitor id into a [`VisitorKey`] with a keyed hash, and finds
//! the key. The raw id goes no further than [`Pseudonymizer::key`]; stores, snapshots and logs
//! only ever see the keyed hash.
//!
//! The key comes from `--secret` or `--secret-file`; with neither, and a state file, kappe keeps
//! a generated key beside the state file (`PATH.secret`, mode 0600) so that a restart maps
//! visitors to the same keys; with no state file a random per-process key is enough.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;
use siphasher::sip::SipHasher13;
use siphasher::sip128::{Hasher128, SipHasher13 as SipHasher13_128};

use crate::store::VisitorKey;

/// Keys visitor ids with SipHash-1-3 under a 128-bit secret.
#[derive(Clone, Debug)]
pub struct Pseudonymizer {
    hasher: SipHasher13,
}

impl Pseudonymizer {
    /// A pseudonymizer under `key`.
    pub fn new(key: [u8; 16]) -> Self {
        Pseudonymizer {
            hasher: SipHasher13::new_with_key(&key),
        }
    }

    /// The pseudonymous key of a raw visitor id.
    pub fn key(&self, raw_id: &[u8]) -> VisitorKey {
        VisitorKey(self.hasher.hash(raw_id))
    }
}

/// Why the pseudonymisation secret could not be found or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret must be at least 16 characters long (got {0})")]
    TooShort(usize),
    #[error("cannot read the secret file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot create the generated secret file {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("the generated secret file {path} is damaged: expected 32 hex digits")]
    Malformed { path: PathBuf },
    #[error(
        "the secret file {path} is readable by other users (mode {mode:o}); run chmod 600 on it"
    )]
    TooOpen { path: PathBuf, mode: u32 },
}

/// The minimum length of an operator-given secret.
pub const MIN_SECRET_LEN: usize = 16;

/// Where the generated secret of a state file lives: beside it, named `<state file>.secret`.
pub fn secret_path_for(state_file: &Path) -> PathBuf {
    let mut s = state_file.as_os_str().to_owned();
    s.push(".secret");
    PathBuf::from(s)
}

/// Finds the pseudonymisation key: `secret` if given, else the contents of `secret_file`, else
/// the generated key beside `state_file` (created with mode 0600 on first use), else a random
/// per-process key.
///
/// # Errors
/// A given secret shorter than [`MIN_SECRET_LEN`], an unreadable secret file, a generated
/// secret file that cannot be created, is damaged or is readable by others.
pub fn load_or_create_secret(
    secret: Option<&str>,
    secret_file: Option<&Path>,
    state_file: Option<&Path>,
) -> Result<[u8; 16], SecretError> {
    if let Some(s) = secret {
        return derive(s);
    }
    if let Some(path) = secret_file {
        let s = fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        return derive(s.trim());
    }
    let Some(state) = state_file else {
        return Ok(random_key());
    };
    let path = secret_path_for(state);
    match fs::read_to_string(&path) {
        Ok(s) => {
            let mode = fs::metadata(&path)
                .map_err(|source| SecretError::Read {
                    path: path.clone(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(SecretError::TooOpen {
                    path,
                    mode: mode & 0o777,
                });
            }
            parse_hex(s.trim()).ok_or(SecretError::Malformed { path })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = random_key();
            let create = |source| SecretError::Create {
                path: path.clone(),
                source,
            };
            // create_new: two processes racing on first start must not silently disagree.
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(create)?;
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            f.write_all(format!("{hex}\n").as_bytes()).map_err(create)?;
            f.sync_all().map_err(create)?;
            Ok(key)
        }
        Err(source) => Err(SecretError::Read { path, source }),
    }
}

/// Stretches an operator's secret of any length into 128 bits.
fn derive(s: &str) -> Result<[u8; 16], SecretError> {
    if s.len() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort(s.len()));
    }
    if let Some(key) = parse_hex(s) {
        return Ok(key);
    }
    let mut h = SipHasher13_128::new_with_keys(0x6b61_7070_6521_0001, 0x7365_6372_6574_0001);
    std::hash::Hasher::write(&mut h, s.as_bytes());
    Ok(h.finish128().as_bytes())
}

fn parse_hex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

fn random_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    rand::rng().fill_bytes(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same id under the same key maps to the same visitor; another key maps elsewhere.
    #[test]
    fn keys_are_stable_and_keyed() {
        let a = Pseudonymizer::new([1; 16]);
        let b = Pseudonymizer::new([2; 16]);
        assert_eq!(a.key(b"visitor-1"), a.key(b"visitor-1"));
        assert_ne!(a.key(b"visitor-1"), a.key(b"visitor-2"));
        assert_ne!(a.key(b"visitor-1"), b.key(b"visitor-1"));
    }

    /// Without a secret, the generated key is written beside the state file with mode 0600 and
    /// the next start reuses it.
    #[test]
    fn generated_secret_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("kappe.state");
        let first = load_or_create_secret(None, None, Some(&state)).unwrap();
        let path = secret_path_for(&state);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = load_or_create_secret(None, None, Some(&state)).unwrap();
        assert_eq!(first, second);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create_secret(None, None, Some(&state)),
            Err(SecretError::TooOpen { .. })
        ));
    }

    /// An explicit secret wins, is stretched deterministically, and must not be trivially short.
    #[test]
    fn explicit_secret_is_used_and_checked() {
        let k = load_or_create_secret(Some("correct horse battery"), None, None).unwrap();
        assert_eq!(k, derive("correct horse battery").unwrap());
        assert!(matches!(derive("short"), Err(SecretError::TooShort(5))));
        let hex = "00112233445566778899aabbccddeeff";
        assert_eq!(derive(hex).unwrap()[15], 0xff);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        fs::write(&f, "correct horse battery\n").unwrap();
        assert_eq!(load_or_create_secret(None, Some(&f), None).unwrap(), k);
    }
}
