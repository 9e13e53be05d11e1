//! `rosetta export marian MODEL_DIR -o HF_DIR`: writes a Rosetta Transformer of Marian's shape as a
//! Hugging Face Marian directory, which `transformers` loads (`MarianMTModel`, `MarianTokenizer`)
//! and CTranslate2's `ct2-transformers-converter` converts. A model imported from OPUS-MT and
//! fine-tuned in Rosetta thus goes back to the Python and C++ ecosystems unchanged.
//!
//! Marian's tokenizer is SentencePiece, so the model must use SentencePiece tokenizers (an imported
//! model, or one fine-tuned from it); its shape must be Marian's (post-norm, sinusoidal positions
//! in halves, an output bias). Anything else is refused with the setting that prevents it.

use super::config::{MarianTokens, to_hf_config};
use super::weights::{read_tensors, rosetta_to_hf, to_safetensors};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::architecture::ModelConfig;
use crate::model::lora::FinetuneMethod;
use crate::train::checkpoint::{WEIGHTS, write_atomic};
use crate::train::trainer::CONFIG_FILE;
use rosetta_text::pipeline::TextPipeline;
use rosetta_text::tokenize::AnyTokenizer;
use rosetta_text::vocab::Vocab;
use std::path::Path;

fn vocab_json(vocab: &Vocab) -> Result<Vec<u8>> {
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .pieces()
        .iter()
        .enumerate()
        .map(|(id, piece)| (piece.clone(), serde_json::Value::from(id)))
        .collect();
    serde_json::to_vec_pretty(&map).map_err(|e| Error::Config(format!("cannot write JSON: {e}")))
}

fn json_bytes(value: &serde_json::Value) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Config(format!("cannot write JSON: {e}")))
}

/// Writes the model directory `model_dir` as a Hugging Face Marian directory `out_dir`.
pub fn export_marian(model_dir: &Path, out_dir: &Path) -> Result<()> {
    let config = Config::load(&model_dir.join(CONFIG_FILE))?;
    let ModelConfig::Transformer(transformer) = &config.model else {
        return Err(Error::Config(format!(
            "{}: model.arch = \"{}\"; only Transformers can be exported as Marian models",
            model_dir.display(),
            config.model.arch()
        )));
    };
    match config.finetune.method {
        FinetuneMethod::None => {}
        FinetuneMethod::Lora => {
            return Err(Error::Config(format!(
                "{} holds a LoRA adapter; fold it into the weights first with `rosetta merge`, then \
                 export the merged directory",
                model_dir.display()
            )));
        }
        FinetuneMethod::Adapter => {
            return Err(Error::Config(format!(
                "{}: bottleneck adapters are layers Marian does not have, so the model cannot be \
                 exported as a Marian model",
                model_dir.display()
            )));
        }
    }
    if out_dir.join("config.json").exists() {
        return Err(Error::io(
            out_dir,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already holds a model (config.json); choose a new directory",
            ),
        ));
    }
    let pipeline = TextPipeline::load(model_dir)?;
    let (AnyTokenizer::SentencePiece(src_spm), AnyTokenizer::SentencePiece(tgt_spm)) =
        (pipeline.src_tokenizer(), pipeline.tgt_tokenizer())
    else {
        return Err(Error::Config(format!(
            "{}: text.tokenizer = \"{}\"; Marian's tokenizer is SentencePiece, so only imported \
             OPUS-MT models and models fine-tuned from them can be exported",
            model_dir.display(),
            config.text.tokenizer
        )));
    };
    let specials = pipeline.tgt_vocab().specials();
    let tokens = MarianTokens {
        vocab_size: pipeline.src_vocab().len(),
        decoder_vocab_size: pipeline.tgt_vocab().len(),
        pad_token_id: specials.pad,
        eos_token_id: specials.eos,
        decoder_start_token_id: specials.bos,
    };
    let hf_config = to_hf_config(transformer, &tokens)
        .map_err(|m| Error::Config(format!("{}: {m}", model_dir.display())))?;
    let separate = pipeline.src_vocab() != pipeline.tgt_vocab();
    let weights = rosetta_to_hf(&read_tensors(&model_dir.join(WEIGHTS))?, transformer);

    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    write_atomic(
        &out_dir.join("model.safetensors"),
        &to_safetensors(&weights)?,
    )?;
    write_atomic(&out_dir.join("source.spm"), src_spm.bytes())?;
    write_atomic(&out_dir.join("target.spm"), tgt_spm.bytes())?;
    write_atomic(
        &out_dir.join("vocab.json"),
        &vocab_json(pipeline.src_vocab())?,
    )?;
    if separate {
        write_atomic(
            &out_dir.join("target_vocab.json"),
            &vocab_json(pipeline.tgt_vocab())?,
        )?;
    }
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": "MarianTokenizer",
        "separate_vocabs": separate,
        "model_max_length": transformer.max_positions,
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
    });
    write_atomic(
        &out_dir.join("tokenizer_config.json"),
        &json_bytes(&tokenizer_config)?,
    )?;
    // The model's own search defaults travel with it (an imported model's come back unchanged);
    // a model trained in Rosetta gets OPUS-MT's four beams.
    let mut generation = serde_json::json!({
        "decoder_start_token_id": specials.bos,
        "eos_token_id": specials.eos,
        "pad_token_id": specials.pad,
        "forced_eos_token_id": specials.eos,
        "bad_words_ids": [[specials.pad]],
        "max_length": transformer.max_positions,
        "num_beams": config.decode.beam.unwrap_or(4),
    });
    // Under the GNMT rule α means something else than transformers' length exponent.
    if let (Some(alpha), crate::search::BeamRule::HuggingFace) =
        (config.decode.length_penalty, config.decode.beam_rule)
    {
        generation["length_penalty"] = serde_json::json!(alpha);
    }
    write_atomic(
        &out_dir.join("generation_config.json"),
        &json_bytes(&generation)?,
    )?;
    // config.json last: without it the directory is not a loadable model.
    write_atomic(&out_dir.join("config.json"), &json_bytes(&hf_config)?)?;
    Ok(())
}
