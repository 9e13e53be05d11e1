//! BLEU and chrF/chrF++ scores identical to sacreBLEU 2.x (verified against sacreBLEU
//! [`SACREBLEU_VERSION`] = 2.6.0 to 4 decimals on the fixtures in `tests/fixtures/sacrebleu/`), with
//! sacreBLEU's signatures and command-line output formats.
//!
//! ```
//! use rosetta_text::metrics::{Bleu, Chrf, OutputFormat, render};
//!
//! let hyps = ["The cat sat on the mat.", "Hello world!"];
//! let refs = vec![vec!["The cat is on the mat.", "Hello, world!"]]; // one reference stream
//! let bleu = Bleu::default().corpus_score(&hyps, &refs)?;
//! let chrf = Chrf::default().corpus_score(&hyps, &refs)?;
//! assert_eq!(format!("{:.1}", bleu.score), "42.1");
//! let text = render(&[bleu.to_score(), chrf.to_score()], 1, OutputFormat::Text);
//! assert!(text.starts_with("  BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = 42.1"));
//! # Ok::<(), rosetta_text::metrics::MetricError>(())
//! ```
//!
//! Layout: [`tokenizer`] (BLEU's `13a`, `intl`, `zh`, `char`, `none`) → [`bleu`] and [`chrf`] (statistics
//! and scores) → [`score`] (the common [`Score`], signatures, and the sacreBLEU renderers).
//!
//! What "identical" covers, and what it does not:
//! - Inputs are taken as sacreBLEU's Python API takes them. Its command line additionally strips trailing
//!   whitespace from every line it reads; do the same with [`strip_line`] to reproduce the command line
//!   (it matters for chrF with `whitespace`, BLEU strips anyway).
//! - Whitespace is Python's (`str.split()`), which includes U+001C..U+001F unlike Rust's.
//! - The `intl` tokenizer uses Unicode 16 general categories (sacreBLEU uses the `regex` module's tables);
//!   characters assigned in other Unicode versions may be classified differently.
//! - sacreBLEU on Python ≥ 3.12 sums BLEU's log precisions with compensated summation; the difference is
//!   at the 1e-13 level, far below the 4 decimals checked.

pub mod bleu;
pub mod chrf;
mod ngram;
mod pystr;
pub mod score;
pub mod tokenizer;

pub use bleu::{Bleu, BleuScore, BleuStats, SmoothMethod};
pub use chrf::{Chrf, ChrfScore};
pub use score::{
    OutputFormat, RenderOptions, Score, Signature, SignatureField, render, render_with,
};
pub use tokenizer::BleuTokenizer;

/// The sacreBLEU version this module reproduces, printed in signatures (`version:2.6.0`). Every fixture
/// in `tests/fixtures/sacrebleu/` was produced by this version.
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// Errors of metric computation and of parsing metric options.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// A reference stream does not have one line per hypothesis.
    #[error(
        "the hypotheses have {hyps} lines but reference stream {stream} has {refs} lines; \
         hypotheses and references must be line-aligned"
    )]
    LengthMismatch {
        /// Number of hypotheses.
        hyps: usize,
        /// 1-based index of the offending reference stream.
        stream: usize,
        /// Number of lines in that stream.
        refs: usize,
    },
    /// No reference stream was given.
    #[error("no references given: at least one reference stream is needed")]
    NoReferences,
    /// There are no hypotheses (sacreBLEU refuses an empty system as well).
    #[error("no hypotheses given: the system output is empty")]
    EmptyCorpus,
    /// A setting is out of range.
    #[error("invalid metric setting: {0}")]
    InvalidConfig(String),
    /// A tokenizer name that is not `13a`, `intl`, `zh`, `char` or `none`.
    #[error("unknown BLEU tokenizer '{0}'; expected one of: 13a, intl, zh, char, none")]
    UnknownTokenizer(String),
    /// A smoothing method that is not `exp`, `floor`, `add-k` or `none`.
    #[error("unknown BLEU smoothing method '{0}'; expected one of: exp, floor, add-k, none")]
    UnknownSmoothMethod(String),
    /// An output format that is not `json` or `text`.
    #[error("unknown output format '{0}'; expected json or text")]
    UnknownFormat(String),
}

/// sacreBLEU's sanity check: every reference stream has exactly as many lines as the hypotheses.
pub(crate) fn check_lengths(
    hyps: usize,
    refs: impl Iterator<Item = usize>,
) -> Result<(), MetricError> {
    let mut any = false;
    for (i, n) in refs.enumerate() {
        any = true;
        if n != hyps {
            return Err(MetricError::LengthMismatch {
                hyps,
                stream: i + 1,
                refs: n,
            });
        }
    }
    if !any {
        return Err(MetricError::NoReferences);
    }
    if hyps == 0 {
        return Err(MetricError::EmptyCorpus);
    }
    Ok(())
}

/// What sacreBLEU's command line does to each line it reads (`line.rstrip()`): removes trailing
/// whitespace, Python's definition (which includes `\r` and U+001C..U+001F).
pub fn strip_line(line: &str) -> &str {
    pystr::py_rstrip(line)
}

/// Reads hypotheses or references as sacreBLEU's command line does (and `rosetta score`): every
/// line of a plain or gzip stream, checked to be UTF-8, its terminator and trailing whitespace
/// removed ([`strip_line`]).
pub fn read_stream(lines: crate::corpus::LineReader) -> crate::Result<Vec<String>> {
    lines
        .map(|line| line.map(|l| strip_line(&l).to_owned()))
        .collect()
}
