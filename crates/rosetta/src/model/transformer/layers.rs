//! One encoder layer and one decoder layer (Vaswani et al. 2017, §3.1), pre- or post-norm.
//!
//! Names follow Hugging Face's Marian (`self_attn`, `self_attn_layer_norm`, `encoder_attn`,
//! `encoder_attn_layer_norm`, `fc1`, `fc2`, `final_layer_norm`), so checkpoints map key for key.

use super::attention::{
    KvCache, MultiHeadAttention, packed_linear, packed_linear_activated, projected, xavier_linear,
};
use super::config::{Activation, NormPosition, TransformerConfig};
use super::norm::LayerNorm;
use crate::error::Result;
use crate::kernels;
use crate::kernels::{AttentionMask, PackCache};
use crate::model::adapter::{Adapter, through};
use crate::model::int8::Int8Pinner;
use crate::model::lora::{FinetuneConfig, Lora};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;

/// A residual sublayer with its LayerNorm: `x + f(LN(x))` (pre) or `LN(x + f(x))` (post).
fn residual<B: Backend>(
    norm: NormPosition,
    (layer_norm, adapter): (&LayerNorm<B>, Option<&Adapter<B>>),
    dropout: &Dropout,
    x: Tensor<B, 3>,
    f: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
) -> Tensor<B, 3> {
    // An adapter (fine-tuning) transforms the sublayer's output before dropout and the residual
    // addition (Houlsby et al. 2019, Fig. 2).
    let f = |h| through(adapter, f(h));
    match norm {
        NormPosition::Pre => x.clone() + kernels::dropout(f(layer_norm.forward(x)), dropout.prob),
        NormPosition::Post => layer_norm.forward(x.clone() + kernels::dropout(f(x), dropout.prob)),
    }
}

/// The position-wise feed-forward network `fc2(act(fc1(x)))` (§3.3): `[batch, len, d_model]` →
/// `[batch, len, d_model]`.
fn feed_forward<B: Backend>(
    (fc1, fc1_lora): (&Linear<B>, Option<&Lora<B>>),
    (fc2, fc2_lora): (&Linear<B>, Option<&Lora<B>>),
    packs: &[PackCache; 2],
    activation: Activation,
    activation_dropout: &Dropout,
    x: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let h = projected(fc1, fc1_lora, &packs[0], x, Some(activation)); // [batch, len, ffn_size]
    let h = kernels::dropout(h, activation_dropout.prob);
    projected(fc2, fc2_lora, &packs[1], h, None)
}

/// LoRA updates of `fc1` and `fc2` for a feed-forward of width `d_model → ffn → d_model`.
fn ffn_lora<B: Backend>(
    fc1: &Linear<B>,
    config: &FinetuneConfig,
    device: &B::Device,
) -> (Option<Lora<B>>, Option<Lora<B>>) {
    let [d, ffn] = fc1.weight.dims();
    (
        config
            .targets("fc1")
            .then(|| Lora::new(d, ffn, config, device)),
        config
            .targets("fc2")
            .then(|| Lora::new(ffn, d, config, device)),
    )
}

fn merge<B: Backend>(layer: Linear<B>, lora: Option<Lora<B>>) -> Linear<B> {
    match lora {
        Some(l) => l.merge_into(layer),
        None => layer,
    }
}

/// Self-attention and feed-forward over the source.
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// Self-attention.
    pub self_attn: MultiHeadAttention<B>,
    /// Its LayerNorm.
    pub self_attn_layer_norm: LayerNorm<B>,
    /// Feed-forward input `[d_model, ffn_size]`.
    pub fc1: Linear<B>,
    /// Feed-forward output `[ffn_size, d_model]`.
    pub fc2: Linear<B>,
    /// LoRA update of `fc1` (`[finetune] method = "lora"`).
    pub fc1_lora: Option<Lora<B>>,
    /// LoRA update of `fc2`.
    pub fc2_lora: Option<Lora<B>>,
    /// Adapter after the self-attention (`[finetune] method = "adapter"`).
    pub self_attn_adapter: Option<Adapter<B>>,
    /// Adapter after the feed-forward.
    pub ffn_adapter: Option<Adapter<B>>,
    /// The feed-forward's LayerNorm.
    pub final_layer_norm: LayerNorm<B>,
    dropout: Dropout,
    activation_dropout: Dropout,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    norm: NormPosition,
    /// `fc1` and `fc2` in 8 bits once quantized for inference (not parameters).
    #[module(skip)]
    ffn_packs: [PackCache; 2],
}

impl<B: Backend> EncoderLayer<B> {
    /// Keeps every dense layer in 8-bit integers only, named under `prefix` (see
    /// [`Int8Pinner`]).
    pub fn into_int8(mut self, pinner: &Int8Pinner, prefix: &str) -> Result<Self> {
        self.self_attn = self
            .self_attn
            .into_int8(pinner, &format!("{prefix}.self_attn"))?;
        pinner.pin_linear(&format!("{prefix}.fc1"), &mut self.fc1, &self.ffn_packs[0])?;
        pinner.pin_linear(&format!("{prefix}.fc2"), &mut self.fc2, &self.ffn_packs[1])?;
        Ok(self)
    }

    /// Adds the LoRA updates `config` targets, or its adapters.
    pub fn add_finetune(&mut self, config: &FinetuneConfig, device: &B::Device) {
        self.self_attn.add_lora(config, device);
        (self.fc1_lora, self.fc2_lora) = ffn_lora(&self.fc1, config, device);
        let d = self.fc1.weight.dims()[0];
        let adapter = || config.adapters().then(|| Adapter::new(d, config, device));
        self.self_attn_adapter = adapter();
        self.ffn_adapter = adapter();
    }

    /// Folds the LoRA updates into the weights.
    pub fn merge_lora(mut self) -> Self {
        self.self_attn = self.self_attn.merge_lora();
        self.fc1 = merge(self.fc1, self.fc1_lora.take());
        self.fc2 = merge(self.fc2, self.fc2_lora.take());
        self
    }

    /// A fresh layer.
    pub fn new(config: &TransformerConfig, device: &B::Device) -> Self {
        let ln = || LayerNorm::new(config.d_model, config.layer_norm_eps, device);
        EncoderLayer {
            self_attn: MultiHeadAttention::new(
                config.d_model,
                config.heads,
                config.attention_dropout,
                device,
            ),
            self_attn_layer_norm: ln(),
            fc1: xavier_linear(config.d_model, config.ffn_size, true, device),
            fc2: xavier_linear(config.ffn_size, config.d_model, true, device),
            fc1_lora: None,
            fc2_lora: None,
            self_attn_adapter: None,
            ffn_adapter: None,
            final_layer_norm: ln(),
            dropout: DropoutConfig::new(config.dropout).init(),
            activation_dropout: DropoutConfig::new(config.activation_dropout).init(),
            activation: config.activation,
            norm: config.norm,
            ffn_packs: Default::default(),
        }
    }

    /// `x` `[batch, src_len, d_model]`, `pad_bias` `[batch, src_len]` → same shape as `x`.
    pub fn forward(&self, x: Tensor<B, 3>, pad_bias: &Tensor<B, 2>) -> Tensor<B, 3> {
        let x = residual(
            self.norm,
            (&self.self_attn_layer_norm, self.self_attn_adapter.as_ref()),
            &self.dropout,
            x,
            |h| self.self_attn.self_attend(h, pad_bias),
        );
        residual(
            self.norm,
            (&self.final_layer_norm, self.ffn_adapter.as_ref()),
            &self.dropout,
            x,
            |h| {
                feed_forward(
                    (&self.fc1, self.fc1_lora.as_ref()),
                    (&self.fc2, self.fc2_lora.as_ref()),
                    &self.ffn_packs,
                    self.activation,
                    &self.activation_dropout,
                    h,
                )
            },
        )
    }
}

/// Causal self-attention, cross-attention over the source, feed-forward.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Causal self-attention.
    pub self_attn: MultiHeadAttention<B>,
    /// Its LayerNorm.
    pub self_attn_layer_norm: LayerNorm<B>,
    /// Attention over the encoder output.
    pub encoder_attn: MultiHeadAttention<B>,
    /// Its LayerNorm.
    pub encoder_attn_layer_norm: LayerNorm<B>,
    /// Feed-forward input `[d_model, ffn_size]`.
    pub fc1: Linear<B>,
    /// Feed-forward output `[ffn_size, d_model]`.
    pub fc2: Linear<B>,
    /// LoRA update of `fc1` (`[finetune] method = "lora"`).
    pub fc1_lora: Option<Lora<B>>,
    /// LoRA update of `fc2`.
    pub fc2_lora: Option<Lora<B>>,
    /// Adapter after the self-attention (`[finetune] method = "adapter"`).
    pub self_attn_adapter: Option<Adapter<B>>,
    /// Adapter after the cross-attention.
    pub encoder_attn_adapter: Option<Adapter<B>>,
    /// Adapter after the feed-forward.
    pub ffn_adapter: Option<Adapter<B>>,
    /// The feed-forward's LayerNorm.
    pub final_layer_norm: LayerNorm<B>,
    dropout: Dropout,
    activation_dropout: Dropout,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    norm: NormPosition,
    /// `fc1` and `fc2` packed for search steps (not parameters).
    #[module(skip)]
    ffn_packs: [PackCache; 2],
}

/// The source as one decoder layer reads it: cross-attention keys and values, computed once per
/// sentence.
#[derive(Debug, Clone)]
pub struct CrossMemory<B: Backend> {
    /// `[batch, src_len, d_model]`.
    pub keys: Tensor<B, 3>,
    /// `[batch, src_len, d_model]`.
    pub values: Tensor<B, 3>,
}

/// The source as one decoder layer's search steps read it: keys and values
/// `[batch, src_len, d_model]`, one row per sentence, whichever hypotheses read it.
#[derive(Debug, Clone)]
pub struct StepMemory<B: Backend> {
    /// `[batch, src_len, d_model]`.
    pub keys: Tensor<B, 3>,
    /// `[batch, src_len, d_model]`.
    pub values: Tensor<B, 3>,
}

/// What every decoder layer of one search step reads besides its own cache and memory.
#[derive(Debug)]
pub struct StepRows<'a, B: Backend> {
    /// `[n, len]`: the cache row holding position `p` of hypothesis `i` (see
    /// [`crate::kernels::KvRows::PerPosition`]).
    pub ancestry: &'a [u32],
    /// `[n]`: the cache position where each hypothesis' position 0 is (a sentence that joined a
    /// running search); `None` when all start at 0.
    pub starts: Option<&'a [u32]>,
    /// Target positions, the new one included.
    pub len: usize,
    /// `[n]`: the source row (sentence) each hypothesis reads.
    pub sentences: &'a [u32],
    /// `[batch, src_len]`: −∞ on source padding.
    pub pad_bias: &'a Tensor<B, 2>,
}

// Derived `Clone`/`Copy` would ask the same of `B`; only references are copied.
impl<B: Backend> Clone for StepRows<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for StepRows<'_, B> {}

impl<B: Backend> DecoderLayer<B> {
    /// Keeps every dense layer in 8-bit integers only, named under `prefix` (see
    /// [`Int8Pinner`]).
    pub fn into_int8(mut self, pinner: &Int8Pinner, prefix: &str) -> Result<Self> {
        self.self_attn = self
            .self_attn
            .into_int8(pinner, &format!("{prefix}.self_attn"))?;
        self.encoder_attn = self
            .encoder_attn
            .into_int8(pinner, &format!("{prefix}.encoder_attn"))?;
        pinner.pin_linear(&format!("{prefix}.fc1"), &mut self.fc1, &self.ffn_packs[0])?;
        pinner.pin_linear(&format!("{prefix}.fc2"), &mut self.fc2, &self.ffn_packs[1])?;
        Ok(self)
    }

    /// Adds the LoRA updates `config` targets, or its adapters.
    pub fn add_finetune(&mut self, config: &FinetuneConfig, device: &B::Device) {
        self.self_attn.add_lora(config, device);
        self.encoder_attn.add_lora(config, device);
        (self.fc1_lora, self.fc2_lora) = ffn_lora(&self.fc1, config, device);
        let d = self.fc1.weight.dims()[0];
        let adapter = || config.adapters().then(|| Adapter::new(d, config, device));
        self.self_attn_adapter = adapter();
        self.encoder_attn_adapter = adapter();
        self.ffn_adapter = adapter();
    }

    /// Folds the LoRA updates into the weights.
    pub fn merge_lora(mut self) -> Self {
        self.self_attn = self.self_attn.merge_lora();
        self.encoder_attn = self.encoder_attn.merge_lora();
        self.fc1 = merge(self.fc1, self.fc1_lora.take());
        self.fc2 = merge(self.fc2, self.fc2_lora.take());
        self
    }

    /// A fresh layer.
    pub fn new(config: &TransformerConfig, device: &B::Device) -> Self {
        let ln = || LayerNorm::new(config.d_model, config.layer_norm_eps, device);
        let mha = || {
            MultiHeadAttention::new(
                config.d_model,
                config.heads,
                config.attention_dropout,
                device,
            )
        };
        DecoderLayer {
            self_attn: mha(),
            self_attn_layer_norm: ln(),
            encoder_attn: mha(),
            encoder_attn_layer_norm: ln(),
            fc1: xavier_linear(config.d_model, config.ffn_size, true, device),
            fc2: xavier_linear(config.ffn_size, config.d_model, true, device),
            fc1_lora: None,
            fc2_lora: None,
            self_attn_adapter: None,
            encoder_attn_adapter: None,
            ffn_adapter: None,
            final_layer_norm: ln(),
            dropout: DropoutConfig::new(config.dropout).init(),
            activation_dropout: DropoutConfig::new(config.activation_dropout).init(),
            activation: config.activation,
            norm: config.norm,
            ffn_packs: Default::default(),
        }
    }

    /// Cross-attention keys and values of the encoder output `[batch, src_len, d_model]`.
    pub fn cross_memory(&self, encoded: Tensor<B, 3>) -> CrossMemory<B> {
        let (keys, values) = self.encoder_attn.keys_values(encoded);
        CrossMemory { keys, values }
    }

    /// [`Self::cross_memory`] laid out for search steps.
    pub fn step_memory(&self, encoded: Tensor<B, 3>) -> StepMemory<B> {
        let (keys, values) = self.encoder_attn.step_memory(encoded);
        StepMemory { keys, values }
    }

    /// The cross-attention and feed-forward sublayers, shared by the full and the incremental pass.
    /// Returns the layer output and the cross-attention weights `[batch, heads, tq, src_len]`.
    fn cross_and_ffn(
        &self,
        x: Tensor<B, 3>,
        memory: &CrossMemory<B>,
        pad_bias: &Tensor<B, 2>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let mut weights = None;
        let x = residual(
            self.norm,
            (
                &self.encoder_attn_layer_norm,
                self.encoder_attn_adapter.as_ref(),
            ),
            &self.dropout,
            x,
            |h| {
                let q = self.encoder_attn.queries(h);
                let (out, w) = self.encoder_attn.attend(
                    q,
                    memory.keys.clone(),
                    memory.values.clone(),
                    AttentionMask::Keys(pad_bias),
                );
                weights = Some(w);
                out
            },
        );
        let x = residual(
            self.norm,
            (&self.final_layer_norm, self.ffn_adapter.as_ref()),
            &self.dropout,
            x,
            |h| {
                feed_forward(
                    (&self.fc1, self.fc1_lora.as_ref()),
                    (&self.fc2, self.fc2_lora.as_ref()),
                    &self.ffn_packs,
                    self.activation,
                    &self.activation_dropout,
                    h,
                )
            },
        );
        // `residual` always calls its sublayer once.
        let weights = weights.unwrap_or_else(|| unreachable!("the cross-attention ran"));
        (x, weights)
    }

    /// Teacher-forced pass: `x` `[batch, tgt_len, d_model]`, each position reading itself and the
    /// positions before it, and the source `pad_bias` `[batch, src_len]`.
    /// Returns the output and the cross-attention weights `[batch, heads, tgt_len, src_len]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        memory: &CrossMemory<B>,
        pad_bias: &Tensor<B, 2>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let x = residual(
            self.norm,
            (&self.self_attn_layer_norm, self.self_attn_adapter.as_ref()),
            &self.dropout,
            x,
            |h| {
                self.self_attn
                    .forward(h.clone(), h, AttentionMask::Causal)
                    .0
            },
        );
        self.cross_and_ffn(x, memory, pad_bias)
    }

    /// One incremental step: `x` `[n, 1, d_model]` is the newest position; its keys and values join
    /// `cache`, and it reads every cached position (all are in its past). Dense layers use weights
    /// packed once per model and attention a fused single-query kernel where the CPU backend runs
    /// them; the arithmetic is that of [`Self::forward`] at this position.
    pub fn step(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        memory: &StepMemory<B>,
        rows: StepRows<'_, B>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let x = residual(
            self.norm,
            (&self.self_attn_layer_norm, self.self_attn_adapter.as_ref()),
            &self.dropout,
            x,
            |h| {
                self.self_attn
                    .step_self(h, cache, (rows.ancestry, rows.starts), rows.len)
            },
        );
        let mut weights = None;
        let x = residual(
            self.norm,
            (
                &self.encoder_attn_layer_norm,
                self.encoder_attn_adapter.as_ref(),
            ),
            &self.dropout,
            x,
            |h| {
                let (out, w) = self.encoder_attn.step_cross(
                    h,
                    (&memory.keys, &memory.values),
                    rows.sentences,
                    rows.pad_bias,
                );
                weights = Some(w);
                out
            },
        );
        let x = residual(
            self.norm,
            (&self.final_layer_norm, self.ffn_adapter.as_ref()),
            &self.dropout,
            x,
            |h| {
                let [n, _, d] = h.dims();
                let inner = packed_linear_activated(
                    &self.fc1,
                    &self.ffn_packs[0],
                    h.reshape([n, d]),
                    self.activation,
                );
                packed_linear(&self.fc2, &self.ffn_packs[1], inner).reshape([n, 1, d])
            },
        );
        // `residual` always calls its sublayer once.
        let weights = weights.unwrap_or_else(|| unreachable!("the cross-attention ran"));
        (x, weights)
    }
}
