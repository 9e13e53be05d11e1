//! `sweep`: sweep files (`rosetta sweep FILE`), parsed and checked as far as that goes without
//! training: every trial's config is built and validated.

use rosetta_sweep::spec::Sweep;
use std::path::Path;
use std::sync::Once;

/// Input: the contents of a sweep file. It is read as if it were `examples/multi30k/fuzz.toml`,
/// so `base = "sweep-rnn-base.toml"` names the example's real base config, and a decoding sweep's
/// `model = "crates/rosetta-serve/tests/fixtures/dates-model"` a real model directory (paths are
/// relative to the repository root, which the harness makes the working directory once).
///
/// Properties: loading and building the trials give an error or the trials, never a panic, a
/// hang or unbounded memory; a sweep that loads has a fingerprint, and its trials are at least
/// one.
pub fn sweep(data: &[u8]) {
    static CWD: Once = Once::new();
    CWD.call_once(|| {
        // The fuzz process (or this crate's test binary) runs only harnesses, none of which
        // depends on another working directory.
        std::env::set_current_dir(crate::repo_root()).expect("enter the repository root");
    });
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("examples/multi30k/fuzz.toml");
    let Ok(sweep) = Sweep::from_toml(text, path) else {
        return;
    };
    assert!(!sweep.fingerprint().is_empty());
    if let Ok(trials) = sweep.trials(path, false) {
        assert!(!trials.is_empty(), "a sweep without trials is accepted");
    }
}
