//! API keys, scopes and per-key rate limits.
//!
//! A key looks like `bsk_3f9a1c2e_<64 hex digits>`: the part before the second underscore is a
//! random, non-secret prefix that names the key in listings and the audit log; the rest is 256
//! random bits. The store keeps only the prefix and the SHA-256 of the whole key. A presented key
//! is found by its prefix and accepted when the digests match, compared in constant time on
//! fixed-length digests, so response times say nothing about how much of a guess was right.
//!
//! Failed authentications are throttled per source address ([`FailedAuthThrottle`]): a source
//! that fails too often is refused, whatever key it sends, until its budget refills.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bespoke_store::{KeyRecord, NewKey};
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter as Gcra};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Start of every key.
const KEY_TAG: &str = "bsk_";
/// Hex digits of the non-secret prefix (32 random bits: enough to tell keys apart).
const PREFIX_HEX: usize = 8;
/// Hex digits of the secret (256 random bits).
const SECRET_HEX: usize = 64;
/// Length of a whole key.
const KEY_LEN: usize = KEY_TAG.len() + PREFIX_HEX + 1 + SECRET_HEX;

/// What a key may do. Each scope includes the weaker ones: `write` includes `read`, and `admin`
/// includes both (see [`Scopes::grants`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Serving, safe to ship to browsers: recommendations, similar items, popular items, an
    /// item of the catalog, the OpenAPI document. Nothing about a named user but their
    /// recommendations, nothing about configuration.
    Read,
    /// The operator's backend: events, users and their data, the catalog, erasure receipts,
    /// decisions and rewards, and the decision loops' configuration and statistics.
    Write,
    /// Keys, audit log, exports, models, decision-loop changes and evaluations, metrics.
    Admin,
}

impl Scope {
    /// Every scope, weakest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a key (only `/healthz`, which says nothing but "up").
    Public,
    /// Keys holding this scope or a stronger one.
    Needs(Scope),
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope.
    pub const ALL: Scopes = Scopes(0b111);

    /// The set holding these scopes.
    pub fn of(scopes: &[Scope]) -> Self {
        Self(scopes.iter().fold(0, |acc, s| acc | 1 << *s as u8))
    }

    /// Whether the set grants `scope`: it holds `scope` or a stronger one (`write` grants
    /// `read`, `admin` grants everything). A write key is the operator's backend, which may
    /// already read users' data; refusing it the catalog and serving routes would only make
    /// backends hold a second key.
    pub fn grants(self, scope: Scope) -> bool {
        Scope::ALL
            .into_iter()
            .filter(|s| *s >= scope)
            .any(|s| self.0 & (1 << s as u8) != 0)
    }

    /// The scopes in the set, weakest first.
    pub fn list(self) -> Vec<Scope> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.0 & (1 << *s as u8) != 0)
            .collect()
    }
}

/// A scope list that [`parse_scopes`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A name that is not a scope (such as `root`, or an empty one between two commas).
    #[error("unknown scope {0:?}; the scopes are read, write and admin")]
    Unknown(String),
    /// No scope at all: a key that may do nothing is a mistake.
    #[error("a key needs at least one scope (read, write or admin)")]
    Empty,
}

/// Parses a comma-separated scope list (`read,write`), refusing unknown and empty lists.
pub fn parse_scopes(list: &[String]) -> Result<Vec<Scope>, ScopeError> {
    let mut out = Vec::new();
    for name in list.iter().flat_map(|s| s.split(',')).map(str::trim) {
        let scope = Scope::parse(name).ok_or_else(|| ScopeError::Unknown(name.to_owned()))?;
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    if out.is_empty() {
        return Err(ScopeError::Empty);
    }
    out.sort();
    Ok(out)
}

/// 32 random bytes from the operating system, for secrets.
pub fn random_bytes() -> bespoke_store::Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| bespoke_store::Error::Backend(Box::new(e)))?;
    Ok(b)
}

/// SHA-256 of a whole key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new random key, and the record to store for it (which does not hold the key).
pub fn new_key(
    name: &str,
    scopes: &[Scope],
    rate_per_second: Option<f64>,
) -> Result<(String, NewKey), getrandom::Error> {
    let mut bytes = [0u8; PREFIX_HEX / 2 + SECRET_HEX / 2];
    getrandom::fill(&mut bytes)?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let prefix = format!("{KEY_TAG}{}", hex(&bytes[..PREFIX_HEX / 2]));
    let key = format!("{prefix}_{}", hex(&bytes[PREFIX_HEX / 2..]));
    debug_assert_eq!(key.len(), KEY_LEN);
    let record = NewKey {
        prefix,
        name: name.to_owned(),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        hash: digest(&key),
        rate_per_second,
    };
    Ok((key, record))
}

/// The prefix of something shaped like a key, or `None`.
fn prefix_of(key: &str) -> Option<&str> {
    let b = key.as_bytes();
    let well_formed = b.len() == KEY_LEN
        && key.starts_with(KEY_TAG)
        && b[KEY_TAG.len() + PREFIX_HEX] == b'_'
        && b.iter().enumerate().all(|(i, c)| {
            i < KEY_TAG.len() || i == KEY_TAG.len() + PREFIX_HEX || c.is_ascii_hexdigit()
        });
    well_formed.then(|| &key[..KEY_TAG.len() + PREFIX_HEX])
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The key's prefix (`anonymous` when auth is off), for the audit log.
    pub prefix: String,
    /// What it may do.
    pub scopes: Scopes,
    /// Its rate limit in requests per second (0 = unlimited).
    pub rate_per_second: f64,
}

impl Caller {
    /// The caller when auth is switched off (loopback development only).
    pub fn anonymous() -> Self {
        Self {
            prefix: "anonymous".into(),
            scopes: Scopes::ALL,
            rate_per_second: 0.0,
        }
    }
}

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No key in the request.
    Missing,
    /// Not a key this server issued (malformed, unknown or wrong secret).
    Invalid,
    /// A real key, revoked.
    Revoked,
}

#[derive(Debug, Clone)]
struct Entry {
    hash: [u8; 32],
    scopes: Scopes,
    revoked: bool,
    rate: Option<f64>,
}

/// The keys the server accepts, mirrored from the store (refreshed periodically, so keys created
/// or revoked by the CLI on a running server take effect within a second).
#[derive(Debug, Default)]
pub struct Keyring {
    keys: RwLock<HashMap<String, Entry>>,
    /// Bumped by every [`Keyring::upsert`]: a refresh that read the store before an upsert
    /// must not replace the mirror with its older list (the new key would vanish until the
    /// next refresh).
    generation: std::sync::atomic::AtomicU64,
}

impl Keyring {
    /// The current generation, to pass to [`Keyring::replace_if_unchanged`].
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces the mirror with `records` read from the store, unless a key was upserted
    /// since `generation` was taken (before the read); returns whether it replaced.
    pub fn replace_if_unchanged(&self, records: &[KeyRecord], generation: u64) -> bool {
        let mut keys = self.keys.write();
        if self.generation() != generation {
            return false;
        }
        *keys = Self::entries(records);
        true
    }

    fn entries(records: &[KeyRecord]) -> HashMap<String, Entry> {
        records
            .iter()
            .map(|r| {
                let scopes: Vec<Scope> = r.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
                let entry = Entry {
                    hash: r.hash,
                    scopes: Scopes::of(&scopes),
                    revoked: r.revoked_at.is_some(),
                    rate: r.rate_per_second,
                };
                (r.prefix.clone(), entry)
            })
            .collect()
    }

    /// Replaces the mirror with `records`.
    pub fn replace(&self, records: &[KeyRecord]) {
        *self.keys.write() = Self::entries(records);
    }

    /// Adds or replaces one record.
    pub fn upsert(&self, r: &KeyRecord) {
        let scopes: Vec<Scope> = r.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
        let mut keys = self.keys.write();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        keys.insert(
            r.prefix.clone(),
            Entry {
                hash: r.hash,
                scopes: Scopes::of(&scopes),
                revoked: r.revoked_at.is_some(),
                rate: r.rate_per_second,
            },
        );
    }

    /// Checks a presented key; `default_rate` applies to keys without their own.
    pub fn verify(&self, presented: Option<&str>, default_rate: f64) -> Result<Caller, AuthError> {
        let presented = presented.ok_or(AuthError::Missing)?;
        let prefix = prefix_of(presented).ok_or(AuthError::Invalid)?;
        self.verify_digest(prefix, &digest(presented), default_rate)
    }

    /// As [`Keyring::verify`], for a key known by its prefix and digest: how the dashboard's
    /// sessions, which never keep the key, see a revocation or a change of scopes.
    pub fn verify_digest(
        &self,
        prefix: &str,
        given: &[u8; 32],
        default_rate: f64,
    ) -> Result<Caller, AuthError> {
        let keys = self.keys.read();
        let entry = keys.get(prefix).ok_or(AuthError::Invalid)?;
        if !bool::from(entry.hash.ct_eq(given)) {
            return Err(AuthError::Invalid);
        }
        if entry.revoked {
            return Err(AuthError::Revoked);
        }
        Ok(Caller {
            prefix: prefix.to_owned(),
            scopes: entry.scopes,
            rate_per_second: entry.rate.unwrap_or(default_rate),
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets, one per key.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one token from `key`'s bucket (size `rate × burst_seconds`, at least 1, refilled at
    /// `rate` per second). `Err(seconds)` says how long until a token is available.
    pub fn take(&self, key: &str, rate: f64, burst_seconds: f64, now: Instant) -> Result<(), f64> {
        if rate <= 0.0 {
            return Ok(());
        }
        let size = (rate * burst_seconds).max(1.0);
        let mut buckets = self.buckets.lock();
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: size,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(size);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - b.tokens) / rate)
        }
    }
}

/// The source a failure is charged to: the peer's IPv4 address, or its IPv6 /64 (one host or
/// site usually holds a whole /64, so counting single IPv6 addresses would not limit anyone).
/// Behind a reverse proxy the peer is the proxy.
pub fn source_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// The keyed limiter behind [`FailedAuthThrottle`], one GCRA state per source.
type SourceLimiter<C> =
    Gcra<IpAddr, HashMapStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Per-source throttling of failed authentications (`auth.failed_per_minute`,
/// `auth.failed_burst`), with a keyed GCRA limiter from `governor`.
///
/// Every 401 charges its source one cell. The failure that finds no cell left is answered 429,
/// and from then on the source is refused (429, with the wait in `Retry-After`) on every route
/// that needs a key, before its key is even looked at, until a cell is free again: a throttled
/// source can neither guess nor use keys, and other sources are not affected.
///
/// Memory: the limiter holds one small entry per source that failed recently, and the list of
/// throttled sources one per source refused right now; [`FailedAuthThrottle::prune`] (run every
/// [`THROTTLE_PRUNE_EVERY`]) drops the sources whose budget is full again and the
/// throttles that ended.
pub struct FailedAuthThrottle<C: Clock = DefaultClock> {
    /// `None` when throttling is off (`auth.failed_per_minute = 0`).
    limiter: Option<SourceLimiter<C>>,
    /// Sources refused until the given instant.
    throttled: Mutex<HashMap<IpAddr, C::Instant>>,
    clock: C,
}

impl<C: Clock> fmt::Debug for FailedAuthThrottle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedAuthThrottle")
            .field("on", &self.limiter.is_some())
            .field("throttled", &self.throttled.lock().len())
            .finish_non_exhaustive()
    }
}

impl FailedAuthThrottle {
    /// A throttle allowing `burst` failures at once and `per_minute` on average (0 = off).
    pub fn new(per_minute: f64, burst: u32) -> Self {
        Self::with_clock(per_minute, burst, DefaultClock::default())
    }
}

/// How often the server calls [`FailedAuthThrottle::prune`].
pub const THROTTLE_PRUNE_EVERY: Duration = Duration::from_secs(60);

impl<C: Clock + Clone> FailedAuthThrottle<C> {
    /// As [`FailedAuthThrottle::new`], with the clock to use (a fake one in tests).
    pub fn with_clock(per_minute: f64, burst: u32, clock: C) -> Self {
        let quota = (per_minute > 0.0)
            .then(|| Quota::with_period(Duration::from_secs_f64(60.0 / per_minute)))
            .flatten()
            .map(|q| q.allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)));
        Self {
            limiter: quota.map(|q| Gcra::hashmap_with_clock(q, clock.clone())),
            throttled: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// `Err(wait)` while `source` is throttled.
    pub fn check(&self, source: IpAddr) -> Result<(), Duration> {
        if self.limiter.is_none() {
            return Ok(());
        }
        let mut throttled = self.throttled.lock();
        let Some(until) = throttled.get(&source).copied() else {
            return Ok(());
        };
        let now = self.clock.now();
        if until > now {
            return Err(until.duration_since(now).into());
        }
        throttled.remove(&source);
        Ok(())
    }

    /// Charges a failed authentication to `source`; `Err(wait)` when it was one too many, and
    /// the source is throttled for `wait`.
    pub fn fail(&self, source: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        match limiter.check_key(&source) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let until = not_until.earliest_possible();
                self.throttled.lock().insert(source, until);
                Err(not_until.wait_time_from(self.clock.now()))
            }
        }
    }

    /// Forgets sources whose budget is full again and throttles that have ended, so that
    /// memory follows the sources failing now, not every source ever seen.
    pub fn prune(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = self.clock.now();
        let mut throttled = self.throttled.lock();
        throttled.retain(|_, until| *until > now);
        throttled.shrink_to_fit();
    }

    /// Sources remembered: (with failures in their budget, throttled now).
    pub fn tracked(&self) -> (usize, usize) {
        (
            self.limiter.as_ref().map_or(0, |l| l.len()),
            self.throttled.lock().len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn record(prefix: &str, key: &str, scopes: &[&str], revoked: bool) -> KeyRecord {
        KeyRecord {
            id: 1,
            prefix: prefix.into(),
            name: "t".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            hash: digest(key),
            rate_per_second: None,
            created_at: 0,
            revoked_at: revoked.then_some(1),
        }
    }

    #[test]
    fn new_keys_verify_and_tampered_ones_do_not() {
        let (key, new) = new_key("ci", &[Scope::Read, Scope::Write], Some(5.0)).unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert!(key.starts_with(&new.prefix));
        assert_eq!(new.hash, digest(&key));
        let ring = Keyring::default();
        let mut r = record(&new.prefix, &key, &["read", "write"], false);
        r.rate_per_second = Some(5.0);
        ring.replace(&[r]);
        let caller = ring.verify(Some(&key), 0.0).unwrap();
        assert_eq!(caller.prefix, new.prefix);
        assert!(caller.scopes.grants(Scope::Write));
        assert!(!caller.scopes.grants(Scope::Admin));
        assert_eq!(caller.rate_per_second, 5.0);
        // Change one secret digit: same prefix, wrong digest.
        let mut tampered = key.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(ring.verify(Some(&tampered), 0.0), Err(AuthError::Invalid));
        assert_eq!(ring.verify(None, 0.0), Err(AuthError::Missing));
        assert_eq!(ring.verify(Some("bsk_"), 0.0), Err(AuthError::Invalid));
        // Two keys never share a secret.
        let (other, _) = new_key("ci", &[Scope::Read], None).unwrap();
        assert_ne!(key, other);
    }

    #[test]
    fn revoked_keys_are_refused() {
        let (key, new) = new_key("x", &[Scope::Admin], None).unwrap();
        let ring = Keyring::default();
        ring.replace(&[record(&new.prefix, &key, &["admin"], true)]);
        assert_eq!(ring.verify(Some(&key), 0.0), Err(AuthError::Revoked));
    }

    #[test]
    fn each_scope_grants_itself_and_the_weaker_ones() {
        let admin = Scopes::of(&[Scope::Admin]);
        let write = Scopes::of(&[Scope::Write]);
        let read = Scopes::of(&[Scope::Read]);
        for s in Scope::ALL {
            assert!(admin.grants(s));
            assert_eq!(write.grants(s), s != Scope::Admin);
            assert_eq!(read.grants(s), s == Scope::Read);
        }
        assert!(!Scopes::default().grants(Scope::Read));
        assert_eq!(
            parse_scopes(&["write, read".into(), "read".into()]).unwrap(),
            vec![Scope::Read, Scope::Write]
        );
        assert_eq!(
            parse_scopes(&["read,root".into()]),
            Err(ScopeError::Unknown("root".into()))
        );
        assert_eq!(
            parse_scopes(&["read,".into()]),
            Err(ScopeError::Unknown(String::new()))
        );
        assert_eq!(parse_scopes(&[]), Err(ScopeError::Empty));
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        // 10/s with a 1 s burst: ten at once, the eleventh waits 0.1 s.
        for _ in 0..10 {
            assert!(limiter.take("k", 10.0, 1.0, t0).is_ok());
        }
        let wait = limiter.take("k", 10.0, 1.0, t0).unwrap_err();
        assert!((wait - 0.1).abs() < 1e-9, "{wait}");
        // Other keys have their own bucket.
        assert!(limiter.take("other", 10.0, 1.0, t0).is_ok());
        assert!(
            limiter
                .take("k", 10.0, 1.0, t0 + Duration::from_millis(100))
                .is_ok()
        );
        assert!(limiter.take("k", 0.0, 1.0, t0).is_ok(), "0 = unlimited");
    }

    proptest! {
        /// Over any request pattern, a bucket never grants more than size + rate × time.
        #[test]
        fn bucket_never_exceeds_its_budget(gaps in proptest::collection::vec(0u64..50, 1..300),
                                           rate in 1.0f64..100.0, burst in 0.1f64..3.0) {
            let limiter = RateLimiter::default();
            let t0 = Instant::now();
            let mut t = t0;
            let mut granted = 0u64;
            for g in gaps {
                t += Duration::from_millis(g);
                if limiter.take("k", rate, burst, t).is_ok() {
                    granted += 1;
                }
            }
            let budget = (rate * burst).max(1.0) + rate * (t - t0).as_secs_f64();
            prop_assert!(granted as f64 <= budget + 1e-6, "{granted} > {budget}");
        }

        /// Whatever string is presented, verification answers and never panics.
        #[test]
        fn arbitrary_strings_are_refused_without_panic(s in "\\PC{0,100}") {
            let ring = Keyring::default();
            prop_assert!(ring.verify(Some(&s), 0.0).is_err());
        }
    }

    #[test]
    fn a_source_is_throttled_after_its_burst_until_its_budget_refills() {
        let clock = governor::clock::FakeRelativeClock::default();
        // Three at once, then one a minute.
        let t = FailedAuthThrottle::with_clock(1.0, 3, clock.clone());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check(a).is_ok());
            assert!(t.fail(a).is_ok());
        }
        let wait = t.fail(a).unwrap_err();
        assert_eq!(wait, Duration::from_secs(60), "one cell a minute");
        assert_eq!(t.check(a).unwrap_err(), Duration::from_secs(60));
        // Another source is not affected.
        assert!(t.check(b).is_ok());
        assert!(t.fail(b).is_ok());
        clock.advance(Duration::from_secs(59));
        assert_eq!(t.check(a).unwrap_err(), Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        assert!(t.check(a).is_ok());
        // One more failure is allowed, the next one throttles again.
        assert!(t.fail(a).is_ok());
        assert!(t.fail(a).is_err());
        assert_eq!(t.tracked(), (2, 1));
        // Once every budget is full again, pruning forgets everything.
        clock.advance(Duration::from_secs(3600));
        t.prune();
        assert_eq!(t.tracked(), (0, 0));
    }

    #[test]
    fn throttling_can_be_off_and_ipv6_counts_per_64() {
        let off = FailedAuthThrottle::new(0.0, 1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            assert!(off.fail(a).is_ok());
        }
        assert!(off.check(a).is_ok());
        assert_eq!(
            source_of("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(source_of("::ffff:192.0.2.1".parse().unwrap()), a);
        assert_eq!(source_of(a), a);
    }

    /// A refresh that read the store before a key was created through the API must not drop
    /// that key from the mirror.
    #[test]
    fn a_stale_refresh_keeps_keys_created_meanwhile() {
        let ring = Keyring::default();
        let (key, new) = new_key("ci", &[Scope::Read], None).unwrap();
        let generation = ring.generation();
        let stale: Vec<KeyRecord> = Vec::new(); // read before the key was stored
        ring.upsert(&record(&new.prefix, &key, &["read"], false));
        assert!(!ring.replace_if_unchanged(&stale, generation));
        assert!(ring.verify(Some(&key), 10.0).is_ok());
        assert!(ring.replace_if_unchanged(&stale, ring.generation()));
        assert!(ring.verify(Some(&key), 10.0).is_err());
    }
}
