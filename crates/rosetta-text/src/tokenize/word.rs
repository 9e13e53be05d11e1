//! Word tokenization: whitespace splitting plus punctuation split off as separate tokens, and a
//! rule-based detokenizer in the spirit of the Moses detokenizer.

use super::Tokenize;
use crate::error::Result;

/// Splits on whitespace and separates punctuation and symbols from words.
///
/// An apostrophe, hyphen, period or comma between two letters or digits stays inside the word, so
/// "don't", "well-known", "3.5" and "1,000" are one token each.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordTokenizer;

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || is_mark(c)
}

fn is_mark(c: char) -> bool {
    use unicode_general_category::{GeneralCategory::*, get_general_category};
    matches!(
        get_general_category(c),
        NonspacingMark | SpacingMark | EnclosingMark
    )
}

fn is_joiner(c: char) -> bool {
    matches!(c, '\'' | '’' | '-' | '.' | ',')
}

impl Tokenize for WordTokenizer {
    fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        let mut word = String::new();
        for (i, &c) in chars.iter().enumerate() {
            let inner_joiner = is_joiner(c)
                && i > 0
                && is_word_char(chars[i - 1])
                && chars.get(i + 1).is_some_and(|&n| is_word_char(n));
            if is_word_char(c) || inner_joiner {
                word.push(c);
                continue;
            }
            if !word.is_empty() {
                pieces.push(std::mem::take(&mut word));
            }
            if !c.is_whitespace() {
                pieces.push(c.to_string());
            }
        }
        if !word.is_empty() {
            pieces.push(word);
        }
        Ok(pieces)
    }

    fn detokenize(&self, pieces: &[String]) -> Result<String> {
        let mut out = String::new();
        let mut glue_next = true; // no space before the first token
        let mut open_double_quote = false;
        for piece in pieces {
            let (space_before, glue_after) = match piece.as_str() {
                "." | "," | "!" | "?" | ";" | ":" | "%" | ")" | "]" | "}" | "»" | "…" | "”"
                | "’" => (false, false),
                "(" | "[" | "{" | "«" | "¿" | "¡" | "“" | "‘" | "$" | "£" | "€" => {
                    (true, true)
                }
                "\"" => {
                    open_double_quote = !open_double_quote;
                    if open_double_quote {
                        (true, true)
                    } else {
                        (false, false)
                    }
                }
                _ => (true, false),
            };
            if space_before && !glue_next {
                out.push(' ');
            }
            out.push_str(piece);
            glue_next = glue_after;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        WordTokenizer.tokenize(s).unwrap()
    }

    #[test]
    fn splits_punctuation_but_keeps_inner_joiners() {
        assert_eq!(
            toks("Hello, world! It's a well-known fact: 3.5% (or 1,000)."),
            [
                "Hello",
                ",",
                "world",
                "!",
                "It's",
                "a",
                "well-known",
                "fact",
                ":",
                "3.5",
                "%",
                "(",
                "or",
                "1,000",
                ")",
                "."
            ]
        );
    }

    #[test]
    fn detokenizes_common_punctuation() {
        for text in [
            "Hello, world! It's a well-known fact: 3.5% (or 1,000).",
            "He said \"yes\" and left.",
            "Ein Mann in einem blauen Hemd steht auf einer Leiter.",
        ] {
            assert_eq!(WordTokenizer.detokenize(&toks(text)).unwrap(), text);
        }
    }

    #[test]
    fn empty_text_gives_no_tokens() {
        assert!(toks("").is_empty());
    }
}
