//! Element-wise and attention operations of the inference encoder, in plain
//! f32 code written so the compiler vectorises it (no libm calls in loops:
//! `exp` and `erf` are polynomial approximations accurate to ~1e-7).
//!
//! Each public operation takes the [`Isa`] and runs a copy of its body
//! compiled for that instruction set ([`multiversion!`]), so the same source
//! becomes AVX-512 or AVX2 code where the CPU has it.

use super::gemm::Isa;

/// Defines `fn name(isa, args..)` that runs `body` compiled with AVX-512,
/// with AVX2+FMA, or for the baseline target, as `isa` says.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name(isa: Isa, $($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
            unsafe fn v512($($arg: $ty),*) { body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn v256($($arg: $ty),*) { body($($arg),*) }
            match isa {
                // SAFETY: `Isa` values other than Scalar are only produced by
                // `Isa::detect` after checking these features on this CPU.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Vnni => unsafe { v512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { v256($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

/// `e^x` for x in [-87, 88]: `2^n * p(r)` with `x = n ln2 + r`. Written
/// branch-free with fused multiply-adds so that loops over it vectorise.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    // Round to nearest by the 1.5 * 2^23 trick (exact for |x log2 e| < 2^22):
    // `shifted` holds n in its low mantissa bits.
    let shifted = x.mul_add(std::f32::consts::LOG2_E, MAGIC);
    let n = shifted - MAGIC;
    let r = n.mul_add(-std::f32::consts::LN_2, x);
    // Taylor polynomial of e^r on [-ln2/2, ln2/2], Horner form.
    let p = r
        .mul_add(0.001_388_889, 0.008_333_334)
        .mul_add(r, 0.041_666_668)
        .mul_add(r, 0.166_666_67)
        .mul_add(r, 0.5)
        .mul_add(r, 1.0)
        .mul_add(r, 1.0);
    // n is in [-126, 127] after the clamp; read it from the bits (an `as`
    // conversion would saturate-check and stop vectorisation).
    let n_int = magic_to_int(shifted);
    p * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// 1.5 * 2^23: adding it rounds an f32 of magnitude < 2^22 to an integer
/// held in the low mantissa bits.
pub const MAGIC: f32 = 12_582_912.0;

/// The integer in `x + MAGIC` (for |x| < 2^22).
#[inline(always)]
pub fn magic_to_int(shifted: f32) -> i32 {
    shifted.to_bits() as i32 - 0x4B40_0000
}

/// erf via Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let poly = t
        .mul_add(1.061_405_4, -1.453_152_1)
        .mul_add(t, 1.421_413_8)
        .mul_add(t, -0.284_496_74)
        .mul_add(t, 0.254_829_6)
        * t;
    let y = 1.0 - poly * fast_exp(-a * a);
    y.copysign(x)
}

/// GELU with the exact (erf) form BERT uses.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Sum of a slice in 16 independent lanes (so it vectorises).
#[inline(always)]
pub fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// Largest absolute value, in 16 lanes.
#[inline(always)]
pub fn lane_max_abs(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            let v = c[i].abs();
            acc[i] = if v > acc[i] { v } else { acc[i] };
        }
    }
    let tail = rest
        .iter()
        .fold(0f32, |a, &v| if v.abs() > a { v.abs() } else { a });
    acc.iter().fold(tail, |a, &b| if b > a { b } else { a })
}

/// Dot product in 16 lanes (vectorises; the order of additions differs
/// from a plain loop only by rounding).
#[inline(always)]
pub fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + rest
}

multiversion! {
    /// GELU of every element, in place.
    pub fn gelu_in_place(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu(*v);
        }
    }
}

multiversion! {
    /// Layer normalisation of each `width`-wide row of `x`, in place, after
    /// adding `residual` (same shape) when given.
    pub fn add_layer_norm(x: &mut [f32], residual: Option<&[f32]>, width: usize, gamma: &[f32], beta: &[f32], eps: f32) {
        layer_norm_body(x, residual, width, gamma, beta, eps)
    }
}

#[inline(always)]
fn layer_norm_body(
    x: &mut [f32],
    residual: Option<&[f32]>,
    width: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    if let Some(res) = residual {
        for (a, b) in x.iter_mut().zip(res) {
            *a += b;
        }
    }
    for row in x.chunks_exact_mut(width) {
        let mean = lane_sum(row) / width as f32;
        for v in row.iter_mut() {
            *v -= mean;
        }
        let mut sq = [0f32; 16];
        let chunks = row.chunks_exact(16);
        let rest: f32 = chunks.remainder().iter().map(|v| v * v).sum();
        for c in chunks {
            for i in 0..16 {
                sq[i] = c[i].mul_add(c[i], sq[i]);
            }
        }
        let var = (sq.iter().sum::<f32>() + rest) / width as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v * inv).mul_add(*g, *b);
        }
    }
}

multiversion! {
    /// Self-attention of one sequence: `qkv` is `[t, 3h]` (queries, keys, values
    /// side by side, `heads` heads of `h / heads` each); writes `[t, h]` to `out`.
    /// `scratch` is reused between calls.
    pub fn attention(qkv: &[f32], t: usize, h: usize, heads: usize, out: &mut [f32], scratch: &mut Vec<f32>) {
        attention_body(qkv, t, h, heads, out, scratch)
    }
}

#[inline(always)]
fn attention_body(
    qkv: &[f32],
    t: usize,
    h: usize,
    heads: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let d = h / heads;
    let stride = 3 * h;
    let scale = 1.0 / (d as f32).sqrt();
    // Keys transposed to [d][tp] (tp = t rounded up to 16, zero padded) so a
    // query's scores are d vector FMAs across keys, not t horizontal sums.
    let tp = t.div_ceil(16) * 16;
    scratch.resize(d * tp + tp, 0.0);
    let (kt, row) = scratch.split_at_mut(d * tp);
    for head in 0..heads {
        let (qo, ko, vo) = (head * d, h + head * d, 2 * h + head * d);
        for dd in 0..d {
            let dst = &mut kt[dd * tp..(dd + 1) * tp];
            for (j, slot) in dst.iter_mut().enumerate().take(t) {
                *slot = qkv[j * stride + ko + dd];
            }
            dst[t..].fill(0.0);
        }
        for i in 0..t {
            let q = &qkv[i * stride + qo..i * stride + qo + d];
            row.fill(0.0);
            for (dd, &qv) in q.iter().enumerate() {
                let qs = qv * scale;
                for (r, &k) in row.iter_mut().zip(&kt[dd * tp..(dd + 1) * tp]) {
                    *r = qs.mul_add(k, *r);
                }
            }
            let scores = &mut row[..t];
            let max = scores
                .iter()
                .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
            for s in scores.iter_mut() {
                *s = fast_exp(*s - max);
            }
            let inv = 1.0 / lane_sum(scores);
            let o = &mut out[i * h + head * d..i * h + head * d + d];
            o.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let v = &qkv[j * stride + vo..j * stride + vo + d];
                let w = p * inv;
                for (a, b) in o.iter_mut().zip(v) {
                    *a = w.mul_add(*b, *a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        let mut x = -20.0f32;
        while x < 20.0 {
            let e = fast_exp(x);
            assert!(
                ((e - x.exp()) / x.exp()).abs() < 2e-6,
                "exp({x}) = {e} vs {}",
                x.exp()
            );
            x += 0.037;
        }
        // Reference values of erf.
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
            (3.5, 0.999_999_3),
        ] {
            assert!(
                (erf(x) - want).abs() < 3e-7,
                "erf({x}) = {} vs {want}",
                erf(x)
            );
        }
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-3.0) - -0.004_049_7).abs() < 1e-6);
    }

    #[test]
    fn layer_norm_normalises_rows() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        add_layer_norm(Isa::detect(), &mut x, None, 4, &[1.0; 4], &[0.0; 4], 1e-12);
        let mean: f32 = x[..4].iter().sum::<f32>() / 4.0;
        let var: f32 = x[..4].iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-4);
        assert!(
            x[4..].iter().all(|v| v.abs() < 1e-3),
            "a constant row normalises to 0"
        );
    }

    #[test]
    fn attention_matches_a_direct_computation() {
        let (t, h, heads) = (5, 8, 2);
        let mut r = crate::rng::SplitMix64::new(4);
        let qkv: Vec<f32> = (0..t * 3 * h).map(|_| r.next_f32() * 2.0 - 1.0).collect();
        let mut out = vec![0.0; t * h];
        attention(Isa::detect(), &qkv, t, h, heads, &mut out, &mut Vec::new());
        let d = h / heads;
        for head in 0..heads {
            for i in 0..t {
                let s: Vec<f32> = (0..t)
                    .map(|j| {
                        (0..d)
                            .map(|x| {
                                qkv[i * 3 * h + head * d + x] * qkv[j * 3 * h + h + head * d + x]
                            })
                            .sum::<f32>()
                            / (d as f32).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f32 = e.iter().sum();
                for x in 0..d {
                    let want: f32 = (0..t)
                        .map(|j| e[j] / z * qkv[j * 3 * h + 2 * h + head * d + x])
                        .sum();
                    assert!((out[i * h + head * d + x] - want).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn attention_of_one_token_returns_its_value() {
        // t = 1: softmax over one key is 1, so the output is the value.
        let (h, heads) = (4, 2);
        let qkv = [0.3, -0.1, 0.2, 0.9, 1.0, 1.0, 1.0, 1.0, 5.0, 6.0, 7.0, 8.0];
        let mut out = vec![0.0; h];
        attention(Isa::detect(), &qkv, 1, h, heads, &mut out, &mut Vec::new());
        assert_eq!(out, vec![5.0, 6.0, 7.0, 8.0]);
    }
}
