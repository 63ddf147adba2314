//! Secure aggregation of federated updates: the server learns the sum of the clients' vectors,
//! not any one of them.
//!
//! # Brief overview
//!
//! Pairwise masking after Bonawitz et al. (CCS 2017), over the sparse neighbour graph of Bell et
//! al. (CCS 2020) so that a client does O(k·d) work instead of O(n·d):
//!
//! 1. Each client holds an X25519 key pair ([`ClientKeys`]) and publishes its public key
//!    ([`Participant`]).
//! 2. The server fixes the round: a round id, a public round seed, the participants and a degree
//!    `k` ([`default_degree`]). Server and clients compute the same [`neighbours`] graph from
//!    them.
//! 3. A client clips its update to L2 norm C, [`encode`]s it in the ring Z_2^64 and [`mask`]s it:
//!    for each neighbour, the ChaCha20 keystream of a seed both ends derive from their X25519
//!    shared secret. The smaller id adds the mask and the larger subtracts it, so each pair's
//!    masks cancel in the sum.
//! 4. The server adds what arrives ([`Aggregator::add`]). Masks between two submitters cancel;
//!    those a submitter shares with a neighbour that dropped out do not, so the server asks each
//!    survivor for the seeds it shares with its dropped neighbours
//!    ([`Aggregator::reveal_request`], answered by [`reveal`]) and removes those masks
//!    ([`Aggregator::finish`]).
//! 5. [`decode_sum`] turns the ring sum back into reals.
//!
//! ```
//! use bespoke_client::secagg::{self, Aggregator, ClientKeys, DEFAULT_SCALE_BITS};
//!
//! let (round, round_seed) = (1, 77);
//! let ids = [10, 20, 30, 40];
//! // Secrets come from the device's CSPRNG; fixed here for the example.
//! let keys: Vec<ClientKeys> = (0..4).map(|i| ClientKeys::from_secret([i + 1; 32])).collect();
//! let public = |id: u64| keys[ids.iter().position(|&i| i == id).unwrap()].public();
//! let graph = secagg::neighbours(round_seed, &ids, secagg::default_degree(ids.len()))?;
//! let with_keys = |id: u64| -> Vec<(u64, [u8; 32])> {
//!     graph.neighbours_of(id).unwrap().iter().map(|&n| (n, public(n))).collect()
//! };
//!
//! let mut server = Aggregator::new(round, 2, graph.clone());
//! for (i, &id) in ids.iter().enumerate() {
//!     let update = secagg::encode(&[0.5, -(i as f32)], DEFAULT_SCALE_BITS)?;
//!     let masked = secagg::mask(&update, round, id, &keys[i], &with_keys(id))?;
//!     if id != 40 {
//!         server.add(id, &masked)?; // client 40 drops out after masking
//!     }
//! }
//! let mut seeds = Vec::new();
//! for (i, &id) in ids[..3].iter().enumerate() {
//!     let request = server.reveal_request(id)?;
//!     seeds.extend(secagg::reveal(round, id, &keys[i], &with_keys(id), &request)?);
//! }
//! let sum = secagg::decode_sum(&server.finish(seeds)?, DEFAULT_SCALE_BITS);
//! assert_eq!(sum, [1.5, -3.0]); // clients 10, 20 and 30 only
//! # Ok::<(), secagg::SecAggError>(())
//! ```
//!
//! The crate brings no randomness: callers pass the secret key bytes and the round seed. The
//! keystream is nearly all of the cost (16 neighbours × d = 60,000 words is 7.7 MB per client),
//! so it comes from an AVX2 kernel (`secagg/avx2.rs`) where the CPU has AVX2 and from
//! `rand_chacha` elsewhere; the tests hold both to the same bytes.
//!
//! # Threat model and limits
//!
//! - The server is honest but curious: it follows the protocol and tries to learn from what it
//!   sees. It does not collude with clients (a client's neighbours together know all its masks).
//! - No self-masks: Bonawitz et al.'s double masking is not built. So a server that lies, telling
//!   the survivors that a client dropped out when its vector did arrive (or arrives late), gets
//!   the seeds of every mask on that vector and unmasks that client's update. The fix is the
//!   paper's double masking: a per-client self-mask, with Shamir shares of its seed and of the
//!   client's key among the neighbours, so that for each client the server can get either the
//!   self-mask or the pairwise seeds, never both. Here the [`Aggregator`] refuses vectors once it
//!   has asked for seeds, which keeps an honest server honest, and nothing more.
//! - Finishing reveals the sum over each connected group of survivors in the graph, not only the
//!   total. A client refuses to reveal when none of its neighbours submitted (that would give
//!   away its own update); an honest server checks [`Aggregator::smallest_survivor_group`]
//!   before it asks for seeds.
//! - No integrity: the server cannot check that an update was clipped, and a wrong revealed
//!   seed corrupts the sum without any error.
//! - Sums wrap modulo 2^64; the caller keeps `n·C` within the range of [`DEFAULT_SCALE_BITS`].

#[cfg(target_arch = "x86_64")]
mod avx2;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

/// A client's id in a round: the order of ids decides who adds and who subtracts a pair's mask.
pub type ClientId = u64;

/// Fractional bits of the fixed-point encoding: steps of 2^-24 (about 6·10^-8, finer than an
/// `f32`'s precision around 1), leaving 39 integer bits, so sums within ±2^39 are exact in the
/// ring (no wrap-around). Decoding to `f64` is exact while the sum is within ±2^29 (53 bits).
pub const DEFAULT_SCALE_BITS: u32 = 24;

/// Beyond 62 fractional bits not even ±1 fits in an `i64`.
const MAX_SCALE_BITS: u32 = 62;

/// Domain tag of every hash in this protocol; a new version of the derivation gets a new tag.
const DOMAIN: &[u8] = b"bespoke-secagg-v1";

/// Why a secure-aggregation step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecAggError {
    /// A value to encode is NaN or infinite.
    #[error("value {index} is not finite")]
    NonFinite {
        /// Its position in the update.
        index: usize,
    },
    /// A value times 2^scale does not fit in an `i64`.
    #[error("value {index} does not fit the encoding with {scale_bits} fractional bits")]
    OutOfRange {
        /// Its position in the update.
        index: usize,
        /// The scale asked for.
        scale_bits: u32,
    },
    /// More than 62 fractional bits.
    #[error("{0} fractional bits: at most 62")]
    ScaleBits(u32),
    /// A degree below 2 leaves clients unmasked or the graph split into pairs.
    #[error("degree {0}: at least 2 (or the whole round)")]
    Degree(usize),
    /// An id appears twice in a list that must not repeat it.
    #[error("client {0} is listed twice")]
    DuplicateClient(ClientId),
    /// A client was given itself as a neighbour.
    #[error("client {0} is given as its own neighbour")]
    SelfNeighbour(ClientId),
    /// A client with no neighbour would send its update unmasked.
    #[error("no neighbours: the update would go out unmasked")]
    NoNeighbours,
    /// A neighbour's public key is a low-order point: the shared secret would be predictable.
    #[error("the public key of client {0} is a low-order point")]
    WeakKey(ClientId),
    /// An id that is not a participant of the round.
    #[error("client {0} is not in this round")]
    UnknownClient(ClientId),
    /// A vector whose length is not the round's dimension.
    #[error("vector of length {got}; the round's dimension is {expected}")]
    WrongLength {
        /// The round's dimension.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// A second vector from the same client.
    #[error("client {0} already submitted")]
    DuplicateSubmission(ClientId),
    /// A vector that arrived after the server asked for seeds: accepting it could unmask it.
    #[error("client {0} submitted after the server asked for seeds")]
    LateSubmission(ClientId),
    /// A client that did not submit was asked for seeds, or is told it did not submit.
    #[error("client {0} did not submit")]
    NotSubmitted(ClientId),
    /// A reveal request for another round than the one the client masked.
    #[error("request for round {got}; this client masked round {expected}")]
    WrongRound {
        /// The client's round.
        expected: u64,
        /// The request's round.
        got: u64,
    },
    /// A reveal request names a client that is not a neighbour: there is no seed to reveal.
    #[error("client {0} is not a neighbour")]
    NotANeighbour(ClientId),
    /// A reveal request names a neighbour that the server itself says submitted: its seed would
    /// unmask that neighbour.
    #[error("refusing to reveal the seed shared with client {0}, which submitted")]
    RevealSubmitted(ClientId),
    /// None of the client's neighbours submitted: revealing its seeds would unmask its update.
    #[error("refusing to reveal: no neighbour submitted, so the seeds would unmask this update")]
    Isolated,
    /// A revealed seed for a pair that is not an edge of the graph.
    #[error("a seed was revealed for {a}–{b}, not an edge of the graph")]
    NotAnEdge {
        /// The smaller id.
        a: ClientId,
        /// The larger id.
        b: ClientId,
    },
    /// A revealed seed for an edge that is not between a survivor and a client that dropped.
    #[error("a seed was revealed for {a}–{b}, not between a survivor and a dropped client")]
    NotADropOut {
        /// The smaller id.
        a: ClientId,
        /// The larger id.
        b: ClientId,
    },
    /// The same edge's seed twice.
    #[error("the seed of {a}–{b} was revealed twice")]
    DuplicateReveal {
        /// The smaller id.
        a: ClientId,
        /// The larger id.
        b: ClientId,
    },
    /// A survivor's mask with a dropped neighbour cannot be removed without its seed.
    #[error("no seed revealed for survivor {survivor} and dropped client {dropped}")]
    MissingReveal {
        /// The client that submitted.
        survivor: ClientId,
        /// Its neighbour that did not.
        dropped: ClientId,
    },
}

/// Results of this module.
pub type Result<T> = std::result::Result<T, SecAggError>;

/// Fixed-point encoding in Z_2^64: `round(v·2^scale_bits)` as a two's-complement `i64`, so that
/// wrapping sums of encodings are encodings of sums.
///
/// Errors on NaN or infinite values, on values whose encoding does not fit an `i64`, and on more
/// than 62 fractional bits. Keeping the *sum* in range (`n·max|v| < 2^(63 − scale_bits)`) is the
/// caller's job: clip each update to a known norm.
pub fn encode(values: &[f32], scale_bits: u32) -> Result<Vec<u64>> {
    if scale_bits > MAX_SCALE_BITS {
        return Err(SecAggError::ScaleBits(scale_bits));
    }
    // A power of two up to 2^62: exact in f64, and so is the product with an f32.
    let scale = (1u64 << scale_bits) as f64;
    let bound = 2f64.powi(63);
    values
        .iter()
        .enumerate()
        .map(|(index, &v)| {
            if !v.is_finite() {
                return Err(SecAggError::NonFinite { index });
            }
            let x = (f64::from(v) * scale).round();
            if !(-bound..bound).contains(&x) {
                return Err(SecAggError::OutOfRange { index, scale_bits });
            }
            Ok(x as i64 as u64)
        })
        .collect()
}

/// Decodes a sum of [`encode`]d vectors: each word as an `i64`, divided by 2^scale_bits.
/// Exact while `|word| < 2^53`; beyond that rounded to the nearest `f64`.
pub fn decode_sum(sum: &[u64], scale_bits: u32) -> Vec<f64> {
    // Past 1100 bits the factor underflows to zero anyway; the cap keeps the cast in range.
    let factor = 0.5f64.powi(scale_bits.min(1100) as i32);
    sum.iter().map(|&w| w as i64 as f64 * factor).collect()
}

/// A client's X25519 key pair. The secret comes from the caller (this crate has no source of
/// randomness): 32 bytes from the platform's CSPRNG, kept on the device.
pub struct ClientKeys {
    secret: StaticSecret,
    public: PublicKey,
}

impl ClientKeys {
    /// The key pair of 32 secret bytes (clamped as X25519 requires, so any bytes will do).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The public key, to publish as this client's [`Participant::public_key`].
    pub fn public(&self) -> [u8; 32] {
        self.public.to_bytes()
    }
}

impl fmt::Debug for ClientKeys {
    // Never the secret, not even in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeys")
            .field("public", &self.public.as_bytes())
            .finish_non_exhaustive()
    }
}

/// A client in a round, as it announces itself and as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Its id.
    pub id: ClientId,
    /// Its X25519 public key, hex on the wire.
    #[serde(with = "hex32")]
    pub public_key: [u8; 32],
}

/// What the server asks of a survivor once it stops taking vectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealRequest {
    /// The round.
    pub round: u64,
    /// The clients whose vectors the server holds: at least the survivor and its neighbours that
    /// submitted. The survivor refuses to reveal a seed shared with any of them.
    pub submitted: Vec<ClientId>,
    /// The survivor's neighbours whose vectors never arrived, whose seeds it is asked for.
    pub dropped: Vec<ClientId>,
}

/// The seed of the mask between a survivor and a neighbour that dropped out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedSeed {
    /// The smaller id of the pair.
    pub a: ClientId,
    /// The larger id of the pair.
    pub b: ClientId,
    /// The pair's seed, hex on the wire.
    #[serde(with = "hex32")]
    pub seed: [u8; 32],
}

/// The seed of the pair's mask: SHA-256 of the domain tag, the round and both ids (ascending,
/// little-endian `u64`s) and the X25519 shared secret. Binding the round makes masks fresh every
/// round with the same keys; binding the ids keeps a seed to its own pair.
fn pair_seed(
    round: u64,
    me: ClientId,
    my_keys: &ClientKeys,
    other: ClientId,
    other_public: &[u8; 32],
) -> Result<[u8; 32]> {
    let shared = my_keys
        .secret
        .diffie_hellman(&PublicKey::from(*other_public));
    if !shared.was_contributory() {
        return Err(SecAggError::WeakKey(other));
    }
    let (lo, hi) = (me.min(other), me.max(other));
    Ok(Sha256::new()
        .chain_update(DOMAIN)
        .chain_update(round.to_le_bytes())
        .chain_update(lo.to_le_bytes())
        .chain_update(hi.to_le_bytes())
        .chain_update(shared.as_bytes())
        .finalize()
        .into())
}

/// Adds (or subtracts) the mask of `seed` to `acc`: the ChaCha20 keystream (key = seed, nonce
/// and counter 0) read as little-endian `u64` words, `acc.len()` of them.
fn apply_mask(acc: &mut [u64], seed: &[u8; 32], subtract: bool) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe {
            if subtract {
                avx2::apply::<true>(acc, seed, 0);
            } else {
                avx2::apply::<false>(acc, seed, 0);
            }
        }
        return;
    }
    apply_mask_portable(acc, seed, subtract);
}

/// [`apply_mask`] through `rand_chacha`: every CPU, and the reference the AVX2 kernel is
/// tested against.
fn apply_mask_portable(acc: &mut [u64], seed: &[u8; 32], subtract: bool) {
    // 4 KiB of keystream at a time, on the stack: no allocation, and each word is added while
    // it is still in L1.
    const WORDS: usize = 512;
    let mut rng = ChaCha20Rng::from_seed(*seed);
    let mut buf = [0u8; WORDS * 8];
    for chunk in acc.chunks_mut(WORDS) {
        let bytes = &mut buf[..chunk.len() * 8];
        rng.fill_bytes(bytes);
        let (words, _) = bytes.as_chunks::<8>();
        if subtract {
            for (a, w) in chunk.iter_mut().zip(words) {
                *a = a.wrapping_sub(u64::from_le_bytes(*w));
            }
        } else {
            for (a, w) in chunk.iter_mut().zip(words) {
                *a = a.wrapping_add(u64::from_le_bytes(*w));
            }
        }
    }
}

/// Checks a client's neighbour list: not empty, no repeats, not the client itself.
fn check_neighbours(me: ClientId, neighbours: &[(ClientId, [u8; 32])]) -> Result<()> {
    if neighbours.is_empty() {
        return Err(SecAggError::NoNeighbours);
    }
    let mut seen = BTreeSet::new();
    for &(id, _) in neighbours {
        if id == me {
            return Err(SecAggError::SelfNeighbour(id));
        }
        if !seen.insert(id) {
            return Err(SecAggError::DuplicateClient(id));
        }
    }
    Ok(())
}

/// Masks an [`encode`]d update for the round: one pairwise mask per neighbour (id and public
/// key, from [`neighbours`] and the participants' keys), added when `me` is the smaller id and
/// subtracted otherwise. Costs one X25519 agreement and `update.len()` keystream words per
/// neighbour.
///
/// Errors, before any masking, on an empty neighbour list (the update would go out as it is), a
/// repeated neighbour, `me` among the neighbours and a low-order public key.
pub fn mask(
    update: &[u64],
    round: u64,
    me: ClientId,
    my_keys: &ClientKeys,
    neighbours: &[(ClientId, [u8; 32])],
) -> Result<Vec<u64>> {
    check_neighbours(me, neighbours)?;
    let seeds = neighbours
        .iter()
        .map(|(id, key)| Ok((*id, pair_seed(round, me, my_keys, *id, key)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut out = update.to_vec();
    for (id, seed) in &seeds {
        apply_mask(&mut out, seed, me > *id);
    }
    Ok(out)
}

/// A survivor's answer to a [`RevealRequest`]: the seeds it shares with the dropped neighbours,
/// after checking the request. `neighbours` is the list the client masked with.
///
/// Refuses a request for another round, one that does not count `me` among the submitters, one
/// naming a client that is not a neighbour or that the request itself lists as submitted (that
/// seed would unmask it), and one where no neighbour submitted (the seeds would unmask `me`).
pub fn reveal(
    round: u64,
    me: ClientId,
    my_keys: &ClientKeys,
    neighbours: &[(ClientId, [u8; 32])],
    request: &RevealRequest,
) -> Result<Vec<RevealedSeed>> {
    if request.round != round {
        return Err(SecAggError::WrongRound {
            expected: round,
            got: request.round,
        });
    }
    check_neighbours(me, neighbours)?;
    let submitted: BTreeSet<ClientId> = request.submitted.iter().copied().collect();
    if !submitted.contains(&me) {
        return Err(SecAggError::NotSubmitted(me));
    }
    let keys: BTreeMap<ClientId, &[u8; 32]> = neighbours.iter().map(|(id, k)| (*id, k)).collect();
    if !keys.keys().any(|id| submitted.contains(id)) {
        return Err(SecAggError::Isolated);
    }
    let mut seen = BTreeSet::new();
    request
        .dropped
        .iter()
        .map(|&dropped| {
            let key = keys
                .get(&dropped)
                .ok_or(SecAggError::NotANeighbour(dropped))?;
            if submitted.contains(&dropped) {
                return Err(SecAggError::RevealSubmitted(dropped));
            }
            if !seen.insert(dropped) {
                return Err(SecAggError::DuplicateClient(dropped));
            }
            Ok(RevealedSeed {
                a: me.min(dropped),
                b: me.max(dropped),
                seed: pair_seed(round, me, my_keys, dropped, key)?,
            })
        })
        .collect()
}

/// The neighbour graph of a round: symmetric, no self-loops, each list ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    adjacency: BTreeMap<ClientId, Vec<ClientId>>,
}

impl Graph {
    /// A participant's neighbours, ascending; `None` for an id not in the round.
    pub fn neighbours_of(&self, id: ClientId) -> Option<&[ClientId]> {
        self.adjacency.get(&id).map(Vec::as_slice)
    }

    /// Every participant with its neighbours, by id.
    pub fn as_map(&self) -> &BTreeMap<ClientId, Vec<ClientId>> {
        &self.adjacency
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.adjacency.len()
    }

    /// No participants.
    pub fn is_empty(&self) -> bool {
        self.adjacency.is_empty()
    }

    fn has_edge(&self, a: ClientId, b: ClientId) -> bool {
        self.neighbours_of(a)
            .is_some_and(|n| n.binary_search(&b).is_ok())
    }
}

/// The degree for `n` participants: `2·⌈log2 n⌉`, at least 2, at most `n − 1`.
///
/// Bell et al. show that O(log n) neighbours per client are enough for the graph of honest
/// survivors to stay connected with high probability, which is what keeps the server from
/// learning anything but the total; so a client's cost grows with log n instead of n. Here, with
/// independent drop-outs at rate δ, a survivor loses every neighbour with probability δ^k, and the
/// ring splits into separate groups only if two runs of k/2 consecutive clients drop out: with
/// k = 2⌈log2 n⌉ both stay below n^(2 + 2·log2 δ), about n^-1.5 at δ = 0.3 and n^-4.6 at δ = 0.1.
/// For 500 clients that is k = 18.
pub fn default_degree(n: usize) -> usize {
    let log2 = n.next_power_of_two().trailing_zeros() as usize;
    (2 * log2).max(2).min(n.saturating_sub(1))
}

/// The neighbour graph of a round, the same wherever it is computed from the public round seed,
/// the participants (any order) and the degree `k`: a random Harary graph, as in Bell et al. The
/// participants are shuffled with a ChaCha20 stream keyed by the round seed and placed on a ring;
/// each is joined to the `⌊k/2⌋` nearest on either side and, when `k` is odd and the count even,
/// to the one opposite.
///
/// Degrees: with `n` participants every one has exactly `n − 1` neighbours when `k ≥ n − 1`
/// (the complete graph); otherwise exactly `k`, except `k − 1` when both `k` and `n` are odd (a
/// `k`-regular graph on an odd number of nodes needs an even `k`).
///
/// Errors on a repeated id and on `k < 2` unless `k ≥ n − 1` (a smaller degree leaves clients
/// unmasked or the graph split into pairs).
pub fn neighbours(round_seed: u64, participants: &[ClientId], k: usize) -> Result<Graph> {
    // Sorted first, so the caller's order does not matter.
    let mut ring = participants.to_vec();
    ring.sort_unstable();
    if let Some(pair) = ring.windows(2).find(|p| p[0] == p[1]) {
        return Err(SecAggError::DuplicateClient(pair[0]));
    }
    let n = ring.len();
    if k >= n.saturating_sub(1) {
        let adjacency = ring
            .iter()
            .map(|&id| (id, ring.iter().copied().filter(|&o| o != id).collect()))
            .collect();
        return Ok(Graph { adjacency });
    }
    if k < 2 {
        return Err(SecAggError::Degree(k));
    }
    let mut rng = ChaCha20Rng::from_seed(
        Sha256::new()
            .chain_update(DOMAIN)
            .chain_update(b"/graph")
            .chain_update(round_seed.to_le_bytes())
            .finalize()
            .into(),
    );
    for i in (1..n).rev() {
        ring.swap(i, below(&mut rng, i as u64 + 1) as usize);
    }
    // Lists by ring position; k < n − 1 here, so the ⌊k/2⌋ on either side and the opposite one
    // are all distinct.
    let mut lists: Vec<Vec<ClientId>> = vec![Vec::with_capacity(k); n];
    let mut join = |p: usize, q: usize| {
        lists[p].push(ring[q]);
        lists[q].push(ring[p]);
    };
    for p in 0..n {
        for step in 1..=k / 2 {
            join(p, (p + step) % n);
        }
    }
    if !k.is_multiple_of(2) && n.is_multiple_of(2) {
        for p in 0..n / 2 {
            join(p, p + n / 2);
        }
    }
    let adjacency = ring
        .iter()
        .zip(lists)
        .map(|(&id, mut list)| {
            list.sort_unstable();
            (id, list)
        })
        .collect();
    Ok(Graph { adjacency })
}

/// A uniform integer below `bound` (> 0): rejection keeps the shuffle unbiased, and the rule is
/// spelled out here so that it cannot change under us with a crate version.
fn below(rng: &mut ChaCha20Rng, bound: u64) -> u64 {
    // The largest multiple of `bound` that fits; draws at or above it are redrawn.
    let zone = u64::MAX - u64::MAX % bound;
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % bound;
        }
    }
}

/// The server's side of a round: sums masked vectors as they arrive (O(d) memory), then removes
/// the masks survivors share with clients that dropped out.
#[derive(Debug)]
pub struct Aggregator {
    round: u64,
    graph: Graph,
    sum: Vec<u64>,
    submitted: BTreeSet<ClientId>,
    /// Set by the first reveal request: a vector accepted after some seeds are out could be
    /// unmasked.
    closed: bool,
}

impl Aggregator {
    /// An empty aggregate of `dim`-word vectors for the round's graph.
    pub fn new(round: u64, dim: usize, graph: Graph) -> Self {
        Self {
            round,
            graph,
            sum: vec![0; dim],
            submitted: BTreeSet::new(),
            closed: false,
        }
    }

    /// Adds a client's masked vector. Errors on an id outside the round, a wrong length, a
    /// second vector from the same client, and any vector after the first reveal request.
    pub fn add(&mut self, id: ClientId, masked: &[u64]) -> Result<()> {
        if self.graph.neighbours_of(id).is_none() {
            return Err(SecAggError::UnknownClient(id));
        }
        if self.closed {
            return Err(SecAggError::LateSubmission(id));
        }
        if masked.len() != self.sum.len() {
            return Err(SecAggError::WrongLength {
                expected: self.sum.len(),
                got: masked.len(),
            });
        }
        if !self.submitted.insert(id) {
            return Err(SecAggError::DuplicateSubmission(id));
        }
        for (s, m) in self.sum.iter_mut().zip(masked) {
            *s = s.wrapping_add(*m);
        }
        Ok(())
    }

    /// The clients whose vectors are in the sum, ascending.
    pub fn submitted(&self) -> Vec<ClientId> {
        self.submitted.iter().copied().collect()
    }

    /// The participants that have not submitted, ascending.
    pub fn dropped(&self) -> Vec<ClientId> {
        self.graph
            .adjacency
            .keys()
            .filter(|id| !self.submitted.contains(id))
            .copied()
            .collect()
    }

    /// The size of the smallest connected group of survivors (edges between submitters only);
    /// 0 when nobody submitted. Finishing reveals each group's sum to the server, so an honest
    /// server below its privacy threshold abandons the round instead of asking for seeds.
    pub fn smallest_survivor_group(&self) -> usize {
        let mut seen = BTreeSet::new();
        let mut smallest = usize::MAX;
        for &start in &self.submitted {
            if !seen.insert(start) {
                continue;
            }
            let mut stack = vec![start];
            let mut size = 0;
            while let Some(id) = stack.pop() {
                size += 1;
                for &next in self.graph.neighbours_of(id).unwrap_or_default() {
                    if self.submitted.contains(&next) && seen.insert(next) {
                        stack.push(next);
                    }
                }
            }
            smallest = smallest.min(size);
        }
        if smallest == usize::MAX { 0 } else { smallest }
    }

    /// The request for `survivor`'s seeds with its dropped neighbours. The first call closes the
    /// round to new vectors.
    pub fn reveal_request(&mut self, survivor: ClientId) -> Result<RevealRequest> {
        let neighbours = self
            .graph
            .neighbours_of(survivor)
            .ok_or(SecAggError::UnknownClient(survivor))?;
        if !self.submitted.contains(&survivor) {
            return Err(SecAggError::NotSubmitted(survivor));
        }
        self.closed = true;
        let (mut submitted, dropped): (Vec<ClientId>, Vec<ClientId>) = neighbours
            .iter()
            .partition(|id| self.submitted.contains(id));
        submitted.push(survivor);
        submitted.sort_unstable();
        Ok(RevealRequest {
            round: self.round,
            submitted,
            dropped,
        })
    }

    /// The sum of the survivors' encoded updates: the sum of what arrived, minus each mask a
    /// survivor applied for a dropped neighbour, regenerated from the revealed seed.
    ///
    /// Errors on a seed for a pair that is not an edge or not between a survivor and a dropped
    /// client, on a seed revealed twice, and on a missing seed; all checked before any work.
    pub fn finish(mut self, reveals: Vec<RevealedSeed>) -> Result<Vec<u64>> {
        let mut seeds = BTreeMap::new();
        for r in reveals {
            let (a, b) = (r.a.min(r.b), r.a.max(r.b));
            if !self.graph.has_edge(a, b) {
                return Err(SecAggError::NotAnEdge { a, b });
            }
            if self.submitted.contains(&a) == self.submitted.contains(&b) {
                return Err(SecAggError::NotADropOut { a, b });
            }
            if seeds.insert((a, b), r.seed).is_some() {
                return Err(SecAggError::DuplicateReveal { a, b });
            }
        }
        let mut removals = Vec::new();
        for &survivor in &self.submitted {
            for &dropped in self.graph.neighbours_of(survivor).unwrap_or_default() {
                if self.submitted.contains(&dropped) {
                    continue;
                }
                let key = (survivor.min(dropped), survivor.max(dropped));
                let seed = seeds
                    .get(&key)
                    .ok_or(SecAggError::MissingReveal { survivor, dropped })?;
                // The survivor added the mask if it has the smaller id: take it away.
                removals.push((seed, survivor < dropped));
            }
        }
        for (seed, subtract) in removals {
            apply_mask(&mut self.sum, seed, subtract);
        }
        Ok(self.sum)
    }
}

/// 32 bytes as 64 hex digits on the wire (lowercase out, either case in).
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let text: String = bytes
            .iter()
            .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
            .map(char::from)
            .collect();
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let (pairs, rest) = text.as_bytes().as_chunks::<2>();
        if pairs.len() != 32 || !rest.is_empty() {
            return Err(D::Error::custom("expected 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (o, &[hi, lo]) in out.iter_mut().zip(pairs) {
            let (Some(hi), Some(lo)) = (nibble(hi), nibble(lo)) else {
                return Err(D::Error::custom("expected 64 hex digits"));
            };
            *o = (hi << 4) | lo;
        }
        Ok(out)
    }

    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A client's keys, different for every id.
    fn keys(id: ClientId) -> ClientKeys {
        let mut secret = [0x5a; 32];
        secret[..8].copy_from_slice(&id.to_le_bytes());
        ClientKeys::from_secret(secret)
    }

    /// A client's neighbours with their public keys, as it learns them from the server.
    fn keyed(graph: &Graph, id: ClientId) -> Vec<(ClientId, [u8; 32])> {
        graph
            .neighbours_of(id)
            .unwrap_or_default()
            .iter()
            .map(|&n| (n, keys(n).public()))
            .collect()
    }

    /// Every client's masked vector for the round.
    fn masked_all(
        graph: &Graph,
        round: u64,
        updates: &BTreeMap<ClientId, Vec<u64>>,
    ) -> BTreeMap<ClientId, Vec<u64>> {
        updates
            .iter()
            .map(|(&id, u)| {
                let m = mask(u, round, id, &keys(id), &keyed(graph, id)).unwrap();
                (id, m)
            })
            .collect()
    }

    fn wrapping_sum<'a>(dim: usize, vs: impl IntoIterator<Item = &'a Vec<u64>>) -> Vec<u64> {
        let mut sum = vec![0u64; dim];
        for v in vs {
            for (s, x) in sum.iter_mut().zip(v) {
                *s = s.wrapping_add(*x);
            }
        }
        sum
    }

    /// Clients with their encoded updates: ids are arbitrary u64s, dimensions small (the
    /// keystream and X25519 are slow in debug builds).
    fn round_inputs() -> impl Strategy<Value = (Vec<(ClientId, Vec<f32>)>, usize)> {
        (2usize..10, 0usize..24).prop_flat_map(|(n, d)| {
            (
                proptest::collection::btree_set(any::<u64>(), n).prop_flat_map(move |ids| {
                    let n = ids.len();
                    (
                        Just(ids),
                        proptest::collection::vec(proptest::collection::vec(-1f32..1.0, d), n),
                    )
                        .prop_map(|(ids, vs)| ids.into_iter().zip(vs).collect::<Vec<_>>())
                }),
                Just(d),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// With everyone submitting, the masks cancel: the aggregate is the plain wrapping sum of
        /// the encodings, bit for bit, and decodes to the real sum within n rounding steps.
        #[test]
        fn masks_cancel_in_the_sum(
            (clients, d) in round_inputs(),
            k in 2usize..10,
            round in any::<u64>(),
            round_seed in any::<u64>(),
        ) {
            let ids: Vec<ClientId> = clients.iter().map(|(id, _)| *id).collect();
            let graph = neighbours(round_seed, &ids, k).unwrap();
            let updates: BTreeMap<ClientId, Vec<u64>> = clients
                .iter()
                .map(|(id, v)| (*id, encode(v, DEFAULT_SCALE_BITS).unwrap()))
                .collect();
            let masked = masked_all(&graph, round, &updates);
            let mut agg = Aggregator::new(round, d, graph);
            for (id, m) in &masked {
                agg.add(*id, m).unwrap();
            }
            prop_assert!(agg.dropped().is_empty());
            let sum = agg.finish(Vec::new()).unwrap();
            prop_assert_eq!(&sum, &wrapping_sum(d, updates.values()));
            let real = decode_sum(&sum, DEFAULT_SCALE_BITS);
            let tolerance = clients.len() as f64 * 0.5f64.powi(DEFAULT_SCALE_BITS as i32);
            for (j, r) in real.iter().enumerate() {
                let exact: f64 = clients.iter().map(|(_, v)| f64::from(v[j])).sum();
                prop_assert!((r - exact).abs() <= tolerance, "{} vs {}", r, exact);
            }
        }

        /// Whatever subset drops out after masking, the survivors' seeds bring the aggregate
        /// back to exactly the survivors' sum, unless a survivor has no surviving neighbour,
        /// which it then refuses.
        #[test]
        fn drop_outs_are_recovered_exactly(
            (clients, d) in round_inputs(),
            k in 2usize..10,
            drops in any::<u64>(),
            round_seed in any::<u64>(),
        ) {
            let round = 3;
            let ids: Vec<ClientId> = clients.iter().map(|(id, _)| *id).collect();
            let graph = neighbours(round_seed, &ids, k).unwrap();
            let updates: BTreeMap<ClientId, Vec<u64>> = clients
                .iter()
                .map(|(id, v)| (*id, encode(v, DEFAULT_SCALE_BITS).unwrap()))
                .collect();
            let masked = masked_all(&graph, round, &updates);
            let mut agg = Aggregator::new(round, d, graph.clone());
            let survivors: Vec<ClientId> =
                ids.iter().enumerate().filter(|(i, _)| drops >> i & 1 == 0).map(|(_, &id)| id).collect();
            for id in &survivors {
                agg.add(*id, &masked[id]).unwrap();
            }
            let mut reveals = Vec::new();
            for &id in &survivors {
                let request = agg.reveal_request(id).unwrap();
                match reveal(round, id, &keys(id), &keyed(&graph, id), &request) {
                    Ok(seeds) => reveals.extend(seeds),
                    Err(e) => {
                        prop_assert_eq!(e, SecAggError::Isolated);
                        prop_assert!(request.submitted == vec![id]);
                        return Ok(());
                    }
                }
            }
            let sum = agg.finish(reveals).unwrap();
            prop_assert_eq!(sum, wrapping_sum(d, survivors.iter().map(|id| &updates[id])));
        }

        /// The graph is symmetric, loop-free, connected, deterministic for a seed whatever the
        /// order of the participants, and has the stated degrees.
        #[test]
        fn neighbour_graph_invariants(
            ids in proptest::collection::btree_set(any::<u64>(), 0..60),
            k in 2usize..70,
            seed in any::<u64>(),
        ) {
            let ids: Vec<ClientId> = ids.into_iter().collect();
            let n = ids.len();
            let graph = neighbours(seed, &ids, k).unwrap();
            let mut reversed = ids.clone();
            reversed.reverse();
            prop_assert_eq!(&graph, &neighbours(seed, &reversed, k).unwrap());
            prop_assert_eq!(graph.len(), n);
            let degree = if k >= n.saturating_sub(1) {
                n.saturating_sub(1)
            } else if k % 2 == 1 && n % 2 == 1 {
                k - 1
            } else {
                k
            };
            for (&id, list) in graph.as_map() {
                prop_assert_eq!(list.len(), degree, "client {} of {}, k = {}", id, n, k);
                prop_assert!(list.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(!list.contains(&id));
                for &other in list {
                    prop_assert!(graph.has_edge(other, id));
                }
            }
            let mut agg = Aggregator::new(0, 0, graph);
            for &id in &ids {
                agg.add(id, &[]).unwrap();
            }
            prop_assert_eq!(agg.smallest_survivor_group(), n);
        }
    }

    #[test]
    fn the_graph_depends_on_the_seed_and_needs_a_degree_of_two() {
        let ids: Vec<ClientId> = (0..40).collect();
        let a = neighbours(1, &ids, 4).unwrap();
        assert_eq!(a, neighbours(1, &ids, 4).unwrap());
        assert_ne!(a, neighbours(2, &ids, 4).unwrap());
        assert_eq!(neighbours(1, &ids, 1), Err(SecAggError::Degree(1)));
        assert_eq!(
            neighbours(1, &[3, 1, 3], 2),
            Err(SecAggError::DuplicateClient(3))
        );
        // Two clients: k = 1 is the whole round.
        assert_eq!(
            neighbours(1, &[5, 9], 1).unwrap().neighbours_of(5),
            Some(&[9][..])
        );
        assert_eq!(default_degree(500), 18);
        assert_eq!(default_degree(5), 4);
        assert_eq!(default_degree(2), 1);
        assert_eq!(default_degree(1), 0);
    }

    /// Nine clients on a 4-regular ring; 2 and 7 mask but never submit.
    struct DropOut {
        graph: Graph,
        updates: BTreeMap<ClientId, Vec<u64>>,
        agg: Aggregator,
        survivors: Vec<ClientId>,
    }

    const ROUND: u64 = 11;

    fn drop_out() -> DropOut {
        let ids: Vec<ClientId> = (1..=9).collect();
        let graph = neighbours(42, &ids, 4).unwrap();
        let updates: BTreeMap<ClientId, Vec<u64>> = ids
            .iter()
            .map(|&id| {
                let v: Vec<f32> = (0..50).map(|j| (id as f32 - j as f32) / 16.0).collect();
                (id, encode(&v, DEFAULT_SCALE_BITS).unwrap())
            })
            .collect();
        let masked = masked_all(&graph, ROUND, &updates);
        let survivors: Vec<ClientId> = ids
            .iter()
            .copied()
            .filter(|&id| id != 2 && id != 7)
            .collect();
        let mut agg = Aggregator::new(ROUND, 50, graph.clone());
        for id in &survivors {
            agg.add(*id, &masked[id]).unwrap();
        }
        DropOut {
            graph,
            updates,
            agg,
            survivors,
        }
    }

    fn reveals(s: &mut DropOut) -> Vec<RevealedSeed> {
        let mut all = Vec::new();
        for &id in &s.survivors {
            let request = s.agg.reveal_request(id).unwrap();
            all.extend(reveal(ROUND, id, &keys(id), &keyed(&s.graph, id), &request).unwrap());
        }
        all
    }

    #[test]
    fn survivors_seeds_recover_the_survivors_sum() {
        let mut s = drop_out();
        assert_eq!(s.agg.dropped(), vec![2, 7]);
        assert_eq!(s.agg.smallest_survivor_group(), 7);
        let seeds = reveals(&mut s);
        let needed = [2, 7]
            .iter()
            .map(|d| {
                s.graph
                    .neighbours_of(*d)
                    .unwrap()
                    .iter()
                    .filter(|n| **n != 2 && **n != 7)
                    .count()
            })
            .sum::<usize>();
        assert_eq!(seeds.len(), needed);
        let expected = wrapping_sum(50, s.survivors.iter().map(|id| &s.updates[id]));
        assert_eq!(s.agg.finish(seeds).unwrap(), expected);
    }

    #[test]
    fn a_missing_duplicate_or_forged_seed_is_an_error() {
        let mut s = drop_out();
        let seeds = reveals(&mut s);
        let dim = 50;

        let mut missing = seeds.clone();
        let gone = missing.pop().unwrap();
        let agg = rebuild(&s, dim);
        assert!(matches!(
            agg.finish(missing),
            Err(SecAggError::MissingReveal { survivor, dropped })
                if (survivor.min(dropped), survivor.max(dropped)) == (gone.a, gone.b)
        ));

        let mut twice = seeds.clone();
        twice.push(seeds[0].clone());
        assert!(matches!(
            rebuild(&s, dim).finish(twice),
            Err(SecAggError::DuplicateReveal { .. })
        ));

        // A survivor paired with a dropped client that is not its neighbour.
        let non_edge = s
            .survivors
            .iter()
            .find_map(|&id| {
                let n = s.graph.neighbours_of(id).unwrap();
                (!n.contains(&2)).then_some(id)
            })
            .unwrap();
        let mut forged = seeds.clone();
        forged.push(RevealedSeed {
            a: non_edge.min(2),
            b: non_edge.max(2),
            seed: [1; 32],
        });
        assert!(matches!(
            rebuild(&s, dim).finish(forged),
            Err(SecAggError::NotAnEdge { .. })
        ));

        // An edge between two survivors: its seed would unmask them.
        let (a, b) = s
            .survivors
            .iter()
            .find_map(|&id| {
                let n = s.graph.neighbours_of(id).unwrap();
                n.iter()
                    .find(|&&o| o > id && o != 2 && o != 7)
                    .map(|&o| (id, o))
            })
            .unwrap();
        let mut forged = seeds;
        forged.push(RevealedSeed {
            a,
            b,
            seed: [1; 32],
        });
        assert_eq!(
            rebuild(&s, dim).finish(forged),
            Err(SecAggError::NotADropOut { a, b })
        );
    }

    /// The scenario's aggregator again (`finish` consumes it).
    fn rebuild(s: &DropOut, dim: usize) -> Aggregator {
        let masked = masked_all(&s.graph, ROUND, &s.updates);
        let mut agg = Aggregator::new(ROUND, dim, s.graph.clone());
        for id in &s.survivors {
            agg.add(*id, &masked[id]).unwrap();
        }
        agg
    }

    #[test]
    fn a_client_refuses_to_reveal_what_would_unmask_someone() {
        let mut s = drop_out();
        let me = *s
            .survivors
            .iter()
            .find(|&&id| s.graph.neighbours_of(id).unwrap().contains(&2))
            .unwrap();
        let my_neighbours = keyed(&s.graph, me);
        let honest = s.agg.reveal_request(me).unwrap();
        assert!(honest.dropped.contains(&2));
        assert!(reveal(ROUND, me, &keys(me), &my_neighbours, &honest).is_ok());

        // The server asks for the seed of a neighbour it says submitted.
        let submitter = *honest.submitted.iter().find(|&&id| id != me).unwrap();
        let mut lying = honest.clone();
        lying.dropped.push(submitter);
        assert_eq!(
            reveal(ROUND, me, &keys(me), &my_neighbours, &lying),
            Err(SecAggError::RevealSubmitted(submitter))
        );
        // ... for a client that is not a neighbour.
        let stranger = (1..=9)
            .find(|id| *id != me && !s.graph.neighbours_of(me).unwrap().contains(id))
            .unwrap();
        let mut lying = honest.clone();
        lying.dropped.push(stranger);
        assert_eq!(
            reveal(ROUND, me, &keys(me), &my_neighbours, &lying),
            Err(SecAggError::NotANeighbour(stranger))
        );
        // ... with every neighbour gone: the seeds would unmask `me`.
        let lying = RevealRequest {
            round: ROUND,
            submitted: vec![me],
            dropped: my_neighbours.iter().map(|(id, _)| *id).collect(),
        };
        assert_eq!(
            reveal(ROUND, me, &keys(me), &my_neighbours, &lying),
            Err(SecAggError::Isolated)
        );
        // ... for another round, or saying `me` did not submit.
        let other = RevealRequest {
            round: ROUND + 1,
            ..honest.clone()
        };
        assert!(matches!(
            reveal(ROUND, me, &keys(me), &my_neighbours, &other),
            Err(SecAggError::WrongRound { .. })
        ));
        let not_me = RevealRequest {
            submitted: honest
                .submitted
                .iter()
                .copied()
                .filter(|&id| id != me)
                .collect(),
            ..honest
        };
        assert_eq!(
            reveal(ROUND, me, &keys(me), &my_neighbours, &not_me),
            Err(SecAggError::NotSubmitted(me))
        );
        // Once seeds are asked for, a late vector is refused: it could be unmasked.
        assert_eq!(s.agg.add(2, &[0; 50]), Err(SecAggError::LateSubmission(2)));
    }

    #[test]
    fn the_aggregator_refuses_bad_submissions() {
        let graph = neighbours(0, &[1, 2, 3], 2).unwrap();
        let mut agg = Aggregator::new(0, 4, graph);
        assert_eq!(agg.add(9, &[0; 4]), Err(SecAggError::UnknownClient(9)));
        assert_eq!(
            agg.add(1, &[0; 3]),
            Err(SecAggError::WrongLength {
                expected: 4,
                got: 3
            })
        );
        agg.add(1, &[0; 4]).unwrap();
        assert_eq!(
            agg.add(1, &[0; 4]),
            Err(SecAggError::DuplicateSubmission(1))
        );
        assert_eq!(agg.reveal_request(2), Err(SecAggError::NotSubmitted(2)));
        assert_eq!(agg.submitted(), vec![1]);
        assert_eq!(agg.dropped(), vec![2, 3]);
    }

    /// One masked vector alone looks nothing like the update, and the same update masks
    /// differently in another round.
    #[test]
    fn a_masked_vector_hides_the_update() {
        let graph = neighbours(5, &[10, 20, 30], 2).unwrap();
        let update = encode(&[0.25; 64], DEFAULT_SCALE_BITS).unwrap();
        let n = keyed(&graph, 20);
        let round1 = mask(&update, 1, 20, &keys(20), &n).unwrap();
        let round2 = mask(&update, 2, 20, &keys(20), &n).unwrap();
        assert_eq!(round1.len(), 64);
        assert!(round1.iter().zip(&update).all(|(m, u)| m != u));
        assert!(round1.iter().zip(&round2).all(|(a, b)| a != b));
        // Deterministic for the same inputs: the partner must derive the same mask.
        assert_eq!(round1, mask(&update, 1, 20, &keys(20), &n).unwrap());
    }

    #[test]
    fn masking_refuses_what_would_leak() {
        let k = keys(1);
        assert_eq!(mask(&[1, 2], 0, 1, &k, &[]), Err(SecAggError::NoNeighbours));
        let p = keys(2).public();
        assert_eq!(
            mask(&[1, 2], 0, 1, &k, &[(1, p)]),
            Err(SecAggError::SelfNeighbour(1))
        );
        assert_eq!(
            mask(&[1, 2], 0, 1, &k, &[(2, p), (2, p)]),
            Err(SecAggError::DuplicateClient(2))
        );
        // The identity point: a shared secret of zeros, known to anyone.
        assert_eq!(
            mask(&[1, 2], 0, 1, &k, &[(2, p), (3, [0; 32])]),
            Err(SecAggError::WeakKey(3))
        );
    }

    /// The mask is ChaCha20's keystream: RFC 8439's first test vector (key and nonce zero,
    /// block 0), read as little-endian words. Pins the wire format against a change of crate.
    #[test]
    fn the_mask_is_the_chacha20_keystream() {
        for apply in [apply_mask, apply_mask_portable] {
            let mut words = [0u64; 2];
            apply(&mut words, &[0; 32], false);
            assert_eq!(words, [0x903d_f1a0_ade0_b876, 0x28bd_8653_e56a_5d40]);
            apply(&mut words, &[0; 32], true);
            assert_eq!(words, [0, 0]);
        }
    }

    proptest! {
        /// The AVX2 kernel (when the CPU has it) and `rand_chacha` give the same masks, for
        /// lengths around the kernel's 64-word steps and the portable path's 512-word buffer.
        #[test]
        fn the_fast_mask_is_the_portable_one(
            seed in any::<[u8; 32]>(),
            start in proptest::collection::vec(any::<u64>(), 0..1100),
            subtract in any::<bool>(),
        ) {
            let mut fast = start.clone();
            apply_mask(&mut fast, &seed, subtract);
            let mut portable = start;
            apply_mask_portable(&mut portable, &seed, subtract);
            prop_assert_eq!(fast, portable);
        }
    }

    #[test]
    fn both_ends_derive_the_same_seed_and_it_is_pinned() {
        let (a, b) = (keys(1), keys(2));
        let ab = pair_seed(7, 1, &a, 2, &b.public()).unwrap();
        assert_eq!(ab, pair_seed(7, 2, &b, 1, &a.public()).unwrap());
        assert_ne!(ab, pair_seed(8, 1, &a, 2, &b.public()).unwrap());
        // The smaller id adds the pair's keystream, the larger subtracts it.
        let mut stream = [0u64; 4];
        apply_mask(&mut stream, &ab, false);
        assert_eq!(mask(&[0; 4], 7, 1, &a, &[(2, b.public())]).unwrap(), stream);
        let negated = stream.map(u64::wrapping_neg);
        assert_eq!(
            mask(&[0; 4], 7, 2, &b, &[(1, a.public())]).unwrap(),
            negated
        );
        let json = serde_json::to_string(&RevealedSeed {
            a: 1,
            b: 2,
            seed: ab,
        })
        .unwrap();
        assert_eq!(json, PINNED_SEED_JSON);
    }

    /// Computed outside this crate (Python's `cryptography` X25519 and `hashlib` SHA-256 over
    /// the same bytes), so a change to the derivation or to the key agreement shows here.
    const PINNED_SEED_JSON: &str = r#"{"a":1,"b":2,"seed":"a6483ded3a63584d5c34e75cfbc3da7a6ae41f355f5029ee1f2db43e809b93b1"}"#;

    #[test]
    fn encoding_round_trips_and_refuses_bad_values() {
        let v = [0.5f32, -0.5, 1e-9, -3.25, 0.0];
        let e = encode(&v, DEFAULT_SCALE_BITS).unwrap();
        assert_eq!(e[0], 1 << 23);
        assert_eq!(e[1], (-(1i64 << 23)) as u64);
        assert_eq!(e[2], 0);
        assert_eq!(
            decode_sum(&e, DEFAULT_SCALE_BITS),
            [0.5, -0.5, 0.0, -3.25, 0.0]
        );
        assert_eq!(
            encode(&[1.0, f32::NAN], 24),
            Err(SecAggError::NonFinite { index: 1 })
        );
        assert_eq!(
            encode(&[f32::INFINITY], 24),
            Err(SecAggError::NonFinite { index: 0 })
        );
        assert_eq!(
            encode(&[0.0, 2f32.powi(39)], 24),
            Err(SecAggError::OutOfRange {
                index: 1,
                scale_bits: 24
            })
        );
        assert_eq!(
            encode(&[-(2f32.powi(38))], 24).unwrap(),
            [(-(1i64 << 62)) as u64]
        );
        assert_eq!(encode(&[1.0], 63), Err(SecAggError::ScaleBits(63)));
    }

    #[test]
    fn wire_types_carry_bytes_as_hex() {
        let p = Participant {
            id: 7,
            public_key: keys(7).public(),
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""public_key":""#), "{json}");
        assert_eq!(serde_json::from_str::<Participant>(&json).unwrap(), p);
        let upper = json
            .to_uppercase()
            .replace("PUBLIC_KEY", "public_key")
            .replace("ID", "id");
        assert_eq!(serde_json::from_str::<Participant>(&upper).unwrap(), p);
        for bad in [
            "\"00\"",
            "\"zz\"",
            &format!("\"{}\"", "g".repeat(64)),
            "[1,2]",
        ] {
            let json = format!(r#"{{"a":1,"b":2,"seed":{bad}}}"#);
            assert!(
                serde_json::from_str::<RevealedSeed>(&json).is_err(),
                "{json}"
            );
        }
        let r = RevealRequest {
            round: 1,
            submitted: vec![1, 2],
            dropped: vec![3],
        };
        let back: RevealRequest =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
