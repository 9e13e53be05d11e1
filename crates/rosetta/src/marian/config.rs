//! Hugging Face `MarianConfig` (`config.json`) ↔ Rosetta's [`TransformerConfig`].
//!
//! Marian's Transformer (Junczys-Dowmunt et al. 2018) as `transformers` runs it is one configuration
//! of Rosetta's: post-norm, sinusoidal positions with sin in the first half, embeddings scaled by
//! √d_model (`scale_embedding`), swish feed-forward activations (relu in the "big" models),
//! one embedding table for source and target tied to the output projection, and a
//! `final_logits_bias`. Keys whose values would change the function computed are checked one by
//! one; a value Rosetta cannot reproduce is refused with the key and the value.

use crate::error::{Error, Result};
use crate::model::transformer::TransformerConfig;
use crate::model::transformer::config::{Activation, NormPosition, PositionKind};
use serde_json::{Map, Value};
use std::path::Path;

/// What `config.json` says about the vocabulary and special tokens, beside the architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct MarianTokens {
    /// Source (and, when shared, target) vocabulary size.
    pub vocab_size: usize,
    /// Target vocabulary size.
    pub decoder_vocab_size: usize,
    /// Padding id (also the decoder's start token in Marian).
    pub pad_token_id: u32,
    /// End of sentence.
    pub eos_token_id: u32,
    /// The decoder's first input.
    pub decoder_start_token_id: u32,
}

/// Keys that do not change the function computed by the model (generation defaults, bookkeeping,
/// training-only settings) and are therefore ignored on import.
const IGNORED: &[&str] = &[
    "_name_or_path",
    "_num_labels",
    "architectures",
    "bad_words_ids",
    "bos_token_id",
    "classif_dropout",
    "classifier_dropout",
    "decoder_layerdrop",
    "dtype",
    "encoder_layerdrop",
    "forced_eos_token_id",
    "gradient_checkpointing",
    "id2label",
    "init_std",
    "is_decoder",
    "is_encoder_decoder",
    "label2id",
    "max_length",
    "num_beams",
    "num_hidden_layers",
    "output_past",
    "torch_dtype",
    "transformers_version",
    "use_cache",
    "extra_pos_embeddings",
];

/// Keys that Marian fixes: a value other than this one is a different architecture.
const FIXED: &[(&str, Value)] = &[
    ("normalize_before", Value::Bool(false)),
    ("normalize_embedding", Value::Bool(false)),
    ("add_final_layer_norm", Value::Bool(false)),
    ("add_bias_logits", Value::Bool(false)),
    ("static_position_embeddings", Value::Bool(true)),
    ("is_encoder_decoder", Value::Bool(true)),
];

fn fail(path: &Path, message: String) -> Error {
    Error::ConfigFile {
        path: path.to_path_buf(),
        message,
    }
}

/// Reads `config.json`, returning the Transformer architecture, the token settings, and notices
/// about keys Rosetta does not know (printed by the caller, never dropped silently).
pub fn read_config(path: &Path) -> Result<(TransformerConfig, MarianTokens, Vec<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| fail(path, format!("not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(fail(path, "expected a JSON object".into()));
    };
    from_map(&map).map_err(|m| fail(path, m))
}

fn from_map(
    map: &Map<String, Value>,
) -> std::result::Result<(TransformerConfig, MarianTokens, Vec<String>), String> {
    let model_type = map.get("model_type").and_then(Value::as_str).unwrap_or("");
    if model_type != "marian" {
        return Err(format!(
            "model_type = {:?}: only Hugging Face Marian models (model_type \"marian\", OPUS-MT) \
             can be imported",
            map.get("model_type").unwrap_or(&Value::Null)
        ));
    }
    for (key, expected) in FIXED {
        if let Some(v) = map.get(*key)
            && v != expected
        {
            return Err(format!(
                "{key} = {v}: Rosetta's Marian import supports only {key} = {expected}"
            ));
        }
    }
    let uint = |key: &str| -> std::result::Result<usize, String> {
        map.get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| format!("{key} is missing or not a non-negative integer"))
    };
    let uint_or = |key: &str, default: usize| -> std::result::Result<usize, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(_) => uint(key),
        }
    };
    let float_or = |key: &str, default: f64| -> std::result::Result<f64, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("{key} = {v} is not a number")),
        }
    };
    let bool_or = |key: &str, default: bool| -> std::result::Result<bool, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("{key} = {v} is not true or false")),
        }
    };
    let same = |a: &str, b: &str| -> std::result::Result<usize, String> {
        let (x, y) = (uint(a)?, uint(b)?);
        if x != y {
            return Err(format!(
                "{a} = {x} but {b} = {y}: Rosetta's Transformer uses one value for encoder and \
                 decoder"
            ));
        }
        Ok(x)
    };
    let activation = match map.get("activation_function").and_then(Value::as_str) {
        Some("swish" | "silu") => Activation::Swish,
        Some("relu") => Activation::Relu,
        Some("gelu") => Activation::Gelu,
        _ => {
            return Err(format!(
                "activation_function = {}: supported are \"swish\", \"silu\", \"relu\" and \"gelu\"",
                map.get("activation_function").unwrap_or(&Value::Null)
            ));
        }
    };
    let vocab_size = uint("vocab_size")?;
    let decoder_vocab_size = uint_or("decoder_vocab_size", vocab_size)?;
    let share = bool_or("share_encoder_decoder_embeddings", true)?;
    if share && decoder_vocab_size != vocab_size {
        return Err(format!(
            "share_encoder_decoder_embeddings = true but vocab_size = {vocab_size} and \
             decoder_vocab_size = {decoder_vocab_size} differ"
        ));
    }
    let config = TransformerConfig {
        encoder_layers: uint("encoder_layers")?,
        decoder_layers: uint("decoder_layers")?,
        d_model: uint("d_model")?,
        heads: same("encoder_attention_heads", "decoder_attention_heads")?,
        ffn_size: same("encoder_ffn_dim", "decoder_ffn_dim")?,
        activation,
        norm: NormPosition::Post,
        positions: PositionKind::SinusoidalHalves,
        max_positions: uint_or("max_position_embeddings", 512)?,
        scale_embeddings: bool_or("scale_embedding", false)?,
        share_embeddings: share,
        tie_output: bool_or("tie_word_embeddings", true)?,
        output_bias: true,
        dropout: float_or("dropout", 0.1)?,
        attention_dropout: float_or("attention_dropout", 0.0)?,
        activation_dropout: float_or("activation_dropout", 0.0)?,
        // `MarianEncoderLayer` uses `nn.LayerNorm`'s default ε.
        layer_norm_eps: 1e-5,
        alignment_layer: -1,
    };
    config.validate().map_err(|e| e.to_string())?;
    let pad = uint("pad_token_id")?;
    let tokens = MarianTokens {
        vocab_size,
        decoder_vocab_size,
        pad_token_id: pad as u32,
        eos_token_id: uint("eos_token_id")? as u32,
        decoder_start_token_id: uint_or("decoder_start_token_id", pad)? as u32,
    };
    let known: Vec<&str> = [
        "model_type",
        "activation_function",
        "vocab_size",
        "decoder_vocab_size",
        "share_encoder_decoder_embeddings",
        "encoder_layers",
        "decoder_layers",
        "d_model",
        "encoder_attention_heads",
        "decoder_attention_heads",
        "encoder_ffn_dim",
        "decoder_ffn_dim",
        "max_position_embeddings",
        "scale_embedding",
        "tie_word_embeddings",
        "dropout",
        "attention_dropout",
        "activation_dropout",
        "pad_token_id",
        "eos_token_id",
        "decoder_start_token_id",
    ]
    .into_iter()
    .chain(IGNORED.iter().copied())
    .chain(FIXED.iter().map(|(k, _)| *k))
    .collect();
    let notices = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("config.json key {k:?} is not used by Rosetta's Marian import"))
        .collect();
    Ok((config, tokens, notices))
}

/// The `config.json` that `transformers` needs for a Rosetta Transformer of Marian's shape, or a
/// message naming the setting Marian cannot express.
pub fn to_hf_config(
    config: &TransformerConfig,
    tokens: &MarianTokens,
) -> std::result::Result<Value, String> {
    let need = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
    need(
        config.norm == NormPosition::Post,
        "model.norm = \"pre\": Marian is post-norm",
    )?;
    need(
        config.positions == PositionKind::SinusoidalHalves,
        "model.positions must be \"sinusoidal-halves\" (Marian's layout)",
    )?;
    need(
        config.output_bias,
        "model.output_bias = false: Marian always has final_logits_bias",
    )?;
    need(
        config.layer_norm_eps == 1e-5,
        "model.layer_norm_eps must be 1e-5 (PyTorch's LayerNorm default, which Marian uses)",
    )?;
    let activation = match config.activation {
        Activation::Swish => "swish",
        Activation::Relu => "relu",
        Activation::Gelu => "gelu",
    };
    Ok(serde_json::json!({
        "model_type": "marian",
        "architectures": ["MarianMTModel"],
        "activation_function": activation,
        "vocab_size": tokens.vocab_size,
        "decoder_vocab_size": tokens.decoder_vocab_size,
        "share_encoder_decoder_embeddings": config.share_embeddings,
        "tie_word_embeddings": config.tie_output,
        "encoder_layers": config.encoder_layers,
        "decoder_layers": config.decoder_layers,
        "d_model": config.d_model,
        "encoder_attention_heads": config.heads,
        "decoder_attention_heads": config.heads,
        "encoder_ffn_dim": config.ffn_size,
        "decoder_ffn_dim": config.ffn_size,
        "max_position_embeddings": config.max_positions,
        "scale_embedding": config.scale_embeddings,
        "dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout,
        "pad_token_id": tokens.pad_token_id,
        "eos_token_id": tokens.eos_token_id,
        "decoder_start_token_id": tokens.decoder_start_token_id,
        "forced_eos_token_id": tokens.eos_token_id,
        "is_encoder_decoder": true,
    }))
}
