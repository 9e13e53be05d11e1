//! Search on a trained model: beam 1 equals greedy, n-best scores are the model's length-penalized
//! log-probabilities, batching does not change results, sampling is reproducible.

use burn::backend::{Autodiff, Flex};
use rosetta::config::Config;
use rosetta::model::architecture::ModelConfig;
use rosetta::model::seq2seq::RnnConfig;
use rosetta::search::beam::length_penalty;
use rosetta::search::{BeamConfig, SamplingConfig};
use rosetta::train::schedule::ScheduleKind;
use rosetta::train::trainer::{Silent, TrainData, TrainOptions, train};
use rosetta::translate::{TranslateOptions, Translator};
use rosetta_text::corpus::CorpusSource;
use rosetta_text::tokenize::TokenizerKind;
use std::sync::{Arc, OnceLock};

/// A model trained briefly on reversing symbol sequences: good enough to have preferences, not so
/// good that every search finds the same single answer.
fn model_dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let pairs: Vec<(String, String)> = (0..400)
            .map(|_| {
                let len = 2 + next() % 6;
                let s: Vec<String> = (0..len)
                    .map(|_| ((b'a' + (next() % 8) as u8) as char).to_string())
                    .collect();
                let r: Vec<String> = s.iter().rev().cloned().collect();
                (s.join(" "), r.join(" "))
            })
            .collect();
        let mut c = Config::default();
        c.text.tokenizer = TokenizerKind::Word;
        c.model = ModelConfig::Rnn(RnnConfig {
            embedding_size: 16,
            encoder_hidden: 24,
            encoder_layers: 1,
            decoder_hidden: 48,
            attention_size: 24,
            dropout: 0.0,
            ..RnnConfig::default()
        });
        c.train.batch_tokens = 300;
        c.train.learning_rate = 1e-2;
        c.train.schedule = ScheduleKind::Constant;
        c.train.max_epochs = 0;
        c.train.max_steps = 120;
        c.train.valid_every = 1000;
        let dir = tempfile::tempdir().unwrap();
        let data = TrainData {
            train: CorpusSource::Memory(Arc::new(pairs)),
            valid: None,
        };
        let options = TrainOptions {
            model_dir: dir.path().to_path_buf(),
            resume: false,
        };
        train::<Autodiff<Flex>>(&c, &data, &options, &Default::default(), &mut Silent).unwrap();
        dir
    })
}

fn translator() -> Translator<Flex> {
    Translator::load(model_dir().path(), &Default::default()).unwrap()
}

const INPUTS: [&str; 6] = ["a b c", "h g f e d c", "b b a", "", "c d e f g h a", "e"];

fn options(beam: usize, n_best: usize) -> TranslateOptions {
    TranslateOptions {
        search: BeamConfig {
            beam,
            n_best,
            ..BeamConfig::default()
        },
        ..TranslateOptions::default()
    }
}

#[test]
fn beam_one_equals_greedy() {
    let t = translator();
    let greedy = t.translate(&INPUTS, &options(1, 1)).unwrap();
    // The search functions themselves, on the same sentences.
    let src = rosetta::model::input::source_batch::<Flex>(
        &rosetta_text::batch::PaddedIds::new(
            INPUTS
                .iter()
                .filter(|l| !l.is_empty())
                .map(|l| t.pipeline().encode_src(l).unwrap())
                .collect::<Vec<_>>()
                .iter()
                .map(Vec::as_slice),
            &t.pipeline().tgt_vocab().specials(),
            false,
            true,
        ),
        t.pipeline().tgt_vocab().specials(),
        &Default::default(),
    );
    let model = rosetta::model::architecture::AnyModel::<Flex>::init(
        &t.config().model,
        t.pipeline().src_vocab().len(),
        t.pipeline().tgt_vocab().len(),
        &Default::default(),
    )
    .unwrap();
    let weights = model_dir().path().join("model.safetensors");
    let model = model
        .try_map(
            |m| rosetta::train::checkpoint::load_weights(m, &weights),
            |m| rosetta::train::checkpoint::load_weights(m, &weights),
        )
        .unwrap();
    // The model's own length cap, as `translate` applies it.
    let (a, b) = t.max_len(&options(1, 1));
    let g = rosetta::search::greedy(&model, &src, |n| {
        rosetta::search::max_output_len(a, b, n, usize::MAX)
    });
    let beam = rosetta::search::beam_search(
        &model,
        &src,
        &BeamConfig {
            beam: 1,
            max_len_a: Some(a),
            max_len_b: Some(b),
            ..Default::default()
        },
    );
    assert_eq!(g.len(), beam.len());
    for (g, b) in g.iter().zip(&beam) {
        assert_eq!(g.tokens, b[0].tokens);
        assert!((g.log_prob - b[0].log_prob).abs() < 1e-4);
    }
    // `translate` with beam 1 (its greedy path) gives the texts of the beam search's outputs.
    let beam_texts: Vec<String> = beam
        .iter()
        .map(|b| t.pipeline().decode_tgt(&b[0].tokens).unwrap())
        .collect();
    let translated: Vec<&str> = greedy
        .iter()
        .filter(|g| !g.source_pieces.is_empty())
        .map(|g| g.text())
        .collect();
    assert_eq!(translated, beam_texts);
}

#[test]
fn n_best_is_sorted_and_scores_are_length_penalized_log_probabilities() {
    let t = translator();
    let alpha = 0.8;
    let out = t
        .translate(
            &INPUTS,
            &TranslateOptions {
                search: BeamConfig {
                    length_penalty: alpha,
                    ..options(5, 5).search
                },
                ..options(5, 5)
            },
        )
        .unwrap();
    for (line, tr) in INPUTS.iter().zip(&out) {
        if line.is_empty() {
            assert_eq!(tr.text(), "");
            continue;
        }
        assert!(tr.candidates.len() > 1, "{line}: {:?}", tr.candidates);
        for pair in tr.candidates.windows(2) {
            assert!(pair[0].score >= pair[1].score, "{line}: not sorted");
        }
        for c in tr
            .candidates
            .iter()
            .filter(|c| !c.pieces.iter().any(|p| p == "<unk>"))
        {
            // Teacher-forced (an <unk> output would not re-tokenize to itself, so those are skipped) log-probability of the candidate (its pieces + </s>).
            let (nll, tokens) = t.score_references(&[line], &[&c.text], 4000).unwrap();
            assert_eq!(tokens, c.pieces.len() + 1);
            assert!(
                (-nll as f32 - c.log_prob).abs() < 1e-3,
                "{line} → {}: {} vs {}",
                c.text,
                -nll,
                c.log_prob
            );
            let expected =
                (f64::from(c.log_prob) / length_penalty(c.pieces.len() + 1, alpha)) as f32;
            assert!((c.score - expected).abs() < 1e-4);
        }
    }
}

#[test]
fn batched_beam_search_equals_sentence_by_sentence() {
    let t = translator();
    let opts = options(4, 2);
    let batched = t.translate(&INPUTS, &opts).unwrap();
    for (line, b) in INPUTS.iter().zip(&batched) {
        let alone = &t.translate(&[line], &opts).unwrap()[0];
        assert_eq!(alone.candidates.len(), b.candidates.len(), "{line}");
        for (x, y) in alone.candidates.iter().zip(&b.candidates) {
            assert_eq!(x.text, y.text, "{line}");
            assert!((x.score - y.score).abs() < 1e-4, "{line}");
        }
    }
}

#[test]
fn sampling_is_reproducible_per_seed_and_independent_of_batching() {
    let t = translator();
    let sampled = |seed, lines: &[&str]| {
        t.translate(
            lines,
            &TranslateOptions {
                sampling: Some(SamplingConfig {
                    temperature: 1.5,
                    seed,
                    ..Default::default()
                }),
                ..options(1, 1)
            },
        )
        .unwrap()
        .iter()
        .map(|t| t.text().to_owned())
        .collect::<Vec<_>>()
    };
    let a = sampled(7, &INPUTS);
    assert_eq!(a, sampled(7, &INPUTS));
    let many: Vec<Vec<String>> = (0..6).map(|s| sampled(s, &INPUTS)).collect();
    assert!(
        many.iter().any(|m| *m != a),
        "different seeds should sample differently"
    );
}

#[test]
fn no_repeat_ngram_and_min_len_are_respected() {
    let t = translator();
    let out = t
        .translate(
            &["a a a a a a"],
            &TranslateOptions {
                search: BeamConfig {
                    no_repeat_ngram: 2,
                    rule: None,
                    min_len: 3,
                    ..options(4, 4).search
                },
                ..options(4, 4)
            },
        )
        .unwrap();
    for c in &out[0].candidates {
        assert!(c.pieces.len() >= 3);
        let bigrams: Vec<_> = c.pieces.windows(2).collect();
        for (i, x) in bigrams.iter().enumerate() {
            assert!(
                !bigrams[i + 1..].contains(x),
                "{:?} repeats {x:?}",
                c.pieces
            );
        }
    }
}

/// A change to valid options, and what the refusal must say.
type Case<'a> = (&'a dyn Fn(&mut TranslateOptions), &'a str);

#[test]
fn invalid_options_are_refused_in_plain_english() {
    let with = |f: &dyn Fn(&mut TranslateOptions)| {
        let mut o = options(5, 1);
        f(&mut o);
        o.validate().map_err(|e| e.to_string())
    };
    assert!(with(&|_| {}).is_ok());
    let cases: [Case; 6] = [
        (&|o| o.search.beam = 0, "beam size must be at least 1"),
        (
            &|o| o.search.n_best = 6,
            "n_best (6) must be between 1 and the beam size (5)",
        ),
        (
            &|o| o.search.length_penalty = f64::NAN,
            "length penalty must be a finite number",
        ),
        (
            &|o| o.search.max_len_a = Some(-1.0),
            "max_len_a must be a number ≥ 0",
        ),
        (
            &|o| {
                o.sampling = Some(SamplingConfig {
                    temperature: 0.0,
                    ..SamplingConfig::default()
                })
            },
            "sampling temperature must be positive",
        ),
        (
            &|o| {
                o.search.n_best = 2;
                o.sampling = Some(SamplingConfig::default());
            },
            "n_best > 1 needs beam search",
        ),
    ];
    for (change, message) in cases {
        let err = with(change).expect_err(message);
        assert!(err.contains(message), "{err:?} should say {message:?}");
    }
}

#[test]
fn the_ensemble_distribution_is_the_mean_of_the_members() {
    use burn::prelude::*;
    let device = Default::default();
    let log_probs =
        |p: [[f32; 3]; 2]| Tensor::<Flex, 2>::from_data(TensorData::from(p), &device).log();
    // The last column is impossible for both members: it must stay impossible, not become NaN.
    let a = log_probs([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]);
    let b = log_probs([[0.6, 0.3, 0.1], [0.5, 0.5, 0.0]]);
    let mixed: Vec<f32> = rosetta::search::ensemble::mixture(vec![a, b])
        .exp()
        .into_data()
        .to_vec()
        .unwrap();
    let expected = [0.4, 0.3, 0.3, 0.75, 0.25, 0.0];
    for (m, e) in mixed.iter().zip(expected) {
        assert!((m - e).abs() < 1e-6, "{mixed:?} vs {expected:?}");
    }
}

#[test]
fn an_ensemble_of_a_model_with_itself_decodes_and_scores_like_the_model() {
    let single = translator();
    let dir = model_dir().path();
    let pair = Translator::<Flex>::load_ensemble(&[dir, dir], &Default::default()).unwrap();
    assert_eq!(pair.ensemble_size(), 2);
    for opts in [options(1, 1), options(4, 3)] {
        let a = single.translate(&INPUTS, &opts).unwrap();
        let b = pair.translate(&INPUTS, &opts).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.candidates.len(), y.candidates.len());
            for (cx, cy) in x.candidates.iter().zip(&y.candidates) {
                assert_eq!(cx.text, cy.text);
                assert!((cx.log_prob - cy.log_prob).abs() < 1e-4, "{cx:?} vs {cy:?}");
                assert_eq!(cx.attention.len(), cy.attention.len());
                for (rx, ry) in cx.attention.iter().zip(&cy.attention) {
                    assert!(rx.iter().zip(ry).all(|(p, q)| (p - q).abs() < 1e-5));
                }
            }
        }
    }
    let sources: Vec<&str> = INPUTS.iter().copied().filter(|l| !l.is_empty()).collect();
    let references: Vec<String> = sources
        .iter()
        .map(|l| l.split(' ').rev().collect::<Vec<_>>().join(" "))
        .collect();
    let references: Vec<&str> = references.iter().map(String::as_str).collect();
    let (nll_single, tokens_single) = single
        .score_references(&sources, &references, 1000)
        .unwrap();
    let (nll_pair, tokens_pair) = pair.score_references(&sources, &references, 1000).unwrap();
    assert_eq!(tokens_single, tokens_pair);
    assert!(
        (nll_single - nll_pair).abs() < 1e-4 * nll_single.abs().max(1.0),
        "{nll_single} vs {nll_pair}"
    );
}

#[test]
fn models_that_do_not_share_token_ids_are_refused_as_an_ensemble() {
    let dir = model_dir().path();
    let other = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, other.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    // Same sizes, so the weights still load; two words trade ids.
    let mut swapped = 0;
    for entry in std::fs::read_dir(other.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with("vocab.txt") {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut lines: Vec<&str> = text.lines().collect();
            lines.swap(5, 6);
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
            swapped += 1;
        }
    }
    assert!(swapped > 0, "no vocabulary file in {}", dir.display());
    let device = Default::default();
    Translator::<Flex>::load(other.path(), &device).expect("the copy loads on its own");
    let err = Translator::<Flex>::load_ensemble(&[dir, other.path()], &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("text pipeline"), "{err}");
    assert!(err.contains(&other.path().display().to_string()), "{err}");
    let none: [&std::path::Path; 0] = [];
    let err = Translator::<Flex>::load_ensemble(&none, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one model"), "{err}");
}

/// A confident model of one sentence, words 4, 5, …, 9 then `</s>`, whatever came before: the
/// right word has probability ≈ 1 at every step, an early `</s>` ≈ e⁻⁸, any other word ≈ e⁻²⁰.
struct Confident;

impl rosetta::search::Scorer<Flex> for Confident {
    type State = usize; // the step: every row is at the same one

    fn start(&self, _src: &rosetta::model::input::SourceBatch<Flex>) -> usize {
        0
    }

    fn step(
        &self,
        prev: burn::tensor::Tensor<Flex, 1, burn::tensor::Int>,
        t: usize,
    ) -> rosetta::search::Step<Flex, usize> {
        const VOCAB: usize = 12;
        let n = prev.dims()[0];
        let mut logits = vec![-20.0f32; n * VOCAB];
        for row in logits.chunks_mut(VOCAB) {
            row[..3].fill(-30.0); // <pad>, <unk>, <s>
            if t < 6 {
                row[4 + t] = 0.0;
                row[3] = -8.0;
            } else {
                row[3] = 0.0;
            }
        }
        rosetta::search::Step {
            logits: burn::tensor::Tensor::from_data(
                burn::tensor::TensorData::new(logits, [n, VOCAB]),
                &Default::default(),
            ),
            state: t + 1,
            attention: None,
        }
    }

    fn select(
        &self,
        t: usize,
        _indices: burn::tensor::Tensor<Flex, 1, burn::tensor::Int>,
    ) -> usize {
        t
    }
}

/// SCAN, beam 5: 47% of the test set exactly right against greedy's 95%. fairseq's rule ended a
/// sentence at `beam` finished hypotheses, which on a confident model were all improbable early
/// `</s>`s while the right, longer hypothesis was still live.
#[test]
fn beam_search_does_not_stop_at_improbable_early_ends_while_a_better_hypothesis_is_live() {
    let ids = [vec![4u32; 10]];
    let src = rosetta::model::input::source_batch::<Flex>(
        &rosetta_text::batch::PaddedIds::new(
            ids.iter().map(Vec::as_slice),
            &rosetta_text::vocab::SpecialIds::default(),
            false,
            true,
        ),
        rosetta_text::vocab::SpecialIds::default(),
        &Default::default(),
    );
    let greedy = rosetta::search::greedy(&Confident, &src, |_| 20);
    assert_eq!(greedy[0].tokens, [4, 5, 6, 7, 8, 9]);
    for beam in [2, 3, 5] {
        for length_penalty in [0.0, 1.0] {
            let out = rosetta::search::beam_search(
                &Confident,
                &src,
                &BeamConfig {
                    beam,
                    length_penalty,
                    ..BeamConfig::default()
                },
            );
            assert_eq!(
                out[0][0].tokens,
                [4, 5, 6, 7, 8, 9],
                "beam {beam}, α {length_penalty}"
            );
            assert!(out[0][0].log_prob > -0.01, "{}", out[0][0].log_prob);
        }
    }
}

#[test]
fn a_batch_split_across_threads_decodes_like_one_piece() {
    let t = translator();
    let letters = ["a", "b", "c", "d", "e", "f", "g", "h"];
    // Lengths 4 and 5 alternate, so that the 80 lines form one batch (padding under a fifth),
    // which two threads split.
    let lines: Vec<String> = (0..80)
        .map(|i| {
            (0..4 + i % 2)
                .map(|j| letters[(i * 3 + j * 5) % 8])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let sampling = TranslateOptions {
        sampling: Some(SamplingConfig {
            temperature: 1.5,
            seed: 3,
            ..Default::default()
        }),
        ..options(1, 1)
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for opts in [options(1, 1), options(4, 2), sampling] {
        let whole = one.install(|| t.translate(&lines, &opts)).unwrap();
        let split = two.install(|| t.translate(&lines, &opts)).unwrap();
        for (line, (w, s)) in lines.iter().zip(whole.iter().zip(&split)) {
            assert_eq!(w.candidates.len(), s.candidates.len(), "{line}");
            for (x, y) in w.candidates.iter().zip(&s.candidates) {
                assert_eq!(x.text, y.text, "{line}: {opts:?}");
                assert!((x.score - y.score).abs() < 1e-4, "{line}");
            }
        }
    }
}
