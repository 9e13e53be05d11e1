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
                // Sweep files (a [space] table) are checked by rosetta-sweep's tests.
                let text = std::fs::read_to_string(&path).unwrap();
                let table: toml::Table = toml::from_str(&text).unwrap();
                if table.contains_key("space") {
                    continue;
                }
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

/// Every complete config shown in README.md (a TOML block with a `[model]` table) parses and
/// validates, so the documentation never rots either.
#[test]
fn readme_configs_load() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let mut count = 0;
    for block in readme.split("```toml\n").skip(1) {
        let Some((toml, _)) = block.split_once("```") else {
            continue;
        };
        // `[[model]]` tables belong to `rosetta serve`'s config (tested in rosetta-serve).
        if toml.contains("[model]") && !toml.contains("[[model]]") {
            Config::from_toml(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
            count += 1;
        }
    }
    assert!(count >= 2, "found only {count} configs in README.md");
}
