//! The `rosetta` command-line tool. It stays thin: it parses arguments, adds context to errors and
//! calls the libraries, where all real work lives.

mod average;
mod evaluate;
mod heatmap;
mod marian;
mod merge;
mod output;
mod prepare;
mod progress;
mod quantize;
mod quickstart;
mod score;
mod serve;
mod sweep;
mod sweep_plots;
mod train;
mod translate;

use clap::{Parser, Subcommand};
use rosetta::device::Workload;
use std::process::ExitCode;

/// Rosetta: train, evaluate, and run sequence-to-sequence models.
#[derive(Debug, Parser)]
#[command(name = "rosetta", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train and try a small model on an embedded task (no files, no downloads).
    Quickstart(quickstart::Args),
    /// Train a model from a TOML config.
    Train(train::Args),
    /// Translate lines with a trained model (stdin → stdout, one output line per input line).
    Translate(translate::Args),
    /// Translate a test set and report BLEU, chrF, perplexity and speed.
    Evaluate(evaluate::Args),
    /// Train tokenizers and vocabularies on a parallel corpus and print its statistics.
    Prepare(prepare::Args),
    /// Average the weights of a run's last checkpoints into a new model directory.
    Average(average::Args),
    /// Score hypotheses against references with BLEU and chrF, exactly as sacreBLEU does.
    Score(score::Args),
    /// Serve models over HTTP: a JSON API, a LibreTranslate-compatible API and a web page.
    Serve(serve::Args),
    /// Convert a pretrained model (Hugging Face Marian / OPUS-MT) into a Rosetta model directory.
    Import(marian::ImportArgs),
    /// Write a Rosetta model as a pretrained-model directory (Hugging Face Marian).
    Export(marian::ExportArgs),
    /// Search hyperparameters: grid or random trials over any config key, with early stopping of
    /// bad trials; `rosetta sweep report DIR` ranks and plots them.
    Sweep(sweep::Args),
    /// Fold a LoRA adapter into its base model's weights, for deployment or export.
    Merge(merge::Args),
    /// Store a Transformer in 8-bit integers (a quarter of its size), as a new model directory.
    Quantize(quantize::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(score::rewrite_sacrebleu_flags(std::env::args()));
    let workload = match cli.command {
        Command::Quickstart(_) | Command::Train(_) | Command::Sweep(_) => Workload::Training,
        Command::Serve(_) => Workload::Serving,
        _ => Workload::Decoding,
    };
    rosetta::device::init_cpu_runtime(workload);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Quickstart(args) => quickstart::run(args),
        Command::Train(args) => train::run(args),
        Command::Translate(args) => translate::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Prepare(args) => prepare::run(args),
        Command::Average(args) => average::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Score(args) => score::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Import(args) => marian::import(args),
        Command::Export(args) => marian::export(args),
        Command::Merge(args) => merge::run(args),
        Command::Sweep(args) => sweep::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated like `{:#}`, but without repeating a cause that the
/// message above it already ends with (the libraries' errors print their source themselves).
fn render_error(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.ends_with(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// `rosetta ... | head` closes our stdout early; that is the reader's choice, not a failure.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
