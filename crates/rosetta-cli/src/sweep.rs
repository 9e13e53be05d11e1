//! `rosetta sweep SWEEP.toml --dir DIR`: run a hyperparameter sweep (resumable; `--jobs N` runs
//! N worker processes); `rosetta sweep report DIR`: rank its trials, plot them, export the best.

use crate::sweep_plots;
use crate::train::Progress;
use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rosetta::device::{DeviceChoice, resolve};
use rosetta::train::trainer::Observer;
use rosetta_sweep::StorageChoice;
use rosetta_sweep::report::Report;
use rosetta_sweep::space::describe;
use rosetta_sweep::study::{Claim, Outcome, Status, Storage};
use rosetta_sweep::worker::{SweepObserver, WorkerOptions, run_worker};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<SweepCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
enum SweepCommand {
    /// Rank a sweep's trials (Markdown, CSV or JSON), plot them, and export the best config.
    Report(ReportArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The sweep file (TOML: base config or model, method, objective, budget, pruner, space).
    #[arg(required = true)]
    sweep: Option<PathBuf>,
    /// The sweep directory: study database and one model directory per trial. Rerunning the same
    /// command continues the sweep; other `rosetta sweep` processes may share it.
    #[arg(long, required = true)]
    dir: Option<PathBuf>,
    /// Trials to run at once, each in its own process with the cores divided among them.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Run a grid larger than 100 trials.
    #[arg(long)]
    yes: bool,
    /// Take over a trial whose worker on another machine has been silent this many minutes.
    #[arg(long, default_value_t = 30.0)]
    stale_after: f64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Keep the study in a PostgreSQL server (postgres://user@host/db) instead of SQLite in
    /// --dir, so that workers on several machines share it.
    #[arg(long)]
    storage: Option<String>,
    /// The study's name on the --storage server (default: the --dir directory's name).
    #[arg(long)]
    study: Option<String>,
    /// Run as one worker of a parallel sweep (started by `--jobs`; progress as log lines).
    #[arg(long, hide = true)]
    worker: bool,
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// The sweep directory.
    dir: PathBuf,
    /// Table format on stdout: markdown, csv or json.
    #[arg(long, default_value = "markdown")]
    format: String,
    /// Where to write the plots, tables and best config (default: DIR/report).
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
    /// The PostgreSQL server of the study (as given to `rosetta sweep --storage`).
    #[arg(long)]
    storage: Option<String>,
    /// The study's name on that server (default: DIR's name).
    #[arg(long)]
    study: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Some(SweepCommand::Report(report)) => run_report(report),
        None => run_sweep(args.run),
    }
}

/// The sweep bar, one bar per running trial, and log lines above them.
struct SweepProgress {
    group: MultiProgress,
    sweep: ProgressBar,
    trial: Progress,
    budget: u64,
}

impl SweepProgress {
    fn new(total: usize, done: usize, budget: u64) -> Self {
        let group = MultiProgress::new();
        let sweep = group.add(ProgressBar::new(total as u64));
        sweep.set_style(
            ProgressStyle::with_template(
                "sweep [{elapsed_precise}] {wide_bar} {pos}/{len} trials {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        sweep.set_position(done as u64);
        let trial = Progress::in_group(budget, Some(&group));
        SweepProgress {
            group,
            sweep,
            trial,
            budget,
        }
    }

    fn line(&self, text: String) {
        if self.sweep.is_hidden() {
            eprintln!("{text}");
        } else {
            self.sweep.println(text);
        }
    }
}

impl SweepObserver for SweepProgress {
    fn trial_started(&mut self, claim: &Claim) {
        self.trial.finish();
        self.trial = Progress::in_group(self.budget, Some(&self.group));
        self.line(format!(
            "trial {}{}: {}",
            claim.id,
            if claim.resumed { " (resumed)" } else { "" },
            describe(&claim.params)
        ));
        self.sweep
            .set_message(format!("(running trial {})", claim.id));
    }

    fn trial_finished(&mut self, trial: usize, outcome: &Outcome) {
        self.trial.finish();
        self.sweep.inc(1);
        self.line(format!(
            "trial {trial}: {} — {} after {} steps ({:.1} min): {}",
            outcome.status,
            outcome
                .objective
                .map_or("no result".to_owned(), |v| format!("objective {v:.2}")),
            outcome.steps,
            outcome.seconds / 60.0,
            outcome.message
        ));
    }

    fn trainer(&mut self) -> &mut dyn Observer {
        &mut self.trial
    }
}

fn run_sweep(args: RunArgs) -> Result<()> {
    let (Some(file), Some(dir)) = (args.sweep.clone(), args.dir.clone()) else {
        bail!("give the sweep file and --dir");
    };
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let storage = StorageChoice {
        url: args.storage.clone(),
        study: args.study.clone(),
    };
    let (sweep, mut study) = rosetta_sweep::open(&file, &dir, &storage, args.yes)
        .with_context(|| format!("cannot start the sweep {}", file.display()))?;
    let trials = study.trials()?;
    let done = trials.iter().filter(|t| t.status.is_finished()).count();
    if !args.worker {
        eprintln!(
            "sweep {}: {} trials ({} finished), study {}",
            file.display(),
            trials.len(),
            done,
            study.location()
        );
    }
    if args.jobs > 1 && !args.worker {
        return run_parallel(&file, &dir, &args, study.as_mut(), &storage);
    }
    let device = resolve(args.device)?;
    let budget = sweep.budget.max_steps.unwrap_or(0);
    let mut progress = SweepProgress::new(trials.len(), done, budget);
    let summary = run_worker(
        &sweep,
        study.as_mut(),
        &WorkerOptions {
            dir: dir.clone(),
            stale_after: args.stale_after * 60.0,
            device,
        },
        &mut progress,
    );
    progress.trial.finish();
    progress.sweep.finish_and_clear();
    let summary = summary.with_context(|| format!("the sweep in {} stopped", dir.display()))?;
    if args.worker {
        eprintln!("worker finished {} trials", summary.finished);
        return Ok(());
    }
    finish(study.as_mut(), &dir, &storage)
}

/// After the last trial: the ranked table (and where the full report comes from).
fn finish(study: &mut dyn Storage, dir: &Path, storage: &StorageChoice) -> Result<()> {
    let report = Report::load(study)?;
    let unfinished = report
        .trials
        .iter()
        .filter(|t| !t.status.is_finished())
        .count();
    print!("{}", report.markdown());
    if unfinished > 0 {
        println!(
            "{unfinished} trials are unfinished: running in other workers, or orphaned by a worker \
             that stopped (run the same command again to resume them)"
        );
    }
    let server: String = storage
        .url
        .iter()
        .map(|u| format!(" --storage {u}"))
        .chain(storage.study.iter().map(|n| format!(" --study {n}")))
        .collect();
    println!(
        "plots, CSV, JSON and the best config: rosetta sweep report {}{server}",
        dir.display()
    );
    Ok(())
}

/// `--jobs N`: N worker processes share the study; this process shows their progress from it.
fn run_parallel(
    file: &Path,
    dir: &Path,
    args: &RunArgs,
    study: &mut dyn Storage,
    storage: &StorageChoice,
) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / args.jobs).max(1);
    let exe = std::env::current_exe().context("cannot find the rosetta executable")?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    eprintln!(
        "{} workers, {threads} threads each; their logs are in {}",
        args.jobs,
        logs.display()
    );
    let mut children = Vec::new();
    for i in 0..args.jobs {
        let log_path = logs.join(format!("worker-{i}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let child = std::process::Command::new(&exe)
            .arg("sweep")
            .arg(file)
            .arg("--dir")
            .arg(dir)
            .arg("--worker")
            .arg("--stale-after")
            .arg(args.stale_after.to_string())
            .arg("--device")
            .arg(args.device.to_string())
            .args(args.yes.then_some("--yes"))
            .args(storage.url.iter().flat_map(|u| ["--storage", u.as_str()]))
            .args(storage.study.iter().flat_map(|n| ["--study", n.as_str()]))
            .env("RAYON_NUM_THREADS", threads.to_string())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start a sweep worker")?;
        children.push((i, child));
    }
    let group = MultiProgress::new();
    let total = study.trials()?.len() as u64;
    let sweep_bar = group.add(ProgressBar::new(total));
    sweep_bar.set_style(
        ProgressStyle::with_template(
            "sweep [{elapsed_precise}] {wide_bar} {pos}/{len} trials {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut bars: BTreeMap<usize, ProgressBar> = BTreeMap::new();
    let mut failed_workers = Vec::new();
    loop {
        let trials = study.trials()?;
        sweep_bar.set_position(trials.iter().filter(|t| t.status.is_finished()).count() as u64);
        for t in &trials {
            if t.status == Status::Running {
                let bar = bars.entry(t.id).or_insert_with(|| {
                    let bar = group.add(ProgressBar::new(t.planned_steps.unwrap_or(0)));
                    bar.set_style(
                        ProgressStyle::with_template("  trial {msg} {wide_bar} step {pos}/{len}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.set_message(t.id.to_string());
                    bar
                });
                if let Some(p) = t.planned_steps {
                    bar.set_length(p);
                }
                bar.set_position(t.step);
            } else if let Some(bar) = bars.remove(&t.id) {
                bar.finish_and_clear();
                if t.status.is_finished() {
                    let line = format!(
                        "trial {}: {} {} ({})",
                        t.id,
                        t.status,
                        t.objective.map_or("-".into(), |v| format!("{v:.2}")),
                        describe(&t.params)
                    );
                    if sweep_bar.is_hidden() {
                        eprintln!("{line}");
                    } else {
                        sweep_bar.println(line);
                    }
                }
            }
        }
        let mut running = 0;
        for (i, child) in &mut children {
            match child.try_wait()? {
                None => running += 1,
                Some(status) if !status.success() && !failed_workers.contains(i) => {
                    failed_workers.push(*i);
                }
                Some(_) => {}
            }
        }
        if running == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    for bar in bars.values() {
        bar.finish_and_clear();
    }
    sweep_bar.finish_and_clear();
    finish(study, dir, storage)?;
    if !failed_workers.is_empty() {
        bail!(
            "{} of {} workers stopped with an error (see {}/worker-N.log); rerun the same command to continue",
            failed_workers.len(),
            args.jobs,
            logs.display()
        );
    }
    Ok(())
}

fn run_report(args: ReportArgs) -> Result<()> {
    let storage = StorageChoice {
        url: args.storage.clone(),
        study: args.study.clone(),
    };
    let mut study = rosetta_sweep::open_storage(&args.dir, &storage, false)
        .with_context(|| format!("cannot read the sweep in {}", args.dir.display()))?;
    let report = Report::load(study.as_mut())
        .with_context(|| format!("cannot read the sweep in {}", args.dir.display()))?;
    let table = match args.format.as_str() {
        "markdown" | "md" => report.markdown(),
        "csv" => report.csv(),
        "json" => report.json(),
        other => bail!("unknown --format {other}; choose markdown, csv or json"),
    };
    print!("{table}");
    let out = args.out.unwrap_or_else(|| args.dir.join("report"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, text: &str| -> Result<()> {
        let path = out.join(name);
        rosetta_text::atomic::write_atomic(&path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write("trials.md", &report.markdown())?;
    write("trials.csv", &report.csv())?;
    write("trials.json", &report.json())?;
    let best = report.best_config(&args.dir)?;
    if let Some(best) = &best {
        write("best.toml", best)?;
    }
    let plots = sweep_plots::write_all(&report, &out)?;
    eprintln!(
        "wrote trials.md, trials.csv, trials.json{} and {} plots to {}",
        if best.is_some() {
            ", best.toml"
        } else {
            " (no finished trial yet: no best.toml)"
        },
        plots,
        out.display()
    );
    if report.training {
        eprintln!(
            "TensorBoard for every trial: tensorboard --logdir {}",
            args.dir.join("trials").display()
        );
    }
    Ok(())
}
