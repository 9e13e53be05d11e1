//! Rosetta's text pipeline, free of any deep-learning dependency.
//!
//! Data flows through the modules in this order:
//! [`corpus`] (read and validate parallel text) → [`normalize`] (Unicode NFC) → [`tokenize`]
//! (word, space, char, BPE, unigram) → [`vocab`] (token ↔ id) → [`encoded`] (compact id storage) →
//! [`batch`] (length-bucketed, token-limited batches with padding masks).
//! [`pipeline`] ties normalization, tokenizers and vocabularies together and saves them.
//! [`metrics`] scores hypotheses against references exactly like sacreBLEU 2.x.
#![deny(missing_docs)]

pub mod atomic;
pub mod batch;
pub mod corpus;
pub mod encoded;
pub mod error;
pub mod metrics;
pub mod normalize;
pub mod pipeline;
pub mod stats;
pub mod tasks;
pub mod tokenize;
pub mod vocab;

pub use error::{Error, Result};
