//! Label-smoothed cross-entropy over the output logits as one operation with its own backward.
//!
//! Per real token `ℓ = (1 − ε)·(lse − x_y) + ε·(lse − mean_v x_v)` with `lse = log Σ_v e^{x_v}`
//! (Szegedy et al. 2016, §7), whose gradient is `softmax(x) − (1 − ε)·onehot(y) − ε/V`. Written with
//! tensor operations, `log_softmax`, `gather` and `mean` and their backward passes make about a dozen
//! passes over `[tokens, vocab]` and keep several copies of it; here the forward pass reads the logits
//! twice and keeps one float per row, and the backward pass writes the gradient in one pass.

use super::simd_math::{dispatch, exp, max, sum};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;
use std::sync::Arc;

/// The inputs handed back when a backend has no fused kernel: logits and targets.
pub type Unfused<B> = (Tensor<B, 2>, Tensor<B, 1, Int>);

/// Summed losses `(smoothed, nll)`, each `[1]`, over the rows of `logits` `[n, vocab]` whose
/// target (`targets`, `[n]`) is not `pad`; `None` when the backend has no fused kernel (the caller
/// then uses tensor operations). Only `smoothed` carries a gradient.
pub fn fused_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    pad: i64,
    smoothing: f32,
) -> Result<(Tensor<B, 1>, Tensor<B, 1>), Unfused<B>> {
    if logits.dtype() != DType::F32 {
        return Err((logits, targets));
    }
    let is_flex = super::cast::<_, Tensor<Flex, 2>>(logits);
    let logits = match is_flex {
        Ok(logits) => {
            let targets = read_targets(targets.into_data());
            let x = logits.into_primitive().tensor().to_contiguous();
            let rows = forward_rows(&x, &targets, pad, smoothing);
            let (smoothed, nll) = (rows.smoothed_sum(), rows.nll_sum());
            return Ok((super::cast_back(smoothed), super::cast_back(nll)));
        }
        Err(logits) => logits,
    };
    match super::cast::<_, Tensor<Autodiff<Flex>, 2>>(logits) {
        Ok(logits) => {
            let targets = read_targets(targets.into_data());
            let (smoothed, nll) = autodiff(logits, targets, pad, smoothing);
            Ok((super::cast_back(smoothed), super::cast_back(nll)))
        }
        Err(logits) => Err((logits, targets)),
    }
}

fn read_targets(data: TensorData) -> Arc<Vec<i64>> {
    Arc::new(data.iter::<i64>().collect())
}

/// Per-row results of the forward pass.
#[derive(Debug, Clone)]
struct Rows {
    /// `log Σ e^x` per row (NaN where a logit is not finite).
    lse: Arc<Vec<f32>>,
    smoothed: Vec<f32>,
    nll: Vec<f32>,
}

impl Rows {
    fn total(values: &[f32]) -> Tensor<Flex, 1> {
        // f64 keeps the sum of thousands of token losses from drifting.
        let total = values.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
        Tensor::from_data(TensorData::new(vec![total], [1]), &Default::default())
    }

    fn smoothed_sum(&self) -> Tensor<Flex, 1> {
        Self::total(&self.smoothed)
    }

    fn nll_sum(&self) -> Tensor<Flex, 1> {
        Self::total(&self.nll)
    }
}

fn shape(logits: &FlexTensor, targets: &[i64]) -> [usize; 2] {
    let dims = logits.shape().to_vec();
    // The loss builds these shapes itself; a mismatch is a bug in Rosetta, not bad input.
    assert!(
        dims.len() == 2 && dims[0] == targets.len(),
        "cross-entropy: logits {dims:?}, {} targets",
        targets.len()
    );
    [dims[0], dims[1]]
}

fn forward_rows(logits: &FlexTensor, targets: &[i64], pad: i64, smoothing: f32) -> Rows {
    let [n, vocab] = shape(logits, targets);
    let x = logits.storage::<f32>();
    let mut lse = vec![0f32; n];
    let mut smoothed = vec![0f32; n];
    let mut nll = vec![0f32; n];
    lse.par_iter_mut()
        .zip(smoothed.par_iter_mut())
        .zip(nll.par_iter_mut())
        .enumerate()
        .for_each(|(i, ((lse, smoothed), nll))| {
            let y = targets[i];
            if y == pad {
                return;
            }
            let row = &x[i * vocab..][..vocab];
            let (m, total, sum_exp) = dispatch(
                #[inline(always)]
                || row_stats(row),
            );
            let row_lse = m + sum_exp.ln();
            // Targets come from the vocabulary the logits were built for; an id out of range
            // makes the loss NaN, which the trainer reports, instead of reading elsewhere.
            let picked = usize::try_from(y).ok().and_then(|y| row.get(y)).copied();
            let (l, s) = match picked {
                Some(xy) if total.is_finite() => {
                    let l = row_lse - xy;
                    (
                        l,
                        (1.0 - smoothing) * l + smoothing * (row_lse - total / vocab as f32),
                    )
                }
                _ => (f32::NAN, f32::NAN),
            };
            *lse = row_lse;
            *nll = l;
            *smoothed = s;
        });
    Rows {
        lse: Arc::new(lse),
        smoothed,
        nll,
    }
}

/// `(max, Σ x, Σ e^{x − max})` of one row of logits.
#[inline(always)]
pub(super) fn row_stats(row: &[f32]) -> (f32, f32, f32) {
    let m = max(row);
    let mut lanes = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += exp(v - m);
        }
    }
    let mut sum_exp = sum(&lanes);
    for &v in chunks.remainder() {
        sum_exp += exp(v - m);
    }
    (m, sum(row), sum_exp)
}

/// `g·(softmax − ε/V)` for one row, given its `lse`.
#[inline(always)]
fn row_grad(out: &mut [f32], row: &[f32], lse: f32, g: f32, uniform: f32) {
    for (o, &v) in out.iter_mut().zip(row) {
        *o = g * (exp(v - lse) - uniform);
    }
}

/// `∂(g·Σ smoothed)/∂logits`: `g·(softmax − (1 − ε)·onehot(y) − ε/V)` on real rows, 0 on padding.
fn backward_rows(
    logits: &FlexTensor,
    targets: &[i64],
    lse: &[f32],
    pad: i64,
    smoothing: f32,
    g: f32,
) -> FlexTensor {
    let [n, vocab] = shape(logits, targets);
    let x = logits.storage::<f32>();
    let mut grad = vec![0f32; n * vocab];
    let uniform = smoothing / vocab as f32;
    grad.par_chunks_mut(vocab).enumerate().for_each(|(i, out)| {
        let y = targets[i];
        if y == pad {
            return;
        }
        let row = &x[i * vocab..][..vocab];
        let lse = lse[i];
        dispatch(
            #[inline(always)]
            || row_grad(out, row, lse, g, uniform),
        );
        if let Some(o) = usize::try_from(y).ok().and_then(|y| out.get_mut(y)) {
            *o -= g * (1.0 - smoothing);
        }
    });
    FlexTensor::from_data(TensorData::new(grad, [n, vocab]))
}

#[derive(Debug)]
struct CrossEntropyBackward;

/// What the backward pass needs: logits, targets, per-row `lse`, padding id and ε.
type State = (FlexTensor, Arc<Vec<i64>>, Arc<Vec<f32>>, i64, f32);

impl Backward<Flex, 1> for CrossEntropyBackward {
    type State = State;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, lse, pad, smoothing) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            let g = g
                .to_contiguous()
                .storage::<f32>()
                .first()
                .copied()
                .unwrap_or(0.0);
            backward_rows(&logits, &targets, &lse, pad, smoothing, g)
        });
    }
}

fn autodiff(
    logits: Tensor<Autodiff<Flex>, 2>,
    targets: Arc<Vec<i64>>,
    pad: i64,
    smoothing: f32,
) -> (Tensor<Autodiff<Flex>, 1>, Tensor<Autodiff<Flex>, 1>) {
    let logits = logits.into_primitive().tensor();
    let x = logits.primitive.to_contiguous();
    let rows = forward_rows(&x, &targets, pad, smoothing);
    let smoothed = rows.smoothed_sum().into_primitive().tensor();
    let nll = Tensor::<Autodiff<Flex>, 1>::from_inner(rows.nll_sum());
    let prep = CrossEntropyBackward
        .prepare::<NoCheckpointing>([logits.node.clone()])
        .compute_bound()
        .stateful();
    let smoothed = match prep {
        OpsKind::Tracked(prep) => prep.finish((x, targets, rows.lse, pad, smoothing), smoothed),
        OpsKind::UnTracked(prep) => prep.finish(smoothed),
    };
    (
        Tensor::from_primitive(TensorPrimitive::Float(smoothed)),
        nll,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::loss::cross_entropy_composite;
    use burn::tensor::Distribution;

    type A = Autodiff<Flex>;
    const PAD: i64 = 0;

    fn inputs(device: &burn::backend::flex::FlexDevice) -> (Tensor<Flex, 2>, Tensor<Flex, 1, Int>) {
        Flex::seed(device, 3);
        let logits = Tensor::random([7, 29], Distribution::Normal(0.0, 3.0), device);
        let targets =
            Tensor::from_data(TensorData::new(vec![5i64, 0, 28, 1, 0, 13, 2], [7]), device);
        (logits, targets)
    }

    fn scalar<B: Backend>(t: Tensor<B, 1>) -> f32 {
        t.into_data().to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn losses_and_gradient_match_tensor_operations() {
        let device = Default::default();
        let (logits, targets) = inputs(&device);
        for smoothing in [0.0f32, 0.1] {
            let x1 = Tensor::<A, 2>::from_inner(logits.clone()).require_grad();
            let t1 = Tensor::<A, 1, Int>::from_inner(targets.clone());
            let (s1, n1) = fused_cross_entropy(x1.clone(), t1, PAD, smoothing).unwrap();
            let x2 = Tensor::<A, 2>::from_inner(logits.clone()).require_grad();
            let t2 = Tensor::<A, 2, Int>::from_inner(targets.clone().reshape([1, 7]));
            let sums = cross_entropy_composite(
                x2.clone().reshape([1, 7, 29]),
                t2,
                f64::from(smoothing),
                PAD as u32,
            );
            let (s2, n2) = (sums.smoothed, sums.nll);
            assert!((scalar(s1.clone()) - scalar(s2.clone())).abs() < 1e-4);
            assert!((scalar(n1) - scalar(n2)).abs() < 1e-4);
            // Scale the loss so the upstream gradient is not 1.
            let g1 = s1.mul_scalar(0.37).backward();
            let g2 = s2.mul_scalar(0.37).backward();
            let (a, b) = (
                x1.grad(&g1).unwrap().into_data().to_vec::<f32>().unwrap(),
                x2.grad(&g2).unwrap().into_data().to_vec::<f32>().unwrap(),
            );
            for (a, b) in a.iter().zip(&b) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn inference_backend_and_non_finite_logits() {
        let device = Default::default();
        let (logits, targets) = inputs(&device);
        let (s, n) = fused_cross_entropy(logits.clone(), targets.clone(), PAD, 0.1).unwrap();
        assert!(scalar(s).is_finite() && scalar(n) > 0.0);
        let bad = logits.slice_assign([2..3, 4..5], Tensor::from_data([[f32::NAN]], &device));
        let (s, n) = fused_cross_entropy(bad, targets, PAD, 0.1).unwrap();
        assert!(scalar(s).is_nan() && scalar(n).is_nan());
    }
}
