//! Text normalization applied to every line before tokenization, for training and translation alike.
//!
//! Normalizing is what makes subword round trips exact: a tokenizer only has to restore the normalized
//! form, and Unicode NFC makes "é" written as one or as two code points the same token.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// How lines are normalized before tokenization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormalizeConfig {
    /// Unicode NFC composition (on by default: text from different sources mixes composed and
    /// decomposed accents).
    pub nfc: bool,
    /// Lowercase everything (off by default: BLEU is reported cased).
    pub lowercase: bool,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        NormalizeConfig {
            nfc: true,
            lowercase: false,
        }
    }
}

impl NormalizeConfig {
    /// Normalizes one line: NFC (if enabled), lowercasing (if enabled), control characters to spaces,
    /// runs of whitespace collapsed to one ASCII space, and leading/trailing whitespace removed.
    ///
    /// Borrows when the line is already normalized, which is the common case on clean corpora.
    pub fn apply<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let mut text: Cow<'a, str> = Cow::Borrowed(line);
        if self.nfc && is_nfc_quick(line.chars()) != IsNormalized::Yes {
            text = Cow::Owned(line.nfc().collect());
        }
        if self.lowercase && text.chars().any(|c| c.is_uppercase()) {
            text = Cow::Owned(text.to_lowercase());
            // Lowercasing can undo NFC: "T̈" has no precomposed form, its lowercase "ẗ" has one.
            if self.nfc && is_nfc_quick(text.chars()) != IsNormalized::Yes {
                text = Cow::Owned(text.nfc().collect());
            }
        }
        if needs_whitespace_cleanup(&text) {
            let mut out = String::with_capacity(text.len());
            for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
                if word.is_empty() {
                    continue;
                }
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(word);
            }
            text = Cow::Owned(out);
        }
        text
    }
}

fn needs_whitespace_cleanup(text: &str) -> bool {
    let mut previous_space = true; // a leading space needs cleanup too
    for c in text.chars() {
        let space = c.is_whitespace() || c.is_control();
        if space && (previous_space || c != ' ') {
            return true;
        }
        previous_space = space;
    }
    previous_space && !text.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_decomposed_accents() {
        let cfg = NormalizeConfig::default();
        assert_eq!(cfg.apply("Cafe\u{301}"), "Café");
    }

    #[test]
    fn collapses_and_trims_whitespace() {
        let cfg = NormalizeConfig::default();
        assert_eq!(cfg.apply("  a \t b\u{a0}\u{a0}c  "), "a b c");
        assert_eq!(cfg.apply("   "), "");
        assert_eq!(cfg.apply(""), "");
    }

    #[test]
    fn borrows_clean_lines() {
        let cfg = NormalizeConfig::default();
        assert!(matches!(cfg.apply("clean line."), Cow::Borrowed(_)));
    }

    /// Fuzzing finding (`fuzz/corpus/tokenize/regression-lowercase-undoes-nfc`): "T̈" lowercased
    /// after NFC came out decomposed, so normalizing it again changed it, and "T̈" and "ẗ" were
    /// different text to the tokenizers.
    #[test]
    fn lowercasing_keeps_the_text_in_nfc() {
        let cfg = NormalizeConfig {
            lowercase: true,
            ..Default::default()
        };
        assert_eq!(cfg.apply("T\u{308}"), "\u{1e97}");
        assert_eq!(cfg.apply("T\u{308}"), cfg.apply("\u{1e97}"));
        assert_eq!(cfg.apply(&cfg.apply("TT\u{308}")), cfg.apply("TT\u{308}"));
    }

    #[test]
    fn lowercases_when_asked() {
        let cfg = NormalizeConfig {
            lowercase: true,
            ..Default::default()
        };
        assert_eq!(cfg.apply("Straße ÉTÉ"), "straße été");
    }
}
