//! A dense layer applied once per step of a recurrence, whose weight gradient is one product over
//! all steps.
//!
//! The hidden-to-hidden projection of a recurrent layer, the decoder's context projection and the
//! attention's query projection apply the same weight at every step. Differentiated one application
//! at a time, each step costs a weight-gradient product whose inner dimension is the batch (64 rows:
//! short products, far below the machine's peak) and the addition of a full-size weight gradient
//! into the running sum (a `[512, 1536]` matrix per step and weight in the reference decoder).
//! Here each step's backward computes only its input's gradient, which the step before it needs,
//! and keeps its input and output gradient; when the last application has been differentiated,
//! `dW = Xᵀ G` over the rows of all steps is one product and `db` one column sum — what the fused
//! recurrent layers of cuDNN and PyTorch do.
//!
//! As with [`super::time_steps`], the weight's gradient arrives only once every application has
//! been differentiated, so every application must reach the loss (each step of a recurrence does:
//! its state feeds the next step). A run that loses one is logged as an error when the group is
//! dropped.

use super::linear::{dense, forward_flex, grad_bias, grad_input, grad_weight, parameters};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A dense layer prepared for being applied at every step of one pass over a sequence. Clones
/// share the pass (beam search reorders its memory, which holds these).
#[derive(Debug, Clone)]
pub struct StepLinear<B: Backend> {
    /// `[d_in, d_out]`.
    weight: Tensor<B, 2>,
    /// `[d_out]`, or `[0]` for none.
    bias: Tensor<B, 1>,
    pending: Arc<Mutex<Pending>>,
}

/// The applications of one group whose weight gradient is still to be computed.
#[derive(Debug, Default)]
struct Pending {
    /// Inputs `[rows, d_in]` of the tracked applications, in order.
    inputs: Vec<FlexTensor>,
    /// Their output gradients `[rows, d_out]`, as they arrive.
    grads: Vec<Option<FlexTensor>>,
    /// Applications differentiated so far.
    done: usize,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.done > 0 && self.done < self.inputs.len() {
            tracing::error!(
                "a recurrent weight lost its gradient: {} of {} steps were differentiated",
                self.done,
                self.inputs.len()
            );
        }
    }
}

/// The lock, also after a panic elsewhere (the data stays consistent: every update is one push or
/// one slot write).
fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B: Backend> StepLinear<B> {
    /// Starts a pass over a sequence with `layer`.
    pub fn new(layer: &Linear<B>) -> Self {
        let (weight, bias) = parameters(layer, &layer.weight.device());
        StepLinear {
            weight,
            bias,
            pending: Arc::default(),
        }
    }

    /// `x W + b` for one step: `[rows, d_in] → [rows, d_out]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let (w, b) = (self.weight.clone(), self.bias.clone());
        if [x.dtype(), w.dtype(), b.dtype()] != [DType::F32; 3] {
            return dense(x, w, b);
        }
        match super::cast::<
            _,
            (
                Tensor<Autodiff<Flex>, 2>,
                Tensor<Autodiff<Flex>, 2>,
                Tensor<Autodiff<Flex>, 1>,
            ),
        >((x, w, b))
        {
            Ok((x, w, b)) => super::cast_back(self.tracked(x, w, b)),
            Err((x, w, b)) => dense(x, w, b),
        }
    }

    fn tracked(
        &self,
        x: Tensor<Autodiff<Flex>, 2>,
        w: Tensor<Autodiff<Flex>, 2>,
        b: Tensor<Autodiff<Flex>, 1>,
    ) -> Tensor<Autodiff<Flex>, 2> {
        let (x, w, b) = (
            x.into_primitive().tensor(),
            w.into_primitive().tensor(),
            b.into_primitive().tensor(),
        );
        let (xi, wi, bi) = (
            x.primitive.to_contiguous(),
            w.primitive.to_contiguous(),
            b.primitive.to_contiguous(),
        );
        let out = forward_flex(&xi, &wi, &bi);
        let prep = StepBackward
            .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful();
        let out = match prep {
            OpsKind::Tracked(prep) => {
                let index = {
                    let mut pending = lock(&self.pending);
                    pending.inputs.push(xi);
                    pending.grads.push(None);
                    pending.inputs.len() - 1
                };
                prep.finish((wi, bi.shape()[0], index, Arc::clone(&self.pending)), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

/// The autodiff node of one application.
#[derive(Debug)]
struct StepBackward;

impl Backward<Flex, 3> for StepBackward {
    /// The weight, the bias length (0: none), this application's index and the group.
    type State = (FlexTensor, usize, usize, Arc<Mutex<Pending>>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (w, bias_len, index, pending) = ops.state;
        let g = grads.consume::<Flex>(&ops.node).to_contiguous();
        let [px, pw, pb] = ops.parents;
        let [d_in, d_out] = [w.shape()[0], w.shape()[1]];
        let rows = g.shape()[0];
        if let Some(node) = px {
            let gx = grad_input(g.storage::<f32>(), w.storage::<f32>(), rows, d_in, d_out);
            grads.register::<Flex>(
                node.id,
                FlexTensor::from_data(TensorData::new(gx, [rows, d_in])),
            );
        }
        let mut group = lock(&pending);
        if let Some(slot) = group.grads.get_mut(index) {
            *slot = Some(g);
        }
        group.done += 1;
        if group.done < group.inputs.len() {
            return;
        }
        let inputs = std::mem::take(&mut group.inputs);
        let outputs: Vec<FlexTensor> = std::mem::take(&mut group.grads)
            .into_iter()
            .flatten()
            .collect();
        drop(group);
        let total: usize = inputs.iter().map(|x| x.shape()[0]).sum();
        let gather = |parts: &[FlexTensor], width: usize| {
            let mut all = Vec::with_capacity(total * width);
            for part in parts {
                all.extend_from_slice(part.storage::<f32>());
            }
            all
        };
        let gs = gather(&outputs, d_out);
        if let Some(node) = pw {
            let xs = gather(&inputs, d_in);
            let gw = grad_weight(&xs, &gs, total, d_in, d_out);
            grads.register::<Flex>(
                node.id,
                FlexTensor::from_data(TensorData::new(gw, [d_in, d_out])),
            );
        }
        if let Some(node) = pb.filter(|_| bias_len > 0) {
            let gb = grad_bias(&gs, d_out);
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(gb, [d_out])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    type A = Autodiff<Flex>;

    /// A small recurrence `h_t = tanh(x_t + layer(h_{t−1}))` with the layer applied per step by
    /// `step` (a fresh group per run); returns the loss Σ_t Σ h_t · c_t.
    fn recurrence(
        layer: &Linear<A>,
        xs: &[Tensor<A, 2>],
        cs: &[Tensor<A, 2>],
        fused: bool,
    ) -> Tensor<A, 1> {
        let group = StepLinear::new(layer);
        let mut h = xs[0].clone().zeros_like();
        let mut total = Tensor::<A, 1>::zeros([1], &h.device());
        for (x, c) in xs.iter().zip(cs) {
            let hp = if fused {
                group.forward(h.clone())
            } else {
                layer.forward(h.clone())
            };
            h = (x.clone() + hp).tanh();
            total = total + (h.clone() * c.clone()).sum();
        }
        total
    }

    /// Values and the gradients of the inputs, the weight and the bias against burn's `Linear`, with
    /// and without a bias.
    #[test]
    fn gradients_match_per_step_linear() {
        let device = Default::default();
        for bias in [true, false] {
            Flex::seed(&device, 11);
            let layer = LinearConfig::new(6, 6).with_bias(bias).init::<A>(&device);
            let make = |n: usize| -> Vec<Tensor<Flex, 2>> {
                (0..n)
                    .map(|_| Tensor::random([3, 6], Distribution::Normal(0.0, 1.0), &device))
                    .collect()
            };
            let (xs, cs) = (make(5), make(5));
            let track = |v: &[Tensor<Flex, 2>]| -> Vec<Tensor<A, 2>> {
                v.iter()
                    .map(|t| Tensor::from_inner(t.clone()).require_grad())
                    .collect()
            };
            let consts = |v: &[Tensor<Flex, 2>]| -> Vec<Tensor<A, 2>> {
                v.iter().map(|t| Tensor::from_inner(t.clone())).collect()
            };
            let (x1, x2) = (track(&xs), track(&xs));
            let l1 = recurrence(&layer, &x1, &consts(&cs), true);
            let l2 = recurrence(&layer, &x2, &consts(&cs), false);
            crate::kernels::assert_close(l1.clone().inner(), l2.clone().inner(), 1e-6);
            let (g1, g2) = (l1.backward(), l2.backward());
            for (a, b) in x1.iter().zip(&x2) {
                crate::kernels::assert_close(a.grad(&g1).unwrap(), b.grad(&g2).unwrap(), 1e-5);
            }
            let w = layer.weight.val();
            crate::kernels::assert_close(w.grad(&g1).unwrap(), w.grad(&g2).unwrap(), 1e-5);
            if let Some(b) = &layer.bias {
                let b = b.val();
                crate::kernels::assert_close(b.grad(&g1).unwrap(), b.grad(&g2).unwrap(), 1e-5);
            }
        }
    }

    /// Without autodiff (search) it is the plain dense layer.
    #[test]
    fn inference_matches_linear() {
        let device = Default::default();
        Flex::seed(&device, 12);
        let layer = LinearConfig::new(8, 5).init::<Flex>(&device);
        let x = Tensor::<Flex, 2>::random([4, 8], Distribution::Normal(0.0, 1.0), &device);
        let group = StepLinear::new(&layer);
        crate::kernels::assert_close(group.forward(x.clone()), layer.forward(x), 1e-6);
    }
}
