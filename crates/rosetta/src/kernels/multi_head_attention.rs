//! Multi-head scaled dot-product attention over whole sequences (Vaswani et al. 2017, §3.2.1–3.2.2)
//! as one operation with its own backward, for training and teacher-forced passes:
//! `softmax(Q_h K_hᵀ + mask) V_h` for every head `h`, on the projected `[batch, len, d_model]`
//! tensors as they are.
//!
//! As tensor operations a head is a strided view of the projections (`reshape` + `swap_dims`), and
//! the view costs copies: merging the heads back before the output projection, and in the backward
//! pass the gradients of every view, each a strided walk through burn-flex's generic path. With
//! the bias addition, the five operations of the softmax, the dropout mask and their backward
//! passes, that was about a tenth of a Transformer training step (`perf`, the `vs_pytorch` shape).
//! Here the products read each head in place through strides (`gemm` takes any row and column
//! stride), the softmax is one pass per row, and the backward pass uses the saved weights:
//! `dS = P ⊙ (dP − rowsum(dP ⊙ P))` (the softmax's Jacobian), then `dQ = dS K`, `dK = dSᵀ Q`,
//! `dV = Pᵀ dC` per head.

use super::linear::product_into;
use super::simd_math::{dispatch, softmax_in_place};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;
use std::sync::Arc;

/// Which keys a query may read.
#[derive(Debug)]
pub enum AttentionMask<'a, B: Backend> {
    /// Additive key bias `[batch, tk]`: 0 where a key may be read, −∞ on padding.
    Keys(&'a Tensor<B, 2>),
    /// Query `i` reads keys `0..=i` (the decoder's self-attention; `tq = tk`).
    Causal,
}

// Not derived: the derive would ask `B: Copy` of the backend.
impl<B: Backend> Clone for AttentionMask<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for AttentionMask<'_, B> {}

/// Context `[batch, tq, d_model]` (heads merged, before the output projection) and weights
/// `[batch, heads, tq, tk]` (before dropout) of the queries `q` `[batch, tq, d_model]` (already
/// scaled by `1/√head_dim`) over the keys and values `k`, `v` `[batch, tk, d_model]`. Attention
/// dropout with probability `dropout` while training (an autodiff backend), as [`super::dropout`].
///
/// On the CPU backend the weights carry no gradient: the model reports them (alignments), no loss
/// reads them.
pub fn multi_head_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    mask: AttentionMask<B>,
    dropout: f64,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    use std::any::TypeId;
    type Ad = Autodiff<Flex>;
    let backend = TypeId::of::<B>();
    let cpu = backend == TypeId::of::<Flex>() || backend == TypeId::of::<Ad>();
    if !cpu || [q.dtype(), k.dtype(), v.dtype()] != [DType::F32; 3] {
        return composite(q, k, v, heads, mask, dropout);
    }
    let device = q.device();
    let shape = Shape::new(shape(&q, &k, heads));
    let pad = match mask {
        AttentionMask::Keys(bias) => match bias.to_data().convert::<f32>().to_vec::<f32>() {
            Ok(pad) => Some(pad),
            // A float tensor converted to f32 reads back as f32.
            Err(_) => return composite(q, k, v, heads, mask, dropout),
        },
        AttentionMask::Causal => None,
    };
    let masking = Masking {
        pad,
        causal: matches!(mask, AttentionMask::Causal),
        drop: super::dropout::mask_values::<B>(&shape, dropout, &device).map(Arc::new),
    };
    let weights =
        |w: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(w, shape.clone()), &device);
    let inputs =
        match super::cast::<_, (Tensor<Flex, 3>, Tensor<Flex, 3>, Tensor<Flex, 3>)>((q, k, v)) {
            Ok((q, k, v)) => {
                let float = |t: Tensor<Flex, 3>| t.into_primitive().tensor().to_contiguous();
                let (context, w) = forward(&float(q), &float(k), &float(v), heads, &masking);
                let context = Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(context));
                return (super::cast_back(context), weights(w));
            }
            Err(inputs) => inputs,
        };
    let (q, k, v): (Tensor<Ad, 3>, Tensor<Ad, 3>, Tensor<Ad, 3>) = super::cast_back(inputs);
    let (context, w) = autodiff(q, k, v, heads, masking);
    (super::cast_back(context), weights(w.to_vec()))
}

/// `[batch, heads, tq, tk]`, checked: the attention builds these shapes itself, so a mismatch is a
/// bug in Rosetta, not bad input.
fn shape<B: Backend>(q: &Tensor<B, 3>, k: &Tensor<B, 3>, heads: usize) -> [usize; 4] {
    let ([batch, tq, d], [kb, tk, kd]) = (q.dims(), k.dims());
    assert!(
        heads > 0 && d.is_multiple_of(heads) && kb == batch && kd == d,
        "multi_head_attention: q {:?}, k {:?}, {heads} heads",
        q.dims(),
        k.dims()
    );
    [batch, heads, tq, tk]
}

/// The same with tensor operations, for other backends: heads split by `reshape` + `swap_dims`.
pub fn composite<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    mask: AttentionMask<B>,
    dropout: f64,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let [batch, heads, tq, tk] = shape(&q, &k, heads);
    let d = q.dims()[2];
    let split =
        |x: Tensor<B, 3>, len: usize| x.reshape([batch, len, heads, d / heads]).swap_dims(1, 2);
    let scores = split(q, tq).matmul(split(k, tk).swap_dims(2, 3)); // [batch, heads, tq, tk]
    let bias = match mask {
        AttentionMask::Keys(bias) => bias.clone().reshape([batch, 1, 1, tk]),
        AttentionMask::Causal => {
            let data: Vec<f32> = (0..tq)
                .flat_map(|i| (0..tk).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            Tensor::<B, 2>::from_data(TensorData::new(data, [tq, tk]), &scores.device())
                .reshape([1, 1, tq, tk])
        }
    };
    let weights = softmax(scores + bias, 3);
    let context = super::dropout(weights.clone(), dropout).matmul(split(v, tk)); // [batch, heads, tq, hd]
    (context.swap_dims(1, 2).reshape([batch, tq, d]), weights)
}

/// The masks of one call: key padding (`[batch, tk]`, additive), causality, and the dropout mask
/// (`[batch, heads, tq, tk]`, 0 or `1/(1 − p)`).
#[derive(Debug, Clone)]
struct Masking {
    pad: Option<Vec<f32>>,
    causal: bool,
    drop: Option<Arc<Vec<f32>>>,
}

/// `[batch, tq, tk, d_model]` of contiguous `q` `[batch, tq, d]` and `k` `[batch, tk, d]`.
fn dims(q: &FlexTensor, k: &FlexTensor) -> [usize; 4] {
    let (qs, ks) = (q.shape().to_vec(), k.shape().to_vec());
    [qs[0], qs[1], ks[1], qs[2]]
}

/// One softmax row in place: `scores + pad` (and −∞ after `last` where causal), normalized.
#[inline(always)]
fn softmax_row(row: &mut [f32], pad: Option<&[f32]>, last: Option<usize>) {
    if let Some(pad) = pad {
        for (s, &m) in row.iter_mut().zip(pad) {
            *s += m;
        }
    }
    if let Some(last) = last {
        for s in row.iter_mut().skip(last + 1) {
            *s = f32::NEG_INFINITY;
        }
    }
    softmax_in_place(row);
}

/// The weights `p` as the context reads them: times the dropout mask `drop` (written into
/// `scratch`) when there is one, else `p` itself.
#[inline]
fn dropped<'a>(p: &'a [f32], drop: Option<&[f32]>, scratch: &'a mut [f32]) -> &'a [f32] {
    match drop {
        Some(m) => {
            for ((o, &w), &m) in scratch.iter_mut().zip(p).zip(m) {
                *o = w * m;
            }
            scratch
        }
        None => p,
    }
}

/// The context `[batch, tq, d]` and the weights `[batch, heads, tq, tk]`, one batch row per task.
fn forward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    heads: usize,
    masking: &Masking,
) -> (FlexTensor, Vec<f32>) {
    let [batch, tq, tk, d] = dims(q, k);
    let hd = d / heads;
    let (qs, ks, vs) = (q.storage::<f32>(), k.storage::<f32>(), v.storage::<f32>());
    let mut context = vec![0f32; batch * tq * d];
    let mut weights = vec![0f32; batch * heads * tq * tk];
    if tq > 0 && tk > 0 && hd > 0 {
        context
            .par_chunks_mut(tq * d)
            .zip(weights.par_chunks_mut(heads * tq * tk))
            .enumerate()
            .for_each(|(b, (context, weights))| {
                let mut scratch = vec![0f32; tq * tk];
                for h in 0..heads {
                    let p = &mut weights[h * tq * tk..(h + 1) * tq * tk];
                    let (qo, ko) = (b * tq * d + h * hd, b * tk * d + h * hd);
                    // SAFETY: `p` holds tq·tk elements (row stride tk); Q_h is tq rows of hd
                    // elements d apart from `qo`, Kᵀ_h hd rows of tk elements (row stride 1,
                    // column stride d) from `ko`, all inside the contiguous inputs.
                    unsafe {
                        product_into(
                            tq,
                            tk,
                            hd,
                            (&qs[qo..], d as isize, 1),
                            (&ks[ko..], 1, d as isize),
                            p.as_mut_ptr(),
                            tk,
                            gemm::Parallelism::None,
                        )
                    };
                    let pad = masking.pad.as_ref().map(|m| &m[b * tk..(b + 1) * tk]);
                    dispatch(
                        #[inline(always)]
                        || {
                            for (i, row) in p.chunks_exact_mut(tk).enumerate() {
                                softmax_row(row, pad, masking.causal.then_some(i));
                            }
                        },
                    );
                    let first = (b * heads + h) * tq * tk;
                    let drop = masking.drop.as_ref().map(|m| &m[first..first + tq * tk]);
                    let read = dropped(p, drop, &mut scratch);
                    // SAFETY: `context` holds tq rows of d elements; head h writes hd columns of
                    // each from column h·hd; V_h is tk rows of hd elements d apart from `ko`.
                    unsafe {
                        product_into(
                            tq,
                            hd,
                            tk,
                            (read, tk as isize, 1),
                            (&vs[ko..], d as isize, 1),
                            context.as_mut_ptr().add(h * hd),
                            d,
                            gemm::Parallelism::None,
                        )
                    };
                }
            });
    }
    (
        FlexTensor::from_data(TensorData::new(context, [batch, tq, d])),
        weights,
    )
}

/// Gradients of `q`, `k` and `v` from the context's gradient `g` `[batch, tq, d]`.
fn backward(
    (q, k, v): (&FlexTensor, &FlexTensor, &FlexTensor),
    weights: &[f32],
    heads: usize,
    masking: &Masking,
    g: &FlexTensor,
) -> [FlexTensor; 3] {
    let [batch, tq, tk, d] = dims(q, k);
    let hd = d / heads;
    let (qs, ks, vs, gs) = (
        q.storage::<f32>(),
        k.storage::<f32>(),
        v.storage::<f32>(),
        g.storage::<f32>(),
    );
    let mut gq = vec![0f32; batch * tq * d];
    let mut gk = vec![0f32; batch * tk * d];
    let mut gv = vec![0f32; batch * tk * d];
    if tq > 0 && tk > 0 && hd > 0 {
        gq.par_chunks_mut(tq * d)
            .zip(gk.par_chunks_mut(tk * d).zip(gv.par_chunks_mut(tk * d)))
            .enumerate()
            .for_each(|(b, (gq, (gk, gv)))| {
                let mut scratch = vec![0f32; tq * tk];
                let mut ds = vec![0f32; tq * tk];
                for h in 0..heads {
                    let first = (b * heads + h) * tq * tk;
                    let p = &weights[first..first + tq * tk];
                    let drop = masking.drop.as_ref().map(|m| &m[first..first + tq * tk]);
                    let read = dropped(p, drop, &mut scratch);
                    let (qo, ko) = (b * tq * d + h * hd, b * tk * d + h * hd);
                    // SAFETY (all four products): every operand is a head's block of a contiguous
                    // `[.., d]` input (row stride d from its offset) or a `[tq, tk]` scratch
                    // matrix read directly (row stride tk) or transposed (column stride tk); each
                    // destination is head h's hd columns of this batch row's gradient chunk, or
                    // the scratch `ds`.
                    unsafe {
                        // dV_h = P̃ᵀ dC_h: [tk, hd].
                        product_into(
                            tk,
                            hd,
                            tq,
                            (read, 1, tk as isize),
                            (&gs[qo..], d as isize, 1),
                            gv.as_mut_ptr().add(h * hd),
                            d,
                            gemm::Parallelism::None,
                        );
                        // dP̃ = dC_h V_hᵀ: [tq, tk].
                        product_into(
                            tq,
                            tk,
                            hd,
                            (&gs[qo..], d as isize, 1),
                            (&vs[ko..], 1, d as isize),
                            ds.as_mut_ptr(),
                            tk,
                            gemm::Parallelism::None,
                        );
                    }
                    dispatch(
                        #[inline(always)]
                        || {
                            for (i, (row, p)) in
                                ds.chunks_exact_mut(tk).zip(p.chunks_exact(tk)).enumerate()
                            {
                                if let Some(m) = drop {
                                    for (s, &m) in row.iter_mut().zip(&m[i * tk..(i + 1) * tk]) {
                                        *s *= m;
                                    }
                                }
                                let dot: f32 = row.iter().zip(p).map(|(s, p)| s * p).sum();
                                for (s, &p) in row.iter_mut().zip(p) {
                                    *s = p * (*s - dot);
                                }
                            }
                        },
                    );
                    // SAFETY: as above.
                    unsafe {
                        // dQ_h = dS K_h: [tq, hd].
                        product_into(
                            tq,
                            hd,
                            tk,
                            (&ds, tk as isize, 1),
                            (&ks[ko..], d as isize, 1),
                            gq.as_mut_ptr().add(h * hd),
                            d,
                            gemm::Parallelism::None,
                        );
                        // dK_h = dSᵀ Q_h: [tk, hd].
                        product_into(
                            tk,
                            hd,
                            tq,
                            (&ds, 1, tk as isize),
                            (&qs[qo..], d as isize, 1),
                            gk.as_mut_ptr().add(h * hd),
                            d,
                            gemm::Parallelism::None,
                        );
                    }
                }
            });
    }
    [
        FlexTensor::from_data(TensorData::new(gq, [batch, tq, d])),
        FlexTensor::from_data(TensorData::new(gk, [batch, tk, d])),
        FlexTensor::from_data(TensorData::new(gv, [batch, tk, d])),
    ]
}

/// The forward kernel on autodiff tensors, recorded with [`AttentionBackward`]. Returns the
/// context and the weights.
fn autodiff(
    q: Tensor<Autodiff<Flex>, 3>,
    k: Tensor<Autodiff<Flex>, 3>,
    v: Tensor<Autodiff<Flex>, 3>,
    heads: usize,
    masking: Masking,
) -> (Tensor<Autodiff<Flex>, 3>, Arc<Vec<f32>>) {
    let (q, k, v) = (
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
    );
    let inner = (
        q.primitive.to_contiguous(),
        k.primitive.to_contiguous(),
        v.primitive.to_contiguous(),
    );
    let (context, weights) = forward(&inner.0, &inner.1, &inner.2, heads, &masking);
    let weights = Arc::new(weights);
    let prep = AttentionBackward { heads }
        .prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()])
        .compute_bound()
        .stateful();
    let out = match prep {
        OpsKind::Tracked(prep) => prep.finish(
            Arc::new(Saved {
                inputs: inner,
                weights: weights.clone(),
                masking,
            }),
            context,
        ),
        OpsKind::UnTracked(prep) => prep.finish(context),
    };
    (Tensor::from_primitive(TensorPrimitive::Float(out)), weights)
}

/// What the backward pass reads: the contiguous inputs, the weights and the masks.
#[derive(Debug)]
struct Saved {
    inputs: (FlexTensor, FlexTensor, FlexTensor),
    weights: Arc<Vec<f32>>,
    masking: Masking,
}

/// The autodiff node of [`multi_head_attention`].
#[derive(Debug)]
struct AttentionBackward {
    heads: usize,
}

impl Backward<Flex, 3> for AttentionBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (q, k, v) = &saved.inputs;
        let gradients = backward((q, k, v), &saved.weights, self.heads, &saved.masking, &grad);
        for (parent, g) in ops.parents.into_iter().zip(gradients) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{test_values, with_mask_seeds};

    type A = Autodiff<Flex>;

    fn tensor<Bk: Backend, const D: usize>(dims: [usize; D], seed: u64) -> Tensor<Bk, D> {
        let n = dims.iter().product();
        Tensor::from_data(
            TensorData::new(test_values(n, seed), dims),
            &Default::default(),
        )
    }

    /// Forward and backward of the fused kernel against the tensor operations, with key padding
    /// and causality, with and without dropout (the same mask seeds on both sides), for head sizes
    /// the AVX kernels of `gemm` tile differently.
    #[test]
    fn matches_the_tensor_operations_forward_and_backward() {
        let device = Default::default();
        for (batch, tq, tk, d, heads, p) in [
            (3, 5, 7, 8, 2, 0.0),
            (2, 6, 6, 12, 3, 0.3),
            (4, 9, 9, 64, 4, 0.1),
            (2, 1, 3, 16, 1, 0.0),
        ] {
            for causal in [false, true] {
                if causal && tq != tk {
                    continue;
                }
                let lengths: Vec<usize> = (0..batch).map(|b| tk - b % tk.min(3)).collect();
                let pad: Vec<f32> = lengths
                    .iter()
                    .flat_map(|&n| {
                        (0..tk).map(move |j| if j < n { 0.0 } else { f32::NEG_INFINITY })
                    })
                    .collect();
                let pad = Tensor::<A, 2>::from_data(TensorData::new(pad, [batch, tk]), &device);
                let mask = if causal {
                    AttentionMask::Causal
                } else {
                    AttentionMask::Keys(&pad)
                };
                let up = tensor::<A, 3>([batch, tq, d], 9);
                let run = |fused: bool| {
                    let q = tensor::<A, 3>([batch, tq, d], 1).require_grad();
                    let k = tensor::<A, 3>([batch, tk, d], 2).require_grad();
                    let v = tensor::<A, 3>([batch, tk, d], 3).require_grad();
                    let (c, w) = with_mask_seeds(17, || {
                        if fused {
                            multi_head_attention(q.clone(), k.clone(), v.clone(), heads, mask, p)
                        } else {
                            composite(q.clone(), k.clone(), v.clone(), heads, mask, p)
                        }
                    });
                    let grads = (c.clone() * up.clone()).sum().backward();
                    (
                        c.inner(),
                        w.inner(),
                        [q, k, v].map(|t| t.grad(&grads).expect("a gradient")),
                    )
                };
                let (c1, w1, g1) = run(true);
                let (c2, w2, g2) = run(false);
                let close = |a, b| super::super::assert_close::<3>(a, b, 1e-5);
                close(c1, c2);
                super::super::assert_close::<4>(w1, w2, 1e-5);
                for (a, b) in g1.into_iter().zip(g2) {
                    close(a, b);
                }
            }
        }
    }

    /// Without autodiff the kernel gives the tensor operations' context, and no dropout.
    #[test]
    fn inference_matches_the_tensor_operations() {
        let device = Default::default();
        let q = tensor::<Flex, 3>([2, 4, 32], 4);
        let k = tensor::<Flex, 3>([2, 6, 32], 5);
        let v = tensor::<Flex, 3>([2, 6, 32], 6);
        let pad = Tensor::<Flex, 2>::from_data(
            TensorData::new(
                (0..12)
                    .map(|i| {
                        if i % 6 < 5 - i / 6 {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                    .collect::<Vec<f32>>(),
                [2, 6],
            ),
            &device,
        );
        let (c1, w1) = multi_head_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            2,
            AttentionMask::Keys(&pad),
            0.5,
        );
        let (c2, w2) = composite(q, k, v, 2, AttentionMask::Keys(&pad), 0.0);
        super::super::assert_close::<3>(c1, c2, 1e-5);
        super::super::assert_close::<4>(w1, w2, 1e-5);
    }
}
