//! Beam search, batched over many sentences at once, expanding only live hypotheses.
//!
//! Every step scores all live hypotheses of all unfinished sentences in one call to the model. For
//! each sentence, the best `beam` expansions are kept; an expansion that ends with `</s>` and ranks
//! among them is finished (as in fairseq). A sentence is done once `beam` hypotheses have finished,
//! or when its hypotheses reach the maximum length. Final scores use GNMT's length penalty
//! `lp(Y) = ((5 + |Y|) / 6)^α` (Wu et al. 2016, §7), with |Y| counting `</s>`.

use super::greedy::Hypothesis;
use super::scorer::Scorer;
use crate::model::encoder::SourceBatch;
use burn::prelude::*;
use rosetta_text::vocab::{BOS, EOS, PAD};

/// Beam search settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamConfig {
    /// Hypotheses kept per sentence.
    pub beam: usize,
    /// Hypotheses returned per sentence (≤ beam).
    pub n_best: usize,
    /// GNMT length penalty α (0 = raw log-probability).
    pub length_penalty: f64,
    /// Maximum output length: `max_len_a · source length + max_len_b`.
    pub max_len_a: f64,
    /// See `max_len_a`.
    pub max_len_b: usize,
    /// `</s>` is not allowed before this many tokens.
    pub min_len: usize,
    /// Forbid repeating any n-gram of this size (0 = off).
    pub no_repeat_ngram: usize,
}

impl Default for BeamConfig {
    fn default() -> Self {
        BeamConfig {
            beam: 5,
            n_best: 1,
            length_penalty: 1.0,
            max_len_a: 1.5,
            max_len_b: 10,
            min_len: 0,
            no_repeat_ngram: 0,
        }
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
    attention: Vec<Vec<f32>>,
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

/// Indices of the `k` largest values (unordered).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(values.len());
    if k < idx.len() {
        idx.select_nth_unstable_by(k, |&a, &b| values[b].total_cmp(&values[a]));
        idx.truncate(k);
    }
    idx
}

/// Decodes a batch with beam search; returns up to `n_best` hypotheses per sentence, best first,
/// each with `score` = log-probability / length penalty.
pub fn beam_search<B: Backend, S: Scorer<B>>(
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
        .map(|&n| ((config.max_len_a * n as f64) as usize + config.max_len_b).max(1))
        .collect();
    let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); batch];
    let mut live: Vec<Live> = (0..batch)
        .map(|sentence| Live {
            sentence,
            tokens: Vec::new(),
            log_prob: 0.0,
            attention: Vec::new(),
        })
        .collect();
    let mut state = scorer.start(src);
    let finish = |h: &Live, log_prob: f32, with_eos: bool| {
        let len = h.tokens.len() + usize::from(with_eos);
        Hypothesis {
            tokens: h.tokens.clone(),
            log_prob,
            score: (f64::from(log_prob) / length_penalty(len, config.length_penalty)) as f32,
            attention: h.attention.clone(),
        }
    };

    while !live.is_empty() {
        let n = live.len();
        let prev: Vec<i32> = live
            .iter()
            .map(|h| h.tokens.last().map_or(BOS as i32, |&t| t as i32))
            .collect();
        let step = scorer.step(
            Tensor::from_data(TensorData::new(prev, [n]), &device),
            state,
        );
        let vocab = step.log_probs.dims()[1];
        let log_probs: Vec<f32> = step.log_probs.into_data().iter::<f32>().collect();
        let attention: Option<Vec<f32>> = step
            .attention
            .map(|a| a.into_data().iter::<f32>().collect());

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
                let mut lp = log_probs[row * vocab..(row + 1) * vocab].to_vec();
                // Padding and `<s>` are never outputs (decoding would silently drop them).
                lp[PAD as usize] = f32::NEG_INFINITY;
                lp[BOS as usize] = f32::NEG_INFINITY;
                if h.tokens.len() < config.min_len {
                    lp[EOS as usize] = f32::NEG_INFINITY;
                }
                // Blocked before the top-k cut, so a row never runs out of candidates because of it.
                for token in blocked_tokens(&h.tokens, config.no_repeat_ngram) {
                    if token != EOS {
                        lp[token as usize] = f32::NEG_INFINITY;
                    }
                }
                for token in top_k(&lp, 2 * beam) {
                    if lp[token].is_finite() {
                        candidates.push((h.log_prob + lp[token], row, token as u32));
                    }
                }
            }
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            // As in fairseq: `</s>` finishes a hypothesis only when it ranks among the best `beam`
            // candidates; the best `beam` others continue.
            let mut kept = 0;
            for (rank, &(log_prob, row, token)) in candidates.iter().enumerate() {
                if kept == beam || finished[sentence].len() >= beam {
                    break;
                }
                if token == EOS && rank >= beam {
                    continue;
                }
                let h = &live[row];
                let mut attn = h.attention.clone();
                if let Some(a) = &attention {
                    let offset = row * src_len;
                    attn.push(a[offset..offset + src.lengths[sentence]].to_vec());
                }
                if token == EOS {
                    attn.pop();
                    let done = Live {
                        attention: attn,
                        ..h.clone()
                    };
                    finished[sentence].push(finish(&done, log_prob, true));
                    continue;
                }
                let mut tokens = h.tokens.clone();
                tokens.push(token);
                let extended = Live {
                    sentence,
                    tokens,
                    log_prob,
                    attention: attn,
                };
                if extended.tokens.len() >= limits[sentence] {
                    finished[sentence].push(finish(&extended, log_prob, false));
                } else {
                    next_live.push(extended);
                    rows.push(row as i32);
                }
                kept += 1;
            }
            // Done sentences drop their live hypotheses.
            if finished[sentence].len() >= beam {
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
        state = scorer.select(
            step.state,
            Tensor::from_data(TensorData::new(rows, [m]), &device),
        );
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
