//! Training end to end on tiny tasks: every cell and attention kind learns, resume is exact, NaN
//! losses stop training cleanly, and model directories are never overwritten by accident.

use burn::backend::{Autodiff, Flex};
use rosetta::Error;
use rosetta::config::Config;
use rosetta::model::architecture::{ModelConfig, Seq2Seq};
use rosetta::model::attention::AttentionKind;
use rosetta::model::cell::CellKind;
use rosetta::model::seq2seq::RnnConfig;
use rosetta::train::optim::OptimizerKind;
use rosetta::train::schedule::ScheduleKind;
use rosetta::train::trainer::{Silent, TrainData, TrainOptions, train};
use rosetta::translate::{TranslateOptions, Translator};
use rosetta_text::corpus::CorpusSource;
use rosetta_text::tokenize::TokenizerKind;
use std::path::Path;
use std::sync::Arc;

type B = Autodiff<Flex>;

/// burn's flex backend keeps one random generator per process: training runs in parallel test
/// threads would draw from each other's stream, so these tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sequences of 2–6 symbols and their reversal: learnable only by reading the whole source.
fn reverse_task(n: usize, seed: u64) -> Vec<(String, String)> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..n)
        .map(|_| {
            let len = 2 + next() % 5;
            let symbols: Vec<String> = (0..len)
                .map(|_| ((b'a' + (next() % 8) as u8) as char).to_string())
                .collect();
            let reversed: Vec<String> = symbols.iter().rev().cloned().collect();
            (symbols.join(" "), reversed.join(" "))
        })
        .collect()
}

fn tiny_config() -> Config {
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
    c.train.batch_tokens = 320;
    c.train.learning_rate = 1e-2;
    c.train.label_smoothing = 0.0;
    c.train.schedule = ScheduleKind::Constant;
    c.train.max_epochs = 0;
    c.train.valid_every = 1000;
    c.train.log_every = 1;
    c
}

fn data(pairs: Vec<(String, String)>, valid: Option<Vec<(String, String)>>) -> TrainData {
    TrainData {
        train: CorpusSource::Memory(Arc::new(pairs)),
        valid: valid.map(|v| CorpusSource::Memory(Arc::new(v))),
    }
}

fn options(dir: &Path, resume: bool) -> TrainOptions {
    TrainOptions {
        model_dir: dir.to_path_buf(),
        resume,
    }
}

/// `(step, loss)` of every training update logged in a model directory.
fn train_losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn every_cell_and_attention_kind_learns_to_reverse() {
    let _guard = serial();
    let device = Default::default();
    let mut cases: Vec<(CellKind, AttentionKind)> = [CellKind::Lstm, CellKind::Gru, CellKind::Rnn]
        .into_iter()
        .map(|cell| (cell, AttentionKind::Bahdanau))
        .collect();
    for attention in [
        AttentionKind::None,
        AttentionKind::LuongDot,
        AttentionKind::LuongGeneral,
    ] {
        cases.push((CellKind::Gru, attention));
    }
    for (cell, attention) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config = tiny_config();
        if let ModelConfig::Rnn(rnn) = &mut config.model {
            rnn.cell = cell;
            rnn.attention = attention;
            rnn.decoder_hidden = 48; // = 2 × encoder_hidden, so luong-dot applies
        }
        config.train.max_steps = 500;
        let summary = train::<B>(
            &config,
            &data(reverse_task(600, 1), None),
            &options(dir.path(), false),
            &device,
            &mut Silent,
        )
        .unwrap();
        assert_eq!(summary.steps, 500);
        let losses = train_losses(dir.path());
        let tail: f64 = losses[losses.len() - 20..].iter().map(|l| l.1).sum::<f64>() / 20.0;
        let head = losses[0].1;
        assert!(
            tail < 0.1,
            "{cell:?}/{attention:?}: loss went from {head:.3} to {tail:.3}"
        );

        let translator = Translator::<Flex>::load(dir.path(), &device).unwrap();
        let out = translator
            .translate(&["a b c d", "", "h g"], &TranslateOptions::default())
            .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].text(), "");
        if attention != AttentionKind::None {
            assert_eq!(out[0].text(), "d c b a", "{cell:?}/{attention:?}");
            let best = out[0].best().unwrap();
            assert_eq!(best.attention.len(), best.pieces.len());
        }
    }
}

#[test]
fn resume_continues_exactly() {
    let _guard = serial();
    let device = Default::default();
    let mut config = tiny_config();
    config.model.rnn_mut().unwrap().dropout = 0.3; // dropout masks must replay too
    config.train.valid_every = 5;
    config.train.schedule = ScheduleKind::Plateau;
    config.train.plateau_patience = 0;
    let pairs = reverse_task(300, 2);
    let valid = reverse_task(20, 3);

    let straight = tempfile::tempdir().unwrap();
    config.train.max_steps = 20;
    train::<B>(
        &config,
        &data(pairs.clone(), Some(valid.clone())),
        &options(straight.path(), false),
        &device,
        &mut Silent,
    )
    .unwrap();

    let split = tempfile::tempdir().unwrap();
    config.train.max_steps = 10;
    train::<B>(
        &config,
        &data(pairs.clone(), Some(valid.clone())),
        &options(split.path(), false),
        &device,
        &mut Silent,
    )
    .unwrap();
    config.train.max_steps = 20;
    let summary = train::<B>(
        &config,
        &data(pairs, Some(valid)),
        &options(split.path(), true),
        &device,
        &mut Silent,
    )
    .unwrap();
    assert_eq!(summary.steps, 20);

    let a = train_losses(straight.path());
    let b = train_losses(split.path());
    assert_eq!(a.len(), 20);
    assert_eq!(a, b, "losses after resume differ from an uninterrupted run");
}

#[test]
fn non_finite_losses_stop_training_with_a_clear_error_and_keep_the_checkpoint() {
    let _guard = serial();
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config();
    config.train.optimizer = OptimizerKind::Sgd;
    config.train.momentum = 0.0;
    config.train.learning_rate = 0.1;
    // noam derives the rate from the config at every step, so raising it below takes effect on resume
    // (constant and plateau restore their rate from the checkpoint).
    config.train.schedule = ScheduleKind::Noam;
    config.train.warmup_steps = 1;
    config.train.patience = 0;
    config.train.valid_every = 1;
    config.train.max_bad_batches = 3;
    config.train.max_steps = 3;
    let d = || data(reverse_task(200, 4), Some(reverse_task(10, 5)));
    train::<B>(
        &config,
        &d(),
        &options(dir.path(), false),
        &device,
        &mut Silent,
    )
    .unwrap();
    let weights = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let last = rosetta::train::checkpoint::list(dir.path())
        .unwrap()
        .pop()
        .unwrap();

    // Beyond f32's range: the next update writes inf·0 = NaN into the weights, so every later
    // batch has a NaN loss.
    config.train.learning_rate = 1e300;
    config.train.clip_norm = 0.0;
    config.train.max_steps = 50;
    let err = train::<B>(
        &config,
        &d(),
        &options(dir.path(), true),
        &device,
        &mut Silent,
    )
    .map(|s| {
        panic!(
            "training should have diverged: {s:?} {:?}",
            train_losses(dir.path())
        )
    })
    .unwrap_err();
    assert!(matches!(err, Error::Diverged { count: 3, .. }), "{err}");
    assert!(err.to_string().contains("3 consecutive batches"), "{err}");
    assert_eq!(
        rosetta::train::checkpoint::list(dir.path())
            .unwrap()
            .pop()
            .unwrap(),
        last
    );
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        weights
    );
    Translator::<Flex>::load(dir.path(), &device).unwrap();
}

#[test]
fn a_trained_model_is_never_overwritten_without_resume() {
    let _guard = serial();
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config();
    config.train.max_steps = 2;
    let d = || data(reverse_task(50, 5), None);
    train::<B>(
        &config,
        &d(),
        &options(dir.path(), false),
        &device,
        &mut Silent,
    )
    .unwrap();
    let err = train::<B>(
        &config,
        &d(),
        &options(dir.path(), false),
        &device,
        &mut Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    // Resuming with another architecture is refused, and the saved config stays as it was.
    let saved = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    let mut changed = config.clone();
    changed.model.rnn_mut().unwrap().decoder_hidden = 64;
    changed.train.max_steps = 4;
    let err = train::<B>(
        &changed,
        &d(),
        &options(dir.path(), true),
        &device,
        &mut Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("[model] or [text]"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("config.toml")).unwrap(),
        saved
    );
}

/// Regression: `--resume` on a directory without a checkpoint was an error ("holds no checkpoint
/// to continue from"); job schedulers and sweeps always pass `--resume`, so a run killed before its
/// first checkpoint (or never started) now starts from scratch, and says so.
#[test]
fn resume_without_a_checkpoint_starts_from_scratch_with_a_notice() {
    let _guard = serial();
    let device = Default::default();
    let mut config = tiny_config();
    config.train.max_steps = 2;
    let d = || data(reverse_task(50, 5), None);
    struct Warnings(Vec<String>);
    impl rosetta::train::trainer::Observer for Warnings {
        fn warn(&mut self, message: &str) {
            self.0.push(message.to_owned());
        }
    }
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(
        empty.path().join("metrics.jsonl"),
        "{\"type\":\"train\",\"step\":1}\n",
    )
    .unwrap();
    let mut warnings = Warnings(Vec::new());
    let summary = train::<B>(
        &config,
        &d(),
        &options(empty.path(), true),
        &device,
        &mut warnings,
    )
    .unwrap();
    assert_eq!(summary.steps, config.train.max_steps);
    assert!(
        warnings
            .0
            .iter()
            .any(|w| w.contains("starting from scratch")),
        "{:?}",
        warnings.0
    );
}

#[test]
fn weights_from_another_model_are_a_clear_error() {
    let _guard = serial();
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config();
    config.train.max_steps = 2;
    train::<B>(
        &config,
        &data(reverse_task(50, 6), None),
        &options(dir.path(), false),
        &device,
        &mut Silent,
    )
    .unwrap();
    // Pretend the config describes a bigger model than the weights hold.
    let path = dir.path().join("config.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("decoder_hidden = 48", "decoder_hidden = 64");
    std::fs::write(&path, text).unwrap();
    let err = Translator::<Flex>::load(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn averaged_checkpoints_are_the_mean_of_their_weights() {
    use burn::module::Module;
    use rosetta::model::seq2seq::RnnSeq2Seq;
    use rosetta::train::average::{Selection, average_checkpoints};
    use rosetta::train::checkpoint;
    use rosetta_text::pipeline::TextPipeline;

    let _guard = serial();
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config();
    config.train.max_steps = 6;
    config.train.valid_every = 2;
    config.train.keep_checkpoints = 3;
    train::<B>(
        &config,
        &data(reverse_task(200, 7), None),
        &options(dir.path(), false),
        &device,
        &mut Silent,
    )
    .unwrap();
    let pipeline = TextPipeline::load(dir.path()).unwrap();
    let fresh = || {
        RnnSeq2Seq::<Flex>::init(
            &config.model,
            pipeline.src_vocab().len(),
            pipeline.tgt_vocab().len(),
            &device,
        )
        .unwrap()
    };
    let at_step = |step: u64| {
        fresh()
            .load_file(
                checkpoint::step_dir(dir.path(), step).join("model"),
                &checkpoint::recorder(),
                &device,
            )
            .unwrap()
    };
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("avg");
    let averaged =
        average_checkpoints::<Flex>(dir.path(), &Selection::Last(2), &out_dir, &device).unwrap();
    assert_eq!(averaged.steps, vec![4, 6]);

    let mean = checkpoint::load_weights(fresh(), &out_dir.join(checkpoint::WEIGHTS)).unwrap();
    let (a, b) = (at_step(4), at_step(6));
    let weight = |m: &RnnSeq2Seq<Flex>| m.decoder.ih.weight.val();
    let expected = (weight(&a) + weight(&b)).div_scalar(2.0);
    expected
        .into_data()
        .assert_approx_eq::<f32>(&weight(&mean).into_data(), Default::default());
    assert!(
        !weight(&a).equal(weight(&b)).all().into_scalar(),
        "steps 4 and 6 should differ"
    );
    // The result is a model directory like any other.
    let translator = Translator::<Flex>::load(&out_dir, &device).unwrap();
    assert_eq!(
        translator
            .translate(&["a b"], &TranslateOptions::default())
            .unwrap()
            .len(),
        1
    );

    // Mistakes are plain errors, and nothing is overwritten.
    let err = |selection: Selection, to: &Path| {
        average_checkpoints::<Flex>(dir.path(), &selection, to, &device)
            .unwrap_err()
            .to_string()
    };
    let fresh_out = out.path().join("other");
    let e = err(Selection::Last(4), &fresh_out);
    assert!(e.contains("holds 3 checkpoint(s) (steps: 2, 4, 6)"), "{e}");
    let e = err(Selection::Steps(vec![5]), &fresh_out);
    assert!(e.contains("no checkpoint of step 5"), "{e}");
    let e = err(Selection::Last(0), &fresh_out);
    assert!(e.contains("at least 1"), "{e}");
    let e = err(Selection::All, &out_dir);
    assert!(e.contains("not empty"), "{e}");
    assert!(!fresh_out.exists());
}

/// SCAN-like outputs, each source symbol becoming four `I_X` actions: up to 24 output tokens for 6
/// source tokens, past the old constant cap of 1.5 · 6 + 10 = 19.
fn repeat_task(n: usize, seed: u64) -> Vec<(String, String)> {
    reverse_task(n, seed)
        .into_iter()
        .map(|(src, _)| {
            let tgt: Vec<String> = src
                .split(' ')
                .flat_map(|s| std::iter::repeat_n(format!("I_{}", s.to_uppercase()), 4))
                .collect();
            (src, tgt.join(" "))
        })
        .collect()
}

/// The SCAN report: the length filter dropped 39% of the pairs with only "9870 training pairs"
/// said, and validation outputs were cut at 1.5 · source + 10.
#[test]
fn dropped_pairs_are_reported_and_the_length_cap_follows_the_training_data() {
    let _guard = serial();
    let device = Default::default();
    let mut config = tiny_config();
    config.text.tokenizer = TokenizerKind::Space;
    config.text.max_len = 30;
    config.train.max_steps = 1;
    config.train.valid_every = 1;
    let mut pairs = repeat_task(180, 9);
    pairs.extend((0..12).map(|i| (format!("a{i} b"), "I_A ".repeat(40))));
    pairs.extend((0..8).map(|_| ("a b".to_owned(), String::new())));
    #[derive(Default)]
    struct Seen {
        warnings: Vec<String>,
        hit_max_len: Option<usize>,
    }
    impl rosetta::train::trainer::Observer for Seen {
        fn warn(&mut self, message: &str) {
            self.warnings.push(message.to_owned());
        }
        fn validated(&mut self, r: &rosetta::train::trainer::ValidReport) {
            self.hit_max_len = Some(r.hit_max_len);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::default();
    train::<B>(
        &config,
        &data(pairs, Some(repeat_task(20, 10))),
        &options(dir.path(), false),
        &device,
        &mut seen,
    )
    .unwrap();

    // 20 of 200 pairs dropped: warned, counted in stats.json and in the metrics log.
    let warning = seen.warnings.iter().find(|w| w.contains("dropped"));
    let warning = warning.unwrap_or_else(|| panic!("no drop warning in {:?}", seen.warnings));
    assert!(
        warning.contains("10.0%") && warning.contains("text.max_len = 30"),
        "{warning}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap())
            .unwrap();
    assert_eq!(stats["train"]["pairs_read"], 200);
    assert_eq!(stats["train"]["pairs_kept"], 180);
    assert_eq!(stats["train"]["dropped_too_long"], 12);
    assert_eq!(stats["train"]["dropped_empty"], 8);
    let data_row = std::fs::read_to_string(dir.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["type"] == "data")
        .expect("a data row in metrics.jsonl");
    assert_eq!(data_row["dropped_too_long"], 12);

    // Every kept target is exactly 4× its source: the saved cap is 4 · source + 10.
    let saved = Config::load(&dir.path().join("config.toml")).unwrap();
    assert_eq!(saved.decode.max_len_a, Some(4.0));
    assert_eq!(saved.decode.max_len_b, Some(10));
    assert_eq!(stats["decode_max_len_a"], 4.0);
    assert!(seen.hit_max_len.is_some(), "validation reports the count");

    // Translation takes the model's cap; a cap of one token marks exactly the outputs it cut.
    let translator = Translator::<Flex>::load(dir.path(), &device).unwrap();
    assert_eq!(translator.max_len(&TranslateOptions::default()), (4.0, 10));
    for beam in [1, 3] {
        let mut options = TranslateOptions::default();
        options.search.beam = beam;
        options.search.max_len_a = Some(0.0);
        options.search.max_len_b = Some(1);
        for t in translator
            .translate(&["a b c", "d e f g h", "b"], &options)
            .unwrap()
        {
            let best = t.best().unwrap();
            assert!(best.pieces.len() <= 1);
            assert_eq!(best.hit_max_len, !best.pieces.is_empty(), "beam {beam}");
        }
    }
}

/// Trains `config` on `pairs` (no validation set) into `dir`.
fn run_on(
    config: &Config,
    pairs: Vec<(String, String)>,
    dir: &Path,
    resume: bool,
) -> rosetta::Result<rosetta::train::trainer::TrainSummary> {
    train::<B>(
        config,
        &data(pairs, None),
        &options(dir, resume),
        &Default::default(),
        &mut Silent,
    )
}

#[test]
fn a_prepared_pipeline_is_used_instead_of_one_fitted_on_the_training_data() {
    let _guard = serial();
    let prepared = tempfile::tempdir().unwrap();
    // Prepared on text the training corpus lacks ("x y z"): the run's vocabulary must have it.
    let mut vocab_text = reverse_task(50, 3);
    vocab_text.push(("x y z".into(), "z y x".into()));
    let mut text = tiny_config().text;
    text.max_len = 40;
    rosetta_text::pipeline::TextPipeline::fit(
        &CorpusSource::Memory(Arc::new(vocab_text)),
        &text,
        &|_| {},
    )
    .unwrap()
    .save(prepared.path())
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config();
    config.text = Default::default(); // taken from the prepared pipeline
    config.data.pipeline = Some(prepared.path().to_path_buf());
    config.train.max_steps = 2;
    run_on(&config, reverse_task(50, 1), dir.path(), false).unwrap();
    let vocab = std::fs::read_to_string(dir.path().join("vocab.txt")).unwrap();
    assert!(vocab.lines().any(|l| l.split('\t').next() == Some("x")));
    let saved = Config::load(&dir.path().join("config.toml")).unwrap();
    assert_eq!(saved.text, text);
    // Resuming reads the same settings back.
    config.train.max_steps = 3;
    run_on(&config, reverse_task(50, 1), dir.path(), true).unwrap();

    // A [text] that contradicts the pipeline is refused, naming the key.
    let mut config = tiny_config();
    config.text.vocab_size = 123;
    config.data.pipeline = Some(prepared.path().to_path_buf());
    let err = run_on(
        &config,
        reverse_task(50, 1),
        tempfile::tempdir().unwrap().path(),
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("data.pipeline"), "{err}");
    // A directory that holds no pipeline is named.
    config.text = Default::default();
    config.data.pipeline = Some(dir.path().join("nothing-here"));
    let err = run_on(
        &config,
        reverse_task(50, 1),
        tempfile::tempdir().unwrap().path(),
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nothing-here"), "{err}");
}

/// LoRA on an RNN (issue 23: "LoRA also applies to the RNNs' dense layers"): the base frozen, the
/// input projections, attentional layer and vocabulary projection adapted, saved alone, merged.
#[test]
fn lora_adapts_an_rnn_s_dense_layers_and_merges_into_the_same_translations() {
    use rosetta::model::lora::{FinetuneConfig, FinetuneMethod};
    let _guard = serial();
    let device = Default::default();
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("base");
    let mut config = tiny_config();
    config.train.max_steps = 60;
    run_on(&config, reverse_task(600, 1), &base, false).unwrap();

    let mut ft_config = tiny_config();
    ft_config.train.init_from = Some(base.clone());
    ft_config.train.max_steps = 150;
    ft_config.finetune = FinetuneConfig {
        method: FinetuneMethod::Lora,
        rank: 4,
        alpha: 8.0,
        targets: vec!["ih".into(), "pre_output".into(), "output".into()],
        ..FinetuneConfig::default()
    };
    let ft = root.path().join("lora");
    run_on(&ft_config, reverse_task(600, 2), &ft, false).unwrap();
    // It learned: the loss fell from where the base left it.
    let losses = train_losses(&ft);
    let mean = |l: &[(u64, f64)]| l.iter().map(|x| x.1).sum::<f64>() / l.len() as f64;
    let (head, tail) = (mean(&losses[..10]), mean(&losses[losses.len() - 10..]));
    assert!(tail < head * 0.8, "loss {head:.3} → {tail:.3}");
    // Only the updates are saved: two matrices for each direction's ih (2 layers × 1 here), the
    // decoder's ih, pre_output and output.
    assert!(!ft.join("model.safetensors").exists());
    let saved = safetensors::SafeTensors::deserialize(
        &std::fs::read(ft.join("adapter.safetensors")).unwrap(),
    )
    .unwrap()
    .names()
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    assert!(saved.iter().all(|k| k.contains("_lora.")), "{saved:?}");
    for key in [
        "encoder.layers.0.fwd.ih_lora.a",
        "encoder.layers.0.bwd.ih_lora.b",
        "decoder.ih_lora.a",
        "decoder.pre_output_lora.b",
        "decoder.output_lora.a",
    ] {
        assert!(
            saved.iter().any(|k| k == key),
            "{key} missing from {saved:?}"
        );
    }
    // Stopped half-way and resumed, the run ends with the same updates bit for bit: the optimizer's
    // state follows the parameters across processes (regression: a fine-tuning checkpoint loads its
    // parameters by name into fresh random parameter ids, and Adam's moments were lost).
    let resumed = root.path().join("lora-resumed");
    let mut half = ft_config.clone();
    half.train.max_steps = 75;
    for (config, resume) in [(&half, false), (&ft_config, true)] {
        run_on(config, reverse_task(600, 2), &resumed, resume).unwrap();
    }
    let tensors = |path: &Path| -> Vec<(String, Vec<u8>)> {
        let bytes = std::fs::read(path).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut t: Vec<(String, Vec<u8>)> = file
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.data().to_vec()))
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        tensors(&ft.join("adapter.safetensors")),
        tensors(&resumed.join("adapter.safetensors"))
    );

    // Unmerged (merged at load) and merged translate alike, and unlike the base (the updates are
    // applied: the same outputs here, with other log-probabilities).
    let lines = ["a b c d", "h g", "e f a"];
    let translate = |dir: &Path| -> Vec<(String, f32)> {
        Translator::<Flex>::load(dir, &device)
            .unwrap()
            .translate(&lines, &TranslateOptions::default())
            .unwrap()
            .iter()
            .map(|t| (t.text().to_owned(), t.best().unwrap().log_prob))
            .collect()
    };
    let merged = root.path().join("merged");
    rosetta::train::merge::merge_adapter::<Flex>(&ft, &merged, &device).unwrap();
    let (unmerged, merged_out, base_out) = (translate(&ft), translate(&merged), translate(&base));
    for ((a, b), c) in unmerged.iter().zip(&merged_out).zip(&base_out) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-4, "{unmerged:?} vs {merged_out:?}");
        assert!(
            (a.1 - c.1).abs() > 1e-4,
            "{unmerged:?} vs base {base_out:?}"
        );
    }

    // Targets the RNN does not have, or has not in this configuration, are named.
    for (targets, expected) in [
        (vec!["q_proj"], "has no layer \"q_proj\""),
        (vec!["output"], "tie_embeddings"),
    ] {
        let mut wrong = ft_config.clone();
        wrong.finetune.targets = targets.iter().map(|t| t.to_string()).collect();
        if expected == "tie_embeddings" {
            // A base whose output projection is the embedding.
            wrong.train.init_from = None;
            wrong.finetune = FinetuneConfig::default();
            if let ModelConfig::Rnn(rnn) = &mut wrong.model {
                rnn.tie_embeddings = true;
                rnn.embedding_size = 48; // = the attentional layer's output size
            }
            let tied = root.path().join("tied");
            wrong.train.max_steps = 1;
            run_on(&wrong, reverse_task(50, 1), &tied, false).unwrap();
            wrong = ft_config.clone();
            wrong.train.init_from = Some(tied);
            wrong.model = ModelConfig::default();
            wrong.finetune.targets = vec!["output".into()];
        }
        let err = run_on(
            &wrong,
            reverse_task(50, 2),
            &root.path().join(format!("wrong-{}", targets[0])),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(expected), "{err}");
    }
    // With train_embeddings the embedding tables train too and travel with the adapter (PEFT's
    // modules_to_save): the saved tables differ from the base's, and the directory loads.
    let mut with_embeddings = ft_config.clone();
    with_embeddings.finetune.train_embeddings = true;
    with_embeddings.train.max_steps = 20;
    let ft_emb = root.path().join("lora-emb");
    run_on(&with_embeddings, reverse_task(600, 2), &ft_emb, false).unwrap();
    let tables = |path: &Path| -> Vec<(String, Vec<u8>)> {
        let mut t = tensors(path);
        t.retain(|(k, _)| k.ends_with("embedding.weight"));
        t
    };
    let (trained, frozen) = (
        tables(&ft_emb.join("adapter.safetensors")),
        tables(&base.join("model.safetensors")),
    );
    assert_eq!(
        trained.len(),
        2,
        "{:?}",
        trained.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    assert_eq!(trained.len(), frozen.len());
    assert!(
        trained
            .iter()
            .zip(&frozen)
            .all(|(a, b)| a.0 == b.0 && a.1 != b.1)
    );
    assert!(tables(&ft.join("adapter.safetensors")).is_empty());
    Translator::<Flex>::load(&ft_emb, &device).unwrap();

    let mut adapter = ft_config.clone();
    adapter.finetune.method = FinetuneMethod::Adapter;
    let err = run_on(
        &adapter,
        reverse_task(50, 2),
        &root.path().join("adapter"),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("for an RNN use method = \"lora\""), "{err}");
}
