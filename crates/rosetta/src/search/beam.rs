//! Beam search, batched over many sentences at once, expanding only live hypotheses.
//!
//! Every step scores all live hypotheses of all unfinished sentences in one call to the model. For
//! each sentence, the best `beam` expansions are kept; an expansion that ends with `</s>` and ranks
//! among them is finished (as in fairseq). A sentence is done once `beam` hypotheses have finished
//! and no live one can still beat the best of them (Huang et al. 2017, "When to finish? Optimal
//! beam search for neural text generation"), or when its hypotheses reach the maximum length.
//! Final scores use GNMT's length penalty
//! `lp(Y) = ((5 + |Y|) / 6)^α` (Wu et al. 2016, §7), with |Y| counting `</s>`.
//!
//! [`BeamRule::HuggingFace`] reproduces `transformers`' `generate(num_beams=…)` instead (the default
//! for imported OPUS-MT models, so they translate as they do in Python): a finished hypothesis scores
//! `log P(Y) / |Y|^α`; the best `beam` finished ones are kept and may be displaced by better ones
//! later; a sentence stops once `beam` have finished and the best live hypothesis, scored at its
//! current length, cannot beat the worst of them (`early_stopping=False`).
//! [`BeamRule::Ctranslate2`] stops as CTranslate2 does: as soon as `beam` hypotheses have finished.

use super::greedy::Hypothesis;
use super::scorer::Scorer;
use crate::error::{Error, Result};
use crate::model::input::SourceBatch;
use burn::prelude::*;
use rayon::prelude::*;

/// How finished hypotheses are scored and when a sentence stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BeamRule {
    /// GNMT length penalty; a sentence is done when `beam` hypotheses have finished (fairseq).
    #[default]
    Gnmt,
    /// `transformers`' beam search: `log P / |Y|^α`, best `beam` finished kept, stop when the best
    /// live hypothesis cannot improve on them.
    HuggingFace,
    /// CTranslate2's (`patience` 1): a sentence is done as soon as `beam` hypotheses have finished;
    /// they score `log P / |Y|^α`, |Y| counting `</s>`. Translates as CTranslate2 does, so the two
    /// can be compared output for output (README "Rosetta against CTranslate2").
    Ctranslate2,
}

impl std::str::FromStr for BeamRule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gnmt" => Ok(BeamRule::Gnmt),
            "hugging-face" | "huggingface" | "hf" => Ok(BeamRule::HuggingFace),
            "ctranslate2" | "ct2" => Ok(BeamRule::Ctranslate2),
            other => Err(Error::Config(format!(
                "unknown beam rule \"{other}\"; choose gnmt, hugging-face or ctranslate2"
            ))),
        }
    }
}

/// Output-length slope for models that do not state their own (saved before lengths were derived
/// from the training data, or imported).
pub const DEFAULT_MAX_LEN_A: f64 = 1.5;
/// Output-length offset for models that do not state their own.
pub const DEFAULT_MAX_LEN_B: usize = 10;

/// Beam search settings (as a TOML table: a sweep's `search.*` keys).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeamConfig {
    /// Hypotheses kept per sentence.
    pub beam: usize,
    /// Hypotheses returned per sentence (≤ beam).
    pub n_best: usize,
    /// GNMT length penalty α (0 = raw log-probability).
    pub length_penalty: f64,
    /// Maximum output length: `max_len_a · source length + max_len_b`; `None` takes the model's
    /// own (`[decode] max_len_a` of its config, derived from its training data's length ratios),
    /// else [`DEFAULT_MAX_LEN_A`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_len_a: Option<f64>,
    /// See `max_len_a`; `None`: the model's, else [`DEFAULT_MAX_LEN_B`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_len_b: Option<usize>,
    /// `</s>` is not allowed before this many tokens.
    pub min_len: usize,
    /// Forbid repeating any n-gram of this size (0 = off).
    pub no_repeat_ngram: usize,
    /// Scoring of finished hypotheses and stopping; `None` takes the model's own default
    /// (`[decode] beam_rule` of its config: `hugging-face` for imported OPUS-MT models).
    pub rule: Option<BeamRule>,
}

impl Default for BeamConfig {
    fn default() -> Self {
        BeamConfig {
            beam: 5,
            n_best: 1,
            length_penalty: 1.0,
            max_len_a: None,
            max_len_b: None,
            min_len: 0,
            no_repeat_ngram: 0,
            rule: None,
        }
    }
}

impl BeamConfig {
    /// Checks the settings in plain English.
    pub fn validate(&self) -> Result<()> {
        if self.beam == 0 {
            return Err(Error::Config("beam size must be at least 1".into()));
        }
        if self.n_best == 0 || self.n_best > self.beam {
            return Err(Error::Config(format!(
                "n_best ({}) must be between 1 and the beam size ({})",
                self.n_best, self.beam
            )));
        }
        if !self.length_penalty.is_finite() {
            return Err(Error::Config(format!(
                "length penalty must be a finite number, got {}",
                self.length_penalty
            )));
        }
        if let Some(a) = self.max_len_a.filter(|a| !(a.is_finite() && *a >= 0.0)) {
            return Err(Error::Config(format!(
                "max_len_a must be a number ≥ 0, got {a}"
            )));
        }
        Ok(())
    }

    /// Most output tokens for a source of `src_len` tokens: `max_len_a · src_len + max_len_b`, at
    /// least 1 (unset parts: the defaults). Greedy decoding and sampling use the same limit.
    pub fn max_output_len(&self, src_len: usize) -> usize {
        super::scorer::max_output_len(
            self.max_len_a.unwrap_or(DEFAULT_MAX_LEN_A),
            self.max_len_b.unwrap_or(DEFAULT_MAX_LEN_B),
            src_len,
            usize::MAX,
        )
    }
}

/// GNMT length penalty for a hypothesis of `len` tokens (including `</s>`).
pub fn length_penalty(len: usize, alpha: f64) -> f64 {
    ((5.0 + len as f64) / 6.0).powf(alpha)
}

#[derive(Debug, Clone)]
struct Live {
    sentence: usize,
    tokens: Vec<u32>,
    log_prob: f32,
    /// Its last attention row in the [`Traces`] (none before the first step, or without attention).
    trace: Option<u32>,
}

/// The attention of every hypothesis, kept once: each step's attention matrix, and one node per
/// kept expansion naming its row there and its parent. Copying each hypothesis's attention history
/// into its successors cost `O(length)` allocations per hypothesis and step (5 % of a batched RNN
/// decode in malloc and free); here a step adds one node per hypothesis and a finished one walks
/// its chain back once.
#[derive(Default)]
struct Traces {
    /// Per step, `[n, src_len]` attention of the rows scored at that step.
    steps: Vec<Vec<f32>>,
    /// `(parent, step, row)` per node.
    nodes: Vec<(Option<u32>, u32, u32)>,
}

impl Traces {
    /// A node for row `row` of the latest step, extending `parent`.
    fn extend(&mut self, parent: Option<u32>, row: usize) -> Option<u32> {
        let step = self.steps.len().checked_sub(1)?;
        self.nodes.push((parent, step as u32, row as u32));
        u32::try_from(self.nodes.len() - 1).ok()
    }

    /// The attention rows (`len` source positions each) of the chain ending at `last`, in order.
    fn collect(&self, mut last: Option<u32>, src_len: usize, len: usize) -> Vec<Vec<f32>> {
        let mut rows = Vec::new();
        while let Some(node) = last {
            let (parent, step, row) = self.nodes[node as usize];
            let at = row as usize * src_len;
            rows.push(self.steps[step as usize][at..at + len].to_vec());
            last = parent;
        }
        rows.reverse();
        rows
    }
}

/// Tokens that would repeat an n-gram already in `tokens` if appended (none when `n` is 0).
fn blocked_tokens(tokens: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || tokens.len() + 1 < n {
        return Vec::new();
    }
    let prefix = &tokens[tokens.len() + 1 - n..];
    tokens
        .windows(n)
        .filter(|w| w[..n - 1] == *prefix)
        .map(|w| w[n - 1])
        .collect()
}

/// Decodes a batch with beam search; returns up to `n_best` hypotheses per sentence, best first,
/// each with `score` = log-probability / length penalty.
pub fn beam_search<B: Backend, S: Scorer<B> + Sync>(
    scorer: &S,
    src: &SourceBatch<B>,
    config: &BeamConfig,
) -> Vec<Vec<Hypothesis>> {
    super::split_across_threads(src, config.beam, |part, _| {
        beam_search_here(scorer, part, config)
    })
}

/// [`beam_search`] on the calling thread.
fn beam_search_here<B: Backend, S: Scorer<B>>(
    scorer: &S,
    src: &SourceBatch<B>,
    config: &BeamConfig,
) -> Vec<Vec<Hypothesis>> {
    let batch = src.lengths.len();
    let device = src.ids.device();
    let beam = config.beam.max(1);
    let src_len = src.ids.dims()[1];
    let limits: Vec<usize> = src
        .lengths
        .iter()
        .map(|&n| config.max_output_len(n).min(scorer.max_len()))
        .collect();
    let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); batch];
    let mut live: Vec<Live> = (0..batch)
        .map(|sentence| Live {
            sentence,
            tokens: Vec::new(),
            log_prob: 0.0,
            trace: None,
        })
        .collect();
    let mut traces = Traces::default();
    let (bos, eos, pad) = (src.specials.bos, src.specials.eos, src.specials.pad);
    let mut state = scorer.start(src);
    let hf = config.rule == Some(BeamRule::HuggingFace);
    let ct2 = config.rule == Some(BeamRule::Ctranslate2);
    let normalize = |log_prob: f32, len: usize| -> f32 {
        let penalty = if hf || ct2 {
            (len.max(1) as f64).powf(config.length_penalty)
        } else {
            length_penalty(len, config.length_penalty)
        };
        (f64::from(log_prob) / penalty) as f32
    };
    let finish = |traces: &Traces, h: &Live, log_prob: f32, with_eos: bool| {
        let len = h.tokens.len() + usize::from(with_eos);
        Hypothesis {
            tokens: h.tokens.clone(),
            log_prob,
            score: normalize(log_prob, len),
            attention: traces.collect(h.trace, src_len, src.lengths[h.sentence]),
            hit_max_len: !with_eos,
        }
    };
    // Hugging Face keeps the best `beam` finished hypotheses, best first.
    let keep_best = |hyps: &mut Vec<Hypothesis>, h: Hypothesis| {
        let at = hyps.partition_point(|x| x.score >= h.score);
        hyps.insert(at, h);
        hyps.truncate(beam);
    };

    while !live.is_empty() {
        let n = live.len();
        let prev: Vec<i32> = live
            .iter()
            .map(|h| h.tokens.last().map_or(bos as i32, |&t| t as i32))
            .collect();
        let step = scorer.step(
            Tensor::from_data(TensorData::new(prev, [n]), &device),
            state,
        );
        let vocab = step.logits.dims()[1];
        let data = step.logits.into_data();
        let converted: Vec<f32>;
        let logits = match data.as_slice::<f32>() {
            Ok(values) => values,
            Err(_) => {
                converted = data.iter::<f32>().collect();
                &converted
            }
        };
        // The best 2·beam tokens of every live row, rows in parallel, with their
        // log-probabilities. Subtracting a row's normalizer keeps the order, so the top tokens of
        // the logits are those of the log-softmax; only they are normalized, and no
        // `[n, vocab]` matrix of log-probabilities is written.
        let expansions: Vec<Vec<(f32, usize)>> = live
            .par_iter()
            .zip(logits.par_chunks(vocab.max(1)))
            .map(|(h, row)| {
                // Padding and `<s>` are never outputs (decoding would silently drop them); `</s>`
                // waits for `min_len`. Repeated n-grams are blocked before the top-k cut, so a
                // row never runs out of candidates because of them.
                let blocked = blocked_tokens(&h.tokens, config.no_repeat_ngram);
                let early = h.tokens.len() < config.min_len;
                crate::kernels::top_log_probs(row, 2 * beam, |token| {
                    let t = token as u32;
                    if t == eos {
                        return !early;
                    }
                    t != pad && t != bos && !blocked.contains(&t)
                })
            })
            .collect();
        let attended = step.attention.is_some();
        if let Some(a) = step.attention {
            traces.steps.push(a.into_data().iter::<f32>().collect());
        }

        // Candidates per sentence: (score, live row, token).
        let mut next_live: Vec<Live> = Vec::new();
        let mut rows: Vec<i32> = Vec::new();
        let mut start = 0;
        while start < n {
            let sentence = live[start].sentence;
            let mut end = start;
            while end < n && live[end].sentence == sentence {
                end += 1;
            }
            let mut candidates: Vec<(f32, usize, u32)> =
                Vec::with_capacity((end - start) * beam * 2);
            for row in start..end {
                let h = &live[row];
                for &(lp, token) in &expansions[row] {
                    candidates.push((h.log_prob + lp, row, token as u32));
                }
            }
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            // As in fairseq: `</s>` finishes a hypothesis only when it ranks among the best `beam`
            // candidates; the best `beam` others continue.
            let mut kept = 0;
            for (rank, &(log_prob, row, token)) in candidates.iter().enumerate() {
                if kept == beam {
                    break;
                }
                if token == eos && rank >= beam {
                    continue;
                }
                // Hugging Face: a hypothesis reaching the length limit outside the best `beam`
                // candidates is dropped, not finished.
                let at_limit = token != eos && live[row].tokens.len() + 1 >= limits[sentence];
                if hf && at_limit && rank >= beam {
                    continue;
                }
                let h = &live[row];
                if token == eos {
                    // The step that chose `</s>` adds no attention row.
                    let hyp = finish(&traces, h, log_prob, true);
                    if hf {
                        keep_best(&mut finished[sentence], hyp);
                    } else {
                        finished[sentence].push(hyp);
                    }
                    continue;
                }
                let mut tokens = h.tokens.clone();
                tokens.push(token);
                let extended = Live {
                    sentence,
                    tokens,
                    log_prob,
                    trace: if attended {
                        traces.extend(h.trace, row)
                    } else {
                        h.trace
                    },
                };
                if extended.tokens.len() >= limits[sentence] {
                    let hyp = finish(&traces, &extended, log_prob, false);
                    if hf {
                        keep_best(&mut finished[sentence], hyp);
                    } else {
                        finished[sentence].push(hyp);
                    }
                } else {
                    next_live.push(extended);
                    rows.push(row as i32);
                }
                kept += 1;
            }
            // Done sentences drop their live hypotheses. Hugging Face's rule: done once `beam`
            // have finished and the best live hypothesis, scored at its current length, is no
            // better than the worst finished one.
            let done = if ct2 {
                finished[sentence].len() >= beam
            } else if hf {
                let best_live = next_live
                    .iter()
                    .rev()
                    .take_while(|h| h.sentence == sentence)
                    .map(|h| normalize(h.log_prob, h.tokens.len()))
                    .fold(f32::NEG_INFINITY, f32::max);
                finished[sentence].len() >= beam
                    && finished[sentence]
                        .last()
                        .is_some_and(|worst| best_live <= worst.score)
            } else {
                // fairseq stops at `beam` finished hypotheses; on a confident model those can all
                // be improbable early `</s>`s while the right, longer one is still live (SCAN: beam
                // 5 matched 47% of the test set exactly, greedy 95%). Stop only when no live
                // hypothesis can still beat the best finished one (Huang et al. 2017, "When to
                // finish?"): its log-probability can only fall, and the GNMT penalty divides it by
                // at most lp(limit), so `log P / lp(limit)` bounds its final score.
                let best_finished = finished[sentence]
                    .iter()
                    .map(|h| h.score)
                    .fold(f32::NEG_INFINITY, f32::max);
                let bound = |h: &Live| {
                    let longest = if config.length_penalty >= 0.0 {
                        limits[sentence] + 1
                    } else {
                        h.tokens.len() + 1
                    };
                    normalize(h.log_prob, longest)
                };
                finished[sentence].len() >= beam
                    && next_live
                        .iter()
                        .rev()
                        .take_while(|h| h.sentence == sentence)
                        .all(|h| bound(h) <= best_finished)
            };
            if done {
                while next_live.last().is_some_and(|h| h.sentence == sentence) {
                    next_live.pop();
                    rows.pop();
                }
            }
            start = end;
        }
        if next_live.is_empty() {
            break;
        }
        let m = rows.len();
        let rows = Tensor::from_data(TensorData::new(rows, [m]), &device);
        // Once every sentence holds `beam` hypotheses, steps usually only reorder them within
        // their sentences; the source side then stays in place instead of being copied.
        let same_sources = next_live
            .iter()
            .map(|h| h.sentence)
            .eq(live.iter().map(|h| h.sentence));
        state = if same_sources {
            scorer.reorder(step.state, rows)
        } else {
            scorer.select(step.state, rows)
        };
        live = next_live;
    }

    finished
        .into_iter()
        .map(|mut hyps| {
            hyps.sort_by(|a, b| b.score.total_cmp(&a.score));
            hyps.truncate(config.n_best.max(1));
            hyps
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_tokens_that_repeat_ngrams() {
        assert_eq!(blocked_tokens(&[1, 2, 3, 1], 2), [2]);
        assert!(blocked_tokens(&[1], 3).is_empty());
        assert_eq!(blocked_tokens(&[7, 8], 1), [7, 8]);
        assert!(blocked_tokens(&[7, 8], 0).is_empty());
    }

    #[test]
    fn gnmt_penalty() {
        assert!((length_penalty(1, 1.0) - 1.0).abs() < 1e-12);
        assert!((length_penalty(7, 0.5) - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(length_penalty(30, 0.0), 1.0);
    }
}
