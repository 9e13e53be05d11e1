//! `rosetta quantize --model DIR --out DIR`: store a Transformer's weights in 8-bit integers, as a
//! new model directory that `translate`, `evaluate` and `serve` load directly.

use crate::output::NewDirectory;
use anyhow::{Context, Result};
use rosetta::burn::backend::Flex;
use rosetta::model::int8::write_int8_dir;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory of a Transformer (written by `rosetta train`, `average` or `import`).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// New model directory for the int8 model (must not exist, or be empty).
    #[arg(long, short = 'o')]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    // Quantization reads float32 CPU tensors: the CPU backend, whatever the model trained on.
    let out = NewDirectory::before(&args.out);
    let written = out.clean_up_on_error(
        write_int8_dir::<Flex>(&args.model, &args.out, &Default::default())
            .with_context(|| format!("cannot quantize {}", args.model.display())),
    )?;
    let mb = |b: u64| b as f64 / 1e6;
    eprintln!(
        "{} weights in 8-bit integers: {} ({:.1} MB, from {:.1} MB in float32)",
        written.weights,
        args.out.display(),
        mb(written.int8_bytes),
        mb(written.float_bytes)
    );
    Ok(())
}
