//! Greedy decoding: the most probable token at every step, batched, dropping finished sentences.

use super::scorer::Scorer;
use crate::model::input::SourceBatch;
use burn::prelude::*;

/// One decoded sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Target ids without `<s>`/`</s>`.
    pub tokens: Vec<u32>,
    /// Sum of the log-probabilities of the tokens (and of `</s>`, when it was produced).
    pub log_prob: f32,
    /// The score hypotheses are ranked by: `log_prob` divided by the length penalty in beam
    /// search, `log_prob` itself otherwise.
    pub score: f32,
    /// Attention per output token, each over the source positions (empty without attention).
    pub attention: Vec<Vec<f32>>,
    /// Whether the search cut it at the maximum output length instead of seeing `</s>`: counted
    /// and reported, since a cap set too low shows up as truncated outputs, not as an error.
    pub hit_max_len: bool,
}

/// Decodes a batch greedily. A sentence ends at `</s>` or after `max_len(src_len)` tokens.
pub fn greedy<B: Backend, S: Scorer<B> + Sync>(
    scorer: &S,
    src: &SourceBatch<B>,
    max_len: impl Fn(usize) -> usize + Sync,
) -> Vec<Hypothesis> {
    super::split_across_threads(src, 1, |part, _| greedy_here(scorer, part, &max_len))
}

/// [`greedy`] on the calling thread.
fn greedy_here<B: Backend, S: Scorer<B>>(
    scorer: &S,
    src: &SourceBatch<B>,
    max_len: impl Fn(usize) -> usize,
) -> Vec<Hypothesis> {
    let batch = src.lengths.len();
    let device = src.ids.device();
    let limits: Vec<usize> = src
        .lengths
        .iter()
        .map(|&n| max_len(n).min(scorer.max_len()))
        .collect();
    let mut hyps = vec![
        Hypothesis {
            tokens: Vec::new(),
            log_prob: 0.0,
            score: 0.0,
            attention: Vec::new(),
            hit_max_len: false,
        };
        batch
    ];
    // `live[i]` is the sentence held in row i of the state.
    let mut live: Vec<usize> = (0..batch).collect();
    let mut state = scorer.start(src);
    let specials = src.specials;
    let mut prev = vec![specials.bos as i32; batch];
    let mut t = 0;
    while !live.is_empty() {
        let n = live.len();
        let prev_tensor =
            Tensor::<B, 1, Int>::from_data(TensorData::new(prev.clone(), [n]), &device);
        let step = scorer.step(prev_tensor, state);
        // Padding and `<s>` are never outputs (their probabilities still count in the
        // normalization: scores stay the model's).
        let (best_id, best_lp) = crate::kernels::best_tokens(
            step.logits,
            &[specials.pad as usize, specials.bos as usize],
        );
        let attention: Option<Vec<f32>> = step
            .attention
            .map(|a| a.into_data().iter::<f32>().collect());
        let src_len = src.ids.dims()[1];
        let mut keep = Vec::with_capacity(n);
        prev.clear();
        for (row, &sent) in live.iter().enumerate() {
            let id = best_id[row] as u32;
            let hyp = &mut hyps[sent];
            hyp.log_prob += best_lp[row];
            hyp.score = hyp.log_prob;
            if id == specials.eos {
                continue;
            }
            if let Some(a) = &attention {
                let start = row * src_len;
                hyp.attention
                    .push(a[start..start + src.lengths[sent]].to_vec());
            }
            hyp.tokens.push(id);
            if t + 1 >= limits[sent] {
                hyp.hit_max_len = true;
                continue;
            }
            keep.push(row);
            prev.push(id as i32);
        }
        t += 1;
        if keep.len() < n && !keep.is_empty() {
            let idx: Vec<i32> = keep.iter().map(|&r| r as i32).collect();
            let k = idx.len();
            state = scorer.select(
                step.state,
                Tensor::from_data(TensorData::new(idx, [k]), &device),
            );
        } else {
            state = step.state;
        }
        live = keep.iter().map(|&r| live[r]).collect();
    }
    hyps
}
