//! `rosetta merge`: folds a LoRA adapter into its base model's weights (`W ← W + (α/r) A B`), giving
//! an ordinary model directory that no longer needs the base directory: what to deploy or export.
//! Bottleneck adapters are nonlinear and stay separate layers; merging writes them together with
//! the base weights, so the directory no longer needs the base either.

use super::checkpoint::{WEIGHTS, weights_bytes, write_atomic};
use super::trainer::CONFIG_FILE;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::architecture::AnyModel;
use crate::model::lora::{FinetuneConfig, FinetuneMethod};
use burn::prelude::*;
use rosetta_text::pipeline::TextPipeline;
use std::path::Path;

/// Writes the merged model of the adapter directory `dir` to the new directory `out`.
pub fn merge_adapter<B: Backend>(dir: &Path, out: &Path, device: &B::Device) -> Result<()> {
    let config = Config::load(&dir.join(CONFIG_FILE))?;
    if config.finetune.method == FinetuneMethod::None {
        return Err(Error::Config(format!(
            "{} is not a LoRA-adapted model (finetune.method = \"none\"): nothing to merge",
            dir.display()
        )));
    }
    if out.join(CONFIG_FILE).exists() {
        return Err(Error::io(
            out,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already holds a model; choose a new directory",
            ),
        ));
    }
    let pipeline = TextPipeline::load(dir)?;
    let bytes = match AnyModel::<B>::load_dir(&config, &pipeline, dir, device)?.merged() {
        AnyModel::Rnn(m) => weights_bytes(&m)?,
        AnyModel::Transformer(m) => weights_bytes(&m)?,
    };
    let merged = match config.finetune.method {
        FinetuneMethod::Lora => Config {
            finetune: FinetuneConfig::default(),
            ..config
        },
        _ => config,
    };
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    pipeline.save(out)?;
    write_atomic(&out.join(WEIGHTS), &bytes)?;
    write_atomic(&out.join(CONFIG_FILE), merged.to_toml()?.as_bytes())?;
    Ok(())
}
