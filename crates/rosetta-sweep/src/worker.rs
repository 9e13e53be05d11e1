//! A worker: claims trials from the study one at a time and runs them until none is left.
//!
//! A training trial is an ordinary run of Rosetta's trainer into `DIR/trials/NNNN` (so
//! `translate`, `evaluate` and TensorBoard work on it), always with resume semantics: a trial
//! whose worker died continues from its last checkpoint. Each validation is recorded in the study
//! and shown to the pruner, which may end the trial there. A decoding trial translates the
//! validation set with one set of search settings and scores it.

use crate::error::{Error, Result};
use crate::pruner;
use crate::spec::{Metric, Sweep, Target};
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

/// This process's worker name: `host/pid/start`, unique even when a pid is reused.
pub fn worker_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}/{}/{nanos}", hostname(), std::process::id())
}

/// Whether a worker is alive: known for workers on this machine (its process exists), `None`
/// for workers elsewhere.
pub fn is_alive(worker: &str) -> Option<bool> {
    let mut parts = worker.split('/');
    let (host, pid) = (parts.next()?, parts.next()?);
    if host != hostname() {
        return None;
    }
    let Ok(pid) = pid.parse::<libc::pid_t>() else {
        return Some(false);
    };
    if pid == std::process::id() as libc::pid_t {
        // This process: the worker is dead only if it is an earlier incarnation (another start).
        return Some(worker == current_worker());
    }
    // SAFETY: kill with signal 0 sends nothing; it only asks whether the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    Some(result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
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
                    if decoder.is_none() {
                        decoder = Some(Decoder::load(model, valid, &device)?);
                    }
                    match &decoder {
                        Some(d) => d.run(self.sweep, &claim, &self.options.dir)?,
                        None => unreachable!("loaded just above"),
                    }
                }
            };
            self.storage.finish(claim.id, &outcome)?;
            self.observer.trial_finished(claim.id, &outcome);
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
    last_beat: Option<Instant>,
    /// Training seconds at the last progress report.
    elapsed: f64,
    pruned: Option<String>,
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
        let train = match &self.sweep.target {
            Target::Train { .. } => self.sweep.budget,
            Target::Decode { .. } => Default::default(),
        };
        self.planned = train
            .max_steps
            .or(train.max_epochs.map(|e| e * info.batches_per_epoch as u64));
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
        self.inner.step(report);
    }

    fn validated(&mut self, report: &ValidReport) {
        let objective = match self.sweep.objective.metric {
            Metric::Bleu => report.bleu,
            Metric::Chrf => report.chrf,
            Metric::Ppl => report.ppl,
        };
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

    fn stop_requested(&mut self, _report: &ValidReport) -> Option<String> {
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
            self.sweep.budget.max_steps,
        );
        if reason.is_some() {
            self.pruned = reason.clone();
        }
        reason
    }

    fn warn(&mut self, message: &str) {
        self.inner.warn(message);
    }
}

fn train_trial<B: rosetta::burn::tensor::backend::AutodiffBackend>(
    sweep: &Sweep,
    claim: &Claim,
    storage: &mut dyn Storage,
    options: &WorkerOptions,
    progress: &mut dyn Observer,
    device: &B::Device,
) -> Result<Outcome> {
    let config = sweep
        .train_config(&claim.params)
        .map_err(|message| Error::Trial {
            trial: claim.id,
            params: crate::space::describe(&claim.params),
            message,
        })?;
    let dir = trial_dir(&options.dir, claim.id);
    let failed = |message: String| Outcome {
        status: Status::Failed,
        objective: None,
        best_step: None,
        steps: 0,
        seconds: 0.0,
        message,
    };
    // A trial whose worker died right after the pruner stopped it is not trained further.
    if claim.resumed {
        let curves = storage.points()?;
        if let Some(reason) = pruner::should_stop(
            &sweep.pruner,
            sweep.objective.direction,
            claim.id,
            &curves,
            sweep.budget.max_steps,
        ) {
            let points = curves.get(&claim.id).cloned().unwrap_or_default();
            let best = points.iter().copied().reduce(|a, b| {
                if sweep.objective.direction.better(b.objective, a.objective) {
                    b
                } else {
                    a
                }
            });
            return Ok(Outcome {
                status: Status::Pruned,
                objective: best.map(|p| p.objective),
                best_step: best.map(|p| p.step),
                steps: points.iter().map(|p| p.step).max().unwrap_or(0),
                seconds: 0.0,
                message: reason,
            });
        }
    }
    let data = TrainData {
        train: config.data.train()?,
        valid: config.data.valid()?,
    };
    let worker = current_worker();
    let mut observer = TrialObserver {
        sweep,
        trial: claim.id,
        worker,
        storage,
        inner: progress,
        planned: None,
        last_beat: None,
        elapsed: 0.0,
        pruned: None,
        error: None,
        lost: false,
    };
    let result = train::<B>(
        &config,
        &data,
        &TrainOptions {
            model_dir: dir.clone(),
            // Always: a trial interrupted before its first checkpoint starts over.
            resume: claim.resumed || dir.exists(),
        },
        device,
        &mut observer,
    );
    if let Some(e) = observer.error.take() {
        return Err(e);
    }
    if observer.lost {
        return Err(Error::Mismatch(format!(
            "trial {} was taken over by another worker (this one was silent too long; raise --stale-after)",
            claim.id
        )));
    }
    match result {
        Ok(summary) => Ok(Outcome {
            status: if observer.pruned.is_some() {
                Status::Pruned
            } else {
                Status::Complete
            },
            objective: summary.best_metric,
            best_step: Some(summary.best_step),
            steps: summary.steps,
            seconds: summary.elapsed,
            message: summary.stopped,
        }),
        // The trial's own fault (its settings diverge or are refused): recorded, the sweep goes on.
        Err(e @ (rosetta::Error::Diverged { .. } | rosetta::Error::Config(_))) => {
            Ok(failed(e.to_string()))
        }
        // Anything else (disk, files) would fail the next trial too: stop, leaving the trial to
        // be resumed by the next run.
        Err(e) => Err(e.into()),
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
            .search_config(&claim.params)
            .map_err(|message| Error::Trial {
                trial: claim.id,
                params: crate::space::describe(&claim.params),
                message,
            })?;
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
        let objective = match sweep.objective.metric {
            Metric::Chrf => chrf,
            _ => bleu,
        };
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
