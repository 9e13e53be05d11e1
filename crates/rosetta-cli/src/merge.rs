//! `rosetta merge --model DIR -o OUT`: fold a LoRA adapter into its base model's weights.

use anyhow::{Context, Result};
use rosetta::burn::backend::Flex;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A LoRA-adapted model directory (`[finetune] method = "lora"`).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// New model directory for the merged weights.
    #[arg(long, short = 'o')]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    // One sum per adapted layer: the CPU backend is always enough.
    rosetta::train::merge::merge_adapter::<Flex>(&args.model, &args.out, &Default::default())
        .with_context(|| format!("cannot merge {}", args.model.display()))?;
    eprintln!(
        "merged the adapter of {} into {}",
        args.model.display(),
        args.out.display()
    );
    Ok(())
}
