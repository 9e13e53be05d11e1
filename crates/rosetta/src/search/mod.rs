//! Decoding written once against the [`Scorer`] interface (after Marian's `Scorer { startState; step }`),
//! so RNNs, Transformers and ensembles share the same search.

pub mod beam;
pub mod ensemble;
pub mod greedy;
pub mod sampling;
pub mod scorer;

pub use beam::{BeamConfig, BeamRule, DEFAULT_MAX_LEN_A, DEFAULT_MAX_LEN_B, beam_search};
pub use ensemble::Ensemble;
pub use greedy::{Hypothesis, greedy};
pub use sampling::{SamplingConfig, sample};
pub use scorer::{Scorer, Step, max_output_len};
