//! Ensembles: several models with the same vocabularies decode as one model.

use super::scorer::{Scorer, Step};
use crate::error::{Error, Result};
use crate::model::input::SourceBatch;
use burn::prelude::*;

/// Several scorers read the same source and vote on every next token.
///
/// The ensemble's next-token distribution is the arithmetic mean of the members' distributions
/// (a mixture, as in fairseq's `EnsembleModel`), so the log-probabilities the search reports are
/// those of a proper distribution and n-best scores stay comparable with single models. Its
/// attention is the mean of the members' attentions. Members must share the target vocabulary;
/// [`crate::translate::Translator::load_ensemble`] checks that for model directories.
#[derive(Debug, Clone, Copy)]
pub struct Ensemble<'a, S> {
    members: &'a [S],
}

impl<'a, S> Ensemble<'a, S> {
    /// An ensemble of `members` (at least one).
    pub fn new(members: &'a [S]) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::Config("an ensemble needs at least one model".into()));
        }
        Ok(Ensemble { members })
    }

    /// The members.
    pub fn members(&self) -> &'a [S] {
        self.members
    }
}

/// `log(mean_k exp(log_probs[k]))` per entry, computed stably: `[n, vocab]` each → `[n, vocab]`.
pub fn mixture<B: Backend>(mut log_probs: Vec<Tensor<B, 2>>) -> Tensor<B, 2> {
    if log_probs.len() == 1
        && let Some(only) = log_probs.pop()
    {
        return only;
    }
    let k = log_probs.len() as f32;
    let stacked: Tensor<B, 3> = Tensor::stack(log_probs, 0); // [k, n, vocab]
    // A token every member rules out (−∞ everywhere) must stay −∞, not become NaN from −∞ − (−∞).
    let max = stacked.clone().max_dim(0).clamp_min(f32::MIN); // [1, n, vocab]
    let sum = (stacked - max.clone()).exp().sum_dim(0); // [1, n, vocab]
    (sum.log() + max).squeeze_dim::<2>(0) - k.ln()
}

impl<B: Backend, S: Scorer<B>> Scorer<B> for Ensemble<'_, S> {
    /// One state per member, in member order.
    type State = Vec<S::State>;

    fn start(&self, src: &SourceBatch<B>) -> Self::State {
        self.members.iter().map(|m| m.start(src)).collect()
    }

    /// `prev`: `[n]` → log-probabilities `[n, tgt_vocab]`, attention `[n, src_len]`.
    fn step(&self, prev: Tensor<B, 1, Int>, states: Self::State) -> Step<B, Self::State> {
        let k = self.members.len();
        let mut logits = Vec::with_capacity(k);
        let mut attentions = Vec::with_capacity(k);
        let mut next = Vec::with_capacity(k);
        for (member, state) in self.members.iter().zip(states) {
            let step = member.step(prev.clone(), state);
            logits.push(step.logits);
            attentions.extend(step.attention);
            next.push(step.state);
        }
        let attention = (!attentions.is_empty()).then(|| {
            Tensor::stack::<3>(attentions, 0)
                .mean_dim(0)
                .squeeze_dim::<2>(0)
        });
        Step {
            logits: crate::kernels::mixture_of_logits(logits),
            state: next,
            attention,
        }
    }

    fn select(&self, states: Self::State, indices: Tensor<B, 1, Int>) -> Self::State {
        self.members
            .iter()
            .zip(states)
            .map(|(m, s)| m.select(s, indices.clone()))
            .collect()
    }

    fn max_len(&self) -> usize {
        self.members
            .iter()
            .map(Scorer::max_len)
            .min()
            .unwrap_or(usize::MAX)
    }

    fn groups_sources(&self) -> bool {
        self.members.iter().all(Scorer::groups_sources)
    }

    fn admits(&self) -> bool {
        self.members.iter().all(Scorer::admits)
    }

    /// Every member admits the sentences into its own state (all or none: asked only when all
    /// can).
    fn admit(&self, states: &mut Self::State, src: &SourceBatch<B>) -> bool {
        self.admits()
            && self
                .members
                .iter()
                .zip(states.iter_mut())
                .all(|(m, s)| m.admit(s, src))
    }

    fn reorder(&self, states: Self::State, indices: Tensor<B, 1, Int>) -> Self::State {
        self.members
            .iter()
            .zip(states)
            .map(|(m, s)| m.reorder(s, indices.clone()))
            .collect()
    }
}
