//! `rosetta train CONFIG.toml --model-dir DIR`: train a model from a TOML config.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rosetta::config::Config;
use rosetta::device::{DeviceChoice, Job, resolve, run_on};
use rosetta::train::trainer::{
    Observer, RunInfo, StepReport, TrainData, TrainOptions, TrainSummary, ValidReport, train,
};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run's TOML config ([data], [text], [model], [train]).
    config: PathBuf,
    /// Model directory to write (config, vocabularies, weights, checkpoints, logs).
    #[arg(long, short = 'o')]
    model_dir: PathBuf,
    /// Continue the run in --model-dir from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Override the config's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

/// Progress bar and log lines on stderr.
pub struct Progress {
    bar: ProgressBar,
    max_steps: u64,
}

impl Progress {
    pub fn new(max_steps: u64) -> Self {
        Self::in_group(max_steps, None)
    }

    /// A bar drawn among others (a sweep's), or alone.
    pub fn in_group(max_steps: u64, group: Option<&indicatif::MultiProgress>) -> Self {
        let bar = if max_steps > 0 {
            ProgressBar::new(max_steps)
        } else {
            ProgressBar::new_spinner()
        };
        let bar = match group {
            Some(group) => group.add(bar),
            None => bar,
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} step {pos}/{len} {msg} (ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Progress { bar, max_steps }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// A log line above the bar; straight to stderr when the bar is hidden (stderr is not a
    /// terminal), where indicatif would drop it.
    pub fn line(&self, text: String) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

/// "9870 (of 16228 read; 6358 dropped as longer than 60 tokens)": every filter's count.
fn kept_pairs(stats: &rosetta_text::stats::CorpusStats) -> String {
    if stats.dropped() == 0 {
        return stats.pairs_kept.to_string();
    }
    let mut dropped = Vec::new();
    if stats.dropped_empty > 0 {
        dropped.push(format!("{} dropped as empty", stats.dropped_empty));
    }
    if stats.dropped_too_long > 0 {
        dropped.push(format!(
            "{} dropped as longer than {} tokens",
            stats.dropped_too_long, stats.max_len
        ));
    }
    format!(
        "{} (of {} read; {})",
        stats.pairs_kept,
        stats.pairs_read,
        dropped.join(", ")
    )
}

impl Observer for Progress {
    fn started(&mut self, info: &RunInfo) {
        self.line(format!(
            "{}; {} training pairs ({} batches/epoch), {} validation pairs{}",
            if info.trainable == info.parameters {
                format!("{} parameters", info.parameters)
            } else {
                format!(
                    "{} parameters, {} trainable ({:.2}%)",
                    info.parameters,
                    info.trainable,
                    100.0 * info.trainable as f64 / info.parameters.max(1) as f64
                )
            },
            kept_pairs(&info.train_stats),
            info.batches_per_epoch,
            info.valid_pairs,
            if info.resumed {
                format!("; resuming at step {}", info.start_step)
            } else {
                String::new()
            }
        ));
        if self.max_steps > 0 {
            self.bar.set_position(info.start_step);
        }
    }

    fn step(&mut self, r: &StepReport) {
        self.bar.set_position(r.step);
        self.bar.set_message(format!(
            "epoch {} ({}/{}) loss {:.3} lr {:.2e} {:.0} tok/s",
            r.epoch + 1,
            r.epoch_progress.0,
            r.epoch_progress.1,
            r.loss,
            r.lr,
            r.tokens_per_sec
        ));
    }

    fn validated(&mut self, r: &ValidReport) {
        self.line(format!(
            "step {:>6}: valid ppl {:.2}, BLEU {:.2}, chrF {:.2}{}{}{} ({:.1}s)",
            r.step,
            r.ppl,
            r.bleu,
            r.chrf,
            if r.best { " (best, saved)" } else { "" },
            if r.lr_reduced {
                ", learning rate reduced"
            } else {
                ""
            },
            if r.hit_max_len > 0 {
                format!(
                    ", {} outputs stopped at the maximum output length",
                    r.hit_max_len
                )
            } else {
                String::new()
            },
            r.seconds
        ));
    }

    fn warn(&mut self, message: &str) {
        self.line(format!("warning: {message}"));
    }
}

pub struct TrainJob<'a> {
    pub config: &'a Config,
    pub data: TrainData,
    pub options: TrainOptions,
}

impl Job for TrainJob<'_> {
    type Output = rosetta::Result<TrainSummary>;
    fn run<B: rosetta::burn::tensor::backend::AutodiffBackend>(
        self,
        device: B::Device,
    ) -> Self::Output {
        let mut progress = Progress::new(self.config.train.max_steps);
        let result = train::<B>(
            self.config,
            &self.data,
            &self.options,
            &device,
            &mut progress,
        );
        progress.finish();
        result
    }
}

pub fn print_summary(summary: &TrainSummary, model_dir: &std::path::Path) {
    println!(
        "finished after {} steps in {:.1} min ({}); best validation {} at step {}",
        summary.steps,
        summary.elapsed / 60.0,
        summary.stopped,
        summary
            .best_metric
            .map_or_else(|| "n/a".to_owned(), |m| format!("{m:.2}")),
        summary.best_step
    );
    println!("model directory: {}", model_dir.display());
}

pub fn run(args: Args) -> Result<()> {
    let mut config = Config::load(&args.config)
        .with_context(|| format!("cannot use the config {}", args.config.display()))?;
    if let Some(seed) = args.seed {
        config.train.seed = seed;
    }
    let data = TrainData {
        train: config.data.train()?,
        valid: config.data.valid()?,
    };
    let device = resolve(args.device)?;
    eprintln!("device: {device}");
    let summary = run_on(
        device,
        TrainJob {
            config: &config,
            data,
            options: TrainOptions {
                model_dir: args.model_dir.clone(),
                resume: args.resume,
            },
        },
    )
    .with_context(|| format!("training into {} failed", args.model_dir.display()))?;
    print_summary(&summary, &args.model_dir);
    Ok(())
}
