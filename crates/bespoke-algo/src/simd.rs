//! Vector kernels: dot product, `y += a·x`, and a symmetric matrix-vector product.
//!
//! Each kernel has a portable scalar version and, on x86-64 CPUs with AVX2 and FMA (checked at
//! run time, once), an explicit SIMD version. The scalar versions are the reference: tests check
//! that both agree to rounding. This is the only module with `unsafe` in this crate.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether the AVX2 + FMA kernels can run on this CPU.
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `a · b`. The slices must have the same length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { dot_avx2(a, b) };
    }
    dot_scalar(a, b)
}

/// `y += alpha · x`. The slices must have the same length.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        unsafe { axpy_avx2(alpha, x, y) };
        return;
    }
    axpy_scalar(alpha, x, y);
}

/// `out = M · v` for a symmetric `n × n` row-major matrix `M` (`n = v.len()`). Symmetry lets the
/// product be a sum of rows, `Σ_c v[c] · M[c]`, which needs no horizontal additions.
#[inline]
pub fn symv(m: &[f32], v: &[f32], out: &mut [f32]) {
    let n = v.len();
    debug_assert_eq!(m.len(), n * n);
    debug_assert_eq!(out.len(), n);
    out.fill(0.0);
    for (c, &vc) in v.iter().enumerate() {
        axpy(vc, &m[c * n..(c + 1) * n], out);
    }
}

/// The portable twin of [`dot`].
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: the same association as the SIMD version, and vectorisable.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in a[chunks..].iter().zip(&b[chunks..]) {
        s += x * y;
    }
    s
}

/// The portable twin of [`axpy`].
pub fn axpy_scalar(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    // SAFETY (for every load below): `i + 16 <= n` or `i + 8 <= n` bounds each 8-float
    // unaligned load inside both slices.
    while i + 16 <= n {
        unsafe {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
        }
        i += 16;
    }
    if i + 8 <= n {
        unsafe {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
        }
        i += 8;
    }
    let acc = _mm256_add_ps(acc0, acc1);
    let hi = _mm256_extractf128_ps(acc, 1);
    let lo = _mm256_castps256_ps128(acc);
    let s4 = _mm_add_ps(hi, lo);
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    let mut s = _mm_cvtss_f32(s1);
    while i < n {
        // SAFETY: `i < n` is inside both slices.
        unsafe {
            s += *pa.add(i) * *pb.add(i);
        }
        i += 1;
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let a = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n` bounds the 8-float load and store inside both slices, which do
        // not overlap (one is borrowed shared, the other exclusively).
        unsafe {
            let v = _mm256_fmadd_ps(a, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), v);
        }
        i += 8;
    }
    while i < n {
        // SAFETY: `i < n` is inside both slices.
        unsafe {
            *py.add(i) += alpha * *px.add(i);
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f32, b: f32, scale: f32) -> bool {
        (a - b).abs() <= 1e-5 * scale.max(1.0)
    }

    proptest! {
        /// The dispatched kernels (SIMD where available) agree with the scalar twins.
        #[test]
        fn kernels_agree_with_scalar(
            pairs in proptest::collection::vec((-10f32..10.0, -10f32..10.0), 0..200),
            alpha in -3f32..3.0,
        ) {
            let a: Vec<f32> = pairs.iter().map(|p| p.0).collect();
            let b: Vec<f32> = pairs.iter().map(|p| p.1).collect();
            let scale: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            prop_assert!(close(dot(&a, &b), dot_scalar(&a, &b), scale));
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            prop_assert!(close(dot(&a, &b), exact as f32, scale));
            let mut y1 = b.clone();
            let mut y2 = b.clone();
            axpy(alpha, &a, &mut y1);
            axpy_scalar(alpha, &a, &mut y2);
            for (u, v) in y1.iter().zip(&y2) {
                prop_assert!(close(*u, *v, u.abs()));
            }
        }

        #[test]
        fn symv_is_a_matrix_vector_product(n in 1usize..20, seed in 0u64..1000) {
            let mut rng = crate::Rng::seed_from_u64(seed);
            let mut m = vec![0f32; n * n];
            for r in 0..n {
                for c in 0..=r {
                    let x = rng.f64() as f32 - 0.5;
                    m[r * n + c] = x;
                    m[c * n + r] = x;
                }
            }
            let v: Vec<f32> = (0..n).map(|_| rng.f64() as f32).collect();
            let mut out = vec![0f32; n];
            symv(&m, &v, &mut out);
            for r in 0..n {
                let want: f32 = (0..n).map(|c| m[r * n + c] * v[c]).sum();
                prop_assert!(close(out[r], want, n as f32));
            }
        }
    }
}
