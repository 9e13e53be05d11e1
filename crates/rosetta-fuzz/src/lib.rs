//! Fuzzing harnesses for every parser of outside input, one function per target.
//!
//! Each function takes arbitrary bytes, drives the real parser with them, and panics only when a
//! property is broken: a parser that answers an error is doing its job. The cargo-fuzz targets in
//! `fuzz/fuzz_targets/` (run with `cargo +nightly fuzz run <target>`) call these functions, and so
//! does an ordinary test (`tests/corpus.rs`) over the committed seed corpora in
//! `fuzz/corpus/<target>/`, so CI exercises every harness on stable.
//!
//! Everything runs in memory (readers for corpora and score input, bytes and text for
//! vocabularies, weights and configs); what a sweep file names (its base config, a decoding
//! sweep's model directory) is read from the repository's own examples and fixtures.
#![deny(missing_docs)]

mod checkpoint;
mod configs;
mod corpus;
mod score;
mod serve;
mod sweep;
mod tokenize;
mod vocab;

pub use checkpoint::checkpoint;
pub use configs::{config_toml, text_toml};
pub use corpus::corpus;
pub use score::score;
pub use serve::serve_request;
pub use sweep::sweep;
pub use tokenize::{subword, tokenize};
pub use vocab::vocab;

/// A harness: takes any bytes, panics only when a property is broken.
pub type Harness = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/` and `fuzz/corpus/` name them.
pub const TARGETS: &[(&str, Harness)] = &[
    ("corpus", corpus),
    ("tokenize", tokenize),
    ("subword", subword),
    ("vocab", vocab),
    ("text_toml", text_toml),
    ("config_toml", config_toml),
    ("sweep", sweep),
    ("checkpoint", checkpoint),
    ("score", score),
    ("serve_request", serve_request),
];

/// The repository's root directory (harnesses read its fixtures and examples).
pub fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Splits `data` at a little-endian `u16` length prefix: the first part has that many bytes (or
/// what is left), the second the rest. `None` when `data` is shorter than the prefix.
fn split_prefixed(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let n = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    Some(rest.split_at(n))
}

/// The seeds Rosetta's own code writes (weights of the tiny models, `config.toml` and
/// `text.toml` as training writes them), as `(target, file name, bytes)`: the committed ones in
/// `fuzz/corpus/` were written by this function (`cargo test -p rosetta-fuzz -- --ignored`).
pub fn generated_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, bytes) in checkpoint::seed_weights() {
        seeds.push(("checkpoint", name.to_owned(), bytes));
    }
    let configs = [
        ("rnn", checkpoint::TINY_RNN),
        ("transformer", checkpoint::TINY_TRANSFORMER),
        ("default", ""),
    ];
    for (name, toml) in configs {
        let config = rosetta::config::Config::from_toml(toml).expect("the seed configs are valid");
        let text = config.to_toml().expect("a valid config writes out");
        seeds.push(("config_toml", format!("{name}.toml"), text.into_bytes()));
    }
    let text = rosetta_text::pipeline::TextConfig::default()
        .to_toml()
        .expect("the default text settings write out");
    seeds.push(("text_toml", "default.toml".to_owned(), text.into_bytes()));
    seeds
}
