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

/// Lanes of the decoding reductions over a vocabulary ([`max_wide`], [`sum_exp_wide`]): one
/// AVX-512 register (two AVX2 ones, four SSE ones). The eight lanes of [`sum`] and [`max`] left half
/// of an AVX-512 register idle, and the search's log-softmax normalizer over every hypothesis's row
/// was a tenth of a beam-search step.
const WIDE: usize = 16;

/// Sums sixteen lanes pairwise in a fixed order.
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

#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// [`max`] with sixteen lanes (NaN if any element is NaN).
#[inline(always)]
pub fn max_wide(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; WIDE];
    let mut nan = [false; WIDE];
    let mut chunks = xs.chunks_exact(WIDE);
    for c in &mut chunks {
        for i in 0..WIDE {
            nan[i] |= c[i].is_nan();
            lanes[i] = larger(c[i], lanes[i]);
        }
    }
    let mut m = fold_wide(lanes, larger);
    let mut any_nan = nan.iter().any(|&n| n);
    for &x in chunks.remainder() {
        any_nan |= x.is_nan();
        m = larger(x, m);
    }
    if any_nan { f32::NAN } else { m }
}

/// `Σ e^{x − shift}` with sixteen lanes in a fixed order, so that the result does not depend on the
/// instruction set.
#[inline(always)]
pub fn sum_exp_wide(xs: &[f32], shift: f32) -> f32 {
    let mut lanes = [0f32; WIDE];
    let mut chunks = xs.chunks_exact(WIDE);
    for c in &mut chunks {
        for i in 0..WIDE {
            lanes[i] += exp(c[i] - shift);
        }
    }
    let mut total = fold_wide(lanes, |a, b| a + b);
    for &x in chunks.remainder() {
        total += exp(x - shift);
    }
    total
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
        for len in [0, 5, 16, 37, 200] {
            let xs = &xs.iter().cycle().take(len).copied().collect::<Vec<_>>();
            let plain = xs.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            assert_eq!(max_wide(xs), plain);
            let want: f64 = xs.iter().map(|&x| f64::from(x - 50.0).exp()).sum();
            let got = f64::from(sum_exp_wide(xs, 50.0));
            assert!(
                (got - want).abs() <= 1e-6 * want.max(1e-30),
                "{got} vs {want}"
            );
        }
        assert!(max_wide(&with_nan).is_nan());
        assert!(sum_exp_wide(&with_nan, 0.0).is_nan());
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
        let wide = |xs: &[f32]| (max_wide(xs), sum_exp_wide(xs, 3.0));
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
