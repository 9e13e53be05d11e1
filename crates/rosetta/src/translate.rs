//! The translation API: load a model directory, translate lines. Used by the CLI and the server.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::kernels::Int8Kernel;
use crate::model::architecture::AnyModel;
use crate::model::input::{SourceBatch, ids_tensor, sorted_runs, source_batch, within_padding};
use crate::search::ensemble::mixture;
use crate::search::{
    BeamConfig, Ensemble, Hypothesis, SamplingConfig, Scorer, beam_search, greedy, greedy_stream,
    sample,
};
use crate::train::loss::teacher_forced_nll;
use crate::train::trainer::CONFIG_FILE;
use burn::prelude::*;
use rosetta_text::batch::PaddedIds;
use rosetta_text::pipeline::TextPipeline;
use rosetta_text::vocab::SPECIALS;
use std::path::Path;

/// How to decode.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslateOptions {
    /// Search settings: beam size (1 = greedy), n-best, length penalty and limits. The output
    /// length limit also applies to sampling.
    pub search: BeamConfig,
    /// Sample instead of searching.
    pub sampling: Option<SamplingConfig>,
    /// Tokens per batch, padding included (source side).
    pub max_tokens_per_batch: usize,
    /// Sentences per batch at most (0: only the token limit applies), as fairseq's `--batch-size`
    /// and CTranslate2's `max_batch_size`.
    pub max_sentences_per_batch: usize,
    /// Replace `<unk>` in the output by the most-attended source piece.
    pub replace_unk: bool,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            search: BeamConfig::default(),
            sampling: None,
            max_tokens_per_batch: 4000,
            max_sentences_per_batch: 0,
            replace_unk: false,
        }
    }
}

impl TranslateOptions {
    /// Greedy decoding (beam 1), other settings at their defaults.
    pub fn greedy() -> Self {
        TranslateOptions {
            search: BeamConfig {
                beam: 1,
                ..BeamConfig::default()
            },
            ..TranslateOptions::default()
        }
    }

    /// Checks the options in plain English.
    pub fn validate(&self) -> Result<()> {
        self.search.validate()?;
        if let Some(sampling) = &self.sampling {
            sampling.validate()?;
            if self.search.n_best > 1 {
                return Err(Error::Config(
                    "n_best > 1 needs beam search, not sampling".into(),
                ));
            }
        }
        Ok(())
    }
}

/// One output candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Detokenized output.
    pub text: String,
    /// Output pieces, without `</s>`.
    pub pieces: Vec<String>,
    /// Log-probability of the pieces and `</s>` under the model.
    pub log_prob: f32,
    /// Ranking score (log-probability / length penalty for beam search).
    pub score: f32,
    /// Attention of each output piece over the source pieces and the source `</s>`.
    pub attention: Vec<Vec<f32>>,
    /// Whether the search cut this output at the maximum output length (no `</s>`).
    pub hit_max_len: bool,
}

impl Candidate {
    /// The translation of an empty line: no pieces, score 0.
    pub fn empty() -> Self {
        Candidate {
            text: String::new(),
            pieces: Vec::new(),
            log_prob: 0.0,
            score: 0.0,
            attention: Vec::new(),
            hit_max_len: false,
        }
    }

    /// Hard alignment: for each output piece j, the most-attended source piece i, as `(i, j)`
    /// pairs (the source `</s>` is never chosen). Empty without attention.
    pub fn alignment(&self, source_len: usize) -> Vec<(usize, usize)> {
        self.attention
            .iter()
            .enumerate()
            .filter(|_| source_len > 0)
            .map(|(j, row)| {
                let i = row
                    .iter()
                    .take(source_len)
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i);
                (i, j)
            })
            .collect()
    }
}

/// A source line as translation reads it: its pieces, cut at the model's maximum source length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceText {
    /// Source pieces (at most the model's maximum source length).
    pub pieces: Vec<String>,
    /// Whether the line had more pieces than that.
    pub truncated: bool,
}

/// The translation of one line.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// Source pieces the model read (after truncation), without `</s>`.
    pub source_pieces: Vec<String>,
    /// Whether the source was longer than the model's maximum length and was truncated.
    pub truncated: bool,
    /// Candidates, best first (empty output for an empty line).
    pub candidates: Vec<Candidate>,
}

impl Translation {
    /// Whether the best output was cut at the maximum output length.
    pub fn hit_max_len(&self) -> bool {
        self.best().is_some_and(|c| c.hit_max_len)
    }

    /// The best output text ("" for an empty line).
    pub fn text(&self) -> &str {
        self.candidates.first().map_or("", |c| c.text.as_str())
    }

    /// The best candidate, if any.
    pub fn best(&self) -> Option<&Candidate> {
        self.candidates.first()
    }
}

/// Pharaoh-format alignment: `0-0 1-2 …` (source-target).
pub fn pharaoh(alignment: &[(usize, usize)]) -> String {
    alignment
        .iter()
        .map(|(i, j)| format!("{i}-{j}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A loaded model (or ensemble of models) ready to translate.
#[derive(Debug)]
pub struct Translator<B: Backend> {
    /// One model, or the members of an ensemble; never empty.
    models: Vec<AnyModel<B>>,
    pipeline: TextPipeline,
    config: Config,
    device: B::Device,
}

impl<B: Backend> Translator<B> {
    /// Loads `config.toml`, the text pipeline and `model.safetensors` from a model directory.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.exists() {
            return Err(Error::io(
                &config_path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not a model directory (no config.toml); train one with `rosetta train`",
                ),
            ));
        }
        let config = Config::load(&config_path)?;
        let pipeline = TextPipeline::load(dir)?;
        // A LoRA-adapted model: the base (its own model.safetensors, or that of train.init_from)
        // plus the updates, folded into the weights for the search.
        let model = AnyModel::load_dir(&config, &pipeline, dir, device)?.merged();
        Ok(Translator {
            models: vec![model],
            pipeline,
            config,
            device: device.clone(),
        })
    }

    /// Loads several model directories as one ensemble (see [`Ensemble`]): every next-token
    /// distribution is the mean of the members'. The first directory's settings (maximum length)
    /// apply; all members must have been trained with the same text pipeline (tokenizers,
    /// vocabularies and text settings), e.g. runs on the same prepared data or checkpoints of one run.
    pub fn load_ensemble(dirs: &[impl AsRef<Path>], device: &B::Device) -> Result<Self> {
        let Some((first, rest)) = dirs.split_first() else {
            return Err(Error::Config("an ensemble needs at least one model".into()));
        };
        let mut translator = Self::load(first.as_ref(), device)?;
        for dir in rest {
            let dir = dir.as_ref();
            let member = Self::load(dir, device)?;
            if !member.pipeline.same_as(&translator.pipeline) {
                return Err(Error::Checkpoint {
                    path: dir.to_path_buf(),
                    message: format!(
                        "cannot join an ensemble with {}: its text pipeline (tokenizer, \
                         vocabularies or text settings) differs, so the models do not share token ids",
                        first.as_ref().display()
                    ),
                });
            }
            translator.models.extend(member.models);
        }
        Ok(translator)
    }

    /// Translates in 8-bit integers with `kernel` from now on, every member (see
    /// [`crate::model::Seq2Seq::into_int8`]): weights per output column, each step's inputs per
    /// row; a Transformer's float weights are dropped.
    pub fn quantize(&mut self, kernel: Int8Kernel) -> Result<()> {
        self.models = std::mem::take(&mut self.models)
            .into_iter()
            .map(|m| m.into_int8(kernel))
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// How many models vote on every token (1 for a single model).
    pub fn ensemble_size(&self) -> usize {
        self.models.len()
    }

    /// The model's text pipeline.
    pub fn pipeline(&self) -> &TextPipeline {
        &self.pipeline
    }

    /// The model's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Longest source the model reads, in pieces; longer lines are truncated.
    pub fn max_source_len(&self) -> usize {
        self.config.text.max_len
    }

    /// Groups indices of non-empty sequences (sorted by length) into batches of at most `budget`
    /// tokens and `max_rows` sequences (0: no limit). With `split_padding`, a batch also ends
    /// where padding would pass a fifth of its size ([`within_padding`]), for models whose search
    /// steps read the padding (an RNN's attention); a Transformer groups its sources by length
    /// itself ([`SourceBatch::length_groups`]) and decodes the mixed batch together. Sorted input
    /// hardly changes: 2.41 → 2.26 s for the whole of `val`.
    fn batches(
        lengths: &[usize],
        budget: usize,
        max_rows: usize,
        split_padding: bool,
    ) -> Vec<Vec<usize>> {
        let max_rows = if max_rows == 0 { usize::MAX } else { max_rows };
        // Each sequence costs its pieces and `</s>`; the last row of a run is its longest.
        let counted: Vec<usize> = lengths.iter().map(|&n| n + 1).collect();
        let non_empty = (0..lengths.len()).filter(|&i| lengths[i] > 0);
        sorted_runs(&counted, non_empty, |rows, tokens, next| {
            rows < max_rows
                && (rows + 1) * next <= budget
                && (!split_padding || within_padding(rows, tokens, next))
        })
    }

    /// Translates lines, returning exactly one translation per line, in order. Empty lines give empty
    /// translations; lines longer than the model's maximum length are truncated (and flagged).
    pub fn translate(
        &self,
        lines: &[&str],
        options: &TranslateOptions,
    ) -> Result<Vec<Translation>> {
        self.translate_at(lines, options, 0)
    }

    /// Like [`Translator::translate`], for lines that start at index `first` of a longer input:
    /// sampling seeds each line by its index in the whole input, so chunking does not change results.
    pub fn translate_at(
        &self,
        lines: &[&str],
        options: &TranslateOptions,
        first: u64,
    ) -> Result<Vec<Translation>> {
        let ids: Vec<u64> = (first..first + lines.len() as u64).collect();
        self.translate_with_ids(lines, options, &ids)
    }

    /// The search settings of a request that names none: the (first) model's `[decode]` defaults
    /// (an imported model's `num_beams` and `length_penalty`), else the library's.
    pub fn search_defaults(&self) -> crate::search::BeamConfig {
        self.config.decode.search_defaults()
    }

    /// The output-length cap `(a, b)` of `a · source length + b` that `options` get: theirs, else
    /// the model's `[decode]` lengths, else the defaults.
    pub fn max_len(&self, options: &TranslateOptions) -> (f64, usize) {
        let (a, b) = self.config.decode.max_len();
        (
            options.search.max_len_a.unwrap_or(a),
            options.search.max_len_b.unwrap_or(b),
        )
    }

    /// `line` normalized and tokenized as translation reads it, cut at the model's maximum source
    /// length. A server reads each text once, when the request arrives (its length decides its
    /// batch), and hands the pieces to [`Translator::translate_sources`].
    pub fn read_source(&self, line: &str) -> Result<SourceText> {
        let max_len = self.max_source_len();
        let mut pieces = self.pipeline.src_pieces(line)?;
        let truncated = pieces.len() > max_len;
        pieces.truncate(max_len);
        // A 10,000-character line must not keep its whole piece list's memory while it waits.
        pieces.shrink_to_fit();
        Ok(SourceText { pieces, truncated })
    }

    /// Like [`Translator::translate`], with each line's sampling seed given by `sentence_ids` (one
    /// per line): lines batched together from different requests then sample exactly as they would
    /// alone. Beam search and greedy decoding ignore the ids.
    pub fn translate_with_ids(
        &self,
        lines: &[&str],
        options: &TranslateOptions,
        sentence_ids: &[u64],
    ) -> Result<Vec<Translation>> {
        let sources = lines
            .iter()
            .map(|line| self.read_source(line))
            .collect::<Result<Vec<_>>>()?;
        self.translate_sources(sources, options, sentence_ids)
    }

    /// [`Translator::translate_with_ids`] for sources already read ([`Translator::read_source`]).
    pub fn translate_sources(
        &self,
        sources: Vec<SourceText>,
        options: &TranslateOptions,
        sentence_ids: &[u64],
    ) -> Result<Vec<Translation>> {
        options.validate()?;
        if sentence_ids.len() != sources.len() {
            return Err(Error::Config(format!(
                "{} lines but {} sentence ids",
                sources.len(),
                sentence_ids.len()
            )));
        }
        let max_len = self.max_source_len();
        let mut out = Vec::with_capacity(sources.len());
        let mut ids = Vec::with_capacity(sources.len());
        for SourceText { pieces, truncated } in sources {
            ids.push(self.pipeline.src_vocab().encode(&pieces));
            out.push(Translation {
                source_pieces: pieces,
                truncated,
                candidates: Vec::new(),
            });
        }
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let budget = options.max_tokens_per_batch.max(max_len + 1);
        let specials = self.pipeline.tgt_vocab().specials();
        let resolved = self.resolved(options);
        let options = &resolved;
        // Models that group sources by length themselves decode a mixed batch in one piece.
        let split_padding = !self.models.iter().all(Scorer::groups_sources);
        for chunk in Self::batches(
            &lengths,
            budget,
            options.max_sentences_per_batch,
            split_padding,
        ) {
            let padded = PaddedIds::new(
                chunk.iter().map(|&i| ids[i].as_slice()),
                &self.pipeline.src_vocab().specials(),
                false,
                true,
            );
            let src = source_batch::<B>(&padded, specials, &self.device);
            let chunk_ids: Vec<u64> = chunk.iter().map(|&i| sentence_ids[i]).collect();
            let hyps = match self.models.as_slice() {
                [model] => decode(model, &src, options, &chunk_ids),
                models => decode(&Ensemble::new(models)?, &src, options, &chunk_ids),
            };
            for (hyps, &i) in hyps.into_iter().zip(&chunk) {
                out[i].candidates = hyps
                    .into_iter()
                    .map(|hyp| self.candidate(hyp, &out[i].source_pieces, options))
                    .collect::<Result<_>>()?;
            }
        }
        for t in &mut out {
            if t.candidates.is_empty() {
                t.candidates.push(Candidate::empty());
            }
        }
        Ok(out)
    }

    /// `options` with the model's own beam rule and length cap where the caller chose none.
    fn resolved(&self, options: &TranslateOptions) -> TranslateOptions {
        let mut resolved = options.clone();
        resolved
            .search
            .rule
            .get_or_insert(self.config.decode.beam_rule);
        let (max_len_a, max_len_b) = self.config.decode.max_len();
        resolved.search.max_len_a.get_or_insert(max_len_a);
        resolved.search.max_len_b.get_or_insert(max_len_b);
        resolved
    }

    /// A hypothesis as text, for the sentence read as `source`.
    fn candidate(
        &self,
        hyp: Hypothesis,
        source: &[String],
        options: &TranslateOptions,
    ) -> Result<Candidate> {
        let mut pieces = self.pipeline.tgt_vocab().decode(&hyp.tokens);
        if options.replace_unk {
            self.replace_unknown(&mut pieces, &hyp.attention, source);
        }
        Ok(Candidate {
            text: self.pipeline.detokenize_tgt(&pieces)?,
            pieces,
            log_prob: hyp.log_prob,
            score: hyp.score,
            attention: hyp.attention,
            hit_max_len: hyp.hit_max_len,
        })
    }

    /// Whether [`Translator::translate_stream`] decodes with `options`: greedy search (no
    /// sampling, one candidate) with models that admit sentences into a running search
    /// ([`Scorer::admits`]: the Transformer).
    pub fn streams(&self, options: &TranslateOptions) -> bool {
        options.sampling.is_none()
            && options.search.beam == 1
            && options.search.n_best <= 1
            && self.models.iter().all(Scorer::admits)
    }

    /// Greedy translation of a stream of sources (in-flight batching, [`greedy_stream`]): up to
    /// `rows` sentences are decoded together, and as they end `feed(free)` is asked for more (it
    /// may give fewer or more than `free`, or none); each source is reported to `done` with its
    /// number in the order fed (from 0) and its translation at the step it ends, so a server
    /// answers a request as soon as its own sentences are done. Empty sources are reported as
    /// they are fed. Ends when nothing is live and `feed` gives nothing.
    ///
    /// # Errors
    /// Options [`Translator::streams`] refuses, invalid options, or a translation that cannot
    /// be detokenized (reported before any later sentence is).
    pub fn translate_stream(
        &self,
        options: &TranslateOptions,
        rows: usize,
        mut feed: impl FnMut(usize) -> Vec<SourceText> + Send,
        mut done: impl FnMut(usize, Translation) + Send,
    ) -> Result<()> {
        options.validate()?;
        if !self.streams(options) {
            return Err(Error::Config(
                "only greedy search with models that admit sentences into a running search \
                 decodes a stream"
                    .into(),
            ));
        }
        let options = &self.resolved(options);
        let specials = self.pipeline.tgt_vocab().specials();
        let src_specials = self.pipeline.src_vocab().specials();
        // The sentences in the search by admission number: their number in the stream and how
        // they were read (removed when reported, so a long stream holds only the live ones).
        struct Flight {
            admitted: std::collections::HashMap<usize, (usize, SourceText)>,
            in_search: usize,
            fed: usize,
            failure: Option<Error>,
        }
        // Both closures below use these; the search calls them one at a time (locks never wait).
        let flight = std::sync::Mutex::new(Flight {
            admitted: std::collections::HashMap::new(),
            in_search: 0,
            fed: 0,
            failure: None,
        });
        let done = std::sync::Mutex::new(&mut done);
        let stream_feed = |free: usize| loop {
            if locked(&flight).failure.is_some() {
                return None;
            }
            let sources = feed(free);
            if sources.is_empty() {
                return None;
            }
            let mut ids = Vec::with_capacity(sources.len());
            let mut f = locked(&flight);
            for source in sources {
                let number = f.fed;
                f.fed += 1;
                if source.pieces.is_empty() {
                    (*locked(&done))(
                        number,
                        Translation {
                            source_pieces: source.pieces,
                            truncated: source.truncated,
                            candidates: vec![Candidate::empty()],
                        },
                    );
                    continue;
                }
                ids.push(self.pipeline.src_vocab().encode(&source.pieces));
                let k = f.in_search;
                f.in_search += 1;
                f.admitted.insert(k, (number, source));
            }
            if !ids.is_empty() {
                let padded =
                    PaddedIds::new(ids.iter().map(Vec::as_slice), &src_specials, false, true);
                return Some(source_batch::<B>(&padded, specials, &self.device));
            }
            // Only empty sources, all answered: ask again.
        };
        let finished = |k: usize, hyp: Hypothesis| {
            let mut f = locked(&flight);
            let Some((number, source)) = f.admitted.remove(&k) else {
                return;
            };
            match self.candidate(hyp, &source.pieces, options) {
                Ok(candidate) => (*locked(&done))(
                    number,
                    Translation {
                        source_pieces: source.pieces,
                        truncated: source.truncated,
                        candidates: vec![candidate],
                    },
                ),
                Err(e) => {
                    f.failure.get_or_insert(e);
                }
            }
        };
        let max_out = |n: usize| options.search.max_output_len(n);
        match self.models.as_slice() {
            [model] => greedy_stream(model, rows, stream_feed, max_out, finished),
            models => greedy_stream(
                &Ensemble::new(models)?,
                rows,
                stream_feed,
                max_out,
                finished,
            ),
        }
        match flight
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .failure
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Copies the most-attended source piece in place of each `<unk>` (Luong et al. 2015b).
    fn replace_unknown(&self, pieces: &mut [String], attention: &[Vec<f32>], source: &[String]) {
        let unk = SPECIALS[rosetta_text::vocab::UNK as usize];
        for (j, piece) in pieces.iter_mut().enumerate() {
            if piece != unk {
                continue;
            }
            let best = attention.get(j).and_then(|row| {
                row.iter()
                    .take(source.len())
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i)
            });
            if let Some(i) = best {
                *piece = source[i].clone();
            }
        }
    }

    /// Teacher-forced cross-entropy of references given sources: `(summed nll, target tokens)`,
    /// target tokens counting `</s>`. Perplexity is `exp(nll / tokens)`.
    pub fn score_references(
        &self,
        sources: &[&str],
        references: &[&str],
        max_tokens: usize,
    ) -> Result<(f64, usize)> {
        if sources.len() != references.len() {
            return Err(Error::Config(format!(
                "{} source lines but {} reference lines",
                sources.len(),
                references.len()
            )));
        }
        let max_len = self.max_source_len();
        let mut src_ids = Vec::with_capacity(sources.len());
        let mut tgt_ids = Vec::with_capacity(sources.len());
        for (s, r) in sources.iter().zip(references) {
            let mut ids = self.pipeline.encode_src(s)?;
            ids.truncate(max_len);
            src_ids.push(ids);
            tgt_ids.push(self.pipeline.encode_tgt(r)?);
        }
        let lengths: Vec<usize> = src_ids
            .iter()
            .zip(&tgt_ids)
            .map(|(s, t)| {
                if s.is_empty() {
                    0
                } else {
                    s.len().max(t.len())
                }
            })
            .collect();
        let specials = self.pipeline.tgt_vocab().specials();
        let (mut nll, mut tokens) = (0.0f64, 0usize);
        // Teacher forcing reads every padded position of both sides.
        for chunk in Self::batches(&lengths, max_tokens.max(2 * max_len + 2), 0, true) {
            let src_specials = self.pipeline.src_vocab().specials();
            let side = |ids: &[Vec<u32>], specials, bos, eos| {
                PaddedIds::new(chunk.iter().map(|&i| ids[i].as_slice()), specials, bos, eos)
            };
            let (src, tgt_in, tgt_out) = (
                side(&src_ids, &src_specials, false, true),
                side(&tgt_ids, &specials, true, false),
                side(&tgt_ids, &specials, false, true),
            );
            let src = source_batch::<B>(&src, specials, &self.device);
            let tgt_in = ids_tensor(&tgt_in, &self.device);
            let logits = match self.models.as_slice() {
                [model] => model.forward(&src, tgt_in).0,
                models => {
                    // The mixture's log-probabilities are valid logits: cross-entropy's
                    // normalization leaves them unchanged.
                    let mut dims = [0; 3];
                    let log_probs = models
                        .iter()
                        .map(|m| {
                            let logits = m.forward(&src, tgt_in.clone()).0; // [batch, len, vocab]
                            dims = logits.dims();
                            crate::kernels::log_softmax(
                                logits.reshape([dims[0] * dims[1], dims[2]]),
                            )
                        })
                        .collect();
                    mixture(log_probs).reshape(dims)
                }
            };
            let (batch_nll, batch_tokens) =
                teacher_forced_nll(logits, &tgt_out, specials.pad, &self.device);
            nll += batch_nll;
            tokens += batch_tokens;
        }
        Ok((nll, tokens))
    }
}

/// `m` locked; a lock poisoned by a panic elsewhere still gives its data (a stream's bookkeeping
/// stays consistent: every change to it is one insert or remove).
fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the search `options` ask for over one batch: one list of candidates per sentence, best first.
/// `sentence_ids` seed sampling per sentence.
fn decode<B: Backend, S: Scorer<B> + Sync>(
    scorer: &S,
    src: &SourceBatch<B>,
    options: &TranslateOptions,
    sentence_ids: &[u64],
) -> Vec<Vec<Hypothesis>> {
    let search = &options.search;
    let max_out = |n: usize| search.max_output_len(n);
    match (&options.sampling, search.beam) {
        (Some(sampling), _) => sample(scorer, src, sampling, sentence_ids, max_out)
            .into_iter()
            .map(|h| vec![h])
            .collect(),
        (None, 1) => greedy(scorer, src, max_out)
            .into_iter()
            .map(|h| vec![h])
            .collect(),
        (None, _) => beam_search(scorer, src, search),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// Batches cover every non-empty sequence once, shortest first, within both limits.
    #[test]
    fn batches_respect_the_token_and_sentence_limits() {
        let lengths = [3, 0, 7, 1, 5, 5, 2, 9, 4, 6];
        for (budget, max_rows) in [(100, 0), (100, 3), (20, 0), (20, 2), (10, 1)] {
            let batches = Translator::<Flex>::batches(&lengths, budget, max_rows, true);
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(
                seen,
                vec![0, 2, 3, 4, 5, 6, 7, 8, 9],
                "{budget} / {max_rows}"
            );
            for b in &batches {
                let longest = b.iter().map(|&i| lengths[i]).max().unwrap_or(0);
                assert!(b.len() == 1 || b.len() * (longest + 1) <= budget);
                assert!(
                    max_rows == 0 || b.len() <= max_rows,
                    "{b:?} over {max_rows} rows"
                );
            }
        }
        assert_eq!(Translator::<Flex>::batches(&lengths, 100, 3, true).len(), 3);
    }

    #[test]
    fn mixed_lengths_split_where_padding_would_pass_a_fifth() {
        // 16 short rows, then 16 long: one batch would be 45 % padding.
        let lengths: Vec<usize> = (0..32).map(|i| if i < 16 { 9 } else { 29 }).collect();
        let batches = Translator::<Flex>::batches(&lengths, 4000, 0, true);
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert!(batches.iter().all(|b| b.len() == 16));
        // Unless the model groups its sources itself: then only the limits end a batch.
        assert_eq!(
            Translator::<Flex>::batches(&lengths, 4000, 0, false).len(),
            1
        );
        assert_eq!(
            Translator::<Flex>::batches(&lengths, 400, 0, false).len(),
            3
        );
        // Below the floor of rows padding never ends a batch.
        let few = [9, 9, 29, 29];
        assert_eq!(Translator::<Flex>::batches(&few, 4000, 0, true).len(), 1);
        // Lengths within the slack stay together: 15 rows of 10 pieces and 17 of 11.
        let close: Vec<usize> = (0..32).map(|i| if i < 15 { 10 } else { 11 }).collect();
        assert_eq!(Translator::<Flex>::batches(&close, 4000, 0, true).len(), 1);
    }
}
