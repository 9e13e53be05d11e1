//! Model shapes, attention masking and padding invariance, for every cell and attention kind.

use burn::backend::Flex;
use burn::prelude::*;
use rosetta::model::attention::AttentionKind;
use rosetta::model::bridge::BridgeKind;
use rosetta::model::cell::CellKind;
use rosetta::model::embedding::EmbeddingInit;
use rosetta::model::input::SourceBatch;
use rosetta::model::seq2seq::{RnnConfig, RnnSeq2Seq};
use rosetta::search::Scorer;

type B = Flex;

fn small(cell: CellKind, attention: AttentionKind, bridge: BridgeKind) -> RnnConfig {
    RnnConfig {
        cell,
        embedding_size: 8,
        encoder_hidden: 6,
        encoder_layers: 2,
        bidirectional: true,
        decoder_hidden: 12,
        decoder_layers: 2,
        bridge,
        attention,
        attention_size: 10,
        input_feeding: true,
        embedding_to_output: true,
        attentional_layer: true,
        tie_embeddings: false,
        dropout: 0.0,
        embedding_init: EmbeddingInit::Normal,
    }
}

fn batch(rows: &[&[i32]]) -> SourceBatch<B> {
    let len = rows.iter().map(|r| r.len()).max().unwrap();
    let mut data = Vec::new();
    for r in rows {
        data.extend_from_slice(r);
        data.extend(std::iter::repeat_n(0, len - r.len()));
    }
    SourceBatch {
        ids: Tensor::from_data(
            TensorData::new(data, [rows.len(), len]),
            &Default::default(),
        ),
        lengths: rows.iter().map(|r| r.len()).collect(),
        specials: Default::default(),
    }
}

fn all_configs() -> Vec<RnnConfig> {
    let mut configs = Vec::new();
    for cell in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
        for attention in [
            AttentionKind::None,
            AttentionKind::Bahdanau,
            AttentionKind::LuongDot,
            AttentionKind::LuongGeneral,
        ] {
            for bridge in [BridgeKind::None, BridgeKind::Dense, BridgeKind::Mean] {
                configs.push(small(cell, attention, bridge));
            }
        }
    }
    let mut tied = small(
        CellKind::Gru,
        AttentionKind::LuongGeneral,
        BridgeKind::Dense,
    );
    tied.tie_embeddings = true;
    tied.input_feeding = false;
    tied.embedding_to_output = false;
    configs.push(tied);
    // The reference PyTorch model's output: `[state; context]` straight to the vocabulary.
    for attention in [AttentionKind::Bahdanau, AttentionKind::LuongGeneral] {
        let mut direct = small(CellKind::Gru, attention, BridgeKind::Mean);
        direct.attentional_layer = false;
        direct.input_feeding = false;
        configs.push(direct);
    }
    configs
}

#[test]
fn shapes_and_attention_masking_for_every_configuration() {
    let device = Default::default();
    for config in all_configs() {
        config.validate().unwrap();
        let model = RnnSeq2Seq::<B>::new(&config, 20, 17, &device);
        let src = batch(&[&[5, 6, 7, 3], &[8, 3]]);
        let tgt = Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![2i32, 9, 10, 2, 11, 0], [2, 3]),
            &device,
        );
        let (logits, attention) = model.forward(&src, tgt);
        assert_eq!(logits.dims(), [2, 3, 17], "{config:?}");
        match config.attention {
            AttentionKind::None => assert!(attention.is_none()),
            _ => {
                let a = attention.expect("attention weights");
                assert_eq!(a.dims(), [2, 3, 4]);
                let values: Vec<f32> = a.into_data().to_vec().unwrap();
                for t in 0..3 {
                    let row0 = &values[t * 4..t * 4 + 4];
                    let row1 = &values[12 + t * 4..12 + t * 4 + 4];
                    assert!((row0.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                    assert!((row1.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                    // The second sentence has 2 real tokens: weight on padding is exactly zero.
                    assert_eq!(row1[2], 0.0, "{config:?}");
                    assert_eq!(row1[3], 0.0, "{config:?}");
                }
            }
        }
    }
}

#[test]
fn a_sentence_scores_the_same_alone_and_in_a_padded_batch() {
    let device = Default::default();
    for config in all_configs() {
        let model = RnnSeq2Seq::<B>::new(&config, 20, 17, &device);
        let tgt = |rows: usize| {
            Tensor::<B, 2, Int>::from_data(
                TensorData::new([2i32, 9, 10].repeat(rows), [rows, 3]),
                &device,
            )
        };
        let (alone, _) = model.forward(&batch(&[&[8, 3]]), tgt(1));
        let (batched, _) = model.forward(&batch(&[&[5, 6, 7, 3], &[8, 3]]), tgt(2));
        let alone: Vec<f32> = alone.into_data().to_vec().unwrap();
        let batched: Vec<f32> = batched.into_data().to_vec().unwrap();
        for (a, b) in alone.iter().zip(&batched[alone.len()..]) {
            assert!((a - b).abs() < 1e-4, "{config:?}: {a} vs {b}");
        }
    }
}

/// A search's memory, shared by each sentence's hypotheses (Bahdanau: each hypothesis names its
/// sentence's memory row), gives every step exactly what memory copied per hypothesis gives, through
/// a beam's expansion, a reordering within sentences and a finished sentence dropped; with the
/// keys' `e^{2k}` (the search's default on the CPU) the same within float rounding.
#[test]
fn search_steps_on_shared_memory_equal_steps_on_copied_memory() {
    let device = Default::default();
    let ints =
        |v: &[i32]| Tensor::<B, 1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);
    let bits = |t: Tensor<B, 2>| t.into_data().to_vec::<f32>().unwrap();
    for config in all_configs() {
        let bahdanau = config.attention == AttentionKind::Bahdanau;
        for exp_keys in [false, true] {
            let what = format!("{config:?}, e^2k {exp_keys}");
            let same = |a: Vec<f32>, b: Vec<f32>, at: &str| {
                if exp_keys {
                    assert_eq!(a.len(), b.len(), "{what}, {at}");
                    for (x, y) in a.iter().zip(&b) {
                        assert!((x - y).abs() <= 1e-5, "{what}, {at}: {x} vs {y}");
                    }
                } else {
                    assert_eq!(a, b, "{what}, {at}");
                }
            };
            let model = RnnSeq2Seq::<B>::new(&config, 20, 17, &device);
            let src = batch(&[&[5, 6, 7, 3], &[8, 3], &[9, 10, 11, 12, 3]]);
            let mut shared = model.start(&src);
            assert_eq!(shared.1.attention.rows.is_some(), bahdanau, "{what}");
            assert_eq!(shared.1.attention.exp_keys.is_some(), bahdanau, "{what}");
            if !exp_keys {
                shared.1.attention.exp_keys = None;
            }
            let mut copied = model.encode(&src);
            // Expand to beams of 2, 3 and 1; reorder within sentences; drop the second sentence.
            let moves: [&[i32]; 3] = [&[0, 0, 1, 1, 1, 2], &[1, 0, 4, 3, 2, 5], &[0, 1, 5]];
            let mut prev = vec![2i32; 3];
            for (step, rows) in moves.iter().enumerate() {
                let a = model.step(ints(&prev), shared);
                let b = model.step(ints(&prev), copied);
                let at = format!("step {step}");
                same(bits(a.logits), bits(b.logits), &at);
                match (a.attention, b.attention) {
                    (Some(x), Some(y)) => same(bits(x), bits(y), &at),
                    (None, None) => {}
                    _ => panic!("attention on one side only: {what}"),
                }
                shared = model.select(a.state, ints(rows));
                copied = (b.state.0.select(ints(rows)), b.state.1.select(ints(rows)));
                prev = rows.iter().map(|&r| 4 + r).collect();
            }
            let a = model.step(ints(&prev), shared);
            let b = model.step(ints(&prev), copied);
            same(bits(a.logits), bits(b.logits), "last step");
        }
    }
}

/// A model directory written by Rosetta before the Transformer existed (commit 2c50f7a: no
/// `arch` key, RNN weights) loads unchanged and scores exactly as that version did: its n-best
/// lists were recorded with that version's `rosetta translate --beam 3 --n-best 3`.
#[test]
fn a_model_directory_written_before_the_transformer_loads_unchanged() {
    use rosetta::search::BeamConfig;
    use rosetta::translate::{TranslateOptions, Translator};
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rnn-v0.1-model");
    let config = rosetta::config::Config::load(&dir.join("config.toml")).unwrap();
    assert_eq!(config.model.arch(), "rnn");
    let translator = Translator::<Flex>::load(&dir, &Default::default()).unwrap();
    let options = TranslateOptions {
        search: BeamConfig {
            beam: 3,
            n_best: 3,
            ..BeamConfig::default()
        },
        ..TranslateOptions::default()
    };
    let out = translator
        .translate(
            &["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."],
            &options,
        )
        .unwrap();
    let expected = std::fs::read_to_string(dir.join("expected-nbest.txt")).unwrap();
    let mut lines = expected.lines();
    for (i, t) in out.iter().enumerate() {
        for c in &t.candidates {
            let line = lines.next().unwrap();
            let fields: Vec<&str> = line.split(" ||| ").collect();
            assert_eq!(fields[0], i.to_string());
            assert_eq!(fields[1].trim(), c.text);
            let score: f32 = fields[2].parse().unwrap();
            assert!((score - c.score).abs() < 1e-3, "{line}: now {}", c.score);
        }
    }
    assert!(lines.next().is_none());
    // Its resolved config now reads with the architecture named.
    let text = config.to_toml().unwrap();
    assert!(text.contains("arch = \"rnn\""), "{text}");
    assert_eq!(rosetta::config::Config::from_toml(&text).unwrap(), config);
}
