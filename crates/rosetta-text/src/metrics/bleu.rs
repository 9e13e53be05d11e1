//! BLEU (Papineni et al., 2002), computed exactly like sacreBLEU 2.x (`sacrebleu/metrics/bleu.py`).
//!
//! Per segment: lowercase (optional), strip trailing whitespace, tokenize, count word n-grams of orders
//! 1..=`max_ngram_order`; matches are clipped by the maximum count over the references, and the reference
//! length is the one closest to the hypothesis length (the shorter one on ties). The statistics are summed
//! over the corpus as integers, then turned into a score in `f64` in sacreBLEU's order of operations.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use super::ngram::{ID_BITS, Interner, NgramMatcher, ngram_count};
use super::pystr::{py_rstrip, py_split};
use super::score::{Score, Signature};
use super::tokenizer::BleuTokenizer;
use super::{MetricError, check_lengths};

/// The smoothing of zero n-gram precisions (sacreBLEU's `--smooth-method`; Chen & Cherry, WMT 2014,
/// <http://aclweb.org/anthology/W14-3346>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SmoothMethod {
    /// `exp` (the default): NIST smoothing of mteval-v13a.pl — the k-th zero precision becomes
    /// `100 / (2^k * total)`.
    #[default]
    Exp,
    /// `floor`: a zero precision becomes `100 * smooth_value / total` (default value 0.1).
    Floor,
    /// `add-k`: adds `smooth_value` to matches and totals of orders ≥ 2 (default value 1).
    AddK,
    /// `none`: no smoothing; any zero precision gives BLEU 0.
    None,
}

impl SmoothMethod {
    /// Every method, in the order of sacreBLEU's `SMOOTH_DEFAULTS`.
    pub const ALL: [SmoothMethod; 4] = [
        SmoothMethod::None,
        SmoothMethod::Floor,
        SmoothMethod::AddK,
        SmoothMethod::Exp,
    ];

    /// The name used on sacreBLEU's command line and in the signature.
    pub fn name(self) -> &'static str {
        match self {
            SmoothMethod::Exp => "exp",
            SmoothMethod::Floor => "floor",
            SmoothMethod::AddK => "add-k",
            SmoothMethod::None => "none",
        }
    }

    /// The value used when `smooth_value` is not given (`None` for methods without a parameter).
    pub fn default_value(self) -> Option<f64> {
        match self {
            SmoothMethod::Floor => Some(0.1),
            SmoothMethod::AddK => Some(1.0),
            SmoothMethod::Exp | SmoothMethod::None => None,
        }
    }
}

impl fmt::Display for SmoothMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SmoothMethod {
    type Err = MetricError;

    /// Parses `exp`, `floor`, `add-k` or `none`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SmoothMethod::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| MetricError::UnknownSmoothMethod(s.to_string()))
    }
}

/// BLEU settings; [`Bleu::default()`] is sacreBLEU's default (`BLEU()` / `sacrebleu -m bleu`).
#[derive(Debug, Clone, PartialEq)]
pub struct Bleu {
    /// Lowercase hypotheses and references first (`-lc`).
    pub lowercase: bool,
    /// The tokenizer (`-tok`), `13a` by default.
    pub tokenize: BleuTokenizer,
    /// The smoothing method (`-s`), `exp` by default.
    pub smooth_method: SmoothMethod,
    /// The smoothing value for `floor` and `add-k` (`-sv`); `None` takes the method's default.
    pub smooth_value: Option<f64>,
    /// Stop at the highest n-gram order with a non-zero total instead of counting empty orders as zero
    /// precision (sacreBLEU turns this on for sentence-level BLEU, `-sl`).
    pub effective_order: bool,
    /// The highest n-gram order, 4 by default.
    pub max_ngram_order: usize,
}

impl Default for Bleu {
    fn default() -> Self {
        Bleu {
            lowercase: false,
            tokenize: BleuTokenizer::Tok13a,
            smooth_method: SmoothMethod::Exp,
            smooth_value: None,
            effective_order: false,
            max_ngram_order: 4,
        }
    }
}

/// BLEU's sufficient statistics, summed over segments: everything the score is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BleuStats {
    /// Hypothesis length in tokens.
    pub sys_len: u64,
    /// Length of the closest reference, in tokens.
    pub ref_len: u64,
    /// Clipped n-gram matches per order (index 0 = unigrams).
    pub correct: Vec<u64>,
    /// Hypothesis n-grams per order.
    pub total: Vec<u64>,
}

impl BleuStats {
    /// All-zero statistics for n-gram orders 1..=`max_order`.
    pub fn zeros(max_order: usize) -> Self {
        BleuStats {
            sys_len: 0,
            ref_len: 0,
            correct: vec![0; max_order],
            total: vec![0; max_order],
        }
    }

    /// Adds `other` (of the same order) to `self`.
    pub fn add(&mut self, other: &BleuStats) {
        self.sys_len += other.sys_len;
        self.ref_len += other.ref_len;
        for (a, b) in self.correct.iter_mut().zip(&other.correct) {
            *a += b;
        }
        for (a, b) in self.total.iter_mut().zip(&other.total) {
            *a += b;
        }
    }
}

/// A BLEU result with its details (sacreBLEU's `BLEUScore`).
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScore {
    /// BLEU in [0, 100].
    pub score: f64,
    /// Clipped n-gram matches per order.
    pub counts: Vec<u64>,
    /// Hypothesis n-grams per order.
    pub totals: Vec<u64>,
    /// N-gram precisions in percent, after smoothing (0 for orders not reached).
    pub precisions: Vec<f64>,
    /// Brevity penalty.
    pub bp: f64,
    /// Hypothesis length.
    pub sys_len: u64,
    /// Reference length.
    pub ref_len: u64,
    /// `sys_len / ref_len` (0 when `ref_len` is 0).
    pub ratio: f64,
    /// The reproducibility signature.
    pub signature: Signature,
}

impl BleuScore {
    /// The details sacreBLEU prints after the score:
    /// `P1/P2/P3/P4 (BP = x.xxx ratio = x.xxx hyp_len = N ref_len = M)`.
    pub fn verbose(&self) -> String {
        let prec: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        format!(
            "{} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            prec.join("/"),
            self.bp,
            self.ratio,
            self.sys_len,
            self.ref_len
        )
    }

    /// The metric-independent [`Score`] (name `BLEU`).
    pub fn to_score(&self) -> Score {
        Score {
            name: "BLEU".to_string(),
            score: self.score,
            signature: self.signature.format(false),
            short_signature: self.signature.format(true),
            verbose_score: self.verbose(),
        }
    }
}

impl From<&BleuScore> for Score {
    fn from(s: &BleuScore) -> Self {
        s.to_score()
    }
}

/// sacreBLEU's `my_log`: `log`, with log(0) floored to -9999999999.
fn my_log(x: f64) -> f64 {
    if x == 0.0 { -9_999_999_999.0 } else { x.ln() }
}

/// Per-thread state of corpus scoring: reusable buffers and the running sums.
struct Worker {
    stats: BleuStats,
    interner: Interner,
    matcher: NgramMatcher,
    hyp_ids: Vec<u32>,
    ref_ids: Vec<Vec<u32>>,
}

impl Bleu {
    /// The signature (`nrefs:N|case:…|eff:…|tok:…|smooth:…|version:…`) for `nrefs` references.
    pub fn signature(&self, nrefs: usize) -> Signature {
        let mut smooth = self.smooth_method.name().to_string();
        if let Some(default) = self.smooth_method.default_value() {
            smooth.push_str(&format!("[{:.2}]", self.smooth_value.unwrap_or(default)));
        }
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
                    if self.effective_order { "yes" } else { "no" }.to_string(),
                ),
                ("tok", "tok", self.tokenize.name().to_string()),
                ("smooth", "s", smooth),
            ],
        )
    }

    fn check_config(&self) -> Result<(), MetricError> {
        if self.max_ngram_order == 0 {
            return Err(MetricError::InvalidConfig(
                "BLEU's max_ngram_order must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// `_preprocess_segment`: optional lowercasing, `rstrip()`, tokenization (without the tokenizer's final
    /// whitespace normalization, which the `split()` that follows makes redundant).
    fn preprocess(&self, line: &str) -> String {
        if self.lowercase {
            let lower = line.to_lowercase();
            self.tokenize
                .tokenize_unnormalized(py_rstrip(&lower))
                .into_owned()
        } else {
            self.tokenize
                .tokenize_unnormalized(py_rstrip(line))
                .into_owned()
        }
    }

    /// Corpus BLEU of `hyps` against one or more reference streams (`refs[k][i]` is the k-th reference of
    /// `hyps[i]`), as `sacrebleu REF1 REF2 … -i HYP` computes it.
    ///
    /// # Errors
    /// [`MetricError::LengthMismatch`] when a reference stream's length differs from `hyps`' (no
    /// truncation), [`MetricError::NoReferences`], [`MetricError::EmptyCorpus`] (sacreBLEU refuses an
    /// empty system too), [`MetricError::InvalidConfig`] for `max_ngram_order == 0`.
    pub fn corpus_score<H, R, S>(&self, hyps: &[H], refs: &[R]) -> Result<BleuScore, MetricError>
    where
        H: AsRef<str> + Sync,
        R: AsRef<[S]> + Sync,
        S: AsRef<str> + Sync,
    {
        let stats = self.corpus_stats(hyps, refs)?;
        Ok(self.score_from_stats(&stats, refs.len()))
    }

    /// Sentence BLEU of one hypothesis against its references (sacreBLEU's `sentence_score`, which uses
    /// the settings as they are; set `effective_order` as `sacrebleu -sl` does for the usual
    /// sentence-level BLEU).
    ///
    /// # Errors
    /// [`MetricError::NoReferences`] when `refs` is empty, [`MetricError::InvalidConfig`].
    pub fn sentence_score<S: AsRef<str> + Sync>(
        &self,
        hyp: &str,
        refs: &[S],
    ) -> Result<BleuScore, MetricError> {
        let streams: Vec<[&str; 1]> = refs.iter().map(|r| [r.as_ref()]).collect();
        self.corpus_score(&[hyp], &streams)
    }

    /// The summed segment statistics of a corpus (for significance tests or custom aggregation).
    ///
    /// # Errors
    /// As [`Bleu::corpus_score`].
    pub fn corpus_stats<H, R, S>(&self, hyps: &[H], refs: &[R]) -> Result<BleuStats, MetricError>
    where
        H: AsRef<str> + Sync,
        R: AsRef<[S]> + Sync,
        S: AsRef<str> + Sync,
    {
        self.check_config()?;
        check_lengths(hyps.len(), refs.iter().map(|r| r.as_ref().len()))?;
        let order = self.max_ngram_order;
        let new_worker = || Worker {
            stats: BleuStats::zeros(order),
            interner: Interner::default(),
            matcher: NgramMatcher::default(),
            hyp_ids: Vec::new(),
            ref_ids: vec![Vec::new(); refs.len()],
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
                || BleuStats::zeros(order),
                |mut a, b| {
                    a.add(&b);
                    a
                },
            );
        Ok(total)
    }

    /// `_extract_reference_info` + `_compute_segment_statistics` for one segment, added to `w.stats`.
    fn add_segment<'r>(&self, w: &mut Worker, hyp: &str, refs: impl Iterator<Item = &'r str>) {
        w.interner.start_segment();
        let hyp_tok = self.preprocess(hyp);
        w.hyp_ids.clear();
        w.interner.intern_into(py_split(&hyp_tok), &mut w.hyp_ids);
        let hyp_len = w.hyp_ids.len();

        // _get_closest_ref_len: the closest length, the shorter one on ties.
        let mut closest: Option<(usize, usize)> = None; // (diff, len)
        for (ids, r) in w.ref_ids.iter_mut().zip(refs) {
            let ref_tok = self.preprocess(r);
            ids.clear();
            w.interner.intern_into(py_split(&ref_tok), ids);
            let len = ids.len();
            let diff = hyp_len.abs_diff(len);
            closest = match closest {
                None => Some((diff, len)),
                Some((d, l)) if diff < d || (diff == d && len < l) => Some((diff, len)),
                keep => keep,
            };
        }
        let ref_len = closest.map_or(0, |(_, len)| len);

        let ref_slices: Vec<&[u32]> = w.ref_ids.iter().map(Vec::as_slice).collect();
        w.stats.sys_len += hyp_len as u64;
        w.stats.ref_len += ref_len as u64;
        for n in 1..=self.max_ngram_order {
            w.stats.total[n - 1] += ngram_count(hyp_len, n);
            w.stats.correct[n - 1] +=
                w.matcher
                    .clipped_matches(&w.hyp_ids, &ref_slices, n, ID_BITS);
        }
    }

    /// `BLEU.compute_bleu`: the score from summed statistics, in sacreBLEU's floating-point order of
    /// operations. `nrefs` only enters the signature.
    pub fn score_from_stats(&self, stats: &BleuStats, nrefs: usize) -> BleuScore {
        let order = self.max_ngram_order;
        let sys_len = stats.sys_len;
        let ref_len = stats.ref_len;
        let signature = self.signature(nrefs);
        let ratio = if ref_len > 0 {
            sys_len as f64 / ref_len as f64
        } else {
            0.0
        };

        let mut bp = 1.0;
        if sys_len < ref_len {
            bp = if sys_len > 0 {
                (1.0 - ref_len as f64 / sys_len as f64).exp()
            } else {
                0.0
            };
        }

        let mut precisions = vec![0.0f64; order];
        let finish = |score: f64, precisions: Vec<f64>| BleuScore {
            score,
            counts: stats.correct.clone(),
            totals: stats.total.clone(),
            precisions,
            bp,
            sys_len,
            ref_len,
            ratio,
            signature: signature.clone(),
        };

        // Early stop if there are no matches (sacreBLEU #141).
        if stats.correct.iter().all(|&c| c == 0) {
            return finish(0.0, precisions);
        }

        let smooth_value = self
            .smooth_value
            .or(self.smooth_method.default_value())
            .unwrap_or(0.0);
        let mut smooth_mteval = 1.0f64;
        let mut eff_order = order;
        for n in 1..=order {
            let mut correct = stats.correct[n - 1] as f64;
            let mut total = stats.total[n - 1] as f64;
            if self.smooth_method == SmoothMethod::AddK && n > 1 {
                correct += smooth_value;
                total += smooth_value;
            }
            if total == 0.0 {
                break;
            }
            if self.effective_order {
                eff_order = n;
            }
            if correct == 0.0 {
                match self.smooth_method {
                    SmoothMethod::Exp => {
                        smooth_mteval *= 2.0;
                        precisions[n - 1] = 100.0 / (smooth_mteval * total);
                    }
                    SmoothMethod::Floor => precisions[n - 1] = 100.0 * smooth_value / total,
                    SmoothMethod::AddK | SmoothMethod::None => {}
                }
            } else {
                precisions[n - 1] = 100.0 * correct / total;
            }
        }

        // Python's sum() adds left to right starting from 0.
        let log_sum = precisions[..eff_order]
            .iter()
            .fold(0.0f64, |acc, &p| acc + my_log(p));
        let score = bp * (log_sum / eff_order as f64).exp();
        finish(score, precisions)
    }
}
