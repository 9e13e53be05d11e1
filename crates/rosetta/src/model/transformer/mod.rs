//! The Transformer encoder-decoder (Vaswani et al. 2017), written in Rosetta so that its decoder
//! cache serves beam search (rows selected and reordered) and its layout covers Marian/OPUS-MT's.
//! In data-flow order: [`config`] → [`positions`] → [`attention`] → [`layers`] → [`model`].

pub mod attention;
pub mod config;
pub mod layers;
pub mod model;
pub mod norm;
pub mod positions;

pub use config::TransformerConfig;
pub use model::{Transformer, TransformerState};
