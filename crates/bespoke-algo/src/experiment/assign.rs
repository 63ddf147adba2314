//! Deterministic assignment of users to variants.
//!
//! A user's variant is a pure function of the experiment's salt and the user's key, so every
//! node, and the same node after a restart, puts the user in the same arm without shared state.
//! Different salts give independent assignments, so one user's arm in one experiment says
//! nothing about their arm in another.

use serde::Serialize;

use super::Error;

/// At most this many variants in one experiment: more arms split the traffic too thin to
/// learn anything, and every extra arm is another comparison to correct for.
pub const MAX_VARIANTS: usize = 20;

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Separates salt and key, so `("ab", "c")` and `("a", "bc")` hash differently. The byte never
/// occurs in UTF-8, so no salt can imitate it.
const SEPARATOR: u8 = 0xFF;
/// Appended to the salt for the holdout draw, which is thereby independent of the variant draw.
const HOLDOUT_SUFFIX: &str = ":holdout";

/// The stable 64-bit hash behind [`bucket`].
fn hash(salt: &[&[u8]], key: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    };
    for part in salt {
        eat(part);
    }
    eat(&[SEPARATOR]);
    eat(key);
    // FNV-1a mixes its last bytes poorly into the high bits; the SplitMix64 finalizer (Steele,
    // Lea and Flood 2014) spreads every input bit over the whole word.
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The user's position in `[0, 1)` for an experiment: stable across nodes, restarts and
/// releases, because it depends on nothing but its two arguments.
///
/// The definition, for reimplementation elsewhere: FNV-1a 64 over the bytes of `salt`, one byte
/// `0xFF`, then the bytes of `user_key`; then the SplitMix64 finalizer
/// `z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31`
/// (wrapping); the bucket is the top 53 bits divided by 2^53.
pub fn bucket(salt: &str, user_key: &str) -> f64 {
    to_unit(hash(&[salt.as_bytes()], user_key.as_bytes()))
}

/// The top 53 bits of `h` as a double in `[0, 1)`.
fn to_unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The arms of an experiment, their traffic weights and a holdout share.
///
/// Users in the holdout (chosen by `bucket(salt + ":holdout", key) < holdout`) get no variant
/// and see the default configuration. The holdout draw is independent of the variant draw, so
/// changing the holdout share never moves a user from one variant to another. Changing the
/// weights does move users; start a new experiment (a new salt) instead.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Variants {
    names: Vec<String>,
    /// Weights normalised to sum to 1.
    shares: Vec<f64>,
    /// Running sums of `shares`, the upper edge of each variant's interval of `[0, 1)`.
    #[serde(skip)]
    edges: Vec<f64>,
    holdout: f64,
}

impl Variants {
    /// Arms `names` with traffic `weights` (any positive scale) and a `holdout` share in
    /// `[0, 1)` of users kept out of the experiment.
    ///
    /// Fails when there are no variants or more than [`MAX_VARIANTS`], when the lengths differ,
    /// when a name is empty or repeated, when a weight is negative or not finite, when the
    /// weights sum to zero, or when the holdout is outside `[0, 1)`.
    pub fn new(names: Vec<String>, weights: Vec<f64>, holdout: f64) -> Result<Self, Error> {
        if names.is_empty() {
            return Err(Error::NoVariants);
        }
        if names.len() > MAX_VARIANTS {
            return Err(Error::TooManyVariants {
                got: names.len(),
                max: MAX_VARIANTS,
            });
        }
        if names.len() != weights.len() {
            return Err(Error::LengthMismatch {
                names: names.len(),
                weights: weights.len(),
            });
        }
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() || names[..i].contains(name) {
                return Err(Error::BadVariantName { name: name.clone() });
            }
        }
        let shares = normalise(&weights)?;
        if !(0.0..1.0).contains(&holdout) {
            return Err(Error::InvalidHoldout { holdout });
        }
        let mut edges = Vec::with_capacity(shares.len());
        let mut sum = 0.0;
        for &s in &shares {
            sum += s;
            edges.push(sum);
        }
        Ok(Self {
            names,
            shares,
            edges,
            holdout,
        })
    }

    /// The variant of `user_key` in the experiment salted `salt`, or `None` for the holdout.
    ///
    /// A variant of weight zero never receives anyone; rounding at the top edge falls to the last
    /// variant with a positive weight.
    pub fn assign(&self, salt: &str, user_key: &str) -> Option<usize> {
        let key = user_key.as_bytes();
        if self.holdout > 0.0
            && to_unit(hash(&[salt.as_bytes(), HOLDOUT_SUFFIX.as_bytes()], key)) < self.holdout
        {
            return None;
        }
        let u = bucket(salt, user_key);
        let i = self.edges.partition_point(|&e| e <= u);
        // Only rounding (edges summing to 1 − ε) lets `i` run off the end.
        let last = self.shares.iter().rposition(|&s| s > 0.0)?;
        Some(if i < self.shares.len() && self.shares[i] > 0.0 {
            i
        } else {
            last
        })
    }

    /// The variants' names, in the order of their indices.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Each variant's share of the users outside the holdout (sums to 1).
    pub fn shares(&self) -> &[f64] {
        &self.shares
    }

    /// Share of users kept out of the experiment.
    pub fn holdout(&self) -> f64 {
        self.holdout
    }
}

/// Weights scaled to sum to 1, after checking that they are finite, non-negative and not all zero.
pub(crate) fn normalise(weights: &[f64]) -> Result<Vec<f64>, Error> {
    for (index, &weight) in weights.iter().enumerate() {
        if !weight.is_finite() || weight < 0.0 {
            return Err(Error::InvalidWeight { index, weight });
        }
    }
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return Err(Error::ZeroTotalWeight);
    }
    Ok(weights.iter().map(|w| w / total).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("v{i}")).collect()
    }

    #[test]
    fn bucket_is_pinned() {
        // Reference implementation, from the definition in the doc comment:
        // python3 -c "
        // M=(1<<64)-1
        // def b(s, k):
        //     h=0xcbf29ce484222325
        //     for c in s.encode()+b'\xff'+k.encode(): h=((h^c)*0x100000001b3)&M
        //     h=((h^(h>>30))*0xBF58476D1CE4E5B9)&M; h=((h^(h>>27))*0x94D049BB133111EB)&M
        //     h^=h>>31; return repr((h>>11)/2**53)
        // print(b('', ''), b('exp-1', 'user-42'), b('exp-2', 'user-42'), b('exp-1', 'ü'))"
        assert_eq!(bucket("", ""), 0.30929118745757567);
        assert_eq!(bucket("exp-1", "user-42"), 0.07458573728753892);
        assert_eq!(bucket("exp-2", "user-42"), 0.8840828818625664);
        assert_eq!(bucket("exp-1", "ü"), 0.08958423617148203);
        assert_ne!(bucket("ab", "c"), bucket("a", "bc"));
    }

    #[test]
    fn weights_are_respected_over_100k_keys() {
        let v = Variants::new(names(3), vec![1.0, 2.0, 7.0], 0.0).unwrap();
        let mut counts = [0u32; 3];
        for i in 0..100_000 {
            counts[v.assign("w", &format!("user-{i}")).unwrap()] += 1;
        }
        // Binomial standard deviation is at most 158 here; allow about four.
        for (c, want) in counts.iter().zip([10_000.0, 20_000.0, 70_000.0]) {
            assert!((f64::from(*c) - want).abs() < 650.0, "{counts:?}");
        }
    }

    #[test]
    fn holdout_takes_its_share_and_leaves_the_others_in_place() {
        let plain = Variants::new(names(2), vec![1.0, 1.0], 0.0).unwrap();
        let held = Variants::new(names(2), vec![1.0, 1.0], 0.2).unwrap();
        let mut out = 0;
        for i in 0..100_000 {
            let key = format!("user-{i}");
            match held.assign("h", &key) {
                None => out += 1,
                Some(arm) => assert_eq!(Some(arm), plain.assign("h", &key)),
            }
        }
        assert!((out - 20_000i32).abs() < 600, "{out}");
    }

    #[test]
    fn salts_give_independent_assignments() {
        let v = Variants::new(names(2), vec![1.0, 1.0], 0.0).unwrap();
        let mut table = [[0u64; 2]; 2];
        for i in 0..40_000 {
            let key = format!("user-{i}");
            table[v.assign("first", &key).unwrap()][v.assign("second", &key).unwrap()] += 1;
        }
        // Each cell expects 10 000 (sd 87).
        for row in table {
            for c in row {
                assert!(c.abs_diff(10_000) < 400, "{table:?}");
            }
        }
    }

    #[test]
    fn zero_weight_variant_gets_nobody() {
        let v = Variants::new(names(3), vec![1.0, 0.0, 1.0], 0.0).unwrap();
        for i in 0..10_000 {
            assert_ne!(v.assign("z", &i.to_string()), Some(1));
        }
    }

    #[test]
    fn invalid_configurations_are_rejected() {
        assert_eq!(Variants::new(vec![], vec![], 0.0), Err(Error::NoVariants));
        assert_eq!(
            Variants::new(names(21), vec![1.0; 21], 0.0),
            Err(Error::TooManyVariants { got: 21, max: 20 })
        );
        assert_eq!(
            Variants::new(names(2), vec![1.0], 0.0),
            Err(Error::LengthMismatch {
                names: 2,
                weights: 1
            })
        );
        assert!(matches!(
            Variants::new(names(2), vec![1.0, f64::NAN], 0.0),
            Err(Error::InvalidWeight { index: 1, .. })
        ));
        assert_eq!(
            Variants::new(names(2), vec![1.0, -1.0], 0.0),
            Err(Error::InvalidWeight {
                index: 1,
                weight: -1.0
            })
        );
        assert_eq!(
            Variants::new(names(2), vec![0.0, 0.0], 0.0),
            Err(Error::ZeroTotalWeight)
        );
        assert_eq!(
            Variants::new(names(2), vec![1.0, 1.0], 1.0),
            Err(Error::InvalidHoldout { holdout: 1.0 })
        );
        assert_eq!(
            Variants::new(vec!["a".into(), "a".into()], vec![1.0, 1.0], 0.0),
            Err(Error::BadVariantName { name: "a".into() })
        );
    }
}
