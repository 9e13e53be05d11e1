//! Every harness over every file of its committed seed corpus (`fuzz/corpus/<target>/`), so that
//! `cargo test` on stable runs what the fuzzers run, and the regression inputs of past findings.

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    rosetta_fuzz::repo_root().join("fuzz/corpus").join(target)
}

/// Runs `target`'s harness on every file of its corpus; returns how many there were.
fn run_corpus(target: &str) -> usize {
    let &(_, harness) = rosetta_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seed", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap();
        eprintln!("{target}: {}", path.display());
        harness(&data);
    }
    eprintln!("{target}: {} inputs", files.len());
    files.len()
}

/// Runs one committed input (the regression of a finding) through its target's harness.
fn run_input(target: &str, name: &str) {
    let &(_, harness) = rosetta_fuzz::TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let path = corpus_dir(target).join(name);
    harness(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
}

#[test]
fn every_target_has_a_fuzz_target_and_a_corpus() {
    let targets = rosetta_fuzz::repo_root().join("fuzz/fuzz_targets");
    for (name, _) in rosetta_fuzz::TARGETS {
        assert!(
            targets.join(format!("{name}.rs")).is_file(),
            "fuzz/fuzz_targets/{name}.rs"
        );
        assert!(corpus_dir(name).is_dir(), "fuzz/corpus/{name}");
    }
}

#[test]
fn corpus_seeds() {
    run_corpus("corpus");
}

#[test]
fn tokenize_seeds() {
    run_corpus("tokenize");
}

#[test]
fn subword_seeds() {
    run_corpus("subword");
}

#[test]
fn vocab_seeds() {
    run_corpus("vocab");
}

#[test]
fn text_toml_seeds() {
    run_corpus("text_toml");
}

#[test]
fn config_toml_seeds() {
    run_corpus("config_toml");
}

#[test]
fn sweep_seeds() {
    run_corpus("sweep");
}

#[test]
fn checkpoint_seeds() {
    run_corpus("checkpoint");
}

#[test]
fn score_seeds() {
    run_corpus("score");
}

#[test]
fn serve_request_seeds() {
    run_corpus("serve_request");
}

// Regressions of the fuzzers' findings, one test each (their inputs are in the seed corpora too).

/// `tokenize`: "T̈" lowercased after NFC came out decomposed ("t" + U+0308, which has a
/// precomposed form), so normalizing it again changed it.
#[test]
fn lowercasing_after_nfc_leaves_nfc_text() {
    run_input("tokenize", "regression-lowercase-undoes-nfc");
}

/// `sweep`: a random search of `trials = 100000000` drew and checked every trial up front and
/// exhausted memory (found by reviewing the harness, not by the fuzzer); it is now refused.
#[test]
fn a_random_sweep_beyond_the_trial_limit_is_an_error_not_an_oom() {
    run_input("sweep", "regression-random-trials-beyond-the-limit");
}

/// Writes the seeds Rosetta's own code produces into `fuzz/corpus/` (run by hand after a format
/// change: `cargo test -p rosetta-fuzz -- --ignored`).
#[test]
#[ignore]
fn write_generated_seeds() {
    for (target, name, bytes) in rosetta_fuzz::generated_seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
