//! The bridge ("connection layer"): how the encoder's summary becomes the decoder's initial state.

use super::encoder::EncoderOutput;
use crate::kernels::linear;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::tanh;
use serde::{Deserialize, Serialize};

/// How the decoder's initial state is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BridgeKind {
    /// Zeros: the decoder learns everything through attention.
    None,
    /// `tanh(W [h→_last; h←_first] + b)` from the final states of both directions (Bahdanau et al.
    /// 2015, §A.2.2, use the backward state alone; OpenNMT and JoeyNMT use both).
    #[default]
    Dense,
    /// `tanh(W mean_j(h_j) + b)` over the real (non-padding) source states (Sennrich et al. 2017, Nematus).
    Mean,
}

/// Projects an encoder summary to one initial hidden state per decoder layer.
#[derive(Module, Debug)]
pub struct Bridge<B: Backend> {
    /// `[encoder_out, layers·hidden]`; absent for [`BridgeKind::None`].
    pub proj: Option<Linear<B>>,
    #[module(skip)]
    kind: BridgeKind,
    layers: usize,
    hidden: usize,
}

impl<B: Backend> Bridge<B> {
    /// Builds the bridge.
    pub fn new(
        kind: BridgeKind,
        encoder_out: usize,
        layers: usize,
        hidden: usize,
        device: &B::Device,
    ) -> Self {
        Bridge {
            proj: (kind != BridgeKind::None)
                .then(|| LinearConfig::new(encoder_out, layers * hidden).init(device)),
            kind,
            layers,
            hidden,
        }
    }

    /// Initial hidden state of each decoder layer, each `[batch, hidden]`.
    pub fn forward(&self, enc: &EncoderOutput<B>) -> Vec<Tensor<B, 2>> {
        let [batch, _, out] = enc.states.dims();
        let summary = match self.kind {
            BridgeKind::None => None,
            BridgeKind::Dense => Some(enc.last.clone()),
            BridgeKind::Mean => {
                // States are zero on padding, so the sum is over real tokens only.
                let lengths: Vec<f32> = enc.lengths.iter().map(|&n| n.max(1) as f32).collect();
                let lengths = Tensor::<B, 2>::from_data(
                    TensorData::new(lengths, [batch, 1]),
                    &enc.states.device(),
                );
                let sum: Tensor<B, 2> = enc.states.clone().sum_dim(1).reshape([batch, out]);
                Some(sum / lengths)
            }
        };
        match (summary, &self.proj) {
            (Some(summary), Some(proj)) => tanh(linear(proj, summary))
                .chunk(self.layers, 1)
                .into_iter()
                .collect(),
            _ => (0..self.layers)
                .map(|_| Tensor::zeros([batch, self.hidden], &enc.states.device()))
                .collect(),
        }
    }
}
