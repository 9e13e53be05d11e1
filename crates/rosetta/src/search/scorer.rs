//! The interface between a model and the search: a start state from the source, and one step.

use crate::model::decoder::{DecoderMemory, DecoderState};
use crate::model::input::SourceBatch;
use crate::model::seq2seq::RnnSeq2Seq;
use burn::prelude::*;

/// The result of one decoding step for `n` live hypotheses.
#[derive(Debug, Clone)]
pub struct Step<B: Backend, S> {
    /// Scores of the next token, `[n, tgt_vocab]`: logits, or anything equal to the
    /// log-probabilities up to a constant per row (log-probabilities themselves, e.g. an ensemble's).
    /// The search normalizes them, each in the cheapest way it needs.
    pub logits: Tensor<B, 2>,
    /// State after the step.
    pub state: S,
    /// Attention over the source, `[n, src_len]` (none for models without attention).
    pub attention: Option<Tensor<B, 2>>,
}

/// What a model offers the search.
pub trait Scorer<B: Backend> {
    /// Everything carried from one step to the next (recurrent state, encoder memory, caches).
    type State: Clone;

    /// Encodes a source batch: the state before the first target token.
    fn start(&self, src: &SourceBatch<B>) -> Self::State;

    /// Scores the next token given the previous one, `prev`: `[n]`.
    fn step(&self, prev: Tensor<B, 1, Int>, state: Self::State) -> Step<B, Self::State>;

    /// Keeps the rows of `state` named by `indices` (`[m]`, repeats allowed), e.g. to drop finished
    /// sentences or reorder beams.
    fn select(&self, state: Self::State, indices: Tensor<B, 1, Int>) -> Self::State;

    /// [`Scorer::select`] for the case where new row `i` reads the same source sentence as old row
    /// `i` did (beam search reordering hypotheses within each sentence): what depends only on the
    /// source, such as the encoder's memory, can stay where it is.
    fn reorder(&self, state: Self::State, indices: Tensor<B, 1, Int>) -> Self::State {
        self.select(state, indices)
    }

    /// Whether [`Scorer::start`] encodes a batch in groups of similar source length
    /// ([`SourceBatch::length_groups`]) and its steps skip source padding (on the CPU; other
    /// backends' steps read it, masked), so that a batch of mixed lengths costs about what its
    /// parts would: callers then need not split batches where padding grows.
    fn groups_sources(&self) -> bool {
        false
    }

    /// Whether [`Scorer::admit`] can add sentences to a running search.
    fn admits(&self) -> bool {
        false
    }

    /// Starts the sentences of `src` and adds them to a running search as the last rows of
    /// `state`, each at its own first target position, while the rows already there go on where
    /// they are: a server refills the rows of finished sentences at the next step instead of
    /// decoding a batch's last steps with a few rows at the cost of many. Returns false, leaving
    /// `state` as it was, for models that cannot ([`Scorer::admits`]).
    fn admit(&self, state: &mut Self::State, src: &SourceBatch<B>) -> bool {
        let _ = (state, src);
        false
    }

    /// The most target tokens (`</s>` included) the model can score, e.g. the size of a learned
    /// position table; every search stops there whatever its own limit.
    fn max_len(&self) -> usize {
        usize::MAX
    }
}

/// Most output tokens for a source of `src_len` tokens: `a · src_len + b`, at least 1, and at most
/// `cap` (the model's [`Scorer::max_len`]). The one formula of every search and of validation.
pub fn max_output_len(a: f64, b: usize, src_len: usize, cap: usize) -> usize {
    ((a * src_len as f64) as usize)
        .saturating_add(b)
        .clamp(1, cap.max(1))
}

impl<B: Backend> Scorer<B> for RnnSeq2Seq<B> {
    type State = (DecoderState<B>, DecoderMemory<B>);

    fn start(&self, src: &SourceBatch<B>) -> Self::State {
        let (state, memory) = self.encode(src);
        (state, memory.for_search())
    }

    fn step(&self, prev: Tensor<B, 1, Int>, (state, memory): Self::State) -> Step<B, Self::State> {
        let (logits, state, attention) = self.decoder.decode_step(prev, state, &memory);
        Step {
            logits,
            state: (state, memory),
            attention,
        }
    }

    fn select(&self, (state, memory): Self::State, indices: Tensor<B, 1, Int>) -> Self::State {
        (state.select(indices.clone()), memory.select(indices))
    }

    fn reorder(&self, (state, memory): Self::State, indices: Tensor<B, 1, Int>) -> Self::State {
        (state.select(indices), memory)
    }
}
