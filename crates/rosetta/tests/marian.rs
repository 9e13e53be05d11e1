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

/// Each sentence's `n_best` hypotheses equal the reference's tokens (row `i · n_best + k` of
/// `expected` and `scores`), with scores that `close(got, expected)` accepts.
fn assert_beams(
    name: &str,
    hyps: &[Vec<rosetta::search::Hypothesis>],
    n_best: usize,
    expected: &[Vec<u32>],
    scores: &Value,
    close: impl Fn(f32, f32) -> bool,
) {
    let scores = scores.as_array().unwrap();
    for (i, sentence) in hyps.iter().enumerate() {
        assert_eq!(sentence.len(), n_best, "{name}, sentence {i}");
        for (k, hyp) in sentence.iter().enumerate() {
            let row = i * n_best + k;
            assert_eq!(hyp.tokens, expected[row], "{name}, sentence {i}, rank {k}");
            let want = scores[row].as_f64().unwrap() as f32;
            assert!(
                close(hyp.score, want),
                "{name}, sentence {i}, rank {k}: score {} vs {want}",
                hyp.score
            );
        }
    }
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
                max_len_a: Some(0.0),
                max_len_b: Some(max_new),
                rule: Some(BeamRule::HuggingFace),
                ..BeamConfig::default()
            },
        );
        let expected: Vec<Vec<u32>> = outputs.iter().map(strip).collect();
        assert_beams(
            name,
            &hyps,
            n_best,
            &expected,
            &search["scores"],
            |got, want| (got - want).abs() < 1e-4,
        );
    }
}

/// `--beam-rule ctranslate2` gives CTranslate2's beam search output for output, scores included
/// (`scripts/fixtures/ct2_beam.py` ran CTranslate2 on the converted fixture). Scores agree within
/// 1 %: CTranslate2's log-probabilities of this tiny model differ from `transformers`' (which ours
/// equal, `logits_equal_transformers`) by up to 0.3 % on one sentence, while a wrong length in
/// the normalization would be off by at least 1 in 41.
#[test]
fn beam_rule_ctranslate2_equals_ctranslate2() {
    let dir = imported();
    let (_, pipeline, model) = load(&dir.path().join("m"));
    let r = reference();
    let ct2: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("marian-tiny-ctranslate2.json")).unwrap(),
    )
    .unwrap();
    let src = search_source(&pipeline, &r);
    let max_len = ct2["max_decoding_length"].as_u64().unwrap() as usize;
    for search in ct2["searches"].as_array().unwrap() {
        let name = search["name"].as_str().unwrap();
        let n_best = search["n_best"].as_u64().unwrap() as usize;
        let hyps = beam_search(
            &model,
            &src,
            &BeamConfig {
                beam: search["beam"].as_u64().unwrap() as usize,
                n_best,
                length_penalty: search["length_penalty"].as_f64().unwrap(),
                max_len_a: Some(0.0),
                max_len_b: Some(max_len),
                rule: Some(BeamRule::Ctranslate2),
                ..BeamConfig::default()
            },
        );
        let expected: Vec<Vec<u32>> = search["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids)
            .collect();
        assert_beams(
            name,
            &hyps,
            n_best,
            &expected,
            &search["scores"],
            |got, want| (got - want).abs() < 1e-2 * want.abs(),
        );
    }
}

#[test]
fn pytorch_bin_imports_the_same_weights_as_safetensors() {
    let hf = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("marian-tiny")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "model.safetensors" {
            std::fs::copy(entry.path(), hf.path().join(entry.file_name())).unwrap();
        }
    }
    std::fs::copy(
        fixtures().join("marian-tiny-pytorch_model.bin"),
        hf.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let report = import_marian(hf.path(), &out.path().join("bin")).unwrap();
    assert!(report.weights.ends_with("pytorch_model.bin"));
    let reference = imported();
    let read = |dir: &Path| {
        rosetta::marian::weights::read_tensors(&dir.join("model.safetensors")).unwrap()
    };
    assert_eq!(
        read(&out.path().join("bin")),
        read(&reference.path().join("m"))
    );
}

#[test]
fn export_gives_back_the_hugging_face_tensors_and_files() {
    let dir = imported();
    let out = tempfile::tempdir().unwrap();
    rosetta::marian::export_marian(&dir.path().join("m"), out.path()).unwrap();
    let read = rosetta::marian::weights::read_tensors;
    let original = read(&fixtures().join("marian-tiny/model.safetensors")).unwrap();
    let exported = read(&out.path().join("model.safetensors")).unwrap();
    // Every tensor `transformers` saved comes back bit for bit (so its logits are unchanged);
    // the export adds only the tied copies of the shared table.
    for (name, tensor) in &original {
        assert_eq!(exported.get(name), Some(tensor), "{name}");
    }
    for name in exported.keys().filter(|k| !original.contains_key(*k)) {
        assert!(name.ends_with("embed_tokens.weight"), "unexpected {name}");
    }
    for file in ["source.spm", "target.spm"] {
        assert_eq!(
            std::fs::read(out.path().join(file)).unwrap(),
            std::fs::read(fixtures().join("marian-tiny").join(file)).unwrap(),
            "{file}"
        );
    }
    let vocab = |p: PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    assert_eq!(
        vocab(out.path().join("vocab.json")),
        vocab(fixtures().join("marian-tiny/vocab.json"))
    );
    let config = vocab(out.path().join("config.json"));
    let original_config = vocab(fixtures().join("marian-tiny/config.json"));
    for key in [
        "d_model",
        "encoder_layers",
        "decoder_layers",
        "encoder_attention_heads",
        "encoder_ffn_dim",
        "activation_function",
        "vocab_size",
        "pad_token_id",
        "eos_token_id",
        "decoder_start_token_id",
        "scale_embedding",
        "max_position_embeddings",
        "share_encoder_decoder_embeddings",
    ] {
        assert_eq!(config[key], original_config[key], "{key}");
    }
    // An existing export is never overwritten.
    let err = rosetta::marian::export_marian(&dir.path().join("m"), out.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds"), "{err}");
    // And the exported directory imports again to the same model.
    let again = tempfile::tempdir().unwrap();
    import_marian(out.path(), &again.path().join("m")).unwrap();
    assert_eq!(
        read(&again.path().join("m/model.safetensors")).unwrap(),
        read(&dir.path().join("m/model.safetensors")).unwrap()
    );
}

/// A copy of the fixture directory to damage.
fn fixture_copy() -> tempfile::TempDir {
    let hf = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("marian-tiny")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), hf.path().join(entry.file_name())).unwrap();
    }
    hf
}

fn import_error(hf: &Path) -> String {
    let out = tempfile::tempdir().unwrap();
    let err = import_marian(hf, &out.path().join("m"))
        .unwrap_err()
        .to_string();
    assert!(
        !out.path().join("m/config.toml").exists(),
        "a failed import must not leave a model behind"
    );
    err
}

#[test]
fn hostile_directories_are_clear_errors_naming_the_file_or_key() {
    // Truncated weights.
    let hf = fixture_copy();
    let weights = hf.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = import_error(hf.path());
    assert!(err.contains("model.safetensors"), "{err}");

    // Bit-flipped header.
    let mut flipped = bytes.clone();
    flipped[10] ^= 0xff;
    std::fs::write(&weights, &flipped).unwrap();
    let err = import_error(hf.path());
    assert!(err.contains("model.safetensors"), "{err}");

    // Another architecture's config.json.
    let hf = fixture_copy();
    let path = hf.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"marian\"", "\"bart\"")).unwrap();
    let err = import_error(hf.path());
    assert!(err.contains("config.json") && err.contains("bart"), "{err}");

    // A Marian variant Rosetta does not compute.
    std::fs::write(
        &path,
        text.replace(
            "\"model_type\"",
            "\"normalize_before\": true, \"model_type\"",
        ),
    )
    .unwrap();
    let err = import_error(hf.path());
    assert!(err.contains("normalize_before"), "{err}");
    std::fs::write(&path, text.replace("\"swish\"", "\"tanh\"")).unwrap();
    let err = import_error(hf.path());
    assert!(
        err.contains("activation_function") && err.contains("tanh"),
        "{err}"
    );
    std::fs::write(&path, text.replace("\"d_model\": 64", "\"d_model\": 32")).unwrap();
    let err = import_error(hf.path());
    assert!(err.contains("model.safetensors"), "{err}");

    // Missing SentencePiece model.
    let hf = fixture_copy();
    std::fs::remove_file(hf.path().join("source.spm")).unwrap();
    let err = import_error(hf.path());
    assert!(err.contains("source.spm"), "{err}");

    // Corrupt vocabulary.
    let hf = fixture_copy();
    std::fs::write(hf.path().join("vocab.json"), "{\"</s>\": 0, \"a\": 0}").unwrap();
    let err = import_error(hf.path());
    assert!(err.contains("vocab.json"), "{err}");

    // No weights at all.
    let hf = fixture_copy();
    std::fs::remove_file(hf.path().join("model.safetensors")).unwrap();
    let err = import_error(hf.path());
    assert!(err.contains("pytorch_model.bin"), "{err}");

    // A corrupt pytorch_model.bin.
    std::fs::write(
        hf.path().join("pytorch_model.bin"),
        b"PK\x03\x04 not really a zip",
    )
    .unwrap();
    let err = import_error(hf.path());
    assert!(err.contains("pytorch_model.bin"), "{err}");
}

/// The 100 aligned Multi30k validation pairs of the reference file.
fn aligned_pairs(r: &Value) -> Vec<(String, String)> {
    let src = r["source_lines"].as_array().unwrap();
    let tgt = r["target_lines"].as_array().unwrap();
    (0..100)
        .map(|i| {
            (
                src[i].as_str().unwrap().to_owned(),
                tgt[i].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// 12 constant-rate steps of fine-tuning from the model directory `base`.
fn finetune_config(base: &Path, learning_rate: f64) -> Config {
    let mut config = Config::default();
    config.train.init_from = Some(base.to_path_buf());
    config.train.batch_tokens = 600;
    config.train.learning_rate = learning_rate;
    config.train.schedule = rosetta::train::schedule::ScheduleKind::Constant;
    config.train.max_epochs = 0;
    config.train.max_steps = 12;
    config.train.valid_every = 1000;
    config
}

/// `pairs` as training data, without validation.
fn memory_data(pairs: &[(String, String)]) -> rosetta::train::trainer::TrainData {
    rosetta::train::trainer::TrainData {
        train: rosetta_text::corpus::CorpusSource::Memory(std::sync::Arc::new(pairs.to_vec())),
        valid: None,
    }
}

/// Mean negative log-likelihood per target token of `pairs` under the model in `dir`.
fn per_token_nll(dir: &Path, pairs: &[(String, String)]) -> f64 {
    let sources: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    let refs: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    let t = rosetta::translate::Translator::<Flex>::load(dir, &Default::default()).unwrap();
    let (nll, tokens) = t.score_references(&sources, &refs, 2000).unwrap();
    nll / tokens as f64
}

/// The best translation of each source of `pairs` by the model in `dir`, default search.
fn first_translations(dir: &Path, pairs: &[(String, String)]) -> Vec<String> {
    let sources: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    let t = rosetta::translate::Translator::<Flex>::load(dir, &Default::default()).unwrap();
    t.translate(&sources, &rosetta::translate::TranslateOptions::default())
        .unwrap()
        .into_iter()
        .map(|tr| tr.candidates[0].text.clone())
        .collect()
}

#[test]
fn imported_model_fine_tunes_end_to_end() {
    use burn::backend::Autodiff;
    use rosetta::train::trainer::{Silent, TrainOptions, train};

    let base = imported();
    let r = reference();
    let pairs = aligned_pairs(&r);
    let config = finetune_config(&base.path().join("m"), 3e-4);
    let out = tempfile::tempdir().unwrap();
    let data = memory_data(&pairs);
    let options = TrainOptions {
        model_dir: out.path().join("ft"),
        resume: false,
    };
    let summary =
        train::<Autodiff<Flex>>(&config, &data, &options, &Default::default(), &mut Silent)
            .unwrap();
    assert_eq!(summary.steps, 12);

    // The fine-tuned directory keeps the imported text pipeline and decoding rule…
    let saved = Config::load(&out.path().join("ft/config.toml")).unwrap();
    assert_eq!(saved.decode.beam_rule, BeamRule::HuggingFace);
    assert_eq!(saved.train.init_from, config.train.init_from);
    // …and fits the data it was tuned on better than the starting model.
    let nll = |dir: &Path| per_token_nll(dir, &pairs);
    let before = nll(&base.path().join("m"));
    let after = nll(&out.path().join("ft"));
    assert!(
        after < before - 0.05,
        "per-token NLL {before:.3} → {after:.3}"
    );
    // It exports back to Hugging Face like the model it came from.
    let hf = tempfile::tempdir().unwrap();
    rosetta::marian::export_marian(&out.path().join("ft"), hf.path()).unwrap();
    assert!(hf.path().join("config.json").exists());

    // Regression (review): `--resume` on a directory holding a model but no checkpoint (an import)
    // must not retrain it from scratch over its files.
    let resumed = TrainOptions {
        model_dir: base.path().join("m"),
        resume: true,
    };
    let err = train::<Autodiff<Flex>>(&config, &data, &resumed, &Default::default(), &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no checkpoint") && err.contains("init_from"),
        "{err}"
    );

    // Changing the architecture or the vocabulary while fine-tuning is refused.
    let mut wrong = config.clone();
    wrong.model = rosetta::model::architecture::ModelConfig::Transformer(
        rosetta::model::transformer::TransformerConfig {
            d_model: 32,
            ..Default::default()
        },
    );
    let options = TrainOptions {
        model_dir: out.path().join("wrong"),
        resume: false,
    };
    let err = train::<Autodiff<Flex>>(&wrong, &data, &options, &Default::default(), &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[model]"), "{err}");
    let mut wrong = config.clone();
    wrong.text.tokenizer = rosetta_text::tokenize::TokenizerKind::Word;
    let err = train::<Autodiff<Flex>>(&wrong, &data, &options, &Default::default(), &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[text]"), "{err}");
}

#[test]
fn lora_trains_only_its_updates_saves_the_adapter_alone_and_merges() {
    use burn::backend::Autodiff;
    use rosetta::model::lora::{FinetuneConfig, FinetuneMethod};
    use rosetta::train::checkpoint;
    use rosetta::train::trainer::{Silent, TrainOptions, train};

    let base = imported();
    let base_dir = base.path().join("m");
    let r = reference();
    let pairs = aligned_pairs(&r);
    let mut config = finetune_config(&base_dir.clone(), 3e-3);
    config.finetune = FinetuneConfig {
        method: FinetuneMethod::Lora,
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: vec!["q_proj".into(), "v_proj".into(), "fc1".into()],
        ..FinetuneConfig::default()
    };
    let out = tempfile::tempdir().unwrap();
    let ft = out.path().join("lora");
    let data = memory_data(&pairs);
    let options = TrainOptions {
        model_dir: ft.clone(),
        resume: false,
    };
    train::<Autodiff<Flex>>(&config, &data, &options, &Default::default(), &mut Silent).unwrap();

    // The directory holds the adapter alone: LoRA keys only, a fraction of the base's size.
    assert!(!ft.join("model.safetensors").exists());
    let adapter = rosetta::marian::weights::read_tensors(&ft.join("adapter.safetensors")).unwrap();
    assert!(!adapter.is_empty());
    assert!(
        adapter.keys().all(|k| k.contains("_lora.")),
        "{:?}",
        adapter.keys()
    );
    // 2 layers × (encoder q, v + decoder self q, v + cross q, v) and fc1 per layer.
    assert_eq!(adapter.len(), 2 * (2 + 4 + 1 + 1) * 2);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&ft.join("adapter.safetensors")) * 10 < size(&base_dir.join("model.safetensors")));
    assert!(
        adapter
            .iter()
            .filter(|(k, _)| k.ends_with("_lora.b"))
            .all(|(_, t)| t.values.iter().any(|&v| v != 0.0)),
        "every B was trained away from zero"
    );

    // The base stayed frozen: the last resumable checkpoint holds the imported weights unchanged.
    let (_, pipeline, base_model) = load(&base_dir);
    let rosetta::model::architecture::ModelConfig::Transformer(t) =
        &Config::load(&ft.join("config.toml")).unwrap().model
    else {
        panic!()
    };
    let device = Default::default();
    let weights = |m: &Transformer<Flex>| -> Vec<f32> {
        let mut all: Vec<f32> = m.encoder.layers[0]
            .self_attn
            .q_proj
            .weight
            .val()
            .into_data()
            .to_vec()
            .unwrap();
        all.extend(
            m.shared
                .as_ref()
                .unwrap()
                .weight
                .val()
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
        );
        all.extend(
            m.decoder.layers[1]
                .fc1
                .weight
                .val()
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
        );
        all
    };
    let last_checkpoint = || {
        let Some((_, last)) = checkpoint::list(&ft).unwrap().pop() else {
            panic!("no checkpoint");
        };
        // Checkpoints hold the updates alone (the base is init_from's), as the optimizer does.
        assert!(!last.join("model.mpk").exists());
        let saved =
            rosetta::marian::weights::read_tensors(&last.join("adapter.safetensors")).unwrap();
        assert!(
            saved.keys().all(|k| k.contains("_lora.")),
            "{:?}",
            saved.keys()
        );
        let model = Transformer::<Flex>::new(
            t,
            pipeline.src_vocab().len(),
            pipeline.tgt_vocab().len(),
            &device,
        )
        .unwrap()
        .frozen_with_finetune(&config.finetune, &device);
        checkpoint::load_checkpoint_model(model, &last, Some(&base_dir), &device).unwrap()
    };
    assert_eq!(weights(&last_checkpoint()), weights(&base_model));

    // It fits its data better, translates unmerged (merged at load) and merged alike.
    let nll = |dir: &Path| per_token_nll(dir, &pairs);
    let before = nll(&base_dir);
    let after = nll(&ft);
    assert!(
        after < before - 0.05,
        "per-token NLL {before:.3} → {after:.3}"
    );
    let merged = out.path().join("merged");
    rosetta::train::merge::merge_adapter::<Flex>(&ft, &merged, &Default::default()).unwrap();
    assert!(merged.join("model.safetensors").exists());
    assert!((nll(&merged) - after).abs() < 1e-4);
    let translate = |dir: &Path| first_translations(dir, &pairs[..20]);
    assert_eq!(translate(&ft), translate(&merged));
    // Averaging checkpoints and resuming work on the unmerged adapter too.
    let avg = out.path().join("avg");
    rosetta::train::average::average_checkpoints::<Flex>(
        &ft,
        &rosetta::train::average::Selection::All,
        &avg,
        &Default::default(),
    )
    .unwrap();
    assert!((nll(&avg) - after).abs() < 1e-4);
    let mut more = config.clone();
    more.train.max_steps = 16;
    let resumed = TrainOptions {
        model_dir: ft.clone(),
        resume: true,
    };
    let summary =
        train::<Autodiff<Flex>>(&more, &data, &resumed, &Default::default(), &mut Silent).unwrap();
    assert_eq!(summary.steps, 16);
    assert!(nll(&ft) < after);
    assert_eq!(
        weights(&last_checkpoint()),
        weights(&base_model),
        "frozen after resume"
    );

    // An unmerged adapter cannot be exported; the merged model can.
    let err = rosetta::marian::export_marian(&ft, &out.path().join("hf"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rosetta merge"), "{err}");
    rosetta::marian::export_marian(&merged, &out.path().join("hf")).unwrap();

    // Merging a model without an adapter is refused.
    let err = rosetta::train::merge::merge_adapter::<Flex>(
        &merged,
        &out.path().join("x"),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nothing to merge"), "{err}");

    // A LoRA target the model does not have is a clear error before anything trains.
    let mut wrong = config.clone();
    wrong.finetune.targets = vec!["gate_proj".into()];
    let options = TrainOptions {
        model_dir: out.path().join("wrong"),
        resume: false,
    };
    let err = train::<Autodiff<Flex>>(&wrong, &data, &options, &Default::default(), &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("gate_proj"), "{err}");
}

#[test]
fn adapters_train_alone_run_in_the_search_and_merge_into_a_self_contained_directory() {
    use burn::backend::Autodiff;
    use rosetta::model::lora::{FinetuneConfig, FinetuneMethod};
    use rosetta::train::trainer::{Silent, TrainOptions, train};
    use rosetta::translate::Translator;

    let base = imported();
    let base_dir = base.path().join("m");
    let pairs = aligned_pairs(&reference());
    let mut config = finetune_config(&base_dir.clone(), 3e-3);
    config.finetune = FinetuneConfig {
        method: FinetuneMethod::Adapter,
        bottleneck: 16,
        ..FinetuneConfig::default()
    };
    let out = tempfile::tempdir().unwrap();
    let ft = out.path().join("adapter");
    let data = memory_data(&pairs);
    let options = TrainOptions {
        model_dir: ft.clone(),
        resume: false,
    };
    train::<Autodiff<Flex>>(&config, &data, &options, &Default::default(), &mut Silent).unwrap();

    let adapter = rosetta::marian::weights::read_tensors(&ft.join("adapter.safetensors")).unwrap();
    assert!(
        adapter.keys().all(|k| k.contains("_adapter.")),
        "{:?}",
        adapter.keys()
    );
    // Encoder layers: 2 adapters; decoder layers: 3; each a down and an up layer with biases.
    assert_eq!(adapter.len(), (2 * 2 + 2 * 3) * 4);

    let nll = |dir: &Path| per_token_nll(dir, &pairs);
    let before = nll(&base_dir);
    let after = nll(&ft);
    assert!(
        after < before - 0.05,
        "per-token NLL {before:.3} → {after:.3}"
    );

    // A base changed since the adapter was trained (here one bit of its last weight) is refused,
    // naming the adapter and the base, instead of translating with weights it never saw.
    let weights = base_dir.join("model.safetensors");
    let original = std::fs::read(&weights).unwrap();
    let mut changed = original.clone();
    *changed.last_mut().unwrap() ^= 1;
    std::fs::write(&weights, &changed).unwrap();
    let err = Translator::<Flex>::load(&ft, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("other base weights") && err.contains("adapter.safetensors"),
        "{err}"
    );
    std::fs::write(&weights, &original).unwrap();

    // Merged: base and adapters in one directory that no longer needs the base.
    let merged = out.path().join("merged");
    rosetta::train::merge::merge_adapter::<Flex>(&ft, &merged, &Default::default()).unwrap();
    drop(base);
    assert!((nll(&merged) - after).abs() < 1e-4);
    let translate = |dir: &Path| first_translations(dir, &pairs[..20]);
    let translations = translate(&merged);
    assert!(translations.iter().any(|t| !t.is_empty()));
    // Without its base, the adapter directory names what is missing.
    let err = Translator::<Flex>::load(&ft, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

/// An imported model translates, with no search settings given, as `generate()` with no arguments
/// does: `num_beams` and `length_penalty` from `generation_config.json`, else `config.json`, else
/// `transformers`' 1 and 1.0.
#[test]
fn imported_models_search_with_their_generation_defaults() {
    let r = reference();
    let beam4 = r["searches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "beam4")
        .unwrap()
        .clone();
    let (beam, alpha) = (
        beam4["beam"].as_u64().unwrap() as usize,
        beam4["length_penalty"].as_f64().unwrap(),
    );
    // The fixture's generation config names neither: greedy, α 1.
    let dir = imported();
    let (config, pipeline, model) = load(&dir.path().join("m"));
    assert_eq!(
        (config.decode.beam, config.decode.length_penalty),
        (Some(1), Some(1.0))
    );

    // generation_config.json asks for beam 4 (α 1.5, then 1.0 from config.json when absent).
    let hf = fixture_copy();
    let generation_path = hf.path().join("generation_config.json");
    let mut generation: Value =
        serde_json::from_str(&std::fs::read_to_string(&generation_path).unwrap()).unwrap();
    generation["num_beams"] = serde_json::json!(beam);
    generation["length_penalty"] = serde_json::json!(alpha);
    std::fs::write(&generation_path, generation.to_string()).unwrap();
    let out = tempfile::tempdir().unwrap();
    import_marian(hf.path(), &out.path().join("m")).unwrap();
    let translator =
        rosetta::translate::Translator::<Flex>::load(&out.path().join("m"), &Default::default())
            .unwrap();
    let defaults = translator.search_defaults();
    assert_eq!((defaults.beam, defaults.length_penalty), (beam, alpha));
    // Those defaults give generate(num_beams=4)'s outputs token for token.
    let src = search_source(&pipeline, &r);
    let max_new = r["max_new_tokens"].as_u64().unwrap() as usize;
    let hyps = beam_search(
        &model,
        &src,
        &BeamConfig {
            max_len_a: Some(0.0),
            max_len_b: Some(max_new),
            rule: Some(config.decode.beam_rule),
            ..defaults
        },
    );
    let eos = pipeline.tgt_vocab().specials().eos;
    for (i, sentence) in hyps.iter().enumerate() {
        let mut expected = ids(&beam4["outputs"][i]);
        if expected.last() == Some(&eos) {
            expected.pop();
        }
        assert_eq!(sentence[0].tokens, expected, "sentence {i}");
    }

    // A bad value is named with its file.
    std::fs::write(&generation_path, r#"{"num_beams": 0}"#).unwrap();
    let err = import_error(hf.path());
    assert!(
        err.contains("generation_config.json") && err.contains("num_beams"),
        "{err}"
    );
    // Without generation_config.json, config.json's keys count.
    std::fs::remove_file(&generation_path).unwrap();
    let config_path = hf.path().join("config.json");
    let mut hf_config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    hf_config["num_beams"] = serde_json::json!(6);
    std::fs::write(&config_path, hf_config.to_string()).unwrap();
    let out = tempfile::tempdir().unwrap();
    import_marian(hf.path(), &out.path().join("m")).unwrap();
    let (config, _, _) = load(&out.path().join("m"));
    assert_eq!(
        (config.decode.beam, config.decode.length_penalty),
        (Some(6), Some(1.0))
    );
}

/// In-flight batching through the translator: lines fed a few at a time into a running greedy
/// search with four rows (an empty line among them), each reported once, as `translate` gives it.
#[test]
fn a_stream_of_lines_translates_as_translate_does() {
    use rosetta::translate::{TranslateOptions, Translator};
    let out = imported();
    let t = Translator::<Flex>::load(&out.path().join("m"), &Default::default()).unwrap();
    let r = reference();
    let mut lines: Vec<String> = r["source_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    // Longer and shorter variants, and an empty line, so sentences end at different steps.
    let more: Vec<String> = lines
        .iter()
        .flat_map(|l| {
            [
                format!("{l} {l}"),
                l.split(' ').take(2).collect::<Vec<_>>().join(" "),
            ]
        })
        .collect();
    lines.extend(more);
    lines.insert(3, String::new());
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let options = TranslateOptions::greedy();
    assert!(t.streams(&options));
    assert!(
        !t.streams(&TranslateOptions::default()),
        "beam 5 does not stream"
    );
    let expected = t.translate(&refs, &options).unwrap();
    let mut next = 0;
    let mut got: Vec<Option<String>> = vec![None; lines.len()];
    let mut feeds = 0;
    t.translate_stream(
        &options,
        4,
        |free| {
            feeds += 1;
            let take = free.min(3).min(lines.len() - next);
            let sources = lines[next..next + take]
                .iter()
                .map(|l| t.read_source(l).unwrap())
                .collect();
            next += take;
            sources
        },
        |number, translation| {
            assert!(got[number].is_none(), "line {number} reported twice");
            got[number] = Some(translation.text().to_owned());
        },
    )
    .unwrap();
    assert!(feeds > 4, "lines joined the running search ({feeds} feeds)");
    for (i, e) in expected.iter().enumerate() {
        assert_eq!(
            got[i].as_deref(),
            Some(e.text()),
            "line {i}: {:?}",
            lines[i]
        );
    }
    assert!(
        t.translate_stream(&TranslateOptions::default(), 4, |_| Vec::new(), |_, _| {})
            .is_err(),
        "beam search is refused, not decoded greedily"
    );
}
