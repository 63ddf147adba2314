//! Dashboard sessions: a random 256-bit id in an `HttpOnly; SameSite=Strict` cookie, the
//! session itself (key prefix and digest, CSRF token, times) in the store, so that every node
//! of a cluster knows it and a restart ends none.
//!
//! The cookie never holds the API key, and the store keeps only the key's prefix and SHA-256
//! digest (what it keeps of keys too): every request re-checks them against the key mirror, so
//! revoking the key or taking its admin scope away ends its sessions at once. Sessions are
//! stored and found by the SHA-256 of their id: the store never holds a usable id, and a timing
//! difference in the lookup says nothing about ids that exist.

use std::sync::Arc;

use axum::http::HeaderMap;
use bespoke_store::{Millis, SessionLimits, SessionRecord, Store};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "bespoke_session";

/// How long sessions live and how many may: an hour after the last request, twelve after
/// login however active; at most 1,024 (a login beyond it ends the oldest, so that logins
/// cannot grow the table without bound); `last_seen` written at most once a minute.
pub(crate) const LIMITS: SessionLimits = SessionLimits {
    idle: 60 * 60 * 1000,
    absolute: 12 * 60 * 60 * 1000,
    max: 1024,
    touch_every: 60 * 1000,
};

/// One logged-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The key's prefix (for the audit log and the page header).
    pub(crate) prefix: String,
    /// SHA-256 of the key, to re-check it against the key mirror on every request.
    pub(crate) key_digest: [u8; 32],
    /// The CSRF token every state-changing request must carry, hex.
    pub(crate) csrf: String,
}

impl Session {
    /// Whether `presented` is this session's CSRF token, compared in constant time.
    pub(crate) fn csrf_matches(&self, presented: &str) -> bool {
        let (a, b) = (self.csrf.as_bytes(), presented.as_bytes());
        // `ct_eq` on slices of different lengths is false without comparing contents; the
        // length of a token is public anyway.
        bool::from(a.ct_eq(b))
    }
}

impl From<SessionRecord> for Session {
    fn from(r: SessionRecord) -> Self {
        Self {
            prefix: r.prefix,
            key_digest: r.key_digest,
            csrf: r.csrf,
        }
    }
}

/// The sessions, in the store. Every method blocks on the store: call them off the runtime.
#[derive(Debug, Clone)]
pub(crate) struct Sessions {
    store: Arc<dyn Store>,
}

fn lookup_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Sessions {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Opens a session for a key; returns its id (for the cookie) and the session.
    pub(crate) fn open(
        &self,
        prefix: String,
        key_digest: [u8; 32],
        now: Millis,
    ) -> bespoke_store::Result<(String, Session)> {
        let id = hex(&crate::auth::random_bytes()?);
        let record = SessionRecord {
            lookup: lookup_key(&id),
            prefix,
            key_digest,
            csrf: hex(&crate::auth::random_bytes()?),
            created_at: now,
            last_seen: now,
        };
        self.store.open_session(record.clone(), LIMITS)?;
        Ok((id, record.into()))
    }

    /// The live session with this id, its idle timer restarted; an expired one is dropped.
    pub(crate) fn touch(&self, id: &str, now: Millis) -> bespoke_store::Result<Option<Session>> {
        Ok(self
            .store
            .touch_session(&lookup_key(id), now, LIMITS)?
            .map(Session::from))
    }

    /// Ends a session (logout, or its key no longer valid).
    pub(crate) fn close(&self, id: &str) -> bespoke_store::Result<()> {
        self.store.close_session(&lookup_key(id))
    }
}

/// The session id in a request's cookies, if any well-formed one.
pub(crate) fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `Set-Cookie` for a new session: scoped to the dashboard, invisible to scripts, never sent
/// on cross-site requests (the first defence against CSRF; the token is the second). With
/// `secure` (the login came over HTTPS), browsers also never send it over plain HTTP.
pub(crate) fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age={}{}",
        LIMITS.absolute / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the browser reached us over HTTPS: through a TLS-terminating proxy that says so
/// (`X-Forwarded-Proto: https`), or as the form's `Origin` shows. The server itself speaks
/// plain HTTP; a forged header can only add `Secure`, which costs an attacker's own session.
pub(crate) fn over_https(headers: &HeaderMap) -> bool {
    let starts = |name: &str, with: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with(with))
    };
    starts("x-forwarded-proto", "https") || starts("origin", "https://")
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> (tempfile::TempDir, Sessions) {
        let dir = tempfile::tempdir().unwrap();
        let store = bespoke_store::SqliteStore::open(dir.path(), Default::default()).unwrap();
        (dir, Sessions::new(Arc::new(store)))
    }

    #[test]
    fn sessions_expire_and_close() {
        let (_dir, sessions) = sessions();
        let t0 = 1_000_000;
        let (id, s) = sessions.open("bk_x".into(), [1; 32], t0).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(s.csrf.len(), 64);
        assert_ne!(id, s.csrf);
        let again = sessions.touch(&id, t0 + 10_000).unwrap().unwrap();
        assert_eq!((again.prefix, again.csrf), (s.prefix, s.csrf));
        // Idle for too long: gone.
        assert!(sessions.touch(&id, t0 + LIMITS.idle * 2).unwrap().is_none());
        let (id, _) = sessions.open("bk_x".into(), [1; 32], t0).unwrap();
        sessions.close(&id).unwrap();
        assert!(sessions.touch(&id, t0).unwrap().is_none());
        assert!(sessions.touch("nonsense", t0).unwrap().is_none());
    }

    #[test]
    fn csrf_compares_whole_tokens() {
        let (_dir, sessions) = sessions();
        let (_, s) = sessions.open("p".into(), [0; 32], 1).unwrap();
        assert!(s.csrf_matches(&s.csrf.clone()));
        assert!(!s.csrf_matches(&s.csrf[..63]));
        assert!(!s.csrf_matches(""));
        assert!(!s.csrf_matches(&"0".repeat(64)));
    }

    #[test]
    fn cookies_over_https_are_secure() {
        let mut h = HeaderMap::new();
        assert!(!over_https(&h));
        assert!(!set_cookie("x", false).contains("Secure"));
        h.insert("origin", "http://127.0.0.1:8080".parse().unwrap());
        assert!(!over_https(&h));
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(over_https(&h));
        let mut h = HeaderMap::new();
        h.insert("origin", "https://bespoke.example.com".parse().unwrap());
        assert!(over_https(&h));
        assert!(set_cookie("x", true).ends_with("; Secure"));
    }

    #[test]
    fn cookie_is_read_among_others() {
        let mut h = HeaderMap::new();
        let id = "ab".repeat(32);
        h.insert(
            axum::http::header::COOKIE,
            format!("a=b; {COOKIE}={id}; c=d").parse().unwrap(),
        );
        assert_eq!(cookie_id(&h), Some(id));
        h.insert(
            axum::http::header::COOKIE,
            format!("{COOKIE}=short").parse().unwrap(),
        );
        assert_eq!(cookie_id(&h), None);
    }
}
