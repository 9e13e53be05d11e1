//! `rosetta import marian HF_DIR -o MODEL_DIR`: converts a Hugging Face Marian directory once into
//! an ordinary Rosetta model directory, which every command then uses unchanged (`translate`,
//! `evaluate`, `serve`, fine-tuning with `init_from`).
//!
//! Converting once (rather than reading Hugging Face directories everywhere) keeps one loading path
//! in Rosetta and makes the import's checks run once, with every problem named before anything is
//! written: `config.json` (architecture), `vocab.json` (+ `target_vocab.json` when the vocabularies
//! are separate), `source.spm`/`target.spm`, and the weights (`model.safetensors` or
//! `pytorch_model.bin`). Token ids stay those of `MarianTokenizer`: `</s>` 0, `<unk>` 1, `<pad>`
//! last, and decoding starts from `<pad>`.

use super::config::read_config;
use super::weights::{hf_to_rosetta, read_tensors, to_safetensors, weights_file};
use crate::config::{Config, DecodeConfig};
use crate::error::{Error, Result};
use crate::model::architecture::ModelConfig;
use crate::model::transformer::Transformer;
use crate::search::BeamRule;
use crate::train::checkpoint::{WEIGHTS, write_atomic};
use crate::train::trainer::CONFIG_FILE;
use burn::backend::Flex;
use burn::module::Module;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use rosetta_text::normalize::NormalizeConfig;
use rosetta_text::pipeline::{TextConfig, TextPipeline};
use rosetta_text::tokenize::{AnyTokenizer, SentencePieceTokenizer, TokenizerKind};
use rosetta_text::vocab::Vocab;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What an import read and wrote.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The weights file that was read.
    pub weights: PathBuf,
    /// Parameters of the imported model.
    pub parameters: usize,
    /// Source and target vocabulary sizes.
    pub vocab: (usize, usize),
    /// Things worth telling the user (keys of `config.json` Rosetta does not use).
    pub notices: Vec<String>,
}

/// Reads a `vocab.json` (piece → id) into pieces ordered by id.
fn read_vocab_json(path: &Path) -> Result<Vocab> {
    let fail = |m: String| Error::ConfigFile {
        path: path.to_path_buf(),
        message: m,
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let map: HashMap<String, u64> =
        serde_json::from_str(&text).map_err(|e| fail(format!("expected {{piece: id}}: {e}")))?;
    let mut pieces: Vec<Option<String>> = vec![None; map.len()];
    for (piece, id) in map {
        let slot = pieces.get_mut(id as usize).ok_or_else(|| {
            fail(format!(
                "id {id} of {piece:?} is out of range: ids must be 0..{}",
                pieces_len_hint(&text)
            ))
        })?;
        if slot.is_some() {
            return Err(fail(format!("id {id} is given to two pieces")));
        }
        *slot = Some(piece);
    }
    let pieces: Vec<String> = pieces.into_iter().map(Option::unwrap_or_default).collect();
    Vocab::from_all_pieces(pieces).map_err(fail)
}

fn pieces_len_hint(text: &str) -> usize {
    serde_json::from_str::<HashMap<String, serde_json::Value>>(text).map_or(0, |m| m.len())
}

/// The search `generate()` runs with no arguments: `num_beams` and `length_penalty` from
/// `generation_config.json` when the directory has one (`transformers` then reads nothing else),
/// else from `config.json`; unset, `transformers`' defaults 1 and 1.0.
fn generation_defaults(hf_dir: &Path) -> Result<(usize, f64)> {
    let generation = hf_dir.join("generation_config.json");
    let path = if generation.exists() {
        generation
    } else {
        hf_dir.join("config.json")
    };
    let fail = |message: String| Error::ConfigFile {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    let beam = match json.get("num_beams") {
        None | Some(serde_json::Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|&n| (1..=1024).contains(&n))
            .ok_or_else(|| fail(format!("num_beams = {v} is not a beam size (1 to 1024)")))?
            as usize,
    };
    let length_penalty = match json.get("length_penalty") {
        None | Some(serde_json::Value::Null) => 1.0,
        Some(v) => v
            .as_f64()
            .filter(|a| a.is_finite())
            .ok_or_else(|| fail(format!("length_penalty = {v} is not a finite number")))?,
    };
    Ok((beam, length_penalty))
}

/// Converts the Hugging Face Marian directory `hf_dir` into a Rosetta model directory `out_dir`
/// (created; it must not hold a model already).
pub fn import_marian(hf_dir: &Path, out_dir: &Path) -> Result<ImportReport> {
    if out_dir.join(CONFIG_FILE).exists() {
        return Err(Error::io(
            out_dir,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already holds a model; choose a new directory",
            ),
        ));
    }
    let config_path = hf_dir.join("config.json");
    let (transformer, tokens, notices) = read_config(&config_path)?;

    let vocab_path = hf_dir.join("vocab.json");
    let src_vocab = read_vocab_json(&vocab_path)?;
    let target_vocab_path = hf_dir.join("target_vocab.json");
    let tgt_vocab = if target_vocab_path.exists() {
        read_vocab_json(&target_vocab_path)?
    } else {
        src_vocab.clone()
    };
    let config_error = |m: String| Error::ConfigFile {
        path: config_path.clone(),
        message: m,
    };
    if src_vocab.len() != tokens.vocab_size || tgt_vocab.len() != tokens.decoder_vocab_size {
        return Err(config_error(format!(
            "vocab_size = {} and decoder_vocab_size = {} but the vocabularies hold {} and {} pieces",
            tokens.vocab_size,
            tokens.decoder_vocab_size,
            src_vocab.len(),
            tgt_vocab.len()
        )));
    }
    let specials = tgt_vocab.specials();
    if tokens.pad_token_id != specials.pad
        || tokens.eos_token_id != specials.eos
        || tokens.decoder_start_token_id != specials.bos
    {
        return Err(config_error(format!(
            "pad_token_id = {}, eos_token_id = {}, decoder_start_token_id = {} do not match the \
             vocabulary's <pad> = {}, </s> = {} and start token {}",
            tokens.pad_token_id,
            tokens.eos_token_id,
            tokens.decoder_start_token_id,
            specials.pad,
            specials.eos,
            specials.bos
        )));
    }

    let src_spm = SentencePieceTokenizer::load(hf_dir.join("source.spm"))?;
    let tgt_spm = SentencePieceTokenizer::load(hf_dir.join("target.spm"))?;
    let text = TextConfig {
        tokenizer: TokenizerKind::SentencePiece,
        joiners: true, // the default; only the word tokenizer reads it
        vocab_size: tgt_vocab.len(),
        // Two SentencePiece models: the sides are tokenized separately even when the vocabulary
        // (and the embedding table) is shared.
        joint: false,
        min_freq: 1,
        max_vocab: 0,
        max_len: transformer.max_positions.saturating_sub(1).max(1),
        // The SentencePiece normalizer (NFKC and whitespace rules) is the model's own.
        normalize: NormalizeConfig {
            nfc: false,
            lowercase: false,
        },
    };
    let pipeline = TextPipeline::from_parts(
        text.clone(),
        (
            AnyTokenizer::SentencePiece(Box::new(src_spm)),
            AnyTokenizer::SentencePiece(Box::new(tgt_spm)),
        ),
        (src_vocab, tgt_vocab),
    )?;

    let weights_path = weights_file(hf_dir)?;
    let hf = read_tensors(&weights_path)?;
    let bytes = to_safetensors(&hf_to_rosetta(&hf, &transformer))?;
    let device = Default::default();
    let mut model = Transformer::<Flex>::new(
        &transformer,
        pipeline.src_vocab().len(),
        pipeline.tgt_vocab().len(),
        &device,
    )?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes.clone()));
    let applied = model.load_from(&mut store).map_err(|e| Error::Checkpoint {
        path: weights_path.clone(),
        message: format!("these weights do not fit config.json: {e}"),
    })?;
    if !applied.missing.is_empty() || !applied.unused.is_empty() {
        return Err(Error::Checkpoint {
            path: weights_path.clone(),
            message: format!(
                "these weights do not fit config.json: missing {:?}, unexpected {:?}",
                applied.missing, applied.unused
            ),
        });
    }
    let (beam, length_penalty) = generation_defaults(hf_dir)?;
    let config = Config {
        text,
        model: ModelConfig::Transformer(transformer),
        decode: DecodeConfig {
            beam_rule: BeamRule::HuggingFace,
            beam: Some(beam),
            length_penalty: Some(length_penalty),
            ..DecodeConfig::default()
        },
        ..Config::default()
    };
    config.validate()?;

    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    pipeline.save(out_dir)?;
    write_atomic(&out_dir.join(WEIGHTS), &bytes)?;
    // config.toml last: a directory without it is not a model, so an interrupted import is never
    // mistaken for a finished one.
    write_atomic(&out_dir.join(CONFIG_FILE), config.to_toml()?.as_bytes())?;
    Ok(ImportReport {
        weights: weights_path,
        parameters: model.num_params(),
        vocab: (pipeline.src_vocab().len(), pipeline.tgt_vocab().len()),
        notices,
    })
}
