//! Hugging Face Marian (OPUS-MT) import, pinned to `transformers` itself.
//!
//! The fixture (`tests/fixtures/marian-tiny*`) is a small `MarianMTModel` with SentencePiece models
//! trained on Multi30k, built and run by `scripts/fixtures/marian_tiny.py` (transformers 5.25,
//! sentencepiece 0.2): its token ids from `MarianTokenizer`, teacher-forced logits of a padded
//! batch, and the outputs and scores of `generate` (greedy; beam 3, 4, 5 with length penalties
//! 0.6, 1.0, 2.0; n-best). No Python runs here.

use burn::backend::Flex;
use burn::prelude::*;
use rosetta::config::Config;
use rosetta::marian::import_marian;
use rosetta::model::input::source_batch;
use rosetta::model::transformer::Transformer;
use rosetta::search::{BeamConfig, BeamRule, beam_search, greedy};
use rosetta::train::checkpoint::load_weights;
use rosetta_text::batch::PaddedIds;
use rosetta_text::pipeline::TextPipeline;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("marian-tiny-reference.json")).unwrap(),
    )
    .unwrap()
}

fn imported() -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    import_marian(&fixtures().join("marian-tiny"), &out.path().join("m")).unwrap();
    out
}

fn load(dir: &Path) -> (Config, TextPipeline, Transformer<Flex>) {
    let config = Config::load(&dir.join("config.toml")).unwrap();
    let pipeline = TextPipeline::load(dir).unwrap();
    let rosetta::model::architecture::ModelConfig::Transformer(t) = &config.model else {
        panic!("imported model is not a Transformer");
    };
    let model = Transformer::<Flex>::new(
        t,
        pipeline.src_vocab().len(),
        pipeline.tgt_vocab().len(),
        &Default::default(),
    )
    .unwrap();
    let model = load_weights(model, &dir.join("model.safetensors")).unwrap();
    (config, pipeline, model)
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn token_ids_equal_marian_tokenizer() {
    let dir = imported();
    let (_, pipeline, _) = load(&dir.path().join("m"));
    let r = reference();
    let eos = pipeline.tgt_vocab().specials().eos;
    for (side, lines, expected) in [
        ("source", &r["source_lines"], &r["source_ids"]),
        ("target", &r["target_lines"], &r["target_ids"]),
    ] {
        let lines = lines.as_array().unwrap();
        assert!(lines.len() >= 100, "{side}: {} lines", lines.len());
        for (line, expected) in lines.iter().zip(expected.as_array().unwrap()) {
            let line = line.as_str().unwrap();
            let mut got = if side == "source" {
                pipeline.encode_src(line).unwrap()
            } else {
                pipeline.encode_tgt(line).unwrap()
            };
            got.push(eos);
            assert_eq!(got, ids(expected), "{side} line {line:?}");
        }
    }
}

#[test]
fn logits_equal_transformers() {
    let dir = imported();
    let (_, pipeline, model) = load(&dir.path().join("m"));
    let tensors =
        rosetta::marian::weights::read_tensors(&fixtures().join("marian-tiny-logits.safetensors"))
            .unwrap();
    let as_ids = |name: &str| -> (Vec<i64>, Vec<usize>) {
        let t = &tensors[name];
        (
            t.values.iter().map(|&v| v as i64).collect(),
            t.shape.clone(),
        )
    };
    let (src, shape) = as_ids("input_ids");
    let (mask, _) = as_ids("attention_mask");
    let (dec, dec_shape) = as_ids("decoder_input_ids");
    let (batch, src_len, tgt_len) = (shape[0], shape[1], dec_shape[1]);
    let lengths: Vec<usize> = mask
        .chunks(src_len)
        .map(|row| row.iter().filter(|&&m| m == 1).count())
        .collect();
    let device = Default::default();
    let src = rosetta::model::input::SourceBatch::<Flex> {
        ids: Tensor::from_data(
            TensorData::new(
                src.iter().map(|&v| v as i32).collect::<Vec<_>>(),
                [batch, src_len],
            ),
            &device,
        ),
        lengths,
        specials: pipeline.tgt_vocab().specials(),
    };
    let tgt_in = Tensor::<Flex, 2, Int>::from_data(
        TensorData::new(
            dec.iter().map(|&v| v as i32).collect::<Vec<_>>(),
            [batch, tgt_len],
        ),
        &device,
    );
    let (logits, _) = model.forward(&src, tgt_in);
    let got: Vec<f32> = logits.into_data().to_vec().unwrap();
    let expected = &tensors["logits"];
    assert_eq!(got.len(), expected.values.len());
    // Positions past a reference's end hold padding in the decoder input; `transformers` computes
    // them anyway, and so does Rosetta, but they are compared only up to each reference's length.
    let pad = pipeline.tgt_vocab().specials().pad as i64;
    let vocab = expected.shape[2];
    let mut worst = 0.0f32;
    for b in 0..batch {
        let len = 1 + dec[b * tgt_len + 1..(b + 1) * tgt_len]
            .iter()
            .take_while(|&&t| t != pad)
            .count();
        for t in 0..len {
            let at = (b * tgt_len + t) * vocab;
            for v in 0..vocab {
                worst = worst.max((got[at + v] - expected.values[at + v]).abs());
            }
        }
    }
    assert!(worst < 1e-4, "largest logit difference {worst}");
}

fn search_source(pipeline: &TextPipeline, r: &Value) -> rosetta::model::input::SourceBatch<Flex> {
    let lines: Vec<Vec<u32>> = r["search_source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| pipeline.encode_src(l.as_str().unwrap()).unwrap())
        .collect();
    let specials = pipeline.tgt_vocab().specials();
    let padded = PaddedIds::new(lines.iter().map(Vec::as_slice), &specials, false, true);
    source_batch::<Flex>(&padded, specials, &Default::default())
}

#[test]
fn greedy_and_beam_outputs_equal_generate() {
    let dir = imported();
    let (config, pipeline, model) = load(&dir.path().join("m"));
    assert_eq!(config.decode.beam_rule, BeamRule::HuggingFace);
    let r = reference();
    let src = search_source(&pipeline, &r);
    let max_new = r["max_new_tokens"].as_u64().unwrap() as usize;
    let eos = pipeline.tgt_vocab().specials().eos;
    let strip = |v: &Value| -> Vec<u32> {
        let mut t = ids(v);
        if t.last() == Some(&eos) {
            t.pop();
        }
        t
    };
    for search in r["searches"].as_array().unwrap() {
        let name = search["name"].as_str().unwrap();
        let beam = search["beam"].as_u64().unwrap() as usize;
        let n_best = search["n_best"].as_u64().unwrap() as usize;
        let outputs = search["outputs"].as_array().unwrap();
        if beam == 1 {
            let hyps = greedy(&model, &src, |_| max_new);
            for (i, hyp) in hyps.iter().enumerate() {
                assert_eq!(hyp.tokens, strip(&outputs[i]), "{name}, sentence {i}");
            }
            continue;
        }
        let hyps = beam_search(
            &model,
            &src,
            &BeamConfig {
                beam,
                n_best,
                length_penalty: search["length_penalty"].as_f64().unwrap(),
                max_len_a: 0.0,
                max_len_b: max_new,
                rule: Some(BeamRule::HuggingFace),
                ..BeamConfig::default()
            },
        );
        let scores = search["scores"].as_array().unwrap();
        for (i, sentence) in hyps.iter().enumerate() {
            assert_eq!(sentence.len(), n_best, "{name}, sentence {i}");
            for (k, hyp) in sentence.iter().enumerate() {
                let row = i * n_best + k;
                assert_eq!(
                    hyp.tokens,
                    strip(&outputs[row]),
                    "{name}, sentence {i}, rank {k}"
                );
                let expected = scores[row].as_f64().unwrap() as f32;
                assert!(
                    (hyp.score - expected).abs() < 1e-4,
                    "{name}, sentence {i}, rank {k}: score {} vs {expected}",
                    hyp.score
                );
            }
        }
    }
}
