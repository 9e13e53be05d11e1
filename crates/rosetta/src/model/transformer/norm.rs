//! Layer normalization (Ba et al. 2016) over the last dimension, with the parameter names of
//! PyTorch and Hugging Face (`weight`, `bias`) so checkpoints map key for key.

use burn::module::Param;
use burn::prelude::*;

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

    /// `[.., d_model] → [.., d_model]`, one fused operation on the CPU
    /// ([`crate::kernels::layer_norm`]).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let d = dims[D - 1];
        let rows = dims[..D - 1].iter().product();
        crate::kernels::layer_norm(
            x.reshape([rows, d]),
            self.weight.val(),
            self.bias.val(),
            self.eps,
        )
        .reshape(dims)
    }
}
