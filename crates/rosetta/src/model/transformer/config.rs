//! The Transformer's architecture: the `[model]` table of a config with `arch = "transformer"`.
//!
//! Every choice that changes the function computed (and therefore whether a checkpoint from another
//! toolkit imports correctly) is a named option here, with its source:
//! - `norm`: where LayerNorm sits. Post-norm is the original (Vaswani et al. 2017, §3.1:
//!   `LayerNorm(x + Sublayer(x))`) and Marian/OPUS-MT's; pre-norm (`x + Sublayer(LayerNorm(x))`, with a
//!   final LayerNorm over each stack) trains deep stacks without warmup tricks (Xiong et al. 2020) and
//!   is fairseq's `--encoder-normalize-before`. Pre-norm is the default.
//! - `positions`: Vaswani et al.'s sinusoids interleave sin (even dimensions) and cos (odd);
//!   Hugging Face's Marian (OPUS-MT) puts sin in the first half and cos in the second with the same
//!   frequencies (`sinusoidal-halves`); `learned` is a trained table (Gehring et al. 2017; BERT).
//!   fairseq's layout also puts sin first but with frequencies `exp(−i·ln 10000 / (d/2 − 1))` and
//!   positions from `padding_idx + 1`: not one of these, so fairseq checkpoints need their own variant.
//! - `scale_embeddings`: multiply embeddings by √d_model (Vaswani et al. §3.4).
//! - `share_embeddings` / `tie_output`: one table for source and target (needs a joint vocabulary) and
//!   the output projection tied to the target table (Press & Wolf 2017; Vaswani et al. §3.4).
//! - `output_bias`: a bias on the vocabulary logits (Marian's `final_logits_bias`).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Where each sublayer's LayerNorm sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NormPosition {
    /// `x + Sublayer(LayerNorm(x))`, and a final LayerNorm after each stack (Xiong et al. 2020).
    #[default]
    Pre,
    /// `LayerNorm(x + Sublayer(x))` (Vaswani et al. 2017; Marian).
    Post,
}

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PositionKind {
    /// `PE(p, 2i) = sin(p / 10000^(2i/d))`, `PE(p, 2i+1) = cos(…)` (Vaswani et al. §3.5).
    #[default]
    Sinusoidal,
    /// The same frequencies with every sin in the first half and every cos in the second (Hugging
    /// Face's `MarianSinusoidalPositionalEmbedding`, OPUS-MT).
    SinusoidalHalves,
    /// A trained `[max_positions, d_model]` table.
    Learned,
}

/// The feed-forward layer's nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(0, x)` (Vaswani et al. §3.3).
    #[default]
    Relu,
    /// `x Φ(x)` (Hendrycks & Gimpel 2016), exact form.
    Gelu,
    /// `x σ(x)` (Ramachandran et al. 2017; Marian's `swish`, PyTorch's SiLU).
    Swish,
}

impl Activation {
    /// Applies the nonlinearity element-wise (relu and swish of an inference tensor on the CPU with
    /// the vectorized kernel, [`crate::kernels::Epilogue::on_tensor`]).
    pub fn apply<B: burn::prelude::Backend, const D: usize>(
        self,
        x: burn::prelude::Tensor<B, D>,
    ) -> burn::prelude::Tensor<B, D> {
        use crate::kernels::Epilogue;
        use burn::tensor::activation::{gelu, relu, silu};
        match self {
            Activation::Relu => Epilogue::Relu.on_tensor(x).unwrap_or_else(relu),
            Activation::Gelu => gelu(x),
            Activation::Swish => Epilogue::Swish.on_tensor(x).unwrap_or_else(silu),
        }
    }
}

/// Architecture of a Transformer encoder-decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformerConfig {
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Model width (embeddings and every sublayer's input and output).
    pub d_model: usize,
    /// Attention heads; `d_model` must be a multiple.
    pub heads: usize,
    /// Inner size of the feed-forward layers.
    pub ffn_size: usize,
    /// `relu`, `gelu` or `swish`.
    pub activation: Activation,
    /// `pre` or `post`.
    pub norm: NormPosition,
    /// `sinusoidal`, `sinusoidal-halves` or `learned`.
    pub positions: PositionKind,
    /// Longest sequence the model reads or writes (positions table size; also caps decoding).
    pub max_positions: usize,
    /// Multiply embeddings by √d_model.
    pub scale_embeddings: bool,
    /// One embedding table for source and target (needs `text.joint = true`).
    pub share_embeddings: bool,
    /// Tie the output projection to the target embedding.
    pub tie_output: bool,
    /// Add a trained bias to the vocabulary logits.
    pub output_bias: bool,
    /// Dropout on embeddings and on every sublayer's output before the residual addition.
    pub dropout: f64,
    /// Dropout on attention weights.
    pub attention_dropout: f64,
    /// Dropout after the feed-forward nonlinearity.
    pub activation_dropout: f64,
    /// LayerNorm ε.
    pub layer_norm_eps: f64,
    /// Decoder layer whose cross-attention (averaged over heads) is reported for alignments,
    /// heatmaps and `<unk>` replacement; negative counts from the top (−1 = last layer).
    pub alignment_layer: i64,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        // Vaswani et al. (2017) "base", pre-norm.
        TransformerConfig {
            encoder_layers: 6,
            decoder_layers: 6,
            d_model: 512,
            heads: 8,
            ffn_size: 2048,
            activation: Activation::Relu,
            norm: NormPosition::Pre,
            positions: PositionKind::Sinusoidal,
            max_positions: 1024,
            scale_embeddings: true,
            share_embeddings: false,
            tie_output: true,
            output_bias: false,
            dropout: 0.1,
            attention_dropout: 0.0,
            activation_dropout: 0.0,
            layer_norm_eps: 1e-5,
            alignment_layer: -1,
        }
    }
}

impl TransformerConfig {
    /// Checks the architecture, explaining any problem in plain English.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        for (name, value) in [
            ("encoder_layers", self.encoder_layers),
            ("decoder_layers", self.decoder_layers),
            ("d_model", self.d_model),
            ("heads", self.heads),
            ("ffn_size", self.ffn_size),
            ("max_positions", self.max_positions),
        ] {
            if value == 0 {
                return fail(format!("model.{name} must be at least 1"));
            }
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return fail(format!(
                "model.d_model ({}) must be a multiple of model.heads ({}): each head reads d_model / heads dimensions",
                self.d_model, self.heads
            ));
        }
        if self.positions != PositionKind::Learned && !self.d_model.is_multiple_of(2) {
            return fail(format!(
                "sinusoidal positions pair sin and cos dimensions, so model.d_model ({}) must be even",
                self.d_model
            ));
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("attention_dropout", self.attention_dropout),
            ("activation_dropout", self.activation_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return fail(format!("model.{name} = {p} must be in [0, 1)"));
            }
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return fail(format!(
                "model.layer_norm_eps = {} must be positive",
                self.layer_norm_eps
            ));
        }
        let layers = self.decoder_layers as i64;
        if self.alignment_layer >= layers || self.alignment_layer < -layers {
            return fail(format!(
                "model.alignment_layer = {} names no decoder layer: use 0..{} or -1..-{}",
                self.alignment_layer,
                layers - 1,
                layers
            ));
        }
        Ok(())
    }

    /// The 0-based decoder layer reported as attention.
    pub fn alignment_layer_index(&self) -> usize {
        if self.alignment_layer < 0 {
            (self.decoder_layers as i64 + self.alignment_layer) as usize
        } else {
            self.alignment_layer as usize
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }
}
