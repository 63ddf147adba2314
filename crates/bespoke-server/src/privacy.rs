//! Pseudonymized user keys: with `privacy.pseudonymize_user_keys`, the store holds
//! HMAC-SHA256(secret, key) in hex instead of each user key. The engine maps keys at its
//! boundary, so the API and the CLI keep taking (and answering with) raw keys, while the
//! database, its backups, exports of the whole store and model files never hold one.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::settings::Settings;

/// Maps raw user keys to the keys the store holds.
#[derive(Clone)]
pub struct UserKeys {
    mac: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for UserKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserKeys")
            .field("pseudonymized", &self.mac.is_some())
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl UserKeys {
    /// As configured in `settings.privacy`.
    pub fn new(settings: &Settings) -> Self {
        let p = &settings.privacy;
        Self {
            mac: p.pseudonymize_user_keys.then(|| {
                Hmac::<Sha256>::new_from_slice(p.pseudonym_secret.0.as_bytes())
                    .expect("HMAC takes keys of any length")
            }),
        }
    }

    /// Whether keys are pseudonymized.
    pub fn pseudonymized(&self) -> bool {
        self.mac.is_some()
    }

    /// The key the store holds for `raw`.
    pub fn to_store<'a>(&self, raw: &'a str) -> Cow<'a, str> {
        match &self.mac {
            None => Cow::Borrowed(raw),
            Some(mac) => {
                let mut m = mac.clone();
                m.update(raw.as_bytes());
                Cow::Owned(hex(&m.finalize().into_bytes()))
            }
        }
    }

    /// What the store records about the choice, so that a store is never opened with another
    /// one (which would split every user in two): zeros for raw keys, else a keyed hash of a
    /// fixed string, which tells secrets apart without revealing them.
    pub fn marker(&self) -> [u8; 32] {
        match &self.mac {
            None => [0; 32],
            Some(mac) => {
                let mut m = mac.clone();
                m.update(b"bespoke pseudonym marker v1");
                m.finalize().into_bytes().into()
            }
        }
    }
}

/// Checks that `store` was created with the same choice (see [`UserKeys::marker`]); a store
/// used for the first time records it.
pub fn check_store(store: &dyn bespoke_store::Store, keys: &UserKeys) -> bespoke_store::Result<()> {
    if store.secret("pseudonym_marker", keys.marker())? != keys.marker() {
        return Err(bespoke_store::Error::InvalidInput(
            "this store was created with another privacy.pseudonymize_user_keys setting or \
             pseudonym_secret; using it with this one would split every user in two"
                .into(),
        ));
    }
    Ok(())
}

/// Name of the audit key in the stores that kept it in their database (before it moved out).
const AUDIT_KEY_IN_STORE: &str = "audit_user_ref";

/// The key of the user references in the audit log and erasure receipts
/// ([`crate::engine::Access::user_ref`]): `privacy.audit_secret`, else the key file
/// (`privacy.audit_secret_file`, by default `<data_dir>.audit-key`), created on first use.
///
/// The key is kept out of the database: whoever holds a copy of the database (a backup) could
/// otherwise hash guessed user keys and find them in the log. A store that still holds its
/// key (written before this moved out) has it moved to the key file once, so that earlier
/// references stay valid, and deleted from the database (overwritten, WAL truncated). With
/// `audit_secret` set instead, the stored key is only deleted: references made with it can no
/// longer be matched to user keys, which is logged.
pub fn audit_key(
    settings: &Settings,
    store: &dyn bespoke_store::Store,
) -> bespoke_store::Result<Vec<u8>> {
    let p = &settings.privacy;
    let stored = store.stored_secret(AUDIT_KEY_IN_STORE)?;
    let key = if p.audit_secret.0.is_empty() {
        let path = audit_key_path(settings)?;
        key_file(&path, stored)?
    } else {
        if stored.is_some() {
            tracing::warn!(
                "the database held the key of earlier audit user references; privacy.audit_secret \
                 replaces it and it is deleted, so those references can no longer be matched to \
                 user keys"
            );
        }
        p.audit_secret.0.as_bytes().to_vec()
    };
    if stored.is_some() {
        store.delete_secret(AUDIT_KEY_IN_STORE)?;
        tracing::info!("deleted the audit key from the database");
    }
    Ok(key)
}

/// `privacy.audit_secret_file`, or `<data_dir>.audit-key` beside the data directory.
fn audit_key_path(settings: &Settings) -> bespoke_store::Result<PathBuf> {
    let file = &settings.privacy.audit_secret_file;
    if !file.as_os_str().is_empty() {
        return Ok(file.clone());
    }
    let dir = &settings.store.data_dir;
    let dir = std::fs::canonicalize(dir).map_err(|source| bespoke_store::Error::Io {
        path: dir.clone(),
        source,
    })?;
    match dir.file_name() {
        Some(name) => {
            let mut name = name.to_owned();
            name.push(".audit-key");
            Ok(dir.with_file_name(name))
        }
        None => Err(bespoke_store::Error::InvalidInput(format!(
            "store.data_dir {} has no parent to keep the audit key file beside it; set \
             privacy.audit_secret or privacy.audit_secret_file",
            dir.display()
        ))),
    }
}

/// Reads the key file at `path`, or creates it (owner-only) holding `stored` (a key moved out
/// of the database) or a random key.
fn key_file(path: &Path, stored: Option<[u8; 32]>) -> bespoke_store::Result<Vec<u8>> {
    let io = |source| bespoke_store::Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut f) => {
            use std::io::Write;
            let key = match stored {
                Some(k) => k,
                None => crate::auth::random_bytes()?,
            };
            f.write_all(format!("{}\n", hex(&key)).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io)?;
            tracing::info!(path = %path.display(), moved_from_database = stored.is_some(), "created the audit key file");
            return Ok(key.to_vec());
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"),
                "the audit key file is readable by others than the owner (chmod 600)");
        }
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let key = unhex(text.trim()).ok_or_else(|| {
        bespoke_store::Error::InvalidInput(format!(
            "{} must hold 64 hex digits (the audit key)",
            path.display()
        ))
    })?;
    if stored.is_some_and(|s| s[..] != key[..]) {
        tracing::warn!(path = %path.display(),
            "the database held another audit key than the key file; it is deleted, and references made with it can no longer be matched to user keys");
    }
    Ok(key)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_refuse_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let made = key_file(&path, None).unwrap();
        assert_eq!(made.len(), 32);
        assert_eq!(key_file(&path, None).unwrap(), made);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let moved = dir.path().join("moved");
        assert_eq!(key_file(&moved, Some([7; 32])).unwrap(), vec![7; 32]);
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            key_file(&path, None),
            Err(bespoke_store::Error::InvalidInput(_))
        ));
        assert_eq!(unhex(&hex(&[0xab; 32])), Some(vec![0xab; 32]));
        assert_eq!(unhex(&"zz".repeat(32)), None);
    }

    fn keys(secret: &str) -> UserKeys {
        let mut s = Settings::default();
        s.privacy.pseudonymize_user_keys = true;
        s.privacy.pseudonym_secret = crate::settings::Secret(secret.into());
        UserKeys::new(&s)
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_hide_the_key() {
        let a = keys("0123456789abcdef0123456789abcdef");
        let b = keys("another secret of at least 32 bytes!");
        let p = a.to_store("alice@example.com");
        assert_eq!(p.len(), 64);
        assert!(!p.contains("alice"));
        assert_eq!(p, a.to_store("alice@example.com"));
        assert_ne!(p, a.to_store("bob@example.com"));
        assert_ne!(p, b.to_store("alice@example.com"));
        assert_ne!(a.marker(), b.marker());
        assert_ne!(a.marker(), [0; 32]);
        let plain = UserKeys::new(&Settings::default());
        assert_eq!(plain.to_store("alice"), "alice");
        assert_eq!(plain.marker(), [0; 32]);
    }
}
