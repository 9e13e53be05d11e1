//! The `rosetta` command-line tool. It stays thin: it parses arguments, adds context to errors and
//! calls the libraries, where all real work lives.

mod prepare;
mod progress;
mod quickstart;
mod score;
mod train;

use clap::{Parser, Subcommand};
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
    /// Train tokenizers and vocabularies on a parallel corpus and print its statistics.
    Prepare(prepare::Args),
    /// Score hypotheses against references with BLEU and chrF, exactly as sacreBLEU does.
    Score(score::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse_from(score::rewrite_sacrebleu_flags(std::env::args()));
    let result = match cli.command {
        Command::Quickstart(args) => quickstart::run(args),
        Command::Train(args) => train::run(args),
        Command::Prepare(args) => prepare::run(args),
        Command::Score(args) => score::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `rosetta ... | head` closes our stdout early; that is the reader's choice, not a failure.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
