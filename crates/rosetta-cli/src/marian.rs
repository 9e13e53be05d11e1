//! `rosetta import marian HF_DIR -o MODEL_DIR` and `rosetta export marian MODEL_DIR -o HF_DIR`:
//! Hugging Face Marian (OPUS-MT) directories in and out.

use crate::output::NewDirectory;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Which foreign format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Hugging Face `MarianMTModel` (OPUS-MT): config.json, model.safetensors or
    /// pytorch_model.bin, source.spm, target.spm, vocab.json.
    Marian,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Format of the directory to import.
    format: Format,
    /// The Hugging Face model directory.
    dir: PathBuf,
    /// New Rosetta model directory.
    #[arg(long, short = 'o')]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Format to write.
    format: Format,
    /// The Rosetta model directory.
    dir: PathBuf,
    /// Directory to write the Hugging Face model into.
    #[arg(long, short = 'o')]
    out: PathBuf,
}

pub fn import(args: ImportArgs) -> Result<()> {
    let Format::Marian = args.format;
    let out = NewDirectory::before(&args.out);
    let report = out.clean_up_on_error(
        rosetta::marian::import_marian(&args.dir, &args.out)
            .with_context(|| format!("cannot import {}", args.dir.display())),
    )?;
    for notice in &report.notices {
        eprintln!("note: {notice}");
    }
    eprintln!(
        "imported {} ({} parameters, vocabularies {} / {}) into {}",
        report.weights.display(),
        report.parameters,
        report.vocab.0,
        report.vocab.1,
        args.out.display()
    );
    Ok(())
}

pub fn export(args: ExportArgs) -> Result<()> {
    let Format::Marian = args.format;
    let out = NewDirectory::before(&args.out);
    out.clean_up_on_error(
        rosetta::marian::export_marian(&args.dir, &args.out)
            .with_context(|| format!("cannot export {}", args.dir.display())),
    )?;
    eprintln!(
        "exported {} as a Hugging Face Marian model to {}",
        args.dir.display(),
        args.out.display()
    );
    Ok(())
}
