//! Learned user segments: k-means on user vectors, each segment described by the features
//! (categories, attribute values) most over-represented among its members.
//!
//! [`kmeans`] clusters chosen rows of a [`Factors`] matrix into a [`Clustering`]: k-means++
//! seeding (Arthur and Vassilvitskii, 2007), then Lloyd iterations in parallel over the points.
//! Every sum runs over fixed chunks of points whose partial results are added in chunk order,
//! so a seed gives the same segments on any thread pool. [`Clustering::assign`] places users who
//! arrive later; [`describe`] ranks each segment's features by lift.
//!
//! ```
//! use bespoke_algo::Factors;
//! use bespoke_algo::segment::{describe, kmeans, DescribeParams, KMeansParams};
//!
//! // Two tastes: users 0 and 1 lean on the first factor, users 2 and 3 on the second.
//! let x = Factors::from_vec(4, 2, vec![1.0, 0.1, 3.0, 0.2, 0.1, 1.0, 0.2, 2.0]).unwrap();
//! let p = KMeansParams { k: 2, ..KMeansParams::default() };
//! let c = kmeans(&x, &[0, 1, 2, 3], &p).unwrap();
//! assert_eq!(c.assignment[0], c.assignment[1]);
//! assert_ne!(c.assignment[0], c.assignment[2]);
//! assert_eq!(c.assign(&[5.0, 0.0]), c.assignment[0]);
//!
//! // Feature 7 ("shoes") is bought by the first two users only.
//! let bought: [&[u32]; 4] = [&[7, 1], &[7], &[1], &[]];
//! let dp = DescribeParams { min_members: 1, ..DescribeParams::default() };
//! let segments = describe(&c, 8, |e| bought[e].iter().copied(), &dp).unwrap();
//! assert_eq!(segments[c.assignment[0] as usize][0].feature, 7);
//! ```

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Factors;
use crate::Rng;
use crate::simd::{self, Simd, WithSimd};

/// Points per parallel work unit. Fixed, so partial sums are added in the same order whatever
/// the number of threads.
const CHUNK: usize = 1024;

/// Why [`kmeans`], [`Clustering::try_assign`] or [`describe`] refused their input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// `k` was 0.
    #[error("k must be at least 1")]
    NoClusters,
    /// More segments asked for than rows given.
    #[error("cannot make {k} segments from {rows} rows")]
    TooFewRows {
        /// Segments asked for.
        k: usize,
        /// Rows given.
        rows: usize,
    },
    /// Fewer distinct vectors than segments: some segment would have to repeat another.
    #[error("cannot make {k} segments from {distinct} distinct vectors")]
    TooFewDistinct {
        /// Segments asked for.
        k: usize,
        /// Distinct vectors among the rows (after normalisation, if asked for).
        distinct: usize,
    },
    /// A row index past the end of the matrix.
    #[error("row {row} is out of range for a matrix of {rows} rows")]
    RowOutOfRange {
        /// The index given.
        row: usize,
        /// Rows in the matrix.
        rows: usize,
    },
    /// The vectors have no dimensions, so there is nothing to cluster on.
    #[error("vectors have no dimensions")]
    ZeroDimension,
    /// A row holds NaN or an infinity.
    #[error("row {row} has a non-finite value")]
    NonFinite {
        /// The row of the matrix (not the entry of `rows`).
        row: usize,
    },
    /// A vector to assign holds NaN or an infinity.
    #[error("vector has a non-finite value")]
    NonFiniteVector,
    /// A vector to assign whose length is not the centroids' dimension, e.g. from a model
    /// retrained with another dimension since the segments were learned.
    #[error("vector has dimension {got}, expected {expected}")]
    DimensionMismatch {
        /// The centroids' dimension.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// A feature id at or past `n_features`.
    #[error("feature {feature} is out of range for {n_features} features")]
    FeatureOutOfRange {
        /// The id given.
        feature: u32,
        /// The number of features declared.
        n_features: usize,
    },
}

/// Parameters of [`kmeans`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KMeansParams {
    /// Number of segments (default 8).
    pub k: usize,
    /// Most Lloyd iterations (centroid updates) to run (default 50).
    pub iterations: usize,
    /// Seed of the k-means++ draws (default 0); the same seed gives the same segments.
    pub seed: u64,
    /// Stop once an iteration lowers the inertia by at most this fraction of it (default 1e-4).
    /// At 0, stop only when the inertia stops falling.
    pub tolerance: f64,
    /// Scale every vector to unit length first (default true), which makes squared distance
    /// `2 - 2 cos`. The norm of a user vector tracks how much the user did, so without this the
    /// segments split heavy from light users; with it they split tastes. Zero vectors (users
    /// with no signal) stay at the origin.
    pub normalize: bool,
}

impl Default for KMeansParams {
    fn default() -> Self {
        Self {
            k: 8,
            iterations: 50,
            seed: 0,
            tolerance: 1e-4,
            normalize: true,
        }
    }
}

/// Segments learned by [`kmeans`].
#[derive(Debug, Clone, PartialEq)]
pub struct Clustering {
    /// One row per segment: the mean of its members (of their unit vectors when
    /// [`Clustering::normalized`]; the means themselves are not rescaled, so the inertia is a
    /// plain sum of squares and Lloyd's iterations never raise it).
    pub centroids: Factors,
    /// Segment of each entry of the `rows` given to [`kmeans`], in that order.
    pub assignment: Vec<u32>,
    /// Members per segment. A segment is empty only when the iteration cap stopped the run
    /// right after it lost its last member; every other empty segment is re-seeded.
    pub sizes: Vec<usize>,
    /// Sum of squared distances from each point to its centroid (in unit-vector space when
    /// normalized).
    pub inertia: f64,
    /// Lloyd iterations (centroid updates) run.
    pub iterations: usize,
    /// Inertia after seeding, then after each iteration: `iterations + 1` values, the last
    /// equal to [`Clustering::inertia`].
    pub history: Vec<f64>,
    /// Whether vectors are scaled to unit length before use ([`KMeansParams::normalize`]).
    pub normalized: bool,
}

impl Clustering {
    /// The segment of a vector not in the training rows (a user added later): the nearest
    /// centroid, after the same normalisation. A training row gets its own assignment back.
    ///
    /// # Panics
    /// If `x` has the wrong length or a non-finite value; [`Clustering::try_assign`] returns
    /// an error instead.
    pub fn assign(&self, x: &[f32]) -> u32 {
        match self.try_assign(x) {
            Ok(c) => c,
            Err(e) => panic!("cannot assign a segment: {e}"),
        }
    }

    /// [`Clustering::assign`], with an error for a vector of the wrong length or with a
    /// non-finite value.
    pub fn try_assign(&self, x: &[f32]) -> Result<u32, SegmentError> {
        let d = self.centroids.dim();
        if x.len() != d {
            return Err(SegmentError::DimensionMismatch {
                expected: d,
                got: x.len(),
            });
        }
        if !x.iter().all(|v| v.is_finite()) {
            return Err(SegmentError::NonFiniteVector);
        }
        let mut unit = vec![0f32; d];
        prepare(x, self.normalized, &mut unit);
        let centroids = self.centroids.as_slice();
        let norms = centroid_norms(centroids, d);
        struct One<'a> {
            x: &'a [f32],
            centroids: &'a [f32],
            norms: &'a [f32],
        }
        impl WithSimd for One<'_> {
            type Output = usize;
            #[inline(always)]
            fn with_simd<S: Simd>(self, s: S) -> usize {
                nearest(s, self.x, self.centroids, self.norms)
            }
        }
        let c = simd::dispatch(One {
            x: &unit,
            centroids,
            norms: &norms,
        });
        Ok(c as u32)
    }
}

/// Clusters the rows `rows` of `x` (an entry per row taking part; a row may appear twice) into
/// `p.k` segments.
///
/// Seeding is k-means++: the first centroid is a uniformly drawn point, each next one a point
/// drawn with probability proportional to its squared distance to the nearest centroid so far,
/// so a point identical to a chosen one is never chosen again. Lloyd iterations follow until
/// the inertia falls by at most `p.tolerance` of itself (while no segment is empty) or
/// `p.iterations` have run. A segment left empty is re-seeded at the point farthest from its
/// centroid (farthest-first when several are empty, so no two take the same point).
///
/// The result depends on `x`, `rows` and `p` only, not on the thread pool.
pub fn kmeans(x: &Factors, rows: &[usize], p: &KMeansParams) -> Result<Clustering, SegmentError> {
    let (k, d, n) = (p.k, x.dim(), rows.len());
    if k == 0 {
        return Err(SegmentError::NoClusters);
    }
    if d == 0 {
        return Err(SegmentError::ZeroDimension);
    }
    if let Some(&row) = rows.iter().find(|&&r| r >= x.rows()) {
        return Err(SegmentError::RowOutOfRange {
            row,
            rows: x.rows(),
        });
    }
    if k > n {
        return Err(SegmentError::TooFewRows { k, rows: n });
    }
    let mut points = vec![0f32; n * d];
    for (dst, &row) in points.chunks_exact_mut(d).zip(rows) {
        let src = x.row(row);
        if !src.iter().all(|v| v.is_finite()) {
            return Err(SegmentError::NonFinite { row });
        }
        prepare(src, p.normalize, dst);
    }

    let mut rng = Rng::seed_from_u64(p.seed);
    let mut centroids = Vec::with_capacity(k * d);
    for i in plus_plus(&points, d, k, &mut rng)? {
        centroids.extend_from_slice(&points[i * d..(i + 1) * d]);
    }

    let mut assignment = vec![0u32; n];
    let mut dist = vec![0f64; n];
    let mut pass = assign_pass(&points, d, &centroids, &mut assignment, &mut dist);
    let mut history = vec![pass.inertia];
    let mut iterations = 0;
    while iterations < p.iterations {
        update(&points, d, &mut centroids, &pass, &mut dist);
        iterations += 1;
        let next = assign_pass(&points, d, &centroids, &mut assignment, &mut dist);
        history.push(next.inertia);
        // An empty segment would be re-seeded by the next update, so it is not a stable end.
        let converged = pass.inertia - next.inertia <= p.tolerance * pass.inertia
            && next.counts.iter().all(|&c| c > 0);
        pass = next;
        if converged {
            break;
        }
    }

    Ok(Clustering {
        centroids: Factors::from_vec(k, d, centroids).expect("k centroids of d values each"),
        assignment,
        sizes: pass.counts,
        inertia: pass.inertia,
        iterations,
        history,
        normalized: p.normalize,
    })
}

/// Parameters of [`describe`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DescribeParams {
    /// Features kept per segment, best first (default 10).
    pub top: usize,
    /// Least share of a segment's members that must have a feature for it to describe the
    /// segment (default 0.05).
    pub min_share: f64,
    /// Least number of members that must have it (default 3). Both minimums apply: the share
    /// guards large segments against rare features, the count guards small ones against chance.
    pub min_members: usize,
}

impl Default for DescribeParams {
    fn default() -> Self {
        Self {
            top: 10,
            min_share: 0.05,
            min_members: 3,
        }
    }
}

/// How much more common a feature is in one segment than among all clustered users.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeatureLift {
    /// The feature's id, as the caller mapped it.
    pub feature: u32,
    /// Members of the segment that have it.
    pub members: usize,
    /// `members` over the segment's size, in `(0, 1]`.
    pub share: f64,
    /// `share` over the share of all clustered users that have it; above 1.
    pub lift: f64,
}

/// Describes each segment of `clustering` by its most over-represented features.
///
/// `features(e)` gives the feature ids of entry `e` of the rows clustered (the index into
/// [`Clustering::assignment`]): categories of items the user interacted with, attribute values,
/// anything the caller maps to dense ids below `n_features`. A feature listed twice for one
/// entry counts once: the question is how many members have it. Entries are visited once each,
/// in order.
///
/// For each segment, in segment order, the features whose lift (share in the segment over
/// share among all clustered users) is above 1 and that at least
/// `max(ceil(min_share · size), min_members)` members have, ranked by lift, then share, then
/// id, and cut to `top`. An empty segment, or one too small for the minimums, gets none.
///
/// # Panics
/// If an assignment is not below the number of centroids, which [`kmeans`] never produces.
pub fn describe<I>(
    clustering: &Clustering,
    n_features: usize,
    mut features: impl FnMut(usize) -> I,
    p: &DescribeParams,
) -> Result<Vec<Vec<FeatureLift>>, SegmentError>
where
    I: IntoIterator<Item = u32>,
{
    let k = clustering.centroids.rows();
    let n = clustering.assignment.len();
    let mut sizes = vec![0usize; k];
    let mut counts = vec![0usize; k * n_features];
    // The last entry that counted each feature, so that repeats within an entry count once.
    let mut last = vec![usize::MAX; n_features];
    for (e, &c) in clustering.assignment.iter().enumerate() {
        let c = c as usize;
        sizes[c] += 1;
        for feature in features(e) {
            let f = feature as usize;
            if f >= n_features {
                return Err(SegmentError::FeatureOutOfRange {
                    feature,
                    n_features,
                });
            }
            if last[f] != e {
                last[f] = e;
                counts[c * n_features + f] += 1;
            }
        }
    }
    let mut totals = vec![0usize; n_features];
    for seg in counts.chunks_exact(n_features.max(1)).take(k) {
        for (t, &c) in totals.iter_mut().zip(seg) {
            *t += c;
        }
    }

    let mut out = Vec::with_capacity(k);
    for (c, &size) in sizes.iter().enumerate() {
        let need = ((p.min_share * size as f64).ceil() as usize)
            .max(p.min_members)
            .max(1);
        let mut lifts: Vec<FeatureLift> = Vec::new();
        if size > 0 {
            let seg = &counts[c * n_features..(c + 1) * n_features];
            for (f, (&members, &total)) in seg.iter().zip(&totals).enumerate() {
                if members < need {
                    continue;
                }
                let share = members as f64 / size as f64;
                let lift = share / (total as f64 / n as f64);
                if lift > 1.0 {
                    lifts.push(FeatureLift {
                        feature: f as u32,
                        members,
                        share,
                        lift,
                    });
                }
            }
        }
        lifts.sort_by(|a, b| {
            b.lift
                .total_cmp(&a.lift)
                .then(b.share.total_cmp(&a.share))
                .then(a.feature.cmp(&b.feature))
        });
        lifts.truncate(p.top);
        out.push(lifts);
    }
    Ok(out)
}

/// Copies `src` into `dst`, scaled to unit length if `normalize` (the norm in `f64`, so large
/// finite values do not overflow). Training and [`Clustering::assign`] both go through here,
/// so a training row normalises to the same bits either way.
fn prepare(src: &[f32], normalize: bool, dst: &mut [f32]) {
    let norm = if normalize {
        src.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt()
    } else {
        0.0
    };
    if norm > 0.0 {
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = (v as f64 / norm) as f32;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// Squared Euclidean distance in `f64`: exact zero for identical vectors, and accurate enough
/// for the inertia to be compared across iterations.
#[inline]
fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let t = x as f64 - y as f64;
            t * t
        })
        .sum()
}

/// `|c|²` of each centroid, for [`nearest`].
fn centroid_norms(centroids: &[f32], d: usize) -> Vec<f32> {
    centroids.chunks_exact(d).map(|c| simd::dot(c, c)).collect()
}

/// Index of the centroid nearest to `x`, ties to the lowest. Ranks by `|c|² - 2 x·c`, which
/// orders centroids as the squared distance does (`|x|²` is the same for all) at one dot product
/// each.
#[inline(always)]
fn nearest<S: Simd>(s: S, x: &[f32], centroids: &[f32], norms: &[f32]) -> usize {
    let d = x.len();
    let mut best = (0, f32::INFINITY);
    for (c, (cent, &norm)) in centroids.chunks_exact(d).zip(norms).enumerate() {
        let score = norm - 2.0 * s.dot(x, cent);
        if score < best.1 {
            best = (c, score);
        }
    }
    best.0
}

/// Lowers each `dist[i]` to the squared distance from point `i` to `c`. Each entry depends on
/// its own point only, so the parallel loop is deterministic.
fn closer(points: &[f32], d: usize, c: &[f32], dist: &mut [f64]) {
    dist.par_iter_mut()
        .zip(points.par_chunks_exact(d))
        .for_each(|(best, x)| *best = best.min(sq_dist(x, c)));
}

/// k-means++ seeding: the indices of `k` distinct points, or an error if there are fewer than
/// `k` distinct points.
fn plus_plus(
    points: &[f32],
    d: usize,
    k: usize,
    rng: &mut Rng,
) -> Result<Vec<usize>, SegmentError> {
    let n = points.len() / d;
    let mut chosen = vec![rng.below(n as u64) as usize];
    let mut dist = vec![f64::INFINITY; n];
    let mut cumulative = vec![0f64; n];
    while chosen.len() < k {
        let last = chosen[chosen.len() - 1];
        closer(points, d, &points[last * d..(last + 1) * d], &mut dist);
        let mut total = 0.0;
        for (cum, &w) in cumulative.iter_mut().zip(&dist) {
            total += w;
            *cum = total;
        }
        if total <= 0.0 {
            // Every point equals a chosen one, and those are distinct.
            return Err(SegmentError::TooFewDistinct {
                k,
                distinct: chosen.len(),
            });
        }
        // The first index whose cumulative weight exceeds the draw has positive weight itself.
        // `Rng::weighted` would fall back to the last index if rounding made the draw equal
        // the total, and that point may be a duplicate; fall back to the last positive one.
        let x = rng.f64() * total;
        let mut next = cumulative.partition_point(|&c| c <= x);
        if next == n {
            next = dist
                .iter()
                .rposition(|&w| w > 0.0)
                .expect("a positive total has a positive weight");
        }
        chosen.push(next);
    }
    Ok(chosen)
}

/// What one assignment pass learned: the inertia, and each segment's sum of members and count
/// (what the next update needs).
struct Pass {
    inertia: f64,
    sums: Vec<f64>,
    counts: Vec<usize>,
}

impl Pass {
    fn zeros(k: usize, d: usize) -> Self {
        Self {
            inertia: 0.0,
            sums: vec![0.0; k * d],
            counts: vec![0; k],
        }
    }
}

/// Assigns every point to its nearest centroid, writing `assignment` and `dist` (squared
/// distance to that centroid). Chunks are processed in parallel and their partial sums added in
/// chunk order.
fn assign_pass(
    points: &[f32],
    d: usize,
    centroids: &[f32],
    assignment: &mut [u32],
    dist: &mut [f64],
) -> Pass {
    let k = centroids.len() / d;
    let norms = centroid_norms(centroids, d);
    struct Chunk<'a> {
        points: &'a [f32],
        assignment: &'a mut [u32],
        dist: &'a mut [f64],
        centroids: &'a [f32],
        norms: &'a [f32],
        k: usize,
        d: usize,
    }
    impl WithSimd for Chunk<'_> {
        type Output = Pass;
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) -> Pass {
            let d = self.d;
            let mut part = Pass::zeros(self.k, d);
            for ((x, a), dd) in self
                .points
                .chunks_exact(d)
                .zip(self.assignment.iter_mut())
                .zip(self.dist.iter_mut())
            {
                let c = nearest(s, x, self.centroids, self.norms);
                let e = sq_dist(x, &self.centroids[c * d..(c + 1) * d]);
                *a = c as u32;
                *dd = e;
                part.inertia += e;
                part.counts[c] += 1;
                for (sum, &v) in part.sums[c * d..(c + 1) * d].iter_mut().zip(x) {
                    *sum += v as f64;
                }
            }
            part
        }
    }
    let parts: Vec<Pass> = points
        .par_chunks(d * CHUNK)
        .zip(assignment.par_chunks_mut(CHUNK))
        .zip(dist.par_chunks_mut(CHUNK))
        .map(|((points, assignment), dist)| {
            simd::dispatch(Chunk {
                points,
                assignment,
                dist,
                centroids,
                norms: &norms,
                k,
                d,
            })
        })
        .collect();
    let mut total = Pass::zeros(k, d);
    for part in &parts {
        total.inertia += part.inertia;
        for (t, &s) in total.sums.iter_mut().zip(&part.sums) {
            *t += s;
        }
        for (t, &c) in total.counts.iter_mut().zip(&part.counts) {
            *t += c;
        }
    }
    total
}

/// Moves each centroid to the mean of its members, then re-seeds the empty ones at the point
/// farthest from its centroid (`dist`, from the last pass). After each re-seed the distances are
/// lowered to include the new centroid, so a second empty segment takes a different point.
fn update(points: &[f32], d: usize, centroids: &mut [f32], pass: &Pass, dist: &mut [f64]) {
    let mut empty = Vec::new();
    for (c, (cent, sums)) in centroids
        .chunks_exact_mut(d)
        .zip(pass.sums.chunks_exact(d))
        .enumerate()
    {
        let count = pass.counts[c];
        if count == 0 {
            empty.push(c);
            continue;
        }
        for (v, &s) in cent.iter_mut().zip(sums) {
            *v = (s / count as f64) as f32;
        }
    }
    for c in empty {
        let mut far = (0, 0.0);
        for (i, &e) in dist.iter().enumerate() {
            if e > far.1 {
                far = (i, e);
            }
        }
        if far.1 <= 0.0 {
            // Every point sits on a centroid: no point would be better served.
            break;
        }
        let point = &points[far.0 * d..(far.0 + 1) * d];
        centroids[c * d..(c + 1) * d].copy_from_slice(point);
        closer(points, d, point, dist);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    // Ours, not the `rand` trait that proptest's prelude exports under the same name.
    use crate::Rng;

    /// `per` points around each center (interleaved, so labels are not contiguous), with
    /// Gaussian noise of deviation `sigma`; returns the matrix and each row's true label.
    fn blobs(centers: &[Vec<f32>], per: usize, sigma: f64, seed: u64) -> (Factors, Vec<usize>) {
        let d = centers[0].len();
        let mut rng = Rng::seed_from_u64(seed);
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..per {
            for (l, c) in centers.iter().enumerate() {
                data.extend(c.iter().map(|&v| v + (rng.normal() * sigma) as f32));
                labels.push(l);
            }
        }
        (Factors::from_vec(labels.len(), d, data).unwrap(), labels)
    }

    /// Axis-aligned centers `scale · e_l`, `k` of them in `d` dimensions.
    fn axes(k: usize, d: usize, scale: f32) -> Vec<Vec<f32>> {
        (0..k)
            .map(|l| (0..d).map(|j| if j == l { scale } else { 0.0 }).collect())
            .collect()
    }

    /// Whether `found` is `truth` up to a relabelling (a bijection between labels).
    fn same_partition(found: &[u32], truth: &[usize], k: usize) -> bool {
        let mut to = vec![None; k];
        let mut from = vec![None; k];
        for (&f, &t) in found.iter().zip(truth) {
            let f = f as usize;
            match (to[t], from[f]) {
                (None, None) => {
                    to[t] = Some(f);
                    from[f] = Some(t);
                }
                (Some(a), Some(b)) if a == f && b == t => {}
                _ => return false,
            }
        }
        true
    }

    fn all(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    fn random(n: usize, d: usize, seed: u64) -> Factors {
        let mut rng = Rng::seed_from_u64(seed);
        let data = (0..n * d).map(|_| rng.normal() as f32).collect();
        Factors::from_vec(n, d, data).unwrap()
    }

    #[test]
    fn separated_blobs_are_recovered_for_several_seeds() {
        let (x, labels) = blobs(&axes(4, 6, 10.0), 100, 0.5, 1);
        for seed in 0..10 {
            let p = KMeansParams {
                k: 4,
                seed,
                normalize: false,
                ..KMeansParams::default()
            };
            let c = kmeans(&x, &all(x.rows()), &p).unwrap();
            assert!(same_partition(&c.assignment, &labels, 4), "seed {seed}");
            assert_eq!(c.sizes, vec![100; 4]);
        }
    }

    #[test]
    fn normalizing_clusters_directions_whatever_the_norm() {
        // Same four tastes, but each user's vector is scaled by an activity level from 0.5 to
        // 50: raw distances would split by activity, cosine splits by taste.
        let (x, labels) = blobs(&axes(4, 6, 1.0), 100, 0.05, 2);
        let mut rng = Rng::seed_from_u64(3);
        let mut data = x.into_vec();
        for row in data.chunks_exact_mut(6) {
            let activity = 0.5 + 49.5 * rng.f64() as f32;
            row.iter_mut().for_each(|v| *v *= activity);
        }
        let x = Factors::from_vec(labels.len(), 6, data).unwrap();
        for seed in 0..5 {
            let p = KMeansParams {
                k: 4,
                seed,
                ..KMeansParams::default()
            };
            let c = kmeans(&x, &all(x.rows()), &p).unwrap();
            assert!(same_partition(&c.assignment, &labels, 4), "seed {seed}");
        }
    }

    #[test]
    fn same_seed_same_result_on_one_thread_or_many() {
        let x = random(5000, 8, 4);
        // A subset, out of order, spanning several chunks.
        let rows: Vec<usize> = (0..x.rows()).rev().filter(|r| r % 7 != 0).collect();
        for normalize in [false, true] {
            let p = KMeansParams {
                k: 8,
                seed: 9,
                tolerance: 0.0,
                normalize,
                ..KMeansParams::default()
            };
            let many = kmeans(&x, &rows, &p).unwrap();
            assert_eq!(kmeans(&x, &rows, &p).unwrap(), many);
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(|| kmeans(&x, &rows, &p).unwrap());
            assert_eq!(one, many);
            assert!(many.iterations > 1);
        }
    }

    #[test]
    fn plus_plus_never_picks_a_duplicate() {
        // Five distinct vectors, each repeated 20 times.
        let distinct = random(5, 3, 5);
        let mut points = Vec::new();
        for i in 0..100 {
            points.extend_from_slice(distinct.row(i % 5));
        }
        for seed in 0..200 {
            let mut rng = Rng::seed_from_u64(seed);
            let chosen = plus_plus(&points, 3, 5, &mut rng).unwrap();
            let mut kinds: Vec<usize> = chosen.iter().map(|i| i % 5).collect();
            kinds.sort();
            assert_eq!(kinds, vec![0, 1, 2, 3, 4], "seed {seed}");
        }
        let mut rng = Rng::seed_from_u64(0);
        assert_eq!(
            plus_plus(&points, 3, 6, &mut rng),
            Err(SegmentError::TooFewDistinct { k: 6, distinct: 5 })
        );
        let x = Factors::from_vec(100, 3, points).unwrap();
        let p = KMeansParams {
            k: 5,
            normalize: false,
            ..KMeansParams::default()
        };
        let c = kmeans(&x, &all(100), &p).unwrap();
        assert_eq!(c.inertia, 0.0);
        assert_eq!(c.sizes, vec![20; 5]);
    }

    #[test]
    fn inertia_never_rises() {
        let x = random(3000, 6, 6);
        for (seed, normalize) in [(0, false), (1, true), (2, false)] {
            let p = KMeansParams {
                k: 12,
                seed,
                iterations: 100,
                tolerance: 0.0,
                normalize,
            };
            let c = kmeans(&x, &all(x.rows()), &p).unwrap();
            assert_eq!(c.history.len(), c.iterations + 1);
            assert_eq!(*c.history.last().unwrap(), c.inertia);
            assert!(c.iterations > 3, "{}", c.iterations);
            for w in c.history.windows(2) {
                assert!(w[1] <= w[0] * (1.0 + 1e-9), "{:?}", c.history);
            }
            assert!(c.history[c.iterations] < c.history[0]);
        }
    }

    #[test]
    fn tolerance_and_iteration_cap_stop_the_run() {
        let x = random(2000, 4, 7);
        let rows = all(x.rows());
        let capped = KMeansParams {
            k: 10,
            iterations: 2,
            tolerance: 0.0,
            ..KMeansParams::default()
        };
        let c = kmeans(&x, &rows, &capped).unwrap();
        assert_eq!((c.iterations, c.history.len()), (2, 3));
        let loose = KMeansParams {
            tolerance: 0.5,
            iterations: 50,
            ..capped
        };
        assert_eq!(kmeans(&x, &rows, &loose).unwrap().iterations, 1);
        let none = KMeansParams {
            iterations: 0,
            ..capped
        };
        let c = kmeans(&x, &rows, &none).unwrap();
        assert_eq!((c.iterations, c.history.len()), (0, 1));
        assert!(
            c.assignment
                .iter()
                .enumerate()
                .all(|(i, &a)| c.assign(x.row(i)) == a)
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let mut data = vec![1.0f32; 5 * 2];
        let x = Factors::from_vec(5, 2, data.clone()).unwrap();
        let p = |k| KMeansParams {
            k,
            ..KMeansParams::default()
        };
        assert_eq!(kmeans(&x, &all(5), &p(0)), Err(SegmentError::NoClusters));
        assert_eq!(
            kmeans(&x, &[0, 1], &p(3)),
            Err(SegmentError::TooFewRows { k: 3, rows: 2 })
        );
        assert_eq!(
            kmeans(&x, &[0, 5], &p(1)),
            Err(SegmentError::RowOutOfRange { row: 5, rows: 5 })
        );
        assert_eq!(
            kmeans(&x, &all(5), &p(2)),
            Err(SegmentError::TooFewDistinct { k: 2, distinct: 1 })
        );
        let empty = Factors::from_vec(5, 0, Vec::new()).unwrap();
        assert_eq!(
            kmeans(&empty, &all(5), &p(1)),
            Err(SegmentError::ZeroDimension)
        );
        data[3 * 2 + 1] = f32::NAN;
        let bad = Factors::from_vec(5, 2, data).unwrap();
        assert_eq!(
            kmeans(&bad, &all(5), &p(1)),
            Err(SegmentError::NonFinite { row: 3 })
        );
        assert!(kmeans(&bad, &[0, 1, 2, 4], &p(1)).is_ok());

        let c = kmeans(&x, &all(5), &p(1)).unwrap();
        assert_eq!(
            c.try_assign(&[1.0]),
            Err(SegmentError::DimensionMismatch {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            c.try_assign(&[1.0, f32::INFINITY]),
            Err(SegmentError::NonFiniteVector)
        );
        assert_eq!(
            describe(&c, 3, |_| [3u32], &DescribeParams::default()),
            Err(SegmentError::FeatureOutOfRange {
                feature: 3,
                n_features: 3
            })
        );
    }

    #[test]
    fn assign_agrees_with_training() {
        let (x, _) = blobs(&axes(5, 6, 3.0), 200, 1.0, 8);
        let rows: Vec<usize> = (0..x.rows()).step_by(2).collect();
        for normalize in [false, true] {
            let p = KMeansParams {
                k: 5,
                normalize,
                ..KMeansParams::default()
            };
            let c = kmeans(&x, &rows, &p).unwrap();
            for (&row, &a) in rows.iter().zip(&c.assignment) {
                assert_eq!(c.assign(x.row(row)), a);
            }
        }
    }

    /// A clustering built by hand: 8 entries, the first four in segment 0, the rest in 1.
    fn hand_clustering() -> Clustering {
        Clustering {
            centroids: Factors::zeros(2, 1),
            assignment: vec![0, 0, 0, 0, 1, 1, 1, 1],
            sizes: vec![4, 4],
            inertia: 0.0,
            iterations: 0,
            history: vec![0.0],
            normalized: false,
        }
    }

    #[test]
    fn describe_ranks_by_lift_then_share_with_minimum_support() {
        let c = hand_clustering();
        let features: [&[u32]; 8] = [
            &[2, 3, 4, 5, 6, 6], // 6 twice: counted once.
            &[2, 3, 5],
            &[2],
            &[2],
            &[1, 5, 6],
            &[1, 5, 6],
            &[6],
            &[],
        ];
        let p = DescribeParams {
            top: 10,
            min_share: 0.0,
            min_members: 2,
        };
        let got = describe(&c, 8, |e| features[e].iter().copied(), &p).unwrap();
        let lift = |feature, members, share, lift| FeatureLift {
            feature,
            members,
            share,
            lift,
        };
        // Segment 0: feature 2 is in all 4 members and half of everyone (lift 2); feature 3 has
        // the same lift on a smaller share; feature 4's lift is 2 but one member is too few;
        // feature 5 is as common as everywhere (lift 1).
        // Segment 1: feature 1 in half the members, a quarter of everyone (lift 2); feature 6
        // in 3 of 4 against half of everyone (lift 1.5).
        assert_eq!(
            got,
            vec![
                vec![lift(2, 4, 1.0, 2.0), lift(3, 2, 0.5, 2.0)],
                vec![lift(1, 2, 0.5, 2.0), lift(6, 3, 0.75, 1.5)],
            ]
        );

        let top1 = DescribeParams { top: 1, ..p };
        let got = describe(&c, 8, |e| features[e].iter().copied(), &top1).unwrap();
        assert_eq!(
            got,
            vec![vec![lift(2, 4, 1.0, 2.0)], vec![lift(1, 2, 0.5, 2.0)]]
        );

        // A share of 60% needs ceil(2.4) = 3 members.
        let share = DescribeParams {
            min_share: 0.6,
            ..p
        };
        let got = describe(&c, 8, |e| features[e].iter().copied(), &share).unwrap();
        assert_eq!(
            got,
            vec![vec![lift(2, 4, 1.0, 2.0)], vec![lift(6, 3, 0.75, 1.5)]]
        );

        // The defaults need 3 members of a segment of 4; an empty segment gets nothing.
        let mut empty = hand_clustering();
        empty.centroids = Factors::zeros(3, 1);
        empty.sizes.push(0);
        let got = describe(
            &empty,
            8,
            |e| features[e].iter().copied(),
            &DescribeParams::default(),
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                vec![lift(2, 4, 1.0, 2.0)],
                vec![lift(6, 3, 0.75, 1.5)],
                vec![]
            ]
        );
    }

    proptest! {
        #[test]
        fn clustering_invariants(
            n in 1usize..40,
            d in 1usize..4,
            k_frac in 0.0f64..1.0,
            values in proptest::collection::vec(-3i8..=3, 160),
            seed: u64,
            normalize: bool,
        ) {
            // Small integers make duplicates (and zero vectors) common.
            let data = values[..n * d].iter().map(|&v| v as f32).collect();
            let x = Factors::from_vec(n, d, data).unwrap();
            let k = (1 + (k_frac * n as f64) as usize).min(n);
            let p = KMeansParams { k, seed, normalize, ..KMeansParams::default() };
            match kmeans(&x, &all(n), &p) {
                Ok(c) => {
                    prop_assert_eq!(c.sizes.len(), k);
                    prop_assert_eq!(c.sizes.iter().sum::<usize>(), n);
                    prop_assert_eq!(c.assignment.len(), n);
                    prop_assert!(c.assignment.iter().all(|&a| (a as usize) < k));
                    for (s, &size) in c.sizes.iter().enumerate() {
                        prop_assert_eq!(c.assignment.iter().filter(|&&a| a as usize == s).count(), size);
                    }
                    prop_assert_eq!(c.history.len(), c.iterations + 1);
                    prop_assert_eq!(*c.history.last().unwrap(), c.inertia);
                    for w in c.history.windows(2) {
                        // Slack for the f32 ranking of near-tied centroids.
                        prop_assert!(w[1] <= w[0] + 1e-6 * (1.0 + w[0]), "{:?}", c.history);
                    }
                    let mut unit = vec![0f32; d];
                    let mut inertia = 0.0;
                    for (i, &a) in c.assignment.iter().enumerate() {
                        prop_assert_eq!(c.assign(x.row(i)), a);
                        prepare(x.row(i), normalize, &mut unit);
                        inertia += sq_dist(&unit, c.centroids.row(a as usize));
                    }
                    prop_assert!((inertia - c.inertia).abs() <= 1e-9 * (1.0 + inertia));
                }
                Err(SegmentError::TooFewDistinct { k: got, distinct }) => {
                    prop_assert_eq!(got, k);
                    prop_assert!(distinct < k);
                }
                Err(e) => prop_assert!(false, "unexpected error: {}", e),
            }
        }
    }
}
