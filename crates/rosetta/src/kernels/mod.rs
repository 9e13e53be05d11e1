//! Fused CPU kernels with their own backward pass, for the operations where burn's general tensor
//! operations cost the most: dense layers (and the same layer at every step of a recurrence),
//! splitting a sequence into steps, Bahdanau's energies,
//! the attention's softmax and context, the GRU gates, the Transformer's multi-head attention and
//! its decoder's key/value cache, the label-smoothed cross-entropy and the search's log-softmax; and, for search steps, the dense layers with their weights packed once per
//! model, in float32 or quantized to 8-bit integers (inference only, no backward).
//!
//! Each entry point is generic over the backend. When the backend is burn's CPU backend (`Flex`,
//! or `Autodiff<Flex>` in training) it runs the fused kernel; any other backend (CUDA) gets the same
//! computation written with tensor operations. The backend is recognised by its type at run time
//! (`Any`), so the model keeps its plain `B: Backend` bound.

mod additive_energy;
mod additive_step;
mod attend;
mod contiguous;
mod cross_entropy;
mod dropout;
mod gru_gates;
mod int8_linear;
mod kv_cache;
mod layer_norm;
mod linear;
mod log_softmax;
pub(crate) mod multi_head_attention;
mod packed_linear;
pub mod simd_math;
mod step_attention;
mod step_linear;
mod tanh;
mod time_steps;

pub use additive_energy::additive_energy;
pub use additive_step::{AdditiveMemory, additive_step, exp_keys, shares_memory};
pub use attend::attend;
pub use contiguous::contiguous;
pub use cross_entropy::fused_cross_entropy;
pub use dropout::{dropout, with_mask_seeds};
pub use gru_gates::gru_gates;
pub use int8_linear::{Int8Kernel, Int8Weight};
pub use kv_cache::{grown, write_position, write_rows};
pub use layer_norm::layer_norm;
pub use linear::{dense, linear};
pub use log_softmax::{best_tokens, log_softmax, log_sum_exp, mixture_of_logits, top_log_probs};
pub use multi_head_attention::{AttentionMask, multi_head_attention};
pub use packed_linear::{Epilogue, PackCache, WeightLayout, quantize_tensor};
pub use step_attention::{KvRows, step_attention};
pub use step_linear::StepLinear;
pub use tanh::tanh;
pub use time_steps::time_steps;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use std::any::Any;

/// Forward kernel of a three-input operation on contiguous CPU tensors.
type Forward3 = fn(&FlexTensor, &FlexTensor, &FlexTensor) -> FlexTensor;
/// Its backward kernel: the inputs and the output's gradient give the three inputs' gradients.
type Backward3 = fn(&FlexTensor, &FlexTensor, &FlexTensor, &FlexTensor) -> [FlexTensor; 3];

/// A fused operation of three float tensors: the CPU kernels and the tensor-operation fallback.
struct Fused3<B: Backend, const D1: usize, const D2: usize, const D3: usize, const DO: usize> {
    forward: Forward3,
    backward: Backward3,
    composite: fn(Tensor<B, D1>, Tensor<B, D2>, Tensor<B, D3>) -> Tensor<B, DO>,
}

impl<B: Backend, const D1: usize, const D2: usize, const D3: usize, const DO: usize>
    Fused3<B, D1, D2, D3, DO>
{
    /// Runs the fused kernel on `Flex` and `Autodiff<Flex>`, the fallback elsewhere.
    fn run(&self, a: Tensor<B, D1>, b: Tensor<B, D2>, c: Tensor<B, D3>) -> Tensor<B, DO> {
        if [a.dtype(), b.dtype(), c.dtype()] != [DType::F32; 3] {
            return (self.composite)(a, b, c);
        }
        let inputs =
            match cast::<_, (Tensor<Flex, D1>, Tensor<Flex, D2>, Tensor<Flex, D3>)>((a, b, c)) {
                Ok((a, b, c)) => {
                    let float = |t: TensorPrimitive<Flex>| t.tensor().to_contiguous();
                    let out = (self.forward)(
                        &float(a.into_primitive()),
                        &float(b.into_primitive()),
                        &float(c.into_primitive()),
                    );
                    return cast_back(Tensor::<Flex, DO>::from_primitive(TensorPrimitive::Float(
                        out,
                    )));
                }
                Err(inputs) => inputs,
            };
        type Ad = Autodiff<Flex>;
        match cast::<_, (Tensor<Ad, D1>, Tensor<Ad, D2>, Tensor<Ad, D3>)>(inputs) {
            Ok((a, b, c)) => cast_back(self.autodiff::<DO>(a, b, c)),
            Err((a, b, c)) => (self.composite)(a, b, c),
        }
    }

    fn autodiff<const O: usize>(
        &self,
        a: Tensor<Autodiff<Flex>, D1>,
        b: Tensor<Autodiff<Flex>, D2>,
        c: Tensor<Autodiff<Flex>, D3>,
    ) -> Tensor<Autodiff<Flex>, O> {
        let (a, b, c) = (
            a.into_primitive().tensor(),
            b.into_primitive().tensor(),
            c.into_primitive().tensor(),
        );
        let inner = (
            a.primitive.to_contiguous(),
            b.primitive.to_contiguous(),
            c.primitive.to_contiguous(),
        );
        let out = (self.forward)(&inner.0, &inner.1, &inner.2);
        let prep = Backward3Op(self.backward)
            .prepare::<NoCheckpointing>([a.node.clone(), b.node.clone(), c.node.clone()])
            .compute_bound()
            .stateful();
        let out = match prep {
            OpsKind::Tracked(prep) => prep.finish(inner, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

/// The autodiff node of a [`Fused3`] operation.
#[derive(Debug)]
struct Backward3Op(Backward3);

impl Backward<Flex, 3> for Backward3Op {
    /// The three contiguous inputs.
    type State = (FlexTensor, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b, c) = ops.state;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let [ga, gb, gc] = (self.0)(&a, &b, &c, &grad);
        let [pa, pb, pc] = ops.parents;
        for (parent, g) in [(pa, ga), (pb, gb), (pc, gc)] {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}

/// `t` as a `U` when `T` and `U` are the same type, otherwise `t` back.
pub(crate) fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
    let boxed: Box<dyn Any> = Box::new(t);
    match boxed.downcast::<U>() {
        Ok(u) => Ok(*u),
        Err(boxed) => match boxed.downcast::<T>() {
            Ok(t) => Err(*t),
            // The box was made from a `T` two lines above.
            Err(_) => unreachable!("a boxed T downcasts to T"),
        },
    }
}

/// The way back after [`cast`] succeeded: the caller has proven `T` and `U` are the same type.
pub(crate) fn cast_back<T: 'static, U: 'static>(t: T) -> U {
    match cast::<T, U>(t) {
        Ok(u) => u,
        // Only called with the result of a computation on the type `cast` matched.
        Err(_) => unreachable!("cast_back between different types"),
    }
}

/// Seeded values in [-1, 1) for kernel tests (xorshift).
#[cfg(test)]
fn test_values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Asserts that two tensors agree element-wise within `tol` relative to `1 + |b|`.
#[cfg(test)]
fn assert_close<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>, tol: f32) {
    let a = a.into_data().to_vec::<f32>().unwrap();
    let b = b.into_data().to_vec::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
    }
}
