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
    fn empty_histogram_is_zero() {
        assert_eq!(LengthHistogram::default().finish(), LengthStats::default());
    }
}
