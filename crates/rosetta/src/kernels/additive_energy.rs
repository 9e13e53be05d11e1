//! Bahdanau's attention energies `e_sb = vᵀ tanh(k_sb + q_b)` (Bahdanau et al. 2015, §A.1.2) as
//! one operation with its own backward.
//!
//! Written with tensor operations, every decoder step stores `tanh(k + q)`, `[src_len, batch, attn]`,
//! for the backward pass and runs five passes over it; here the forward pass writes only the
//! energies and the backward pass recomputes the `tanh`, so a step keeps nothing but its inputs.

use super::simd_math::{dispatch, sum, tanh};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::activation;
use rayon::prelude::*;

/// Energies `[src_len, batch]` from time-major keys `[src_len, batch, attn]`, the projected query
/// `[batch, attn]` and the energy vector `v` `[attn]`.
pub fn additive_energy<B: Backend>(
    keys: Tensor<B, 3>,
    query: Tensor<B, 2>,
    v: Tensor<B, 1>,
) -> Tensor<B, 2> {
    super::Fused3 {
        forward: forward_flex,
        backward: backward_flex,
        composite,
    }
    .run(keys, query, v)
}

/// The same with tensor operations, for other backends.
fn composite<B: Backend>(keys: Tensor<B, 3>, query: Tensor<B, 2>, v: Tensor<B, 1>) -> Tensor<B, 2> {
    let [len, batch, attn] = keys.dims();
    let q = query.reshape([1, batch * attn]);
    let t = activation::tanh(keys.reshape([len, batch * attn]) + q).reshape([len * batch, attn]);
    t.matmul(v.reshape([attn, 1])).reshape([len, batch])
}

/// Shapes `[len, batch, attn]` of the operands, checked against each other.
fn dims(keys: &FlexTensor, query: &FlexTensor, v: &FlexTensor) -> [usize; 3] {
    let k = keys.shape().to_vec();
    let (q, v) = (query.shape().to_vec(), v.shape().to_vec());
    // The model builds these shapes itself; a mismatch is a bug in Rosetta, not bad input.
    assert!(
        k.len() == 3 && q == [k[1], k[2]] && v == [k[2]],
        "additive energy: keys {k:?}, query {q:?}, v {v:?}"
    );
    [k[0], k[1], k[2]]
}

fn forward_flex(keys: &FlexTensor, query: &FlexTensor, v: &FlexTensor) -> FlexTensor {
    let [len, batch, attn] = dims(keys, query, v);
    let (k, q, v) = (
        keys.storage::<f32>(),
        query.storage::<f32>(),
        v.storage::<f32>(),
    );
    let mut out = vec![0f32; len * batch];
    out.par_chunks_mut(batch)
        .zip(k.par_chunks(batch * attn))
        .for_each(|(e, k)| {
            dispatch(
                #[inline(always)]
                || energy_block(e, k, q, v),
            )
        });
    FlexTensor::from_data(TensorData::new(out, [len, batch]))
}

/// Gradients for keys `[len, batch, attn]`, query `[batch, attn]` and `v` `[attn]` from the
/// gradient of the energies `g` `[len, batch]`. Every sum runs in a fixed order, so results do
/// not depend on how rayon schedules the work.
fn backward_flex(
    keys: &FlexTensor,
    query: &FlexTensor,
    v: &FlexTensor,
    grad: &FlexTensor,
) -> [FlexTensor; 3] {
    let [len, batch, attn] = dims(keys, query, v);
    let (k, q, v) = (
        keys.storage::<f32>(),
        query.storage::<f32>(),
        v.storage::<f32>(),
    );
    let g = grad.storage::<f32>();
    let row = batch * attn;
    let mut grad_keys = vec![0f32; len * row];
    // Per source position: ∂/∂k = g·v·(1 − t²), and that position's share of ∂/∂v = Σ_b g·t.
    let mut grad_v_parts = vec![0f32; len * attn];
    grad_keys
        .par_chunks_mut(row)
        .zip(grad_v_parts.par_chunks_mut(attn))
        .enumerate()
        .for_each(|(s, (gk, gv))| {
            let (k, g) = (&k[s * row..][..row], &g[s * batch..][..batch]);
            dispatch(
                #[inline(always)]
                || energy_grad_block(gk, gv, k, q, v, g),
            )
        });
    // ∂/∂q_b = Σ_s ∂/∂k_sb, summed over s in order for each column block.
    let mut grad_query = vec![0f32; row];
    grad_query
        .par_chunks_mut(attn)
        .enumerate()
        .for_each(|(b, gq)| {
            for s in 0..len {
                for (gq, &gk) in gq.iter_mut().zip(&grad_keys[s * row + b * attn..][..attn]) {
                    *gq += gk;
                }
            }
        });
    let mut grad_v = vec![0f32; attn];
    for part in grad_v_parts.chunks_exact(attn) {
        for (gv, &p) in grad_v.iter_mut().zip(part) {
            *gv += p;
        }
    }
    [
        FlexTensor::from_data(TensorData::new(grad_keys, [len, batch, attn])),
        FlexTensor::from_data(TensorData::new(grad_query, [batch, attn])),
        FlexTensor::from_data(TensorData::new(grad_v, [attn])),
    ]
}

/// Energies of one source position for every batch row: `e` `[batch]`, `k` and `q` `[batch, attn]`.
#[inline(always)]
fn energy_block(e: &mut [f32], k: &[f32], q: &[f32], v: &[f32]) {
    let attn = v.len();
    let mut t = vec![0f32; attn];
    for ((e, kb), qb) in e
        .iter_mut()
        .zip(k.chunks_exact(attn))
        .zip(q.chunks_exact(attn))
    {
        *e = energy(&mut t, kb, qb, v);
    }
}

/// `vᵀ tanh(k + q)` of one row and source position, `t` `[attn]` as scratch (also the search
/// step's, [`super::additive_step`], so that both give the same bits).
#[inline(always)]
pub(super) fn energy(t: &mut [f32], k: &[f32], q: &[f32], v: &[f32]) -> f32 {
    for (((t, &k), &q), &v) in t.iter_mut().zip(k).zip(q).zip(v) {
        *t = v * tanh(k + q);
    }
    sum(t)
}

/// Backward of [`energy_block`]: writes `∂/∂k` (`gk`, `[batch, attn]`) and adds this position's
/// share of `∂/∂v` to `gv`; `g` is the energies' gradient `[batch]`.
#[inline(always)]
fn energy_grad_block(gk: &mut [f32], gv: &mut [f32], k: &[f32], q: &[f32], v: &[f32], g: &[f32]) {
    let attn = v.len();
    let rows = gk
        .chunks_exact_mut(attn)
        .zip(k.chunks_exact(attn))
        .zip(q.chunks_exact(attn));
    for (((gk, kb), qb), &g) in rows.zip(g) {
        for ((((gk, gv), &k), &q), &v) in gk.iter_mut().zip(gv.iter_mut()).zip(kb).zip(qb).zip(v) {
            let t = tanh(k + q);
            *gv += g * t;
            *gk = g * v * (1.0 - t * t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    type A = Autodiff<Flex>;

    fn inputs<B: Backend>(device: &B::Device) -> (Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 1>) {
        B::seed(device, 7);
        (
            Tensor::random([5, 3, 19], Distribution::Normal(0.0, 1.5), device),
            Tensor::random([3, 19], Distribution::Normal(0.0, 1.0), device),
            Tensor::random([19], Distribution::Normal(0.0, 1.0), device),
        )
    }

    fn close<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) {
        crate::kernels::assert_close(a, b, 1e-5);
    }

    #[test]
    fn forward_matches_tensor_operations() {
        let (k, q, v) = inputs::<Flex>(&Default::default());
        close(
            additive_energy(k.clone(), q.clone(), v.clone()),
            composite(k, q, v),
        );
    }

    #[test]
    fn gradients_match_tensor_operations() {
        let device = Default::default();
        let (k, q, v) = inputs::<Flex>(&device);
        let track = |k: Tensor<Flex, 3>, q: Tensor<Flex, 2>, v: Tensor<Flex, 1>| {
            (
                Tensor::<A, 3>::from_inner(k).require_grad(),
                Tensor::<A, 2>::from_inner(q).require_grad(),
                Tensor::<A, 1>::from_inner(v).require_grad(),
            )
        };
        // A non-uniform upstream gradient, so every term of the chain rule is exercised.
        let w = Tensor::<A, 2>::from_inner(Tensor::random(
            [5, 3],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        let (k1, q1, v1) = track(k.clone(), q.clone(), v.clone());
        let grads = (additive_energy(k1.clone(), q1.clone(), v1.clone()) * w.clone())
            .sum()
            .backward();
        let (k2, q2, v2) = track(k, q, v);
        let grads2 = (composite(k2.clone(), q2.clone(), v2.clone()) * w)
            .sum()
            .backward();
        close(k1.grad(&grads).unwrap(), k2.grad(&grads2).unwrap());
        close(q1.grad(&grads).unwrap(), q2.grad(&grads2).unwrap());
        close(v1.grad(&grads).unwrap(), v2.grad(&grads2).unwrap());
    }
}
