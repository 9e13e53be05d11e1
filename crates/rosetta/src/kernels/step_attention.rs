//! Attention of one new query position per row, for search steps: `[n, heads·head_dim]` queries over
//! keys and values kept in buffers `[width, capacity, heads·head_dim]`, each position of each row
//! found through a row map ([`KvRows`]) instead of a copy per row.
//!
//! A search step of a Transformer decoder attends with one query per row and head over a few dozen
//! keys. As tensor operations that is a head split (a strided copy), a batched product of `n·heads`
//! tiny matrices, a bias addition, a softmax, a second batched product and a head merge (another
//! copy): on the benchmark's greedy decode 13 % of the samples were burn-flex's batched products
//! alone. Here each row reads every position once for all its heads, in place in the buffer, with
//! sixteen-lane products, rows split across threads.
//!
//! Beam search reorders its hypotheses after every step. Copying each layer's cache into the new
//! order (what fairseq and CTranslate2 do) moved the whole cache twice per step — 9 % of a batch-32
//! beam-5 decode of a 3+3-layer model — and giving every beam its own copy of the source's keys
//! made the cross-attention read five times the memory it needs. Rows instead name where their
//! positions live: the source row of their sentence, or for the target positions the row that
//! wrote each one (an ancestry table of `u32`s, updated per step at the cost of `n · len` integers).
//! Other backends (CUDA) gather the rows with `select` and use tensor operations.

use super::simd_math::{dispatch, exp, sum};
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

/// Where the key and value of position `p` of query row `i` are kept: buffer row
/// [`KvRows::row`]`(i, p)`, position `p`.
#[derive(Debug, Clone, Copy)]
pub enum KvRows<'a> {
    /// Position `p` of row `i` is in buffer row `ancestry[i · len + p]` (the decoder's own past:
    /// the hypothesis that wrote it). `ancestry` is `[n, len]`. With `starts` (`[n]`), row `i`
    /// reads only positions `starts[i]..len`: a sentence that joined a running search at position
    /// `starts[i]` of the buffers has nothing before it (weight exactly 0, nothing read).
    PerPosition {
        /// `[n, len]`.
        ancestry: &'a [u32],
        /// `[n]`, or `None` for every row starting at 0.
        starts: Option<&'a [u32]>,
    },
    /// Every position of row `i` is in buffer row `rows[i]` (the source of its sentence); the
    /// bias, if any, is read from that row too.
    PerRow(&'a [u32]),
}

impl KvRows<'_> {
    #[inline(always)]
    fn row(&self, i: usize, p: usize, len: usize) -> usize {
        match self {
            KvRows::PerPosition { ancestry, .. } => ancestry[i * len + p] as usize,
            KvRows::PerRow(r) => r[i] as usize,
        }
    }

    /// The first position row `i` reads.
    #[inline(always)]
    fn start(&self, i: usize) -> usize {
        match self {
            KvRows::PerPosition {
                starts: Some(s), ..
            } => s[i] as usize,
            _ => 0,
        }
    }
}

/// How a row's scores are computed: `out[h] = q_h · k_h` for every head of one key row.
///
/// Written with intrinsics because LLVM vectorized every portable form of this short dot product
/// (sixteen partial sums, as arrays or slices, several reduction orders) two or four lanes at a time
/// with shuffles: the scores were two thirds of the step attention's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadDots {
    /// AVX-512F, head size a multiple of 16.
    Avx512,
    /// AVX2 and FMA, head size a multiple of 8.
    Avx2,
    /// Anything else.
    Plain,
}

impl HeadDots {
    fn detect(hd: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if hd.is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx512f") {
                return HeadDots::Avx512;
            }
            if hd.is_multiple_of(8)
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return HeadDots::Avx2;
            }
        }
        let _ = hd;
        HeadDots::Plain
    }

    /// `out[h] = q[h·hd..(h+1)·hd] · k[h·hd..(h+1)·hd]` for `h < out.len()`.
    #[inline(always)]
    fn run(self, q: &[f32], k: &[f32], hd: usize, out: &mut [f32]) {
        assert!(q.len() >= out.len() * hd && k.len() >= out.len() * hd);
        match self {
            // SAFETY: `detect` chose these only where the CPU has the features and `hd` is a
            // multiple of the vector width; the lengths are checked above.
            #[cfg(target_arch = "x86_64")]
            HeadDots::Avx512 => unsafe { head_dots_avx512(q, k, hd, out) },
            #[cfg(target_arch = "x86_64")]
            HeadDots::Avx2 => unsafe { head_dots_avx2(q, k, hd, out) },
            _ => {
                for (h, o) in out.iter_mut().enumerate() {
                    let (qh, kh) = (&q[h * hd..(h + 1) * hd], &k[h * hd..(h + 1) * hd]);
                    *o = qh.iter().zip(kh).map(|(x, y)| x * y).sum();
                }
            }
        }
    }
}

/// # Safety
/// AVX-512F; `hd` a multiple of 16; `q` and `k` hold `out.len() · hd` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn head_dots_avx512(q: &[f32], k: &[f32], hd: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    for (h, o) in out.iter_mut().enumerate() {
        let mut acc = _mm512_setzero_ps();
        for c in (h * hd..(h + 1) * hd).step_by(16) {
            // SAFETY: c + 16 ≤ out.len() · hd ≤ the lengths of `q` and `k`.
            unsafe {
                let x = _mm512_loadu_ps(q.as_ptr().add(c));
                let y = _mm512_loadu_ps(k.as_ptr().add(c));
                acc = _mm512_fmadd_ps(x, y, acc);
            }
        }
        *o = _mm512_reduce_add_ps(acc);
    }
}

/// `w[h · len + first + j] = q_h · k[j]_h` for every head `h` and the four positions `j < 4`: four
/// independent chains of fused multiply-adds per head and one shuffle tree that reduces the four
/// sums together. One position at a time, each head's short chain waited on its own horizontal
/// sum (`perf`: the reductions and the dependent multiply-adds were most of the step attention).
///
/// # Safety
/// AVX-512F; `hd` a multiple of 16; `q` and each `k[j]` hold `heads · hd` elements with
/// `heads = w.len() / len`; `first + 4 ≤ len`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn head_dots4_avx512(
    q: &[f32],
    k: [&[f32]; 4],
    hd: usize,
    w: &mut [f32],
    len: usize,
    first: usize,
) {
    use std::arch::x86_64::*;
    let heads = w.len() / len.max(1);
    let d = heads * hd;
    assert!(q.len() >= d && k.iter().all(|k| k.len() >= d) && first + 4 <= len);
    for h in 0..heads {
        let mut acc = [_mm512_setzero_ps(); 4];
        for c in (h * hd..(h + 1) * hd).step_by(16) {
            // SAFETY: c + 16 ≤ d ≤ the lengths of `q` and every `k[j]` (checked above).
            unsafe {
                let x = _mm512_loadu_ps(q.as_ptr().add(c));
                for j in 0..4 {
                    acc[j] = _mm512_fmadd_ps(x, _mm512_loadu_ps(k[j].as_ptr().add(c)), acc[j]);
                }
            }
        }
        // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], the same for c and d, then [a, b, c, d].
        let ab = _mm512_add_ps(
            _mm512_unpacklo_ps(acc[0], acc[1]),
            _mm512_unpackhi_ps(acc[0], acc[1]),
        );
        let cd = _mm512_add_ps(
            _mm512_unpacklo_ps(acc[2], acc[3]),
            _mm512_unpackhi_ps(acc[2], acc[3]),
        );
        let abcd = _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(ab, cd),
            _mm512_shuffle_ps::<0xEE>(ab, cd),
        );
        // Sum the four 128-bit lanes.
        let halves = _mm512_add_ps(abcd, _mm512_shuffle_f32x4::<0x4E>(abcd, abcd));
        let all = _mm512_add_ps(halves, _mm512_shuffle_f32x4::<0xB1>(halves, halves));
        let mut sums = [0f32; 4];
        // SAFETY: `sums` holds four floats.
        unsafe { _mm_storeu_ps(sums.as_mut_ptr(), _mm512_castps512_ps128(all)) };
        w[h * len + first..h * len + first + 4].copy_from_slice(&sums);
    }
}

/// Never called off x86-64 (`HeadDots::Avx512` needs it).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn head_dots4_avx512(
    _: &[f32],
    _: [&[f32]; 4],
    _: usize,
    _: &mut [f32],
    _: usize,
    _: usize,
) {
    unreachable!("AVX-512 scores run only on x86-64")
}

/// # Safety
/// AVX2 and FMA; `hd` a multiple of 8; `q` and `k` hold `out.len() · hd` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_dots_avx2(q: &[f32], k: &[f32], hd: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    for (h, o) in out.iter_mut().enumerate() {
        let mut acc = _mm256_setzero_ps();
        for c in (h * hd..(h + 1) * hd).step_by(8) {
            // SAFETY: c + 8 ≤ out.len() · hd ≤ the lengths of `q` and `k`.
            unsafe {
                let x = _mm256_loadu_ps(q.as_ptr().add(c));
                let y = _mm256_loadu_ps(k.as_ptr().add(c));
                acc = _mm256_fmadd_ps(x, y, acc);
            }
        }
        let halves = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
        let one = _mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1));
        *o = _mm_cvtss_f32(one);
    }
}

/// Scaled dot-product attention (Vaswani et al. 2017, §3.2.1) of one query position per row:
/// `q` `[n, heads·head_dim]` (unscaled) over positions `0..len` of `keys`/`values`
/// `[width, capacity, heads·head_dim]`, located by `rows`; `bias` `[width_b, len]` (−∞ on padding),
/// read from the row `rows` gives position 0. Returns the context `[n, heads·head_dim]` and the
/// weights `[n, heads, len]`.
pub fn step_attention<B: Backend>(
    q: Tensor<B, 2>,
    (keys, values): (&Tensor<B, 3>, &Tensor<B, 3>),
    heads: usize,
    len: usize,
    rows: KvRows<'_>,
    bias: Option<&Tensor<B, 2>>,
) -> (Tensor<B, 2>, Tensor<B, 3>) {
    let all_f32 = [q.dtype(), keys.dtype(), values.dtype()]
        .into_iter()
        .chain(bias.map(|b| b.dtype()))
        .all(|t| t == DType::F32);
    if !all_f32 {
        return composite(q, (keys, values), heads, len, rows, bias);
    }
    let flex = |t: Tensor<B, 3>| {
        super::cast::<_, Tensor<Flex, 3>>(t)
            .ok()
            .map(|t| super::kv_cache::whole(t.into_primitive().tensor()))
    };
    let (Some(k), Some(v), Ok(qf)) = (
        flex(keys.clone()),
        flex(values.clone()),
        super::cast::<_, Tensor<Flex, 2>>(q.clone()),
    ) else {
        return composite(q, (keys, values), heads, len, rows, bias);
    };
    let qf = qf.into_primitive().tensor().to_contiguous();
    let bias = bias.map(|b| match super::cast::<_, Tensor<Flex, 2>>(b.clone()) {
        Ok(b) => b.into_primitive().tensor().to_contiguous(),
        // `q` was a CPU tensor, and all inputs share one backend.
        Err(_) => unreachable!("the attention's inputs share one backend"),
    });
    let (context, weights) = forward_flex(
        (&qf, &k, &v),
        heads,
        len,
        rows,
        bias.as_ref().map(|b| b.storage::<f32>()),
    );
    let [n, d] = q.dims();
    let wrap =
        |values: Vec<f32>, shape: Vec<usize>| FlexTensor::from_data(TensorData::new(values, shape));
    (
        super::cast_back(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(
            wrap(context, vec![n, d]),
        ))),
        super::cast_back(Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(
            wrap(weights, vec![n, heads, len]),
        ))),
    )
}

/// Elements of the context one pass of [`context_avx512`] keeps in registers (sixteen AVX-512
/// accumulators).
const CONTEXT_CHUNK: usize = 256;

/// `ctx = Σ_{p ∈ positions} w[h, p] · v_p` for one row (`w` `[heads, len]`), `ctx` `[d]` in chunks
/// of [`CONTEXT_CHUNK`] held in registers over the positions, one fused multiply-add per vector.
/// The loop it replaces loaded, multiplied, added and stored the context for every position (a
/// third of the step attention's samples, perf).
///
/// # Safety
/// AVX-512F; `ctx.len()` a multiple of [`CONTEXT_CHUNK`]; `hd` 16, 32, 64, 128 or 256; `w` holds
/// `ctx.len() / hd · len` weights `[heads, len]`; `positions.end ≤ len`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn context_avx512(
    w: &[f32],
    (positions, len): (std::ops::Range<usize>, usize),
    hd: usize,
    values: &[f32],
    value_at: impl Fn(usize) -> usize,
    ctx: &mut [f32],
) {
    // SAFETY (all arms): as this function's contract.
    unsafe {
        match hd {
            16 => context_chunks::<1>(w, (positions, len), values, value_at, ctx),
            32 => context_chunks::<2>(w, (positions, len), values, value_at, ctx),
            64 => context_chunks::<4>(w, (positions, len), values, value_at, ctx),
            128 => context_chunks::<8>(w, (positions, len), values, value_at, ctx),
            _ => context_chunks::<16>(w, (positions, len), values, value_at, ctx),
        }
    }
}

/// [`context_avx512`] for heads of `VH` vectors (`hd = 16 · VH`).
///
/// # Safety
/// As [`context_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn context_chunks<const VH: usize>(
    w: &[f32],
    (positions, len): (std::ops::Range<usize>, usize),
    values: &[f32],
    value_at: impl Fn(usize) -> usize,
    ctx: &mut [f32],
) {
    use std::arch::x86_64::*;
    const V: usize = CONTEXT_CHUNK / 16;
    let hd = 16 * VH;
    let d = ctx.len();
    assert!(d.is_multiple_of(CONTEXT_CHUNK) && w.len() >= d / hd * len && positions.end <= len);
    for chunk in (0..d).step_by(CONTEXT_CHUNK) {
        let first_head = chunk / hd;
        let mut acc = [_mm512_setzero_ps(); V];
        for p in positions.clone() {
            let at = value_at(p) + chunk;
            assert!(at + CONTEXT_CHUNK <= values.len());
            for hh in 0..V / VH {
                let wp = _mm512_set1_ps(w[(first_head + hh) * len + p]);
                for jj in 0..VH {
                    let j = hh * VH + jj;
                    // SAFETY: at + 16·j + 16 ≤ at + CONTEXT_CHUNK ≤ values.len() (checked above).
                    let v = unsafe { _mm512_loadu_ps(values.as_ptr().add(at + 16 * j)) };
                    acc[j] = _mm512_fmadd_ps(wp, v, acc[j]);
                }
            }
        }
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: chunk + 16·j + 16 ≤ d = ctx.len().
            unsafe { _mm512_storeu_ps(ctx.as_mut_ptr().add(chunk + 16 * j), *a) };
        }
    }
}

/// Never called off x86-64 (`fast_context` needs AVX-512).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn context_avx512(
    _: &[f32],
    _: (std::ops::Range<usize>, usize),
    _: usize,
    _: &[f32],
    _: impl Fn(usize) -> usize,
    _: &mut [f32],
) {
    unreachable!("the AVX-512 context runs only on x86-64")
}

/// Heads whose scores a row keeps in a stack array (more take a heap buffer).
const MAX_HEADS_ON_STACK: usize = 32;

fn forward_flex(
    (q, keys, values): (&FlexTensor, &FlexTensor, &FlexTensor),
    heads: usize,
    len: usize,
    rows: KvRows<'_>,
    bias: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let dims = keys.shape().to_vec();
    let (capacity, d) = (dims[1], dims[2]);
    let (q, keys, values) = (
        q.storage::<f32>(),
        keys.storage::<f32>(),
        values.storage::<f32>(),
    );
    let n = q.len() / d.max(1);
    let hd = d / heads.max(1);
    let scale = (hd as f32).powf(-0.5);
    let dots = HeadDots::detect(hd);
    let fast_context = dots == HeadDots::Avx512 && d.is_multiple_of(CONTEXT_CHUNK) && {
        let vectors_per_head = hd / 16;
        CONTEXT_CHUNK.is_multiple_of(hd) && [1, 2, 4, 8, 16].contains(&vectors_per_head)
    };
    let mut context = vec![0.0f32; n * d];
    let mut weights = vec![0.0f32; n * heads * len];
    let row = |(i, (ctx, w)): (usize, (&mut [f32], &mut [f32]))| {
        dispatch(
            #[inline(always)]
            || {
                let qi = &q[i * d..(i + 1) * d];
                // Scores `w` `[heads, len]`: each position's keys read once, all heads together.
                let mut scores = [0.0f32; MAX_HEADS_ON_STACK];
                let mut spilled = Vec::new();
                let s: &mut [f32] = if heads <= MAX_HEADS_ON_STACK {
                    &mut scores[..heads]
                } else {
                    spilled.resize(heads, 0.0);
                    &mut spilled
                };
                // Where position `p`'s key and value rows start in their buffers.
                let at = |p: usize| (rows.row(i, p, len) * capacity + p) * d;
                let bias_row = bias.map(|b| &b[rows.row(i, 0, len) * len..][..len]);
                // Positions before the trailing padding of this row's source: the padded ones
                // (bias −∞, weight exactly 0) are neither read nor multiplied. A batch's sources
                // are padded to its longest, and reading every row's padding cost as much memory
                // traffic as its words when short and long sentences share a batch. The scores
                // and weights stay `[heads, len]`, 0 outside the positions read.
                // A row of nothing but padding (no caller makes one) reads everything, as before.
                let valid = bias_row
                    .map(|b| {
                        len - b
                            .iter()
                            .rev()
                            .take_while(|&&x| x == f32::NEG_INFINITY)
                            .count()
                    })
                    .filter(|&v| v > 0)
                    .unwrap_or(len);
                // Positions before the row's start (a sentence that joined a running search) are
                // skipped the same way. The softmax runs over `start..valid` only, so a row's
                // weights are the same numbers, summed in the same order, whatever padding or
                // earlier positions the batch gives it: its translation does not depend on what
                // it is decoded with.
                let start = rows.start(i).min(valid);
                // Raw dot products first (four positions at a time where AVX-512 runs them), then
                // the scale and the bias, over the positions read.
                let mut first = start;
                if dots == HeadDots::Avx512 {
                    while first + 4 <= valid {
                        let ks = [0, 1, 2, 3].map(|j| &keys[at(first + j)..][..d]);
                        // SAFETY: `HeadDots::Avx512` was detected (AVX-512F, hd a multiple of
                        // 16); `qi` and every `ks[j]` hold d = heads · hd elements, and `w` holds
                        // heads · len ≥ heads · (first + 4) scores.
                        unsafe { head_dots4_avx512(qi, ks, hd, w, len, first) };
                        first += 4;
                    }
                }
                for p in first..valid {
                    dots.run(qi, &keys[at(p)..][..d], hd, s);
                    for (h, &s) in s.iter().enumerate() {
                        w[h * len + p] = s;
                    }
                }
                for p in start..valid {
                    let b = bias_row.map_or(0.0, |b| b[p]);
                    for h in 0..heads {
                        let x = &mut w[h * len + p];
                        *x = *x * scale + b;
                    }
                }
                for wh in w.chunks_exact_mut(len.max(1)) {
                    // Outside `start..valid` the weights stay 0.
                    let wh = &mut wh[start..valid];
                    let max = wh.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                    // Exponentials in a loop of their own (it vectorizes), then a lane sum: one
                    // loop doing both stayed scalar, a sequential float sum.
                    for s in wh.iter_mut() {
                        *s = exp(*s - max);
                    }
                    let inv = 1.0 / sum(wh);
                    for s in wh.iter_mut() {
                        *s *= inv;
                    }
                }
                if fast_context {
                    // SAFETY: `fast_context` holds only with AVX-512F, `hd` one of the sizes
                    // `context_avx512` takes and `d` a multiple of 256; `w` holds heads · len
                    // weights, `ctx` d elements, and every value row `d` elements (checked there).
                    unsafe { context_avx512(w, (start..valid, len), hd, values, at, ctx) };
                    return;
                }
                for p in start..valid {
                    let v = &values[at(p)..][..d];
                    for h in 0..heads {
                        let wp = w[h * len + p];
                        let (c, x) = (&mut ctx[h * hd..(h + 1) * hd], &v[h * hd..(h + 1) * hd]);
                        for (c, x) in c.iter_mut().zip(x) {
                            *c += wp * x;
                        }
                    }
                }
            },
        )
    };
    let per_row = heads * len;
    if n * per_row * hd >= 1 << 16 {
        context
            .par_chunks_mut(d.max(1))
            .zip(weights.par_chunks_mut(per_row.max(1)))
            .enumerate()
            .for_each(row);
    } else {
        context
            .chunks_mut(d.max(1))
            .zip(weights.chunks_mut(per_row.max(1)))
            .enumerate()
            .for_each(row);
    }
    (context, weights)
}

/// [`step_attention`] with tensor operations, for other backends and dtypes: the positions of
/// every row gathered with `select`, then the attention of [`crate::model::transformer`]'s full
/// pass.
fn composite<B: Backend>(
    q: Tensor<B, 2>,
    (keys, values): (&Tensor<B, 3>, &Tensor<B, 3>),
    heads: usize,
    len: usize,
    rows: KvRows<'_>,
    bias: Option<&Tensor<B, 2>>,
) -> (Tensor<B, 2>, Tensor<B, 3>) {
    let [n, d] = q.dims();
    let [width, capacity, _] = keys.dims();
    let hd = d / heads;
    let device = q.device();
    let flat: Vec<i64> = (0..n)
        .flat_map(|i| (0..len).map(move |p| (rows.row(i, p, len) * capacity + p) as i64))
        .collect();
    let flat = Tensor::<B, 1, Int>::from_data(TensorData::new(flat, [n * len]), &device);
    let gather = |t: &Tensor<B, 3>| {
        t.clone()
            .reshape([width * capacity, d])
            .select(0, flat.clone())
            .reshape([n, len, heads, hd])
            .swap_dims(1, 2) // [n, heads, len, hd]
    };
    let (k, v) = (gather(keys), gather(values));
    let q = q
        .reshape([n, heads, 1, hd])
        .mul_scalar((hd as f64).powf(-0.5));
    let scores = q.matmul(k.swap_dims(2, 3)); // [n, heads, 1, len]
    let scores = match bias {
        Some(b) => {
            let first: Vec<i64> = (0..n).map(|i| rows.row(i, 0, len) as i64).collect();
            let first = Tensor::<B, 1, Int>::from_data(TensorData::new(first, [n]), &device);
            scores + b.clone().select(0, first).reshape([n, 1, 1, len])
        }
        None => scores,
    };
    // Positions before a row's start are not its own: −∞.
    let scores = if (0..n).any(|i| rows.start(i) > 0) {
        let before: Vec<f32> = (0..n)
            .flat_map(|i| {
                (0..len).map(move |p| {
                    if p < rows.start(i) {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        scores
            + Tensor::<B, 1>::from_data(TensorData::new(before, [n * len]), &device)
                .reshape([n, 1, 1, len])
    } else {
        scores
    };
    let weights = softmax(scores, 3);
    let context = weights.clone().matmul(v).reshape([n, d]);
    (context, weights.reshape([n, heads, len]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The fused kernel against the tensor operations, through an ancestry table that reads
    /// several rows' positions from one row, and through a per-row map with a padding bias.
    #[test]
    fn fused_step_attention_equals_the_gathered_tensor_operations() {
        Flex::seed(&Default::default(), 11);
        // 128: two heads of 128 make d = 256, the AVX-512 context path.
        for hd in [20, 32, 128] {
            check_against_composite(hd);
        }
    }

    fn check_against_composite(hd: usize) {
        let device = Default::default();
        let (width, capacity, heads, n, len) = (3, 6, 2, 4, 5);
        let d = heads * hd;
        let random = |shape: [usize; 3]| {
            Tensor::<Flex, 3>::random(shape, Distribution::Normal(0.0, 1.0), &device)
        };
        let (keys, values) = (random([width, capacity, d]), random([width, capacity, d]));
        let q = Tensor::<Flex, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &device);
        let ancestry: Vec<u32> = (0..n * len)
            .map(|x| ((x * 7 + x / len) % width) as u32)
            .collect();
        let per_row = [2u32, 0, 2, 1];
        // Rows that joined at positions 0, 2, 4 and 1.
        let starts = [0u32, 2, 4, 1];
        let mut bias = vec![0.0f32; width * len];
        bias[2 * len + 4] = f32::NEG_INFINITY;
        bias[len + 3] = f32::NEG_INFINITY;
        let bias = Tensor::<Flex, 2>::from_data(TensorData::new(bias, [width, len]), &device);
        for (rows, bias) in [
            (
                KvRows::PerPosition {
                    ancestry: &ancestry,
                    starts: None,
                },
                None,
            ),
            (
                KvRows::PerPosition {
                    ancestry: &ancestry,
                    starts: Some(&starts),
                },
                None,
            ),
            (KvRows::PerRow(&per_row), Some(&bias)),
        ] {
            let (c, w) = step_attention(q.clone(), (&keys, &values), heads, len, rows, bias);
            let (c2, w2) = composite(q.clone(), (&keys, &values), heads, len, rows, bias);
            crate::kernels::assert_close(c, c2, 1e-5);
            let w: Vec<f32> = w.into_data().to_vec().unwrap();
            let w2: Vec<f32> = w2.into_data().to_vec().unwrap();
            for (a, b) in w.iter().zip(&w2) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
            if bias.is_some() {
                // Rows 0 and 2 read source row 2, whose position 4 is padding.
                assert_eq!(w[4], 0.0);
                assert_eq!(w[2 * heads * len + len + 4], 0.0);
            }
        }
    }

    /// Every instruction-set path of the scores the CPU has gives the plain loop's result (the
    /// plain path is what a CPU without AVX2 runs: forced here).
    #[test]
    fn head_dots_agree_on_every_path_the_cpu_has() {
        for (heads, hd) in [(3, 64), (4, 8), (2, 16)] {
            check_head_dots(heads, hd);
        }
        assert_eq!(
            HeadDots::detect(20),
            HeadDots::Plain,
            "20 fits no vector width"
        );
    }

    fn check_head_dots(heads: usize, hd: usize) {
        let q: Vec<f32> = (0..heads * hd)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let k: Vec<f32> = (0..heads * hd)
            .map(|i| ((i * 53 % 19) as f32 - 9.0) / 5.0)
            .collect();
        let mut plain = vec![0.0; heads];
        HeadDots::Plain.run(&q, &k, hd, &mut plain);
        let mut paths = vec![HeadDots::detect(hd)];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            paths.push(HeadDots::Avx2);
        }
        for path in paths {
            let mut got = vec![0.0; heads];
            path.run(&q, &k, hd, &mut got);
            for (a, b) in got.iter().zip(&plain) {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{path:?}: {a} vs {b}"
                );
            }
        }
        assert_eq!(
            HeadDots::detect(20),
            HeadDots::Plain,
            "20 fits no vector width"
        );
    }
}
