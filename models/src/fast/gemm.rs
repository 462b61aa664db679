//! int8 matrix multiplication for the inference encoder.
//!
//! `y = x · W + b` where `W` (`[k, n]`) is quantised once per output column
//! (symmetric, scale `max|W[:, j]| / 127`) and `x` (`[m, k]`) per row at run
//! time. Products accumulate exactly in i32 and are rescaled to f32.
//!
//! Kernels, chosen once at run time:
//! * AVX-512 VNNI: `vpdpbusd` multiplies unsigned by signed bytes, so rows are
//!   stored as `q + 128` and `128 · colsum(W)` is subtracted afterwards;
//!   4 rows x 64 columns per micro-tile.
//! * AVX2: `vpmaddubsw` with the sign of `x` moved onto `W` (`vpsignb`) and
//!   `|x|` as the unsigned operand; with both in [-127, 127] the i16 pair
//!   sums cannot saturate. 4 rows x 16 columns per micro-tile.
//! * Portable scalar code for everything else (and as the test oracle).

/// Which kernel family runs on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512Vnni,
    Avx2,
    Scalar,
}

impl Isa {
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            if avx2
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                return Isa::Avx512Vnni;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Whether this CPU runs `self`'s code. Every kernel checks this before
    /// trusting an `Isa` it was given (the enum's values can be written by
    /// anyone, so they prove nothing on their own).
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => Isa::detect() != Isa::Scalar,
            Isa::Avx512Vnni => Isa::detect() == Isa::Avx512Vnni,
        }
    }

    /// Columns per packed panel.
    fn panel(self) -> usize {
        match self {
            Isa::Avx512Vnni => 16,
            Isa::Avx2 => 8,
            Isa::Scalar => 1,
        }
    }
}

/// A weight matrix quantised and packed for one [`Isa`].
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub k: usize,
    pub n: usize,
    isa: Isa,
    /// Packed int8 weights (layout depends on `isa`, see [`QMatrix::new`]).
    packed: Vec<i8>,
    /// Per-column dequantisation scale.
    scale: Vec<f32>,
    /// Per-column sum of quantised weights (VNNI offset correction).
    colsum: Vec<i32>,
    bias: Vec<f32>,
}

impl QMatrix {
    /// Quantises `w` given row-major as `[k, n]` (input x output).
    ///
    /// Packing: for a panel width `p` (16 for VNNI, 8 for AVX2), columns are
    /// grouped into panels of `p`; inside a panel, `k` is walked in groups of
    /// 4 and each group stores `p` columns x 4 consecutive `k` values. One
    /// vector load then holds 4 `k` steps of `p` columns. The scalar layout is
    /// plain `[n, k]`.
    pub fn new(w: &[f32], k: usize, n: usize, bias: &[f32], isa: Isa) -> Self {
        assert_eq!(w.len(), k * n, "weight shape");
        assert_eq!(bias.len(), n, "bias shape");
        let p = isa.panel();
        let isa = if isa.available() && k.is_multiple_of(4) && n.is_multiple_of(p.max(16)) {
            isa
        } else {
            Isa::Scalar
        };
        let p = isa.panel();
        let mut scale = vec![0f32; n];
        let mut q = vec![0i8; k * n]; // [n, k]
        let mut colsum = vec![0i32; n];
        for j in 0..n {
            let max = (0..k).map(|i| w[i * n + j].abs()).fold(0f32, f32::max);
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            scale[j] = s;
            for i in 0..k {
                let v = (w[i * n + j] / s).round().clamp(-127.0, 127.0) as i8;
                q[j * k + i] = v;
                colsum[j] += i32::from(v);
            }
        }
        let packed = if isa == Isa::Scalar {
            q
        } else {
            let mut out = Vec::with_capacity(k * n);
            for panel in 0..n / p {
                for g in 0..k / 4 {
                    for c in 0..p {
                        let j = panel * p + c;
                        for t in 0..4 {
                            out.push(q[j * k + g * 4 + t]);
                        }
                    }
                }
            }
            out
        };
        Self {
            k,
            n,
            isa,
            packed,
            scale,
            colsum,
            bias: bias.to_vec(),
        }
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }
}

/// Activations quantised per row for one kernel family.
#[derive(Debug, Default)]
pub struct QRows {
    /// `[m, k]` bytes: `q + 128` for VNNI, `q` (as i8 bits) otherwise.
    data: Vec<u8>,
    scale: Vec<f32>,
    m: usize,
    k: usize,
    isa: Option<Isa>,
}

impl QRows {
    /// Quantises `x` (`[m, k]`, row-major) for `isa`, reusing this buffer.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize, isa: Isa) {
        assert_eq!(x.len(), m * k, "activation shape");
        self.m = m;
        self.k = k;
        self.isa = Some(isa);
        self.data.resize(m * k, 0);
        self.scale.resize(m, 0.0);
        let offset = if isa == Isa::Avx512Vnni { 128 } else { 0 };
        quantize_rows(isa, x, k, offset, &mut self.data, &mut self.scale);
    }
}

super::ops::multiversion! {
    /// Per-row symmetric quantisation to [-127, 127], stored plus `offset`
    /// (128 for VNNI's unsigned operand; 0 keeps the two's-complement byte).
    fn quantize_rows(x: &[f32], k: usize, offset: i32, data: &mut [u8], scale: &mut [f32]) {
        for ((row, out), s) in x.chunks_exact(k).zip(data.chunks_exact_mut(k)).zip(scale.iter_mut()) {
            let max = super::ops::lane_max_abs(row);
            *s = if max > 0.0 { max / 127.0 } else { 1.0 };
            let inv = 1.0 / *s;
            for (d, &v) in out.iter_mut().zip(row) {
                // |v * inv| <= 127 by construction; the magic-number trick
                // rounds to nearest and yields the integer without a
                // saturating float->int conversion, so the loop vectorises.
                let q = super::ops::magic_to_int(v.mul_add(inv, super::ops::MAGIC));
                *d = (q + offset) as u8;
            }
        }
    }
}

/// What to do with each output after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    None,
    Gelu,
}

/// `out[m, n] = x · W + b` (then the epilogue), for columns `[n0, n1)`.
/// `out` is the full `[m, n]` matrix; only the given columns are written.
pub fn matmul_cols(x: &QRows, w: &QMatrix, out: &mut [f32], n0: usize, n1: usize, epi: Epilogue) {
    check_product(x, w, out.len(), n0, n1);
    // SAFETY: the checks above bound every write, and `out` is borrowed
    // exclusively for the call.
    unsafe { matmul_cols_raw(x, w, out.as_mut_ptr(), n0, n1, epi) }
}

/// The bounds every product needs: shapes agree, the rows were quantised for
/// the matrix's kernel, and the column range is inside the matrix and
/// aligned to the kernel's panels.
pub fn check_product(x: &QRows, w: &QMatrix, out_len: usize, n0: usize, n1: usize) {
    assert_eq!(x.k, w.k, "inner dimensions");
    assert_eq!(
        x.isa,
        Some(w.isa),
        "rows must be quantised for the matrix's kernel"
    );
    assert!(
        out_len >= x.m * w.n && n1 <= w.n && n0 <= n1,
        "output shape"
    );
    if let Some(reason) = misalignment(w, n0, n1) {
        panic!("{reason}");
    }
}

/// Why `[n0, n1)` cannot be handed to `w`'s kernel (its SIMD tiles start on
/// panel boundaries), if it cannot.
fn misalignment(w: &QMatrix, n0: usize, n1: usize) -> Option<String> {
    let p = w.isa.panel();
    (!(n0.is_multiple_of(p) && n1.is_multiple_of(p)))
        .then(|| format!("column range {n0}..{n1} is not aligned to {p}-column panels"))
}

/// [`matmul_cols`] writing through a raw pointer, so that two threads can
/// fill disjoint column ranges of one output matrix without aliasing
/// references.
///
/// # Safety
/// [`check_product`] must hold for `out`'s length, `out` must be valid for
/// `x.m * w.n` writes, and no other thread may read or write columns
/// `[n0, n1)` of any row while the call runs.
pub unsafe fn matmul_cols_raw(
    x: &QRows,
    w: &QMatrix,
    out: *mut f32,
    n0: usize,
    n1: usize,
    epi: Epilogue,
) {
    match w.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            // SAFETY: `QMatrix::new` packs for VNNI only when `available()`
            // found avx512f, avx512bw, avx512vnni, avx2 and fma; the caller
            // guarantees the bounds.
            unsafe { vnni::matmul(x, w, out, n0, n1) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: packed for AVX2 only when avx2 and fma were found.
            unsafe { avx2::matmul(x, w, out, n0, n1) }
        }
        // SAFETY: the caller guarantees the bounds and exclusive columns.
        _ => unsafe { scalar(x, w, out, n0, n1) },
    }
    if epi == Epilogue::Gelu {
        for r in 0..x.m {
            // SAFETY: columns [n0, n1) of row r are inside `out` and written
            // by this call only.
            let row = unsafe { std::slice::from_raw_parts_mut(out.add(r * w.n + n0), n1 - n0) };
            super::ops::gelu_in_place(w.isa, row);
        }
    }
}

/// Splits a column range into panel-aligned halves for two threads.
pub fn split_cols(w: &QMatrix) -> usize {
    let p = 64.max(w.isa.panel());
    ((w.n / p) / 2) * p
}

/// # Safety
/// As [`matmul_cols_raw`].
unsafe fn scalar(x: &QRows, w: &QMatrix, out: *mut f32, n0: usize, n1: usize) {
    let (k, n) = (w.k, w.n);
    for r in 0..x.m {
        let row = &x.data[r * k..(r + 1) * k];
        for j in n0..n1 {
            let col = &w.packed[j * k..(j + 1) * k];
            let acc: i32 = row
                .iter()
                .zip(col)
                .map(|(&a, &b)| i32::from(a as i8) * i32::from(b))
                .sum();
            // SAFETY: r < m and j < n, inside `out` (see the caller).
            unsafe {
                out.add(r * n + j)
                    .write(acc as f32 * x.scale[r] * w.scale[j] + w.bias[j])
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{QMatrix, QRows};

    /// Writes one row block of `MR` rows for 64 (or 16) columns starting at `j`.
    // Index loops over the register tile read better than iterator chains here.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const MR: usize, const NV: usize>(
        x: &QRows,
        w: &QMatrix,
        out: *mut f32,
        r0: usize,
        j: usize,
    ) {
        let k = w.k;
        let groups = k / 4;
        let mut acc = [[_mm512_setzero_si512(); NV]; MR];
        // Panels j/16 .. j/16+NV, each `groups * 64` bytes.
        let base = w.packed.as_ptr();
        let panel_bytes = groups * 64;
        let rows: [*const u8; MR] =
            std::array::from_fn(|i| unsafe { x.data.as_ptr().add((r0 + i) * k) });
        for g in 0..groups {
            let mut b = [_mm512_setzero_si512(); NV];
            for (v, bv) in b.iter_mut().enumerate() {
                // SAFETY: panel (j/16 + v) exists (j + 16*NV <= n) and g < groups.
                *bv = unsafe {
                    _mm512_loadu_si512(base.add((j / 16 + v) * panel_bytes + g * 64) as *const _)
                };
            }
            for i in 0..MR {
                // SAFETY: row r0+i < m and 4*g+3 < k.
                let a = unsafe {
                    _mm512_set1_epi32((rows[i].add(g * 4) as *const i32).read_unaligned())
                };
                for v in 0..NV {
                    acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], a, b[v]);
                }
            }
        }
        let n = w.n;
        for i in 0..MR {
            let sa = _mm512_set1_ps(x.scale[r0 + i]);
            for v in 0..NV {
                let c = j + v * 16;
                // SAFETY: c + 16 <= n for the scale, colsum and bias vectors and the output row.
                unsafe {
                    let corr = _mm512_mullo_epi32(
                        _mm512_loadu_si512(w.colsum.as_ptr().add(c) as *const _),
                        _mm512_set1_epi32(128),
                    );
                    let exact = _mm512_sub_epi32(acc[i][v], corr);
                    let sw = _mm512_loadu_ps(w.scale.as_ptr().add(c));
                    let bias = _mm512_loadu_ps(w.bias.as_ptr().add(c));
                    let y = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(exact), sa), sw, bias);
                    _mm512_storeu_ps(out.add((r0 + i) * n + c), y);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn matmul(x: &QRows, w: &QMatrix, out: *mut f32, n0: usize, n1: usize) {
        let m = x.m;
        let mut j = n0;
        while j < n1 {
            let wide = j + 64 <= n1;
            let mut r = 0;
            while r < m {
                let left = m - r;
                // SAFETY: bounds are as `tile` requires; the ISA was detected.
                unsafe {
                    match (left.min(4), wide) {
                        (4, true) => tile::<4, 4>(x, w, out, r, j),
                        (3, true) => tile::<3, 4>(x, w, out, r, j),
                        (2, true) => tile::<2, 4>(x, w, out, r, j),
                        (_, true) => tile::<1, 4>(x, w, out, r, j),
                        (4, false) => tile::<4, 1>(x, w, out, r, j),
                        (3, false) => tile::<3, 1>(x, w, out, r, j),
                        (2, false) => tile::<2, 1>(x, w, out, r, j),
                        (_, false) => tile::<1, 1>(x, w, out, r, j),
                    }
                }
                r += left.min(4);
            }
            j += if wide { 64 } else { 16 };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{QMatrix, QRows};

    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const MR: usize, const NV: usize>(
        x: &QRows,
        w: &QMatrix,
        out: *mut f32,
        r0: usize,
        j: usize,
    ) {
        let k = w.k;
        let groups = k / 4;
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); NV]; MR];
        let base = w.packed.as_ptr();
        let panel_bytes = groups * 32;
        let rows: [*const u8; MR] =
            std::array::from_fn(|i| unsafe { x.data.as_ptr().add((r0 + i) * k) });
        for g in 0..groups {
            let mut b = [_mm256_setzero_si256(); NV];
            for (v, bv) in b.iter_mut().enumerate() {
                // SAFETY: panel (j/8 + v) exists and g < groups.
                *bv = unsafe {
                    _mm256_loadu_si256(base.add((j / 8 + v) * panel_bytes + g * 32) as *const _)
                };
            }
            for i in 0..MR {
                // SAFETY: row r0+i < m and 4*g+3 < k.
                let a = unsafe {
                    _mm256_set1_epi32((rows[i].add(g * 4) as *const i32).read_unaligned())
                };
                let abs_a = _mm256_abs_epi8(a);
                for v in 0..NV {
                    let signed_b = _mm256_sign_epi8(b[v], a);
                    let pairs = _mm256_maddubs_epi16(abs_a, signed_b);
                    acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        let n = w.n;
        for i in 0..MR {
            let sa = _mm256_set1_ps(x.scale[r0 + i]);
            for v in 0..NV {
                let c = j + v * 8;
                // SAFETY: c + 8 <= n for scale, bias and the output row.
                unsafe {
                    let sw = _mm256_loadu_ps(w.scale.as_ptr().add(c));
                    let bias = _mm256_loadu_ps(w.bias.as_ptr().add(c));
                    let y =
                        _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][v]), sa), sw, bias);
                    _mm256_storeu_ps(out.add((r0 + i) * n + c), y);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matmul(x: &QRows, w: &QMatrix, out: *mut f32, n0: usize, n1: usize) {
        let m = x.m;
        let mut j = n0;
        while j < n1 {
            let wide = j + 16 <= n1;
            let mut r = 0;
            while r < m {
                let left = m - r;
                // SAFETY: bounds are as `tile` requires; the ISA was detected.
                unsafe {
                    match (left.min(4), wide) {
                        (4, true) => tile::<4, 2>(x, w, out, r, j),
                        (3, true) => tile::<3, 2>(x, w, out, r, j),
                        (2, true) => tile::<2, 2>(x, w, out, r, j),
                        (_, true) => tile::<1, 2>(x, w, out, r, j),
                        (4, false) => tile::<4, 1>(x, w, out, r, j),
                        (3, false) => tile::<3, 1>(x, w, out, r, j),
                        (2, false) => tile::<2, 1>(x, w, out, r, j),
                        (_, false) => tile::<1, 1>(x, w, out, r, j),
                    }
                }
                r += left.min(4);
            }
            j += if wide { 16 } else { 8 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix64::new(seed);
        (0..n).map(|_| r.next_f32() * 2.0 - 1.0).collect()
    }

    /// Every kernel this CPU has gives exactly the scalar kernel's result
    /// (integer accumulation is exact), for ragged row counts and column
    /// ranges. n = 208 is not a multiple of 64, so the narrow tail tiles run.
    #[test]
    fn kernels_agree_with_scalar_exactly() {
        let (k, n) = (96, 208);
        let w = random(k * n, 1);
        let bias = random(n, 2);
        let reference = QMatrix::new(&w, k, n, &bias, Isa::Scalar);
        // An ISA this CPU lacks falls back to scalar code (`available`).
        for isa in [Isa::detect(), Isa::Avx2, Isa::Avx512Vnni] {
            let q = QMatrix::new(&w, k, n, &bias, isa);
            assert!(q.isa().available());
            for m in [1, 3, 4, 7, 13] {
                let x = random(m * k, 3 + m as u64);
                let (mut xs, mut xq) = (QRows::default(), QRows::default());
                xs.quantize(&x, m, k, Isa::Scalar);
                xq.quantize(&x, m, k, q.isa());
                let mut a = vec![0f32; m * n];
                let mut b = vec![0f32; m * n];
                matmul_cols(&xs, &reference, &mut a, 0, n, Epilogue::None);
                // Three ranges, each panel-aligned: 0..16, 16..split, split..n.
                let split = split_cols(&q).max(32);
                let first = q.isa().panel().max(16).min(split);
                matmul_cols(&xq, &q, &mut b, 0, first, Epilogue::None);
                matmul_cols(&xq, &q, &mut b, first, split, Epilogue::None);
                matmul_cols(&xq, &q, &mut b, split, n, Epilogue::None);
                for (u, v) in a.iter().zip(&b) {
                    assert!(
                        (u - v).abs() <= 1e-5 * u.abs().max(1.0),
                        "{isa:?} m={m}: {u} vs {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn misaligned_column_ranges_are_refused_by_simd_kernels_only() {
        let (k, n) = (8, 32);
        let scalar = QMatrix::new(&vec![0.5; k * n], k, n, &[0.0; 32], Isa::Scalar);
        assert_eq!(
            misalignment(&scalar, 3, 32),
            None,
            "scalar code takes any range"
        );
        let q = QMatrix::new(&vec![0.5; k * n], k, n, &[0.0; 32], Isa::detect());
        assert_eq!(misalignment(&q, 0, 16), None);
        if q.isa() != Isa::Scalar {
            let reason = misalignment(&q, 3, 32).unwrap();
            assert!(reason.contains("3..32 is not aligned"), "{reason}");
        }
    }

    #[test]
    fn quantised_product_is_close_to_float() {
        let (m, k, n) = (5, 384, 64);
        let x = random(m * k, 9);
        let w = random(k * n, 10);
        let bias = vec![0.5; n];
        let q = QMatrix::new(&w, k, n, &bias, Isa::detect());
        let mut xq = QRows::default();
        xq.quantize(&x, m, k, q.isa());
        let mut y = vec![0f32; m * n];
        matmul_cols(&xq, &q, &mut y, 0, n, Epilogue::None);
        for r in 0..m {
            for j in 0..n {
                let exact: f32 = (0..k).map(|i| x[r * k + i] * w[i * n + j]).sum::<f32>() + 0.5;
                assert!(
                    (y[r * n + j] - exact).abs() < 0.15,
                    "{} vs {exact}",
                    y[r * n + j]
                );
            }
        }
    }
}
