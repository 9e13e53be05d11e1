//! The attention RNN encoder-decoder: config, module, init, forward.

use super::attention::AttentionKind;
use super::bridge::{Bridge, BridgeKind};
use super::cell::CellKind;
use super::decoder::{Decoder, DecoderMemory, DecoderSpec, DecoderState};
use super::embedding::EmbeddingInit;
use super::encoder::Encoder;
use super::input::SourceBatch;
use crate::error::{Error, Result};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Architecture of an attention RNN encoder-decoder (the `[model]` table of a config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RnnConfig {
    /// Recurrent unit of encoder and decoder: `lstm`, `gru` or `rnn`.
    pub cell: CellKind,
    /// Embedding size (source and target).
    pub embedding_size: usize,
    /// Encoder hidden size per direction.
    pub encoder_hidden: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Read the source in both directions (the encoder output is then 2 × `encoder_hidden`).
    pub bidirectional: bool,
    /// Decoder hidden size.
    pub decoder_hidden: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// How the decoder's initial state is made: `none`, `dense` or `mean`.
    pub bridge: BridgeKind,
    /// `none`, `bahdanau`, `luong-dot` or `luong-general`.
    pub attention: AttentionKind,
    /// Size of Bahdanau's attention layer.
    pub attention_size: usize,
    /// Luong's input feeding (ignored by other attention kinds).
    pub input_feeding: bool,
    /// Let the output layer see the previous target embedding too (Bahdanau's deep output).
    pub embedding_to_output: bool,
    /// Pass `[state; context]` through `tanh(W · + b)` before the vocabulary projection (Luong et al.
    /// 2015, eq. 5; JoeyNMT's and OpenNMT's default). Off: project `[state; context]` straight to the
    /// vocabulary, as the reference PyTorch model does.
    pub attentional_layer: bool,
    /// Tie the target embedding and the output projection.
    pub tie_embeddings: bool,
    /// Dropout on embeddings, between layers and before the output projection.
    pub dropout: f64,
    /// How source and target embeddings start: `normal` (N(0, 1), PyTorch's default) or `uniform`
    /// (U(−0.1, 0.1), OpenNMT-py's).
    pub embedding_init: EmbeddingInit,
}

impl Default for RnnConfig {
    fn default() -> Self {
        // The shape of the reference PyTorch model (BiGRU 2×256, GRU 512, Bahdanau 512).
        RnnConfig {
            cell: CellKind::Gru,
            embedding_size: 256,
            encoder_hidden: 256,
            encoder_layers: 2,
            bidirectional: true,
            decoder_hidden: 512,
            decoder_layers: 1,
            bridge: BridgeKind::Dense,
            attention: AttentionKind::Bahdanau,
            attention_size: 512,
            input_feeding: true,
            embedding_to_output: true,
            attentional_layer: true,
            tie_embeddings: false,
            dropout: 0.3,
            embedding_init: EmbeddingInit::Normal,
        }
    }
}

impl RnnConfig {
    /// Encoder output size.
    pub fn encoder_out(&self) -> usize {
        if self.bidirectional {
            2 * self.encoder_hidden
        } else {
            self.encoder_hidden
        }
    }

    /// Checks the architecture, explaining any problem in plain English.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("embedding_size", self.embedding_size),
            ("encoder_hidden", self.encoder_hidden),
            ("encoder_layers", self.encoder_layers),
            ("decoder_hidden", self.decoder_hidden),
            ("decoder_layers", self.decoder_layers),
            ("attention_size", self.attention_size),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("model.{name} must be at least 1")));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!(
                "model.dropout = {} must be in [0, 1)",
                self.dropout
            )));
        }
        if self.attention == AttentionKind::LuongDot && self.decoder_hidden != self.encoder_out() {
            return Err(Error::Config(format!(
                "luong-dot attention compares decoder and encoder states directly, so decoder_hidden \
                 ({}) must equal the encoder output size ({}{}); use luong-general or bahdanau otherwise",
                self.decoder_hidden,
                self.encoder_out(),
                if self.bidirectional {
                    ", twice encoder_hidden because the encoder is bidirectional"
                } else {
                    ""
                }
            )));
        }
        if !self.attentional_layer {
            if self.tie_embeddings {
                return Err(Error::Config(
                    "model.tie_embeddings needs model.attentional_layer = true: the tied projection \
                     reads vectors of the embedding size, which only the attentional layer produces"
                        .into(),
                ));
            }
            if self.attention.is_luong() && self.input_feeding {
                return Err(Error::Config(
                    "Luong input feeding feeds the attentional vector back, so it needs \
                     model.attentional_layer = true (or set model.input_feeding = false)"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// The decoder's sizes and options.
    pub fn decoder_spec(&self, tgt_vocab: usize) -> DecoderSpec {
        DecoderSpec {
            cell: self.cell,
            vocab: tgt_vocab,
            emb: self.embedding_size,
            hidden: self.decoder_hidden,
            layers: self.decoder_layers,
            encoder_out: self.encoder_out(),
            attention: self.attention,
            attention_size: self.attention_size,
            input_feeding: self.input_feeding,
            embedding_to_output: self.embedding_to_output,
            attentional_layer: self.attentional_layer,
            tie_embeddings: self.tie_embeddings,
            dropout: self.dropout,
            embedding_init: self.embedding_init,
        }
    }
}

/// Encoder, bridge and decoder.
#[derive(Module, Debug)]
pub struct RnnSeq2Seq<B: Backend> {
    /// Reads the source.
    pub encoder: Encoder<B>,
    /// Makes the decoder's initial state.
    pub bridge: Bridge<B>,
    /// Predicts the target.
    pub decoder: Decoder<B>,
}

impl<B: Backend> RnnSeq2Seq<B> {
    /// Builds a freshly initialized model. Call [`RnnConfig::validate`] first.
    pub fn new(config: &RnnConfig, src_vocab: usize, tgt_vocab: usize, device: &B::Device) -> Self {
        RnnSeq2Seq {
            encoder: Encoder::new(
                config.cell,
                src_vocab,
                config.embedding_size,
                config.encoder_hidden,
                config.encoder_layers,
                config.bidirectional,
                config.dropout,
                config.embedding_init,
                device,
            ),
            bridge: Bridge::new(
                config.bridge,
                config.encoder_out(),
                config.decoder_layers,
                config.decoder_hidden,
                device,
            ),
            decoder: Decoder::new(&config.decoder_spec(tgt_vocab), device),
        }
    }

    /// Freezes every parameter and adds the LoRA updates `config` targets (Hu et al. 2021; the
    /// RNN's layers in [`crate::model::lora::RNN_LORA_TARGETS`]), the only parameters left to
    /// train. A target the model lacks is an error naming it.
    pub fn frozen_with_lora(
        self,
        config: &crate::model::lora::FinetuneConfig,
        device: &B::Device,
    ) -> Result<Self> {
        let mut model = self.no_grad();
        if config.train_embeddings {
            for table in [&mut model.encoder.embedding, &mut model.decoder.embedding] {
                table.weight = table.weight.clone().set_require_grad(true);
            }
        }
        model.encoder.add_lora(config, device);
        model.decoder.add_lora(config, device)?;
        Ok(model)
    }

    /// Folds every LoRA update into its layer's weight, as deployment and search steps need.
    pub fn merge_lora(self) -> Self {
        RnnSeq2Seq {
            encoder: self.encoder.merge_lora(),
            bridge: self.bridge,
            decoder: self.decoder.merge_lora(),
        }
    }

    /// Encodes the source: the decoder's initial state and what it reads on every step.
    pub fn encode(&self, src: &SourceBatch<B>) -> (DecoderState<B>, DecoderMemory<B>) {
        let enc = self.encoder.forward(src);
        let init = self.bridge.forward(&enc);
        let memory = self.decoder.memory(enc.states, enc.pad_mask, enc.last);
        (self.decoder.start(init), memory)
    }

    /// Teacher-forced forward pass. `tgt_in`: `[batch, tgt_len]`.
    /// Returns logits `[batch, tgt_len, tgt_vocab]` and attention `[batch, tgt_len, src_len]`.
    pub fn forward(
        &self,
        src: &SourceBatch<B>,
        tgt_in: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 3>>) {
        let (state, memory) = self.encode(src);
        self.decoder.forward(tgt_in, state, &memory)
    }
}
