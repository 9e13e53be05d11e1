//! Tokenization: text ↔ token pieces. Ids are assigned afterwards by [`crate::vocab::Vocab`].
//!
//! Every kind shares one trait so the rest of the pipeline never asks which is in use:
//! `word` (whitespace + punctuation, reversible with joiner marks), `space` (whitespace only, for
//! pre-tokenized text), `char`, the subword models `bpe` and `unigram`, trained with the HF
//! `tokenizers` crate and saved as `tokenizer.json`, and imported SentencePiece models.

mod char;
mod sentencepiece;
mod space;
mod subword;
mod word;

pub use self::char::{CharTokenizer, SPACE_PIECE};
pub use sentencepiece::SentencePieceTokenizer;
pub use space::SpaceTokenizer;
pub use subword::{SubwordModel, SubwordTokenizer};
pub use word::{JOINER, WordTokenizer};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Splits normalized text into pieces and joins pieces back into text.
pub trait Tokenize: Send + Sync + std::fmt::Debug {
    /// Splits one normalized line into pieces. An empty line gives no pieces.
    fn tokenize(&self, text: &str) -> Result<Vec<String>>;
    /// Joins pieces back into text; for subword models this restores normalized input exactly.
    fn detokenize(&self, pieces: &[String]) -> Result<String>;
}

/// Which tokenizer to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// Words and punctuation marks; pieces glued to the previous one carry a joiner mark.
    Word,
    /// Whitespace-separated pieces as they are (pre-tokenized text, symbolic tasks).
    Space,
    /// Unicode characters (spaces become `▁`).
    Char,
    /// Byte-pair encoding (Sennrich et al. 2016), byte-level so no character is ever unknown.
    #[default]
    Bpe,
    /// Unigram language model (Kudo 2018), byte-level likewise.
    Unigram,
    /// A SentencePiece unigram model imported with a pretrained model (`src.spm`/`tgt.spm`); not
    /// trained by Rosetta.
    #[serde(rename = "sentencepiece")]
    SentencePiece,
}

impl TokenizerKind {
    /// Whether this kind is trained by the HF `tokenizers` crate and saved as `tokenizer.json`.
    pub fn is_subword(self) -> bool {
        matches!(self, TokenizerKind::Bpe | TokenizerKind::Unigram)
    }

    /// The lowercase name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Word => "word",
            TokenizerKind::Space => "space",
            TokenizerKind::Char => "char",
            TokenizerKind::Bpe => "bpe",
            TokenizerKind::Unigram => "unigram",
            TokenizerKind::SentencePiece => "sentencepiece",
        }
    }
}

impl std::str::FromStr for TokenizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "word" => Ok(TokenizerKind::Word),
            "space" => Ok(TokenizerKind::Space),
            "char" => Ok(TokenizerKind::Char),
            "bpe" => Ok(TokenizerKind::Bpe),
            "unigram" => Ok(TokenizerKind::Unigram),
            "sentencepiece" => Ok(TokenizerKind::SentencePiece),
            other => Err(Error::Config(format!(
                "unknown tokenizer \"{other}\"; choose word, space, char, bpe or unigram"
            ))),
        }
    }
}

impl std::fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Any of the tokenizers, chosen at run time from a config.
#[derive(Debug, Clone)]
pub enum AnyTokenizer {
    /// See [`WordTokenizer`].
    Word(WordTokenizer),
    /// See [`SpaceTokenizer`].
    Space(SpaceTokenizer),
    /// See [`CharTokenizer`].
    Char(CharTokenizer),
    /// See [`SubwordTokenizer`].
    Subword(Box<SubwordTokenizer>),
    /// See [`SentencePieceTokenizer`].
    SentencePiece(Box<SentencePieceTokenizer>),
}

impl AnyTokenizer {
    /// Whether `other` splits every text the same way.
    pub fn same_as(&self, other: &AnyTokenizer) -> bool {
        match (self, other) {
            (AnyTokenizer::Word(a), AnyTokenizer::Word(b)) => a == b,
            (AnyTokenizer::Space(_), AnyTokenizer::Space(_))
            | (AnyTokenizer::Char(_), AnyTokenizer::Char(_)) => true,
            (AnyTokenizer::Subword(a), AnyTokenizer::Subword(b)) => a.same_model(b),
            (AnyTokenizer::SentencePiece(a), AnyTokenizer::SentencePiece(b)) => a.same_model(b),
            _ => false,
        }
    }
}

impl Tokenize for AnyTokenizer {
    fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        match self {
            AnyTokenizer::Word(t) => t.tokenize(text),
            AnyTokenizer::Space(t) => t.tokenize(text),
            AnyTokenizer::Char(t) => t.tokenize(text),
            AnyTokenizer::Subword(t) => t.tokenize(text),
            AnyTokenizer::SentencePiece(t) => t.tokenize(text),
        }
    }

    fn detokenize(&self, pieces: &[String]) -> Result<String> {
        match self {
            AnyTokenizer::Word(t) => t.detokenize(pieces),
            AnyTokenizer::Space(t) => t.detokenize(pieces),
            AnyTokenizer::Char(t) => t.detokenize(pieces),
            AnyTokenizer::Subword(t) => t.detokenize(pieces),
            AnyTokenizer::SentencePiece(t) => t.detokenize(pieces),
        }
    }
}
