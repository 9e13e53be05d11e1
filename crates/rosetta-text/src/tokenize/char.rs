//! Character tokenization: one piece per Unicode scalar value.

use super::Tokenize;
use crate::error::Result;

/// The piece that stands for a space, so that detokenization is exact.
pub const SPACE_PIECE: &str = "▁";

/// Splits text into characters; spaces become [`SPACE_PIECE`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CharTokenizer;

impl Tokenize for CharTokenizer {
    fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        Ok(text
            .chars()
            .map(|c| {
                if c == ' ' {
                    SPACE_PIECE.to_owned()
                } else {
                    c.to_string()
                }
            })
            .collect())
    }

    fn detokenize(&self, pieces: &[String]) -> Result<String> {
        Ok(pieces
            .iter()
            .map(|p| if p == SPACE_PIECE { " " } else { p.as_str() })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = CharTokenizer;
        let pieces = t.tokenize("über 3 €").unwrap();
        assert_eq!(pieces, ["ü", "b", "e", "r", "▁", "3", "▁", "€"]);
        assert_eq!(t.detokenize(&pieces).unwrap(), "über 3 €");
    }
}
