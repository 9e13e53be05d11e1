//! Token embeddings and how they start.

use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The distribution embedding tables are drawn from.
///
/// The scale decides how fast a small model learns at first: with `normal` the recurrent layers see
/// inputs of unit size from the first step, while `uniform` inputs (standard deviation 0.058) take a
/// few hundred Adam steps to grow. Measured on Multi30k de→en (BiGRU 256, GRU 512, batches of 3,000
/// tokens): training loss over steps 51–100 was 5.24 with `normal` and 5.91 with `uniform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingInit {
    /// N(0, 1), PyTorch's `nn.Embedding` default (and the reference PyTorch models').
    #[default]
    Normal,
    /// U(−0.1, 0.1), OpenNMT-py's `param_init 0.1`.
    Uniform,
}

impl EmbeddingInit {
    /// The burn initializer for this choice.
    pub fn initializer(self) -> Initializer {
        match self {
            EmbeddingInit::Normal => Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            },
            EmbeddingInit::Uniform => Initializer::Uniform {
                min: -0.1,
                max: 0.1,
            },
        }
    }

    /// A freshly initialized `[vocab, dim]` table.
    pub fn table<B: Backend>(self, vocab: usize, dim: usize, device: &B::Device) -> Embedding<B> {
        EmbeddingConfig::new(vocab, dim)
            .with_initializer(self.initializer())
            .init(device)
    }
}
