//! Checkpoints are sacred: everything is written to a temporary name, synced to disk, then renamed,
//! so a crash or a full disk never leaves a torn checkpoint behind.
//!
//! A model directory holds `model.safetensors` (the best weights, keys = parameter names) for
//! translation, and `checkpoints/step-NNNNNNNN/` (model + optimizer + trainer state) for `--resume`.

use crate::error::{Error, Result};
use crate::model::lora::FinetuneConfig;
use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Subdirectory holding resumable checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";
/// Best weights, for translation.
pub const WEIGHTS: &str = "model.safetensors";

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn sync_dir(path: &Path) -> Result<()> {
    // Directories can be opened and synced on Unix; elsewhere this is best effort.
    match File::open(path) {
        Ok(f) => {
            let _ = f.sync_all();
            Ok(())
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = rosetta_text::atomic::tmp_name(path);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Saves weights as safetensors, atomically. Keys are the parameter paths (e.g.
/// `decoder.attention.energy.weight`).
pub fn save_weights<B: Backend, M: Module<B>>(model: &M, path: &Path) -> Result<()> {
    save_store(model, path, None, "weights")
}

/// The file of a LoRA-adapted model directory holding only the updates; the frozen base weights are
/// those of the directory its `train.init_from` names.
pub const ADAPTER: &str = "adapter.safetensors";

/// Saves only the fine-tuning parameters of `model` (LoRA updates, adapters), atomically.
pub fn save_adapter<B: Backend, M: Module<B>>(model: &M, path: &Path) -> Result<()> {
    save_store(model, path, Some(r"_lora\.|_adapter\."), "the adapter")
}

/// Writes the parameters of `model` whose paths match `only` (all when `None`) as safetensors:
/// temporary file, fsync, rename.
fn save_store<B: Backend, M: Module<B>>(
    model: &M,
    path: &Path,
    only: Option<&str>,
    what: &str,
) -> Result<()> {
    let tmp = rosetta_text::atomic::tmp_name(path);
    let _ = std::fs::remove_file(&tmp);
    let mut store = SafetensorsStore::from_file(&tmp).overwrite(true);
    if let Some(pattern) = only {
        store = store.with_regex(pattern);
    }
    model.save_into(&mut store).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("cannot save {what}: {e}"),
    })?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Loads the weights a model directory translates with into `model` (which must already carry
/// its LoRA updates if it has an adapter): `model.safetensors`, or the base model's weights (from
/// the `train.init_from` directory recorded in `base`'s config) plus `adapter.safetensors`.
pub fn load_model_dir_weights<B: Backend, M: Module<B>>(model: M, dir: &Path) -> Result<M> {
    let full = dir.join(WEIGHTS);
    let adapter = dir.join(ADAPTER);
    if full.exists() || !adapter.exists() {
        return load_weights(model, &full);
    }
    let config = crate::config::Config::load(&dir.join(super::trainer::CONFIG_FILE))?;
    let Some(base) = config.train.init_from else {
        return Err(Error::Checkpoint {
            path: adapter,
            message: "an adapter without a base model: config.toml has no train.init_from".into(),
        });
    };
    let model = load_base_weights(model, &base)?;
    load_part(
        model,
        &adapter,
        FinetuneConfig::is_finetune_key,
        "this adapter does not fit the model",
    )
}

/// Loads a base model's weights into `model` (which may already carry LoRA updates, left as they
/// are): every parameter but the updates must be present.
pub fn load_base_weights<B: Backend, M: Module<B>>(model: M, base_dir: &Path) -> Result<M> {
    let path = base_dir.join(WEIGHTS);
    if !path.exists() {
        return Err(Error::io(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "train.init_from names a directory without model.safetensors (an adapter cannot \
                 be the base of another; merge it first with `rosetta merge`)",
            ),
        ));
    }
    load_part(
        model,
        &path,
        |k| !FinetuneConfig::is_finetune_key(k),
        "these weights come from another model",
    )
}

/// Loads the parameters `path` holds into `model`: every parameter `required` names must be
/// present, and the file must hold nothing the model lacks; `misfit` opens the error message.
fn load_part<B: Backend, M: Module<B>>(
    mut model: M,
    path: &Path,
    required: impl Fn(&str) -> bool,
    misfit: &str,
) -> Result<M> {
    let mut store = SafetensorsStore::from_file(path).allow_partial(true);
    let result = model.load_from(&mut store).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("{misfit}: {e}"),
    })?;
    let missing: Vec<&String> = result
        .missing
        .iter()
        .map(|(k, _)| k)
        .filter(|k| required(k))
        .collect();
    if !missing.is_empty() || !result.unused.is_empty() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "{misfit}: missing {missing:?}, unexpected {:?}",
                result.unused
            ),
        });
    }
    Ok(model)
}

/// The weights of `model` as safetensors bytes (keys = parameter paths), e.g. to write with
/// [`write_atomic`].
pub fn weights_bytes<B: Backend, M: Module<B>>(model: &M) -> Result<Vec<u8>> {
    let fail = |e: String| Error::Checkpoint {
        path: PathBuf::from("<memory>"),
        message: format!("cannot serialize weights: {e}"),
    };
    let mut store = SafetensorsStore::from_bytes(None);
    model
        .save_into(&mut store)
        .map_err(|e| fail(e.to_string()))?;
    store.get_bytes().map_err(|e| fail(e.to_string()))
}

/// Loads safetensors weights into `model`, which must have the same architecture and vocabulary
/// sizes. A missing key, an unexpected key or a shape mismatch is an error naming the file.
pub fn load_weights<B: Backend, M: Module<B>>(model: M, path: &Path) -> Result<M> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
        ));
    }
    load_store(model, SafetensorsStore::from_file(path), path)
}

/// Loads safetensors weights held in memory into `model`, checked as [`load_weights`] checks a
/// file; `name` stands for the file in errors.
pub fn load_weights_bytes<B: Backend, M: Module<B>>(
    model: M,
    bytes: Vec<u8>,
    name: &Path,
) -> Result<M> {
    load_store(model, SafetensorsStore::from_bytes(Some(bytes)), name)
}

/// Loads every parameter of `model` from `store`: nothing may be missing, nothing left over.
fn load_store<B: Backend, M: Module<B>>(
    mut model: M,
    mut store: SafetensorsStore,
    path: &Path,
) -> Result<M> {
    let result = model.load_from(&mut store).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("these weights do not fit the model described by config.toml: {e}"),
    })?;
    if !result.unused.is_empty() || !result.missing.is_empty() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "these weights come from another model: missing {:?}, unexpected {:?}",
                result.missing, result.unused
            ),
        });
    }
    Ok(model)
}

/// The model recorder used for resumable checkpoints (keeps parameter ids, so optimizer state
/// matches after loading).
pub fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

/// Directory name of the checkpoint after `step` optimizer steps.
pub fn step_dir(model_dir: &Path, step: u64) -> PathBuf {
    model_dir.join(CHECKPOINTS).join(format!("step-{step:08}"))
}

/// All complete checkpoints, oldest first.
pub fn list(model_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = model_dir.join(CHECKPOINTS);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Writes a checkpoint directory atomically: `fill` writes into a temporary directory, which is
/// then synced and renamed to its final name. Older checkpoints beyond `keep` are removed.
pub fn commit(
    model_dir: &Path,
    step: u64,
    keep: usize,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let parent = model_dir.join(CHECKPOINTS);
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    sync_dir(model_dir)?;
    let final_dir = step_dir(model_dir, step);
    let tmp = parent.join(format!(".tmp-step-{step:08}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    fill(&tmp)?;
    for entry in std::fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))? {
        let entry = entry.map_err(|e| Error::io(&tmp, e))?;
        sync_file(&entry.path())?;
    }
    sync_dir(&tmp)?;
    // Never delete a complete checkpoint before its replacement is in place.
    let old = parent.join(format!(".old-step-{step:08}"));
    if final_dir.exists() {
        std::fs::rename(&final_dir, &old).map_err(|e| Error::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    sync_dir(&parent)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    let all = list(model_dir)?;
    if all.len() > keep.max(1) {
        for (_, old) in &all[..all.len() - keep.max(1)] {
            std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
        }
    }
    Ok(final_dir)
}
