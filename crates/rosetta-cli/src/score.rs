//! `rosetta score REF... [-i HYP]`: BLEU and chrF exactly as sacreBLEU 2.x computes and prints them.

use anyhow::{Result, bail};
use rosetta_text::corpus::LineReader;
use rosetta_text::metrics::{
    Bleu, BleuTokenizer, Chrf, OutputFormat, RenderOptions, Score, read_stream, render_with,
};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Metric {
    Bleu,
    Chrf,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reference file(s), line-aligned with the hypotheses (plain text or gzip).
    #[arg(required = true)]
    refs: Vec<PathBuf>,
    /// Hypotheses file (default: standard input).
    #[arg(short = 'i', long = "input")]
    input: Option<PathBuf>,
    /// Metrics to compute.
    #[arg(short = 'm', long = "metrics", num_args = 1.., default_values = ["bleu"], value_enum)]
    metrics: Vec<Metric>,
    /// Lowercase hypotheses and references (`-lc`).
    #[arg(long = "lowercase")]
    lowercase: bool,
    /// BLEU tokenizer (`-tok`): 13a, intl, zh, char or none.
    #[arg(long = "tokenize", default_value = "13a")]
    tokenize: BleuTokenizer,
    /// chrF word n-gram order (`-cw`); 2 gives chrF++.
    #[arg(long = "chrf-word-order", default_value_t = 0)]
    chrf_word_order: usize,
    /// chrF character n-gram order.
    #[arg(long = "chrf-char-order", default_value_t = 6)]
    chrf_char_order: usize,
    /// Decimals of the scores.
    #[arg(short = 'w', long = "width", default_value_t = 1)]
    width: usize,
    /// Output format: json (sacreBLEU's default) or text.
    #[arg(short = 'f', long = "format", default_value = "json")]
    format: OutputFormat,
    /// Print only the scores.
    #[arg(short = 'b', long = "score-only")]
    score_only: bool,
    /// Short signatures in text output (`-sh`).
    #[arg(long = "short")]
    short: bool,
}

/// sacreBLEU's multi-letter short options, which clap cannot declare, mapped to their long forms.
pub fn rewrite_sacrebleu_flags(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_score = false;
    for arg in args {
        if out.len() == 1 {
            in_score = arg == "score";
        }
        let mapped = match (in_score, arg.as_str()) {
            (true, "-lc") => "--lowercase".to_owned(),
            (true, "-tok") => "--tokenize".to_owned(),
            (true, "-cw") => "--chrf-word-order".to_owned(),
            (true, "-cc") => "--chrf-char-order".to_owned(),
            (true, "-sh") => "--short".to_owned(),
            _ => arg,
        };
        out.push(mapped);
    }
    out
}

fn read_file(path: &PathBuf) -> Result<Vec<String>> {
    Ok(read_stream(LineReader::open(path)?)?)
}

pub fn run(args: Args) -> Result<()> {
    let hyps: Vec<String> = match &args.input {
        Some(path) => read_file(path)?,
        None => read_stream(LineReader::from_reader("<stdin>", std::io::stdin())?)?,
    };
    let refs: Vec<Vec<String>> = args.refs.iter().map(read_file).collect::<Result<_>>()?;
    for (path, stream) in args.refs.iter().zip(&refs) {
        if stream.len() != hyps.len() {
            bail!(
                "line counts differ: the hypotheses ({}) have {} lines but {} has {} lines",
                args.input
                    .as_ref()
                    .map_or("<stdin>".to_owned(), |p| p.display().to_string()),
                hyps.len(),
                path.display(),
                stream.len()
            );
        }
    }
    let mut scores: Vec<Score> = Vec::new();
    let mut seen = Vec::new();
    for &metric in &args.metrics {
        if seen.contains(&metric) {
            continue;
        }
        seen.push(metric);
        match metric {
            Metric::Bleu => {
                let bleu = Bleu {
                    lowercase: args.lowercase,
                    tokenize: args.tokenize,
                    ..Bleu::default()
                };
                scores.push(bleu.corpus_score(&hyps, &refs)?.to_score());
            }
            Metric::Chrf => {
                let chrf = Chrf {
                    lowercase: args.lowercase,
                    word_order: args.chrf_word_order,
                    char_order: args.chrf_char_order,
                    ..Chrf::default()
                };
                scores.push(chrf.corpus_score(&hyps, &refs)?.to_score());
            }
        }
    }
    println!(
        "{}",
        render_with(
            &scores,
            &RenderOptions {
                width: args.width,
                format: args.format,
                short_signature: args.short,
                score_only: args.score_only,
            }
        )
    );
    Ok(())
}
