//! The interface between a model and the search: a start state from the source, and one step.

use crate::model::decoder::{DecoderMemory, DecoderState};
use crate::model::encoder::SourceBatch;
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
}

impl<B: Backend> Scorer<B> for RnnSeq2Seq<B> {
    type State = (DecoderState<B>, DecoderMemory<B>);

    fn start(&self, src: &SourceBatch<B>) -> Self::State {
        self.encode(src)
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
