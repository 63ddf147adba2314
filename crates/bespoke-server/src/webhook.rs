//! Signed, timestamped, replay-protected webhook deliveries (`docs/webhooks.md`).
//!
//! # Brief overview
//!
//! [`validate_url`] turns a configured URL into a [`WebhookUrl`] (or a 400 naming the field).
//! [`deliver`] POSTs a body to it with three headers, [`ID_HEADER`], [`TIMESTAMP_HEADER`] and
//! [`SIGNATURE_HEADER`], the last being [`sign`]: `v1=` and the hex HMAC-SHA256 of
//! `"{id}.{timestamp}.{body}"` under the shared secret. Failed attempts are retried as a
//! [`RetryPolicy`] says, with the same id and a fresh timestamp and signature each time.
//! [`Verifier`] is the receiver's side: it checks the signature in constant time, refuses a
//! timestamp outside its tolerance and an id it already accepted.
//!
//! ```
//! use bespoke_server::webhook::{Verifier, sign};
//!
//! let secret = b"a shared secret of 32 random bytes";
//! let body = br#"{"export":"events"}"#;
//! let signature = sign(secret, "0123abcd", 1_700_000_000, body);
//! let mut verifier = Verifier::new(secret.to_vec());
//! verifier.verify("0123abcd", "1700000000", &signature, body, 1_700_000_010).unwrap();
//! // The same delivery a second time is a replay.
//! assert!(verifier.verify("0123abcd", "1700000000", &signature, body, 1_700_000_011).is_err());
//! ```
//!
//! Only plain `http://` is sent: the server has no TLS stack, so [`deliver`] refuses an
//! `https://` URL with [`DeliveryError::HttpsUnsupported`] (send through a local
//! TLS-terminating proxy instead). The URL validator accepts both, so that configurations stay
//! valid once https is supported.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use crate::error::ApiError;

/// Header holding the delivery id: 32 lowercase hex digits, the same on every attempt of one
/// delivery, so that receivers can drop duplicates.
pub const ID_HEADER: &str = "Bespoke-Webhook-Id";
/// Header holding the attempt's time, in whole seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "Bespoke-Webhook-Timestamp";
/// Header holding the signature, `v1=<64 hex digits>` (see [`sign`]).
pub const SIGNATURE_HEADER: &str = "Bespoke-Signature";
/// The longest webhook URL [`validate_url`] accepts, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// How far (either way) a timestamp may be from the receiver's clock by default, in seconds.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// How many accepted ids a [`Verifier`] remembers at most by default.
pub const DEFAULT_MAX_IDS: usize = 100_000;
/// The longest delivery id a [`Verifier`] accepts, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// The longest signature header a [`Verifier`] reads, in bytes (room for a few signatures
/// while a secret is rotated).
const MAX_SIGNATURE_HEADER_BYTES: usize = 1024;
/// The version tag in front of each signature.
const SIGNATURE_PREFIX: &str = "v1=";

type HmacSha256 = Hmac<Sha256>;

/// The scheme of a [`WebhookUrl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http://`: deliverable.
    Http,
    /// `https://`: valid, but [`deliver`] refuses it (no TLS stack in the server).
    Https,
}

impl Scheme {
    /// The port a URL without one uses.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// A webhook URL that passed [`validate_url`]: `http` or `https`, a host, an optional port and
/// an origin-form path with an optional query; no credentials, no fragment, no spaces, at most
/// [`MAX_URL_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookUrl {
    url: String,
    scheme: Scheme,
    authority: String,
    host: String,
    port: u16,
    path_and_query: String,
}

impl WebhookUrl {
    /// The URL as it was given.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Its scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host: a name, an IPv4 address, or an IPv6 address without its brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port: the one given, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host and port as written in the URL (IPv6 addresses in brackets), for the `Host` header.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path and query, at least `/`.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// Checks a webhook URL; the error is a 400 `invalid_field` naming `field`, in the message too.
///
/// Accepted: `http://` or `https://` (scheme in any case), a host name, IPv4 address or
/// bracketed IPv6 address, an optional port from 1 to 65535, an optional path and query.
/// Refused: other schemes, relative URLs, an empty host, credentials (`user:pass@`), a
/// fragment (`#...`), spaces, control and non-ASCII characters (percent-encode them), and URLs
/// over [`MAX_URL_BYTES`].
///
/// It does not resolve the host, nor refuse private or loopback addresses: whoever may
/// configure a webhook may make the server POST to any address it can reach.
pub fn validate_url(field: &str, url: &str) -> Result<WebhookUrl, ApiError> {
    let fail = |what: &str| ApiError::invalid(field, format!("{field} {what}"));
    if url.is_empty() {
        return Err(fail("must not be empty"));
    }
    if url.len() > MAX_URL_BYTES {
        return Err(fail(&format!(
            "must be at most {MAX_URL_BYTES} bytes, got {}",
            url.len()
        )));
    }
    if let Some(c) = url.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(fail(if c == ' ' {
            "must not contain spaces (percent-encode them as %20)"
        } else if c.is_ascii() {
            "must not contain whitespace or control characters"
        } else {
            "must be ASCII (percent-encode the path, use the punycode form of the host)"
        }));
    }
    const ABSOLUTE: &str = "must be an absolute http:// or https:// URL";
    let Some((scheme, after)) = url.split_once(':').filter(|(s, _)| is_scheme(s)) else {
        return Err(fail(ABSOLUTE));
    };
    let scheme = match scheme {
        s if s.eq_ignore_ascii_case("http") => Scheme::Http,
        s if s.eq_ignore_ascii_case("https") => Scheme::Https,
        // `localhost:8080/hook` is a host and port without a scheme, not a `localhost:` URL.
        _ if after.starts_with(|c: char| c.is_ascii_digit()) => return Err(fail(ABSOLUTE)),
        s => return Err(fail(&format!("must use http or https, not {s:?}"))),
    };
    let Some(rest) = after.strip_prefix("//") else {
        return Err(fail(ABSOLUTE));
    };
    if rest.contains('#') {
        return Err(fail("must not have a fragment (#...)"));
    }
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(fail(
            "must not contain credentials (user:password@); deliveries are signed instead",
        ));
    }
    let bracketed = authority.starts_with('[');
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let Some((address, after)) = inner.split_once(']') else {
            return Err(fail("has an IPv6 address without its closing ]"));
        };
        if Ipv6Addr::from_str(address).is_err() {
            return Err(fail(&format!("has an invalid IPv6 address {address:?}")));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => {
                    return Err(fail(&format!("has text after the IPv6 address: {after:?}")));
                }
            },
        };
        (address, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(fail("has no host"));
    }
    if !bracketed && !is_host_name(host) {
        return Err(fail(&format!(
            "has an invalid host {host:?} (letters, digits, '-', '_' and '.')"
        )));
    }
    let port = match port {
        None => scheme.default_port(),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(fail(&format!("has an invalid port {p:?} (1 to 65535)"))),
        },
    };
    let path_and_query = match tail.as_bytes().first() {
        None => "/".to_owned(),
        Some(b'?') => format!("/{tail}"),
        Some(_) => tail.to_owned(),
    };
    if PathAndQuery::from_str(&path_and_query).is_err() {
        return Err(fail("has an invalid path or query"));
    }
    Ok(WebhookUrl {
        url: url.to_owned(),
        scheme,
        authority: authority.to_owned(),
        host: host.to_owned(),
        port,
        path_and_query,
    })
}

/// RFC 3986 scheme: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

/// A DNS name or IPv4 address: letters, digits, `-`, `_`, and `.` between non-empty labels (a
/// final `.` is allowed).
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The value of [`SIGNATURE_HEADER`]: `v1=` and the lowercase hex HMAC-SHA256, under `secret`,
/// of `id`, `.`, `timestamp` in decimal, `.`, and `body`.
///
/// The id and timestamp are signed with the body so that neither can be changed or moved to
/// another body; [`Verifier`] accepts only ids without `.`, so that the message splits into its
/// three parts in exactly one way.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "{SIGNATURE_PREFIX}{}",
        hex(&mac(secret, id, timestamp, body))
    )
}

fn mac(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// 64 hex digits (either case) as 32 bytes.
fn unhex32(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// Why a [`Verifier`] refused a delivery. Receivers should answer 400 for the malformed ones
/// and 401 for the others, and log the reason rather than send it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The id is empty, longer than [`MAX_ID_BYTES`], or has a character other than a letter,
    /// a digit, `-` or `_`.
    #[error("the delivery id must be 1 to {MAX_ID_BYTES} letters, digits, '-' or '_'")]
    InvalidId,
    /// The timestamp is not a whole number of seconds.
    #[error("the timestamp must be whole seconds since the Unix epoch")]
    InvalidTimestamp,
    /// The signature header holds no `v1=<64 hex digits>` entry, or is too long.
    #[error("the signature header holds no v1=<64 hex digits> entry")]
    InvalidSignature,
    /// No signature matches: wrong secret, or the id, timestamp or body changed on the way.
    #[error("the signature does not match")]
    BadSignature,
    /// The timestamp is further from the receiver's clock than the tolerance.
    #[error("the timestamp {timestamp} is more than {tolerance_secs} s away from now ({now})")]
    Stale {
        /// The delivery's timestamp.
        timestamp: i64,
        /// The receiver's clock.
        now: i64,
        /// The tolerance.
        tolerance_secs: u64,
    },
    /// A delivery with this id was accepted already: a replay, or the sender's retry of a
    /// delivery whose answer it did not get. Answer 2xx without processing it again.
    #[error("delivery {id} was accepted already")]
    Replayed {
        /// The id.
        id: String,
    },
}

/// The receiver's side of the scheme: checks the signature (constant-time), the timestamp
/// (within the tolerance, [`DEFAULT_TOLERANCE_SECS`] by default) and that the id was not
/// accepted before.
///
/// Accepted ids are remembered until their timestamp leaves the tolerance window (a replay of
/// such a delivery is refused as stale anyway), and at most [`DEFAULT_MAX_IDS`] of them
/// (by default); when full, the oldest is forgotten first.
///
/// A receiver that accepted a delivery but then failed to process it should call
/// [`Verifier::forget`] before answering 5xx, so that the sender's retry (same id, new
/// timestamp and signature) is accepted.
pub struct Verifier {
    secret: Vec<u8>,
    tolerance_secs: u64,
    max_ids: usize,
    /// Accepted id → its timestamp.
    seen: HashMap<String, i64>,
    /// The same pairs, oldest timestamp first, for eviction.
    by_age: BTreeSet<(i64, String)>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secret", &"<redacted>")
            .field("tolerance_secs", &self.tolerance_secs)
            .field("max_ids", &self.max_ids)
            .field("remembered", &self.seen.len())
            .finish()
    }
}

impl Verifier {
    /// A verifier for `secret` with the default tolerance and id memory.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            max_ids: DEFAULT_MAX_IDS,
            seen: HashMap::new(),
            by_age: BTreeSet::new(),
        }
    }

    /// Accepts timestamps up to `secs` away from the receiver's clock (either way).
    pub fn with_tolerance(mut self, secs: u64) -> Self {
        self.tolerance_secs = secs;
        self
    }

    /// Remembers at most `n` accepted ids (at least 1).
    pub fn with_max_ids(mut self, n: usize) -> Self {
        self.max_ids = n.max(1);
        self
    }

    /// The tolerance, in seconds.
    pub fn tolerance_secs(&self) -> u64 {
        self.tolerance_secs
    }

    /// How many accepted ids it remembers now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// Checks one delivery, given its three headers as received, its raw body, and the
    /// receiver's clock in Unix seconds; on success the id is remembered.
    ///
    /// The signature header may hold several space- or comma-separated `v1=` entries (one per
    /// secret, while a secret is rotated); one match is enough. Unknown versions are ignored.
    pub fn verify(
        &mut self,
        id: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), VerifyError> {
        let id_ok = !id.is_empty()
            && id.len() <= MAX_ID_BYTES
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(VerifyError::InvalidId);
        }
        let timestamp = parse_timestamp(timestamp).ok_or(VerifyError::InvalidTimestamp)?;
        if signature.len() > MAX_SIGNATURE_HEADER_BYTES {
            return Err(VerifyError::InvalidSignature);
        }
        let candidates: Vec<[u8; 32]> = signature
            .split([' ', ','])
            .filter_map(|entry| entry.strip_prefix(SIGNATURE_PREFIX))
            .filter_map(unhex32)
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::InvalidSignature);
        }
        if now_secs.abs_diff(timestamp) > self.tolerance_secs {
            return Err(VerifyError::Stale {
                timestamp,
                now: now_secs,
                tolerance_secs: self.tolerance_secs,
            });
        }
        let expected = mac(&self.secret, id, timestamp, body);
        let mut matched = Choice::from(0);
        for candidate in &candidates {
            matched |= expected.ct_eq(candidate);
        }
        if !bool::from(matched) {
            return Err(VerifyError::BadSignature);
        }
        // Only authentic deliveries get here, so only the secret's holder can fill the memory.
        self.forget_older_than(now_secs.saturating_sub_unsigned(self.tolerance_secs));
        if self.seen.contains_key(id) {
            return Err(VerifyError::Replayed { id: id.to_owned() });
        }
        while self.seen.len() >= self.max_ids {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.seen.remove(&oldest);
        }
        self.seen.insert(id.to_owned(), timestamp);
        self.by_age.insert((timestamp, id.to_owned()));
        Ok(())
    }

    /// Forgets an accepted id, so that a retry of its delivery is accepted; false if it was
    /// not remembered.
    pub fn forget(&mut self, id: &str) -> bool {
        match self.seen.remove(id) {
            Some(timestamp) => {
                self.by_age.remove(&(timestamp, id.to_owned()));
                true
            }
            None => false,
        }
    }

    /// Drops the ids whose timestamp is before `cutoff`: their deliveries are stale now.
    fn forget_older_than(&mut self, cutoff: i64) {
        while let Some((timestamp, _)) = self.by_age.first() {
            if *timestamp >= cutoff {
                break;
            }
            let (_, id) = self.by_age.pop_first().expect("first() was Some");
            self.seen.remove(&id);
        }
    }
}

/// 1 to 18 ASCII digits (no sign): enough for any date, never overflowing.
fn parse_timestamp(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// How [`deliver_with`] retries: after a connection error, a timeout, a 5xx or a 429, up to
/// `max_attempts` attempts in all, waiting `base_delay`, then twice that, and so on, at most
/// `max_delay` (longer if the receiver's `Retry-After` asks, up to `max_delay`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (0 counts as 1). Default 3.
    pub max_attempts: u32,
    /// The wait after the first failed attempt. Default 1 s.
    pub base_delay: Duration,
    /// The longest wait between two attempts. Default 60 s.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (from 1): `base_delay · 2^(attempt-1)`,
    /// at most `max_delay`.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(31);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// A delivery the receiver accepted (answered 2xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The delivery id (the [`ID_HEADER`] of every attempt).
    pub id: String,
    /// The receiver's status.
    pub status: u16,
    /// Attempts made, the successful one included.
    pub attempts: u32,
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// Resolving the host or connecting failed.
    #[error("connecting failed: {0}")]
    Connect(String),
    /// No answer within the timeout (connection, request and response head together).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The HTTP exchange failed (e.g. the receiver closed the connection or sent no valid HTTP).
    #[error("http exchange failed: {0}")]
    Http(String),
    /// The receiver answered with a retryable status (5xx or 429).
    #[error("the receiver answered {0}")]
    Status(u16),
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The URL is `https://`, and the server has no TLS stack.
    #[error(
        "https webhook URLs are not supported: point the webhook at a local TLS-terminating proxy over http (docs/webhooks.md)"
    )]
    HttpsUnsupported,
    /// The secret is empty: anyone could sign.
    #[error("the webhook secret must not be empty")]
    EmptySecret,
    /// The content type is not a valid header value.
    #[error("invalid content type {0:?}")]
    InvalidContentType(String),
    /// No randomness for the delivery id.
    #[error("no randomness for the delivery id: {0}")]
    Random(String),
    /// The receiver answered a status that is not retried (4xx other than 429, or 1xx/3xx;
    /// redirects are not followed).
    #[error("the receiver refused delivery {id} with status {status} after {attempts} attempt(s)")]
    Rejected {
        /// The delivery id.
        id: String,
        /// The receiver's status.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
    /// Every attempt failed with a retryable error.
    #[error("delivery {id} failed after {attempts} attempt(s); last: {last}")]
    GaveUp {
        /// The delivery id.
        id: String,
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        last: AttemptError,
    },
}

/// [`deliver_with`] with the default [`RetryPolicy`] (3 attempts, 1 s then 2 s apart).
pub async fn deliver(
    url: &WebhookUrl,
    secret: &[u8],
    body: Vec<u8>,
    content_type: &str,
    timeout: Duration,
) -> Result<DeliveryReport, DeliveryError> {
    deliver_with(
        url,
        secret,
        body,
        content_type,
        timeout,
        &RetryPolicy::default(),
    )
    .await
}

/// POSTs `body` to `url` with `Content-Type: content_type` and the signature headers, retrying
/// as `policy` says; `timeout` bounds each attempt (connecting, sending, and receiving the
/// response head). Every attempt carries the same fresh random id and its own timestamp and
/// signature. A 2xx answer is success; the response body is not read.
///
/// Plain http over one new connection per attempt; `https://` URLs fail with
/// [`DeliveryError::HttpsUnsupported`] before anything is sent.
pub async fn deliver_with(
    url: &WebhookUrl,
    secret: &[u8],
    body: Vec<u8>,
    content_type: &str,
    timeout: Duration,
    policy: &RetryPolicy,
) -> Result<DeliveryReport, DeliveryError> {
    if url.scheme() == Scheme::Https {
        return Err(DeliveryError::HttpsUnsupported);
    }
    if secret.is_empty() {
        return Err(DeliveryError::EmptySecret);
    }
    let content_type = HeaderValue::from_str(content_type)
        .map_err(|_| DeliveryError::InvalidContentType(content_type.to_owned()))?;
    let id = new_delivery_id()?;
    let body = Bytes::from(body);
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let timestamp = crate::time::now_ms().div_euclid(1000);
        let signed = Signed {
            id: &id,
            timestamp,
            signature: sign(secret, &id, timestamp, &body),
            content_type: &content_type,
        };
        let outcome = tokio::time::timeout(timeout, send_once(url, &signed, body.clone()))
            .await
            .unwrap_or(Err(AttemptError::Timeout(timeout)));
        let (failure, retry_after) = match outcome {
            Ok((status, _)) if status.is_success() => {
                tracing::debug!(target: "serve::webhook", id, host = url.host(), status = status.as_u16(), attempt, "webhook delivered");
                return Ok(DeliveryReport {
                    id,
                    status: status.as_u16(),
                    attempts: attempt,
                });
            }
            Ok((status, retry_after))
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS =>
            {
                (AttemptError::Status(status.as_u16()), retry_after)
            }
            Ok((status, _)) => {
                tracing::warn!(target: "serve::webhook", id, host = url.host(), status = status.as_u16(), attempt, "webhook refused");
                return Err(DeliveryError::Rejected {
                    id,
                    status: status.as_u16(),
                    attempts: attempt,
                });
            }
            Err(e) => (e, None),
        };
        if attempt >= max_attempts {
            tracing::warn!(target: "serve::webhook", id, host = url.host(), error = %failure, attempts = attempt, "webhook delivery failed");
            return Err(DeliveryError::GaveUp {
                id,
                attempts: attempt,
                last: failure,
            });
        }
        let wait = policy
            .delay_after(attempt)
            .max(retry_after.unwrap_or_default())
            .min(policy.max_delay);
        tracing::info!(target: "serve::webhook", id, host = url.host(), error = %failure, attempt, wait_ms = wait.as_millis() as u64, "webhook attempt failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

/// 16 random bytes in hex.
fn new_delivery_id() -> Result<String, DeliveryError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| DeliveryError::Random(e.to_string()))?;
    Ok(hex(&bytes))
}

/// The headers of one attempt.
struct Signed<'a> {
    id: &'a str,
    timestamp: i64,
    signature: String,
    content_type: &'a HeaderValue,
}

/// Aborts the connection task when the attempt ends, whichever way (also when timed out).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One attempt over a new connection: the status and the `Retry-After` (in seconds), if any.
async fn send_once(
    url: &WebhookUrl,
    signed: &Signed<'_>,
    body: Bytes,
) -> Result<(StatusCode, Option<Duration>), AttemptError> {
    let http = |e: hyper::Error| AttemptError::Http(e.to_string());
    let stream = tokio::net::TcpStream::connect((url.host(), url.port()))
        .await
        .map_err(|e| AttemptError::Connect(e.to_string()))?;
    // Best effort: the request goes out in one or two writes either way.
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake::<_, Body>(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(http)?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        // Its errors reach `send_request` too.
        let _ = connection.await;
    }));
    let request = Request::builder()
        .method(Method::POST)
        .uri(url.path_and_query())
        .header(header::HOST, url.authority())
        .header(header::CONTENT_TYPE, signed.content_type)
        .header(
            header::USER_AGENT,
            concat!("bespoke-webhook/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::CONNECTION, "close")
        .header(ID_HEADER, signed.id)
        .header(TIMESTAMP_HEADER, signed.timestamp)
        .header(SIGNATURE_HEADER, &signed.signature)
        .body(Body::from(body))
        .map_err(|e| AttemptError::Http(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http)?;
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok((response.status(), retry_after))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use parking_lot::Mutex;

    use super::*;

    const SECRET: &[u8] = b"whsec_test";
    const ID: &str = "0123456789abcdef0123456789abcdef";
    const T: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"export":"events"}"#;

    fn now_secs() -> i64 {
        crate::time::now_ms() / 1000
    }

    #[test]
    fn the_signature_matches_a_reference_computed_with_python() {
        // python3 -c 'import hmac, hashlib; print(hmac.new(b"whsec_test",
        //   b"0123456789abcdef0123456789abcdef.1700000000.{\"export\":\"events\"}",
        //   hashlib.sha256).hexdigest())'
        assert_eq!(
            sign(SECRET, ID, T, BODY),
            "v1=ffced9f188616485f33fedeb505cea2518bbec89d2fb7e71397e91b9ce122542"
        );
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let mut v = Verifier::new(SECRET);
        let sig = sign(SECRET, ID, T, BODY);
        assert_eq!(v.verify(ID, &T.to_string(), &sig, BODY, T + 299), Ok(()));
        assert_eq!(v.remembered(), 1);
        // Uppercase hex is the same signature.
        let mut v = Verifier::new(SECRET);
        let upper = format!("v1={}", sig["v1=".len()..].to_ascii_uppercase());
        assert_eq!(v.verify(ID, &T.to_string(), &upper, BODY, T), Ok(()));
    }

    #[test]
    fn tampered_body_id_or_timestamp_and_a_wrong_secret_are_rejected() {
        let sig = sign(SECRET, ID, T, BODY);
        let ts = T.to_string();
        let mut v = Verifier::new(SECRET);
        let tampered = br#"{"export":"users"}"#;
        assert_eq!(
            v.verify(ID, &ts, &sig, tampered, T),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            v.verify("another-id", &ts, &sig, BODY, T),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            v.verify(ID, &(T + 1).to_string(), &sig, BODY, T),
            Err(VerifyError::BadSignature)
        );
        let mut other = Verifier::new(b"another secret".to_vec());
        assert_eq!(
            other.verify(ID, &ts, &sig, BODY, T),
            Err(VerifyError::BadSignature)
        );
        // Nothing refused was remembered.
        assert_eq!(v.remembered(), 0);
        assert_eq!(v.verify(ID, &ts, &sig, BODY, T), Ok(()));
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let sig = sign(SECRET, ID, T, BODY);
        let ts = T.to_string();
        let mut v = Verifier::new(SECRET);
        for now in [T + 301, T - 301, T + 10_000] {
            assert_eq!(
                v.verify(ID, &ts, &sig, BODY, now),
                Err(VerifyError::Stale {
                    timestamp: T,
                    now,
                    tolerance_secs: 300
                })
            );
        }
        let mut strict = Verifier::new(SECRET).with_tolerance(5);
        assert!(matches!(
            strict.verify(ID, &ts, &sig, BODY, T + 6),
            Err(VerifyError::Stale { .. })
        ));
        assert_eq!(strict.verify(ID, &ts, &sig, BODY, T + 5), Ok(()));
    }

    #[test]
    fn a_replayed_id_is_rejected_until_forgotten() {
        let mut v = Verifier::new(SECRET);
        let sig = sign(SECRET, ID, T, BODY);
        let ts = T.to_string();
        assert_eq!(v.verify(ID, &ts, &sig, BODY, T), Ok(()));
        let replayed = Err(VerifyError::Replayed { id: ID.to_owned() });
        assert_eq!(v.verify(ID, &ts, &sig, BODY, T + 1), replayed);
        // The sender's retry has a fresh timestamp and signature but the same id.
        let retry = sign(SECRET, ID, T + 2, BODY);
        assert_eq!(
            v.verify(ID, &(T + 2).to_string(), &retry, BODY, T + 2),
            replayed
        );
        assert!(v.forget(ID));
        assert!(!v.forget(ID));
        assert_eq!(
            v.verify(ID, &(T + 2).to_string(), &retry, BODY, T + 2),
            Ok(())
        );
    }

    #[test]
    fn ids_are_forgotten_once_stale_and_memory_is_bounded() {
        let mut v = Verifier::new(SECRET).with_tolerance(10).with_max_ids(2);
        let accept = |v: &mut Verifier, id: &str, ts: i64, now: i64| {
            v.verify(id, &ts.to_string(), &sign(SECRET, id, ts, BODY), BODY, now)
        };
        assert_eq!(accept(&mut v, "a", T, T), Ok(()));
        assert_eq!(accept(&mut v, "b", T + 5, T + 5), Ok(()));
        // Full: "c" evicts the oldest, "a".
        assert_eq!(accept(&mut v, "c", T + 6, T + 6), Ok(()));
        assert_eq!(v.remembered(), 2);
        assert_eq!(accept(&mut v, "a", T + 6, T + 6), Ok(()));
        assert!(matches!(
            accept(&mut v, "c", T + 7, T + 7),
            Err(VerifyError::Replayed { .. })
        ));
        // At T + 17, "a" and "c" (timestamp T + 6) are stale and forgotten.
        assert_eq!(accept(&mut v, "d", T + 17, T + 17), Ok(()));
        assert_eq!(v.remembered(), 1);
        // A replay of the forgotten "c" is refused as stale.
        assert!(matches!(
            accept(&mut v, "c", T + 6, T + 17),
            Err(VerifyError::Stale { .. })
        ));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let sig = sign(SECRET, ID, T, BODY);
        let ts = T.to_string();
        let mut v = Verifier::new(SECRET);
        for id in ["", "a.b", "a b", "x".repeat(MAX_ID_BYTES + 1).as_str()] {
            assert_eq!(
                v.verify(id, &ts, &sig, BODY, T),
                Err(VerifyError::InvalidId),
                "{id:?}"
            );
        }
        for ts in [
            "",
            "-1",
            "+1700000000",
            "1700000000.5",
            "1e9",
            "9999999999999999999",
        ] {
            assert_eq!(
                v.verify(ID, ts, &sig, BODY, T),
                Err(VerifyError::InvalidTimestamp),
                "{ts:?}"
            );
        }
        for s in [
            "",
            &sig[3..],
            "v2=abcd",
            "v1=xyz",
            format!("{sig}0").as_str(),
            format!("{sig} ").repeat(100).as_str(),
        ] {
            assert_eq!(
                v.verify(ID, &ts, s, BODY, T),
                Err(VerifyError::InvalidSignature),
                "{s:?}"
            );
        }
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let mut v = Verifier::new(SECRET);
        let old = sign(b"old secret", ID, T, BODY);
        let new = sign(SECRET, ID, T, BODY);
        let header = format!("v0=ignored, {old} {new}");
        assert_eq!(v.verify(ID, &T.to_string(), &header, BODY, T), Ok(()));
        let mut v = Verifier::new(SECRET);
        assert_eq!(
            v.verify(ID, &T.to_string(), &old, BODY, T),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn the_debug_form_hides_the_secret() {
        let text = format!("{:?}", Verifier::new(SECRET));
        assert!(!text.contains("whsec"), "{text}");
    }

    #[test]
    fn good_urls_are_accepted_and_split() {
        let u = validate_url("webhook_url", "http://example.com").unwrap();
        assert_eq!(
            (
                u.scheme(),
                u.host(),
                u.port(),
                u.path_and_query(),
                u.authority()
            ),
            (Scheme::Http, "example.com", 80, "/", "example.com")
        );
        let u = validate_url("u", "HTTPS://hooks.example.com:8443/a/b?x=1&y=%20").unwrap();
        assert_eq!(
            (u.scheme(), u.host(), u.port(), u.path_and_query()),
            (Scheme::Https, "hooks.example.com", 8443, "/a/b?x=1&y=%20")
        );
        let u = validate_url("u", "http://[::1]:9000?token=abc").unwrap();
        assert_eq!(
            (u.host(), u.port(), u.path_and_query(), u.authority()),
            ("::1", 9000, "/?token=abc", "[::1]:9000")
        );
        let u = validate_url("u", "http://127.0.0.1:8080/hook").unwrap();
        assert_eq!((u.host(), u.port()), ("127.0.0.1", 8080));
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/hook");
        let u = validate_url("u", "https://[2001:db8::1]/").unwrap();
        assert_eq!((u.host(), u.port()), ("2001:db8::1", 443));
        let longest = format!("http://h/{}", "a".repeat(MAX_URL_BYTES - 9));
        assert!(validate_url("u", &longest).is_ok());
    }

    #[test]
    fn bad_urls_are_a_400_naming_the_field() {
        let long = format!("http://h/{}", "a".repeat(MAX_URL_BYTES - 8));
        let cases = [
            ("", "must not be empty"),
            ("ftp://example.com/x", "must use http or https"),
            ("file:///etc/passwd", "must use http or https"),
            ("javascript:alert(1)", "must use http or https"),
            ("example.com/hook", "absolute"),
            ("/hook", "absolute"),
            ("localhost:8080/hook", "absolute"),
            ("mailto:ops@example.com", "must use http or https"),
            ("http:example.com", "absolute"),
            ("http://", "no host"),
            ("http:///path", "no host"),
            ("http://:80/", "no host"),
            ("http://example.com:/", "invalid port"),
            ("http://example.com:0/", "invalid port"),
            ("http://example.com:65536/", "invalid port"),
            ("http://example.com:+80/", "invalid port"),
            ("http://user:pw@example.com/", "credentials"),
            ("http://@example.com/", "credentials"),
            ("http://example.com/a#frag", "fragment"),
            ("http://example.com/a b", "spaces"),
            ("http://example.com/\ta", "whitespace"),
            ("http://exämple.com/", "ASCII"),
            ("http://exa$mple.com/", "invalid host"),
            ("http://a..b/", "invalid host"),
            ("http://[::1/", "closing"),
            ("http://[::g]/", "invalid IPv6"),
            ("http://[::1]x/", "after the IPv6"),
            ("http://1.2.3.4:80:80/", "invalid"),
            (long.as_str(), "at most 2048 bytes"),
        ];
        for (url, says) in cases {
            let e = validate_url("exports[0].webhook_url", url).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{url:?}");
            assert_eq!(e.code, "invalid_field");
            assert_eq!(e.field.as_deref(), Some("exports[0].webhook_url"));
            assert!(
                e.message.starts_with("exports[0].webhook_url ") && e.message.contains(says),
                "{url:?}: {}",
                e.message
            );
        }
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs = |n| p.delay_after(n).as_secs();
        assert_eq!(
            [secs(1), secs(2), secs(3), secs(6), secs(7), secs(40)],
            [1, 2, 4, 32, 60, 60]
        );
        assert_eq!(p.delay_after(u32::MAX), Duration::from_secs(60));
    }

    /// A receiver that verifies every request with a [`Verifier`] and answers `500` to the
    /// first `fail_first` authentic ones (forgetting their id, as a failed receiver should),
    /// then `status`.
    struct Receiver {
        verifier: Mutex<Verifier>,
        fail_first: usize,
        failing_status: StatusCode,
        status: StatusCode,
        authentic: AtomicUsize,
        /// Per request: id, timestamp, verdict, content type, body.
        log: Mutex<Vec<Seen>>,
    }

    #[derive(Debug, Clone)]
    struct Seen {
        id: String,
        timestamp: String,
        verdict: Result<(), VerifyError>,
        content_type: String,
        user_agent: String,
        body: Vec<u8>,
    }

    async fn receive(
        State(r): State<Arc<Receiver>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (id, timestamp) = (h(ID_HEADER), h(TIMESTAMP_HEADER));
        let verdict =
            r.verifier
                .lock()
                .verify(&id, &timestamp, &h(SIGNATURE_HEADER), &body, now_secs());
        r.log.lock().push(Seen {
            id: id.clone(),
            timestamp,
            verdict: verdict.clone(),
            content_type: h("content-type"),
            user_agent: h("user-agent"),
            body: body.to_vec(),
        });
        if verdict.is_err() {
            return StatusCode::UNAUTHORIZED;
        }
        if r.authentic.fetch_add(1, Ordering::SeqCst) < r.fail_first {
            r.verifier.lock().forget(&id);
            return r.failing_status;
        }
        r.status
    }

    async fn start_receiver(
        fail_first: usize,
        failing_status: StatusCode,
        status: StatusCode,
    ) -> (WebhookUrl, Arc<Receiver>) {
        let receiver = Arc::new(Receiver {
            verifier: Mutex::new(Verifier::new(SECRET)),
            fail_first,
            failing_status,
            status,
            authentic: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/hooks/export", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = validate_url(
            "webhook_url",
            &format!("http://{addr}/hooks/export?source=test"),
        )
        .unwrap();
        (url, receiver)
    }

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_delivery_arrives_signed_and_verifies() {
        let (url, receiver) = start_receiver(0, StatusCode::OK, StatusCode::NO_CONTENT).await;
        let report = deliver(&url, SECRET, BODY.to_vec(), "application/json", TIMEOUT)
            .await
            .unwrap();
        assert_eq!(report.status, 204);
        assert_eq!(report.attempts, 1);
        assert_eq!(report.id.len(), 32);
        assert!(report.id.bytes().all(|b| b.is_ascii_hexdigit()));
        let log = receiver.log.lock().clone();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].verdict, Ok(()));
        assert_eq!(log[0].id, report.id);
        assert_eq!(log[0].body, BODY);
        assert_eq!(log[0].content_type, "application/json");
        assert!(log[0].user_agent.starts_with("bespoke-webhook/"));
        assert!(now_secs().abs_diff(log[0].timestamp.parse().unwrap()) <= 5);
        // Two deliveries of the same body are two ids.
        let again = deliver(&url, SECRET, BODY.to_vec(), "application/json", TIMEOUT)
            .await
            .unwrap();
        assert_ne!(again.id, report.id);
    }

    #[tokio::test]
    async fn two_500s_then_200_take_three_attempts_with_one_id() {
        let (url, receiver) =
            start_receiver(2, StatusCode::INTERNAL_SERVER_ERROR, StatusCode::OK).await;
        let report = deliver_with(
            &url,
            SECRET,
            BODY.to_vec(),
            "application/x-ndjson",
            TIMEOUT,
            &quick(3),
        )
        .await
        .unwrap();
        assert_eq!((report.status, report.attempts), (200, 3));
        let log = receiver.log.lock().clone();
        assert_eq!(log.len(), 3);
        for seen in &log {
            assert_eq!(seen.id, report.id);
            assert_eq!(seen.verdict, Ok(()), "each attempt is signed afresh");
            assert_eq!(seen.content_type, "application/x-ndjson");
        }
    }

    #[tokio::test]
    async fn retries_stop_after_max_attempts() {
        let (url, receiver) =
            start_receiver(usize::MAX, StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK).await;
        let e = deliver_with(&url, SECRET, BODY.to_vec(), "text/csv", TIMEOUT, &quick(2))
            .await
            .unwrap_err();
        let DeliveryError::GaveUp { id, attempts, last } = e else {
            panic!("{e:?}");
        };
        assert_eq!((attempts, last), (2, AttemptError::Status(503)));
        let log = receiver.log.lock().clone();
        assert_eq!(log.len(), 2);
        assert!(log.iter().all(|s| s.id == id));
    }

    #[tokio::test]
    async fn a_429_is_retried() {
        let (url, receiver) =
            start_receiver(1, StatusCode::TOO_MANY_REQUESTS, StatusCode::ACCEPTED).await;
        let report = deliver_with(&url, SECRET, BODY.to_vec(), "text/csv", TIMEOUT, &quick(3))
            .await
            .unwrap();
        assert_eq!((report.status, report.attempts), (202, 2));
        assert_eq!(receiver.log.lock().len(), 2);
    }

    #[tokio::test]
    async fn a_4xx_is_not_retried() {
        // A receiver with another secret answers 401 to everything.
        let (url, receiver) = start_receiver(0, StatusCode::OK, StatusCode::OK).await;
        let e = deliver_with(
            &url,
            b"not the receiver's secret",
            BODY.to_vec(),
            "application/json",
            TIMEOUT,
            &quick(3),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                DeliveryError::Rejected {
                    status: 401,
                    attempts: 1,
                    ..
                }
            ),
            "{e:?}"
        );
        let log = receiver.log.lock().clone();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].verdict, Err(VerifyError::BadSignature));
    }

    #[tokio::test]
    async fn connection_errors_are_retried_then_reported() {
        // A port nothing listens on any more.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = validate_url("u", &format!("http://{addr}/")).unwrap();
        let e = deliver_with(
            &url,
            SECRET,
            BODY.to_vec(),
            "text/plain",
            TIMEOUT,
            &quick(3),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                DeliveryError::GaveUp {
                    attempts: 3,
                    last: AttemptError::Connect(_),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_receiver_times_out() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let url = validate_url("u", &format!("http://{addr}/")).unwrap();
        let timeout = Duration::from_millis(200);
        let e = deliver_with(
            &url,
            SECRET,
            BODY.to_vec(),
            "text/plain",
            timeout,
            &quick(2),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                DeliveryError::GaveUp {
                    attempts: 2,
                    last: AttemptError::Timeout(t),
                    ..
                } if t == timeout
            ),
            "{e:?}"
        );
        held.abort();
    }

    #[tokio::test]
    async fn https_an_empty_secret_and_a_bad_content_type_fail_before_sending() {
        let https = validate_url("u", "https://127.0.0.1:1/").unwrap();
        let e = deliver(&https, SECRET, Vec::new(), "text/plain", TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(e, DeliveryError::HttpsUnsupported);
        assert!(e.to_string().contains("TLS-terminating proxy"));
        let http = validate_url("u", "http://127.0.0.1:1/").unwrap();
        assert_eq!(
            deliver(&http, b"", Vec::new(), "text/plain", TIMEOUT).await,
            Err(DeliveryError::EmptySecret)
        );
        assert!(matches!(
            deliver(&http, SECRET, Vec::new(), "text/plain\n", TIMEOUT).await,
            Err(DeliveryError::InvalidContentType(_))
        ));
    }
}
