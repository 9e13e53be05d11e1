//! Decoding speed: greedy versus beam 5 on 1,000 Multi30k test sentences (de→en).
//!
//! `cargo bench -p rosetta --bench decode`. It uses the model directory in `ROSETTA_MODEL` when set;
//! otherwise it first trains a small model on Multi30k (a few minutes) so that outputs have realistic
//! lengths. It skips when `../shared/data/multi30k` is absent. This is a benchmark, not a test.

use burn::backend::{Autodiff, Flex};
use rosetta::config::Config;
use rosetta::model::architecture::ModelConfig;
use rosetta::model::seq2seq::RnnConfig;
use rosetta::train::schedule::ScheduleKind;
use rosetta::train::trainer::{Silent, TrainData, TrainOptions, train};
use rosetta::translate::{TranslateOptions, Translator};
use rosetta_text::corpus::{CorpusSource, read_lines};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let data = std::env::var_os("ROSETTA_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
        .join("multi30k");
    if !data.join("test_2016_flickr.de.gz").exists() {
        eprintln!("skipping: {} not found", data.display());
        return;
    }
    let device = Default::default();
    let (model_dir, _keep) = match std::env::var_os("ROSETTA_MODEL") {
        Some(dir) => (PathBuf::from(dir), None),
        None => {
            let tmp = tempfile::tempdir().expect("temp dir");
            let mut c = Config::default();
            c.text.vocab_size = 8000;
            c.model = ModelConfig::Rnn(RnnConfig {
                embedding_size: 128,
                encoder_hidden: 128,
                encoder_layers: 1,
                decoder_hidden: 256,
                attention_size: 256,
                ..RnnConfig::default()
            });
            c.train.batch_tokens = 3000;
            c.train.learning_rate = 2e-3;
            c.train.schedule = ScheduleKind::Constant;
            c.train.max_epochs = 0;
            c.train.max_steps = 400;
            c.train.valid_every = 100_000;
            let train_data = TrainData {
                train: CorpusSource::Parallel {
                    src: data.join("train.de.gz"),
                    tgt: data.join("train.en.gz"),
                },
                valid: None,
            };
            let options = TrainOptions {
                model_dir: tmp.path().to_path_buf(),
                resume: false,
            };
            let clock = Instant::now();
            train::<Autodiff<Flex>>(&c, &train_data, &options, &device, &mut Silent)
                .expect("train");
            eprintln!(
                "trained a small model for the benchmark in {:.0} s",
                clock.elapsed().as_secs_f64()
            );
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    let translator = Translator::<Flex>::load(&model_dir, &device).expect("load model");
    let lines = read_lines(data.join("test_2016_flickr.de.gz")).expect("test set");
    let inputs: Vec<&str> = lines.iter().map(String::as_str).take(1000).collect();
    let mut results = Vec::new();
    for (name, beam) in [("greedy", 1), ("beam-5", 5)] {
        let mut options = TranslateOptions::default();
        options.search.beam = beam;
        let mut best = f64::MAX;
        let mut tokens = 0;
        for _ in 0..2 {
            let clock = Instant::now();
            let out = translator.translate(&inputs, &options).expect("translate");
            best = best.min(clock.elapsed().as_secs_f64());
            tokens = out
                .iter()
                .map(|t| t.best().map_or(0, |c| c.pieces.len() + 1))
                .sum();
        }
        println!(
            "{name:>7}: {:.2} s for {} sentences ({:.1} sentences/s, {:.0} target tokens/s), best of 2",
            best,
            inputs.len(),
            inputs.len() as f64 / best,
            tokens as f64 / best
        );
        results.push(best);
    }
    println!("beam-5 / greedy time: {:.2}x", results[1] / results[0]);
}
