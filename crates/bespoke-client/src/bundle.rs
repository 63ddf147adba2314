//! The signed model bundle: its byte format, encoding (server side) and verified decoding
//! (device side).
//!
//! Format version 1, little-endian throughout (docs/on-device.md has the same description for
//! other implementers, and `clients/js` reads it):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `BSPKBNDL` |
//! | 4 | `u32` length `H` of the header |
//! | H | header, UTF-8 JSON ([`Header`]) |
//! | 0–3 | zero padding to a multiple of 4 from the start |
//! | 4·d² | `f32` `YᵀY + λI`, row-major (d = `dim`) |
//! | 4·n·d | `f32` item factors, row-major (`encoding: "f32"`), or |
//! | 4·n + n·d | `f32` per-item scales, then `i8` codes, row-major (`encoding: "int8"`) |
//! | 4·n | `f32` per-item propensity factors, only when `propensity` is true |
//! | 64 | Ed25519 signature of every byte before it |
//!
//! The Gram matrix travels with the factors because a phone should not spend n·d² operations
//! recomputing what the server already has, and because it makes the device's fold-in use the
//! very matrix the server's does.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The bundle format this crate reads and writes.
pub const FORMAT: u32 = 1;
const MAGIC: &[u8; 8] = b"BSPKBNDL";
const SIGNATURE_LEN: usize = 64;

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BundleError {
    /// Not a bundle, or cut short.
    #[error("not a Bespoke bundle: {0}")]
    Malformed(String),
    /// A format this crate does not know.
    #[error("bundle format {0} is not supported (this client reads format {FORMAT})")]
    Format(u32),
    /// The signature does not match the publisher's key: altered or from someone else.
    #[error("the bundle's signature does not verify with the publisher's key")]
    Signature,
}

/// How an event type weighs in a history: a fixed weight, or the event's value (ratings).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventWeight {
    /// A fixed weight; negative for negative feedback.
    Fixed(f64),
    /// The marker `"value"`: the event's value is its weight.
    Value(ValueMarker),
}

/// The string `"value"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueMarker {
    /// Use the event's value.
    Value,
}

/// Position-based recency: an item followed by `age` later items of the user is multiplied by
/// `floor + (1 − floor) · 2^(−age / half_life)` (off when `half_life` is 0 or `floor` ≥ 1).
/// A copy of `bespoke_algo::Recency`, which this crate must not depend on (a device needs no
/// training code); a server test keeps the two bit-equal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recency {
    /// Later interactions after which the extra weight halves.
    pub half_life: f32,
    /// Weight kept however old.
    pub floor: f32,
}

impl Recency {
    /// No recency weighting.
    pub const OFF: Recency = Recency {
        half_life: 0.0,
        floor: 1.0,
    };

    /// Whether it changes anything.
    pub fn is_on(&self) -> bool {
        self.half_life > 0.0 && self.floor < 1.0
    }

    /// The multiplier of an item followed by `age` later ones (computed in `f32`, as the
    /// server does).
    pub fn factor(&self, age: usize) -> f32 {
        if !self.is_on() {
            return 1.0;
        }
        let floor = self.floor.clamp(0.0, 1.0);
        floor + (1.0 - floor) * (-(age as f32) / self.half_life).exp2()
    }
}

/// How the factors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// 4 bytes per factor.
    F32,
    /// 1 byte per factor and one `f32` scale per item: a quarter of the size; scores move by
    /// the rounding (at most half a step, `scale / 2`, per factor).
    Int8,
}

/// The bundle's JSON header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// [`FORMAT`].
    pub format: u32,
    /// The server's model version the factors come from.
    pub model_version: u64,
    /// When the model was trained (RFC 3339).
    pub created_at: String,
    /// Factors per item (d).
    pub dim: u32,
    /// How the factors are stored.
    pub encoding: Encoding,
    /// iALS confidence slope: an item with summed weight w counts with confidence 1 + α·|w|.
    pub alpha: f32,
    /// The weight of each event type, as the server's `events.weights` (sorted, so that the
    /// same model gives the same bytes).
    pub event_weights: BTreeMap<String, EventWeight>,
    /// No event weighs more than this, either way (`events.max_weight`).
    pub max_weight: f64,
    /// `serving.recent_boost`: a positive item weight is multiplied by
    /// `1 + recent_boost · 2^(−age / recent_half_life_ms)`, age the time since the user's
    /// latest event on the item.
    pub recent_boost: f64,
    /// `serving.recent_half_life_hours` in milliseconds; 0 turns the boost off.
    pub recent_half_life_ms: f64,
    /// The position-based recency weighting the model was trained with (off: half_life 0).
    pub recency: Recency,
    /// Whether the model was trained with propensity weights: each item's weight is then
    /// multiplied by its factor from the bundle's propensity section.
    pub propensity: bool,
    /// Item keys, in factor-row order.
    pub keys: Vec<String>,
    /// Category names.
    pub categories: Vec<String>,
    /// Each item's categories, as indexes into `categories` (empty lists allowed).
    pub item_categories: Vec<Vec<u32>>,
}

/// What the server puts in a bundle.
#[derive(Debug, Clone)]
pub struct BundleParts {
    /// Header fields (its `format` and `encoding` are set by [`encode`]).
    pub header: Header,
    /// `YᵀY + λI`, d×d row-major, exactly as the server's fold-in uses it.
    pub gram_reg: Vec<f32>,
    /// Item factors, n×d row-major.
    pub factors: Vec<f32>,
    /// Per-item propensity factors (n of them) when `header.propensity`.
    pub propensity: Vec<f32>,
}

/// Encodes and signs `parts` with `encoding`. Panics only on inconsistent parts (a server bug,
/// not input): lengths that do not match `dim` and the key count.
pub fn encode(parts: &BundleParts, encoding: Encoding, key: &SigningKey) -> Vec<u8> {
    let d = parts.header.dim as usize;
    let n = parts.header.keys.len();
    assert_eq!(parts.gram_reg.len(), d * d, "gram is d×d");
    assert_eq!(parts.factors.len(), n * d, "factors are n×d");
    assert_eq!(parts.header.item_categories.len(), n, "categories per item");
    let propensity_len = if parts.header.propensity { n } else { 0 };
    assert_eq!(
        parts.propensity.len(),
        propensity_len,
        "propensity per item"
    );
    let mut header = parts.header.clone();
    header.format = FORMAT;
    header.encoding = encoding;
    let json = serde_json::to_vec(&header).expect("the header serializes");
    let mut out = Vec::with_capacity(16 + json.len() + 4 * (d * d + n * d) + SIGNATURE_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    for v in &parts.gram_reg {
        out.extend_from_slice(&v.to_le_bytes());
    }
    match encoding {
        Encoding::F32 => {
            for v in &parts.factors {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Encoding::Int8 => {
            let rows: Vec<&[f32]> = if d == 0 {
                vec![&[]; n]
            } else {
                parts.factors.chunks(d).collect()
            };
            let scales: Vec<f32> = rows
                .iter()
                .map(|r| r.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0)
                .collect();
            for s in &scales {
                out.extend_from_slice(&s.to_le_bytes());
            }
            for (row, &s) in rows.iter().zip(&scales) {
                for &v in row.iter() {
                    let q = if s > 0.0 {
                        (v / s).round().clamp(-127.0, 127.0) as i8
                    } else {
                        0
                    };
                    out.push(q as u8);
                }
            }
        }
    }
    for v in &parts.propensity {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let signature = key.sign(&out);
    out.extend_from_slice(&signature.to_bytes());
    out
}

/// A verified bundle, decoded: factors dequantized to `f64` so that every implementation
/// computes the same numbers.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub(crate) header: Header,
    /// `YᵀY + λI`, d×d.
    pub(crate) gram_reg: Vec<f64>,
    /// n×d.
    pub(crate) factors: Vec<f64>,
    /// n when the model was trained with propensity weights, else empty.
    pub(crate) propensity: Vec<f64>,
    pub(crate) index: HashMap<String, u32>,
    pub(crate) category_index: HashMap<String, u32>,
}

impl Bundle {
    /// Verifies `bytes` against the publisher's Ed25519 public key (32 bytes, from
    /// `GET /v1/device/key`) and decodes them. Nothing of an unverified bundle is used.
    pub fn verify(bytes: &[u8], public_key: &[u8; 32]) -> Result<Self, BundleError> {
        if bytes.len() < MAGIC.len() + 4 + SIGNATURE_LEN || &bytes[..8] != MAGIC {
            return Err(BundleError::Malformed("no BSPKBNDL magic".into()));
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| BundleError::Signature)?;
        let sig = Signature::from_slice(sig).map_err(|_| BundleError::Signature)?;
        key.verify(body, &sig).map_err(|_| BundleError::Signature)?;
        Self::decode(body)
    }

    fn decode(body: &[u8]) -> Result<Self, BundleError> {
        let bad = |what: &str| BundleError::Malformed(what.to_owned());
        let h = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
        let json = body
            .get(12..12 + h)
            .ok_or_else(|| bad("header cut short"))?;
        let peek: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| bad(&format!("header: {e}")))?;
        let format = peek["format"].as_u64().unwrap_or(0) as u32;
        if format != FORMAT {
            return Err(BundleError::Format(format));
        }
        let header: Header =
            serde_json::from_value(peek).map_err(|e| bad(&format!("header: {e}")))?;
        let d = header.dim as usize;
        let n = header.keys.len();
        if !(header.max_weight >= 0.0 && header.max_weight.is_finite()) {
            return Err(bad("max_weight must be a finite number ≥ 0"));
        }
        if header.item_categories.len() != n {
            return Err(bad("item_categories and keys differ in length"));
        }
        let ncat = header.categories.len() as u32;
        if header.item_categories.iter().flatten().any(|&c| c >= ncat) {
            return Err(bad("an item names a category that is not listed"));
        }
        let mut at = (12 + h).div_ceil(4) * 4;
        // Checked: a header may claim any size, and a wrapped product must not pass.
        let sizes = || -> Option<(usize, usize, usize)> {
            let gram = d.checked_mul(d)?.checked_mul(4)?;
            let factors = match header.encoding {
                Encoding::F32 => n.checked_mul(d)?.checked_mul(4)?,
                Encoding::Int8 => n.checked_mul(d)?.checked_add(n.checked_mul(4)?)?,
            };
            let propensity = if header.propensity {
                n.checked_mul(4)?
            } else {
                0
            };
            Some((gram, factors, propensity))
        };
        let (gram_len, factors_len, propensity_len) =
            sizes().ok_or_else(|| bad("sections do not match dim and the item count"))?;
        if Some(body.len())
            != at
                .checked_add(gram_len)
                .and_then(|v| v.checked_add(factors_len))
                .and_then(|v| v.checked_add(propensity_len))
        {
            return Err(bad("sections do not match dim and the item count"));
        }
        let f32s = |bytes: &[u8]| -> Vec<f64> {
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
                .collect()
        };
        let gram_reg = f32s(&body[at..at + 4 * d * d]);
        at += 4 * d * d;
        let propensity = f32s(&body[at + factors_len..]);
        let factors = match header.encoding {
            Encoding::F32 => f32s(&body[at..at + factors_len]),
            Encoding::Int8 => {
                let scales = f32s(&body[at..at + 4 * n]);
                let codes = &body[at + 4 * n..at + factors_len];
                let mut out = Vec::with_capacity(n * d);
                for (i, &s) in scales.iter().enumerate() {
                    out.extend(
                        codes[i * d..(i + 1) * d]
                            .iter()
                            .map(|&q| s * (q as i8) as f64),
                    );
                }
                out
            }
        };
        if gram_reg
            .iter()
            .chain(&factors)
            .chain(&propensity)
            .any(|v| !v.is_finite())
        {
            return Err(bad("a factor is not a finite number"));
        }
        let mut index = HashMap::with_capacity(n);
        for (i, k) in header.keys.iter().enumerate() {
            if index.insert(k.clone(), i as u32).is_some() {
                return Err(bad(&format!("item {k:?} is listed twice")));
            }
        }
        let category_index = header
            .categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i as u32))
            .collect();
        Ok(Self {
            header,
            gram_reg,
            factors,
            propensity,
            index,
            category_index,
        })
    }

    /// The header: model version, dimensions, event weights, keys and categories.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.header.keys.len()
    }

    /// Whether the bundle holds no item.
    pub fn is_empty(&self) -> bool {
        self.header.keys.is_empty()
    }

    /// The row of item `key`.
    pub fn item(&self, key: &str) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// Item `i`'s propensity factor (1 when the model was trained without).
    pub fn propensity(&self, i: u32) -> f64 {
        self.propensity.get(i as usize).copied().unwrap_or(1.0)
    }

    /// Item `i`'s factors (dequantized).
    pub fn factors(&self, i: u32) -> &[f64] {
        let d = self.header.dim as usize;
        &self.factors[i as usize * d..(i as usize + 1) * d]
    }

    /// The weight of one event as the server weighs it, or `None` for a type the server does
    /// not know (or a value-weighted type without a finite value).
    pub fn weight(&self, kind: &str, value: Option<f64>) -> Option<f64> {
        let w = match self.header.event_weights.get(kind)? {
            EventWeight::Fixed(w) => *w,
            EventWeight::Value(_) => value.filter(|v| v.is_finite())?,
        };
        // The server weighs in f32; so does the device, for the same sums.
        let w = w as f32 as f64;
        let m = self.header.max_weight;
        Some(w.clamp(-m, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn parts(n: usize, d: usize) -> BundleParts {
        let factors = crate::example_factors(n, d);
        let gram = crate::gram_reg(&factors, d, 0.1);
        BundleParts {
            header: Header {
                format: 0,
                model_version: 7,
                created_at: "2026-12-07T00:00:00Z".into(),
                dim: d as u32,
                encoding: Encoding::F32,
                alpha: 2.0,
                event_weights: [
                    ("view".to_owned(), EventWeight::Fixed(1.0)),
                    ("purchase".to_owned(), EventWeight::Fixed(4.0)),
                    ("dislike".to_owned(), EventWeight::Fixed(-2.0)),
                    ("rating".to_owned(), EventWeight::Value(ValueMarker::Value)),
                ]
                .into_iter()
                .collect(),
                max_weight: 10.0,
                recent_boost: 0.0,
                recent_half_life_ms: 0.0,
                recency: Recency::OFF,
                propensity: false,
                keys: (0..n).map(|i| format!("item-{i}")).collect(),
                categories: vec!["even".into(), "odd".into(), "tens".into()],
                item_categories: (0..n)
                    .map(|i| {
                        let mut c = vec![(i % 2) as u32];
                        if i % 10 == 0 {
                            c.push(2);
                        }
                        c
                    })
                    .collect(),
            },
            gram_reg: gram,
            factors,
            propensity: Vec::new(),
        }
    }

    pub(crate) fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn a_bundle_round_trips_in_both_encodings() {
        let p = parts(50, 8);
        for enc in [Encoding::F32, Encoding::Int8] {
            let bytes = encode(&p, enc, &key());
            let b = Bundle::verify(&bytes, &key().verifying_key().to_bytes()).unwrap();
            assert_eq!(b.len(), 50);
            assert_eq!(b.header().model_version, 7);
            assert_eq!(b.header().encoding, enc);
            assert_eq!(b.item("item-3"), Some(3));
            let y = b.factors(3);
            let want = &p.factors[24..32];
            let tol = if enc == Encoding::F32 {
                0.0
            } else {
                0.4 / 127.0
            };
            for (a, w) in y.iter().zip(want) {
                assert!((a - *w as f64).abs() <= tol + 1e-9, "{enc:?}: {a} vs {w}");
            }
        }
    }

    #[test]
    fn propensity_factors_travel_with_the_bundle() {
        let mut p = parts(6, 3);
        p.header.propensity = true;
        p.propensity = vec![1.0, 2.0, 3.0, 1.5, 1.0, 4.0];
        let bytes = encode(&p, Encoding::Int8, &key());
        let b = Bundle::verify(&bytes, &key().verifying_key().to_bytes()).unwrap();
        assert_eq!(b.propensity(5), 4.0);
        assert_eq!(b.factors(5).len(), 3);
    }

    #[test]
    fn an_altered_or_foreign_bundle_is_refused() {
        let bytes = encode(&parts(20, 4), Encoding::F32, &key());
        let public = key().verifying_key().to_bytes();
        for at in [0, 9, 30, bytes.len() / 2, bytes.len() - 70, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[at] ^= 1;
            assert!(
                Bundle::verify(&b, &public).is_err(),
                "flipped byte {at} accepted"
            );
        }
        let other = SigningKey::from_bytes(&[9u8; 32])
            .verifying_key()
            .to_bytes();
        assert_eq!(
            Bundle::verify(&bytes, &other).unwrap_err(),
            BundleError::Signature
        );
        assert!(Bundle::verify(&bytes[..40], &public).is_err());
        assert!(Bundle::verify(b"", &public).is_err());
    }

    #[test]
    fn a_newer_format_is_named() {
        let mut p = parts(3, 2);
        p.header.format = 2;
        // encode() sets the format; write a format-2 header by hand.
        let mut json = serde_json::to_value(&p.header).unwrap();
        json["format"] = 2.into();
        let body = {
            let j = serde_json::to_vec(&json).unwrap();
            let mut out = MAGIC.to_vec();
            out.extend_from_slice(&(j.len() as u32).to_le_bytes());
            out.extend_from_slice(&j);
            out
        };
        let mut signed = body.clone();
        signed.extend_from_slice(&key().sign(&body).to_bytes());
        assert_eq!(
            Bundle::verify(&signed, &key().verifying_key().to_bytes()).unwrap_err(),
            BundleError::Format(2)
        );
    }

    #[test]
    fn a_negative_weight_limit_is_refused() {
        let mut p = parts(3, 2);
        p.header.max_weight = -1.0;
        let bytes = encode(&p, Encoding::F32, &key());
        assert!(matches!(
            Bundle::verify(&bytes, &key().verifying_key().to_bytes()),
            Err(BundleError::Malformed(_))
        ));
    }

    #[test]
    fn event_weights_follow_the_server_table() {
        let bytes = encode(&parts(3, 2), Encoding::F32, &key());
        let b = Bundle::verify(&bytes, &key().verifying_key().to_bytes()).unwrap();
        assert_eq!(b.weight("purchase", None), Some(4.0));
        assert_eq!(b.weight("rating", Some(3.5)), Some(3.5));
        assert_eq!(b.weight("rating", Some(99.0)), Some(10.0));
        assert_eq!(b.weight("rating", None), None);
        assert_eq!(b.weight("rating", Some(f64::NAN)), None);
        assert_eq!(b.weight("unknown", None), None);
    }
}
