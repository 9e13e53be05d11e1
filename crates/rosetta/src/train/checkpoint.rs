//! Checkpoints are sacred: everything is written to a temporary name, synced to disk, then renamed,
//! so a crash or a full disk never leaves a torn checkpoint behind.
//!
//! A model directory holds `model.safetensors` (the best weights, keys = parameter names) for
//! translation, and `checkpoints/step-NNNNNNNN/` (model + optimizer + trainer state) for `--resume`.

use super::safetensors_file::Header;
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

/// The metadata key of an adapter file that holds the SHA-256 of the base weights it was trained
/// on ([`file_sha256`] of the base's `model.safetensors`).
pub const BASE_SHA256: &str = "rosetta.base_sha256";

/// Saves only the fine-tuning parameters of `model` (LoRA updates, adapters, and the embeddings
/// when they train: [`FinetuneConfig::saved_pattern`]), atomically, with the fingerprint of the
/// base weights they were trained on (checked when they are loaded).
pub fn save_adapter<B: Backend, M: Module<B>>(
    model: &M,
    path: &Path,
    finetune: &FinetuneConfig,
    base_sha256: &str,
) -> Result<()> {
    save_store(
        model,
        path,
        Some((finetune.saved_pattern(), base_sha256)),
        "the adapter",
    )
}

/// The SHA-256 of a file's bytes, in hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The `__metadata__` strings of a safetensors file, read from its header alone.
pub fn safetensors_metadata(path: &Path) -> Result<std::collections::HashMap<String, String>> {
    Ok(Header::read(path)?.metadata())
}

/// Writes the parameters of `model` as safetensors (temporary file, fsync, rename): all of them,
/// or with `adapter = Some((pattern, base_sha256))` those whose paths match, fingerprinted.
fn save_store<B: Backend, M: Module<B>>(
    model: &M,
    path: &Path,
    adapter: Option<(&str, &str)>,
    what: &str,
) -> Result<()> {
    let tmp = rosetta_text::atomic::tmp_name(path);
    let _ = std::fs::remove_file(&tmp);
    let mut store = SafetensorsStore::from_file(&tmp).overwrite(true);
    if let Some((pattern, base_sha256)) = adapter {
        store = store.with_regex(pattern).metadata(BASE_SHA256, base_sha256);
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
    load_adapter(model, &adapter, &base)
}

/// Loads the fine-tuning parameters saved in `adapter` into `model`, which holds the weights of
/// the base model in `base_dir`; refused when that base is not the one the adapter was trained on.
pub fn load_adapter<B: Backend, M: Module<B>>(
    model: M,
    adapter: &Path,
    base_dir: &Path,
) -> Result<M> {
    // Adapters saved before fingerprints existed carry none, and load as they did.
    if let Some(expected) = safetensors_metadata(adapter)?.get(BASE_SHA256) {
        let base_weights = base_dir.join(WEIGHTS);
        let found = file_sha256(&base_weights)?;
        if &found != expected {
            return Err(Error::Checkpoint {
                path: adapter.to_path_buf(),
                message: format!(
                    "was trained on other base weights than {} holds now (SHA-256 {} when \
                     trained, {} now): restore the base model it was trained on, or fine-tune \
                     again",
                    base_weights.display(),
                    expected.chars().take(12).collect::<String>(),
                    &found[..12]
                ),
            });
        }
    }
    load_part(
        model,
        adapter,
        FinetuneConfig::is_finetune_key,
        "this adapter does not fit the model",
    )
}

/// Loads the model state of the checkpoint in `dir`: `model.mpk` (every parameter), or for a
/// fine-tuning run `adapter.safetensors` (the new parameters alone; checkpoints of a LoRA run on a
/// 300 MB OPUS-MT model are then a few MB) over the weights of `base`, its `train.init_from`.
pub fn load_checkpoint_model<B: Backend, M: Module<B>>(
    model: M,
    dir: &Path,
    base: Option<&Path>,
    device: &B::Device,
) -> Result<M> {
    let adapter = dir.join(ADAPTER);
    if adapter.exists() {
        let Some(base) = base else {
            return Err(Error::Checkpoint {
                path: adapter,
                message: "a fine-tuning checkpoint without a base model: config.toml has no \
                          train.init_from"
                    .into(),
            });
        };
        let model = load_base_weights(model, base)?;
        return load_adapter(model, &adapter, base);
    }
    model
        .load_file(dir.join("model"), &recorder(), device)
        .map_err(|e| Error::Checkpoint {
            path: dir.join("model.mpk"),
            message: format!("cannot load the model state: {e}"),
        })
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
    let result = apply_file(&mut model, path, misfit)?;
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
    let mut model = model;
    let misfit = "these weights do not fit the model described by config.toml";
    let result = apply_file(&mut model, path, misfit)?;
    check_complete(model, result, path)
}

/// Applies every tensor of the safetensors file `path` to `model`, read one at a time (see
/// [`super::safetensors_file`]); a tensor of the wrong shape or unreadable is an error opening with
/// `misfit`.
fn apply_file<B: Backend, M: Module<B>>(
    model: &mut M,
    path: &Path,
    misfit: &str,
) -> Result<burn::store::ApplyResult> {
    let snapshots = Header::read(path)?.snapshots()?;
    let result = model.apply(snapshots, None, None, false);
    if !result.errors.is_empty() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("{misfit}: {:?}", result.errors),
        });
    }
    Ok(result)
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
    check_complete(model, result, path)
}

/// `model` when `result` applied every parameter and left nothing over.
fn check_complete<M>(model: M, result: burn::store::ApplyResult, path: &Path) -> Result<M> {
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
