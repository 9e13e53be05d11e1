//! The text pipeline of one model: normalization, source/target tokenizers and vocabularies,
//! trained on a corpus, saved to a directory, and used to encode corpora and decode outputs.

use crate::corpus::{CorpusSource, Pair};
use crate::encoded::ParallelIds;
use crate::error::{Error, Result};
use crate::normalize::NormalizeConfig;
use crate::stats::{CorpusStats, LengthHistogram, RatioHistogram};
use crate::tokenize::{
    AnyTokenizer, CharTokenizer, SentencePieceTokenizer, SpaceTokenizer, SubwordModel,
    SubwordTokenizer, Tokenize, TokenizerKind, WordTokenizer,
};
use crate::vocab::Vocab;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Pairs processed together; large enough for parallel work, small enough to bound memory.
const CHUNK: usize = 8192;

/// Settings of the text pipeline (the `[data]` part of a model config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextConfig {
    /// Tokenizer kind: `word`, `space`, `char`, `bpe` or `unigram`.
    pub tokenizer: TokenizerKind,
    /// `word` only: mark pieces glued to the previous one with `￭` so that detokenization is exact
    /// (on by default; pipelines saved before the option existed load with it off).
    pub joiners: bool,
    /// Subword vocabulary size (bpe and unigram). 8,000 suits corpora of ~30k pairs; use 32,000 for
    /// millions.
    pub vocab_size: usize,
    /// One tokenizer and vocabulary for both sides (needed to share embeddings across languages).
    pub joint: bool,
    /// Pieces seen fewer times are left out of the vocabulary (and, for BPE, out of merges).
    pub min_freq: u64,
    /// Largest vocabulary for `word` and `char`, specials included; `0` means no limit.
    pub max_vocab: usize,
    /// Training pairs with more tokens than this on either side are dropped (and counted).
    pub max_len: usize,
    /// Normalization applied to every line.
    pub normalize: NormalizeConfig,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            tokenizer: TokenizerKind::Bpe,
            joiners: true,
            vocab_size: 8000,
            joint: true,
            min_freq: 1,
            max_vocab: 50_000,
            max_len: 100,
            normalize: NormalizeConfig::default(),
        }
    }
}

impl TextConfig {
    /// Checks the settings, explaining any problem in plain English.
    pub fn validate(&self) -> Result<()> {
        if self.tokenizer.is_subword() && self.vocab_size < 300 {
            return Err(Error::Config(format!(
                "vocab_size = {} is too small for a byte-level subword model; use at least 300",
                self.vocab_size
            )));
        }
        if self.max_len == 0 {
            return Err(Error::Config("max_len must be at least 1 token".into()));
        }
        if self.min_freq == 0 {
            return Err(Error::Config("min_freq must be at least 1".into()));
        }
        Ok(())
    }
}

/// The tokenizer of the kinds whose vocabulary is counted from the corpus (word, space, char).
fn counted_tokenizer(config: &TextConfig) -> AnyTokenizer {
    match config.tokenizer {
        TokenizerKind::Word if config.joiners => AnyTokenizer::Word(WordTokenizer::with_joiners()),
        TokenizerKind::Word => AnyTokenizer::Word(WordTokenizer::legacy()),
        TokenizerKind::Space => AnyTokenizer::Space(SpaceTokenizer),
        _ => AnyTokenizer::Char(CharTokenizer),
    }
}

impl TextConfig {
    /// Parses and checks the `text.toml` of a pipeline directory, as [`TextPipeline::load`] reads
    /// it; `path` names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let table: toml::Table = toml_from_str(text).map_err(|e| Error::format(path, e))?;
        // `save` writes every key: without the tokenizer the file was emptied or cut short, and
        // its defaults would send the loader after files this pipeline never had.
        if !table.contains_key("tokenizer") {
            return Err(Error::format(
                path,
                "no tokenizer key: the file is empty or truncated (it is written with every setting)",
            ));
        }
        let mut config: TextConfig = toml_from_str(text).map_err(|e| Error::format(path, e))?;
        // A word pipeline written before joiner marks existed: its vocabulary holds unmarked
        // pieces. (Other kinds ignore the key; leaving it at its default keeps an old BPE pipeline
        // equal to a new one, so their models still ensemble.)
        if !table.contains_key("joiners") && config.tokenizer == TokenizerKind::Word {
            config.joiners = false;
        }
        config.validate()?;
        Ok(config)
    }

    /// The settings as [`TextPipeline::save`] writes them into `text.toml` (every key).
    pub fn to_toml(&self) -> std::result::Result<String, String> {
        toml_string(self)
    }
}

/// File names inside a pipeline directory.
/// The settings file of a saved pipeline.
pub const CONFIG_FILE: &str = "text.toml";

fn side_file(joint: bool, side: &str, name: &str) -> String {
    if joint {
        name.to_owned()
    } else {
        format!("{side}.{name}")
    }
}

/// A trained pipeline: everything needed to turn text into ids and back.
#[derive(Debug, Clone)]
pub struct TextPipeline {
    config: TextConfig,
    src_tokenizer: AnyTokenizer,
    tgt_tokenizer: AnyTokenizer,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
}

/// Reports progress as bytes read from the corpus files.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Normalized source and target of a pair, or `None` when either side is empty.
fn normalized(config: &NormalizeConfig, pair: &Pair) -> Option<(String, String)> {
    let src = config.apply(&pair.src);
    let tgt = config.apply(&pair.tgt);
    if src.is_empty() || tgt.is_empty() {
        None
    } else {
        Some((src.into_owned(), tgt.into_owned()))
    }
}

/// Streams normalized, non-empty lines of one or both sides; errors pass through.
fn training_lines<'a>(
    source: &CorpusSource,
    config: &'a NormalizeConfig,
    sides: (bool, bool),
    progress: Progress<'a>,
) -> Result<impl Iterator<Item = Result<String>> + Send + 'a> {
    let mut reader = source.open()?;
    let mut pending: Option<String> = None;
    Ok(std::iter::from_fn(move || {
        loop {
            if let Some(line) = pending.take() {
                return Some(Ok(line));
            }
            let pair = match reader.next()? {
                Ok(pair) => pair,
                Err(e) => return Some(Err(e)),
            };
            if pair.line % 1024 == 0 {
                progress(reader.bytes_read());
            }
            let Some((src, tgt)) = normalized(config, &pair) else {
                continue;
            };
            match sides {
                (true, true) => {
                    pending = Some(tgt);
                    return Some(Ok(src));
                }
                (true, false) => return Some(Ok(src)),
                _ => return Some(Ok(tgt)),
            }
        }
    }))
}

/// Reads a corpus in chunks of normalized pairs, calling `f` on each chunk.
fn for_each_chunk(
    source: &CorpusSource,
    progress: Progress<'_>,
    mut f: impl FnMut(&[Pair]) -> Result<()>,
) -> Result<()> {
    let mut reader = source.open()?;
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        chunk.clear();
        for pair in reader.by_ref().take(CHUNK) {
            chunk.push(pair?);
        }
        if chunk.is_empty() {
            return Ok(());
        }
        f(&chunk)?;
        progress(reader.bytes_read());
    }
}

fn count_pieces(
    source: &CorpusSource,
    config: &TextConfig,
    tokenizer: &AnyTokenizer,
    progress: Progress<'_>,
) -> Result<(HashMap<String, u64>, HashMap<String, u64>)> {
    let mut src_counts = HashMap::new();
    let mut tgt_counts = HashMap::new();
    for_each_chunk(source, progress, |chunk| {
        let tokenized: Vec<(Vec<String>, Vec<String>)> = chunk
            .par_iter()
            .filter_map(|pair| normalized(&config.normalize, pair))
            .map(|(s, t)| Ok((tokenizer.tokenize(&s)?, tokenizer.tokenize(&t)?)))
            .collect::<Result<_>>()?;
        for (s, t) in tokenized {
            for p in s {
                *src_counts.entry(p).or_insert(0) += 1;
            }
            for p in t {
                *tgt_counts.entry(p).or_insert(0) += 1;
            }
        }
        Ok(())
    })?;
    Ok((src_counts, tgt_counts))
}

fn merge_counts(mut a: HashMap<String, u64>, b: HashMap<String, u64>) -> HashMap<String, u64> {
    for (piece, count) in b {
        *a.entry(piece).or_insert(0) += count;
    }
    a
}

impl TextPipeline {
    /// Trains tokenizers (subword) or counts pieces (word, space, char) on a corpus and builds the vocabularies.
    pub fn fit(source: &CorpusSource, config: &TextConfig, progress: Progress<'_>) -> Result<Self> {
        config.validate()?;
        let max_vocab = (config.max_vocab > 0).then_some(config.max_vocab);
        let (src_tokenizer, tgt_tokenizer) = match config.tokenizer {
            TokenizerKind::SentencePiece => {
                return Err(Error::Config(
                    "text.tokenizer = \"sentencepiece\" comes with imported models (`rosetta import \
                     marian`) and is not trained by Rosetta; to train a subword model choose bpe or \
                     unigram"
                        .into(),
                ));
            }
            TokenizerKind::Word | TokenizerKind::Space | TokenizerKind::Char => {
                let tokenizer = counted_tokenizer(config);
                let (src_counts, tgt_counts) = count_pieces(source, config, &tokenizer, progress)?;
                let (src_vocab, tgt_vocab) = if config.joint {
                    let joint = Vocab::from_counts(
                        &merge_counts(src_counts, tgt_counts),
                        config.min_freq,
                        max_vocab,
                    );
                    (joint.clone(), joint)
                } else {
                    (
                        Vocab::from_counts(&src_counts, config.min_freq, max_vocab),
                        Vocab::from_counts(&tgt_counts, config.min_freq, max_vocab),
                    )
                };
                return Ok(TextPipeline {
                    config: config.clone(),
                    src_tokenizer: tokenizer.clone(),
                    tgt_tokenizer: tokenizer,
                    src_vocab,
                    tgt_vocab,
                });
            }
            TokenizerKind::Bpe | TokenizerKind::Unigram => {
                let model = if config.tokenizer == TokenizerKind::Bpe {
                    SubwordModel::Bpe
                } else {
                    SubwordModel::Unigram
                };
                let train = |sides| -> Result<SubwordTokenizer> {
                    let lines = training_lines(source, &config.normalize, sides, progress)?;
                    SubwordTokenizer::train(model, config.vocab_size, config.min_freq, lines)
                };
                if config.joint {
                    let joint = train((true, true))?;
                    (joint.clone(), joint)
                } else {
                    (train((true, false))?, train((false, true))?)
                }
            }
        };
        Ok(TextPipeline {
            config: config.clone(),
            src_vocab: Vocab::from_pieces(src_tokenizer.pieces()),
            tgt_vocab: Vocab::from_pieces(tgt_tokenizer.pieces()),
            src_tokenizer: AnyTokenizer::Subword(Box::new(src_tokenizer)),
            tgt_tokenizer: AnyTokenizer::Subword(Box::new(tgt_tokenizer)),
        })
    }

    /// Assembles a pipeline from parts built elsewhere (an imported model's tokenizers and
    /// vocabularies). A joint pipeline must have one tokenizer and one vocabulary for both sides.
    pub fn from_parts(
        config: TextConfig,
        tokenizers: (AnyTokenizer, AnyTokenizer),
        vocabs: (Vocab, Vocab),
    ) -> Result<Self> {
        config.validate()?;
        if config.joint && (!tokenizers.0.same_as(&tokenizers.1) || vocabs.0 != vocabs.1) {
            return Err(Error::Config(
                "text.joint = true needs one tokenizer and one vocabulary for both sides".into(),
            ));
        }
        Ok(TextPipeline {
            config,
            src_tokenizer: tokenizers.0,
            tgt_tokenizer: tokenizers.1,
            src_vocab: vocabs.0,
            tgt_vocab: vocabs.1,
        })
    }

    /// The same pipeline with another `max_len` (the training-length filter and source
    /// truncation), e.g. when fine-tuning a model with a different limit.
    pub fn with_max_len(mut self, max_len: usize) -> Result<Self> {
        self.config.max_len = max_len;
        self.config.validate()?;
        Ok(self)
    }

    /// Source tokenizer.
    pub fn src_tokenizer(&self) -> &AnyTokenizer {
        &self.src_tokenizer
    }

    /// Target tokenizer.
    pub fn tgt_tokenizer(&self) -> &AnyTokenizer {
        &self.tgt_tokenizer
    }

    /// The settings this pipeline was built with.
    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// Whether `other` turns every text into the same ids and back (same settings, tokenizers and
    /// vocabularies): the condition for models to be ensembled.
    pub fn same_as(&self, other: &TextPipeline) -> bool {
        self.config == other.config
            && self.src_vocab == other.src_vocab
            && self.tgt_vocab == other.tgt_vocab
            && self.src_tokenizer.same_as(&other.src_tokenizer)
            && self.tgt_tokenizer.same_as(&other.tgt_tokenizer)
    }

    /// Source vocabulary.
    pub fn src_vocab(&self) -> &Vocab {
        &self.src_vocab
    }

    /// Target vocabulary.
    pub fn tgt_vocab(&self) -> &Vocab {
        &self.tgt_vocab
    }

    /// Writes `text.toml`, the vocabularies and (for subword models) `tokenizer.json` files into `dir`.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let config_path = dir.join(CONFIG_FILE);
        let text = self
            .config
            .to_toml()
            .map_err(|e| Error::format(&config_path, e))?;
        crate::atomic::write_atomic(&config_path, text.as_bytes())?;
        let joint = self.config.joint;
        let sides: &[(&str, &AnyTokenizer, &Vocab)] = if joint {
            &[("src", &self.src_tokenizer, &self.src_vocab)]
        } else {
            &[
                ("src", &self.src_tokenizer, &self.src_vocab),
                ("tgt", &self.tgt_tokenizer, &self.tgt_vocab),
            ]
        };
        for &(side, tokenizer, vocab) in sides {
            vocab.save(dir.join(side_file(joint, side, "vocab.txt")))?;
            match tokenizer {
                AnyTokenizer::Subword(t) => {
                    t.save(dir.join(side_file(joint, side, "tokenizer.json")))?
                }
                AnyTokenizer::SentencePiece(t) => {
                    t.save(dir.join(side_file(joint, side, "spm")))?
                }
                AnyTokenizer::Word(_) | AnyTokenizer::Space(_) | AnyTokenizer::Char(_) => {}
            }
        }
        Ok(())
    }

    /// Loads a pipeline saved by [`TextPipeline::save`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config = TextConfig::from_toml(&text, &config_path)?;
        let load_side = |side: &str| -> Result<(AnyTokenizer, Vocab)> {
            let vocab = Vocab::load(dir.join(side_file(config.joint, side, "vocab.txt")))?;
            let tokenizer = match config.tokenizer {
                TokenizerKind::Word | TokenizerKind::Space | TokenizerKind::Char => {
                    counted_tokenizer(&config)
                }
                TokenizerKind::Bpe | TokenizerKind::Unigram => {
                    AnyTokenizer::Subword(Box::new(SubwordTokenizer::load(dir.join(side_file(
                        config.joint,
                        side,
                        "tokenizer.json",
                    )))?))
                }
                TokenizerKind::SentencePiece => AnyTokenizer::SentencePiece(Box::new(
                    SentencePieceTokenizer::load(dir.join(side_file(config.joint, side, "spm")))?,
                )),
            };
            Ok((tokenizer, vocab))
        };
        let (src_tokenizer, src_vocab) = load_side("src")?;
        let (tgt_tokenizer, tgt_vocab) = if config.joint {
            (src_tokenizer.clone(), src_vocab.clone())
        } else {
            load_side("tgt")?
        };
        Ok(TextPipeline {
            config,
            src_tokenizer,
            tgt_tokenizer,
            src_vocab,
            tgt_vocab,
        })
    }

    /// Normalizes and tokenizes a source line into pieces.
    pub fn src_pieces(&self, text: &str) -> Result<Vec<String>> {
        self.src_tokenizer
            .tokenize(&self.config.normalize.apply(text))
    }

    /// Normalizes, tokenizes and maps a source line to ids (no `</s>`).
    pub fn encode_src(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.src_vocab.encode(&self.src_pieces(text)?))
    }

    /// Normalizes, tokenizes and maps a target line to ids (no `<s>`/`</s>`).
    pub fn encode_tgt(&self, text: &str) -> Result<Vec<u32>> {
        let pieces = self
            .tgt_tokenizer
            .tokenize(&self.config.normalize.apply(text))?;
        Ok(self.tgt_vocab.encode(&pieces))
    }

    /// Turns target ids back into text (stopping at `</s>`).
    pub fn decode_tgt(&self, ids: &[u32]) -> Result<String> {
        self.tgt_tokenizer.detokenize(&self.tgt_vocab.decode(ids))
    }

    /// Detokenizes target pieces (e.g. after replacing `<unk>`).
    pub fn detokenize_tgt(&self, pieces: &[String]) -> Result<String> {
        self.tgt_tokenizer.detokenize(pieces)
    }

    /// Encodes a whole corpus for training, dropping empty pairs and pairs longer than `max_len`
    /// tokens on either side, and gathering statistics.
    pub fn encode_corpus(
        &self,
        source: &CorpusSource,
        progress: Progress<'_>,
    ) -> Result<(ParallelIds, CorpusStats)> {
        let mut data = ParallelIds::new();
        let mut stats = CorpusStats {
            max_len: self.config.max_len,
            ..Default::default()
        };
        let (mut src_hist, mut tgt_hist) = (LengthHistogram::default(), LengthHistogram::default());
        let mut ratios = RatioHistogram::default();
        for_each_chunk(source, progress, |chunk| {
            stats.pairs_read += chunk.len() as u64;
            let encoded: Vec<Option<(Vec<u32>, Vec<u32>)>> = chunk
                .par_iter()
                .map(|pair| {
                    let Some((s, t)) = normalized(&self.config.normalize, pair) else {
                        return Ok(None);
                    };
                    let s = self.src_vocab.encode(&self.src_tokenizer.tokenize(&s)?);
                    let t = self.tgt_vocab.encode(&self.tgt_tokenizer.tokenize(&t)?);
                    Ok(Some((s, t)))
                })
                .collect::<Result<_>>()?;
            for item in encoded {
                let Some((s, t)) = item else {
                    stats.dropped_empty += 1;
                    continue;
                };
                if s.len() > self.config.max_len || t.len() > self.config.max_len {
                    stats.dropped_too_long += 1;
                    continue;
                }
                let (src_unk, tgt_unk) =
                    (self.src_vocab.specials().unk, self.tgt_vocab.specials().unk);
                src_hist.add(s.len(), s.iter().filter(|&&id| id == src_unk).count());
                tgt_hist.add(t.len(), t.iter().filter(|&&id| id == tgt_unk).count());
                ratios.add(s.len(), t.len());
                data.push(&s, &t);
            }
            Ok(())
        })?;
        data.src.shrink_to_fit();
        data.tgt.shrink_to_fit();
        stats.pairs_kept = data.len() as u64;
        stats.src = src_hist.finish();
        stats.tgt = tgt_hist.finish();
        stats.length_ratio = ratios.finish();
        Ok((data, stats))
    }
}

fn toml_string<T: Serialize>(value: &T) -> std::result::Result<String, String> {
    toml::to_string_pretty(value).map_err(|e| e.to_string())
}

fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> std::result::Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}
