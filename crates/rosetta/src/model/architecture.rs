//! The one model interface: what the trainer, the translator, averaging and ensembles need from an
//! architecture, and the one place where the config's `arch` picks it.
//!
//! Below this point everything is generic over [`Seq2Seq`] (fairseq's `FairseqEncoderDecoderModel`,
//! Marian's `Scorer`); [`AnyModel`] is the closed set of architectures, for code that holds models
//! chosen at run time (the translator, ensembles that mix an RNN and a Transformer).

use super::input::SourceBatch;
use super::seq2seq::{RnnConfig, RnnSeq2Seq};
use super::transformer::{Transformer, TransformerConfig};
use crate::error::{Error, Result};
use crate::kernels::Int8Kernel;
use crate::model::lora::{FinetuneConfig, FinetuneMethod, LORA_TARGETS, RNN_LORA_TARGETS};
use crate::search::{Scorer, Step};
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `[model]` table: `arch = "rnn"` (the default, so configs written before the Transformer
/// load unchanged) or `arch = "transformer"`, and that architecture's keys.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// Attention RNN encoder-decoder.
    Rnn(RnnConfig),
    /// Transformer encoder-decoder.
    Transformer(TransformerConfig),
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Rnn(RnnConfig::default())
    }
}

impl ModelConfig {
    /// The `arch` value.
    pub fn arch(&self) -> &'static str {
        match self {
            ModelConfig::Rnn(_) => "rnn",
            ModelConfig::Transformer(_) => "transformer",
        }
    }

    /// The RNN settings, when the model is an RNN.
    pub fn rnn_mut(&mut self) -> Option<&mut RnnConfig> {
        match self {
            ModelConfig::Rnn(c) => Some(c),
            ModelConfig::Transformer(_) => None,
        }
    }

    /// The Transformer settings, when the model is a Transformer.
    pub fn transformer_mut(&mut self) -> Option<&mut TransformerConfig> {
        match self {
            ModelConfig::Transformer(c) => Some(c),
            ModelConfig::Rnn(_) => None,
        }
    }

    /// Checks the architecture's settings.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Rnn(c) => c.validate(),
            ModelConfig::Transformer(c) => c.validate(),
        }
    }
}

impl Serialize for ModelConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeMap};
        let table = match self {
            ModelConfig::Rnn(c) => toml::Table::try_from(c),
            ModelConfig::Transformer(c) => toml::Table::try_from(c),
        }
        .map_err(S::Error::custom)?;
        let mut map = serializer.serialize_map(Some(table.len() + 1))?;
        map.serialize_entry("arch", self.arch())?;
        for (key, value) in &table {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(deserializer)?;
        let arch = match table.remove("arch") {
            None => "rnn".to_owned(),
            Some(toml::Value::String(s)) => s,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "model.arch must be a string (\"rnn\" or \"transformer\"), not {other}"
                )));
            }
        };
        let rest = toml::Value::Table(table);
        match arch.as_str() {
            "rnn" => RnnConfig::deserialize(rest)
                .map(ModelConfig::Rnn)
                .map_err(|e| {
                    D::Error::custom(format!("[model] (arch = \"rnn\"): {}", e.message()))
                }),
            "transformer" => TransformerConfig::deserialize(rest)
                .map(ModelConfig::Transformer)
                .map_err(|e| {
                    D::Error::custom(format!("[model] (arch = \"transformer\"): {}", e.message()))
                }),
            other => Err(D::Error::custom(format!(
                "unknown model.arch = \"{other}\": use \"rnn\" or \"transformer\""
            ))),
        }
    }
}

/// What the trainer, the translator, averaging and ensembles need from an architecture. `Sync`:
/// searches run on a worker of rayon's pool, reading the model from there.
pub trait Seq2Seq<B: Backend>: Module<B> + Scorer<B> + std::fmt::Debug + Sized + Sync {
    /// A freshly initialized model of `config`'s architecture; an error when `config` describes
    /// another architecture or sizes the model cannot have.
    fn init(
        config: &ModelConfig,
        src_vocab: usize,
        tgt_vocab: usize,
        device: &B::Device,
    ) -> Result<Self>;

    /// Teacher-forced forward pass. `tgt_in`: `[batch, tgt_len]`. Returns logits
    /// `[batch, tgt_len, tgt_vocab]` and, where the model has one, attention over the source
    /// `[batch, tgt_len, src_len]`.
    fn forward(
        &self,
        src: &SourceBatch<B>,
        tgt_in: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 3>>);

    /// Prepares the model for the fine-tuning `config` asks for (LoRA: every parameter frozen,
    /// low-rank updates added; adapters). A method or target the architecture lacks is an error.
    fn with_finetune(self, config: &FinetuneConfig, device: &B::Device) -> Result<Self>;

    /// The model as the search runs it (LoRA updates folded into the weights).
    fn merged(self) -> Self;

    /// The model for inference in 8-bit integers with `kernel` (weights per output column, inputs
    /// per row at every step): a Transformer's every dense layer, its vocabulary projection and the
    /// token table tied to it, their float weights dropped; an RNN's vocabulary projection (its
    /// float weights kept). LoRA updates are merged first.
    fn into_int8(self, kernel: Int8Kernel) -> Result<Self>;
}

fn wrong_arch(expected: &str, config: &ModelConfig) -> Error {
    Error::Config(format!(
        "internal: a {expected} model was asked for with model.arch = \"{}\"",
        config.arch()
    ))
}

impl<B: Backend> Seq2Seq<B> for RnnSeq2Seq<B> {
    fn init(
        config: &ModelConfig,
        src_vocab: usize,
        tgt_vocab: usize,
        device: &B::Device,
    ) -> Result<Self> {
        match config {
            ModelConfig::Rnn(c) => Ok(RnnSeq2Seq::new(c, src_vocab, tgt_vocab, device)),
            other => Err(wrong_arch("rnn", other)),
        }
    }

    fn forward(
        &self,
        src: &SourceBatch<B>,
        tgt_in: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 3>>) {
        RnnSeq2Seq::forward(self, src, tgt_in)
    }

    fn with_finetune(self, config: &FinetuneConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        config.check_targets("rnn", &RNN_LORA_TARGETS)?;
        match config.method {
            FinetuneMethod::None => Ok(self),
            FinetuneMethod::Lora => self.frozen_with_lora(config, device),
            FinetuneMethod::Adapter => Err(Error::Config(
                "finetune.method = \"adapter\" adds bottleneck adapters after Transformer \
                 sublayers; for an RNN use method = \"lora\""
                    .into(),
            )),
        }
    }

    fn merged(self) -> Self {
        self.merge_lora()
    }

    fn into_int8(self, kernel: Int8Kernel) -> Result<Self> {
        self.decoder.quantize(kernel);
        Ok(self)
    }
}

impl<B: Backend> Seq2Seq<B> for Transformer<B> {
    fn init(
        config: &ModelConfig,
        src_vocab: usize,
        tgt_vocab: usize,
        device: &B::Device,
    ) -> Result<Self> {
        match config {
            ModelConfig::Transformer(c) => Transformer::new(c, src_vocab, tgt_vocab, device),
            other => Err(wrong_arch("transformer", other)),
        }
    }

    fn forward(
        &self,
        src: &SourceBatch<B>,
        tgt_in: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 3>>) {
        Transformer::forward(self, src, tgt_in)
    }

    fn with_finetune(self, config: &FinetuneConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        config.check_targets("transformer", &LORA_TARGETS)?;
        Ok(match config.method {
            FinetuneMethod::None => self,
            FinetuneMethod::Lora | FinetuneMethod::Adapter => {
                self.frozen_with_finetune(config, device)
            }
        })
    }

    fn merged(self) -> Self {
        self.merge_lora()
    }

    fn into_int8(self, kernel: Int8Kernel) -> Result<Self> {
        self.merge_lora()
            .into_int8(&crate::model::int8::Int8Pinner::quantize(kernel))
    }
}

/// Runs `job` with the concrete model type `config` names: the one dispatch point on `arch` for
/// code generic over [`Seq2Seq`] (training, averaging).
pub trait ArchJob<B: Backend> {
    /// What the job returns.
    type Output;
    /// The job, for model type `M`.
    fn run<M: Seq2Seq<B>>(self) -> Self::Output;
}

/// Calls `job.run::<M>()` with `M` the model type of `config`.
pub fn dispatch<B: Backend, J: ArchJob<B>>(config: &ModelConfig, job: J) -> J::Output {
    match config {
        ModelConfig::Rnn(_) => job.run::<RnnSeq2Seq<B>>(),
        ModelConfig::Transformer(_) => job.run::<Transformer<B>>(),
    }
}

/// [`ArchJob`] for training: the model type is also an autodiff module whose inner (validation)
/// module is a [`Seq2Seq`] of the inner backend.
pub trait TrainableJob<B: AutodiffBackend> {
    /// What the job returns.
    type Output;
    /// The job, for model type `M`.
    fn run<M>(self) -> Self::Output
    where
        M: Seq2Seq<B> + AutodiffModule<B>,
        M::InnerModule: Seq2Seq<B::InnerBackend>;
}

/// Calls `job.run::<M>()` with `M` the model type of `config`, on an autodiff backend.
pub fn dispatch_trainable<B: AutodiffBackend, J: TrainableJob<B>>(
    config: &ModelConfig,
    job: J,
) -> J::Output {
    match config {
        ModelConfig::Rnn(_) => job.run::<RnnSeq2Seq<B>>(),
        ModelConfig::Transformer(_) => job.run::<Transformer<B>>(),
    }
}

/// A model of any architecture, chosen at load time from its config.
// Models are loaded once and held for a whole run; their size on the stack does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyModel<B: Backend> {
    /// Attention RNN.
    Rnn(RnnSeq2Seq<B>),
    /// Transformer.
    Transformer(Transformer<B>),
}

/// The search state of an [`AnyModel`].
#[derive(Debug, Clone)]
pub enum AnyState<B: Backend> {
    /// An RNN's.
    Rnn(<RnnSeq2Seq<B> as Scorer<B>>::State),
    /// A Transformer's.
    Transformer(<Transformer<B> as Scorer<B>>::State),
}

impl<B: Backend> AnyModel<B> {
    /// A fresh model of `config`'s architecture.
    pub fn init(
        config: &ModelConfig,
        src_vocab: usize,
        tgt_vocab: usize,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(match config {
            ModelConfig::Rnn(c) => AnyModel::Rnn(RnnSeq2Seq::new(c, src_vocab, tgt_vocab, device)),
            ModelConfig::Transformer(c) => {
                AnyModel::Transformer(Transformer::new(c, src_vocab, tgt_vocab, device)?)
            }
        })
    }

    /// The model of directory `dir` (described by `config`, with `pipeline`'s vocabularies), as
    /// trained: its fine-tuning parameters added and the weights loaded (`model.safetensors`, or
    /// the base of `train.init_from` plus `adapter.safetensors`), LoRA not yet merged.
    pub fn load_dir(
        config: &crate::config::Config,
        pipeline: &rosetta_text::pipeline::TextPipeline,
        dir: &std::path::Path,
        device: &B::Device,
    ) -> Result<Self> {
        use crate::train::checkpoint::load_model_dir_weights;
        let int8 = dir.join(crate::model::int8::INT8_WEIGHTS);
        if !dir.join(crate::train::checkpoint::WEIGHTS).exists() && int8.exists() {
            let kernel = Int8Kernel::detect();
            return AnyModel::init(
                &config.model,
                pipeline.src_vocab().len(),
                pipeline.tgt_vocab().len(),
                device,
            )?
            .try_map(
                |_| {
                    Err(Error::Config(format!(
                        "{} holds int8 weights, which only a Transformer reads, but its \
                         config.toml describes an RNN",
                        dir.display()
                    )))
                },
                |m| crate::model::int8::load(m, &int8, kernel, |m, p| m.into_int8(p)),
            );
        }
        AnyModel::init(
            &config.model,
            pipeline.src_vocab().len(),
            pipeline.tgt_vocab().len(),
            device,
        )?
        .try_map(
            |m| m.with_finetune(&config.finetune, device),
            |m| m.with_finetune(&config.finetune, device),
        )?
        .try_map(
            |m| load_model_dir_weights(m, dir),
            |m| load_model_dir_weights(m, dir),
        )
        .map_err(|e| match e {
            // The shapes come from the vocabularies too: a vocabulary cut short (or from another
            // model) shows up here, and must be named.
            crate::Error::Checkpoint { path, message } => {
                let (src, tgt) = (pipeline.src_vocab().len(), pipeline.tgt_vocab().len());
                let files = if pipeline.config().joint {
                    format!("{src} entries in vocab.txt")
                } else {
                    format!("{src} in src.vocab.txt, {tgt} in tgt.vocab.txt")
                };
                crate::Error::Checkpoint {
                    path,
                    message: format!("{message} (the vocabularies give {files})"),
                }
            }
            other => other,
        })
    }

    /// The model as the search runs it (see [`Seq2Seq::merged`]).
    pub fn merged(self) -> Self {
        match self {
            AnyModel::Rnn(m) => AnyModel::Rnn(m.merged()),
            AnyModel::Transformer(m) => AnyModel::Transformer(m.merged()),
        }
    }

    /// The model for inference in 8-bit integers (see [`Seq2Seq::into_int8`]).
    pub fn into_int8(self, kernel: Int8Kernel) -> Result<Self> {
        self.try_map(|m| m.into_int8(kernel), |m| Seq2Seq::into_int8(m, kernel))
    }

    /// Applies a weight-loading (or any other) transformation to the inner model.
    pub fn try_map(
        self,
        rnn: impl FnOnce(RnnSeq2Seq<B>) -> Result<RnnSeq2Seq<B>>,
        transformer: impl FnOnce(Transformer<B>) -> Result<Transformer<B>>,
    ) -> Result<Self> {
        Ok(match self {
            AnyModel::Rnn(m) => AnyModel::Rnn(rnn(m)?),
            AnyModel::Transformer(m) => AnyModel::Transformer(transformer(m)?),
        })
    }

    /// Teacher-forced forward pass (see [`Seq2Seq::forward`]).
    pub fn forward(
        &self,
        src: &SourceBatch<B>,
        tgt_in: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 3>>) {
        match self {
            AnyModel::Rnn(m) => m.forward(src, tgt_in),
            AnyModel::Transformer(m) => m.forward(src, tgt_in),
        }
    }

    /// Trainable parameters.
    pub fn num_params(&self) -> usize {
        match self {
            AnyModel::Rnn(m) => m.num_params(),
            AnyModel::Transformer(m) => m.num_params(),
        }
    }
}

fn mismatch() -> ! {
    // `AnyModel::start` makes the state of its own variant, and the search hands each model back
    // the state it made.
    unreachable!("a search state from another architecture")
}

impl<B: Backend> Scorer<B> for AnyModel<B> {
    type State = AnyState<B>;

    fn start(&self, src: &SourceBatch<B>) -> Self::State {
        match self {
            AnyModel::Rnn(m) => AnyState::Rnn(m.start(src)),
            AnyModel::Transformer(m) => AnyState::Transformer(m.start(src)),
        }
    }

    fn step(&self, prev: Tensor<B, 1, Int>, state: Self::State) -> Step<B, Self::State> {
        match (self, state) {
            (AnyModel::Rnn(m), AnyState::Rnn(s)) => {
                let step = m.step(prev, s);
                Step {
                    logits: step.logits,
                    state: AnyState::Rnn(step.state),
                    attention: step.attention,
                }
            }
            (AnyModel::Transformer(m), AnyState::Transformer(s)) => {
                let step = m.step(prev, s);
                Step {
                    logits: step.logits,
                    state: AnyState::Transformer(step.state),
                    attention: step.attention,
                }
            }
            _ => mismatch(),
        }
    }

    fn select(&self, state: Self::State, indices: Tensor<B, 1, Int>) -> Self::State {
        match (self, state) {
            (AnyModel::Rnn(m), AnyState::Rnn(s)) => AnyState::Rnn(m.select(s, indices)),
            (AnyModel::Transformer(m), AnyState::Transformer(s)) => {
                AnyState::Transformer(m.select(s, indices))
            }
            _ => mismatch(),
        }
    }

    fn reorder(&self, state: Self::State, indices: Tensor<B, 1, Int>) -> Self::State {
        match (self, state) {
            (AnyModel::Rnn(m), AnyState::Rnn(s)) => AnyState::Rnn(m.reorder(s, indices)),
            (AnyModel::Transformer(m), AnyState::Transformer(s)) => {
                AnyState::Transformer(m.reorder(s, indices))
            }
            _ => mismatch(),
        }
    }

    fn max_len(&self) -> usize {
        match self {
            AnyModel::Rnn(m) => m.max_len(),
            AnyModel::Transformer(m) => m.max_len(),
        }
    }

    fn groups_sources(&self) -> bool {
        match self {
            AnyModel::Rnn(m) => m.groups_sources(),
            AnyModel::Transformer(m) => m.groups_sources(),
        }
    }

    fn admits(&self) -> bool {
        match self {
            AnyModel::Rnn(m) => m.admits(),
            AnyModel::Transformer(m) => m.admits(),
        }
    }

    fn admit(&self, state: &mut Self::State, src: &SourceBatch<B>) -> bool {
        match (self, state) {
            (AnyModel::Rnn(m), AnyState::Rnn(s)) => m.admit(s, src),
            (AnyModel::Transformer(m), AnyState::Transformer(s)) => m.admit(s, src),
            _ => mismatch(),
        }
    }
}
