//! Bottleneck adapters (Houlsby et al. 2019; Bapna & Firat 2019 for translation): after each
//! sublayer of a frozen Transformer, `h ← h + W_up · relu(W_down · h)` with a small inner width
//! (the bottleneck), trained alone. `W_up` starts at zero, so each adapter starts as the identity
//! and training starts exactly from the pretrained model. Unlike LoRA an adapter is nonlinear and
//! cannot be folded into the weights: the search runs it at every step.

use crate::model::lora::FinetuneConfig;
use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

/// One adapter: `[.., d_model] → [.., d_model]`.
#[derive(Module, Debug)]
pub struct Adapter<B: Backend> {
    /// Down-projection `[d_model, bottleneck]`.
    pub down: Linear<B>,
    /// Up-projection `[bottleneck, d_model]`, zero at the start.
    pub up: Linear<B>,
}

impl<B: Backend> Adapter<B> {
    /// A fresh adapter (the identity) for width `d_model`.
    pub fn new(d_model: usize, config: &FinetuneConfig, device: &B::Device) -> Self {
        let m = config.bottleneck;
        let mut up = LinearConfig::new(m, d_model)
            .with_initializer(Initializer::Zeros)
            .init(device);
        if let Some(bias) = up.bias.take() {
            up.bias = Some(Param::from_tensor(bias.val().zeros_like()));
        }
        Adapter {
            // Houlsby et al. initialize near zero (§3.6): a small normal draw.
            down: LinearConfig::new(d_model, m)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 1e-2,
                })
                .init(device),
            up,
        }
    }

    /// `h + up(relu(down(h)))`.
    pub fn forward<const D: usize>(&self, h: Tensor<B, D>) -> Tensor<B, D> {
        let inner = burn::tensor::activation::relu(crate::kernels::linear(&self.down, h.clone()));
        h + crate::kernels::linear(&self.up, inner)
    }
}

/// An optional adapter applied to a sublayer's output.
pub fn through<B: Backend, const D: usize>(
    adapter: Option<&Adapter<B>>,
    h: Tensor<B, D>,
) -> Tensor<B, D> {
    match adapter {
        Some(a) => a.forward(h),
        None => h,
    }
}
