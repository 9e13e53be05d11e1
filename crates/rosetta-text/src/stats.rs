//! Corpus statistics reported by `rosetta prepare` and at the start of training.

use serde::Serialize;

/// Length distribution of one side of a corpus, in tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LengthStats {
    /// Tokens in all kept sentences.
    pub tokens: u64,
    /// Tokens mapped to `<unk>`.
    pub unknown: u64,
    /// Median sentence length.
    pub p50: u32,
    /// 90th percentile.
    pub p90: u32,
    /// 95th percentile.
    pub p95: u32,
    /// 99th percentile.
    pub p99: u32,
    /// Longest kept sentence.
    pub max: u32,
    /// Mean length.
    pub mean: f64,
}

impl LengthStats {
    /// Share of tokens that are `<unk>`, in percent.
    pub fn unknown_rate(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            100.0 * self.unknown as f64 / self.tokens as f64
        }
    }
}

/// Accumulates a length histogram; memory is proportional to the longest sentence, not the corpus.
#[derive(Debug, Clone, Default)]
pub struct LengthHistogram {
    counts: Vec<u64>,
    tokens: u64,
    unknown: u64,
}

impl LengthHistogram {
    /// Records one sentence of `len` tokens, `unknown` of which are `<unk>`.
    pub fn add(&mut self, len: usize, unknown: usize) {
        if self.counts.len() <= len {
            self.counts.resize(len + 1, 0);
        }
        self.counts[len] += 1;
        self.tokens += len as u64;
        self.unknown += unknown as u64;
    }

    /// Summarizes the histogram.
    pub fn finish(&self) -> LengthStats {
        let n: u64 = self.counts.iter().sum();
        let percentile = |p: f64| -> u32 {
            if n == 0 {
                return 0;
            }
            let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (len, &c) in self.counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return len as u32;
                }
            }
            self.counts.len().saturating_sub(1) as u32
        };
        LengthStats {
            tokens: self.tokens,
            unknown: self.unknown,
            p50: percentile(50.0),
            p90: percentile(90.0),
            p95: percentile(95.0),
            p99: percentile(99.0),
            max: self.counts.iter().rposition(|&c| c > 0).unwrap_or(0) as u32,
            mean: if n == 0 {
                0.0
            } else {
                self.tokens as f64 / n as f64
            },
        }
    }
}

/// Target/source length ratios of kept pairs, in tokens: what the default output-length cap of
/// a trained model is derived from.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RatioStats {
    /// Median ratio.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest ratio.
    pub max: f64,
}

/// Accumulates target/source length ratios in bins of 1/16 (ratios are rounded up to a bin edge,
/// so percentiles err on the long side); memory is fixed whatever the corpus size.
#[derive(Debug, Clone)]
pub struct RatioHistogram {
    bins: Vec<u64>,
    max: f64,
}

const RATIO_BINS_PER_UNIT: f64 = 16.0;
/// Ratios above this share the last bin (their maximum is still exact).
const RATIO_RANGE: f64 = 256.0;

impl Default for RatioHistogram {
    fn default() -> Self {
        RatioHistogram {
            bins: vec![0; (RATIO_RANGE * RATIO_BINS_PER_UNIT) as usize + 1],
            max: 0.0,
        }
    }
}

impl RatioHistogram {
    /// Records a pair of `src_len` and `tgt_len` tokens (a pair with an empty source counts as
    /// ratio `tgt_len`).
    pub fn add(&mut self, src_len: usize, tgt_len: usize) {
        let ratio = tgt_len as f64 / src_len.max(1) as f64;
        self.max = self.max.max(ratio);
        let bin = ((ratio * RATIO_BINS_PER_UNIT).ceil() as usize).min(self.bins.len() - 1);
        self.bins[bin] += 1;
    }

    /// Summarizes the histogram.
    pub fn finish(&self) -> RatioStats {
        let n: u64 = self.bins.iter().sum();
        let percentile = |p: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (bin, &c) in self.bins.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return (bin as f64 / RATIO_BINS_PER_UNIT).min(self.max);
                }
            }
            self.max
        };
        RatioStats {
            p50: percentile(50.0),
            p99: percentile(99.0),
            p999: percentile(99.9),
            max: self.max,
        }
    }
}

/// What happened to a corpus on its way to token ids.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CorpusStats {
    /// Pairs read from disk.
    pub pairs_read: u64,
    /// Pairs kept for training.
    pub pairs_kept: u64,
    /// Pairs dropped because one side was empty or whitespace only.
    pub dropped_empty: u64,
    /// Pairs dropped because one side was longer than the maximum length.
    pub dropped_too_long: u64,
    /// The maximum length used for filtering, in tokens.
    pub max_len: usize,
    /// Source side.
    pub src: LengthStats,
    /// Target side.
    pub tgt: LengthStats,
    /// Target/source length ratios of the kept pairs.
    pub length_ratio: RatioStats,
}

/// Dropping more than this share of a corpus earns a warning.
pub const DROP_WARNING_SHARE: f64 = 0.01;

impl CorpusStats {
    /// Pairs dropped by any filter.
    pub fn dropped(&self) -> u64 {
        self.dropped_empty + self.dropped_too_long
    }

    /// A plain-English warning when the filters dropped more than 1% of the pairs read: a length
    /// limit set below the data's lengths silently shrinks the corpus otherwise.
    pub fn drop_warning(&self) -> Option<String> {
        let share = self.dropped() as f64 / self.pairs_read.max(1) as f64;
        if share <= DROP_WARNING_SHARE {
            return None;
        }
        let mut advice = Vec::new();
        if self.dropped_too_long > 0 {
            advice.push(format!(
                "{} pairs have more than text.max_len = {} tokens on a side: raise text.max_len, or \
                 choose a tokenizer that makes fewer pieces (`space` for pre-tokenized or symbolic \
                 text)",
                self.dropped_too_long, self.max_len
            ));
        }
        if self.dropped_empty > 0 {
            advice.push(format!(
                "{} pairs have an empty side: check that the source and target files are aligned",
                self.dropped_empty
            ));
        }
        Some(format!(
            "{:.1}% of the training pairs were dropped ({} of {}); {}",
            100.0 * share,
            self.dropped(),
            self.pairs_read,
            advice.join("; ")
        ))
    }
}

impl std::fmt::Display for CorpusStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "pairs: {} read, {} kept, {} dropped as empty, {} dropped as longer than {} tokens",
            self.pairs_read,
            self.pairs_kept,
            self.dropped_empty,
            self.dropped_too_long,
            self.max_len
        )?;
        for (name, s) in [("source", &self.src), ("target", &self.tgt)] {
            writeln!(
                f,
                "{name}: {} tokens, {:.3}% unknown; length mean {:.1}, p50 {}, p90 {}, p95 {}, p99 {}, max {}",
                s.tokens,
                s.unknown_rate(),
                s.mean,
                s.p50,
                s.p90,
                s.p95,
                s.p99,
                s.max
            )?;
        }
        let r = &self.length_ratio;
        writeln!(
            f,
            "target/source length ratio: p50 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
            r.p50, r.p99, r.p999, r.max
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_small_histogram() {
        let mut h = LengthHistogram::default();
        for len in 1..=100 {
            h.add(len, usize::from(len == 1));
        }
        let s = h.finish();
        assert_eq!((s.p50, s.p90, s.p95, s.p99, s.max), (50, 90, 95, 99, 100));
        assert_eq!(s.tokens, 5050);
        assert_eq!(s.unknown, 1);
        assert!((s.mean - 50.5).abs() < 1e-9);
    }

    #[test]
    fn ratio_percentiles_round_up_to_a_sixteenth() {
        let mut h = RatioHistogram::default();
        for i in 0..1000 {
            h.add(10, 10 + i % 3); // ratios 1.0, 1.1, 1.2
        }
        h.add(2, 100); // one outlier: 50
        let r = h.finish();
        assert_eq!(r.p50, 1.125); // 1.1 rounded up to 18/16
        assert_eq!(r.p99, 1.25); // 1.2 → 20/16
        assert_eq!(r.p999, 1.25);
        assert_eq!(r.max, 50.0);
        assert_eq!(RatioHistogram::default().finish(), RatioStats::default());
    }

    #[test]
    fn dropping_more_than_one_percent_is_a_warning_naming_the_filter() {
        let mut s = CorpusStats {
            pairs_read: 1000,
            dropped_too_long: 10,
            max_len: 60,
            ..Default::default()
        };
        assert_eq!(s.drop_warning(), None, "exactly 1% is tolerated");
        s.dropped_too_long = 11;
        let w = s.drop_warning().unwrap();
        assert!(w.contains("1.1%") && w.contains("text.max_len = 60"), "{w}");
    }

    #[test]
    fn empty_histogram_is_zero() {
        assert_eq!(LengthHistogram::default().finish(), LengthStats::default());
    }
}
