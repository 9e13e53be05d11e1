//! The second half of an attention step as one operation with its own backward: masked softmax
//! over the source positions and the weighted sum of the encoder states (Bahdanau et al. 2015,
//! §3.1, eqs. 5–6; Luong et al. 2015, §3.1):
//! `α_bs = softmax_s(e_bs + m_bs)`, `c_b = Σ_s α_bs h_bs`.
//!
//! With tensor operations a decoder step runs an addition, a softmax of five operations and a
//! batched product of `batch` one-row matrices, each recorded for the backward pass; here it is
//! one pass per row, rows in parallel, and the backward pass recomputes `α` from its inputs.

use super::simd_math::{dispatch, softmax_in_place};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::activation::softmax;
use rayon::prelude::*;

/// Context `[batch, enc_out]` and weights `[batch, src_len]` from the scores `[batch, src_len]`,
/// the additive mask `[batch, src_len]` (0, or −∞ on padding) and the encoder states
/// `[batch, src_len, enc_out]`.
pub fn attend<B: Backend>(
    scores: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    values: Tensor<B, 3>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [batch, len, width] = values.dims();
    // One output holds both results, `[context; weights]` per row, because an operation here has
    // a single output.
    let both = super::Fused3 {
        forward: forward_flex,
        backward: backward_flex,
        composite,
    }
    .run(scores, mask, values);
    (
        both.clone().slice([0..batch, 0..width]),
        both.slice([0..batch, width..width + len]),
    )
}

/// The same with tensor operations, for other backends: `[context; weights]` per row.
fn composite<B: Backend>(
    scores: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    values: Tensor<B, 3>,
) -> Tensor<B, 2> {
    let [batch, len, width] = values.dims();
    let weights = softmax(scores + mask, 1); // [batch, src_len]
    let context = weights
        .clone()
        .reshape([batch, 1, len])
        .matmul(values)
        .reshape([batch, width]);
    Tensor::cat(vec![context, weights], 1)
}

/// `[batch, src_len, enc_out]`, checked against the other operands.
fn dims(scores: &FlexTensor, mask: &FlexTensor, values: &FlexTensor) -> [usize; 3] {
    let (s, m, v) = (
        scores.shape().to_vec(),
        mask.shape().to_vec(),
        values.shape().to_vec(),
    );
    // The attention builds these shapes itself; a mismatch is a bug in Rosetta, not bad input.
    assert!(
        v.len() == 3 && s == [v[0], v[1]] && m == s,
        "attend: scores {s:?}, mask {m:?}, values {v:?}"
    );
    [v[0], v[1], v[2]]
}

/// The weights of one row into `alpha`: softmax of `scores + mask` (NaN when every position is
/// masked, as the tensor form gives).
#[inline(always)]
pub(super) fn row_weights(alpha: &mut [f32], scores: &[f32], mask: &[f32]) {
    for ((a, &s), &m) in alpha.iter_mut().zip(scores).zip(mask) {
        *a = s + m;
    }
    softmax_in_place(alpha);
}

/// `context += Σ_s α_s h_s` for one row: `states` `[len, width]`, each element summing its
/// positions in order.
#[inline(always)]
pub(super) fn mix(context: &mut [f32], alpha: &[f32], states: &[f32]) {
    for (&a, h) in alpha.iter().zip(states.chunks_exact(context.len().max(1))) {
        for (c, &x) in context.iter_mut().zip(h) {
            *c += a * x;
        }
    }
}

fn forward_flex(scores: &FlexTensor, mask: &FlexTensor, values: &FlexTensor) -> FlexTensor {
    let [batch, len, width] = dims(scores, mask, values);
    let (s, m, v) = (
        scores.storage::<f32>(),
        mask.storage::<f32>(),
        values.storage::<f32>(),
    );
    let row = width + len;
    let mut out = vec![0f32; batch * row];
    if len > 0 {
        out.par_chunks_mut(row.max(1))
            .enumerate()
            .for_each(|(b, out)| {
                dispatch(
                    #[inline(always)]
                    || {
                        let (context, alpha) = out.split_at_mut(width);
                        row_weights(alpha, &s[b * len..][..len], &m[b * len..][..len]);
                        mix(context, alpha, &v[b * len * width..][..len * width]);
                    },
                )
            });
    }
    FlexTensor::from_data(TensorData::new(out, [batch, row]))
}

/// Gradients of the scores, the mask and the states from the gradient `g` of `[context; weights]`.
fn backward_flex(
    scores: &FlexTensor,
    mask: &FlexTensor,
    values: &FlexTensor,
    g: &FlexTensor,
) -> [FlexTensor; 3] {
    let [batch, len, width] = dims(scores, mask, values);
    let (s, m, v, g) = (
        scores.storage::<f32>(),
        mask.storage::<f32>(),
        values.storage::<f32>(),
        g.storage::<f32>(),
    );
    let row = width + len;
    let mut g_scores = vec![0f32; batch * len];
    let mut g_values = vec![0f32; batch * len * width];
    if len > 0 {
        g_scores
            .par_chunks_mut(len)
            .zip(g_values.par_chunks_mut(len * width))
            .enumerate()
            .for_each(|(b, (de, dv))| {
                dispatch(
                    #[inline(always)]
                    || {
                        let (g_context, g_alpha) = g[b * row..][..row].split_at(width);
                        let mut alpha = vec![0f32; len];
                        row_weights(&mut alpha, &s[b * len..][..len], &m[b * len..][..len]);
                        let states = v[b * len * width..][..len * width].chunks_exact(width);
                        // ∂L/∂α_s = g_α_s + g_c · h_s; ∂h_s = α_s g_c.
                        for (((d, &a), h), dh) in de
                            .iter_mut()
                            .zip(&alpha)
                            .zip(states)
                            .zip(dv.chunks_exact_mut(width))
                        {
                            let mut dot = 0.0;
                            for ((dh, &x), &gc) in dh.iter_mut().zip(h).zip(g_context) {
                                dot += gc * x;
                                *dh = a * gc;
                            }
                            *d = dot;
                        }
                        for (d, &ga) in de.iter_mut().zip(g_alpha) {
                            *d += ga;
                        }
                        // Softmax: ∂L/∂e_s = α_s (∂L/∂α_s − Σ_t α_t ∂L/∂α_t).
                        let mean: f32 = de.iter().zip(&alpha).map(|(d, a)| d * a).sum();
                        for (d, &a) in de.iter_mut().zip(&alpha) {
                            *d = a * (*d - mean);
                        }
                    },
                )
            });
    }
    let g_mask = g_scores.clone();
    [
        FlexTensor::from_data(TensorData::new(g_scores, [batch, len])),
        FlexTensor::from_data(TensorData::new(g_mask, [batch, len])),
        FlexTensor::from_data(TensorData::new(g_values, [batch, len, width])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    type A = Autodiff<Flex>;

    fn close<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) {
        crate::kernels::assert_close(a, b, 2e-6);
    }

    /// Values and gradients against the tensor-operation form, with a padded row, and an upstream
    /// gradient reaching both the context and the weights.
    #[test]
    fn forward_and_gradients_match_tensor_operations() {
        let device = Default::default();
        Flex::seed(&device, 12);
        let (batch, len, width) = (3, 5, 6);
        let scores =
            Tensor::<Flex, 2>::random([batch, len], Distribution::Normal(0.0, 2.0), &device);
        let values =
            Tensor::<Flex, 3>::random([batch, len, width], Distribution::Normal(0.0, 1.0), &device);
        let mut m = vec![0f32; batch * len];
        m[len - 1] = f32::NEG_INFINITY;
        m[len - 2] = f32::NEG_INFINITY;
        let mask = Tensor::<Flex, 2>::from_data(TensorData::new(m, [batch, len]), &device);
        let wc = Tensor::<A, 2>::random([batch, width], Distribution::Normal(0.0, 1.0), &device);
        let wa = Tensor::<A, 2>::random([batch, len], Distribution::Normal(0.0, 1.0), &device);

        let track2 = |t: &Tensor<Flex, 2>| Tensor::<A, 2>::from_inner(t.clone()).require_grad();
        let track3 = |t: &Tensor<Flex, 3>| Tensor::<A, 3>::from_inner(t.clone()).require_grad();
        let mask_a = Tensor::<A, 2>::from_inner(mask.clone());

        let (s1, v1) = (track2(&scores), track3(&values));
        let (c1, a1) = attend(s1.clone(), mask_a.clone(), v1.clone());
        let (s2, v2) = (track2(&scores), track3(&values));
        let both = composite(s2.clone(), mask_a, v2.clone());
        let c2 = both.clone().slice([0..batch, 0..width]);
        let a2 = both.slice([0..batch, width..width + len]);
        close(c1.clone().inner(), c2.clone().inner());
        close(a1.clone().inner(), a2.clone().inner());
        let g1 = ((c1 * wc.clone()).sum() + (a1 * wa.clone()).sum()).backward();
        let g2 = ((c2 * wc).sum() + (a2 * wa).sum()).backward();
        close(s1.grad(&g1).unwrap(), s2.grad(&g2).unwrap());
        close(v1.grad(&g1).unwrap(), v2.grad(&g2).unwrap());
    }
}
