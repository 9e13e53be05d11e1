//! `sweep`: sweep files (`rosetta sweep FILE`), parsed and checked as far as that goes without
//! training: every trial's config is built and validated.

use rosetta_sweep::spec::Sweep;

/// Stands for the repository root in an input, so that a seed can name a real model directory
/// (a decoding sweep's `model` is relative to the working directory, which is not the harness's
/// to choose).
const REPO: &str = "@repo";

/// Input: the contents of a sweep file, read as if it were `examples/multi30k/fuzz.toml`, so
/// that `base = "sweep-rnn-base.toml"` names the example's real base config; `@repo` stands for
/// the repository root (`model = '@repo/crates/rosetta-serve/tests/fixtures/dates-model'`).
///
/// Properties: loading and building the trials give an error or the trials, never a panic, a
/// hang or unbounded memory; a sweep that loads has a fingerprint, and its trials are at least
/// one.
pub fn sweep(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let root = crate::repo_root();
    let text = text.replace(REPO, &root.to_string_lossy());
    let path = root.join("examples/multi30k/fuzz.toml");
    let Ok(sweep) = Sweep::from_toml(&text, &path) else {
        return;
    };
    assert!(!sweep.fingerprint().is_empty());
    if let Ok(trials) = sweep.trials(&path, false) {
        assert!(!trials.is_empty(), "a sweep without trials is accepted");
    }
}
