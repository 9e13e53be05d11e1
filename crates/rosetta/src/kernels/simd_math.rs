//! `exp`, `tanh` and `sigmoid` for `f32` written so that loops over slices vectorize.
//!
//! The standard library calls libm one element at a time; in training those calls were about a
//! fifth of the CPU time. These functions use only arithmetic and bit operations (choices between
//! two values are bit masks, see `select`: an `if` between floats stayed a branch and kept whole
//! kernels scalar), so LLVM turns a loop over them into AVX-512 or AVX2 code under [`dispatch`]. No
//! fused multiply-add is used, so the AVX-512, AVX2 and baseline paths give bit-identical results.
//!
//! Accuracy (checked by the tests against the standard library over `[-20, 20]`): `exp` within
//! 2 ulp (Cephes `expf`), `tanh` within 3·10⁻⁷ absolute (Cephes `tanhf` polynomial below 0.625,
//! `1 − 2/(e^{2|x|} + 1)` above). NaN in, NaN out.

// The polynomial coefficients are Cephes' as published, digits beyond f32 included.
#![allow(clippy::excessive_precision)]

/// `1.5 · 2²³`: adding it to a float of magnitude below 2²² rounds it to an integer that can be read
/// from the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
/// Bits of [`ROUND`].
const ROUND_BITS: i32 = 0x4B40_0000;
/// Cephes' two-part ln 2, so that `x − n·ln 2` stays exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `exp` saturates above this range (`e^88` ≈ 1.65·10³⁸) and is 0 below it (results under
/// `e^−87.3` are subnormal and flushed anyway).
const EXP_MIN: f32 = -87.336_54;
const EXP_MAX: f32 = 88.0;

/// `e^x` (Cephes `expf`: `x = n·ln 2 + r`, degree-6 polynomial for `e^r`, `2^n` built in the
/// exponent bits).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Comparisons rather than `clamp`, whose NaN handling is a branch.
    let c = select(x < EXP_MIN, EXP_MIN, x);
    let c = select(c > EXP_MAX, EXP_MAX, c);
    let t = c * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((t.to_bits() as i32 - ROUND_BITS + 127) << 23) as u32);
    let out = y * scale;
    // Below the range the true value is subnormal or zero (and −∞ gives exactly 0, which masked
    // softmax weights rely on). NaN compares false, passes the clamp and the arithmetic as NaN, and
    // is kept.
    select(x < EXP_MIN, 0.0, out)
}

/// `ln x` (Cephes `logf`: `x = m·2^e` with `m` in [√½, √2), degree-8 polynomial for `ln m`),
/// without branches so that loops over it vectorize. `ln 0` (and subnormal inputs, which only
/// arise as probabilities below e^−87) is −∞; negative inputs and NaN give NaN; +∞ stays +∞.
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    // The mantissa with the exponent of 0.5: m in [0.5, 1).
    let mut m = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000);
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    e -= i32::from(small);
    m = select(small, m + m - 1.0, m - 1.0);
    let z = m * m;
    let mut p = 7.037_683_6e-2_f32;
    p = p * m - 1.151_461_1e-1;
    p = p * m + 1.167_699_9e-1;
    p = p * m - 1.242_014_1e-1;
    p = p * m + 1.424_932_3e-1;
    p = p * m - 1.666_805_8e-1;
    p = p * m + 2.000_071_4e-1;
    p = p * m - 2.499_999_4e-1;
    p = p * m + 3.333_333_1e-1;
    let ef = e as f32;
    let y = p * m * z + ef * LN2_LO - 0.5 * z;
    let out = m + y + ef * LN2_HI;
    let out = select(x < f32::MIN_POSITIVE, f32::NEG_INFINITY, out);
    let out = select(x.is_infinite() && x > 0.0, f32::INFINITY, out);
    select(x < 0.0 || x.is_nan(), f32::NAN, out)
}

/// `if mask { a } else { b }` with bit operations: LLVM keeps an `if` between two floats as a
/// branch when it cannot prove both sides cheap, and a branch in a loop body stops vectorization.
#[inline(always)]
fn select(mask: bool, a: f32, b: f32) -> f32 {
    let m = u32::from(mask).wrapping_neg();
    f32::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
}

/// `tanh x`.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let large = (1.0 - 2.0 / (exp(2.0 * a) + 1.0)).copysign(x);
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_908_9e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
            - 3.333_328_2e-1)
            * z
            * x
            + x;
    // NaN: `a < 0.625` is false and `large` is NaN.
    select(a < 0.625, small, large)
}

/// The logistic function `1 / (1 + e^{−x})`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Runs `body` compiled for AVX-512 or AVX2 when the CPU has it, otherwise for the baseline (SSE2). `body`
/// must be an `#[inline(always)]` closure over `#[inline(always)]` code so that it is compiled into
/// each wrapper: a plain closure stays a function of its own, built for the baseline, and the
/// wrapper only calls it.
#[inline(always)]
pub fn dispatch<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { with_avx512(body) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { with_avx2(body) };
        }
    }
    body()
}

/// Sixteen lanes where the CPU has AVX-512 (the search's `log_sum_exp` over a 58,000-entry
/// vocabulary for every hypothesis of every step); the same bits as AVX2, since no fused
/// multiply-add is used.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
#[inline]
unsafe fn with_avx512<R>(body: impl FnOnce() -> R) -> R {
    body()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn with_avx2<R>(body: impl FnOnce() -> R) -> R {
    body()
}

/// Sum of a slice with eight independent lanes, so that it vectorizes; the order of additions is
/// fixed, so the result does not depend on the instruction set.
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    sum_of(xs, |x| x)
}

/// `Σ f(x)` over a slice, in the lanes and order of [`sum`].
#[inline(always)]
pub fn sum_of(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f(x);
        }
    }
    let mut total = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for &x in chunks.remainder() {
        total += f(x);
    }
    total
}

/// `xs ← softmax(xs)` in place: shifted by the maximum, exponentiated, normalized (NaN when every
/// element is −∞, as the tensor form gives).
#[inline(always)]
pub fn softmax_in_place(xs: &mut [f32]) {
    let top = max(xs);
    let mut total = 0.0;
    for x in xs.iter_mut() {
        *x = exp(*x - top);
        total += *x;
    }
    let inv = 1.0 / total;
    for x in xs.iter_mut() {
        *x *= inv;
    }
}

/// Maximum of a slice (NaN if any element is NaN), eight lanes as in [`sum`].
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut nan = false;
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            nan |= x.is_nan();
            *l = if x > *l { x } else { *l };
        }
    }
    let mut m = lanes
        .iter()
        .fold(f32::NEG_INFINITY, |m, &l| if l > m { l } else { m });
    for &x in chunks.remainder() {
        nan |= x.is_nan();
        m = if x > m { x } else { m };
    }
    if nan { f32::NAN } else { m }
}

/// Lanes of the decoding reductions over a vocabulary ([`RunningLse`]): one AVX-512 register (two
/// AVX2 ones, four SSE ones). The eight lanes of [`sum`] and [`max`] left half of an AVX-512
/// register idle, and the search's log-softmax normalizer over every hypothesis's row was a tenth of
/// a beam-search step.
pub const WIDE: usize = 16;

/// Values a [`RunningLse`] takes per [`RunningLse::block`]: four registers of [`WIDE`] lanes.
pub const LSE_BLOCK: usize = 4 * WIDE;

/// Folds sixteen lanes pairwise in a fixed order.
#[inline(always)]
fn fold_wide(l: [f32; WIDE], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut half = [0f32; WIDE / 2];
    for i in 0..WIDE / 2 {
        half[i] = f(l[i], l[i + WIDE / 2]);
    }
    let q = [
        f(half[0], half[4]),
        f(half[1], half[5]),
        f(half[2], half[6]),
        f(half[3], half[7]),
    ];
    f(f(q[0], q[2]), f(q[1], q[3]))
}

/// The larger of two values, `b` when either is NaN (so NaN never becomes a maximum).
#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// `log Σ e^x` of a row read once: per lane, the running maximum `m` and `Σ e^{x − m}`, rescaled
/// when a block raises the maximum (the "online softmax" of Milakov & Gimelshein 2018).
///
/// The search's normalizer had read each row of logits three times (the top-k's block maxima, the
/// maximum, the sum of exponentials), the rows just written by the vocabulary product and beyond
/// L2: 1.9 ns per logit, 10 % of a batch-32 beam-5 decode. Read once, with each block's
/// exponentials computed while the next one loads, the normalizer costs 0.77 ns per logit from
/// memory and 0.43 from cache ([160, 7,708] rows, one AVX-512 core). The lanes and the order of
/// operations are fixed, so every instruction-set path gives the same bits; a NaN makes the sum
/// NaN, an all-−∞ row gives −∞.
#[derive(Debug, Clone, Copy)]
pub struct RunningLse {
    max: [f32; WIDE],
    sum: [f32; WIDE],
}

impl Default for RunningLse {
    fn default() -> Self {
        // A finite start, so that a lane that has only seen −∞ rescales by e^0 rather than
        // e^(−∞ − (−∞)) = NaN.
        RunningLse {
            max: [f32::MIN; WIDE],
            sum: [0.0; WIDE],
        }
    }
}

// Lane-indexed loops over several fixed arrays at once, as the vectorizer sees them best.
#[allow(clippy::needless_range_loop)]
impl RunningLse {
    /// Adds a block of [`LSE_BLOCK`] values; returns its lane maxima (for callers that skip blocks
    /// by their maximum).
    #[inline(always)]
    pub fn block(&mut self, block: &[f32]) -> [f32; WIDE] {
        let block: &[f32; LSE_BLOCK] = match block.try_into() {
            Ok(b) => b,
            // Callers pass `chunks_exact(LSE_BLOCK)`.
            Err(_) => unreachable!("RunningLse::block takes LSE_BLOCK values"),
        };
        let mut top = [f32::MIN; WIDE];
        for c in 0..4 {
            for i in 0..WIDE {
                top[i] = larger(block[c * WIDE + i], top[i]);
            }
        }
        let mut raised = false;
        for i in 0..WIDE {
            raised |= top[i] > self.max[i];
        }
        if raised {
            for i in 0..WIDE {
                let m = larger(top[i], self.max[i]);
                self.sum[i] *= exp(self.max[i] - m);
                self.max[i] = m;
            }
        }
        for c in 0..4 {
            for i in 0..WIDE {
                self.sum[i] += exp(block[c * WIDE + i] - self.max[i]);
            }
        }
        top
    }

    /// `(max, log Σ e^x)` over the blocks and `tail` (fewer than [`LSE_BLOCK`] values). The maximum
    /// ignores NaN; it is −∞ for a row of −∞.
    #[inline(always)]
    pub fn finish(self, tail: &[f32]) -> (f32, f32) {
        let mut m = fold_wide(self.max, larger);
        for &x in tail {
            m = larger(x, m);
        }
        let mut lanes = [0f32; WIDE];
        for i in 0..WIDE {
            lanes[i] = self.sum[i] * exp(self.max[i] - m);
        }
        let mut total = fold_wide(lanes, |a, b| a + b);
        for &x in tail {
            total += exp(x - m);
        }
        if m == f32::MIN && total == 0.0 {
            // Only −∞ (or nothing) was seen: the lanes' finite start is no value of the row.
            return (f32::NEG_INFINITY, f32::NEG_INFINITY);
        }
        (m, m + total.ln())
    }

    /// `(max, log Σ e^x)` of a whole row.
    #[inline(always)]
    pub fn of(row: &[f32]) -> (f32, f32) {
        let mut lse = RunningLse::default();
        let mut blocks = row.chunks_exact(LSE_BLOCK);
        for b in &mut blocks {
            lse.block(b);
        }
        lse.finish(blocks.remainder())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-200_000..=200_000).map(|i| i as f32 * 1e-4)
    }

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_std() {
        for x in grid().chain([-87.0, -80.5, 50.0, 87.9]) {
            let (got, want) = (exp(x), x.exp());
            assert!(ulps(got, want) <= 2, "exp({x}) = {got}, std {want}");
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn tanh_and_sigmoid_match_std() {
        for x in grid() {
            let (got, want) = (tanh(x), x.tanh());
            assert!((got - want).abs() <= 3e-7, "tanh({x}) = {got}, std {want}");
            let want = 1.0 / (1.0 + (-x).exp());
            let got = sigmoid(x);
            assert!(
                (got - want).abs() <= 3e-7,
                "sigmoid({x}) = {got}, std {want}"
            );
        }
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(30.0), 1.0);
        assert_eq!(tanh(-30.0), -1.0);
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn reductions_match_plain_loops_and_keep_nan() {
        let xs: Vec<f32> = (0..37).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
        assert_eq!(sum(&xs), xs.iter().sum::<f32>());
        assert_eq!(max(&xs), 50.0);
        let mut with_nan = xs.clone();
        with_nan[33] = f32::NAN;
        assert!(max(&with_nan).is_nan());
        assert!(sum(&with_nan).is_nan());
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    /// Against a plain two-pass log-sum-exp in f64, over lengths around the block size, rows whose
    /// maximum rises late (the rescaling), −∞ entries, NaN and all-−∞ rows.
    #[test]
    fn running_lse_matches_two_passes() {
        for len in [1, 5, 16, 63, 64, 65, 200, 1_000] {
            for rising in [false, true] {
                let xs: Vec<f32> = (0..len)
                    .map(|i| {
                        let x = ((i * 7919) % 101) as f32 / 5.0 - 10.0;
                        let x = if rising { x + i as f32 / 10.0 } else { x };
                        if i % 9 == 4 { f32::NEG_INFINITY } else { x }
                    })
                    .collect();
                let m = xs.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let want = f64::from(m)
                    + xs.iter()
                        .map(|&x| (f64::from(x) - f64::from(m)).exp())
                        .sum::<f64>()
                        .ln();
                let (got_max, got) = RunningLse::of(&xs);
                assert_eq!(got_max, m, "len {len}");
                assert!(
                    (f64::from(got) - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "len {len}, rising {rising}: {got} vs {want}"
                );
                let mut with_nan = xs.clone();
                with_nan[len / 2] = f32::NAN;
                assert!(RunningLse::of(&with_nan).1.is_nan(), "len {len}");
            }
        }
        let all_masked = vec![f32::NEG_INFINITY; 100];
        assert_eq!(
            RunningLse::of(&all_masked),
            (f32::NEG_INFINITY, f32::NEG_INFINITY)
        );
        assert_eq!(RunningLse::of(&[]), (f32::NEG_INFINITY, f32::NEG_INFINITY));
    }

    #[test]
    fn dispatch_gives_the_baseline_result() {
        let xs: Vec<f32> = grid().step_by(97).collect();
        let fast: Vec<f32> = dispatch(
            #[inline(always)]
            || xs.iter().map(|&x| tanh(x)).collect(),
        );
        let base: Vec<f32> = xs.iter().map(|&x| tanh(x)).collect();
        assert_eq!(fast, base);
        let wide = |xs: &[f32]| RunningLse::of(xs);
        let fast = dispatch(
            #[inline(always)]
            || wide(&xs),
        );
        assert_eq!(
            fast,
            wide(&xs),
            "the wide reductions keep their bits on every path"
        );
    }
}
