//! The attention RNN encoder-decoder, one concept per file, in data-flow order.

pub mod attention;
pub mod bridge;
pub mod cell;
pub mod decoder;
pub mod embedding;
pub mod encoder;
pub mod input;
pub mod seq2seq;
