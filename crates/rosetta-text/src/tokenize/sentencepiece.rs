//! SentencePiece unigram models (Kudo 2018; Kudo & Richardson 2018), read from the `.spm` files that
//! OPUS-MT and other Marian models ship, and run in Rust with the HF `tokenizers` crate.
//!
//! A `.spm` file is a protobuf `ModelProto`: the pieces with their log-probability scores, and the
//! normalizer the model was trained with (a precompiled character map, by default Unicode NFKC plus
//! SentencePiece's own rules, and whitespace handling). Rosetta rebuilds the same pipeline from it:
//! 1. the precompiled map (Darts double-array, interpreted by `tokenizers`' `Precompiled`);
//! 2. `remove_extra_whitespaces`: trim both ends, collapse inner runs of spaces to one;
//! 3. `add_dummy_prefix`: a `▁` in front of the text, and every space becomes `▁`
//!    (`escape_whitespaces`); words are segmented separately (SentencePiece's default
//!    `split_by_whitespace`, under which no piece spans a word boundary);
//! 4. Viterbi segmentation over the pieces' scores, consecutive unknown characters fused into one
//!    piece (SentencePiece's behaviour), whose text is the original characters.
//!
//! Control pieces (`<s>`, `</s>`) are left out of the segmentation, as SentencePiece never matches
//! them in text. Only the pieces matter to Rosetta: ids come from the model's vocabulary
//! (`vocab.json` for OPUS-MT), as in `transformers`' `MarianTokenizer`.
//!
//! The file is kept verbatim, so a model directory can be exported again unchanged.

use super::Tokenize;
use crate::error::{Error, Result};
use prost::Message;
use std::path::Path;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{Precompiled, Replace, Sequence, Strip};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{NormalizerWrapper, Tokenizer};

/// The part of SentencePiece's `sentencepiece_model.proto` that segmentation needs; field numbers
/// are the proto's. Unknown fields are skipped by the decoder.
mod proto {
    /// `ModelProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(message, repeated, tag = "1")]
        pub pieces: Vec<SentencePiece>,
        #[prost(message, optional, tag = "2")]
        pub trainer_spec: Option<TrainerSpec>,
        #[prost(message, optional, tag = "3")]
        pub normalizer_spec: Option<NormalizerSpec>,
    }

    /// `ModelProto.SentencePiece`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SentencePiece {
        #[prost(string, optional, tag = "1")]
        pub piece: Option<String>,
        #[prost(float, optional, tag = "2")]
        pub score: Option<f32>,
        /// NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6.
        #[prost(int32, optional, tag = "3")]
        pub r#type: Option<i32>,
    }

    /// `TrainerSpec` (the fields that change segmentation).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrainerSpec {
        /// UNIGRAM = 1, BPE = 2, WORD = 3, CHAR = 4.
        #[prost(int32, optional, tag = "3")]
        pub model_type: Option<i32>,
        #[prost(bool, optional, tag = "35")]
        pub byte_fallback: Option<bool>,
        #[prost(bool, optional, tag = "36")]
        pub split_by_whitespace: Option<bool>,
        #[prost(bool, optional, tag = "37")]
        pub treat_whitespace_as_suffix: Option<bool>,
    }

    /// `NormalizerSpec`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NormalizerSpec {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(bytes = "vec", optional, tag = "2")]
        pub precompiled_charsmap: Option<Vec<u8>>,
        #[prost(bool, optional, tag = "3")]
        pub add_dummy_prefix: Option<bool>,
        #[prost(bool, optional, tag = "4")]
        pub remove_extra_whitespaces: Option<bool>,
        #[prost(bool, optional, tag = "5")]
        pub escape_whitespaces: Option<bool>,
        #[prost(string, optional, tag = "6")]
        pub normalization_rule_tsv: Option<String>,
    }
}

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// A SentencePiece unigram model loaded from a `.spm` file.
#[derive(Debug, Clone)]
pub struct SentencePieceTokenizer {
    inner: Tokenizer,
    /// The `.spm` file as read, written back unchanged by [`SentencePieceTokenizer::save`].
    bytes: Vec<u8>,
}

impl SentencePieceTokenizer {
    /// Reads a `.spm` file; anything Rosetta cannot reproduce exactly is refused, naming the setting.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(bytes).map_err(|m| Error::format(path, m))
    }

    /// Parses the bytes of a `.spm` file.
    pub fn from_bytes(bytes: Vec<u8>) -> std::result::Result<Self, String> {
        let model = proto::ModelProto::decode(bytes.as_slice())
            .map_err(|e| format!("not a SentencePiece model: {e}"))?;
        let trainer = model.trainer_spec.clone().unwrap_or_default();
        let model_type = trainer.model_type.unwrap_or(1);
        if model_type != 1 {
            let name = match model_type {
                2 => "bpe",
                3 => "word",
                4 => "char",
                _ => "unknown",
            };
            return Err(format!(
                "trainer_spec.model_type = {name} ({model_type}): only unigram SentencePiece models \
                 (OPUS-MT's) are supported"
            ));
        }
        if trainer.byte_fallback == Some(true) {
            return Err("trainer_spec.byte_fallback = true is not supported".into());
        }
        if trainer.split_by_whitespace == Some(false) {
            return Err("trainer_spec.split_by_whitespace = false is not supported".into());
        }
        if trainer.treat_whitespace_as_suffix == Some(true) {
            return Err("trainer_spec.treat_whitespace_as_suffix = true is not supported".into());
        }
        let spec = model.normalizer_spec.clone().unwrap_or_default();
        if spec
            .normalization_rule_tsv
            .as_deref()
            .is_some_and(|t| !t.is_empty())
        {
            return Err(
                "normalizer_spec.normalization_rule_tsv (custom rules) is not supported; \
                 only precompiled character maps are"
                    .into(),
            );
        }
        if spec.add_dummy_prefix == Some(false) || spec.escape_whitespaces == Some(false) {
            return Err(
                "normalizer_spec.add_dummy_prefix = false or escape_whitespaces = false is not \
                 supported"
                    .into(),
            );
        }

        let mut vocab = Vec::with_capacity(model.pieces.len());
        let mut unk_id = None;
        for p in &model.pieces {
            let kind = p.r#type.unwrap_or(NORMAL);
            let piece = p.piece.clone().unwrap_or_default();
            match kind {
                NORMAL | USER_DEFINED => {}
                UNKNOWN => unk_id = Some(vocab.len()),
                CONTROL | UNUSED => continue,
                other => {
                    return Err(format!(
                        "piece {piece:?} has type {other} (byte pieces), which is not supported"
                    ));
                }
            }
            vocab.push((piece, f64::from(p.score.unwrap_or(0.0))));
        }
        if unk_id.is_none() {
            return Err("the model has no unknown piece (<unk>)".into());
        }
        let unigram = Unigram::from(vocab, unk_id, false).map_err(|e| e.to_string())?;

        let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
        if let Some(map) = spec
            .precompiled_charsmap
            .as_deref()
            .filter(|m| !m.is_empty())
        {
            // The map starts with the byte size of its trie (u32, little-endian), 4-byte units,
            // followed by the replacement strings; a malformed size would make the normalizer
            // index outside the trie on the first text.
            let trie = map
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
            if !trie.is_some_and(|t| t >= 4 && t % 4 == 0 && 4 + t <= map.len()) {
                return Err(
                    "normalizer_spec.precompiled_charsmap is corrupt (bad trie size)".into(),
                );
            }
            let precompiled = Precompiled::from(map)
                .map_err(|e| format!("normalizer_spec.precompiled_charsmap is corrupt: {e}"))?;
            normalizers.push(precompiled.into());
        }
        if spec.remove_extra_whitespaces.unwrap_or(true) {
            normalizers.push(Strip::new(true, true).into());
            let runs = Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(" {2,}".into()),
                " ",
            )
            .map_err(|e| e.to_string())?;
            normalizers.push(runs.into());
        }
        let mut inner = Tokenizer::new(unigram);
        inner.with_normalizer(Some(Sequence::new(normalizers)));
        inner.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
        Ok(SentencePieceTokenizer { inner, bytes })
    }

    /// Writes the `.spm` file back, byte for byte.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        crate::atomic::write_atomic(path, &self.bytes)
    }

    /// Whether `other` is the same model file.
    pub fn same_model(&self, other: &SentencePieceTokenizer) -> bool {
        self.bytes == other.bytes
    }

    /// The raw `.spm` bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Splits a leading target-language token (`>>fra<<`, as multilingual OPUS-MT models read) off a
/// line, as `MarianTokenizer.remove_language_code` does (transformers 5): a line starting with `>>`
/// gives up to and including its first `<<`.
fn language_code(text: &str) -> Option<(&str, &str)> {
    if !text.starts_with(">>") {
        return None;
    }
    let end = text.find("<<")?;
    Some(text.split_at(end + 2))
}

impl Tokenize for SentencePieceTokenizer {
    fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        let (code, text) = match language_code(text) {
            Some((code, rest)) => (Some(code), rest),
            None => (None, text),
        };
        let mut pieces: Vec<String> = code.map(str::to_owned).into_iter().collect();
        if text.is_empty() {
            return Ok(pieces);
        }
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        pieces.extend_from_slice(encoding.get_tokens());
        Ok(pieces)
    }

    fn detokenize(&self, pieces: &[String]) -> Result<String> {
        // `▁` marks a word start; the first word's marker is the dummy prefix.
        let text: String = pieces.concat().replace('▁', " ");
        Ok(text.strip_prefix(' ').map(str::to_owned).unwrap_or(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> proto::ModelProto {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../rosetta/tests/fixtures/marian-tiny/source.spm");
        proto::ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
    }

    /// Regression (review): a charsmap whose trie size field is zero loaded, then panicked in the
    /// normalizer on the first text.
    #[test]
    fn a_corrupt_charsmap_is_refused_at_load_not_a_panic_later() {
        for map in [
            vec![0u8; 4],
            vec![255, 255, 255, 255, 1, 2],
            vec![8, 0, 0, 0, 1],
        ] {
            let mut model = fixture();
            if let Some(spec) = model.normalizer_spec.as_mut() {
                spec.precompiled_charsmap = Some(map);
            }
            let err = SentencePieceTokenizer::from_bytes(model.encode_to_vec()).unwrap_err();
            assert!(err.contains("precompiled_charsmap"), "{err}");
        }
    }

    #[test]
    fn unsupported_variants_are_refused_naming_the_setting() {
        let mut model = fixture();
        if let Some(t) = model.trainer_spec.as_mut() {
            t.model_type = Some(2);
        }
        let err = SentencePieceTokenizer::from_bytes(model.encode_to_vec()).unwrap_err();
        assert!(err.contains("model_type") && err.contains("bpe"), "{err}");
    }

    #[test]
    fn language_codes_are_split_off_as_marian_tokenizer_does() {
        assert_eq!(
            language_code(">>fra<< Ein Mann."),
            Some((">>fra<<", " Ein Mann."))
        );
        assert_eq!(
            language_code(">>x<< a >>y<< b"),
            Some((">>x<<", " a >>y<< b"))
        );
        assert_eq!(language_code(">><< a"), Some((">><<", " a")));
        assert_eq!(language_code(">>fra"), None);
        assert_eq!(language_code("Ein >>fra<<"), None);
    }
}
