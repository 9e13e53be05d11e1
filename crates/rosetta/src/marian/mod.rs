//! Hugging Face Marian (OPUS-MT) models: import into a Rosetta model directory, and export back.
//!
//! In data-flow order: [`config`] (`config.json` ↔ the Transformer's settings) → [`weights`]
//! (tensor names and layouts) → [`import`] (a whole directory: tokenizers, vocabulary, weights)
//! and [`export`] (the way back).

pub mod config;
pub mod export;
pub mod import;
pub mod weights;

pub use export::export_marian;
pub use import::{ImportReport, import_marian};
