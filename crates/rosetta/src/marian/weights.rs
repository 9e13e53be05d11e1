//! Hugging Face Marian weights ↔ Rosetta's Transformer parameters.
//!
//! Rosetta's parameter names are `transformers`' without the `model.` prefix (see
//! [`crate::model::transformer`]), so the mapping is short: linear weights are transposed (PyTorch
//! stores `[out, in]`, burn `[in, out]`), `final_logits_bias` loses its leading `1` dimension, and
//! the copies `transformers` may store of tied tables (`encoder.embed_tokens`, `lm_head`) and of the
//! fixed sinusoids (`embed_positions`) are left out, as Rosetta computes or shares them.
//!
//! Weights are read with burn's readers: `model.safetensors`, or `pytorch_model.bin` (PyTorch's
//! zip of pickled tensors, read in Rust without Python). Half-precision files are widened to f32.

use crate::error::{Error, Result};
use crate::model::transformer::TransformerConfig;
use burn_store::{ModuleStore, PytorchStore, SafetensorsStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One tensor in f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor32 {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values.
    pub values: Vec<f32>,
}

/// Every tensor of a checkpoint, by name.
pub type TensorMap = BTreeMap<String, Tensor32>;

/// The weights file of a Hugging Face directory: `model.safetensors` if present, else
/// `pytorch_model.bin`.
pub fn weights_file(dir: &Path) -> Result<PathBuf> {
    for name in ["model.safetensors", "pytorch_model.bin"] {
        let path = dir.join(name);
        if path.exists() {
            return Ok(path);
        }
    }
    Err(Error::io(
        dir.join("model.safetensors"),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no weights: the directory has neither model.safetensors nor pytorch_model.bin",
        ),
    ))
}

/// Reads every tensor of a safetensors or PyTorch file.
pub fn read_tensors(path: &Path) -> Result<TensorMap> {
    let fail = |message: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let is_bin = path.extension().is_some_and(|e| e == "bin" || e == "pt");
    let snapshots = if is_bin {
        let mut store = PytorchStore::from_file(path);
        store
            .get_all_snapshots()
            .map_err(|e| fail(format!("not a readable PyTorch checkpoint: {e}")))?
            .clone()
    } else {
        let mut store = SafetensorsStore::from_file(path);
        store
            .get_all_snapshots()
            .map_err(|e| fail(format!("not a readable safetensors file: {e}")))?
            .clone()
    };
    let mut out = TensorMap::new();
    for (name, snapshot) in snapshots {
        let data = snapshot
            .to_data()
            .map_err(|e| fail(format!("tensor {name} cannot be read: {e:?}")))?;
        let shape: Vec<usize> = data.shape.to_vec();
        let values: Vec<f32> = data
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| fail(format!("tensor {name} cannot be converted to f32: {e:?}")))?;
        if values.len() != shape.iter().product::<usize>() {
            return Err(fail(format!(
                "tensor {name} holds {} values for shape {shape:?}",
                values.len()
            )));
        }
        out.insert(name, Tensor32 { shape, values });
    }
    Ok(out)
}

/// Whether a parameter is a linear layer's weight (stored transposed by burn).
fn is_linear_weight(name: &str) -> bool {
    [
        "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "lm_head",
    ]
    .iter()
    .any(|layer| name.ends_with(&format!("{layer}.weight")))
}

fn transpose(t: &Tensor32) -> Tensor32 {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let mut values = vec![0.0; t.values.len()];
    for r in 0..rows {
        for c in 0..cols {
            values[c * rows + r] = t.values[r * cols + c];
        }
    }
    Tensor32 {
        shape: vec![cols, rows],
        values,
    }
}

/// Maps Hugging Face Marian tensors to Rosetta's names and layouts for `config`.
pub fn hf_to_rosetta(hf: &TensorMap, config: &TransformerConfig) -> TensorMap {
    let mut out = TensorMap::new();
    for (name, tensor) in hf {
        let name = name.strip_prefix("model.").unwrap_or(name);
        let redundant = name.ends_with("embed_positions.weight")
            || (config.share_embeddings && name.ends_with("embed_tokens.weight"))
            || (!config.share_embeddings && name == "shared.weight")
            || (config.tie_output && name == "lm_head.weight");
        if redundant {
            continue;
        }
        let tensor = if name == "final_logits_bias" {
            Tensor32 {
                shape: vec![tensor.values.len()],
                values: tensor.values.clone(),
            }
        } else if is_linear_weight(name) && tensor.shape.len() == 2 {
            transpose(tensor)
        } else {
            tensor.clone()
        };
        out.insert(name.to_owned(), tensor);
    }
    out
}

/// Maps Rosetta's parameters back to the names and layouts `transformers` loads.
pub fn rosetta_to_hf(rosetta: &TensorMap, config: &TransformerConfig) -> TensorMap {
    let mut out = TensorMap::new();
    for (name, tensor) in rosetta {
        let (hf_name, tensor) = if name == "final_logits_bias" {
            (
                name.clone(),
                Tensor32 {
                    shape: vec![1, tensor.values.len()],
                    values: tensor.values.clone(),
                },
            )
        } else if name == "lm_head.weight" {
            (name.clone(), transpose(tensor))
        } else if is_linear_weight(name) && tensor.shape.len() == 2 {
            (format!("model.{name}"), transpose(tensor))
        } else {
            (format!("model.{name}"), tensor.clone())
        };
        out.insert(hf_name, tensor);
    }
    if config.share_embeddings
        && let Some(shared) = out.get("model.shared.weight").cloned()
    {
        // `transformers` ties these on load; writing them keeps older readers (and
        // CTranslate2's converter) happy.
        out.insert("model.encoder.embed_tokens.weight".into(), shared.clone());
        out.insert("model.decoder.embed_tokens.weight".into(), shared);
    }
    out
}

/// Serializes tensors as safetensors bytes.
pub fn to_safetensors(tensors: &TensorMap) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let raw = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), t.shape.clone(), raw)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, raw)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw)
                .map(|view| (name.clone(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("cannot write safetensors: {e}")))?;
    safetensors::tensor::serialize(views, None)
        .map_err(|e| Error::Config(format!("cannot write safetensors: {e}")))
}

/// Reads a safetensors file written by Rosetta into a tensor map.
pub fn read_rosetta(path: &Path) -> Result<TensorMap> {
    read_tensors(path)
}
