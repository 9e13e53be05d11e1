//! Long texts for the LibreTranslate API: cut at line and sentence ends into segments the model
//! reads whole, translated as one batch and joined again.
//!
//! A model reads at most its `text.max_len` source pieces and drops the rest (the native API says
//! so per text, `truncated`). LibreTranslate translates a text sentence by sentence, and its
//! clients send paragraphs up to its character limit expecting all of them back; a 200 with the
//! first sentences only would lose the rest silently. Only a text the model would cut is split,
//! so every other text is translated exactly as before. Hand-written: the boundaries needed are
//! few (line breaks, sentence-final punctuation, spaces), and what decides a cut is the model's own
//! tokenizer (`fits`), which no sentence-splitting crate knows about.

use crate::engine::Engine;
use rosetta::translate::{Candidate, SourceText, Translation};

/// A piece of a text and the whitespace that followed it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The text to translate (no leading or trailing whitespace).
    pub text: String,
    /// The whitespace after it in the original (kept so that line breaks survive).
    pub gap: String,
}

/// Characters that end a sentence (a period only after a word: [`ends_with_sentence`]).
fn ends_sentence(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | '…' | '。' | '！' | '？' | '؟' | '۔' | '।'
    )
}

/// Characters that may close a sentence after its final punctuation (`"Ja." Dann`).
fn closes(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '“' | '”' | '‘' | '’' | '»' | '«' | ')' | ']' | '」' | '』'
    )
}

/// Full-width sentence ends need no space after them.
fn ends_without_space(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

/// Whether `text` ends a sentence: with `!`, `?`, `…` or a full-width end, or with a period after
/// a word of two letters or more (so "3. März", "z. B." and initials do not end one, as a
/// sentence splitter's non-breaking prefixes would have it; "Dr." still does).
fn ends_with_sentence(text: &str) -> bool {
    let text = text.trim_end_matches(closes);
    match text.chars().next_back() {
        Some('.') => {
            let word = text.rsplit(char::is_whitespace).next().unwrap_or("");
            word.chars().filter(|c| c.is_alphabetic()).count() >= 2
        }
        Some(c) => ends_sentence(c),
        None => false,
    }
}

/// The text's sentences, each with the whitespace after it; a line break always ends one.
fn sentences(text: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.trim_start().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            let mut gap = c.to_string();
            while let Some(&w) = chars.peek().filter(|w| w.is_whitespace()) {
                gap.push(w);
                chars.next();
            }
            if gap.contains('\n') || ends_with_sentence(&current) || chars.peek().is_none() {
                out.push(Segment {
                    text: std::mem::take(&mut current),
                    gap,
                });
            } else {
                current.push_str(&gap);
            }
            continue;
        }
        current.push(c);
        if ends_without_space(c) && chars.peek().is_some_and(|n| !n.is_whitespace()) {
            out.push(Segment {
                text: std::mem::take(&mut current),
                gap: String::new(),
            });
        }
    }
    if !current.is_empty() {
        out.push(Segment {
            text: current,
            gap: String::new(),
        });
    }
    out
}

/// `text` cut into segments for which `fits` holds (the model reads them whole): its sentences,
/// one each, as LibreTranslate translates them (packing several into a segment while they fit
/// made a Multi30k model, trained on single captions, drop most of a paragraph); a sentence too
/// long alone is cut between words, a word too long alone between characters.
pub fn split_to_fit(text: &str, fits: impl Fn(&str) -> bool) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for sentence in sentences(text) {
        if fits(&sentence.text) {
            out.push(sentence);
            continue;
        }
        cut_between_words(&sentence, &fits, &mut out);
    }
    out
}

/// A sentence too long for the model, as segments cut between words (a word too long alone:
/// between characters, joined again without spaces).
fn cut_between_words(sentence: &Segment, fits: &impl Fn(&str) -> bool, out: &mut Vec<Segment>) {
    let words: Vec<&str> = sentence.text.split(' ').filter(|w| !w.is_empty()).collect();
    let mut start = 0;
    while start < words.len() {
        let n = fitting_prefix(&words[start..], " ", fits);
        if n == 1 && !fits(words[start]) {
            let chars: Vec<String> = words[start].chars().map(String::from).collect();
            let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
            let mut from = 0;
            while from < chars.len() {
                let m = fitting_prefix(&chars[from..], "", fits);
                out.push(Segment {
                    text: chars[from..from + m].concat(),
                    gap: String::new(),
                });
                from += m;
            }
        } else {
            out.push(Segment {
                text: words[start..start + n].join(" "),
                gap: String::new(),
            });
        }
        start += n;
        if let Some(last) = out.last_mut() {
            last.gap = if start < words.len() {
                " ".into()
            } else {
                sentence.gap.clone()
            };
        }
    }
    if words.is_empty() {
        out.push(sentence.clone());
    }
}

/// How many of `units` (at least one), joined by `sep`, the model reads whole: a galloping
/// search (1, 2, 4, … units until one does not fit, then halving between the last two), since
/// where a prefix does not fit no longer one does (a tokenizer's pieces only grow with the text).
/// One call of `fits` per unit made a long text without spaces cost a tokenization per
/// character, each of a prefix as long as the model reads, on the server's request threads;
/// this tries a few prefixes at most twice as long as the segment it finds.
fn fitting_prefix(units: &[&str], sep: &str, fits: &impl Fn(&str) -> bool) -> usize {
    let mut lo = 1;
    let mut step = 1;
    let mut hi = loop {
        let next = (lo + step).min(units.len());
        if next == lo {
            break lo;
        }
        if fits(&units[..next].join(sep)) {
            lo = next;
            step *= 2;
        } else {
            break next - 1;
        }
    };
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(&units[..mid].join(sep)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The segments `engine` translates `text` in, each as the model reads it: the text itself,
/// unless the model would cut it. (A split text's segments are read once more each: the search
/// for them read several candidate prefixes.)
pub fn segments(engine: &dyn Engine, text: &str) -> rosetta::Result<Vec<(Segment, SourceText)>> {
    let source = engine.read_source(text)?;
    let whole = |source| {
        vec![(
            Segment {
                text: text.to_owned(),
                gap: String::new(),
            },
            source,
        )]
    };
    if !source.truncated {
        return Ok(whole(source));
    }
    let parts = split_to_fit(text, |part| {
        engine.read_source(part).is_ok_and(|s| !s.truncated)
    });
    if parts.is_empty() {
        return Ok(whole(source));
    }
    parts
        .into_iter()
        .map(|part| {
            let source = engine.read_source(&part.text)?;
            Ok((part, source))
        })
        .collect()
}

/// One translation per text from the translations of all texts' segments (`plans`, in order):
/// a split text's candidate `k` joins its segments' candidates `k` (their best where a segment
/// has fewer), scores summed, as LibreTranslate (Argos Translate) combines a paragraph's sentence
/// hypotheses.
pub fn merge(plans: &[Vec<Segment>], translations: Vec<Translation>) -> Vec<Translation> {
    let mut next = translations.into_iter();
    let mut out = Vec::with_capacity(plans.len());
    for plan in plans {
        let own: Vec<Translation> = next.by_ref().take(plan.len()).collect();
        if own.len() <= 1 {
            out.extend(own);
            continue;
        }
        let count = own.iter().map(|t| t.candidates.len()).max().unwrap_or(0);
        let candidates = (0..count)
            .map(|k| {
                let picked: Vec<&Candidate> = own
                    .iter()
                    .filter_map(|t| t.candidates.get(k).or_else(|| t.candidates.first()))
                    .collect();
                Candidate {
                    text: join(plan, picked.iter().map(|c| c.text.as_str())),
                    pieces: picked.iter().flat_map(|c| c.pieces.clone()).collect(),
                    log_prob: picked.iter().map(|c| c.log_prob).sum(),
                    score: picked.iter().map(|c| c.score).sum(),
                    attention: Vec::new(),
                    hit_max_len: picked.iter().any(|c| c.hit_max_len),
                }
            })
            .collect();
        out.push(Translation {
            source_pieces: own.iter().flat_map(|t| t.source_pieces.clone()).collect(),
            truncated: own.iter().any(|t| t.truncated),
            candidates,
        });
    }
    out
}

/// The translations of a text's segments joined with its gaps.
pub fn join<'a>(segments: &[Segment], translations: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (segment, translation) in segments.iter().zip(translations) {
        out.push_str(translation);
        out.push_str(&segment.gap);
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(segments: &[Segment]) -> Vec<(&str, &str)> {
        segments
            .iter()
            .map(|s| (s.text.as_str(), s.gap.as_str()))
            .collect()
    }

    fn at_most(n: usize) -> impl Fn(&str) -> bool {
        move |s: &str| s.chars().count() <= n
    }

    #[test]
    fn one_segment_per_sentence_and_lines_stay_apart() {
        let text = "  Ein Hund läuft am 3. März, z. B. hier. Zwei Katzen! „Ja.“ Dann?\n\nNeue Zeile. Ende ";
        let segments = split_to_fit(text, at_most(40));
        assert_eq!(
            texts(&segments),
            vec![
                ("Ein Hund läuft am 3. März, z. B. hier.", " "),
                ("Zwei Katzen!", " "),
                ("„Ja.“", " "),
                ("Dann?", "\n\n"),
                ("Neue Zeile.", " "),
                ("Ende", " "),
            ]
        );
        assert_eq!(
            join(&segments, ["A.", "B!", "C.", "D?", "E.", "F"]),
            "A. B! C. D?\n\nE. F"
        );
    }

    #[test]
    fn a_long_sentence_is_cut_between_words_and_a_long_word_between_characters() {
        assert_eq!(
            texts(&split_to_fit("eins zwei drei vier fünf. Ende", at_most(9))),
            vec![
                ("eins zwei", " "),
                ("drei vier", " "),
                ("fünf.", " "),
                ("Ende", ""),
            ]
        );
        let segments = split_to_fit("ab abcdefghij cd", at_most(4));
        assert_eq!(
            texts(&segments),
            vec![
                ("ab", " "),
                ("abcd", ""),
                ("efgh", ""),
                ("ij", " "),
                ("cd", "")
            ]
        );
        assert_eq!(join(&segments, ["1", "2", "3", "4", "5"]), "1 234 5");
    }

    #[test]
    fn full_width_sentence_ends_need_no_space() {
        assert_eq!(
            texts(&split_to_fit("你好。世界！再见", at_most(4))),
            vec![("你好。", ""), ("世界！", ""), ("再见", "")]
        );
    }

    #[test]
    fn every_segment_fits_and_nothing_is_lost() {
        let text =
            "Ein sehr langer Satz ohne Ende, der weitergeht und weitergeht.\nZweite Zeile! Ja";
        for n in 1..=text.chars().count() {
            let segments = split_to_fit(text, at_most(n));
            assert!(segments.iter().all(|s| at_most(n)(&s.text)), "{n}");
            let words = |s: &str| s.split_whitespace().collect::<String>();
            let joined: String = segments.iter().map(|s| s.text.as_str()).collect();
            assert_eq!(words(&joined), words(text), "{n}");
        }
    }

    /// Cutting a long word called `fits` once per character, each on a prefix as long as the
    /// model reads: thousands of tokenizations for one 5,000-character text.
    #[test]
    fn regression_a_long_text_without_spaces_cost_a_call_per_character() {
        let calls = std::cell::Cell::new(0usize);
        let longest = std::cell::Cell::new(0usize);
        let counted = |s: &str| {
            calls.set(calls.get() + 1);
            let n = s.chars().count();
            // The whole text is tried twice (whole, then as one word); every other try is short.
            if n < 5000 {
                longest.set(longest.get().max(n));
            }
            n <= 64
        };
        let text = "x".repeat(5000);
        let segments = split_to_fit(&text, counted);
        assert_eq!(segments.len(), 5000usize.div_ceil(64));
        assert!(segments.iter().all(|s| s.text.len() <= 64));
        // 79 segments, each found in about 2·log2(64) = 12 tries of at most 128 characters.
        assert!(calls.get() <= 79 * 14 + 2, "{} calls", calls.get());
        assert!(longest.get() <= 128, "{}", longest.get());
        let words = vec!["wort"; 1000].join(" ");
        calls.set(0);
        let segments = split_to_fit(&words, counted);
        assert!(segments.iter().all(|s| s.text.chars().count() <= 64));
        assert!(
            calls.get() <= 2 * segments.len() * 11 + 2,
            "{} calls",
            calls.get()
        );
    }
}
