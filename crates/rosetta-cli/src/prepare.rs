//! `rosetta prepare`: train (or load) the text pipeline of a corpus and report its statistics.

use anyhow::{Context, Result, bail};
use rosetta_text::corpus::CorpusSource;
use rosetta_text::pipeline::{TextConfig, TextPipeline};
use rosetta_text::tokenize::TokenizerKind;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source-language file (plain text or gzip), line-aligned with --tgt.
    #[arg(long, requires = "tgt", conflicts_with = "tsv")]
    src: Option<PathBuf>,
    /// Target-language file (plain text or gzip).
    #[arg(long, requires = "src")]
    tgt: Option<PathBuf>,
    /// One file of `source<TAB>target` lines, instead of --src/--tgt.
    #[arg(long)]
    tsv: Option<PathBuf>,
    /// Directory to write the tokenizers, vocabularies, settings and statistics to.
    #[arg(long, short)]
    out: PathBuf,
    /// Load an existing pipeline from this directory instead of training one (statistics only).
    #[arg(long)]
    from: Option<PathBuf>,
    /// Tokenizer: word, space (pre-tokenized text), char, bpe or unigram.
    #[arg(long, default_value = "bpe")]
    tokenizer: TokenizerKind,
    /// Subword vocabulary size.
    #[arg(long, default_value_t = TextConfig::default().vocab_size)]
    vocab_size: usize,
    /// Separate source and target tokenizers and vocabularies (default: joint).
    #[arg(long)]
    separate: bool,
    /// Minimum piece frequency.
    #[arg(long, default_value_t = TextConfig::default().min_freq)]
    min_freq: u64,
    /// Largest word/char vocabulary, specials included (0 = no limit).
    #[arg(long, default_value_t = TextConfig::default().max_vocab)]
    max_vocab: usize,
    /// Drop pairs longer than this many tokens on either side.
    #[arg(long, default_value_t = TextConfig::default().max_len)]
    max_len: usize,
    /// Lowercase all text.
    #[arg(long)]
    lowercase: bool,
    /// Skip Unicode NFC normalization.
    #[arg(long)]
    no_nfc: bool,
    /// Print the statistics as JSON.
    #[arg(long)]
    json: bool,
}

pub fn corpus_source(
    src: Option<PathBuf>,
    tgt: Option<PathBuf>,
    tsv: Option<PathBuf>,
) -> Result<CorpusSource> {
    match (src, tgt, tsv) {
        (Some(src), Some(tgt), None) => Ok(CorpusSource::Parallel { src, tgt }),
        (None, None, Some(tsv)) => Ok(CorpusSource::Tsv(tsv)),
        _ => bail!("give the corpus either as --src FILE --tgt FILE or as --tsv FILE"),
    }
}

pub fn run(args: Args) -> Result<()> {
    let source = corpus_source(args.src, args.tgt, args.tsv)?;
    let total = source.total_bytes();
    let pipeline = match &args.from {
        Some(dir) => TextPipeline::load(dir)
            .with_context(|| format!("cannot load the text pipeline from {}", dir.display()))?,
        None => {
            let mut config = TextConfig {
                tokenizer: args.tokenizer,
                vocab_size: args.vocab_size,
                joint: !args.separate,
                min_freq: args.min_freq,
                max_vocab: args.max_vocab,
                max_len: args.max_len,
                ..Default::default()
            };
            config.normalize.lowercase = args.lowercase;
            config.normalize.nfc = !args.no_nfc;
            let bar = crate::progress::bytes(total, &format!("training {}", config.tokenizer));
            let fitted = TextPipeline::fit(&source, &config, &|n| bar.set_position(n))
                .with_context(|| {
                    format!("cannot build the text pipeline of {}", source.describe())
                })?;
            bar.finish_and_clear();
            fitted
        }
    };
    let bar = crate::progress::bytes(total, "encoding");
    let (_, stats) = pipeline
        .encode_corpus(&source, &|n| bar.set_position(n))
        .with_context(|| format!("cannot encode {}", source.describe()))?;
    bar.finish_and_clear();

    pipeline
        .save(&args.out)
        .with_context(|| format!("cannot write to {}", args.out.display()))?;
    let stats_path = args.out.join("stats.json");
    let json = serde_json::to_string_pretty(&stats)?;
    std::fs::write(&stats_path, &json)
        .with_context(|| format!("cannot write {}", stats_path.display()))?;
    if args.json {
        println!("{json}");
    } else {
        print!("{stats}");
        println!(
            "vocabulary: {} source, {} target pieces ({}{})",
            pipeline.src_vocab().len(),
            pipeline.tgt_vocab().len(),
            pipeline.config().tokenizer,
            if pipeline.config().joint {
                ", joint"
            } else {
                ", separate"
            }
        );
        println!("wrote {}", args.out.display());
    }
    Ok(())
}
