//! The run configuration: one TOML file with `[data]`, `[text]`, `[model]` and `[train]` tables.
//! Every table has defaults and rejects unknown keys; [`Config::validate`] explains problems in plain
//! English. The resolved config is saved as `config.toml` in the model directory.

use crate::error::{Error, Result};
use crate::model::architecture::ModelConfig;
use crate::train::optim::{OptimizerKind, OptimizerSettings};
use crate::train::schedule::{ScheduleKind, ScheduleSettings};
use rosetta_text::corpus::CorpusSource;
use rosetta_text::pipeline::TextConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the training and validation data are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Training source file (plain or gzip).
    pub train_src: Option<PathBuf>,
    /// Training target file.
    pub train_tgt: Option<PathBuf>,
    /// Training data as one `source<TAB>target` file instead.
    pub train_tsv: Option<PathBuf>,
    /// Validation source file.
    pub valid_src: Option<PathBuf>,
    /// Validation target file.
    pub valid_tgt: Option<PathBuf>,
    /// Validation data as one TSV file instead.
    pub valid_tsv: Option<PathBuf>,
    /// A text pipeline saved by `rosetta prepare -o DIR`, used instead of fitting one on the
    /// training data: a subword model learned on more text than this corpus (the languages a model
    /// will later be fine-tuned on), or shared by several models (as fairseq's `--srcdict` and
    /// Marian's `--vocabs`). Its `[text]` settings are the run's; only `text.max_len` may differ.
    pub pipeline: Option<PathBuf>,
}

fn source(
    what: &str,
    src: &Option<PathBuf>,
    tgt: &Option<PathBuf>,
    tsv: &Option<PathBuf>,
) -> Result<Option<CorpusSource>> {
    match (src, tgt, tsv) {
        (Some(src), Some(tgt), None) => Ok(Some(CorpusSource::Parallel {
            src: src.clone(),
            tgt: tgt.clone(),
        })),
        (None, None, Some(tsv)) => Ok(Some(CorpusSource::Tsv(tsv.clone()))),
        (None, None, None) => Ok(None),
        _ => Err(Error::Config(format!(
            "give the {what} data either as {what}_src and {what}_tgt, or as {what}_tsv"
        ))),
    }
}

impl DataConfig {
    /// The training corpus.
    pub fn train(&self) -> Result<CorpusSource> {
        source("train", &self.train_src, &self.train_tgt, &self.train_tsv)?.ok_or_else(|| {
            Error::Config("[data] needs train_src and train_tgt (or train_tsv)".into())
        })
    }

    /// The validation corpus, if any.
    pub fn valid(&self) -> Result<Option<CorpusSource>> {
        source("valid", &self.valid_src, &self.valid_tgt, &self.valid_tsv)
    }
}

/// The metric early stopping and the plateau schedule watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StopMetric {
    /// Validation BLEU of greedy decodes (higher is better).
    #[default]
    Bleu,
    /// Validation perplexity (lower is better).
    Ppl,
    /// Validation chrF of greedy decodes (higher is better).
    Chrf,
}

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed for initialization, batch order and dropout; the same seed gives the same run.
    pub seed: u64,
    /// Maximum tokens per batch, padding included.
    pub batch_tokens: usize,
    /// Batches whose gradients are summed before each update.
    pub accumulate: usize,
    /// Stop after this many updates (0 = no limit).
    pub max_steps: u64,
    /// Stop after this many epochs (0 = no limit).
    pub max_epochs: u64,
    /// Stop after this many minutes of training (0 = no limit); the budget survives `--resume`.
    pub max_minutes: f64,
    /// `adam`, `adamw`, `sgd` or `rmsprop`.
    pub optimizer: OptimizerKind,
    /// Base learning rate (the peak for `noam`).
    pub learning_rate: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Momentum (SGD, RMSprop).
    pub momentum: f64,
    /// Adam β₁.
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
    /// Adam/RMSprop ε.
    pub epsilon: f64,
    /// Clip gradients to this global L2 norm (0 = off).
    pub clip_norm: f64,
    /// Label smoothing ε.
    pub label_smoothing: f64,
    /// `constant`, `plateau` or `noam`.
    pub schedule: ScheduleKind,
    /// Plateau: factor applied to the rate.
    pub plateau_factor: f64,
    /// Plateau: validations without improvement before reducing.
    pub plateau_patience: usize,
    /// Plateau: lowest rate.
    pub min_learning_rate: f64,
    /// Noam: warmup updates.
    pub warmup_steps: u64,
    /// Validate (and checkpoint) every this many updates.
    pub valid_every: u64,
    /// Metric for early stopping, best-model selection and the plateau schedule.
    pub stop_metric: StopMetric,
    /// Stop after this many validations without improvement (0 = never stop early).
    pub patience: usize,
    /// Resumable checkpoints to keep (the best weights are kept separately).
    pub keep_checkpoints: usize,
    /// Stop with an error after this many consecutive non-finite batches.
    pub max_bad_batches: usize,
    /// Log training loss every this many updates.
    pub log_every: u64,
    /// Maximum decoded length during validation: `a · source length + b`; unset, the model's
    /// `[decode]` lengths (derived from the training data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_max_len_a: Option<f64>,
    /// See `valid_max_len_a`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_max_len_b: Option<usize>,
    /// Start from this model directory (Rosetta's, or imported with `rosetta import marian`):
    /// its weights, text pipeline, `[model]` and `[decode]` settings (full fine-tuning). Only
    /// dropout rates and `text.max_len` may be changed here; other `[model]` or `[text]` changes
    /// are refused.
    pub init_from: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 42,
            batch_tokens: 3000,
            accumulate: 1,
            max_steps: 0,
            max_epochs: 30,
            max_minutes: 0.0,
            optimizer: OptimizerKind::Adam,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            momentum: 0.9,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            clip_norm: 1.0,
            label_smoothing: 0.1,
            schedule: ScheduleKind::Plateau,
            plateau_factor: 0.5,
            plateau_patience: 2,
            min_learning_rate: 1e-6,
            warmup_steps: 4000,
            valid_every: 1000,
            stop_metric: StopMetric::Bleu,
            patience: 5,
            keep_checkpoints: 3,
            max_bad_batches: 10,
            log_every: 50,
            valid_max_len_a: None,
            valid_max_len_b: None,
            init_from: None,
        }
    }
}

impl TrainConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.batch_tokens == 0 {
            return fail("train.batch_tokens must be at least 1".into());
        }
        if self.accumulate == 0 {
            return fail("train.accumulate must be at least 1 (1 = no accumulation)".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return fail(format!(
                "train.learning_rate = {} must be positive",
                self.learning_rate
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return fail(format!(
                "train.label_smoothing = {} must be in [0, 1)",
                self.label_smoothing
            ));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return fail("train.beta1 and train.beta2 must be in [0, 1)".into());
        }
        if self.weight_decay < 0.0 || self.clip_norm < 0.0 || self.momentum < 0.0 {
            return fail(
                "train.weight_decay, train.clip_norm and train.momentum cannot be negative".into(),
            );
        }
        if !(self.plateau_factor > 0.0 && self.plateau_factor < 1.0) {
            return fail(format!(
                "train.plateau_factor = {} must be between 0 and 1 (exclusive)",
                self.plateau_factor
            ));
        }
        if self.valid_every == 0 || self.log_every == 0 {
            return fail("train.valid_every and train.log_every must be at least 1".into());
        }
        if self.max_bad_batches == 0 {
            return fail("train.max_bad_batches must be at least 1".into());
        }
        if let Some(a) = self
            .valid_max_len_a
            .filter(|a| !(a.is_finite() && *a >= 0.0))
        {
            return fail(format!("train.valid_max_len_a = {a} must be a number ≥ 0"));
        }
        if self.max_steps == 0
            && self.max_epochs == 0
            && self.max_minutes <= 0.0
            && self.patience == 0
        {
            return fail(
                "training would never stop: set train.max_steps, train.max_epochs, train.max_minutes or train.patience"
                    .into(),
            );
        }
        Ok(())
    }

    /// Optimizer settings.
    pub fn optimizer_settings(&self) -> OptimizerSettings {
        OptimizerSettings {
            kind: self.optimizer,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            beta1: self.beta1,
            beta2: self.beta2,
            epsilon: self.epsilon,
        }
    }

    /// Schedule settings.
    pub fn schedule_settings(&self) -> ScheduleSettings {
        ScheduleSettings {
            kind: self.schedule,
            learning_rate: self.learning_rate,
            factor: self.plateau_factor,
            patience: self.plateau_patience,
            min_lr: self.min_learning_rate,
            warmup_steps: self.warmup_steps,
        }
    }
}

/// Decoding defaults that belong to the model (the command line and API override them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeConfig {
    /// Beam scoring and stopping: `gnmt` (Rosetta's models), `hugging-face` (imported OPUS-MT
    /// models, so that they translate as `transformers` does) or `ctranslate2`.
    pub beam_rule: crate::search::BeamRule,
    /// Default maximum output length `max_len_a · source length + max_len_b`. Training sets it
    /// from the training data (see [`derive_max_len`]) unless given; models without it use
    /// `1.5 · source length + 10`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_len_a: Option<f64>,
    /// See `max_len_a`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_len_b: Option<usize>,
    /// Default beam size (`--beam` and requests override it): an imported model's `num_beams`,
    /// so that it translates as `transformers`' `generate()` does with no arguments; else 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beam: Option<usize>,
    /// Default length penalty α: an imported model's `length_penalty` (1.0 when its generation
    /// config has none, as in `transformers`); else the GNMT α of [`crate::search::BeamConfig`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length_penalty: Option<f64>,
}

impl DecodeConfig {
    /// The output-length slope and offset: these settings, else the defaults.
    pub fn max_len(&self) -> (f64, usize) {
        (
            self.max_len_a.unwrap_or(crate::search::DEFAULT_MAX_LEN_A),
            self.max_len_b.unwrap_or(crate::search::DEFAULT_MAX_LEN_B),
        )
    }

    /// The search settings a request that names none gets from this model: its beam size,
    /// length penalty and output lengths where it has them, the library's defaults elsewhere.
    pub fn search_defaults(&self) -> crate::search::BeamConfig {
        let d = crate::search::BeamConfig::default();
        crate::search::BeamConfig {
            beam: self.beam.unwrap_or(d.beam),
            length_penalty: self.length_penalty.unwrap_or(d.length_penalty),
            max_len_a: self.max_len_a,
            max_len_b: self.max_len_b,
            ..d
        }
    }

    fn validate(&self) -> Result<()> {
        if let Some(a) = self.max_len_a.filter(|a| !(a.is_finite() && *a >= 0.0)) {
            return Err(Error::Config(format!(
                "decode.max_len_a = {a} must be a number ≥ 0"
            )));
        }
        if self.beam == Some(0) {
            return Err(Error::Config("decode.beam must be at least 1".into()));
        }
        if let Some(a) = self.length_penalty.filter(|a| !a.is_finite()) {
            return Err(Error::Config(format!(
                "decode.length_penalty = {a} must be a finite number"
            )));
        }
        Ok(())
    }
}

/// The default output-length cap of a model trained on data with these statistics: a slope that
/// covers the 99.9th percentile of the target/source length ratio (at least 1.5, the old constant,
/// rounded up to a tenth) and an offset of 10 tokens for short sources. A constant 1.5 cut SCAN's
/// outputs (up to 48 actions for 9 words) and looked like a weak model instead of a wrong limit.
pub fn derive_max_len(stats: &rosetta_text::stats::CorpusStats) -> (f64, usize) {
    let slope = (stats.length_ratio.p999 * 10.0).ceil() / 10.0;
    (
        slope.max(crate::search::DEFAULT_MAX_LEN_A),
        crate::search::DEFAULT_MAX_LEN_B,
    )
}

/// The first key (dotted) of `full` that `read` lacks, tables searched depth first.
fn first_missing_key(full: &toml::Table, read: &toml::Table, prefix: &str) -> Option<String> {
    full.iter().find_map(|(key, value)| {
        let dotted = format!("{prefix}{key}");
        match (value, read.get(key)) {
            (_, None) => Some(dotted),
            (toml::Value::Table(f), Some(toml::Value::Table(r))) => {
                first_missing_key(f, r, &format!("{dotted}."))
            }
            _ => None,
        }
    })
}

/// The model-directory format this build writes (`format` in a saved config.toml). 1: written
/// before the key existed (no word joiners, no derived output lengths); 2: both; 3: a model's own
/// search defaults (`[decode] beam`, `length_penalty`), `data.pipeline`, `finetune.train_embeddings`,
/// and fine-tuning checkpoints that hold the adapter alone. A directory of a newer format is refused
/// with a message saying so, before any of its unknown keys are.
pub const FORMAT: u32 = 3;

/// A whole run: data, text pipeline, model and training.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model-directory format: checked when a config is read and stamped ([`FORMAT`]) when one
    /// is written; `None` in memory, so that configs compare by their settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<u32>,
    /// Data locations.
    pub data: DataConfig,
    /// Normalization, tokenization and vocabulary.
    pub text: TextConfig,
    /// Architecture (`arch = "rnn"` by default, or `"transformer"`).
    pub model: ModelConfig,
    /// Training.
    pub train: TrainConfig,
    /// Decoding defaults.
    pub decode: DecodeConfig,
    /// Parameter-efficient fine-tuning (with `train.init_from`).
    pub finetune: crate::model::lora::FinetuneConfig,
}

impl Config {
    /// Reads and validates a TOML config. Unknown keys are errors naming the file and the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config = Self::from_toml(&text).map_err(|e| match e {
            Error::ConfigFile { message, .. } => Error::ConfigFile {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let file_error = |message: String| Error::ConfigFile {
            path: PathBuf::from("<config>"),
            message,
        };
        // The format first: a newer directory's other keys would only be "unknown".
        if let Some(format) = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("format").cloned())
        {
            match format.as_integer() {
                Some(n) if (1..=i64::from(FORMAT)).contains(&n) => {}
                Some(n) if n > i64::from(FORMAT) => {
                    return Err(file_error(format!(
                        "written by a newer Rosetta (model-directory format {n}; this build reads \
                         formats 1 to {FORMAT}): upgrade rosetta to use it"
                    )));
                }
                _ => {
                    return Err(file_error(format!(
                        "format = {format} is not a model-directory format (1 to {FORMAT})"
                    )));
                }
            }
        }
        let mut config: Config = toml::from_str(text).map_err(|e| file_error(e.to_string()))?;
        if config.format.take().is_some() {
            // Written by `to_toml`, which writes every setting: a missing one means the file was
            // cut short, and its default would silently stand in for the saved value.
            let written: toml::Table = toml::from_str(&config.to_toml()?)
                .map_err(|e| file_error(format!("cannot re-read the config: {e}")))?;
            let read: toml::Table = toml::from_str(text).map_err(|e| file_error(e.to_string()))?;
            if let Some(key) = first_missing_key(&written, &read, "") {
                return Err(file_error(format!(
                    "{key} is missing: the file is truncated (a saved config lists every \
                     setting); to use an edited copy as a hand-written config, delete its \
                     `format` line"
                )));
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The resolved config as TOML (every default written out), stamped with this build's
    /// [`FORMAT`].
    pub fn to_toml(&self) -> Result<String> {
        let stamped = Config {
            format: Some(FORMAT),
            ..self.clone()
        };
        toml::to_string_pretty(&stamped)
            .map_err(|e| Error::Config(format!("cannot write the config: {e}")))
    }

    /// The config a run actually uses: with `train.init_from`, the `[model]`, `[text]` and
    /// `[decode]` tables of the starting model, keeping this config's dropout rates and
    /// `text.max_len` where it sets them. Any other difference is an error naming the table.
    pub fn resolve_init_from(&self) -> Result<Config> {
        if let Some(dir) = &self.data.pipeline {
            return self.resolve_pipeline(dir);
        }
        let Some(dir) = &self.train.init_from else {
            return Ok(self.clone());
        };
        let init_path = dir.join(crate::train::trainer::CONFIG_FILE);
        if !init_path.exists() {
            return Err(Error::io(
                &init_path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "train.init_from names no model directory (no config.toml)",
                ),
            ));
        }
        let init = Config::load(&init_path)?;
        let mut out = self.clone();
        // Recorded absolute: an adapter directory finds its base from any working directory.
        out.train.init_from = Some(std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?);
        if self.model == ModelConfig::default() {
            out.model = init.model.clone();
        } else if !same_up_to_dropout(&self.model, &init.model) {
            return Err(Error::Config(format!(
                "train.init_from = {}: [model] differs from the starting model's beyond dropout \
                 rates; fine-tuning keeps the architecture (remove [model] to take it from {})",
                dir.display(),
                init_path.display()
            )));
        }
        out.text = adopt_text(&self.text, &init.text).map_err(|()| {
            Error::Config(format!(
                "train.init_from = {}: [text] differs from the starting model's; fine-tuning keeps \
                 its tokenizers and vocabularies (remove [text], or change only text.max_len)",
                dir.display()
            ))
        })?;
        if self.decode == DecodeConfig::default() {
            out.decode = init.decode.clone();
        }
        out.validate()?;
        // The architecture is known now: a LoRA target it lacks is named before anything is
        // fitted, encoded or written.
        let (arch, targets): (&str, &[&str]) = match &out.model {
            ModelConfig::Rnn(_) => ("rnn", &crate::model::lora::RNN_LORA_TARGETS),
            ModelConfig::Transformer(_) => ("transformer", &crate::model::lora::LORA_TARGETS),
        };
        out.finetune.check_targets(arch, targets)?;
        Ok(out)
    }

    /// The config of a run with `data.pipeline`: that pipeline's `[text]` settings, this config's
    /// `text.max_len` where it sets one.
    fn resolve_pipeline(&self, dir: &Path) -> Result<Config> {
        if self.train.init_from.is_some() {
            return Err(Error::Config(
                "data.pipeline and train.init_from both give the text pipeline: fine-tuning keeps \
                 the starting model's, so remove data.pipeline"
                    .into(),
            ));
        }
        let path = dir.join(rosetta_text::pipeline::CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::io(
                &path,
                std::io::Error::new(
                    e.kind(),
                    format!("data.pipeline names no saved text pipeline ({e})"),
                ),
            )
        })?;
        let theirs = TextConfig::from_toml(&text, &path)?;
        let mut out = self.clone();
        out.data.pipeline = Some(std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?);
        out.text = adopt_text(&self.text, &theirs).map_err(|()| {
            Error::Config(format!(
                "data.pipeline = {}: [text] differs from that pipeline's settings ({}); remove \
                 [text], or set only text.max_len",
                dir.display(),
                path.display()
            ))
        })?;
        out.validate()?;
        Ok(out)
    }

    /// Checks every table.
    pub fn validate(&self) -> Result<()> {
        self.text.validate()?;
        self.model.validate()?;
        self.train.validate()?;
        self.finetune.validate()?;
        self.decode.validate()?;
        if self.finetune.method != crate::model::lora::FinetuneMethod::None
            && self.train.init_from.is_none()
        {
            return Err(Error::Config(
                "finetune.method = \"lora\" or \"adapter\" adapts a trained model: set \
                 train.init_from to its directory"
                    .into(),
            ));
        }
        if let ModelConfig::Transformer(t) = &self.model {
            // Imported Marian models tokenize each side with its own SentencePiece model into one
            // shared vocabulary; the sizes are checked when the model is built.
            let separate_spm =
                self.text.tokenizer == rosetta_text::tokenize::TokenizerKind::SentencePiece;
            if t.share_embeddings && !self.text.joint && !separate_spm {
                return Err(Error::Config(
                    "model.share_embeddings needs one vocabulary for both sides: set text.joint = true"
                        .into(),
                ));
            }
            if self.text.max_len + 1 > t.max_positions {
                return Err(Error::Config(format!(
                    "model.max_positions ({}) must be at least text.max_len + 1 ({}): every source \
                     and target position (plus </s>) needs a position",
                    t.max_positions,
                    self.text.max_len + 1
                )));
            }
        }
        if self.train.batch_tokens < self.text.max_len + 1 {
            return Err(Error::Config(format!(
                "train.batch_tokens ({}) must be at least text.max_len + 1 ({}) so that the longest \
                 allowed pair (plus </s>) fits in a batch",
                self.train.batch_tokens,
                self.text.max_len + 1
            )));
        }
        Ok(())
    }
}

/// The text settings of a run that takes its pipeline from elsewhere (`theirs`): those settings,
/// with `own.max_len` when `own` sets only that. `Err` when `own` sets anything else differently.
fn adopt_text(own: &TextConfig, theirs: &TextConfig) -> std::result::Result<TextConfig, ()> {
    let without_max_len = |t: &TextConfig| TextConfig {
        max_len: 0,
        ..t.clone()
    };
    let default = TextConfig::default();
    if *own == default {
        Ok(theirs.clone())
    } else if without_max_len(own) == without_max_len(&default)
        || without_max_len(own) == without_max_len(theirs)
    {
        Ok(TextConfig {
            max_len: own.max_len,
            ..theirs.clone()
        })
    } else {
        Err(())
    }
}

/// Whether two architectures are the same once their dropout rates are ignored.
fn same_up_to_dropout(a: &ModelConfig, b: &ModelConfig) -> bool {
    match (a, b) {
        (ModelConfig::Rnn(a), ModelConfig::Rnn(b)) => {
            let mut a = a.clone();
            a.dropout = b.dropout;
            a == *b
        }
        (ModelConfig::Transformer(a), ModelConfig::Transformer(b)) => {
            let mut a = a.clone();
            a.dropout = b.dropout;
            a.attention_dropout = b.attention_dropout;
            a.activation_dropout = b.activation_dropout;
            a == *b
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::from_toml("[model]\nhiden_size = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hiden_size"), "{err}");
    }

    #[test]
    fn plain_english_validation() {
        let err = Config::from_toml(
            "[model]\nattention = \"luong-dot\"\nencoder_hidden = 100\ndecoder_hidden = 150\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("decoder_hidden (150) must equal the encoder output size (200"),
            "{err}"
        );
        let err = Config::from_toml("[train]\nlabel_smoothing = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("label_smoothing = 1.5"), "{err}");
        let err = Config::from_toml("[train]\nmax_steps = 0\nmax_epochs = 0\npatience = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("never stop"), "{err}");
        let err = Config::from_toml("[model]\nattentional_layer = false\ntie_embeddings = true\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs model.attentional_layer = true"),
            "{err}"
        );
    }

    #[test]
    fn transformer_configs_round_trip_and_name_unknown_keys() {
        let config = Config::from_toml(
            "[model]\narch = \"transformer\"\nd_model = 64\nheads = 4\nnorm = \"post\"\n",
        )
        .unwrap();
        assert_eq!(config.model.arch(), "transformer");
        let text = config.to_toml().unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), config);
        let err = Config::from_toml("[model]\narch = \"transformer\"\ncell = \"gru\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cell") && err.contains("transformer"), "{err}");
        let err = Config::from_toml("[model]\narch = \"lstm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown model.arch = \"lstm\""), "{err}");
        let err = Config::from_toml("[model]\narch = \"transformer\"\nd_model = 30\nheads = 4\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("multiple of model.heads"), "{err}");
    }

    #[test]
    fn resolved_config_round_trips() {
        let config = Config::default();
        let text = config.to_toml().unwrap();
        assert!(text.starts_with(&format!("format = {FORMAT}\n")), "{text}");
        assert_eq!(Config::from_toml(&text).unwrap(), config);
        // Cut after any line: refused (every setting is written), never read with defaults.
        let lines: Vec<&str> = text.lines().collect();
        for cut in 1..lines.len() - 1 {
            let head = lines[..cut].join("\n") + "\n";
            if let Ok(c) = Config::from_toml(&head) {
                panic!("cut after line {cut} accepted: {c:?}");
            }
        }
    }
}
