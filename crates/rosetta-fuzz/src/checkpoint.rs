//! `checkpoint`: safetensors weights (`model.safetensors`) loaded into a model.

use rosetta::burn::backend::Flex;
use rosetta::config::Config;
use rosetta::model::architecture::ModelConfig;
use rosetta::model::seq2seq::RnnSeq2Seq;
use rosetta::model::transformer::Transformer;
use rosetta::train::checkpoint::{load_weights_bytes, weights_bytes};
use std::path::Path;

/// Vocabulary size of the tiny models.
const VOCAB: usize = 8;

/// A tiny attention GRU (embeddings and states of 4).
pub(crate) const TINY_RNN: &str = "[model]\narch = \"rnn\"\ncell = \"gru\"\nembedding_size = 4\n\
    encoder_hidden = 4\ndecoder_hidden = 4\nattention_size = 4\n";

/// A tiny Transformer (one layer each side, d_model 4, two heads).
pub(crate) const TINY_TRANSFORMER: &str = "[text]\nmax_len = 15\n\n[model]\narch = \"transformer\"\n\
    encoder_layers = 1\ndecoder_layers = 1\nd_model = 4\nheads = 2\nffn_size = 8\nmax_positions = 16\n";

struct Models {
    rnn: RnnSeq2Seq<Flex>,
    transformer: Transformer<Flex>,
}

fn model_config(toml: &str) -> ModelConfig {
    Config::from_toml(toml)
        .expect("the tiny model configs are valid")
        .model
}

fn build() -> Models {
    let device = Default::default();
    let ModelConfig::Rnn(rnn) = model_config(TINY_RNN) else {
        unreachable!("TINY_RNN says arch = \"rnn\"")
    };
    let ModelConfig::Transformer(transformer) = model_config(TINY_TRANSFORMER) else {
        unreachable!("TINY_TRANSFORMER says arch = \"transformer\"")
    };
    Models {
        rnn: RnnSeq2Seq::new(&rnn, VOCAB, VOCAB, &device),
        transformer: Transformer::new(&transformer, VOCAB, VOCAB, &device)
            .expect("the tiny Transformer builds"),
    }
}

thread_local! {
    static MODELS: Models = build();
}

/// The weights of the tiny models as `save_weights` writes them, for seed corpora:
/// `(file name, bytes)`.
pub fn seed_weights() -> Vec<(&'static str, Vec<u8>)> {
    MODELS.with(|m| {
        vec![
            (
                "rnn.safetensors",
                weights_bytes(&m.rnn).expect("the tiny RNN serializes"),
            ),
            (
                "transformer.safetensors",
                weights_bytes(&m.transformer).expect("the tiny Transformer serializes"),
            ),
        ]
    })
}

/// Input: the bytes of a weights file.
///
/// Properties: loading them into a tiny RNN and into a tiny Transformer gives an error or the
/// model, never a panic; weights that load write out and load again.
pub fn checkpoint(data: &[u8]) {
    let name = Path::new("model.safetensors");
    MODELS.with(|m| {
        if let Ok(rnn) = load_weights_bytes(m.rnn.clone(), data.to_vec(), name) {
            let bytes = weights_bytes(&rnn).expect("loaded weights write out");
            load_weights_bytes(m.rnn.clone(), bytes, name).expect("written weights load again");
        }
        if let Ok(transformer) = load_weights_bytes(m.transformer.clone(), data.to_vec(), name) {
            let bytes = weights_bytes(&transformer).expect("loaded weights write out");
            load_weights_bytes(m.transformer.clone(), bytes, name)
                .expect("written weights load again");
        }
    });
}
