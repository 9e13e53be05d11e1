//! The models: [`architecture`] is the one interface (and the one place `arch` is read); the
//! attention RNN (`embedding` → `encoder` → `bridge` → `attention` → `decoder` → `seq2seq`) and the
//! [`transformer`] sit behind it. [`input`] makes the source batch both read.

pub mod adapter;
pub mod architecture;
pub mod attention;
pub mod bridge;
pub mod cell;
pub mod decoder;
pub mod embedding;
pub mod encoder;
pub mod input;
pub mod int8;
pub mod lora;
pub mod seq2seq;
pub mod transformer;
