//! `rosetta average --model DIR --last N --out DIR`: average the weights of a run's last
//! checkpoints into a new model directory.

use crate::output::NewDirectory;
use anyhow::{Context, Result};
use rosetta::burn::backend::Flex;
use rosetta::train::average::{Selection, average_checkpoints};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory written by `rosetta train` (its checkpoints/ are averaged).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Average the N most recent checkpoints (default: every checkpoint the directory holds).
    #[arg(long, value_name = "N", conflicts_with = "steps")]
    last: Option<usize>,
    /// Average the checkpoints of these steps, e.g. `--steps 4500,5000`.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    steps: Vec<u64>,
    /// New model directory for the averaged weights (must not exist, or be empty).
    #[arg(long, short = 'o')]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let selection = match (args.last, args.steps.is_empty()) {
        (Some(n), _) => Selection::Last(n),
        (None, false) => Selection::Steps(args.steps.clone()),
        (None, true) => Selection::All,
    };
    // A mean of a few tensors: the CPU backend is always enough.
    let out = NewDirectory::before(&args.out);
    let averaged = out.clean_up_on_error(
        average_checkpoints::<Flex>(&args.model, &selection, &args.out, &Default::default())
            .with_context(|| format!("cannot average the checkpoints of {}", args.model.display())),
    )?;
    let steps: Vec<String> = averaged.steps.iter().map(u64::to_string).collect();
    eprintln!(
        "averaged {} checkpoint(s) of {} (steps {}) into {}",
        averaged.steps.len(),
        args.model.display(),
        steps.join(", "),
        args.out.display()
    );
    Ok(())
}
