//! Subword tokenization (BPE and unigram) trained and run by the HF `tokenizers` crate.
//!
//! Both models are byte-level (GPT-2 style pre-tokenization): every byte has a piece, so no input is
//! ever unknown, and decoding restores normalized input exactly. The trained model is saved in the
//! standard `tokenizer.json` format, which other tools can open.

use super::Tokenize;
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Mutex;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::unigram::{Unigram, UnigramTrainerBuilder};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
    TokenizerBuilder, TokenizerImpl,
};

/// Which subword model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubwordModel {
    /// Byte-pair encoding.
    Bpe,
    /// Unigram language model.
    Unigram,
}

type HfImpl = TokenizerImpl<
    ModelWrapper,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// A trained byte-level BPE or unigram tokenizer.
#[derive(Debug, Clone)]
pub struct SubwordTokenizer {
    inner: Tokenizer,
}

fn hf_error(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl SubwordTokenizer {
    /// Trains a model on a stream of normalized lines.
    ///
    /// The stream yields `Result`s: the first error stops training and is returned, so an invalid line
    /// in a corpus is reported with its file and line, not swallowed by the trainer.
    pub fn train<I>(
        model: SubwordModel,
        vocab_size: usize,
        min_frequency: u64,
        lines: I,
    ) -> Result<Self>
    where
        I: Iterator<Item = Result<String>> + Send,
    {
        if vocab_size < 300 {
            return Err(Error::Config(format!(
                "subword vocabulary size {vocab_size} is too small: byte-level models need at least \
                 300 pieces (256 bytes plus merges)"
            )));
        }
        let alphabet = ByteLevel::alphabet();
        let mut trainer: TrainerWrapper = match model {
            SubwordModel::Bpe => BpeTrainerBuilder::new()
                .show_progress(false)
                .vocab_size(vocab_size)
                .min_frequency(min_frequency)
                .initial_alphabet(alphabet.into_iter().collect())
                .build()
                .into(),
            SubwordModel::Unigram => UnigramTrainerBuilder::default()
                .show_progress(false)
                .vocab_size(u32::try_from(vocab_size).map_err(|_| {
                    Error::Config(format!("vocabulary size {vocab_size} is too large"))
                })?)
                .initial_alphabet(alphabet)
                .build()
                .map_err(hf_error)?
                .into(),
        };
        let model_wrapper: ModelWrapper = match model {
            SubwordModel::Bpe => BPE::default().into(),
            SubwordModel::Unigram => Unigram::default().into(),
        };
        let mut hf: HfImpl = TokenizerBuilder::new()
            .with_model(model_wrapper)
            .with_normalizer(None)
            .with_pre_tokenizer(Some(ByteLevel::new(true, false, true).into()))
            .with_post_processor(None)
            .with_decoder(Some(ByteLevel::default().into()))
            .build()
            .map_err(hf_error)?;

        let first_error = Mutex::new(None);
        let stream = lines.map_while(|line| match line {
            Ok(line) => Some(line),
            Err(e) => {
                if let Ok(mut slot) = first_error.lock() {
                    slot.get_or_insert(e);
                }
                None
            }
        });
        let trained = hf.train(&mut trainer, stream).map(|_| ());
        if let Some(e) = first_error.into_inner().ok().flatten() {
            return Err(e);
        }
        trained.map_err(hf_error)?;
        Ok(SubwordTokenizer {
            inner: Tokenizer::from(hf),
        })
    }

    /// Loads a `tokenizer.json` written by [`SubwordTokenizer::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer file not found"),
            ));
        }
        let inner = Tokenizer::from_file(path).map_err(|e| Error::format(path, e.to_string()))?;
        Ok(SubwordTokenizer { inner })
    }

    /// Whether `other` is the same trained model (same serialized `tokenizer.json`), i.e. splits
    /// every text the same way.
    pub fn same_model(&self, other: &SubwordTokenizer) -> bool {
        match (self.inner.to_string(false), other.inner.to_string(false)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }

    /// Saves the model as a standard `tokenizer.json`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
        crate::atomic::write_atomic(path, json.as_bytes())
    }

    /// All pieces of the model, ordered by the model's own id.
    pub fn pieces(&self) -> Vec<String> {
        let mut vocab: Vec<(String, u32)> = self.inner.get_vocab(false).into_iter().collect();
        vocab.sort_by_key(|&(_, id)| id);
        vocab.into_iter().map(|(piece, _)| piece).collect()
    }
}

impl Tokenize for SubwordTokenizer {
    fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let encoding = self.inner.encode(text, false).map_err(hf_error)?;
        Ok(encoding.get_tokens().to_vec())
    }

    fn detokenize(&self, pieces: &[String]) -> Result<String> {
        let Some(decoder) = self.inner.get_decoder() else {
            return Ok(pieces.concat());
        };
        use tokenizers::Decoder;
        let text = decoder.decode(pieces.to_vec()).map_err(hf_error)?;
        // The pre-tokenizer adds a space in front of the first word so that it is split like every
        // other word; normalized input never starts with a space, so drop it.
        Ok(text.strip_prefix(' ').map(str::to_owned).unwrap_or(text))
    }
}
