//! Word tokenization: whitespace splitting plus punctuation split off as separate tokens.
//!
//! Detokenization is exact with joiner marks (the default since pipelines record `joiners`, as
//! OpenNMT's Tokenizer does with `joiner_annotate`): a piece written without a space before it
//! starts with [`JOINER`], so `I_TURN_RIGHT` becomes `I ￭_ ￭TURN ￭_ ￭RIGHT` and comes back as it
//! was. Pipelines saved before joiners existed keep the old rule-based detokenizer (in the spirit of
//! the Moses detokenizer) so their vocabularies still match.

use super::Tokenize;
use crate::error::Result;

/// Marks a piece that was glued to the previous one (U+FFED HALFWIDTH BLACK SQUARE, OpenNMT's
/// choice: it practically never occurs in text).
pub const JOINER: &str = "￭";

/// Splits on whitespace and separates punctuation and symbols from words.
///
/// An apostrophe, hyphen, period or comma between two letters or digits stays inside the word, so
/// "don't", "well-known", "3.5" and "1,000" are one token each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WordTokenizer {
    joiners: bool,
}

impl Default for WordTokenizer {
    fn default() -> Self {
        WordTokenizer::with_joiners()
    }
}

impl WordTokenizer {
    /// The reversible tokenizer: pieces glued to their predecessor carry [`JOINER`].
    pub fn with_joiners() -> Self {
        WordTokenizer { joiners: true }
    }

    /// The tokenizer of pipelines saved before joiner marks: no marks, rule-based detokenization
    /// (not exact).
    pub fn legacy() -> Self {
        WordTokenizer { joiners: false }
    }

    /// Whether pieces carry joiner marks.
    pub fn joiners(&self) -> bool {
        self.joiners
    }
}

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

fn is_inner_joiner(c: char) -> bool {
    matches!(c, '\'' | '’' | '-' | '.' | ',')
}

/// Splits `text` into tokens, each with whether whitespace preceded it.
fn split(text: &str) -> Vec<(String, bool)> {
    let chars: Vec<char> = text.chars().collect();
    let mut pieces = Vec::new();
    let mut word = String::new();
    let mut word_spaced = false;
    let mut spaced = false; // whitespace seen since the last token
    for (i, &c) in chars.iter().enumerate() {
        let inner_joiner = is_inner_joiner(c)
            && i > 0
            && is_word_char(chars[i - 1])
            && chars.get(i + 1).is_some_and(|&n| is_word_char(n));
        if is_word_char(c) || inner_joiner {
            if word.is_empty() {
                word_spaced = spaced;
                spaced = false;
            }
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            pieces.push((std::mem::take(&mut word), word_spaced));
        }
        if c.is_whitespace() {
            spaced = true;
        } else {
            pieces.push((c.to_string(), spaced));
            spaced = false;
        }
    }
    if !word.is_empty() {
        pieces.push((word, word_spaced));
    }
    pieces
}

impl Tokenize for WordTokenizer {
    fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        let tokens = split(text);
        if !self.joiners {
            return Ok(tokens.into_iter().map(|(t, _)| t).collect());
        }
        Ok(tokens
            .into_iter()
            .enumerate()
            .map(|(i, (token, spaced))| {
                // The first piece has nothing to join; a literal JOINER unglued stays bare, and
                // since no other piece equals JOINER alone, decoding is unambiguous.
                if i == 0 || spaced {
                    token
                } else {
                    format!("{JOINER}{token}")
                }
            })
            .collect())
    }

    fn detokenize(&self, pieces: &[String]) -> Result<String> {
        if self.joiners {
            Ok(join_marked(pieces))
        } else {
            Ok(join_by_rules(pieces))
        }
    }
}

/// Exact detokenization of joiner-marked pieces: a space before every piece but the first, unless
/// it carries the mark.
fn join_marked(pieces: &[String]) -> String {
    let mut out = String::new();
    for (i, piece) in pieces.iter().enumerate() {
        match piece.strip_prefix(JOINER) {
            Some(rest) if !rest.is_empty() => out.push_str(rest),
            _ => {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(piece);
            }
        }
    }
    out
}

/// Rule-based detokenization for pipelines without joiner marks.
fn join_by_rules(pieces: &[String]) -> String {
    let mut out = String::new();
    let mut glue_next = true; // no space before the first token
    let mut open_double_quote = false;
    for piece in pieces {
        let (space_before, glue_after) = match piece.as_str() {
            "." | "," | "!" | "?" | ";" | ":" | "%" | ")" | "]" | "}" | "»" | "…" | "”" | "’" => {
                (false, false)
            }
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        WordTokenizer::legacy().tokenize(s).unwrap()
    }

    fn marked(s: &str) -> Vec<String> {
        WordTokenizer::with_joiners().tokenize(s).unwrap()
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
    fn legacy_detokenizes_common_punctuation() {
        for text in [
            "Hello, world! It's a well-known fact: 3.5% (or 1,000).",
            "He said \"yes\" and left.",
            "Ein Mann in einem blauen Hemd steht auf einer Leiter.",
        ] {
            assert_eq!(
                WordTokenizer::legacy().detokenize(&toks(text)).unwrap(),
                text
            );
        }
    }

    #[test]
    fn joiners_mark_pieces_glued_to_the_previous_one() {
        assert_eq!(
            marked("Hello, (world)!"),
            ["Hello", "￭,", "(", "￭world", "￭)", "￭!"]
        );
        assert_eq!(
            marked("jump twice OUT: I_TURN_RIGHT I_JUMP"),
            [
                "jump", "twice", "OUT", "￭:", "I", "￭_", "￭TURN", "￭_", "￭RIGHT", "I", "￭_",
                "￭JUMP"
            ]
        );
    }

    /// The SCAN bug: outputs came back as `I _ TURN _ RIGHT`.
    #[test]
    fn word_tokenizer_round_trips_underscored_symbols() {
        let t = WordTokenizer::with_joiners();
        for text in [
            "I_TURN_RIGHT I_JUMP I_JUMP",
            "Hello, world! It's a well-known fact: 3.5% (or 1,000).",
            "a ￭ b￭c ￭￭ ￭x x￭",
            "\"yes\" - \"no\" ... ?!",
        ] {
            assert_eq!(t.detokenize(&t.tokenize(text).unwrap()).unwrap(), text);
        }
    }

    #[test]
    fn empty_text_gives_no_tokens() {
        assert!(toks("").is_empty());
        assert!(marked("").is_empty());
    }
}
