//! Layer normalization (Ba et al. 2016) over the last dimension, with the parameter names of
//! PyTorch and Hugging Face (`weight`, `bias`) so checkpoints map key for key.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;

/// `(x − mean) / √(var + ε) · weight + bias` over the last dimension.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Gain `[d_model]`, starts at 1.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift `[d_model]`, starts at 0.
    pub bias: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// A fresh layer: gain 1, shift 0.
    pub fn new(d_model: usize, eps: f64, device: &B::Device) -> Self {
        LayerNorm {
            weight: Param::from_tensor(Tensor::ones([d_model], device)),
            bias: Param::from_tensor(Tensor::zeros([d_model], device)),
            eps,
        }
    }

    /// `[.., d_model] → [.., d_model]`, through the backend's own layer-norm operation.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
            x.into_primitive().tensor(),
            self.weight.val().into_primitive().tensor(),
            Some(self.bias.val().into_primitive().tensor()),
            self.eps,
        )))
    }
}
