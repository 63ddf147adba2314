//! Federated training of the item factors: what a device computes in a round, and the step
//! the server takes with the sum of the devices' updates.
//!
//! The model is iALS (`min Σ_u Σ_i c_ui (p_ui − x_uᵀy_i)² + λ(‖x_u‖² + ‖y_i‖²)`). Each round
//! the device rebuilds its user vector `x_u` from its own history with the exact fold-in
//! against the round's item factors (Federated Reconstruction, Singhal et al. 2021): `x_u`
//! is never sent. By the envelope theorem the gradient of the objective in `y_i` is then the
//! sum over users of the per-user terms at that `x_u`, which split into
//! - a part on the items the user touched: `g_ui = (c_ui − 1)(x_uᵀy_i) x_u − c_ui p_ui x_u`,
//! - a part on every item, `(x_u x_uᵀ) y_i`, sent once as the `d×d` matrix `x_u x_uᵀ`,
//! - and, for the step size, the curvature the touched items add, `(c_ui − 1)‖x_u‖²`.
//!
//! An update is the concatenation [`Layout`] describes, dense over all items so that its
//! shape says nothing about what the user touched; it is clipped to an L2 norm `C` before it
//! leaves the device. The server sees only the sum ([`crate::secagg`]) and takes one
//! preconditioned Newton step per item ([`server_step`]): with `A = Σ x xᵀ + λI` and the
//! residual `r_i = A y_i + Σ g_ui`, `y_i ← y_i − η (A + κ s_i I)⁻¹ r_i`, where `s_i` is the
//! summed curvature. With `κ = 1` and every user in the round, `(A + s_i I)` bounds the exact
//! item Hessian of iALS from above (`s_i` is the trace of the touched part, which bounds its
//! largest eigenvalue), so each step decreases the objective; the exact ALS item step would
//! need a `d×d` matrix per item from every device.

use serde::{Deserialize, Serialize};

/// The shape of an update: `items·dim` residual terms, the upper triangle of `x xᵀ`
/// (`dim(dim+1)/2`, row by row), `items` curvature terms, and the clipping weight `w`: the
/// factor (at most 1) clipping scaled the rest by. Summed, the weights tell the server how
/// much data the clipped sum stands for, so that it scales `λ` alike and clipping reweighs
/// users without strengthening the regularization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Items in the round's model.
    pub items: usize,
    /// Factor dimension.
    pub dim: usize,
}

impl Layout {
    /// Length of an update vector.
    pub fn len(&self) -> usize {
        self.items * self.dim + self.dim * (self.dim + 1) / 2 + self.items + 1
    }

    /// Whether the layout holds nothing (no items and no factors).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn gram_offset(&self) -> usize {
        self.items * self.dim
    }

    fn curvature_offset(&self) -> usize {
        self.gram_offset() + self.dim * (self.dim + 1) / 2
    }

    fn weight_offset(&self) -> usize {
        self.curvature_offset() + self.items
    }
}

/// The L2 sensitivity of an update clipped to `clip`: the clipped part plus the weight
/// coordinate, at most 1. The Gaussian noise of differential privacy is `σ` times this.
pub fn sensitivity(clip: f64) -> f64 {
    (clip * clip + 1.0).sqrt()
}

/// `YᵀY + λI` (`dim×dim`, row-major, `f64`) of row-major item factors: what every fold-in
/// of the round starts from. Computed once per round by the device (or shared by a
/// simulation); the bundle carries the same matrix.
pub fn gram_reg(factors: &[f32], dim: usize, regularization: f64) -> Vec<f64> {
    let mut g = vec![0f64; dim * dim];
    for y in factors.chunks_exact(dim) {
        for r in 0..dim {
            let yr = y[r] as f64;
            for k in r..dim {
                g[r * dim + k] += yr * y[k] as f64;
            }
        }
    }
    for r in 0..dim {
        g[r * dim + r] += regularization;
        for k in 0..r {
            g[r * dim + k] = g[k * dim + r];
        }
    }
    g
}

/// The exact iALS user step `x = (YᵀY + λI + Σ (c−1) y yᵀ)⁻¹ Σ_{w>0} c y`, with
/// `c = 1 + α|w|`, over `(row, weight)` pairs; `None` when no weight is non-zero or the
/// system is not positive definite.
pub fn fold_in(
    factors: &[f32],
    gram_reg: &[f64],
    dim: usize,
    alpha: f64,
    weights: &[(u32, f64)],
) -> Option<Vec<f64>> {
    if weights.iter().all(|&(_, w)| w == 0.0) {
        return None;
    }
    let mut a = gram_reg.to_vec();
    let mut b = vec![0f64; dim];
    for &(row, w) in weights {
        if w == 0.0 {
            continue;
        }
        let c = 1.0 + alpha * w.abs();
        let y = &factors[row as usize * dim..][..dim];
        for r in 0..dim {
            let s = (c - 1.0) * y[r] as f64;
            for k in 0..dim {
                a[r * dim + k] += s * y[k] as f64;
            }
        }
        if w > 0.0 {
            for k in 0..dim {
                b[k] += c * y[k] as f64;
            }
        }
    }
    crate::cholesky_solve(&mut a, &mut b, dim).then_some(b)
}

/// A device's update, ready for clipping and masking.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalUpdate {
    /// The update in [`Layout`] order, already clipped.
    pub vector: Vec<f32>,
    /// Its L2 norm before clipping (kept on the device; useful to choose `C`).
    pub norm: f64,
}

/// The device's update for the round from its weighted history (`(row, weight)`, rows of
/// the round's model, as [`crate::History::weights`] gives them), clipped to L2 norm `clip`
/// (`f64::INFINITY`: no clipping; the whole vector's norm is at most [`sensitivity`]).
/// `None` when the history holds nothing the model knows.
pub fn local_update(
    layout: Layout,
    factors: &[f32],
    gram_reg: &[f64],
    alpha: f64,
    weights: &[(u32, f64)],
    clip: f64,
) -> Option<LocalUpdate> {
    let d = layout.dim;
    let x = fold_in(factors, gram_reg, d, alpha, weights)?;
    let mut v = vec![0f32; layout.len()];
    let xx: f64 = x.iter().map(|a| a * a).sum();
    let mut norm2 = 0f64;
    for &(row, w) in weights {
        if w == 0.0 {
            continue;
        }
        let c = 1.0 + alpha * w.abs();
        let p = if w > 0.0 { 1.0 } else { 0.0 };
        let y = &factors[row as usize * d..][..d];
        let xy: f64 = x.iter().zip(y).map(|(a, &b)| a * b as f64).sum();
        let coef = (c - 1.0) * xy - c * p;
        let g = &mut v[row as usize * d..][..d];
        for k in 0..d {
            let val = (coef * x[k]) as f32;
            g[k] = val;
            norm2 += (val as f64) * (val as f64);
        }
        let s = ((c - 1.0) * xx) as f32;
        v[layout.curvature_offset() + row as usize] = s;
        norm2 += (s as f64) * (s as f64);
    }
    let mut at = layout.gram_offset();
    for r in 0..d {
        for k in r..d {
            let val = (x[r] * x[k]) as f32;
            v[at] = val;
            norm2 += (val as f64) * (val as f64);
            at += 1;
        }
    }
    let norm = norm2.sqrt();
    let mut weight = 1f32;
    if norm > clip {
        weight = (clip / norm) as f32;
        v.iter_mut().for_each(|a| *a *= weight);
    }
    v[layout.weight_offset()] = weight;
    Some(LocalUpdate { vector: v, norm })
}

/// Adds Gaussian noise of standard deviation `std` to every value, drawn from the ChaCha20
/// stream of `seed` (Box–Muller): the device's local noise, or the server's central noise on
/// the sum. The seed must come from the OS's generator outside simulations.
pub fn add_noise(values: &mut [f64], std: f64, seed: [u8; 32]) {
    use rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
    // A uniform in (0, 1]: 53 random bits, never 0 so that the logarithm is finite.
    let mut uniform = || ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    for pair in values.chunks_mut(2) {
        let (u1, u2) = (uniform(), uniform());
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let t = std::f64::consts::TAU * u2;
        pair[0] += r * t.cos();
        if let Some(b) = pair.get_mut(1) {
            *b += r * t.sin();
        }
    }
}

/// How the server turns the sum of a round's updates into new item factors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepParams {
    /// `λ` of the item step.
    pub regularization: f64,
    /// Users the model is for (`N`).
    pub population: f64,
    /// Clients whose updates are in the sum (`m`): the sum is scaled by `N/m` to estimate
    /// the sum over all users.
    pub clients: f64,
    /// `κ`, the share of the curvature bound used (1: the safe bound).
    pub curvature: f64,
    /// `η`, the step length (1: the full preconditioned step).
    pub learning_rate: f64,
    /// `μ`, a Levenberg–Marquardt damping added to every item's system: it bounds how far
    /// noise in the sum can move an item in one round (0 without noise).
    pub damping: f64,
    /// Items whose summed curvature is below this keep their factors instead of being
    /// stepped: under differential privacy their sums are mostly noise (a few times the
    /// noise's std is the choice; 0 steps every item).
    pub min_curvature: f64,
}

/// One server step: updates row-major `factors` (`layout.items × layout.dim`) in place from
/// `sum`, the (noised) sum of the round's updates in [`Layout`] order.
pub fn server_step(layout: Layout, factors: &mut [f32], sum: &[f64], p: StepParams) {
    let d = layout.dim;
    if p.clients <= 0.0 {
        return;
    }
    let scale = p.population / p.clients;
    // The clipped data stands for `w̄` of the clients' data: λ shrinks alike (a noised
    // weight sum is kept in [1e-3, 1]).
    let mean_weight = (sum[layout.weight_offset()] / p.clients).clamp(1e-3, 1.0);
    let regularization = p.regularization * mean_weight;
    // A = Σ x xᵀ·scale + λI, symmetric; projected onto the positive semidefinite cone
    // before λ is added, because noise can make the sum indefinite.
    let mut a = vec![0f64; d * d];
    let mut at = layout.gram_offset();
    for r in 0..d {
        for k in r..d {
            a[r * d + k] = sum[at] * scale;
            a[k * d + r] = a[r * d + k];
            at += 1;
        }
    }
    let (mut vals, vecs) = symmetric_eigen(a, d);
    for v in &mut vals {
        *v = v.max(0.0) + regularization;
    }
    // A y_i = V Λ Vᵀ y_i; (A + t I)⁻¹ r = V (Λ + t)⁻¹ Vᵀ r.
    let mut proj = vec![0f64; d];
    let mut r = vec![0f64; d];
    for i in 0..layout.items {
        let y = &mut factors[i * d..][..d];
        let g = &sum[i * d..][..d];
        let raw = sum[layout.curvature_offset() + i];
        if raw < p.min_curvature {
            continue;
        }
        let t = (raw * scale * p.curvature).max(0.0);
        // proj = Vᵀ y (columns of V are eigenvectors: vecs[k*d + j] is component k of vector j).
        for j in 0..d {
            let mut s = 0.0;
            for k in 0..d {
                s += vecs[k * d + j] * y[k] as f64;
            }
            proj[j] = s;
        }
        // r = A y + g·scale = V Λ proj + g·scale.
        for k in 0..d {
            let mut s = g[k] * scale;
            for j in 0..d {
                s += vecs[k * d + j] * vals[j] * proj[j];
            }
            r[k] = s;
        }
        // step = V (Λ + t)⁻¹ Vᵀ r.
        for j in 0..d {
            let mut s = 0.0;
            for k in 0..d {
                s += vecs[k * d + j] * r[k];
            }
            proj[j] = s / (vals[j] + t + p.damping);
        }
        for k in 0..d {
            let mut s = 0.0;
            for j in 0..d {
                s += vecs[k * d + j] * proj[j];
            }
            y[k] = (y[k] as f64 - p.learning_rate * s) as f32;
        }
    }
}

/// Eigenvalues and eigenvectors (columns of the row-major result) of a symmetric `d×d`
/// matrix by cyclic Jacobi rotations: exact to rounding and plenty fast for `d ≤ 256`.
fn symmetric_eigen(mut a: Vec<f64>, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; d * d];
    for k in 0..d {
        v[k * d + k] = 1.0;
    }
    for _sweep in 0..64 {
        let off: f64 = (0..d)
            .flat_map(|r| (0..d).filter(move |&k| k != r).map(move |k| (r, k)))
            .map(|(r, k)| a[r * d + k] * a[r * d + k])
            .sum();
        let diag: f64 = (0..d).map(|k| a[k * d + k] * a[k * d + k]).sum();
        if off <= 1e-30 * diag.max(1e-300) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let akp = a[k * d + p];
                    let akq = a[k * d + q];
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let apk = a[p * d + k];
                    let aqk = a[q * d + k];
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let vkp = v[k * d + p];
                    let vkq = v[k * d + q];
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|k| a[k * d + k]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small implicit-feedback problem: `users` histories over `items` items.
    fn problem(items: usize, users: usize, seed: u64) -> Vec<Vec<(u32, f64)>> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..users)
            .map(|_| {
                let mut h: Vec<(u32, f64)> = (0..1 + next() % 4)
                    .map(|_| ((next() % items as u64) as u32, 1.0 + (next() % 3) as f64))
                    .collect();
                h.sort_by_key(|e| e.0);
                h.dedup_by_key(|e| e.0);
                h
            })
            .collect()
    }

    fn start(items: usize, dim: usize) -> Vec<f32> {
        (0..items * dim)
            .map(|k| ((k * 37 % 11) as f32 - 5.0) * 0.05)
            .collect()
    }

    /// The iALS objective at `Y` with every user's vector at its optimum.
    fn objective(y: &[f32], dim: usize, lambda: f64, alpha: f64, hist: &[Vec<(u32, f64)>]) -> f64 {
        let gram = gram_reg(y, dim, lambda);
        let items = y.len() / dim;
        let mut total: f64 = y.iter().map(|&v| lambda * (v as f64).powi(2)).sum();
        for h in hist {
            let x = fold_in(y, &gram, dim, alpha, h).unwrap();
            total += lambda * x.iter().map(|v| v * v).sum::<f64>();
            for i in 0..items {
                let w = h.iter().find(|e| e.0 as usize == i).map_or(0.0, |e| e.1);
                let (c, p) = (1.0 + alpha * w, if w > 0.0 { 1.0 } else { 0.0 });
                let s: f64 = (0..dim).map(|k| x[k] * y[i * dim + k] as f64).sum();
                total += c * (p - s).powi(2);
            }
        }
        total
    }

    fn summed(
        layout: Layout,
        y: &[f32],
        lambda: f64,
        alpha: f64,
        hist: &[Vec<(u32, f64)>],
        clip: f64,
    ) -> Vec<f64> {
        let gram = gram_reg(y, layout.dim, lambda);
        let mut sum = vec![0f64; layout.len()];
        for h in hist {
            let up = local_update(layout, y, &gram, alpha, h, clip).unwrap();
            for (a, v) in sum.iter_mut().zip(&up.vector) {
                *a += *v as f64;
            }
        }
        sum
    }

    fn exact(users: usize, lambda: f64) -> StepParams {
        StepParams {
            regularization: lambda,
            population: users as f64,
            clients: users as f64,
            curvature: 1.0,
            learning_rate: 1.0,
            damping: 0.0,
            min_curvature: 0.0,
        }
    }

    /// The summed updates are half the gradient of the iALS objective in the item factors
    /// (envelope theorem): checked against central finite differences of the objective.
    #[test]
    fn summed_updates_are_the_objective_gradient() {
        let (items, dim, users, lambda, alpha) = (6, 3, 9, 0.5, 2.0);
        let layout = Layout { items, dim };
        let hist = problem(items, users, 3);
        let y = start(items, dim);
        let sum = summed(layout, &y, lambda, alpha, &hist, f64::INFINITY);
        // A = Σ x xᵀ + λI from the upper triangle.
        let mut a = vec![0f64; dim * dim];
        let mut at = layout.gram_offset();
        for r in 0..dim {
            for k in r..dim {
                a[r * dim + k] = sum[at];
                a[k * dim + r] = sum[at];
                at += 1;
            }
            a[r * dim + r] += lambda;
        }
        assert_eq!(sum[layout.weight_offset()], users as f64);
        for i in 0..items {
            for k in 0..dim {
                let r: f64 = (0..dim)
                    .map(|j| a[k * dim + j] * y[i * dim + j] as f64)
                    .sum::<f64>()
                    + sum[i * dim + k];
                let h = 1e-3f32;
                let (mut up, mut down) = (y.clone(), y.clone());
                up[i * dim + k] += h;
                down[i * dim + k] -= h;
                let fd = (objective(&up, dim, lambda, alpha, &hist)
                    - objective(&down, dim, lambda, alpha, &hist))
                    / (2.0 * h as f64);
                assert!(
                    (2.0 * r - fd).abs() < 2e-3 * (1.0 + fd.abs()),
                    "item {i}, {k}: {} vs {fd}",
                    2.0 * r
                );
            }
        }
    }

    proptest::proptest! {
        /// With every user in the round and no noise, each server step lowers the objective:
        /// the preconditioner bounds the item Hessian from above.
        #[test]
        fn each_exact_round_lowers_the_objective(seed in 0u64..1000, dim in 1usize..5) {
            let (items, users, lambda, alpha) = (8, 12, 0.3, 3.0);
            let layout = Layout { items, dim };
            let hist = problem(items, users, seed);
            let mut y = start(items, dim);
            let mut before = objective(&y, dim, lambda, alpha, &hist);
            for _ in 0..5 {
                let sum = summed(layout, &y, lambda, alpha, &hist, f64::INFINITY);
                server_step(layout, &mut y, &sum, exact(users, lambda));
                let after = objective(&y, dim, lambda, alpha, &hist);
                proptest::prop_assert!(after <= before * (1.0 + 1e-6), "{} -> {}", before, after);
                before = after;
            }
        }

        /// A clipped update's norm (all but the weight) is the clip, and the weight says by
        /// how much it was scaled; the vector is dense over the catalog whatever the history.
        #[test]
        fn clipping_scales_the_whole_update(seed in 0u64..1000, clip in 0.01f64..2.0) {
            let (items, dim) = (10, 4);
            let layout = Layout { items, dim };
            let y = start(items, dim);
            let gram = gram_reg(&y, dim, 0.5);
            let h = &problem(items, 1, seed)[0];
            let free = local_update(layout, &y, &gram, 1.0, h, f64::INFINITY).unwrap();
            let up = local_update(layout, &y, &gram, 1.0, h, clip).unwrap();
            proptest::prop_assert_eq!(up.vector.len(), layout.len());
            proptest::prop_assert_eq!(free.vector[layout.weight_offset()], 1.0);
            let body: f64 = up.vector[..layout.weight_offset()].iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            let w = up.vector[layout.weight_offset()] as f64;
            if free.norm > clip {
                proptest::prop_assert!((body - clip).abs() < 1e-4 * clip.max(1.0), "{} vs {}", body, clip);
                proptest::prop_assert!((w - clip / free.norm).abs() < 1e-6);
            } else {
                proptest::prop_assert_eq!(w, 1.0);
            }
            // Untouched items have zero residual and curvature.
            for i in 0..items as u32 {
                if !h.iter().any(|e| e.0 == i) {
                    proptest::prop_assert!(up.vector[i as usize * dim..][..dim].iter().all(|&v| v == 0.0));
                    proptest::prop_assert_eq!(up.vector[layout.curvature_offset() + i as usize], 0.0);
                }
            }
        }
    }

    /// Without noise, rounds with every user converge to what central iALS converges to:
    /// the exact ALS item step from the same user vectors gives the same factors.
    #[test]
    fn rounds_reach_the_als_fixed_point() {
        let (items, dim, users, lambda, alpha) = (7, 2, 15, 0.4, 2.0);
        let layout = Layout { items, dim };
        let hist = problem(items, users, 11);
        let mut y = start(items, dim);
        for _ in 0..300 {
            let sum = summed(layout, &y, lambda, alpha, &hist, f64::INFINITY);
            server_step(layout, &mut y, &sum, exact(users, lambda));
        }
        let sum = summed(layout, &y, lambda, alpha, &hist, f64::INFINITY);
        let grad: f64 = (0..items * dim).map(|k| sum[k].abs()).sum();
        let mut next = y.clone();
        server_step(layout, &mut next, &sum, exact(users, lambda));
        let moved: f64 = y.iter().zip(&next).map(|(a, b)| (a - b).abs() as f64).sum();
        assert!(
            moved < 1e-4,
            "still moving by {moved} (residual sum {grad})"
        );
    }

    #[test]
    fn noise_has_the_asked_spread_and_follows_the_seed() {
        let mut a = vec![0f64; 100_001];
        add_noise(&mut a, 2.0, [7; 32]);
        let n = a.len() as f64;
        let mean = a.iter().sum::<f64>() / n;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.02, "std {}", var.sqrt());
        let mut b = vec![0f64; 100_001];
        add_noise(&mut b, 2.0, [7; 32]);
        assert_eq!(a, b);
        let mut c = vec![0f64; 100_001];
        add_noise(&mut c, 2.0, [8; 32]);
        assert_ne!(a, c);
    }

    #[test]
    fn eigen_reconstructs_a_symmetric_matrix() {
        let d = 6;
        let mut m = vec![0f64; d * d];
        for r in 0..d {
            for k in r..d {
                let v = ((r * 7 + k * 3) % 5) as f64 - 2.0 + if r == k { 4.0 } else { 0.0 };
                m[r * d + k] = v;
                m[k * d + r] = v;
            }
        }
        let (vals, vecs) = symmetric_eigen(m.clone(), d);
        for r in 0..d {
            for k in 0..d {
                let s: f64 = (0..d)
                    .map(|j| vecs[r * d + j] * vals[j] * vecs[k * d + j])
                    .sum();
                assert!(
                    (s - m[r * d + k]).abs() < 1e-9,
                    "{r},{k}: {s} vs {}",
                    m[r * d + k]
                );
            }
        }
    }
}
