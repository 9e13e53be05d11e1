//! Sampling: draw each token from the model's distribution, reshaped by temperature, top-k and
//! top-p (nucleus, Holtzman et al. 2020). Seeded per sentence, so results do not depend on batching.

use super::greedy::Hypothesis;
use super::scorer::Scorer;
use crate::error::{Error, Result};
use crate::model::input::SourceBatch;
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Divide logits by this (below 1: sharper, above 1: flatter).
    pub temperature: f64,
    /// Keep only the k most probable tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = all).
    pub top_p: f64,
    /// Seed; sentence i uses a generator derived from (seed, i).
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Checks the settings in plain English.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::Config(format!(
                "sampling temperature must be positive, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Config(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Draws one token from log-probabilities reshaped by the settings.
fn draw(log_probs: &[f32], config: &SamplingConfig, rng: &mut ChaCha8Rng) -> usize {
    let t = config.temperature.max(1e-6);
    let mut order: Vec<usize> = (0..log_probs.len()).collect();
    order.sort_by(|&a, &b| log_probs[b].total_cmp(&log_probs[a]));
    if config.top_k > 0 {
        order.truncate(config.top_k);
    }
    let max = f64::from(log_probs[order[0]]);
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((f64::from(log_probs[i]) - max) / t).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut keep = weights.len();
    if config.top_p < 1.0 {
        let mut mass = 0.0;
        for (i, w) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= config.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    let kept_total: f64 = weights[..keep].iter().sum();
    let mut x = rng.random::<f64>() * kept_total;
    for (i, w) in weights[..keep].iter().enumerate() {
        x -= w;
        if x <= 0.0 {
            return order[i];
        }
    }
    order[keep - 1]
}

/// Samples one output per sentence. `sentence_ids[i]` identifies row i's sentence in the whole input
/// (its line number, say), so that a sentence always gets the same generator however it is batched.
pub fn sample<B: Backend, S: Scorer<B> + Sync>(
    scorer: &S,
    src: &SourceBatch<B>,
    config: &SamplingConfig,
    sentence_ids: &[u64],
    max_len: impl Fn(usize) -> usize + Sync,
) -> Vec<Hypothesis> {
    super::split_across_threads(src, 1, |part, rows| {
        // `translate` checks that every row has an id; a row without one keeps its own index.
        let ids: Vec<u64> = rows
            .iter()
            .map(|&i| sentence_ids.get(i).copied().unwrap_or(i as u64))
            .collect();
        sample_here(scorer, part, config, &ids, &max_len)
    })
}

/// [`sample`] on the calling thread.
fn sample_here<B: Backend, S: Scorer<B>>(
    scorer: &S,
    src: &SourceBatch<B>,
    config: &SamplingConfig,
    sentence_ids: &[u64],
    max_len: impl Fn(usize) -> usize,
) -> Vec<Hypothesis> {
    let batch = src.lengths.len();
    let device = src.ids.device();
    let src_len = src.ids.dims()[1];
    let mut rngs: Vec<ChaCha8Rng> = sentence_ids
        .iter()
        .map(|&id| {
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
            rng.set_stream(id);
            rng
        })
        .collect();
    let limits: Vec<usize> = src
        .lengths
        .iter()
        .map(|&n| max_len(n).min(scorer.max_len()).max(1))
        .collect();
    let mut hyps = vec![Hypothesis::default(); batch];
    let mut live: Vec<usize> = (0..batch).collect();
    let specials = src.specials;
    let mut prev = vec![specials.bos as i32; batch];
    let mut state = scorer.start(src);
    while !live.is_empty() {
        let n = live.len();
        let step = scorer.step(
            Tensor::from_data(TensorData::new(prev.clone(), [n]), &device),
            state,
        );
        let vocab = step.logits.dims()[1];
        let log_probs: Vec<f32> = crate::kernels::log_softmax(step.logits)
            .into_data()
            .iter::<f32>()
            .collect();
        let attention: Option<Vec<f32>> = step
            .attention
            .map(|a| a.into_data().iter::<f32>().collect());
        let mut keep = Vec::with_capacity(n);
        prev.clear();
        for (row, &sent) in live.iter().enumerate() {
            let mut lp = log_probs[row * vocab..(row + 1) * vocab].to_vec();
            // Padding and `<s>` are never outputs.
            lp[specials.pad as usize] = f32::NEG_INFINITY;
            lp[specials.bos as usize] = f32::NEG_INFINITY;
            let token = draw(&lp, config, &mut rngs[sent]) as u32;
            let hyp = &mut hyps[sent];
            hyp.log_prob += lp[token as usize];
            hyp.score = hyp.log_prob;
            if token == specials.eos {
                continue;
            }
            if let Some(a) = &attention {
                hyp.attention
                    .push(a[row * src_len..row * src_len + src.lengths[sent]].to_vec());
            }
            hyp.tokens.push(token);
            if hyp.tokens.len() < limits[sent] {
                keep.push(row);
                prev.push(token as i32);
            } else {
                hyp.hit_max_len = true;
            }
        }
        if keep.is_empty() {
            break;
        }
        state = if keep.len() < n {
            let idx: Vec<i32> = keep.iter().map(|&r| r as i32).collect();
            let k = idx.len();
            scorer.select(
                step.state,
                Tensor::from_data(TensorData::new(idx, [k]), &device),
            )
        } else {
            step.state
        };
        live = keep.iter().map(|&r| live[r]).collect();
    }
    hyps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_one_is_argmax_and_seeds_repeat() {
        let lp = [-3.0f32, -0.1, -2.0, -5.0];
        let cfg = SamplingConfig {
            top_k: 1,
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(draw(&lp, &cfg, &mut rng), 1);
        let cfg = SamplingConfig::default();
        let a: Vec<usize> = {
            let mut r = ChaCha8Rng::seed_from_u64(9);
            (0..50).map(|_| draw(&lp, &cfg, &mut r)).collect()
        };
        let b: Vec<usize> = {
            let mut r = ChaCha8Rng::seed_from_u64(9);
            (0..50).map(|_| draw(&lp, &cfg, &mut r)).collect()
        };
        assert_eq!(a, b);
        assert!(
            a.contains(&2),
            "a flat enough distribution samples other tokens too"
        );
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let lp = [(0.7f32).ln(), (0.2f32).ln(), (0.1f32).ln()];
        let cfg = SamplingConfig {
            top_p: 0.6,
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert!((0..100).all(|_| draw(&lp, &cfg, &mut rng) == 0));
    }
}
