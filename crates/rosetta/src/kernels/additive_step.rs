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
//! order, so the results are the same to the bit.

use super::additive_energy::energy;
use super::attend::{mix, row_weights};
use super::simd_math::dispatch;
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
/// `[mem, len]`, values `[mem, len, width]`.
struct Operands<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    m: &'a [f32],
    h: &'a [f32],
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
            || (vec![0f32; attn], vec![0f32; len]),
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
    for (s, e) in energies.iter_mut().enumerate() {
        *e = energy(t, &x.k[(s * mem + row) * attn..][..attn], q, x.v);
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
}
