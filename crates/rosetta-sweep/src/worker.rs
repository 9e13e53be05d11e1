//! A worker: claims trials from the study one at a time and runs them until none is left.
//!
//! A training trial is an ordinary run of Rosetta's trainer into `DIR/trials/NNNN` (so
//! `translate`, `evaluate` and TensorBoard work on it), always with resume semantics: a trial
//! whose worker died continues from its last checkpoint. Each validation is recorded in the study
//! and shown to the pruner, which may end the trial there. A decoding trial translates the
//! validation set with one set of search settings and scores it.

use crate::error::{Error, Result};
use crate::pruner;
use crate::spec::{Sweep, Target};
use crate::study::{Claim, Outcome, Point, Status, Storage};
use rosetta::device::{Job, Resolved, run_on};
use rosetta::train::trainer::{
    Observer, RunInfo, StepReport, TrainData, TrainOptions, ValidReport, train,
};
use rosetta::translate::{TranslateOptions, Translator};
use rosetta_text::corpus::CorpusSource;
use rosetta_text::metrics::bleu::Bleu;
use rosetta_text::metrics::chrf::Chrf;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Told what the worker does; every method has an empty default.
pub trait SweepObserver {
    /// A trial starts (or resumes).
    fn trial_started(&mut self, _claim: &Claim) {}
    /// A trial ended.
    fn trial_finished(&mut self, _trial: usize, _outcome: &Outcome) {}
    /// Where the running trial's training progress goes.
    fn trainer(&mut self) -> &mut dyn Observer;
}

/// A sweep observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet(rosetta::train::trainer::Silent);

impl SweepObserver for Quiet {
    fn trainer(&mut self) -> &mut dyn Observer {
        &mut self.0
    }
}

/// Settings of a worker that are not part of the sweep.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The sweep directory (study database, trial directories).
    pub dir: PathBuf,
    /// A trial whose worker runs on another machine is taken over after this many seconds
    /// without a heartbeat (workers on this machine are checked directly).
    pub stale_after: f64,
    /// Where to train.
    pub device: Resolved,
}

/// What a worker did.
#[derive(Debug, Clone, Default)]
pub struct WorkerSummary {
    /// Trials it ran to an end (complete, pruned or failed).
    pub finished: usize,
    /// Of those, trials it continued after another worker died.
    pub resumed: usize,
}

/// The model directory of a trial.
pub fn trial_dir(sweep_dir: &Path, trial: usize) -> PathBuf {
    sweep_dir.join("trials").join(format!("{trial:04}"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// What makes process ids comparable: the same boot of the same kernel and the same pid
/// namespace (containers sharing a host name do not share pids).
fn pid_space() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ns: String = ns.chars().filter(char::is_ascii_digit).collect();
    format!("{}:{ns}", boot.trim().get(..8).unwrap_or("0"))
}

/// A process's start time (clock ticks since boot), which tells a reused pid from the original.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// This process's worker name: `host/pid-space/pid/start-time`.
pub fn worker_id() -> String {
    let pid = std::process::id();
    format!(
        "{}/{}/{pid}/{}",
        hostname(),
        pid_space(),
        start_time(pid).unwrap_or(0)
    )
}

/// Whether a worker is alive: known for workers in this machine's pid space (its process
/// exists and started when the worker did), `None` for workers elsewhere.
pub fn is_alive(worker: &str) -> Option<bool> {
    let parts: Vec<&str> = worker.split('/').collect();
    let [host, space, pid, started] = parts.as_slice() else {
        return None;
    };
    if *host != hostname() || *space != pid_space() {
        return None;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return Some(false);
    };
    Some(start_time(pid).is_some_and(|t| t.to_string() == *started))
}

fn current_worker() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(worker_id)
}

/// Claims and runs trials until the study has none left for this worker. The study must have
/// been begun with the sweep's trials ([`Storage::begin`]).
pub fn run_worker(
    sweep: &Sweep,
    storage: &mut dyn Storage,
    options: &WorkerOptions,
    observer: &mut dyn SweepObserver,
) -> Result<WorkerSummary> {
    run_on(
        options.device,
        WorkerJob {
            sweep,
            storage,
            options,
            observer,
        },
    )
}

struct WorkerJob<'a> {
    sweep: &'a Sweep,
    storage: &'a mut dyn Storage,
    options: &'a WorkerOptions,
    observer: &'a mut dyn SweepObserver,
}

impl Job for WorkerJob<'_> {
    type Output = Result<WorkerSummary>;

    fn run<B: rosetta::burn::tensor::backend::AutodiffBackend>(
        self,
        device: B::Device,
    ) -> Self::Output {
        let me = current_worker();
        let mut summary = WorkerSummary::default();
        let mut decoder: Option<Decoder<B::InnerBackend>> = None;
        while let Some(claim) = self
            .storage
            .claim(me, &is_alive, self.options.stale_after)?
        {
            self.observer.trial_started(&claim);
            let outcome = match &self.sweep.target {
                Target::Train { .. } => train_trial::<B>(
                    self.sweep,
                    &claim,
                    self.storage,
                    self.options,
                    self.observer.trainer(),
                    &device,
                )?,
                Target::Decode { model, valid } => {
                    let decoder = match &mut decoder {
                        Some(d) => d,
                        None => decoder.insert(Decoder::load(model, valid, &device)?),
                    };
                    Some(decoder.run(self.sweep, &claim, &self.options.dir)?)
                }
            };
            // `None`: the pruner's outcome is already in the study.
            let finished = match &outcome {
                Some(outcome) => self.storage.finish(claim.id, me, outcome)?,
                None => true,
            };
            if !finished {
                self.observer.trainer().warn(&format!(
                    "trial {} was taken over by another worker (this one was silent longer than \
                     --stale-after); its result there counts",
                    claim.id
                ));
                continue;
            }
            if let Some(outcome) = &outcome {
                self.observer.trial_finished(claim.id, outcome);
            }
            summary.finished += 1;
            summary.resumed += usize::from(claim.resumed);
        }
        Ok(summary)
    }
}

/// Records a training trial's progress and validations in the study and asks the pruner.
struct TrialObserver<'a> {
    sweep: &'a Sweep,
    trial: usize,
    worker: &'a str,
    storage: &'a mut dyn Storage,
    inner: &'a mut dyn Observer,
    planned: Option<u64>,
    /// The trial's own limits in updates and epochs (no pruning at or beyond them).
    budget_steps: Option<u64>,
    epochs: Option<u64>,
    last_beat: Option<Instant>,
    /// Training seconds and updates at the last progress report.
    elapsed: f64,
    step: u64,
    /// The outcome recorded when the pruner stopped the trial.
    pruned: Option<Outcome>,
    /// The first study error (observer methods cannot return one): ends the trial, then the worker.
    error: Option<Error>,
    lost: bool,
}

impl TrialObserver<'_> {
    fn keep(&mut self, result: Result<()>) {
        if let Err(e) = result
            && self.error.is_none()
        {
            self.error = Some(e);
        }
    }

    fn beat(&mut self, step: u64) {
        let result = self
            .storage
            .heartbeat(self.trial, self.worker, step, self.planned);
        match result {
            Ok(true) => {}
            Ok(false) => self.lost = true,
            Err(e) => self.keep(Err(e)),
        }
        self.last_beat = Some(Instant::now());
    }
}

impl Observer for TrialObserver<'_> {
    fn started(&mut self, info: &RunInfo) {
        let by_epochs = self
            .epochs
            .map(|e| e.saturating_mul(info.batches_per_epoch as u64));
        self.planned = match (self.budget_steps, by_epochs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.beat(info.start_step);
        self.inner.started(info);
    }

    fn step(&mut self, report: &StepReport) {
        // A heartbeat every few seconds is plenty and keeps the database quiet.
        if self
            .last_beat
            .is_none_or(|t| t.elapsed().as_secs_f64() > 5.0)
        {
            self.beat(report.step);
        }
        self.elapsed = report.elapsed;
        self.step = report.step;
        self.inner.step(report);
    }

    fn validated(&mut self, report: &ValidReport) {
        let objective = self
            .sweep
            .objective
            .metric
            .pick(report.bleu, report.chrf, report.ppl);
        let point = Point {
            step: report.step,
            objective,
            bleu: report.bleu,
            chrf: report.chrf,
            ppl: report.ppl,
            elapsed: self.elapsed,
        };
        let result = self.storage.record_point(self.trial, &point);
        self.keep(result);
        self.beat(report.step);
        self.inner.validated(report);
    }

    fn stop_requested(&mut self, report: &ValidReport) -> Option<String> {
        if self.error.is_some() {
            return Some("the study database failed".into());
        }
        if self.lost {
            return Some("another worker took this trial over".into());
        }
        let curves = match self.storage.points() {
            Ok(c) => c,
            Err(e) => {
                self.keep(Err(e));
                return Some("the study database failed".into());
            }
        };
        let reason = pruner::should_stop(
            &self.sweep.pruner,
            self.sweep.objective.direction,
            self.trial,
            &curves,
            self.planned,
        )?;
        // Recorded now, in the study: a worker killed before it returns leaves a pruned trial,
        // not one to resume (and judge again against curves that have moved on).
        let points = curves.get(&self.trial).map(Vec::as_slice).unwrap_or(&[]);
        let best = pruner::best_point(points, self.sweep.objective.direction);
        let outcome = Outcome {
            status: Status::Pruned,
            objective: best.map(|p| p.objective),
            best_step: best.map(|p| p.step),
            steps: report.step,
            seconds: self.elapsed,
            message: reason.clone(),
        };
        match self.storage.finish(self.trial, self.worker, &outcome) {
            Ok(true) => self.pruned = Some(outcome),
            Ok(false) => self.lost = true,
            Err(e) => self.keep(Err(e)),
        }
        Some(reason)
    }

    fn warn(&mut self, message: &str) {
        self.inner.warn(message);
    }
}

/// Trains one trial; `None` when the pruner stopped it (its outcome is then already recorded).
fn train_trial<B: rosetta::burn::tensor::backend::AutodiffBackend>(
    sweep: &Sweep,
    claim: &Claim,
    storage: &mut dyn Storage,
    options: &WorkerOptions,
    progress: &mut dyn Observer,
    device: &B::Device,
) -> Result<Option<Outcome>> {
    let config = sweep
        .train_config(&claim.params)
        .map_err(|message| crate::spec::trial_error(claim.id, &claim.params, message))?;
    let dir = trial_dir(&options.dir, claim.id);
    // A trial killed before its first checkpoint holds nothing to resume (at most a first
    // best-weights file, which `--resume` would take for a finished model): start it over.
    if dir.exists() && rosetta::train::checkpoint::list(&dir)?.is_empty() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let data = TrainData {
        train: config.data.train()?,
        valid: config.data.valid()?,
    };
    let worker = current_worker();
    let positive = |v: u64| (v > 0).then_some(v);
    let mut observer = TrialObserver {
        sweep,
        trial: claim.id,
        worker,
        storage,
        inner: progress,
        planned: None,
        budget_steps: positive(config.train.max_steps),
        epochs: positive(config.train.max_epochs),
        last_beat: None,
        elapsed: 0.0,
        step: 0,
        pruned: None,
        error: None,
        lost: false,
    };
    let result = train::<B>(
        &config,
        &data,
        &TrainOptions {
            model_dir: dir.clone(),
            resume: dir.exists(),
        },
        device,
        &mut observer,
    );
    if let Some(e) = observer.error.take() {
        return Err(e);
    }
    if observer.lost {
        // Another worker holds the trial now; `finish` below reports it and moves on.
        return Ok(Some(failed(0, 0.0, "taken over by another worker".into())));
    }
    match result {
        Ok(summary) => match observer.pruned {
            Some(pruned) if pruned.message == summary.stopped => Ok(None),
            _ => Ok(Some(Outcome {
                status: Status::Complete,
                objective: summary.best_metric,
                best_step: Some(summary.best_step),
                steps: summary.steps,
                seconds: summary.elapsed,
                message: summary.stopped,
            })),
        },
        // The trial's own fault (its settings diverge or are refused): recorded, the sweep goes on.
        Err(e @ (rosetta::Error::Diverged { .. } | rosetta::Error::Config(_))) => {
            Ok(Some(failed(observer.step, observer.elapsed, e.to_string())))
        }
        // Anything else (disk, files) would fail the next trial too: stop, leaving the trial to
        // be resumed by the next run (and given up after a few attempts).
        Err(e) => Err(e.into()),
    }
}

fn failed(steps: u64, seconds: f64, message: String) -> Outcome {
    Outcome {
        status: Status::Failed,
        objective: None,
        best_step: None,
        steps,
        seconds,
        message,
    }
}

/// A trained model and the validation set, for decoding trials.
struct Decoder<B: rosetta::burn::prelude::Backend> {
    translator: Translator<B>,
    sources: Vec<String>,
    refs: Vec<String>,
}

impl<B: rosetta::burn::prelude::Backend> Decoder<B> {
    fn load(model: &Path, valid: &(PathBuf, PathBuf), device: &B::Device) -> Result<Self> {
        let translator = Translator::<B>::load(model, device)?;
        let source = CorpusSource::Parallel {
            src: valid.0.clone(),
            tgt: valid.1.clone(),
        };
        let (mut sources, mut refs) = (Vec::new(), Vec::new());
        for pair in source.open()? {
            let pair = pair?;
            sources.push(pair.src);
            refs.push(pair.tgt.trim().to_owned());
        }
        Ok(Decoder {
            translator,
            sources,
            refs,
        })
    }

    fn run(&self, sweep: &Sweep, claim: &Claim, sweep_dir: &Path) -> Result<Outcome> {
        let search = sweep
            .search_config(&claim.params, &self.translator.search_defaults())
            .map_err(|message| crate::spec::trial_error(claim.id, &claim.params, message))?;
        let clock = Instant::now();
        let lines: Vec<&str> = self.sources.iter().map(String::as_str).collect();
        let options = TranslateOptions {
            search,
            ..TranslateOptions::default()
        };
        let hyps: Vec<String> = self
            .translator
            .translate(&lines, &options)?
            .iter()
            .map(|t| t.text().to_owned())
            .collect();
        let seconds = clock.elapsed().as_secs_f64();
        let refs = std::slice::from_ref(&self.refs);
        let (bleu, chrf) = (
            Bleu::default()
                .corpus_score(&hyps, refs)
                .map(|s| s.score)
                .unwrap_or(0.0),
            Chrf::default()
                .corpus_score(&hyps, refs)
                .map(|s| s.to_score().score)
                .unwrap_or(0.0),
        );
        let dir = trial_dir(sweep_dir, claim.id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut text = hyps.join("\n");
        text.push('\n');
        rosetta_text::atomic::write_atomic(&dir.join("hyps.txt"), text.as_bytes())?;
        // A decoding sweep never optimizes perplexity (refused when the sweep is read).
        let objective = sweep.objective.metric.pick(bleu, chrf, f64::NAN);
        Ok(Outcome {
            status: Status::Complete,
            objective: Some(objective),
            best_step: None,
            steps: 0,
            seconds,
            message: format!("BLEU {bleu:.2}, chrF {chrf:.2} on {} lines", hyps.len()),
        })
    }
}
