//! Bahdanau's attention for one search step, in one pass per hypothesis, over source memory that
//! a sentence's hypotheses share (Bahdanau et al. 2015, §A.1.2 and §3.1, eqs. 5–6):
//! `e_is = vᵀ tanh(k_ms + q_i)`, `α_is = softmax_s(e_is + m_ms)`, `c_i = Σ_s α_is h_ms`, where
//! hypothesis `i` reads memory row `m = rows[i]`.
//!
//! Beam search keeps `beam` hypotheses of each sentence, all reading the same source. Copying the
//! keys and values once per hypothesis made every step read five copies of them (≈ 5 MB for 128
//! sentences of the quickstart model, beyond L2: the weighted sum alone was 6 % of a batched
//! decode, bound by memory), and reordering hypotheses copied them again. Here the memory keeps one
//! row per sentence and each hypothesis names its row. The step also writes the context and the
//! weights as two contiguous tensors, where [`super::additive_energy`] and [`super::attend`] need a
//! transposed copy of the energies between them and give the context as a strided view (which
//! the next layer copied). Inference only: no backward pass. The arithmetic is theirs, in the same
//! order, so the results are the same to the bit, unless the memory carries `e^{2k}`
//! ([`exp_keys`]).
//!
//! With `e^{2k}` prepared once per batch, a step evaluates `tanh(k + q) = 1 − 2/(e^{2k}·e^{2q} + 1)`
//! with one `exp` per query element and one division per key element, instead of a `tanh` per key
//! element (≈ 45 vector operations): `tanh` and `exp` were a third of a batched beam search of
//! the quickstart model, two thirds of them the energies' (≈ 16 source positions × 64 dimensions
//! per hypothesis and step). Both factors stay normal floats while `|k|, |q| ≤ 20`
//! ([`EXP_LIMIT`]); a query outside it takes the `tanh` path. The error against the true `tanh` is
//! 1.8·10⁻⁷ at worst (tested over that range against 3·10⁻⁷; the `tanh` path: 10⁻⁷), far below what
//! decides a search.

use super::additive_energy::energy;
use super::attend::{mix, row_weights};
use super::simd_math::{dispatch, exp, sum};
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use rayon::prelude::*;

/// The source side of the attention, prepared once per batch.
#[derive(Debug, Clone, Copy)]
pub struct AdditiveMemory<'a, B: Backend> {
    /// Projected keys `U h_s + b`, time-major `[src_len, memory_rows, attn]`.
    pub keys: &'a Tensor<B, 3>,
    /// The energy vector `v` `[attn]`.
    pub v: &'a Tensor<B, 1>,
    /// Additive mask `[memory_rows, src_len]`: 0, or −∞ on padding.
    pub bias: &'a Tensor<B, 2>,
    /// The values the context mixes `[memory_rows, src_len, width]`.
    pub values: &'a Tensor<B, 3>,
    /// `e^{2k}` of every key, laid out as `keys` ([`exp_keys`]); `None`: every step evaluates
    /// `tanh`.
    pub exp_keys: Option<&'a Tensor<B, 3>>,
}

/// Keys and queries within `±EXP_LIMIT` take the `e^{2k}·e^{2q}` path: the product then lies in
/// `[e^{−80}, e^{80}]`, normal floats (the smallest is 1.2·10⁻³⁸, the largest 3.4·10³⁸).
pub const EXP_LIMIT: f32 = 20.0;

/// `e^{2k}` of the keys `[src_len, memory_rows, attn]`, for [`AdditiveMemory::exp_keys`], on
/// burn's CPU backend with `f32` keys all within [`EXP_LIMIT`]; otherwise `None` (NaN included).
pub fn exp_keys<B: Backend>(keys: &Tensor<B, 3>) -> Option<Tensor<B, 3>> {
    if keys.dtype() != DType::F32 {
        return None;
    }
    let k = super::cast::<_, Tensor<Flex, 3>>(keys.clone())
        .ok()?
        .into_primitive()
        .tensor()
        .to_contiguous();
    let k = k.storage::<f32>();
    if !k.iter().all(|x| x.abs() <= EXP_LIMIT) {
        return None;
    }
    let mut out = vec![0f32; k.len()];
    out.par_chunks_mut(4096)
        .zip(k.par_chunks(4096))
        .for_each(|(e, k)| {
            dispatch(
                #[inline(always)]
                || {
                    for (e, &k) in e.iter_mut().zip(k) {
                        *e = exp(2.0 * k);
                    }
                },
            )
        });
    Some(super::cast_back(Tensor::<Flex, 3>::from_primitive(
        TensorPrimitive::Float(FlexTensor::from_data(TensorData::new(out, keys.dims()))),
    )))
}

/// Whether [`additive_step`] runs as its kernel on this backend (burn's CPU backend). Elsewhere it
/// gathers every hypothesis's memory row at every step, which costs more than keeping copies, so
/// the model keeps them there.
pub fn shares_memory<B: Backend>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<Flex>()
}

/// Context `[n, width]` and weights `[n, src_len]` for the projected queries `W s_i` `[n, attn]`;
/// hypothesis `i` reads memory row `rows[i]` (`rows`: `[n]`).
pub fn additive_step<B: Backend>(
    query: Tensor<B, 2>,
    memory: AdditiveMemory<'_, B>,
    rows: &[u32],
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let all_f32 = [
        query.dtype(),
        memory.keys.dtype(),
        memory.v.dtype(),
        memory.bias.dtype(),
        memory.values.dtype(),
    ]
    .iter()
    .all(|&t| t == DType::F32);
    if !all_f32 {
        return composite(query, memory, rows);
    }
    fn flex<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<FlexTensor> {
        super::cast::<_, Tensor<Flex, D>>(t.clone())
            .ok()
            .map(|t| t.into_primitive().tensor().to_contiguous())
    }
    let (Some(q), Some(k), Some(v), Some(m), Some(h)) = (
        flex(&query),
        flex(memory.keys),
        flex(memory.v),
        flex(memory.bias),
        flex(memory.values),
    ) else {
        return composite(query, memory, rows);
    };
    let ek = memory
        .exp_keys
        .filter(|e| e.dtype() == DType::F32 && e.dims() == memory.keys.dims())
        .and_then(flex);
    let [n, attn] = query.dims();
    let [len, mem, _] = memory.keys.dims();
    let width = memory.values.dims()[2];
    // The model builds these shapes and the search the rows; a mismatch is a bug in Rosetta.
    assert!(
        memory.keys.dims()[2] == attn
            && memory.v.dims() == [attn]
            && memory.bias.dims() == [mem, len]
            && memory.values.dims()[..2] == [mem, len]
            && rows.len() == n
            && rows.iter().all(|&r| (r as usize) < mem),
        "additive step: query [{n}, {attn}], keys {:?}, bias {:?}, values {:?}, {} rows",
        memory.keys.dims(),
        memory.bias.dims(),
        memory.values.dims(),
        rows.len()
    );
    let (context, weights) = forward(
        Operands {
            q: q.storage::<f32>(),
            k: k.storage::<f32>(),
            v: v.storage::<f32>(),
            m: m.storage::<f32>(),
            h: h.storage::<f32>(),
            ek: ek.as_ref().map(|e| e.storage::<f32>()),
            v_sum: sum(v.storage::<f32>()),
        },
        [mem, len, width],
        rows,
    );
    let wrap = |values: Vec<f32>, shape: [usize; 2]| {
        super::cast_back(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(
            FlexTensor::from_data(TensorData::new(values, shape)),
        )))
    };
    (wrap(context, [n, width]), wrap(weights, [n, len]))
}

/// The same with tensor operations (each hypothesis's memory row gathered), for other backends.
fn composite<B: Backend>(
    query: Tensor<B, 2>,
    memory: AdditiveMemory<'_, B>,
    rows: &[u32],
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let n = rows.len();
    let ids: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
    let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n]), &query.device());
    let keys = memory.keys.clone().select(1, ids.clone());
    let scores = super::additive_energy(keys, query, memory.v.clone()).swap_dims(0, 1);
    super::attend(
        scores,
        memory.bias.clone().select(0, ids.clone()),
        memory.values.clone().select(0, ids),
    )
}

/// The contiguous inputs: queries `[n, attn]`, keys `[len, mem, attn]`, `v` `[attn]`, mask
/// `[mem, len]`, values `[mem, len, width]`, `e^{2k}` as the keys, and `Σv` (once per step,
/// for the `e^{2k}` path).
struct Operands<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    m: &'a [f32],
    h: &'a [f32],
    ek: Option<&'a [f32]>,
    v_sum: f32,
}

/// Hypotheses in parallel, a few per task (a hypothesis is a few thousand operations).
fn forward(x: Operands<'_>, [mem, len, width]: [usize; 3], rows: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let attn = x.v.len();
    let n = rows.len();
    let mut context = vec![0f32; n * width];
    let mut weights = vec![0f32; n * len];
    if len == 0 || attn == 0 {
        return (context, weights);
    }
    context
        .par_chunks_mut(width.max(1))
        .zip(weights.par_chunks_mut(len))
        .zip(x.q.par_chunks(attn))
        .zip(rows.par_iter())
        .with_min_len(4)
        .for_each_init(
            // `t`: one position's terms, then (on the `e^{2k}` path) `e^{2q}`.
            || (vec![0f32; 2 * attn], vec![0f32; len]),
            |(t, energies), (((c, alpha), q), &row)| {
                dispatch(
                    #[inline(always)]
                    || hypothesis(c, alpha, (t, energies), q, &x, [mem, len, row as usize]),
                )
            },
        );
    (context, weights)
}

/// One hypothesis reading memory row `row`: its energies, weights and context, with the code of
/// [`super::additive_energy`] and [`super::attend`].
#[inline(always)]
fn hypothesis(
    context: &mut [f32],
    alpha: &mut [f32],
    (t, energies): (&mut [f32], &mut [f32]),
    q: &[f32],
    x: &Operands<'_>,
    [mem, len, row]: [usize; 3],
) {
    let attn = q.len();
    match x.ek {
        Some(ek) if q.iter().all(|q| q.abs() <= EXP_LIMIT) => {
            // vᵀ tanh(k + q) = Σv − 2·Σ_j v_j / (e^{2k_j}·e^{2q_j} + 1).
            let (t, eq) = t.split_at_mut(attn);
            for (e, &q) in eq.iter_mut().zip(q) {
                *e = exp(2.0 * q);
            }
            for (s, e) in energies.iter_mut().enumerate() {
                let ek = &ek[(s * mem + row) * attn..][..attn];
                for (((t, &k), &q), &v) in t.iter_mut().zip(ek).zip(&*eq).zip(x.v) {
                    *t = v / (k * q + 1.0);
                }
                *e = x.v_sum - 2.0 * sum(t);
            }
        }
        _ => {
            let t = &mut t[..attn];
            for (s, e) in energies.iter_mut().enumerate() {
                *e = energy(t, &x.k[(s * mem + row) * attn..][..attn], q, x.v);
            }
        }
    }
    row_weights(alpha, energies, &x.m[row * len..][..len]);
    mix(
        context,
        alpha,
        &x.h[row * len * context.len()..][..len * context.len()],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values as values;

    type B = Flex;

    fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    /// Every hypothesis gets what the copied-memory path gives its memory row, to the bit, padding
    /// and a fully padded tail included.
    #[test]
    fn equals_energies_and_attend_on_copied_memory() {
        let (len, mem, attn, width) = (7, 3, 64, 300);
        let rows = [2u32, 0, 0, 1, 2, 2, 1];
        let n = rows.len();
        let keys = tensor(values(len * mem * attn, 1), [len, mem, attn]);
        let v = tensor(values(attn, 2), [attn]);
        let mut mask = vec![0f32; mem * len];
        mask[len - 2..len].fill(f32::NEG_INFINITY); // memory row 0: two padded positions
        mask[2 * len - 1] = f32::NEG_INFINITY; // row 1: one
        let bias = tensor(mask, [mem, len]);
        let states = tensor(values(mem * len * width, 3), [mem, len, width]);
        let query = tensor(values(n * attn, 4), [n, attn]);
        let memory = AdditiveMemory {
            keys: &keys,
            v: &v,
            bias: &bias,
            values: &states,
            exp_keys: None,
        };
        let (context, weights) = additive_step(query.clone(), memory, &rows);
        let (want_context, want_weights) = composite(query, memory, &rows);
        assert_eq!(context.dims(), [n, width]);
        assert_eq!(weights.dims(), [n, len]);
        assert_eq!(
            context.into_data().to_vec::<f32>().unwrap(),
            want_context.into_data().to_vec::<f32>().unwrap()
        );
        let weights = weights.into_data().to_vec::<f32>().unwrap();
        assert_eq!(weights, want_weights.into_data().to_vec::<f32>().unwrap());
        // Hypothesis 1 reads row 0, whose last two positions are padding.
        assert_eq!(&weights[len + len - 2..2 * len], &[0.0, 0.0]);
    }

    /// Memory and queries of the step tests: keys scaled by `scale`.
    fn operands(scale: f32) -> ([usize; 4], [Tensor<B, 3>; 2], Tensor<B, 1>, Tensor<B, 2>) {
        let (len, mem, attn, width) = (9, 3, 64, 40);
        let keys: Vec<f32> = values(len * mem * attn, 5)
            .into_iter()
            .map(|k| k * scale)
            .collect();
        let mut mask = vec![0f32; mem * len];
        mask[len - 3..len].fill(f32::NEG_INFINITY);
        (
            [len, mem, attn, width],
            [
                tensor(keys, [len, mem, attn]),
                tensor(values(mem * len * width, 6), [mem, len, width]),
            ],
            tensor(values(attn, 7), [attn]),
            tensor(mask, [mem, len]),
        )
    }

    /// The `e^{2k}·e^{2q}` path gives what `tanh` gives within float rounding (its error is a few
    /// 10⁻⁷ per energy term), and a query beyond [`EXP_LIMIT`] takes the `tanh` path, to the bit.
    #[test]
    fn exp_keys_give_the_tanh_energies_and_a_large_query_falls_back() {
        let ([len, mem, attn, _], [keys, states], v, bias) = operands(4.0);
        let rows = [1u32, 0, 2, 2, 1];
        let n = rows.len();
        let mut q = values(n * attn, 8);
        for x in &mut q {
            *x *= 6.0;
        }
        q[3 * attn + 5] = EXP_LIMIT * 1.5; // hypothesis 3: one element beyond the limit
        let query = tensor(q, [n, attn]);
        let exp = exp_keys(&keys).expect("keys within the limit");
        let step = |exp_keys| {
            let memory = AdditiveMemory {
                keys: &keys,
                v: &v,
                bias: &bias,
                values: &states,
                exp_keys,
            };
            let (c, w) = additive_step(query.clone(), memory, &rows);
            (
                c.into_data().to_vec::<f32>().unwrap(),
                w.into_data().to_vec::<f32>().unwrap(),
            )
        };
        let (context, weights) = step(Some(&exp));
        let (want_context, want_weights) = step(None);
        let width = context.len() / n;
        for (i, (got, want)) in weights.iter().zip(&want_weights).enumerate() {
            let tolerance = if i / len == 3 { 0.0 } else { 2e-6 };
            assert!(
                (got - want).abs() <= tolerance,
                "weight {i}: {got} vs {want}"
            );
        }
        for (i, (got, want)) in context.iter().zip(&want_context).enumerate() {
            let tolerance = if i / width == 3 { 0.0 } else { 2e-6 };
            assert!(
                (got - want).abs() <= tolerance,
                "context {i}: {got} vs {want}"
            );
        }
        // The other hypotheses did take the `e^{2k}` path: their rounding differs somewhere.
        assert_ne!(weights, want_weights);
        // Padding still weighs exactly 0 (row 0's last three positions, read by hypothesis 1).
        assert_eq!(&weights[2 * len - 3..2 * len], &[0.0; 3]);
        assert!(mem * len * attn == exp.dims().iter().product::<usize>());
    }

    /// `1 − 2/(e^{2k}·e^{2q} + 1)` as the step evaluates it (`v = 1`), against `tanh(k + q)` in
    /// `f64`, over keys and queries across `±EXP_LIMIT`.
    #[test]
    fn the_exp_form_is_within_3e_7_of_tanh() {
        let grid: Vec<f32> = (0..=1000)
            .map(|i| -EXP_LIMIT + 2.0 * EXP_LIMIT * i as f32 / 1000.0)
            .chain((0..=1000).map(|i| -3.0 + 6.0 * i as f32 / 1000.0))
            .collect();
        let mut worst = 0f64;
        for &k in &grid {
            let ek = exp(2.0 * k);
            for &q in &grid {
                let eq = exp(2.0 * q);
                let got = 1.0 - 2.0 * (1.0 / (ek * eq + 1.0));
                let want = (f64::from(k) + f64::from(q)).tanh();
                worst = worst.max((f64::from(got) - want).abs());
            }
        }
        assert!(worst <= 3e-7, "worst error {worst:e}");
    }

    #[test]
    fn exp_keys_decline_keys_beyond_the_limit_or_nan() {
        let (_, [keys, _], _, _) = operands(1.0);
        assert!(exp_keys(&keys).is_some());
        let (_, [far, _], _, _) = operands(EXP_LIMIT * 1.01);
        assert!(exp_keys(&far).is_none());
        let [len, mem, attn] = keys.dims();
        let mut nan = keys.into_data().to_vec::<f32>().unwrap();
        nan[17] = f32::NAN;
        assert!(exp_keys(&tensor(nan, [len, mem, attn])).is_none());
    }
}
