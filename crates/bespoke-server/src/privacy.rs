//! Pseudonymized user keys: with `privacy.pseudonymize_user_keys`, the store holds
//! HMAC-SHA256(secret, key) in hex instead of each user key. The engine maps keys at its
//! boundary, so the API and the CLI keep taking (and answering with) raw keys, while the
//! database, its backups, exports of the whole store and model files never hold one.

use std::borrow::Cow;

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

#[cfg(test)]
mod tests {
    use super::*;

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
