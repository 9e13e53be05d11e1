//! Decoding written once against the [`Scorer`] interface (after Marian's `Scorer { startState; step }`),
//! so RNNs, Transformers and ensembles share the same search.

pub mod greedy;
pub mod scorer;

pub use greedy::{Hypothesis, greedy};
pub use scorer::{Scorer, Step};
