//! The shared secret (`ha.key_file`) and the HMAC-SHA256 it keys.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::MAC_LEN;

/// The shared key, held as a keyed HMAC state: cloning it per message skips
/// re-hashing the key each time. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Key {
    mac: Hmac<Sha256>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the HA key file {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the HA key file {} is not a regular file; point ha.key_file at a file holding the shared secret", .path.display())]
    NotAFile { path: PathBuf },
    #[error("the HA key file {} is open to all users (mode {mode:03o}); restrict it with `chmod 600 {}`", .path.display(), .path.display())]
    WorldAccessible { path: PathBuf, mode: u32 },
    #[error("the HA key{} is empty; {how}", in_file(.path), how = HOW_TO)]
    Empty { path: Option<PathBuf> },
    #[error("the HA key{} is {len} bytes, under the minimum of {min}; {how}", in_file(.path), min = Key::MIN_LEN, how = HOW_TO)]
    TooShort { path: Option<PathBuf>, len: usize },
}

const HOW_TO: &str =
    "generate one with `head -c 32 /dev/urandom | base64 > FILE` and copy it to both nodes";

fn in_file(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}

impl Key {
    /// Fewer bytes than this is a password, not a key.
    pub const MIN_LEN: usize = 16;

    /// The key is the bytes as given.
    pub fn from_bytes(bytes: &[u8]) -> Result<Key, KeyError> {
        Key::checked(bytes, None)
    }

    /// Reads the key file. The key is the file's content with surrounding
    /// ASCII whitespace removed, so a trailing newline from `echo` or an
    /// editor on one node does not turn into a key mismatch. The file must
    /// not be readable or writable by other users: whoever holds the key can
    /// forge heartbeats and take the floating IPs.
    pub fn from_file(path: &Path) -> Result<Key, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?;
        // Checked on the open file, not the path, so the file read is the one
        // checked.
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o006 != 0 {
            return Err(KeyError::WorldAccessible {
                path: path.to_owned(),
                mode,
            });
        }
        let mut content = Vec::new();
        file.read_to_end(&mut content).map_err(read_err)?;
        Key::checked(content.trim_ascii(), Some(path))
    }

    fn checked(bytes: &[u8], path: Option<&Path>) -> Result<Key, KeyError> {
        let path = path.map(Path::to_owned);
        if bytes.is_empty() {
            return Err(KeyError::Empty { path });
        }
        if bytes.len() < Key::MIN_LEN {
            return Err(KeyError::TooShort {
                path,
                len: bytes.len(),
            });
        }
        let mac = Hmac::<Sha256>::new_from_slice(bytes).expect("HMAC takes keys of any length");
        Ok(Key { mac })
    }

    /// HMAC-SHA256 of `data`.
    pub(super) fn tag(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(data);
        let mut out = [0; MAC_LEN];
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Whether `tag` is the MAC of `data`, compared in constant time (the
    /// `digest` crate's `verify_slice`), so timing tells a forger nothing
    /// about how many bytes were right.
    pub(super) fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}
