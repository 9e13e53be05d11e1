//! `rosetta quickstart`: train and try a model on an embedded task, with no files and no downloads.
//!
//! The task is date normalization in English and German ("Tuesday, 3 March 2021", "3. März 2021",
//! "03.03.21" → "2021-03-03"), character-level, with Bahdanau attention.

use crate::train::{Progress, print_summary};
use anyhow::{Context, Result, bail};
use rosetta::config::{Config, StopMetric};
use rosetta::device::{DeviceChoice, Job, resolve, run_on};
use rosetta::model::architecture::ModelConfig;
use rosetta::model::attention::AttentionKind;
use rosetta::model::cell::CellKind;
use rosetta::model::seq2seq::RnnConfig;
use rosetta::train::schedule::ScheduleKind;
use rosetta::train::trainer::{TrainData, TrainOptions, TrainSummary, train};
use rosetta::translate::{TranslateOptions, Translation, Translator};
use rosetta_text::corpus::CorpusSource;
use rosetta_text::tasks::dates::DateTask;
use rosetta_text::tokenize::TokenizerKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const MARKER: &str = "quickstart.json";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to save the trained model directory.
    #[arg(long, short = 'o', default_value = "runs/quickstart")]
    model_dir: PathBuf,
    /// Seed for data, initialization and batching.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

/// The quickstart's settings: small enough for two CPU cores, large enough to get dates right.
fn config(seed: u64) -> Config {
    let mut c = Config::default();
    c.text.tokenizer = TokenizerKind::Char;
    c.text.joint = false;
    c.text.max_len = 64;
    c.model = ModelConfig::Rnn(RnnConfig {
        cell: CellKind::Gru,
        embedding_size: 32,
        encoder_hidden: 64,
        encoder_layers: 1,
        decoder_hidden: 128,
        decoder_layers: 1,
        attention: AttentionKind::Bahdanau,
        attention_size: 64,
        dropout: 0.1,
        ..RnnConfig::default()
    });
    c.train.seed = seed;
    c.train.batch_tokens = 1200;
    c.train.learning_rate = 3e-3;
    c.train.schedule = ScheduleKind::Constant;
    c.train.label_smoothing = 0.0;
    c.train.max_steps = 600;
    c.train.max_epochs = 0;
    c.train.max_minutes = 1.6;
    c.train.valid_every = 300;
    c.train.log_every = 10;
    c.train.patience = 0;
    c.train.stop_metric = StopMetric::Bleu;
    c.train.keep_checkpoints = 1;
    c
}

struct Quickstart<'a> {
    config: &'a Config,
    task: &'a DateTask,
    model_dir: &'a Path,
}

impl Job for Quickstart<'_> {
    type Output = Result<(TrainSummary, Vec<Translation>)>;
    fn run<B: rosetta::burn::tensor::backend::AutodiffBackend>(
        self,
        device: B::Device,
    ) -> Self::Output {
        let data = TrainData {
            train: CorpusSource::Memory(Arc::new(self.task.train.clone())),
            valid: Some(CorpusSource::Memory(Arc::new(self.task.valid.clone()))),
        };
        let options = TrainOptions {
            model_dir: self.model_dir.to_path_buf(),
            resume: false,
        };
        let mut progress = Progress::new(self.config.train.max_steps);
        let summary = train::<B>(self.config, &data, &options, &device, &mut progress);
        progress.finish();
        let summary = summary?;
        let translator = Translator::<B::InnerBackend>::load(self.model_dir, &device)?;
        let inputs: Vec<&str> = self.task.test.iter().map(|(s, _)| s.as_str()).collect();
        Ok((
            summary,
            translator.translate(&inputs, &TranslateOptions::greedy())?,
        ))
    }
}

/// Shades attention weights for a terminal: rows are output pieces, columns source pieces.
fn alignment(t: &Translation) -> String {
    const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
    let mut out = String::new();
    let header: String = t
        .source_pieces
        .iter()
        .map(|p| {
            if p == "▁" {
                ' '
            } else {
                p.chars().next().unwrap_or(' ')
            }
        })
        .collect();
    out.push_str(&format!("      {header}\n"));
    let Some(best) = t.best() else {
        return out;
    };
    for (piece, row) in best.pieces.iter().zip(&best.attention) {
        let shades: String = row
            .iter()
            .take(t.source_pieces.len())
            .map(|&w| SHADES[((w * 4.0).round() as usize).min(4)])
            .collect();
        out.push_str(&format!("   {piece:>2} {shades}\n"));
    }
    out
}

pub fn run(args: Args) -> Result<()> {
    let clock = Instant::now();
    if args.model_dir.exists() {
        if args.model_dir.join(MARKER).exists() {
            std::fs::remove_dir_all(&args.model_dir)
                .with_context(|| format!("cannot replace {}", args.model_dir.display()))?;
        } else {
            bail!(
                "{} exists and was not written by quickstart; choose another --model-dir",
                args.model_dir.display()
            );
        }
    }
    std::fs::create_dir_all(&args.model_dir)?;
    std::fs::write(args.model_dir.join(MARKER), "{\"task\": \"dates\"}\n")?;

    let task = DateTask::generate(args.seed, 20_000, 300, 1_000);
    let config = config(args.seed);
    println!(
        "Rosetta quickstart: normalising dates in English and German, e.g. \"{}\" → \"{}\"",
        task.train[0].0, task.train[0].1
    );
    println!(
        "{} training pairs, {} validation, {} held-out test; char-level GRU encoder-decoder with Bahdanau attention",
        task.train.len(),
        task.valid.len(),
        task.test.len()
    );
    let device = resolve(args.device)?;
    println!("device: {device}");
    let (summary, translations) = run_on(
        device,
        Quickstart {
            config: &config,
            task: &task,
            model_dir: &args.model_dir,
        },
    )?;
    print_summary(&summary, &args.model_dir);

    let correct = translations
        .iter()
        .zip(&task.test)
        .filter(|(t, (_, iso))| t.text() == iso)
        .count();
    println!(
        "\nexact match on {} held-out dates: {:.1}%",
        task.test.len(),
        100.0 * correct as f64 / task.test.len() as f64
    );
    for (t, (src, iso)) in translations.iter().zip(&task.test).take(4) {
        let verdict = if t.text() == iso {
            "✓".to_owned()
        } else {
            format!("✗ expected {iso}")
        };
        println!("\n  {src:<32} → {}   {verdict}", t.text());
        print!("{}", alignment(t));
    }
    println!("\ntotal time {:.1} s", clock.elapsed().as_secs_f64());
    println!("\nnext:");
    println!(
        "  echo \"Freitag, 13. Mai 2022\" | rosetta translate --model {}",
        args.model_dir.display()
    );
    println!("  rosetta prepare --src train.de --tgt train.en -o data/   (your own corpus)");
    println!("  rosetta train examples/multi30k/de-en.toml -o runs/de-en");
    println!(
        "  tensorboard --logdir {}",
        args.model_dir.join("tensorboard").display()
    );
    Ok(())
}
