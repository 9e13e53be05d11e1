//! The sweep library without training: the space (grid, random, conditions), the checks made
//! before anything trains, ASHA on synthetic curves, and concurrent claims on one study.

use rosetta_sweep::pruner::should_stop;
use rosetta_sweep::space::Assignment;
use rosetta_sweep::spec::{Direction, PrunerKind, PrunerSpec, Sweep};
use rosetta_sweep::study::{Point, SqliteStudy, Storage};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const BASE: &str = r#"
[data]
train_src = "train.src"
train_tgt = "train.tgt"
valid_src = "valid.src"
valid_tgt = "valid.tgt"

[text]
tokenizer = "word"

[train]
max_steps = 100
valid_every = 10
"#;

/// A sweep file (and its base config) in a fresh directory.
fn sweep_file(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.toml"), BASE).unwrap();
    let path = dir.path().join("sweep.toml");
    std::fs::write(&path, format!("base = \"base.toml\"\n{body}")).unwrap();
    (dir, path)
}

fn load(body: &str) -> (tempfile::TempDir, PathBuf, rosetta_sweep::Result<Sweep>) {
    let (dir, path) = sweep_file(body);
    let sweep = Sweep::load(&path);
    (dir, path, sweep)
}

fn trials(body: &str) -> rosetta_sweep::Result<Vec<Assignment>> {
    let (_dir, path, sweep) = load(body);
    sweep?.trials(&path, false)
}

fn error(body: &str) -> String {
    match trials(body) {
        Ok(t) => panic!("expected an error, got {} trials", t.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn grid_enumerates_exactly_the_product() {
    let t = trials(
        "[space]\nmodel.dropout = [0.1, 0.2, 0.3]\ntrain.learning_rate = [1e-3, 3e-3]\n\
         model.cell = [\"gru\", \"lstm\"]\n",
    )
    .unwrap();
    assert_eq!(t.len(), 12);
    let distinct: BTreeSet<String> = t.iter().map(rosetta_sweep::space::describe).collect();
    assert_eq!(distinct.len(), 12, "every combination exactly once");
    for a in &t {
        assert_eq!(a.len(), 3);
    }
}

#[test]
fn conditional_keys_apply_only_where_their_condition_holds() {
    let t = trials(
        "[space]\nmodel.arch = [\"rnn\", \"transformer\"]\n\
         model.heads = { choice = [2, 4], when = { \"model.arch\" = \"transformer\" } }\n\
         model.cell = { choice = [\"gru\", \"lstm\"], when = { model.arch = \"rnn\" } }\n",
    )
    .unwrap();
    // rnn × {gru, lstm} + transformer × {2, 4} heads.
    assert_eq!(t.len(), 4);
    for a in &t {
        let transformer = a["model.arch"].as_str() == Some("transformer");
        assert_eq!(a.contains_key("model.heads"), transformer, "{a:?}");
        assert_eq!(a.contains_key("model.cell"), !transformer, "{a:?}");
    }
}

#[test]
fn random_search_is_reproducible_from_its_seed_and_extends_with_more_trials() {
    let body = |seed: u64, n: usize| {
        format!(
            "method = \"random\"\ntrials = {n}\nseed = {seed}\n[space]\n\
             train.learning_rate = {{ log_uniform = [1e-4, 1e-2] }}\n\
             model.dropout = {{ uniform = [0.0, 0.5] }}\n\
             model.encoder_hidden = {{ int = [16, 64], step = 16 }}\n"
        )
    };
    let a = trials(&body(7, 10)).unwrap();
    let b = trials(&body(7, 10)).unwrap();
    let c = trials(&body(8, 10)).unwrap();
    let longer = trials(&body(7, 15)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(&longer[..10], &a[..]);
    for t in &a {
        let lr = t["train.learning_rate"].as_float().unwrap();
        let dropout = t["model.dropout"].as_float().unwrap();
        let hidden = t["model.encoder_hidden"].as_integer().unwrap();
        assert!((1e-4..=1e-2).contains(&lr), "{lr}");
        assert!((0.0..=0.5).contains(&dropout), "{dropout}");
        assert!([16, 32, 48, 64].contains(&hidden), "{hidden}");
    }
}

#[test]
fn bad_sweeps_are_refused_before_anything_trains() {
    let e = error("[space]\nmodel.dropuot = [0.1]\n");
    assert!(e.contains("dropuot") && e.contains("trial 0"), "{e}");
    let e = error("[space]\nmodel.dropout = [\"high\"]\n");
    assert!(e.contains("model.dropout = \"high\""), "{e}");
    let e = error("[space]\ntrain.label_smoothing = [0.1, 1.5]\n");
    assert!(e.contains("label_smoothing = 1.5"), "{e}");
    // Out of range at one end of a random range, though no sampled trial may land there.
    let e = error(
        "method = \"random\"\ntrials = 1\n[space]\ntrain.label_smoothing = { uniform = [0.0, 1.5] }\n",
    );
    assert!(e.contains("label_smoothing"), "{e}");
    assert!(error("[space]\n").contains("empty"));
    assert!(error("").contains("empty"));
    let e = error("[space]\nmodel.dropout = { uniform = [0.0, 0.5] }\n");
    assert!(e.contains("grid needs a list"), "{e}");
    let e = error("method = \"random\"\n[space]\nmodel.dropout = [0.1]\n");
    assert!(e.contains("trials = N"), "{e}");
    let e = error("[space]\nsearch.beam = [1, 5]\n");
    assert!(e.contains("sweep it on a trained model"), "{e}");
    let e = error("[space]\ntrain.max_steps = [1, 5]\n");
    assert!(e.contains("[budget]"), "{e}");
    let e = error("[objective]\nmetric = \"bleu4\"\n[space]\nmodel.dropout = [0.1]\n");
    assert!(e.contains("bleu4"), "{e}");
    let e = error("[pruner]\nkind = \"asha\"\n[space]\nmodel.dropout = [0.1]\n");
    assert!(e.contains("min_steps"), "{e}");
    let e = error("unknown = 1\n[space]\nmodel.dropout = [0.1]\n");
    assert!(e.contains("unknown"), "{e}");
}

#[test]
fn a_grid_over_the_limit_needs_confirmation() {
    let values: Vec<String> = (0..11).map(|i| format!("{}", 16 + i)).collect();
    let body = format!(
        "[space]\nmodel.encoder_hidden = [{0}]\nmodel.embedding_size = [{0}]\n",
        values.join(", ")
    );
    let (_dir, path, sweep) = load(&body);
    let sweep = sweep.unwrap();
    let e = sweep.trials(&path, false).unwrap_err().to_string();
    assert!(e.contains("121 trials") && e.contains("--yes"), "{e}");
    assert_eq!(sweep.trials(&path, true).unwrap().len(), 121);
}

#[test]
fn the_budget_and_objective_replace_the_base_configs_limits() {
    let (_dir, _path, sweep) = load(
        "[objective]\nmetric = \"chrf\"\n[budget]\nmax_minutes = 2.5\n[space]\nmodel.dropout = [0.1]\n",
    );
    let sweep = sweep.unwrap();
    let a = &sweep.assignments().unwrap()[0];
    let config = sweep.train_config(a).unwrap();
    assert_eq!(
        config.train.max_steps, 0,
        "the base's max_steps is replaced"
    );
    assert_eq!(config.train.max_minutes, 2.5);
    assert_eq!(config.train.stop_metric, rosetta::config::StopMetric::Chrf);
    assert!(config.to_toml().unwrap().contains("dropout = 0.1"));
}

// ---------------------------------------------------------------------------------------------------
// ASHA on synthetic curves

fn asha(min_steps: u64, eta: f64) -> PrunerSpec {
    PrunerSpec {
        kind: PrunerKind::Asha,
        min_steps,
        reduction_factor: eta,
        ..PrunerSpec::default()
    }
}

/// Runs trials one after another, as one worker does, validating every 10 steps up to 90 (the
/// budget), feeding each validation to ASHA; returns where each trial stopped.
fn run_sequentially(finals: &[f64], spec: &PrunerSpec) -> Vec<u64> {
    let mut curves: BTreeMap<usize, Vec<Point>> = BTreeMap::new();
    let mut stopped_at = Vec::new();
    for (trial, &final_value) in finals.iter().enumerate() {
        let mut stop = 90;
        for step in (10..=90).step_by(10) {
            // A learning curve rising toward the trial's final value.
            let value = final_value * step as f64 / 90.0;
            curves.entry(trial).or_default().push(Point {
                step,
                objective: value,
                bleu: value,
                chrf: 0.0,
                ppl: 0.0,
                elapsed: 0.0,
            });
            if should_stop(spec, Direction::Maximize, trial, &curves, Some(90)).is_some() {
                stop = step;
                break;
            }
        }
        stopped_at.push(stop);
    }
    stopped_at
}

#[test]
fn asha_stops_the_trials_it_should_on_synthetic_curves() {
    // Rungs at 10 and 30 (90 is the budget: no rung there), η = 3.
    let spec = asha(10, 3.0);
    // Trial values in arrival order; the first trial at a rung always continues.
    let stopped = run_sequentially(&[30.0, 10.0, 20.0, 40.0, 5.0, 35.0], &spec);
    // 0: alone at both rungs → runs to the end.
    // 1: rung 10, 2 trials, keep ⌊2/3⌋→1: 0 is better → stopped at 10.
    // 2: rung 10, 3 trials, keep 1: 0 is better → stopped at 10.
    // 3: best at rung 10 (keep 1 of 4) and at rung 30 (keep 1 of 2) → runs to the end.
    // 4: rung 10, 5 trials, keep 1 → stopped.
    // 5: rung 10, 6 trials, keep 2: only trial 3 is better → continues; rung 30: 3 trials
    //    (0, 3, 5), keep 1: 3 is better → stopped at 30.
    assert_eq!(stopped, [90, 10, 10, 90, 10, 30]);
    // Minimizing flips the order: the worst of the maximizing run is now the best.
    let mut curves = BTreeMap::new();
    for (trial, v) in [(0usize, 5.0), (1, 9.0)] {
        curves.insert(
            trial,
            vec![Point {
                step: 10,
                objective: v,
                bleu: 0.0,
                chrf: 0.0,
                ppl: v,
                elapsed: 0.0,
            }],
        );
    }
    assert!(should_stop(&spec, Direction::Minimize, 1, &curves, Some(90)).is_some());
    assert!(should_stop(&spec, Direction::Minimize, 0, &curves, Some(90)).is_none());
    // No pruner: nothing stops.
    let none = PrunerSpec::default();
    assert_eq!(run_sequentially(&[30.0, 1.0], &none), [90, 90]);
}

// ---------------------------------------------------------------------------------------------------
// The study under concurrent workers

fn claim_all(dir: &Path, worker: &str) -> Vec<usize> {
    let mut study = SqliteStudy::open(dir).unwrap();
    let mut mine = Vec::new();
    while let Some(claim) = study.claim(worker, &|_| Some(true), 3600.0).unwrap() {
        mine.push(claim.id);
        study
            .finish(
                claim.id,
                &rosetta_sweep::study::Outcome {
                    status: rosetta_sweep::study::Status::Complete,
                    objective: Some(claim.id as f64),
                    best_step: None,
                    steps: 0,
                    seconds: 0.0,
                    message: String::new(),
                },
            )
            .unwrap();
    }
    mine
}

#[test]
fn workers_sharing_a_study_never_run_the_same_trial() {
    let dir = tempfile::tempdir().unwrap();
    let trials: Vec<Assignment> = (0..200)
        .map(|i| {
            [("model.x".to_owned(), toml::Value::Integer(i))]
                .into_iter()
                .collect()
        })
        .collect();
    SqliteStudy::open(dir.path())
        .unwrap()
        .begin("sweep", &trials)
        .unwrap();
    // Four connections to the same file, as four processes would have.
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || claim_all(&dir, &format!("worker-{w}")))
        })
        .collect();
    let mut all: Vec<usize> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>(), "each trial exactly once");
    let rows = SqliteStudy::open(dir.path()).unwrap().trials().unwrap();
    assert!(rows.iter().all(|t| t.attempts == 1));
}

#[test]
fn example_sweeps_load_and_every_trial_validates() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut count = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        for entry in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if path.extension().is_none_or(|e| e != "toml")
                || !toml::from_str::<toml::Table>(&text)
                    .unwrap()
                    .contains_key("space")
            {
                continue;
            }
            let sweep = Sweep::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let trials = sweep
                .trials(&path, false)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!trials.is_empty());
            count += 1;
        }
    }
    assert!(count >= 1, "no example sweep found");
}
