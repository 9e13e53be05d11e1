//! Checkpoint averaging: the element-wise mean of the weights saved at several steps of one run
//! (Vaswani et al. 2017, §6.1; OpenNMT-py's `average_models`, fairseq's `average_checkpoints`).
//! Late checkpoints of a run sit around the same optimum; their mean usually translates better
//! than any one of them.
//!
//! The result is an ordinary model directory (config, text pipeline, `model.safetensors`), so
//! `translate` and `evaluate` read it like any trained model.

use super::checkpoint::{self, WEIGHTS, write_atomic};
use super::trainer::CONFIG_FILE;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::architecture::{ArchJob, Seq2Seq, dispatch};
use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use rosetta_text::pipeline::TextPipeline;
use std::path::{Path, PathBuf};

/// Which checkpoints of a model directory to average.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every checkpoint the directory holds.
    All,
    /// The `n` most recent.
    Last(usize),
    /// These steps.
    Steps(Vec<u64>),
}

/// What was averaged.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Averaged {
    /// The run the checkpoints come from.
    pub source: PathBuf,
    /// The steps averaged, oldest first.
    pub steps: Vec<u64>,
}

/// File in the output directory recording what was averaged.
pub const AVERAGE_FILE: &str = "average.json";

/// The checkpoint directories of `model_dir` named by `selection`, oldest first.
pub fn select(model_dir: &Path, selection: &Selection) -> Result<Vec<(u64, PathBuf)>> {
    let all = checkpoint::list(model_dir)?;
    let available = || {
        let steps: Vec<String> = all.iter().map(|(s, _)| s.to_string()).collect();
        if steps.is_empty() {
            "none".to_owned()
        } else {
            steps.join(", ")
        }
    };
    let chosen: Vec<(u64, PathBuf)> = match selection {
        Selection::All => all.clone(),
        Selection::Last(0) => {
            return Err(Error::Config(
                "--last must be at least 1 (the number of checkpoints to average)".into(),
            ));
        }
        Selection::Last(n) => {
            if *n > all.len() {
                return Err(Error::Config(format!(
                    "{} holds {} checkpoint(s) (steps: {}), fewer than the {n} asked for; keep more \
                     with train.keep_checkpoints",
                    model_dir.display(),
                    all.len(),
                    available()
                )));
            }
            all[all.len() - n..].to_vec()
        }
        Selection::Steps(steps) => {
            let mut chosen = Vec::with_capacity(steps.len());
            for step in steps {
                match all.iter().find(|(s, _)| s == step) {
                    Some(found) if !chosen.contains(found) => chosen.push(found.clone()),
                    Some(_) => {
                        return Err(Error::Config(format!("step {step} is named twice")));
                    }
                    None => {
                        return Err(Error::Config(format!(
                            "{} holds no checkpoint of step {step} (steps: {})",
                            model_dir.display(),
                            available()
                        )));
                    }
                }
            }
            chosen.sort();
            chosen
        }
    };
    if chosen.is_empty() {
        return Err(Error::Config(format!(
            "{} holds no checkpoints to average (train writes them to {}/)",
            model_dir.display(),
            checkpoint::CHECKPOINTS
        )));
    }
    Ok(chosen)
}

/// Averages the selected checkpoints of the run in `model_dir` into a new model directory `out`,
/// which must not exist yet or be empty (nothing is overwritten). Runs on `device`.
pub fn average_checkpoints<B: Backend>(
    model_dir: &Path,
    selection: &Selection,
    out: &Path,
    device: &B::Device,
) -> Result<Averaged> {
    let config_path = model_dir.join(CONFIG_FILE);
    let config = Config::load(&config_path)?;
    let pipeline = TextPipeline::load(model_dir)?;
    let chosen = select(model_dir, selection)?;
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
        if entries.next().is_some() {
            return Err(Error::io(
                out,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the output directory is not empty; choose a new one",
                ),
            ));
        }
    }
    let sum = dispatch::<B, _>(
        &config.model,
        SumJob {
            config: &config,
            pipeline: &pipeline,
            chosen: &chosen,
            device,
        },
    )?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    pipeline.save(out)?;
    write_atomic(&out.join(CONFIG_FILE), config.to_toml()?.as_bytes())?;
    write_atomic(&out.join(WEIGHTS), &sum)?;
    let averaged = Averaged {
        source: model_dir.to_path_buf(),
        steps: chosen.iter().map(|(s, _)| *s).collect(),
    };
    let record = serde_json::to_string_pretty(&averaged)
        .map_err(|e| Error::Config(format!("cannot describe the average: {e}")))?;
    write_atomic(&out.join(AVERAGE_FILE), record.as_bytes())?;
    Ok(averaged)
}

/// Loads the chosen checkpoints as models of type `M`, averages them, and returns the mean as
/// safetensors bytes.
struct SumJob<'a, B: Backend> {
    config: &'a Config,
    pipeline: &'a TextPipeline,
    chosen: &'a [(u64, PathBuf)],
    device: &'a B::Device,
}

impl<B: Backend> ArchJob<B> for SumJob<'_, B> {
    type Output = Result<Vec<u8>>;

    fn run<M: Seq2Seq<B>>(self) -> Self::Output {
        let load = |dir: &Path| -> Result<M> {
            let model = M::init(
                &self.config.model,
                self.pipeline.src_vocab().len(),
                self.pipeline.tgt_vocab().len(),
                self.device,
            )?
            // A fine-tuning run's checkpoints hold the updates; the frozen base is init_from's.
            .with_finetune(&self.config.finetune, self.device)?;
            checkpoint::load_checkpoint_model(
                model,
                dir,
                self.config.train.init_from.as_deref(),
                self.device,
            )
        };
        // Running sum in visit order (the same for every instance of one architecture).
        let mut sum: Option<M> = None;
        for (_, dir) in self.chosen {
            let model = load(dir)?;
            sum = Some(match sum {
                None => model,
                Some(acc) => {
                    let mut collect = Collect(Vec::new());
                    model.visit(&mut collect);
                    acc.map(&mut Add(collect.0.into_iter()))
                }
            });
        }
        // `select` returned at least one checkpoint, so the loop ran.
        let Some(sum) = sum else {
            return Err(Error::Config("no checkpoints to average".into()));
        };
        let mean = sum.map(&mut Scale(1.0 / self.chosen.len() as f64));
        checkpoint::weights_bytes(&mean)
    }
}

/// Every float parameter's value, flattened, in visit order.
struct Collect<B: Backend>(Vec<Tensor<B, 1>>);

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().flatten(0, D - 1));
    }
}

/// Adds the values collected from another model to every float parameter, in visit order.
struct Add<I>(I);

impl<B: Backend, I: Iterator<Item = Tensor<B, 1>>> ModuleMapper<B> for Add<I> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let tensor = match self.0.next() {
            Some(other) => tensor.flatten::<1>(0, D - 1).add(other).reshape(dims),
            // Same architecture, same visit order: every parameter has its partner.
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Multiplies every float parameter by a constant.
struct Scale(f64);

impl<B: Backend> ModuleMapper<B> for Scale {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.mul_scalar(self.0), mapper)
    }
}
