//! chrF (Popović, 2015) and chrF++ (Popović, 2017), computed exactly like sacreBLEU 2.x
//! (`sacrebleu/metrics/chrf.py`).
//!
//! Per segment and reference: character n-grams of orders 1..=`char_order` (whitespace removed unless
//! `whitespace`), plus word n-grams of orders 1..=`word_order` after splitting ASCII punctuation off word
//! ends (chrF++). For every order the statistics are `[hyp n-grams, ref n-grams, matches]`; of several
//! references, the one with the best segment F-score is kept. The integer statistics are summed over the
//! corpus, then turned into an F-beta score averaged over the orders that have both hypothesis and
//! reference n-grams ("effective order", sacreBLEU's default) or, with `eps_smoothing`, over all orders.

use rayon::prelude::*;

use super::ngram::{CHAR_BITS, ID_BITS, Interner, NgramMatcher, ngram_count};
use super::pystr::{is_py_space, py_split};
use super::score::{Score, Signature};
use super::{MetricError, check_lengths};

/// chrF settings; [`Chrf::default()`] is sacreBLEU's `CHRF()` (chrF2), and [`Chrf::plus_plus()`] is
/// chrF++ (`-m chrf -cw 2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chrf {
    /// Character n-gram order (`-cc`), 6 by default.
    pub char_order: usize,
    /// Word n-gram order (`-cw`), 0 by default; 2 gives chrF++.
    pub word_order: usize,
    /// Weight of recall relative to precision (`--chrf-beta`), 2 by default.
    pub beta: u32,
    /// Lowercase hypotheses and references first (`--chrf-lowercase`).
    pub lowercase: bool,
    /// Keep whitespace in character n-grams (`--chrf-whitespace`).
    pub whitespace: bool,
    /// Epsilon smoothing as in chrF++.py, NLTK and Moses (`--chrf-eps-smoothing`) instead of
    /// sacreBLEU's effective-order averaging.
    pub eps_smoothing: bool,
}

impl Default for Chrf {
    fn default() -> Self {
        Chrf {
            char_order: 6,
            word_order: 0,
            beta: 2,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

/// A chrF result (sacreBLEU's `CHRFScore`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChrfScore {
    /// chrF in [0, 100].
    pub score: f64,
    /// `chrF{beta}` followed by one `+` per word order: `chrF2`, `chrF2++`.
    pub name: String,
    /// The summed statistics: for each order (characters first, then words) `[hyp, ref, match]`.
    pub stats: Vec<u64>,
    /// The reproducibility signature.
    pub signature: Signature,
}

impl ChrfScore {
    /// The metric-independent [`Score`] (chrF has no verbose part).
    pub fn to_score(&self) -> Score {
        Score {
            name: self.name.clone(),
            score: self.score,
            signature: self.signature.format(false),
            short_signature: self.signature.format(true),
            verbose_score: String::new(),
        }
    }
}

impl From<&ChrfScore> for Score {
    fn from(s: &ChrfScore) -> Self {
        s.to_score()
    }
}

/// `string.punctuation`, the characters `_remove_punctuation` splits off word ends.
fn is_ascii_punct(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// `CHRF._remove_punctuation`: splits one ASCII punctuation character off the end of each word, or else
/// off its start (so `(hi)` becomes `(hi` and `)`, sacreBLEU issue #124).
fn remove_punctuation(sent: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in py_split(sent) {
        let mut chars = w.chars();
        let first = chars.next();
        let last = chars.next_back();
        match (first, last) {
            // One character (only `first` exists).
            (_, None) => out.push(w),
            (Some(f), Some(l)) => {
                if is_ascii_punct(l) {
                    out.push(&w[..w.len() - 1]);
                    out.push(&w[w.len() - 1..]);
                } else if is_ascii_punct(f) {
                    out.push(&w[..1]);
                    out.push(&w[1..]);
                } else {
                    out.push(w);
                }
            }
            (None, Some(_)) => {}
        }
    }
    out
}

/// Per-thread state of corpus scoring.
struct Worker {
    stats: Vec<u64>,
    interner: Interner,
    matcher: NgramMatcher,
    hyp_chars: Vec<u32>,
    hyp_words: Vec<u32>,
    ref_chars: Vec<u32>,
    ref_words: Vec<u32>,
    seg: Vec<u64>,
    best: Vec<u64>,
}

impl Chrf {
    /// chrF++: word order 2, otherwise the defaults.
    pub fn plus_plus() -> Self {
        Chrf {
            word_order: 2,
            ..Chrf::default()
        }
    }

    /// `chrF{beta}` plus one `+` per word order.
    pub fn name(&self) -> String {
        format!("chrF{}{}", self.beta, "+".repeat(self.word_order))
    }

    /// The signature (`nrefs:N|case:…|eff:…|nc:…|nw:…|space:…|version:…`) for `nrefs` references.
    pub fn signature(&self, nrefs: usize) -> Signature {
        Signature::new(
            nrefs,
            vec![
                (
                    "case",
                    "c",
                    if self.lowercase { "lc" } else { "mixed" }.to_string(),
                ),
                (
                    "eff",
                    "e",
                    if self.eps_smoothing { "no" } else { "yes" }.to_string(),
                ),
                ("nc", "nc", self.char_order.to_string()),
                ("nw", "nw", self.word_order.to_string()),
                (
                    "space",
                    "s",
                    if self.whitespace { "yes" } else { "no" }.to_string(),
                ),
            ],
        )
    }

    fn order(&self) -> usize {
        self.char_order + self.word_order
    }

    fn check_config(&self) -> Result<(), MetricError> {
        if self.order() == 0 {
            return Err(MetricError::InvalidConfig(
                "chrF needs a character or word n-gram order of at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Corpus chrF of `hyps` against one or more reference streams (`refs[k][i]` is the k-th reference of
    /// `hyps[i]`), as `sacrebleu REF1 REF2 … -i HYP -m chrf` computes it.
    ///
    /// # Errors
    /// [`MetricError::LengthMismatch`] when a reference stream's length differs from `hyps`' (no
    /// truncation), [`MetricError::NoReferences`], [`MetricError::EmptyCorpus`],
    /// [`MetricError::InvalidConfig`] when `char_order + word_order == 0`.
    pub fn corpus_score<H, R, S>(&self, hyps: &[H], refs: &[R]) -> Result<ChrfScore, MetricError>
    where
        H: AsRef<str> + Sync,
        R: AsRef<[S]> + Sync,
        S: AsRef<str> + Sync,
    {
        let stats = self.corpus_stats(hyps, refs)?;
        Ok(self.score_from_stats(&stats, refs.len()))
    }

    /// Sentence chrF of one hypothesis against its references (sacreBLEU's `sentence_score`).
    ///
    /// # Errors
    /// [`MetricError::NoReferences`] when `refs` is empty, [`MetricError::InvalidConfig`].
    pub fn sentence_score<S: AsRef<str> + Sync>(
        &self,
        hyp: &str,
        refs: &[S],
    ) -> Result<ChrfScore, MetricError> {
        let streams: Vec<[&str; 1]> = refs.iter().map(|r| [r.as_ref()]).collect();
        self.corpus_score(&[hyp], &streams)
    }

    /// The summed statistics of a corpus: `3 * (char_order + word_order)` integers.
    ///
    /// # Errors
    /// As [`Chrf::corpus_score`].
    pub fn corpus_stats<H, R, S>(&self, hyps: &[H], refs: &[R]) -> Result<Vec<u64>, MetricError>
    where
        H: AsRef<str> + Sync,
        R: AsRef<[S]> + Sync,
        S: AsRef<str> + Sync,
    {
        self.check_config()?;
        check_lengths(hyps.len(), refs.iter().map(|r| r.as_ref().len()))?;
        let width = 3 * self.order();
        let new_worker = || Worker {
            stats: vec![0; width],
            interner: Interner::default(),
            matcher: NgramMatcher::default(),
            hyp_chars: Vec::new(),
            hyp_words: Vec::new(),
            ref_chars: Vec::new(),
            ref_words: Vec::new(),
            seg: vec![0; width],
            best: vec![0; width],
        };
        let total = (0..hyps.len())
            .into_par_iter()
            .with_min_len(256)
            .fold(new_worker, |mut w, i| {
                self.add_segment(
                    &mut w,
                    hyps[i].as_ref(),
                    refs.iter().map(|r| r.as_ref()[i].as_ref()),
                );
                w
            })
            .map(|w| w.stats)
            .reduce(
                || vec![0; width],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(&b) {
                        *x += y;
                    }
                    a
                },
            );
        Ok(total)
    }

    /// Code points of the character n-gram stream: whitespace removed (`''.join(line.split())`) unless
    /// `whitespace` is set.
    fn chars_into(&self, line: &str, out: &mut Vec<u32>) {
        out.clear();
        if self.whitespace {
            out.extend(line.chars().map(u32::from));
        } else {
            out.extend(line.chars().filter(|&c| !is_py_space(c)).map(u32::from));
        }
    }

    /// Lowercases when asked (`_preprocess_segment`; chrF does not strip lines).
    fn preprocess<'a>(&self, line: &'a str) -> std::borrow::Cow<'a, str> {
        if self.lowercase {
            line.to_lowercase().into()
        } else {
            line.into()
        }
    }

    /// `_compute_segment_statistics` for one segment, added to `w.stats`.
    fn add_segment<'r>(&self, w: &mut Worker, hyp: &str, refs: impl Iterator<Item = &'r str>) {
        w.interner.start_segment();
        let hyp = self.preprocess(hyp);
        self.chars_into(&hyp, &mut w.hyp_chars);
        w.hyp_words.clear();
        if self.word_order > 0 {
            w.interner
                .intern_into(remove_punctuation(&hyp).into_iter(), &mut w.hyp_words);
        }

        let mut best_f = -1.0f64;
        let mut have_best = false;
        for r in refs {
            let r = self.preprocess(r);
            self.chars_into(&r, &mut w.ref_chars);
            w.ref_words.clear();
            if self.word_order > 0 {
                w.interner
                    .intern_into(remove_punctuation(&r).into_iter(), &mut w.ref_words);
            }
            let orders = (1..=self.char_order)
                .map(|n| (n, &w.hyp_chars, &w.ref_chars, CHAR_BITS))
                .chain((1..=self.word_order).map(|n| (n, &w.hyp_words, &w.ref_words, ID_BITS)));
            for (i, (n, h, rf, bits)) in orders.enumerate() {
                let ref_count = ngram_count(rf.len(), n);
                // _get_match_statistics: hypothesis n-grams are not counted when the reference has none.
                let hyp_count = if ref_count > 0 {
                    ngram_count(h.len(), n)
                } else {
                    0
                };
                let matches = w.matcher.clipped_matches(h, &[rf.as_slice()], n, bits);
                w.seg[3 * i] = hyp_count;
                w.seg[3 * i + 1] = ref_count;
                w.seg[3 * i + 2] = matches;
            }
            let f = self.f_score(&w.seg);
            if f > best_f {
                best_f = f;
                have_best = true;
                std::mem::swap(&mut w.best, &mut w.seg);
            }
        }
        if have_best {
            for (a, b) in w.stats.iter_mut().zip(&w.best) {
                *a += b;
            }
        }
    }

    /// `CHRF._compute_f_score`: the score in [0, 100] from `[hyp, ref, match]` triples, in sacreBLEU's
    /// floating-point order of operations.
    pub fn f_score(&self, stats: &[u64]) -> f64 {
        let eps = 1e-16;
        let factor = f64::from(self.beta) * f64::from(self.beta);
        let mut score = 0.0f64;
        let mut effective_order = 0u32;
        let mut avg_prec = 0.0f64;
        let mut avg_rec = 0.0f64;

        for triple in stats.chunks_exact(3).take(self.order()) {
            let (n_hyp, n_ref, n_match) = (triple[0], triple[1], triple[2]);
            let prec = if n_hyp > 0 {
                n_match as f64 / n_hyp as f64
            } else {
                eps
            };
            let rec = if n_ref > 0 {
                n_match as f64 / n_ref as f64
            } else {
                eps
            };
            let denom = factor * prec + rec;
            score += if denom > 0.0 {
                (1.0 + factor) * prec * rec / denom
            } else {
                eps
            };
            if n_hyp > 0 && n_ref > 0 {
                avg_prec += prec;
                avg_rec += rec;
                effective_order += 1;
            }
        }

        if self.eps_smoothing {
            return 100.0 * score / self.order() as f64;
        }
        if effective_order == 0 {
            avg_prec = 0.0;
            avg_rec = 0.0;
        } else {
            avg_prec /= f64::from(effective_order);
            avg_rec /= f64::from(effective_order);
        }
        if avg_prec + avg_rec != 0.0 {
            let mut s = (1.0 + factor) * avg_prec * avg_rec;
            s /= (factor * avg_prec) + avg_rec;
            100.0 * s
        } else {
            0.0
        }
    }

    /// The score from summed statistics; `nrefs` only enters the signature.
    pub fn score_from_stats(&self, stats: &[u64], nrefs: usize) -> ChrfScore {
        ChrfScore {
            score: self.f_score(stats),
            name: self.name(),
            stats: stats.to_vec(),
            signature: self.signature(nrefs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_is_split_off_one_end() {
        assert_eq!(
            remove_punctuation("(hi) a, .b c x"),
            ["(hi", ")", "a", ",", ".", "b", "c", "x"]
        );
        assert_eq!(remove_punctuation("é. ü"), ["é", ".", "ü"]);
    }
}
