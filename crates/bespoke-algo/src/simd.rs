//! Vector kernels: dot product, `y += a·x`, and a symmetric matrix-vector product.
//!
//! Each kernel has a portable scalar version ([`Scalar`]) and, on x86-64 CPUs with AVX2 and FMA,
//! an explicit SIMD version ([`Avx2`]). Hot loops are written once, generic over [`Simd`], and
//! run through [`dispatch`], which compiles them with AVX2 enabled when the CPU has it (checked
//! at run time) so that the kernels inline into the loop. The scalar versions are the reference:
//! tests check that both agree to rounding. This is the only module with `unsafe` in this crate.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The kernels hot loops are written against.
pub trait Simd: Copy + Send + Sync {
    /// `a · b`; the slices have the same length.
    fn dot(self, a: &[f32], b: &[f32]) -> f32;
    /// `y += alpha · x`; the slices have the same length.
    fn axpy(self, alpha: f32, x: &[f32], y: &mut [f32]);
    /// Hints the CPU to bring `v` into cache: the rows a sparse loop will read a few steps
    /// later. A no-op where unsupported.
    #[inline(always)]
    fn prefetch(self, v: &[f32]) {
        let _ = v;
    }
    /// `out = M · v` for a symmetric `n × n` row-major `M` (`n = v.len()`), as a sum of rows
    /// `Σ_c v[c] · M[c]`, which needs no horizontal additions.
    #[inline(always)]
    fn symv(self, m: &[f32], v: &[f32], out: &mut [f32]) {
        let n = v.len();
        out.fill(0.0);
        for (c, &vc) in v.iter().enumerate() {
            self.axpy(vc, &m[c * n..(c + 1) * n], out);
        }
    }
    /// `Σ_k q[k] · x[k]` in exact integer arithmetic; the slices have the same length, a
    /// multiple of 16.
    #[inline(always)]
    fn dot_i8_i16(self, q: &[i8], x: &[i16]) -> i32 {
        dot_i8_i16_scalar(q, x)
    }
    /// The integer dot products of `x` with 8 consecutive rows of `q` (each `x.len()` long, a
    /// multiple of 16): one horizontal reduction for 8 rows instead of 8.
    #[inline(always)]
    fn dot8_i8_i16(self, q: &[i8], x: &[i16]) -> [i32; 8] {
        let n = x.len();
        std::array::from_fn(|r| self.dot_i8_i16(&q[r * n..(r + 1) * n], x))
    }
    /// `g += Σ_r y_r y_rᵀ` over the `n`-wide rows of `rows` (`g` is `n × n`, row-major).
    #[inline(always)]
    fn gram_add(self, rows: &[f32], n: usize, g: &mut [f32]) {
        for y in rows.chunks_exact(n) {
            for (c, &yc) in y.iter().enumerate() {
                if yc != 0.0 {
                    self.axpy(yc, y, &mut g[c * n..(c + 1) * n]);
                }
            }
        }
    }
}

/// Portable kernels.
#[derive(Debug, Clone, Copy)]
pub struct Scalar;

impl Simd for Scalar {
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        dot_scalar(a, b)
    }

    #[inline(always)]
    fn axpy(self, alpha: f32, x: &[f32], y: &mut [f32]) {
        axpy_scalar(alpha, x, y)
    }
}

/// AVX2 + FMA kernels. A value exists only on a CPU that has both (see [`Avx2::detect`]), which
/// is what makes calling them safe.
#[derive(Debug, Clone, Copy)]
pub struct Avx2(());

impl Avx2 {
    /// The token, if this CPU supports AVX2 and FMA.
    #[inline]
    pub fn detect() -> Option<Self> {
        has_avx2_fma().then_some(Avx2(()))
    }
}

#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: an `Avx2` value exists only when the CPU supports AVX2 and FMA.
        unsafe { dot_avx2(a, b) }
    }

    #[inline(always)]
    fn axpy(self, alpha: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: an `Avx2` value exists only when the CPU supports AVX2 and FMA.
        unsafe { axpy_avx2(alpha, x, y) }
    }

    #[inline(always)]
    fn symv(self, m: &[f32], v: &[f32], out: &mut [f32]) {
        // SAFETY: an `Avx2` value exists only when the CPU supports AVX2 and FMA.
        unsafe { symv_avx2(m, v, out) }
    }

    #[inline(always)]
    fn gram_add(self, rows: &[f32], n: usize, g: &mut [f32]) {
        // SAFETY: an `Avx2` value exists only when the CPU supports AVX2 and FMA.
        unsafe { gram_add_avx2(rows, n, g) }
    }

    #[inline(always)]
    fn dot_i8_i16(self, q: &[i8], x: &[i16]) -> i32 {
        // SAFETY: an `Avx2` value exists only when the CPU supports AVX2 and FMA.
        unsafe { dot_i8_i16_avx2(q, x) }
    }

    #[inline(always)]
    fn dot8_i8_i16(self, q: &[i8], x: &[i16]) -> [i32; 8] {
        // SAFETY: an `Avx2` value exists only when the CPU supports AVX2 and FMA.
        unsafe { dot8_i8_i16_avx2(q, x) }
    }

    #[inline(always)]
    fn prefetch(self, v: &[f32]) {
        // One hint per 64-byte cache line. The first four lines (a row of up to 64 floats) are
        // hinted without a loop: a hint never faults, so one past a short row is harmless, and
        // `wrapping_add` computes the address without claiming it is in bounds.
        let p = v.as_ptr();
        // SAFETY: prefetching is a hint that never faults and never reads into the program.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(16).cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(32).cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(48).cast::<i8>());
        }
        let mut off = 64;
        while off < v.len() {
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast::<i8>()) };
            off += 16;
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Simd for Avx2 {
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        dot_scalar(a, b)
    }

    fn axpy(self, alpha: f32, x: &[f32], y: &mut [f32]) {
        axpy_scalar(alpha, x, y)
    }
}

/// AVX-512 kernels (F, BW and VNNI) where they pay: the integer screening of [`crate::score`]
/// (`vpdpwssd` multiplies and accumulates 32 pairs per instruction). Everything else runs the
/// AVX2 kernels, so floating-point results do not depend on which of the two a CPU has. (16-lane
/// `f32` dot products were tried for the iALS solver: on this Zen 4 machine the horizontal sum of
/// a 512-bit register costs more than the halved FMA count saves; fit 2.77 s -> 2.97 s.)
#[derive(Debug, Clone, Copy)]
pub struct Avx512(());

impl Avx512 {
    /// The token, if this CPU supports AVX2, FMA, AVX-512 F, BW and VNNI.
    #[inline]
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            (has_avx2_fma()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni"))
            .then_some(Avx512(()))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    fn avx2(self) -> Avx2 {
        Avx2(())
    }
}

impl Simd for Avx512 {
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        self.avx2().dot(a, b)
    }

    #[inline(always)]
    fn axpy(self, alpha: f32, x: &[f32], y: &mut [f32]) {
        self.avx2().axpy(alpha, x, y)
    }

    #[inline(always)]
    fn prefetch(self, v: &[f32]) {
        self.avx2().prefetch(v)
    }

    #[inline(always)]
    fn symv(self, m: &[f32], v: &[f32], out: &mut [f32]) {
        self.avx2().symv(m, v, out)
    }

    #[inline(always)]
    fn gram_add(self, rows: &[f32], n: usize, g: &mut [f32]) {
        self.avx2().gram_add(rows, n, g)
    }

    #[inline(always)]
    fn dot_i8_i16(self, q: &[i8], x: &[i16]) -> i32 {
        self.avx2().dot_i8_i16(q, x)
    }

    #[inline(always)]
    fn dot8_i8_i16(self, q: &[i8], x: &[i16]) -> [i32; 8] {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: an `Avx512` value exists only when the CPU supports AVX-512 F, BW, VNNI.
            unsafe { dot8_i8_i16_vnni(q, x) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.avx2().dot8_i8_i16(q, x)
        }
    }
}

/// A computation written against [`Simd`]. Mark `with_simd` and what its hot loop calls
/// `#[inline(always)]`, so that it is compiled inside [`dispatch`]'s AVX2 context. Write the hot
/// loop as a plain loop: a closure (`iter().map(|x| s.dot(..))`) is compiled on its own, without
/// AVX2, and the kernels called from it are not inlined.
pub trait WithSimd {
    /// What it returns.
    type Output;
    /// Runs with the given kernels.
    fn with_simd<S: Simd>(self, s: S) -> Self::Output;
}

/// Runs `w` with the best kernels this CPU supports.
#[inline]
pub fn dispatch<W: WithSimd>(w: W) -> W::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(token) = Avx512::detect() {
            // SAFETY: the token proves the CPU supports AVX2, FMA and AVX-512 F, BW, VNNI.
            return unsafe { dispatch_avx512(token, w) };
        }
        if let Some(token) = Avx2::detect() {
            // SAFETY: the token proves the CPU supports AVX2 and FMA.
            return unsafe { dispatch_avx2(token, w) };
        }
    }
    w.with_simd(Scalar)
}

/// # Safety
/// The CPU must support AVX2, FMA and AVX-512 F, BW, VNNI (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
unsafe fn dispatch_avx512<W: WithSimd>(token: Avx512, w: W) -> W::Output {
    w.with_simd(token)
}

/// # Safety
/// The CPU must support AVX2 and FMA (the token proves it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dispatch_avx2<W: WithSimd>(token: Avx2, w: W) -> W::Output {
    w.with_simd(token)
}

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

/// `a · b` with the best kernel (one dispatch per call: for code outside hot loops).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    struct Dot<'a>(&'a [f32], &'a [f32]);
    impl WithSimd for Dot<'_> {
        type Output = f32;
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) -> f32 {
            s.dot(self.0, self.1)
        }
    }
    dispatch(Dot(a, b))
}

/// `y += alpha · x` with the best kernel (one dispatch per call).
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    struct Axpy<'a>(f32, &'a [f32], &'a mut [f32]);
    impl WithSimd for Axpy<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) {
            s.axpy(self.0, self.1, self.2)
        }
    }
    dispatch(Axpy(alpha, x, y))
}

/// `out = M · v` for a symmetric row-major `M` with the best kernel (one dispatch per call).
#[inline]
pub fn symv(m: &[f32], v: &[f32], out: &mut [f32]) {
    debug_assert_eq!(m.len(), v.len() * v.len());
    debug_assert_eq!(out.len(), v.len());
    struct Symv<'a>(&'a [f32], &'a [f32], &'a mut [f32]);
    impl WithSimd for Symv<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) {
            s.symv(self.0, self.1, self.2)
        }
    }
    dispatch(Symv(m, v, out))
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

/// The portable twin of [`Simd::dot_i8_i16`].
pub fn dot_i8_i16_scalar(q: &[i8], x: &[i16]) -> i32 {
    q.iter().zip(x).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// The portable twin of [`axpy`].
pub fn axpy_scalar(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // SAFETY: the caller guarantees AVX2 and FMA; every 8-float load is bounded by `n`, the
    // length of the shorter slice (`i + 16 <= n` or `i + 8 <= n` is checked before it).
    unsafe {
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let acc = _mm256_add_ps(acc0, acc1);
        let s4 = _mm_add_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let mut s = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    // SAFETY: the caller guarantees AVX2 and FMA; every 8-float load and store is bounded by
    // `n`; `x` and `y` cannot overlap (one is borrowed shared, the other exclusively).
    unsafe {
        let a = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_fmadd_ps(a, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), v);
            i += 8;
        }
        while i < n {
            *py.add(i) += alpha * *px.add(i);
            i += 1;
        }
    }
}

/// `out = M v` with the output kept in registers, 32 columns at a time: per column block, one
/// broadcast and four FMAs per row of `M`, and no stores until the block is done.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn symv_avx2(m: &[f32], v: &[f32], out: &mut [f32]) {
    let n = v.len();
    assert!(m.len() >= n * n && out.len() >= n, "symv: sizes");
    let pm = m.as_ptr();
    let po = out.as_mut_ptr();
    let mut b = 0;
    // SAFETY: the caller guarantees AVX2 and FMA; `b + 32 <= n` (or `b + 8 <= n`) and `c < n`
    // bound every load of row `c` of `M` (`c * n + b + 32 <= n * n`) and every store to `out`.
    unsafe {
        while b + 32 <= n {
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            for (c, &vc) in v.iter().enumerate() {
                let x = _mm256_set1_ps(vc);
                let row = pm.add(c * n + b);
                a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(row), a0);
                a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(row.add(8)), a1);
                a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(row.add(16)), a2);
                a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(row.add(24)), a3);
            }
            _mm256_storeu_ps(po.add(b), a0);
            _mm256_storeu_ps(po.add(b + 8), a1);
            _mm256_storeu_ps(po.add(b + 16), a2);
            _mm256_storeu_ps(po.add(b + 24), a3);
            b += 32;
        }
        while b + 8 <= n {
            let mut a0 = _mm256_setzero_ps();
            for (c, &vc) in v.iter().enumerate() {
                a0 = _mm256_fmadd_ps(_mm256_set1_ps(vc), _mm256_loadu_ps(pm.add(c * n + b)), a0);
            }
            _mm256_storeu_ps(po.add(b), a0);
            b += 8;
        }
    }
    for (r, o) in out.iter_mut().enumerate().take(n).skip(b) {
        *o = v.iter().enumerate().map(|(c, &vc)| vc * m[c * n + r]).sum();
    }
}

/// Integer dot product, 16 lanes at a time: sign-extend 16 `i8` to `i16`, multiply with 16
/// `i16` and add adjacent pairs into `i32` (`vpmaddwd`). Exact: with `|q| ≤ 127` and
/// `|x| ≤ 32767` a product pair is below 2^23, so `i32` lanes do not overflow below 256 lanes
/// of 16 (4096 dimensions).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_i8_i16_avx2(q: &[i8], x: &[i16]) -> i32 {
    let n = q.len().min(x.len()) / 16 * 16;
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    // SAFETY: the caller guarantees AVX2; `i + 16 <= n` bounds the 16-byte load of `q` and the
    // 32-byte load of `x`.
    unsafe {
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i + 16 <= n {
            let qv = _mm256_cvtepi8_epi16(_mm_loadu_si128(pq.add(i).cast()));
            let xv = _mm256_loadu_si256(px.add(i).cast());
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(qv, xv));
            i += 16;
        }
        let s4 = _mm_add_epi32(
            _mm256_extracti128_si256(acc, 1),
            _mm256_castsi256_si128(acc),
        );
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
        let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b00_00_00_01));
        _mm_cvtsi128_si32(s1)
    }
}

/// Eight integer dot products at once; the eight accumulators are reduced together by a tree of
/// horizontal additions, which leaves lane `r` holding row `r`'s sum.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot8_i8_i16_avx2(q: &[i8], x: &[i16]) -> [i32; 8] {
    let n = x.len() / 16 * 16;
    assert!(q.len() >= 8 * x.len(), "dot8: sizes");
    let stride = x.len();
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    // SAFETY: the caller guarantees AVX2; `r < 8` and `i + 16 <= n <= stride` bound each 16-byte
    // load at `r * stride + i` inside `q` (checked above) and each load of `x`.
    unsafe {
        let mut acc = [_mm256_setzero_si256(); 8];
        let mut i = 0;
        while i + 16 <= n {
            let xv = _mm256_loadu_si256(px.add(i).cast());
            for (r, a) in acc.iter_mut().enumerate() {
                let qv = _mm256_cvtepi8_epi16(_mm_loadu_si128(pq.add(r * stride + i).cast()));
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(qv, xv));
            }
            i += 16;
        }
        // hadd pairs rows: after three levels each 128-bit half holds 4 row sums.
        let h01 = _mm256_hadd_epi32(acc[0], acc[1]);
        let h23 = _mm256_hadd_epi32(acc[2], acc[3]);
        let h45 = _mm256_hadd_epi32(acc[4], acc[5]);
        let h67 = _mm256_hadd_epi32(acc[6], acc[7]);
        let h0123 = _mm256_hadd_epi32(h01, h23);
        let h4567 = _mm256_hadd_epi32(h45, h67);
        // Lanes: h0123 = [r0 r1 r2 r3 | r0 r1 r2 r3] (low and high halves of the rows).
        let lo = _mm256_permute2x128_si256(h0123, h4567, 0x20);
        let hi = _mm256_permute2x128_si256(h0123, h4567, 0x31);
        let sums = _mm256_add_epi32(lo, hi);
        let mut out = [0i32; 8];
        _mm256_storeu_si256(out.as_mut_ptr().cast(), sums);
        out
    }
}

/// Eight integer dot products with AVX-512 VNNI: 32 dimensions per step, each row's 512-bit
/// accumulator folded to 256 bits and the eight reduced together as in the AVX2 version.
///
/// # Safety
/// The CPU must support AVX2, AVX-512 F, BW and VNNI.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot8_i8_i16_vnni(q: &[i8], x: &[i16]) -> [i32; 8] {
    let stride = x.len();
    let n = stride / 16 * 16;
    assert!(q.len() >= 8 * stride, "dot8: sizes");
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    // SAFETY: the caller guarantees the features; `i + 32 <= n` (or `i + 16 <= n`) and
    // `r < 8` bound every load inside `x` and inside `q` (checked above).
    unsafe {
        let mut acc = [_mm512_setzero_si512(); 8];
        let mut i = 0;
        while i + 32 <= n {
            let xv = _mm512_loadu_si512(px.add(i).cast());
            for (r, a) in acc.iter_mut().enumerate() {
                let qv = _mm512_cvtepi8_epi16(_mm256_loadu_si256(pq.add(r * stride + i).cast()));
                *a = _mm512_dpwssd_epi32(*a, qv, xv);
            }
            i += 32;
        }
        let mut half = [_mm256_setzero_si256(); 8];
        for (h, a) in half.iter_mut().zip(&acc) {
            *h = _mm256_add_epi32(_mm512_castsi512_si256(*a), _mm512_extracti64x4_epi64(*a, 1));
        }
        if i + 16 <= n {
            let xv = _mm256_loadu_si256(px.add(i).cast());
            for (r, h) in half.iter_mut().enumerate() {
                let qv = _mm256_cvtepi8_epi16(_mm_loadu_si128(pq.add(r * stride + i).cast()));
                *h = _mm256_add_epi32(*h, _mm256_madd_epi16(qv, xv));
            }
        }
        let h01 = _mm256_hadd_epi32(half[0], half[1]);
        let h23 = _mm256_hadd_epi32(half[2], half[3]);
        let h45 = _mm256_hadd_epi32(half[4], half[5]);
        let h67 = _mm256_hadd_epi32(half[6], half[7]);
        let h0123 = _mm256_hadd_epi32(h01, h23);
        let h4567 = _mm256_hadd_epi32(h45, h67);
        let lo = _mm256_permute2x128_si256(h0123, h4567, 0x20);
        let hi = _mm256_permute2x128_si256(h0123, h4567, 0x31);
        let mut out = [0i32; 8];
        _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm256_add_epi32(lo, hi));
        out
    }
}

/// `g += Σ_r y_r y_rᵀ`, one output row and 32 columns at a time with the accumulators in
/// registers while the rows stream past; only blocks on or above the diagonal are computed, the
/// rest mirrored.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn gram_add_avx2(rows: &[f32], n: usize, g: &mut [f32]) {
    assert!(g.len() >= n * n, "gram: sizes");
    if !n.is_multiple_of(8) {
        // Uncommon dimensions take the portable path.
        return Scalar.gram_add(rows, n, g);
    }
    let count = rows.len() / n;
    let py = rows.as_ptr();
    let mut upper = vec![0f32; n * n];
    let pu = upper.as_mut_ptr();
    // SAFETY: the caller guarantees AVX2 and FMA; `r < count`, `c < n` and `b + 8·k <= n`
    // bound every load in `rows` (`r * n + b + 8·k <= count * n`) and every store in `upper`.
    unsafe {
        for c in 0..n {
            // Column blocks that reach the diagonal or beyond: 32 columns (four registers) at a
            // time, written out without an inner loop so that the accumulators stay in
            // registers, then one 8-column block at a time.
            let mut b = c / 8 * 8;
            while b + 32 <= n {
                let (mut a0, mut a1, mut a2, mut a3) = (
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                );
                for r in 0..count {
                    let row = py.add(r * n);
                    let x = _mm256_set1_ps(*row.add(c));
                    let block = row.add(b);
                    a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(block), a0);
                    a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(block.add(8)), a1);
                    a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(block.add(16)), a2);
                    a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(block.add(24)), a3);
                }
                let out = pu.add(c * n + b);
                _mm256_storeu_ps(out, a0);
                _mm256_storeu_ps(out.add(8), a1);
                _mm256_storeu_ps(out.add(16), a2);
                _mm256_storeu_ps(out.add(24), a3);
                b += 32;
            }
            while b < n {
                let mut a0 = _mm256_setzero_ps();
                for r in 0..count {
                    let row = py.add(r * n);
                    a0 = _mm256_fmadd_ps(
                        _mm256_set1_ps(*row.add(c)),
                        _mm256_loadu_ps(row.add(b)),
                        a0,
                    );
                }
                _mm256_storeu_ps(pu.add(c * n + b), a0);
                b += 8;
            }
        }
    }
    for c in 0..n {
        for b in 0..n {
            let v = if b >= c / 8 * 8 {
                upper[c * n + b]
            } else {
                upper[b * n + c]
            };
            g[c * n + b] += v;
        }
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
        fn integer_dot_is_exact(pairs in proptest::collection::vec((any::<i8>(), any::<i16>()), 0..20)) {
            let n = pairs.len() * 16;
            let q: Vec<i8> = pairs.iter().flat_map(|p| std::iter::repeat_n(p.0, 16)).collect();
            let x: Vec<i16> = pairs.iter().flat_map(|p| std::iter::repeat_n(p.1, 16)).collect();
            let want: i64 = q.iter().zip(&x).map(|(&a, &b)| a as i64 * b as i64).sum();
            prop_assert_eq!(dot_i8_i16_scalar(&q, &x) as i64, want);
            if let Some(t) = Avx2::detect() {
                prop_assert_eq!(t.dot_i8_i16(&q[..n], &x[..n]) as i64, want);
                // Eight rows: row r is the vector shifted by r copies of x's first lane.
                if n > 0 {
                    let rows: Vec<i8> = (0..8).flat_map(|r| q.iter().map(move |&v| v.wrapping_add(r as i8))).collect();
                    let got = t.dot8_i8_i16(&rows, &x);
                    let scalar = Scalar.dot8_i8_i16(&rows, &x);
                    prop_assert_eq!(got, scalar);
                    if let Some(v) = Avx512::detect() {
                        prop_assert_eq!(v.dot8_i8_i16(&rows, &x), scalar);
                    }
                }
            }
        }

        #[test]
        fn symv_is_a_matrix_vector_product(n in prop_oneof![1usize..20, Just(32usize), Just(48usize), Just(64usize), Just(72usize)], seed in 0u64..1000) {
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
            let mut scalar = vec![0f32; n];
            Scalar.symv(&m, &v, &mut scalar);
            let mut g1 = vec![0f32; n * n];
            let mut g2 = vec![0f32; n * n];
            let rows: Vec<f32> = (0..n * 37).map(|_| rng.f64() as f32 - 0.3).collect();
            if let Some(t) = Avx2::detect() {
                t.gram_add(&rows, n, &mut g1);
            } else {
                Scalar.gram_add(&rows, n, &mut g1);
            }
            Scalar.gram_add(&rows, n, &mut g2);
            for (a, b) in g1.iter().zip(&g2) {
                prop_assert!(close(*a, *b, 37.0));
            }
            for (a, b) in out.iter().zip(&scalar) {
                prop_assert!(close(*a, *b, n as f32));
            }
            for r in 0..n {
                let want: f32 = (0..n).map(|c| m[r * n + c] * v[c]).sum();
                prop_assert!(close(out[r], want, n as f32));
            }
        }
    }
}
