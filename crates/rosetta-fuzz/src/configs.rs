//! `text_toml` and `config_toml`: the settings files of a model directory.

use rosetta::config::Config;
use rosetta_text::pipeline::TextConfig;
use std::path::Path;

/// Input: the contents of a pipeline's `text.toml`.
///
/// Properties: parsing and checking give an error or settings, never a panic; accepted settings,
/// written out as `TextPipeline::save` writes them, read back as the same settings.
pub fn text_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("text.toml");
    let Ok(config) = TextConfig::from_toml(text, path) else {
        return;
    };
    let written = config.to_toml().expect("accepted settings write out");
    let again = TextConfig::from_toml(&written, path).unwrap_or_else(|e| {
        panic!("the settings written out are refused: {e}\n{written}");
    });
    assert_eq!(again, config, "written out as\n{written}");
}

/// Input: the contents of a model's (or a training run's) `config.toml`.
///
/// Properties: parsing and validation give an error or a config, never a panic; a config that
/// is accepted writes out (every default included) as TOML that parses to the same TOML again.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    let written = config.to_toml().expect("an accepted config writes out");
    let again = Config::from_toml(&written).unwrap_or_else(|e| {
        panic!("the config written out is refused: {e}\n{written}");
    });
    assert_eq!(again.to_toml().ok().as_deref(), Some(written.as_str()));
}
