//! Whitespace tokenization for text that is already tokenized (Moses-tokenized or BPE-segmented
//! corpora, which fairseq and OpenNMT-py take as they are) and for symbolic tasks such as SCAN.

use super::Tokenize;
use crate::error::Result;

/// Splits on whitespace only; joins pieces with single spaces, so normalized text round-trips.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceTokenizer;

impl Tokenize for SpaceTokenizer {
    fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        Ok(text.split_whitespace().map(str::to_owned).collect())
    }

    fn detokenize(&self, pieces: &[String]) -> Result<String> {
        Ok(pieces.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_whitespace_only() {
        let t = SpaceTokenizer;
        let pieces = t.tokenize("I_TURN_RIGHT  I_JUMP , 3.5@@ 0").unwrap();
        assert_eq!(pieces, ["I_TURN_RIGHT", "I_JUMP", ",", "3.5@@", "0"]);
        assert_eq!(
            t.detokenize(&pieces).unwrap(),
            "I_TURN_RIGHT I_JUMP , 3.5@@ 0"
        );
        assert!(t.tokenize("").unwrap().is_empty());
    }
}
