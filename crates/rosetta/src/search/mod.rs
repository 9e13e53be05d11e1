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

/// Runs a search on a worker of rayon's global pool, so that the kernels' parallel loops start on
/// that worker: called from another thread, every loop was handed to the pool while the caller
/// slept until it finished (a wake-up and two context switches per loop, dozens per step: 4 % of a
/// one-thread batch-32 Transformer decode in the kernel's scheduler, and 3,200 context switches
/// instead of 330 for 30 sentences at batch size 1). Inside the pool it runs in place.
fn on_pool_worker<R: Send>(search: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| search())
}
