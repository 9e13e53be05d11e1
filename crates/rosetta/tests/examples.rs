//! Every example config in the repository parses and validates, so recipes never rot.

use rosetta::config::Config;
use std::path::PathBuf;

#[test]
fn example_configs_load() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut count = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        for entry in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let config =
                    Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                config.data.train().unwrap();
                assert!(config.data.valid().unwrap().is_some(), "{}", path.display());
                count += 1;
            }
        }
    }
    assert!(count >= 5, "found only {count} example configs");
}
