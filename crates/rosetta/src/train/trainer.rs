//! The training loop: batches → loss → update, with validation, early stopping, checkpoints and
//! exact resume.
//!
//! [`train`] reads the config's `arch` once and runs a [`Trainer`] for that model type; everything
//! below is generic over [`Seq2Seq`].
//!
//! Exact resume rests on three facts: the batch plan of an epoch is a pure function of
//! `(seed, epoch)`; dropout is re-seeded from `(seed, step)` before every batch; and the weights,
//! optimizer moments and schedule state are restored bit for bit from the checkpoint.

use super::checkpoint::{self, WEIGHTS};
use super::gradients::{self, TeacherForced, batch_gradients};
use super::loss::teacher_forced_nll;
use super::optim::{AnyOptimizer, grad_norm, params_finite, scale_grads};
use super::schedule::{Schedule, ScheduleState};
use super::tensorboard::EventWriter;
use crate::config::{Config, StopMetric};
use crate::error::{Error, Result};
use crate::model::architecture::{Seq2Seq, TrainableJob, dispatch_trainable};
use crate::model::input::{ids_tensor, source_batch};
use crate::search::{greedy, max_output_len};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rosetta_text::batch::{Batch, BatchPlanner};
use rosetta_text::corpus::CorpusSource;
use rosetta_text::encoded::ParallelIds;
use rosetta_text::metrics::bleu::Bleu;
use rosetta_text::metrics::chrf::Chrf;
use rosetta_text::pipeline::TextPipeline;
use rosetta_text::stats::CorpusStats;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Name of the resolved config in a model directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Metrics log (JSON lines) in a model directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Training-data statistics (pairs read, kept, dropped by each filter; lengths) in a model directory.
pub const STATS_FILE: &str = "stats.json";

/// The data of a run.
#[derive(Debug, Clone)]
pub struct TrainData {
    /// Training corpus.
    pub train: CorpusSource,
    /// Validation corpus (validation is skipped without one).
    pub valid: Option<CorpusSource>,
}

/// Told about progress; every method has an empty default.
pub trait Observer {
    /// Training is about to start.
    fn started(&mut self, _info: &RunInfo) {}
    /// An update was made (called every `log_every` updates).
    fn step(&mut self, _report: &StepReport) {}
    /// A validation finished.
    fn validated(&mut self, _report: &ValidReport) {}
    /// Asked after every validation (once its checkpoint is written): `Some(reason)` ends the run
    /// there, as early stopping does (a sweep's pruner stopping an unpromising trial).
    fn stop_requested(&mut self, _report: &ValidReport) -> Option<String> {
        None
    }
    /// Something worth a warning happened (e.g. a skipped batch).
    fn warn(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Silent;
impl Observer for Silent {}

/// Facts about the run, reported once at the start.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Parameters of the model.
    pub parameters: usize,
    /// Parameters the optimizer updates: all of them, or with `[finetune]` only the new ones.
    pub trainable: usize,
    /// Training corpus statistics.
    pub train_stats: CorpusStats,
    /// Validation pairs.
    pub valid_pairs: usize,
    /// Batches per epoch.
    pub batches_per_epoch: usize,
    /// First update number of this process (0 on a fresh run).
    pub start_step: u64,
    /// Whether the run continues from a checkpoint.
    pub resumed: bool,
}

/// A training progress report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Updates made.
    pub step: u64,
    /// 0-based epoch.
    pub epoch: u64,
    /// Batches done in this epoch and batches per epoch.
    pub epoch_progress: (usize, usize),
    /// Label-smoothed loss per target token of the last update.
    pub loss: f64,
    /// Learning rate used for the last update.
    pub lr: f64,
    /// Target tokens per second since the last report.
    pub tokens_per_sec: f64,
    /// Seconds of training so far (across resumes).
    pub elapsed: f64,
}

/// A validation result.
#[derive(Debug, Clone, Serialize)]
pub struct ValidReport {
    /// Updates made.
    pub step: u64,
    /// Perplexity on the validation set.
    pub ppl: f64,
    /// Cross-entropy per token (nats).
    pub loss: f64,
    /// BLEU of greedy decodes.
    pub bleu: f64,
    /// chrF of the same decodes.
    pub chrf: f64,
    /// Whether this is the best validation so far (and was saved as `model.safetensors`).
    pub best: bool,
    /// Whether the plateau schedule just reduced the learning rate.
    pub lr_reduced: bool,
    /// Greedy outputs cut at the maximum output length (`train.valid_max_len_*`) instead of
    /// ending with `</s>`.
    pub hit_max_len: usize,
    /// Seconds the validation took.
    pub seconds: f64,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Updates made in total.
    pub steps: u64,
    /// Update with the best validation (0 without validation).
    pub best_step: u64,
    /// Best validation metric (BLEU, or perplexity).
    pub best_metric: Option<f64>,
    /// Why training stopped.
    pub stopped: String,
    /// Training seconds (across resumes).
    pub elapsed: f64,
}

/// Trainer state saved with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    step: u64,
    epoch: u64,
    batch_in_epoch: usize,
    schedule: ScheduleState,
    best_metric: Option<f64>,
    best_step: u64,
    bad_validations: usize,
    elapsed: f64,
}

/// Options that are not part of the config.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Where the model directory is (created if needed).
    pub model_dir: PathBuf,
    /// Continue from the latest checkpoint in `model_dir`.
    pub resume: bool,
}

/// Validation data, encoded once.
struct Valid {
    ids: ParallelIds,
    planner: BatchPlanner,
    refs: Vec<String>,
}

/// Forces the lazy initialization of every parameter now, so that initialization never consumes
/// random numbers later (which would make a resumed run differ from an uninterrupted one).
struct Materialize;
impl<B: Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Gives every parameter an id from its place in the model (visit order), the same in every
/// process. The optimizer keys its state by parameter id, and ids are drawn at random per process:
/// a full checkpoint (`model.mpk`) restores them, but a fine-tuning checkpoint restores its
/// parameters by name from safetensors into the model's own ids, so without this a resumed LoRA or
/// adapter run would start Adam's moments again.
struct StableIds(u64);
impl<B: Backend> ModuleMapper<B> for StableIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        self.0 += 1;
        Param::from_mapped_value(
            ParamId::from(0x726f_7365_7474_6100 + self.0),
            tensor,
            mapper,
        )
    }
}

/// Counts the parameters that take gradients (the rest are frozen).
struct CountTrainable(usize);
impl<B: Backend> ModuleVisitor<B> for CountTrainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if value.is_require_grad() {
            self.0 += value.shape().num_elements();
        }
    }
}

/// Mixes the seed and the update number into the seed of that update's dropout masks.
fn step_seed(seed: u64, step: u64, micro: usize) -> u64 {
    let mut x = seed
        ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (micro as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 29)
}

fn write_json_line(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(file, "{value}").map_err(|e| Error::io(path, e))
}

/// Drops metric rows logged after `step` (written after the checkpoint a run resumes from), so the
/// log of a resumed run reads like the log of an uninterrupted one.
fn trim_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_none_or(|s| s <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    checkpoint::write_atomic(path, kept.as_bytes())
}

/// Number of trainable parameters.
pub fn count_parameters<B: Backend, M: Module<B>>(model: &M) -> usize {
    model.num_params()
}

/// Validation scores of a model.
struct Scores {
    /// Cross-entropy per target token (nats).
    loss: f64,
    bleu: f64,
    chrf: f64,
    /// Greedy outputs cut at the maximum output length.
    hit_max_len: usize,
}

/// Cross-entropy, BLEU and chrF of a model on validation data, decoding at most `a · source
/// length + b` tokens.
fn validate<B: Backend, M: Seq2Seq<B>>(
    model: &M,
    valid: &Valid,
    pipeline: &TextPipeline,
    (a, b): (f64, usize),
    device: &B::Device,
) -> Result<Scores> {
    let (mut nll, mut tokens) = (0.0f64, 0usize);
    let mut hyps = vec![String::new(); valid.ids.len()];
    let mut hit_max_len = 0;
    let specials = pipeline.tgt_vocab().specials();
    let src_specials = pipeline.src_vocab().specials();
    for indices in valid.planner.epoch(0, 0) {
        let batch = Batch::new(&valid.ids, &indices, (&src_specials, &specials));
        let src = source_batch::<B>(&batch.src, specials, device);
        let (logits, _) = model.forward(&src, ids_tensor(&batch.tgt_in, device));
        let (batch_nll, batch_tokens) =
            teacher_forced_nll(logits, &batch.tgt_out, specials.pad, device);
        nll += batch_nll;
        tokens += batch_tokens;
        let decoded = greedy(model, &src, |n| max_output_len(a, b, n, usize::MAX));
        for (hyp, &i) in decoded.iter().zip(&indices) {
            hyps[i as usize] = pipeline.decode_tgt(&hyp.tokens)?;
            hit_max_len += usize::from(hyp.hit_max_len);
        }
    }
    let loss = nll / tokens.max(1) as f64;
    let refs = std::slice::from_ref(&valid.refs);
    let bleu = Bleu::default()
        .corpus_score(&hyps, refs)
        .map(|s| s.score)
        .unwrap_or(0.0);
    let chrf = Chrf::default()
        .corpus_score(&hyps, refs)
        .map(|s| s.to_score().score)
        .unwrap_or(0.0);
    Ok(Scores {
        loss,
        bleu,
        chrf,
        hit_max_len,
    })
}

fn encode_valid(
    pipeline: &TextPipeline,
    source: &CorpusSource,
    batch_tokens: usize,
    max_len: usize,
) -> Result<Valid> {
    // Keep every validation pair (no length filter, no empty-pair drop) so BLEU covers the whole set.
    let mut ids = ParallelIds::new();
    let mut refs = Vec::new();
    for pair in source.open()? {
        let pair = pair?;
        // Sources are truncated to the longest the model reads, as `translate` does.
        let mut src = pipeline.encode_src(&pair.src)?;
        src.truncate(max_len);
        ids.push(&src, &pipeline.encode_tgt(&pair.tgt)?);
        refs.push(pair.tgt.trim().to_owned());
    }
    let (src_lens, tgt_lens) = ids.batch_lengths();
    let longest = src_lens.iter().chain(&tgt_lens).copied().max().unwrap_or(1) as usize;
    let planner = BatchPlanner::new(src_lens, tgt_lens, batch_tokens.max(longest))?;
    Ok(Valid { ids, planner, refs })
}

/// Trains a model as configured, writing a self-contained model directory. The config's `arch`
/// picks the model type; the run is a [`Trainer`] of that type.
pub fn train<B: AutodiffBackend>(
    config: &Config,
    data: &TrainData,
    options: &TrainOptions,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<TrainSummary> {
    let resolved = config.resolve_init_from()?;
    let config = &resolved;
    dispatch_trainable::<B, _>(
        &config.model,
        TrainJob {
            config,
            data,
            options,
            device,
            observer,
        },
    )
}

struct TrainJob<'a, B: AutodiffBackend> {
    config: &'a Config,
    data: &'a TrainData,
    options: &'a TrainOptions,
    device: &'a B::Device,
    observer: &'a mut dyn Observer,
}

impl<B: AutodiffBackend> TrainableJob<B> for TrainJob<'_, B> {
    type Output = Result<TrainSummary>;

    fn run<M>(self) -> Self::Output
    where
        M: Seq2Seq<B> + AutodiffModule<B>,
        M::InnerModule: Seq2Seq<B::InnerBackend>,
    {
        Trainer::<B, M>::open(self.config, self.data, self.options, self.device)?.run(self.observer)
    }
}

/// What one update did.
#[derive(Debug, Clone, Copy)]
struct Update {
    loss: f64,
    lr: f64,
    grad_norm: f64,
    tokens: usize,
}

/// One training run of a model type `M`: opened fresh or from the latest checkpoint, then driven
/// update by update, validating and checkpointing every `valid_every` updates.
pub struct Trainer<'a, B: AutodiffBackend, M: AutodiffModule<B>> {
    config: &'a Config,
    dir: PathBuf,
    device: B::Device,
    pipeline: TextPipeline,
    train_ids: ParallelIds,
    planner: BatchPlanner,
    valid: Option<Valid>,
    /// Always `Some` between calls: [`Self::update`] moves it through the optimizer, which updates
    /// the weights in place only when nothing else holds them.
    model: Option<M>,
    optimizer: AnyOptimizer<B, M>,
    schedule: Schedule,
    state: TrainState,
    events: EventWriter,
    info: RunInfo,
    /// The batch plan of `plan_epoch`.
    plan: Vec<Vec<u32>>,
    plan_epoch: u64,
    consecutive_bad: usize,
    /// Told to the observer when the run starts (a `--resume` that had nothing to resume).
    notice: Option<String>,
    /// Most greedy output tokens in validation: `(a, b)` of `a · source length + b`.
    valid_max_len: (f64, usize),
    /// With `[finetune]`: the SHA-256 of the base weights, recorded in the adapter file.
    base_sha256: Option<String>,
}

impl<'a, B, M> Trainer<'a, B, M>
where
    B: AutodiffBackend,
    M: Seq2Seq<B> + AutodiffModule<B>,
    M::InnerModule: Seq2Seq<B::InnerBackend>,
{
    /// Prepares a run in `options.model_dir`: fits (or, resuming, loads) the text pipeline, encodes
    /// the data, and builds the model, optimizer and schedule, restored from the latest checkpoint
    /// when resuming.
    pub fn open(
        config: &'a Config,
        data: &TrainData,
        options: &TrainOptions,
        device: &B::Device,
    ) -> Result<Self> {
        config.validate()?;
        let dir = options.model_dir.clone();
        let existing = checkpoint::list(&dir)?;
        // Job schedulers and sweeps always pass --resume: a run killed before its first checkpoint
        // (or never started) starts from scratch, with a notice, instead of failing.
        let finished = dir.join(WEIGHTS).exists() || dir.join(checkpoint::ADAPTER).exists();
        if options.resume && existing.is_empty() && finished {
            return Err(Error::Config(format!(
                "--resume: {} holds a model but no checkpoint to continue from (imported, averaged \
                 or merged?); fine-tune it with train.init_from in a new directory instead",
                dir.display()
            )));
        }
        let notice = (options.resume && existing.is_empty()).then(|| {
            format!(
                "--resume: {} holds no checkpoint yet; starting from scratch",
                dir.display()
            )
        });
        let options = &TrainOptions {
            model_dir: options.model_dir.clone(),
            resume: options.resume && !existing.is_empty(),
        };
        if notice.is_some() {
            // Rows of the interrupted attempt would otherwise precede the new run's.
            let metrics = dir.join(METRICS_FILE);
            if metrics.exists() {
                std::fs::remove_file(&metrics).map_err(|e| Error::io(&metrics, e))?;
            }
        }
        if !options.resume
            && notice.is_none()
            && (!existing.is_empty()
                || dir.join(WEIGHTS).exists()
                || dir.join(checkpoint::ADAPTER).exists())
        {
            return Err(Error::Config(format!(
                "{} already holds a trained model; pass --resume to continue it, or choose another model directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let train_cfg = &config.train;

        // Text pipeline: trained on the corpus on a fresh run, loaded on resume (it must not change).
        let pipeline = if options.resume {
            TextPipeline::load(&dir)?
        } else if let Some(init) = &train_cfg.init_from {
            // Fine-tuning keeps the starting model's tokenizers and vocabularies (only the length
            // limit may change).
            let p = TextPipeline::load(init)?.with_max_len(config.text.max_len)?;
            p.save(&dir)?;
            p
        } else if let Some(prepared) = &config.data.pipeline {
            // Prepared elsewhere (`rosetta prepare`), perhaps on more text than this corpus.
            let p = TextPipeline::load(prepared)?.with_max_len(config.text.max_len)?;
            p.save(&dir)?;
            p
        } else {
            let p = TextPipeline::fit(&data.train, &config.text, &|_| {})?;
            p.save(&dir)?;
            p
        };
        if options.resume {
            // Weights and vocabularies on disk were made with the saved settings: only [train] may change.
            let saved_path = dir.join(CONFIG_FILE);
            let saved = Config::load(&saved_path)?;
            if saved.model != config.model || saved.text != config.text {
                return Err(Error::Config(format!(
                    "--resume: the [model] or [text] settings differ from those saved in {}; only [train] \
                     settings may change when resuming",
                    saved_path.display()
                )));
            }
        }

        let (train_ids, train_stats) = pipeline.encode_corpus(&data.train, &|_| {})?;
        if train_ids.is_empty() {
            return Err(Error::Config(format!(
                "no training pairs left after filtering {}: {train_stats}",
                data.train.describe()
            )));
        }
        // The model's default output-length cap, from its training data unless the config set it:
        // saved in config.toml for `translate`, `evaluate` and `serve`.
        let mut resolved = config.clone();
        let (a, b) = crate::config::derive_max_len(&train_stats);
        resolved.decode.max_len_a.get_or_insert(a);
        resolved.decode.max_len_b.get_or_insert(b);
        let (decode_a, decode_b) = resolved.decode.max_len();
        let valid_max_len = (
            train_cfg.valid_max_len_a.unwrap_or(decode_a),
            train_cfg.valid_max_len_b.unwrap_or(decode_b),
        );
        if !options.resume {
            checkpoint::write_atomic(&dir.join(CONFIG_FILE), resolved.to_toml()?.as_bytes())?;
            write_json_line(
                &dir.join(METRICS_FILE),
                &serde_json::json!({"type": "data", "step": 0, "pairs_read": train_stats.pairs_read,
                    "pairs_kept": train_stats.pairs_kept, "dropped_empty": train_stats.dropped_empty,
                    "dropped_too_long": train_stats.dropped_too_long, "max_len": train_stats.max_len}),
            )?;
        }
        let stats_json = serde_json::json!({"train": &train_stats,
            "decode_max_len_a": decode_a, "decode_max_len_b": decode_b});
        checkpoint::write_atomic(
            &dir.join(STATS_FILE),
            format!("{stats_json:#}\n").as_bytes(),
        )?;
        let (src_lens, tgt_lens) = train_ids.batch_lengths();
        let planner = BatchPlanner::new(src_lens, tgt_lens, train_cfg.batch_tokens)?;
        let valid = match &data.valid {
            Some(source) => {
                let valid = encode_valid(
                    &pipeline,
                    source,
                    train_cfg.batch_tokens,
                    config.text.max_len,
                )?;
                if valid.ids.is_empty() {
                    return Err(Error::Config(format!(
                        "the validation data {} is empty",
                        source.describe()
                    )));
                }
                Some(valid)
            }
            None => {
                if train_cfg.max_steps == 0
                    && train_cfg.max_epochs == 0
                    && train_cfg.max_minutes <= 0.0
                {
                    return Err(Error::Config(
                        "without validation data, early stopping cannot end training: set train.max_steps, \
                         train.max_epochs or train.max_minutes"
                            .into(),
                    ));
                }
                None
            }
        };

        B::seed(device, train_cfg.seed);
        let mut model = M::init(
            &config.model,
            pipeline.src_vocab().len(),
            pipeline.tgt_vocab().len(),
            device,
        )?;
        if let Some(init) = train_cfg.init_from.as_ref().filter(|_| !options.resume) {
            model = checkpoint::load_base_weights(model, init)?;
        }
        // LoRA: the base frozen, the updates added (before a checkpoint restores them).
        model = model.with_finetune(&config.finetune, device)?;
        model.visit(&mut Materialize);
        if config.finetune.method != crate::model::lora::FinetuneMethod::None {
            model = model.map(&mut StableIds(0));
        }
        let mut optimizer = AnyOptimizer::<B, M>::new(&train_cfg.optimizer_settings());
        let mut schedule = Schedule::new(train_cfg.schedule_settings());
        let mut state = TrainState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            schedule: schedule.state().clone(),
            best_metric: None,
            best_step: 0,
            bad_validations: 0,
            elapsed: 0.0,
        };
        if let Some((_, last)) = existing.last().filter(|_| options.resume) {
            model = checkpoint::load_checkpoint_model(
                model,
                last,
                train_cfg.init_from.as_deref(),
                device,
            )?;
            optimizer = optimizer.load(&last.join("optim"), device)?;
            let state_path = last.join("state.json");
            let text =
                std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
            state = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
                path: state_path.clone(),
                message: e.to_string(),
            })?;
            schedule = Schedule::restore(train_cfg.schedule_settings(), state.schedule.clone());
            // The checkpoint loaded: now the (possibly changed) [train] settings become the saved config.
            checkpoint::write_atomic(&dir.join(CONFIG_FILE), resolved.to_toml()?.as_bytes())?;
            trim_metrics(&dir.join(METRICS_FILE), state.step)?;
        }

        let base_sha256 = match (&train_cfg.init_from, config.finetune.method) {
            (Some(init), m) if m != crate::model::lora::FinetuneMethod::None => {
                Some(checkpoint::file_sha256(&init.join(WEIGHTS))?)
            }
            _ => None,
        };
        let mut trainable = CountTrainable(0);
        model.visit(&mut trainable);
        let info = RunInfo {
            parameters: model.num_params(),
            trainable: trainable.0,
            train_stats,
            valid_pairs: valid.as_ref().map_or(0, |v| v.ids.len()),
            batches_per_epoch: planner.epoch(train_cfg.seed, 0).len(),
            start_step: state.step,
            resumed: options.resume,
        };
        let events = EventWriter::create(&dir.join("tensorboard"))?;
        let trainer = Trainer {
            config,
            dir,
            device: device.clone(),
            pipeline,
            train_ids,
            planner,
            valid,
            model: Some(model),
            optimizer,
            schedule,
            state,
            events,
            info,
            plan: Vec::new(),
            plan_epoch: u64::MAX,
            consecutive_bad: 0,
            notice,
            valid_max_len,
            base_sha256,
        };
        // The best weights are written after the checkpoint of their step: a run killed between
        // the two resumes at that step, and writes them again here (the same weights).
        if options.resume
            && (trainer.valid.is_none() || trainer.state.best_step == trainer.state.step)
        {
            trainer.save_best()?;
        }
        Ok(trainer)
    }

    /// Facts about the run (parameters, data, where it starts).
    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    /// The model as it is now.
    pub fn model(&self) -> &M {
        match &self.model {
            Some(model) => model,
            // `update` puts the model back before it returns, error or not.
            None => unreachable!("the model is always back after an update"),
        }
    }

    /// Updates made so far.
    pub fn steps(&self) -> u64 {
        self.state.step
    }

    /// Counts a skipped batch; too many in a row end training (the last checkpoint stays as it is).
    fn bad_batch(&mut self, what: &str, observer: &mut dyn Observer) -> Result<()> {
        self.consecutive_bad += 1;
        let count = self.consecutive_bad;
        observer.warn(&format!(
            "skipping {what} at step {} ({count} in a row)",
            self.state.step + 1
        ));
        if count >= self.config.train.max_bad_batches {
            return Err(Error::Diverged {
                count,
                step: self.state.step,
            });
        }
        Ok(())
    }

    /// The training batch of examples `indices`.
    fn batch(&self, indices: &[u32]) -> Batch {
        Batch::new(
            &self.train_ids,
            indices,
            (
                &self.pipeline.src_vocab().specials(),
                &self.pipeline.tgt_vocab().specials(),
            ),
        )
    }

    /// The loss (per target token), target tokens and gradients of the batch of examples
    /// `indices`, its dropout masks drawn from `seed`; `None` when the loss is not finite. On the
    /// CPU with several threads, one part of the batch per thread (every other example; see
    /// [`batch_gradients`]).
    fn micro_batch(&self, indices: &[u32], seed: u64) -> Option<(f64, usize, GradientsParams)> {
        let parts = gradients::parts_for::<B>(indices.len());
        let specials = self.pipeline.tgt_vocab().specials();
        let device = &self.device;
        let pieces: Vec<TeacherForced<B>> = crate::parallel::interleaved(indices.len(), parts)
            .into_iter()
            .map(|rows| {
                let rows: Vec<u32> = rows.into_iter().map(|r| indices[r]).collect();
                let batch = self.batch(&rows);
                TeacherForced {
                    src: source_batch::<B>(&batch.src, specials, device),
                    tgt_in: ids_tensor(&batch.tgt_in, device),
                    tgt_out: ids_tensor(&batch.tgt_out, device),
                    tokens: batch.tgt_out.real_tokens(),
                }
            })
            .collect();
        let tokens = pieces.iter().map(|p| p.tokens).sum();
        let (loss, grads) = batch_gradients(
            self.model(),
            pieces,
            self.config.train.label_smoothing,
            specials.pad,
            seed,
        )?;
        Some((loss, tokens, grads))
    }

    /// One update from the next `accumulate` batches of the epoch's plan; `None` when every batch
    /// was skipped (non-finite loss or gradient).
    fn update(&mut self, observer: &mut dyn Observer) -> Result<Option<Update>> {
        let train_cfg = &self.config.train;
        let mut accumulator = GradientsAccumulator::<M>::new();
        let (mut micro_batches, mut step_loss, mut step_tokens) = (0usize, 0.0f64, 0usize);
        while micro_batches < train_cfg.accumulate && self.state.batch_in_epoch < self.plan.len() {
            let indices = self.plan[self.state.batch_in_epoch].clone();
            self.state.batch_in_epoch += 1;
            let seed = step_seed(train_cfg.seed, self.state.step, micro_batches);
            let Some((value, tokens, grads)) = self.micro_batch(&indices, seed) else {
                self.bad_batch("a batch with a non-finite loss", observer)?;
                continue;
            };
            accumulator.accumulate(self.model(), grads);
            micro_batches += 1;
            step_loss += value * tokens as f64;
            step_tokens += tokens;
        }
        if micro_batches == 0 {
            return Ok(None);
        }
        let mut grads = accumulator.grads();
        if micro_batches > 1 {
            scale_grads(self.model(), &mut grads, 1.0 / micro_batches as f64);
        }
        let norm = grad_norm(self.model(), &grads);
        if !norm.is_finite() {
            self.bad_batch("an update with a non-finite gradient norm", observer)?;
            return Ok(None);
        }
        self.consecutive_bad = 0;
        if train_cfg.clip_norm > 0.0 && norm > train_cfg.clip_norm {
            scale_grads(self.model(), &mut grads, train_cfg.clip_norm / norm);
        }
        self.state.step += 1;
        let lr = self.schedule.lr(self.state.step);
        if let Some(model) = self.model.take() {
            self.model = Some(self.optimizer.step(lr, model, grads));
        }
        Ok(Some(Update {
            loss: step_loss / step_tokens.max(1) as f64,
            lr,
            grad_norm: norm,
            tokens: step_tokens,
        }))
    }

    /// Validates (when there is validation data), saves the best weights, and writes a resumable
    /// checkpoint. Returns why to stop when early stopping or the observer says so.
    pub fn validate_and_checkpoint(
        &mut self,
        observer: &mut dyn Observer,
    ) -> Result<Option<String>> {
        let train_cfg = &self.config.train;
        let mut stop = None;
        if !params_finite(self.model()) {
            observer.warn(&format!(
                "not saving at step {}: the weights are no longer finite (the previous checkpoint is kept)",
                self.state.step
            ));
            return Ok(None);
        }
        let mut report = None;
        let mut save = false;
        if let Some(valid) = &self.valid {
            let clock = Instant::now();
            let Scores {
                loss,
                bleu,
                chrf,
                hit_max_len,
            } = validate(
                &self.model().valid().merged(),
                valid,
                &self.pipeline,
                self.valid_max_len,
                &self.device,
            )?;
            let ppl = loss.exp();
            let metric = match train_cfg.stop_metric {
                StopMetric::Bleu => bleu,
                StopMetric::Chrf => chrf,
                StopMetric::Ppl => -ppl,
            };
            let best = self.state.best_metric.is_none_or(|b| metric > b);
            if best {
                self.state.best_metric = Some(metric);
                self.state.best_step = self.state.step;
                self.state.bad_validations = 0;
                save = true;
            } else {
                self.state.bad_validations += 1;
                if train_cfg.patience > 0 && self.state.bad_validations >= train_cfg.patience {
                    stop = Some(format!(
                        "early stopping: no improvement in {} validations",
                        train_cfg.patience
                    ));
                }
            }
            let lr_reduced = self.schedule.on_validation(metric);
            let valid_report = ValidReport {
                step: self.state.step,
                ppl,
                loss,
                bleu,
                chrf,
                best,
                lr_reduced,
                hit_max_len,
                seconds: clock.elapsed().as_secs_f64(),
            };
            self.events.scalar("valid/ppl", self.state.step, ppl)?;
            self.events.scalar("valid/bleu", self.state.step, bleu)?;
            self.events.scalar("valid/chrf", self.state.step, chrf)?;
            self.events.flush()?;
            write_json_line(
                &self.dir.join(METRICS_FILE),
                &serde_json::json!({"type": "valid", "step": self.state.step, "ppl": ppl, "loss": loss,
                    "bleu": bleu, "chrf": chrf, "best": best, "lr_reduced": lr_reduced,
                    "hit_max_len": hit_max_len}),
            )?;
            observer.validated(&valid_report);
            report = Some(valid_report);
        } else {
            // Without validation data the latest weights are the ones to translate with.
            save = true;
        }
        self.state.schedule = self.schedule.state().clone();
        // Checkpoint first: best weights on disk always have a checkpoint of their step, so a run
        // killed in between resumes (and rewrites them) instead of looking finished.
        self.checkpoint()?;
        if save {
            self.save_best()?;
        }
        // Asked only once the checkpoint is safe: a stopped run is a finished, resumable one.
        if stop.is_none()
            && let Some(report) = &report
        {
            stop = observer.stop_requested(report);
        }
        Ok(stop)
    }

    /// Writes the weights to translate with: `model.safetensors`, or for LoRA only the updates
    /// (`adapter.safetensors`), which refer to the base model of `train.init_from`.
    fn save_best(&self) -> Result<()> {
        match &self.base_sha256 {
            None => checkpoint::save_weights(self.model(), &self.dir.join(WEIGHTS)),
            Some(base) => checkpoint::save_adapter(
                self.model(),
                &self.dir.join(checkpoint::ADAPTER),
                &self.config.finetune,
                base,
            ),
        }
    }

    /// Writes a resumable checkpoint (model, optimizer, trainer state) of the current step.
    fn checkpoint(&self) -> Result<()> {
        let json =
            serde_json::to_string_pretty(&self.state).map_err(|e| Error::Config(e.to_string()))?;
        checkpoint::commit(
            &self.dir,
            self.state.step,
            self.config.train.keep_checkpoints,
            |tmp| {
                match &self.base_sha256 {
                    // Fine-tuning: the frozen base is train.init_from's, kept once, not per step.
                    Some(base) => checkpoint::save_adapter(
                        self.model(),
                        &tmp.join(checkpoint::ADAPTER),
                        &self.config.finetune,
                        base,
                    )?,
                    None => self
                        .model()
                        .clone()
                        .save_file(tmp.join("model"), &checkpoint::recorder())
                        .map_err(|e| Error::Checkpoint {
                            path: tmp.join("model.mpk"),
                            message: e.to_string(),
                        })?,
                }
                self.optimizer.save(&tmp.join("optim"))?;
                std::fs::write(tmp.join("state.json"), &json)
                    .map_err(|e| Error::io(tmp.join("state.json"), e))
            },
        )
        .map(|_| ())
    }

    /// Trains until a stopping condition holds, validating and checkpointing on the way.
    pub fn run(mut self, observer: &mut dyn Observer) -> Result<TrainSummary> {
        let train_cfg = &self.config.train;
        if let Some(notice) = &self.notice {
            observer.warn(notice);
        }
        if let Some(warning) = self.info.train_stats.drop_warning() {
            observer.warn(&warning);
        }
        observer.started(&self.info);
        let metrics_path = self.dir.join(METRICS_FILE);
        let started = Instant::now();
        let elapsed_before = self.state.elapsed;
        let elapsed = |started: &Instant| elapsed_before + started.elapsed().as_secs_f64();
        let (mut report_tokens, mut report_clock) = (0usize, Instant::now());
        // A resumed run was validated (and checkpointed) at the step it resumes from.
        let mut validated_at = if self.info.resumed {
            self.state.step
        } else {
            u64::MAX
        };
        let stopped: String;
        loop {
            if train_cfg.max_steps > 0 && self.state.step >= train_cfg.max_steps {
                stopped = format!("reached max_steps = {}", train_cfg.max_steps);
                break;
            }
            if train_cfg.max_minutes > 0.0 && elapsed(&started) >= train_cfg.max_minutes * 60.0 {
                stopped = format!("reached max_minutes = {}", train_cfg.max_minutes);
                break;
            }
            if self.plan_epoch != self.state.epoch {
                self.plan = self.planner.epoch(train_cfg.seed, self.state.epoch);
                self.plan_epoch = self.state.epoch;
            }
            if self.state.batch_in_epoch >= self.plan.len() {
                self.state.epoch += 1;
                self.state.batch_in_epoch = 0;
                if train_cfg.max_epochs > 0 && self.state.epoch >= train_cfg.max_epochs {
                    stopped = format!("reached max_epochs = {}", train_cfg.max_epochs);
                    break;
                }
                continue;
            }
            let Some(update) = self.update(observer)? else {
                continue;
            };
            let step = self.state.step;
            report_tokens += update.tokens;
            write_json_line(
                &metrics_path,
                &serde_json::json!({"type": "train", "step": step, "epoch": self.state.epoch,
                    "loss": update.loss, "lr": update.lr, "grad_norm": update.grad_norm,
                    "tokens": update.tokens}),
            )?;
            if step.is_multiple_of(train_cfg.log_every) {
                let secs = report_clock.elapsed().as_secs_f64().max(1e-9);
                self.events.scalar("train/loss", step, update.loss)?;
                self.events.scalar("train/lr", step, update.lr)?;
                observer.step(&StepReport {
                    step,
                    epoch: self.state.epoch,
                    epoch_progress: (self.state.batch_in_epoch, self.plan.len()),
                    loss: update.loss,
                    lr: update.lr,
                    tokens_per_sec: report_tokens as f64 / secs,
                    elapsed: elapsed(&started),
                });
                report_tokens = 0;
                report_clock = Instant::now();
            }
            if step.is_multiple_of(train_cfg.valid_every) {
                self.state.elapsed = elapsed(&started);
                validated_at = step;
                if let Some(reason) = self.validate_and_checkpoint(observer)? {
                    stopped = reason;
                    break;
                }
            }
        }
        if validated_at != self.state.step {
            self.state.elapsed = elapsed(&started);
            self.validate_and_checkpoint(observer)?;
        }
        self.events.flush()?;
        Ok(TrainSummary {
            steps: self.state.step,
            best_step: self.state.best_step,
            best_metric: self.state.best_metric.map(|m| match train_cfg.stop_metric {
                StopMetric::Bleu | StopMetric::Chrf => m,
                StopMetric::Ppl => -m,
            }),
            stopped,
            elapsed: self.state.elapsed,
        })
    }
}
