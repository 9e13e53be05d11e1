//! A time-major `[len, batch, d]` tensor as `len` tensors `[batch, d]`, one per recurrent step,
//! whose gradients are gathered into one buffer.
//!
//! The recurrent layers project the inputs of all steps with one matmul and then read one step at a
//! time. With burn's slicing, the backward pass of each step's slice makes a zero tensor of the full
//! `[len, batch, d]` shape, writes the step into it and adds it to the gradient gathered so far: for
//! `len` steps that is `len` full-size zero-fills, copies and additions (on Multi30k's decoder,
//! about 1 GB of memory traffic per training step). Here every step writes its gradient into its
//! own rows of one shared buffer, and the last step to be differentiated hands the buffer on.
//!
//! The gradient reaches `x` only once every step has been differentiated, so every step must
//! contribute to the loss, as each step of a recurrence does (its state feeds the next step).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use std::sync::{Arc, Mutex};

/// Splits `x` `[len, batch, d]` along its first dimension into `len` tensors `[batch, d]`.
pub fn time_steps<B: Backend>(x: Tensor<B, 3>) -> Vec<Tensor<B, 2>> {
    if x.dtype() == DType::F32 {
        match super::cast::<_, Tensor<Autodiff<Flex>, 3>>(x) {
            Ok(x) => return super::cast_back(gathered(x)),
            Err(other) => return sliced(other),
        }
    }
    sliced(x)
}

/// burn's slicing (inference, and backends without the gathered gradient).
fn sliced<B: Backend>(x: Tensor<B, 3>) -> Vec<Tensor<B, 2>> {
    let [_, batch, d] = x.dims();
    x.iter_dim(0).map(|t| t.reshape([batch, d])).collect()
}

/// The gradient of `x` under construction: rows of steps already differentiated, and how many
/// steps have yet to be.
#[derive(Debug)]
struct Gathered {
    grad: Vec<f32>,
    remaining: usize,
}

/// The autodiff node of one step's slice.
#[derive(Debug)]
struct StepBackward;

impl Backward<Flex, 1> for StepBackward {
    /// The step, the row length `batch·d`, the full shape and the shared gradient.
    type State = (usize, usize, [usize; 3], Arc<Mutex<Gathered>>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (t, step_len, shape, shared) = ops.state;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let [parent] = ops.parents;
        // A poisoned lock means another step's backward panicked; that panic is the error to see.
        let Ok(mut gathered) = shared.lock() else {
            return;
        };
        gathered.grad[t * step_len..][..step_len].copy_from_slice(grad.storage::<f32>());
        gathered.remaining -= 1;
        if gathered.remaining == 0
            && let Some(node) = parent
        {
            let full = std::mem::take(&mut gathered.grad);
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(full, shape)));
        }
    }
}

fn gathered(x: Tensor<Autodiff<Flex>, 3>) -> Vec<Tensor<Autodiff<Flex>, 2>> {
    let shape = x.dims();
    let [len, batch, d] = shape;
    let x = x.into_primitive().tensor();
    let node = x.node.clone();
    let inner = Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(x.primitive));
    let shared = Arc::new(Mutex::new(Gathered {
        grad: vec![0f32; len * batch * d],
        remaining: len,
    }));
    inner
        .iter_dim(0)
        .enumerate()
        .map(|(t, step)| {
            let step = step.reshape([batch, d]).into_primitive().tensor();
            let prep = StepBackward
                .prepare::<NoCheckpointing>([node.clone()])
                .compute_bound()
                .stateful();
            let out = match prep {
                OpsKind::Tracked(prep) => {
                    prep.finish((t, batch * d, shape, Arc::clone(&shared)), step)
                }
                OpsKind::UnTracked(prep) => prep.finish(step),
            };
            Tensor::from_primitive(TensorPrimitive::Float(out))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type A = Autodiff<Flex>;

    /// Values and the gradient of `x` against burn's slicing, when every step feeds the next (as in
    /// a recurrence) and when the steps are used independently.
    #[test]
    fn values_and_gradient_match_slicing() {
        let device = Default::default();
        Flex::seed(&device, 8);
        let x = Tensor::<Flex, 3>::random([5, 3, 4], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<A, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
        for chained in [true, false] {
            let run = |steps: Vec<Tensor<A, 2>>| {
                let mut acc = Tensor::<A, 2>::zeros([3, 4], &device);
                let mut total = Tensor::<A, 1>::zeros([1], &device);
                for (t, s) in steps.into_iter().enumerate() {
                    if chained {
                        acc = (acc + s).tanh() * w.clone();
                        total = total + acc.clone().sum();
                    } else {
                        total = total + (s * w.clone()).sum().mul_scalar(t as f32 + 1.0);
                    }
                }
                total
            };
            let x1 = Tensor::<A, 3>::from_inner(x.clone()).require_grad();
            let x2 = Tensor::<A, 3>::from_inner(x.clone()).require_grad();
            let s1 = time_steps(x1.clone());
            let s2 = sliced(x2.clone());
            for (a, b) in s1.iter().zip(&s2) {
                crate::kernels::assert_close(a.clone().inner(), b.clone().inner(), 0.0);
            }
            let g1 = run(s1).backward();
            let g2 = run(s2).backward();
            crate::kernels::assert_close(x1.grad(&g1).unwrap(), x2.grad(&g2).unwrap(), 1e-6);
        }
    }
}
