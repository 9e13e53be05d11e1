//! The sweep file: what to vary (a [`Space`]), on what (a base config to train, or a trained
//! model to decode with), toward which objective, with what budget and pruner.
//!
//! ```toml
//! base = "transformer-small.toml"   # relative to this file; or `model = "runs/x"` to sweep decoding
//! method = "random"                  # or "grid"
//! trials = 16                        # random search only
//! seed = 1
//!
//! [objective]
//! metric = "bleu"                    # bleu | chrf | ppl (validation; direction follows the metric)
//!
//! [budget]                           # per trial; replaces the base config's train.max_*
//! max_steps = 3000
//!
//! [pruner]                           # none | median | asha
//! kind = "asha"
//! min_steps = 500
//! reduction_factor = 3
//!
//! [space]
//! model.dropout = [0.1, 0.2, 0.3]
//! train.learning_rate = { log_uniform = [1e-4, 3e-3] }
//! model.heads = { choice = [4, 8], when = { "model.arch" = "transformer" } }
//! ```

use crate::error::{Error, Result};
use crate::space::{self, Assignment, Space};
use rosetta::config::{Config, StopMetric};
use rosetta::search::BeamConfig;
use rosetta_text::corpus::CorpusSource;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A grid larger than this needs `--yes`: it is easy to write a space of thousands of trials.
pub const GRID_LIMIT: usize = 100;
/// No grid is built beyond this many combinations, `--yes` or not, and no random search draws
/// more trials.
pub const GRID_HARD_LIMIT: usize = 100_000;

/// How trials are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Every combination of the listed values.
    #[default]
    Grid,
    /// `trials` assignments drawn from the space with `seed`.
    Random,
}

/// The validation metric a sweep optimizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// BLEU of greedy decodes (training) or of the swept search (decoding).
    #[default]
    Bleu,
    /// chrF of the same decodes.
    Chrf,
    /// Perplexity (training sweeps only).
    Ppl,
}

impl Metric {
    /// The direction in which the metric improves.
    pub fn default_direction(self) -> Direction {
        match self {
            Metric::Bleu | Metric::Chrf => Direction::Maximize,
            Metric::Ppl => Direction::Minimize,
        }
    }

    /// This metric's value among a validation's scores.
    pub fn pick(self, bleu: f64, chrf: f64, ppl: f64) -> f64 {
        match self {
            Metric::Bleu => bleu,
            Metric::Chrf => chrf,
            Metric::Ppl => ppl,
        }
    }

    /// The metric's name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Bleu => "BLEU",
            Metric::Chrf => "chrF",
            Metric::Ppl => "perplexity",
        }
    }
}

impl From<Metric> for StopMetric {
    fn from(metric: Metric) -> StopMetric {
        match metric {
            Metric::Bleu => StopMetric::Bleu,
            Metric::Chrf => StopMetric::Chrf,
            Metric::Ppl => StopMetric::Ppl,
        }
    }
}

/// The error of one trial's configuration.
pub fn trial_error(trial: usize, assignment: &Assignment, message: String) -> Error {
    Error::Trial {
        trial,
        params: space::describe(assignment),
        message,
    }
}

/// Whether larger or smaller objective values are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Larger is better.
    Maximize,
    /// Smaller is better.
    Minimize,
}

impl Direction {
    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }
}

/// The `[objective]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectiveFile {
    /// The metric.
    pub metric: Metric,
    /// Defaults to the metric's own direction.
    pub direction: Option<Direction>,
}

/// The resolved objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Objective {
    /// The metric.
    pub metric: Metric,
    /// Its direction.
    pub direction: Direction,
}

/// The per-trial budget (`[budget]`); what is set replaces the base config's `train.max_*`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// Updates per trial.
    pub max_steps: Option<u64>,
    /// Epochs per trial.
    pub max_epochs: Option<u64>,
    /// Minutes of training per trial.
    pub max_minutes: Option<f64>,
}

/// Early stopping of unpromising trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrunerKind {
    /// Every trial runs to its budget.
    #[default]
    None,
    /// Median stopping rule (Golovin et al. 2017, "Google Vizier", §3.2.2): stop a trial whose best
    /// value so far is worse than the median of the other trials' at the same step.
    Median,
    /// Asynchronous successive halving (Li et al. 2020, "A System for Massively Parallel
    /// Hyperparameter Tuning", Algorithm 2): at rungs `min_steps · ηᵏ`, continue only the best
    /// `1/η` of the trials that reached the rung.
    Asha,
}

/// The `[pruner]` table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrunerSpec {
    /// Which rule.
    pub kind: PrunerKind,
    /// No trial is stopped before this many updates (ASHA: the first rung).
    pub min_steps: u64,
    /// ASHA's η: the fraction `1/η` of trials continues at each rung.
    pub reduction_factor: f64,
    /// Median rule: other trials that must have reached a step before it compares there.
    pub startup_trials: usize,
}

impl Default for PrunerSpec {
    fn default() -> Self {
        PrunerSpec {
            kind: PrunerKind::None,
            min_steps: 0,
            reduction_factor: 3.0,
            startup_trials: 3,
        }
    }
}

/// The sweep file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    base: Option<PathBuf>,
    model: Option<PathBuf>,
    valid_src: Option<PathBuf>,
    valid_tgt: Option<PathBuf>,
    #[serde(default)]
    method: Method,
    trials: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    objective: ObjectiveFile,
    #[serde(default)]
    budget: Budget,
    #[serde(default)]
    pruner: PrunerSpec,
    space: Option<toml::Table>,
}

/// What the trials vary.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Train a model per trial from a base config.
    Train {
        /// The base config file (not part of the fingerprint: its contents are).
        #[serde(skip)]
        path: PathBuf,
        /// Its contents.
        base: toml::Table,
    },
    /// Decode a validation set with a trained model, once per set of search settings.
    Decode {
        /// The model directory.
        model: PathBuf,
        /// Validation source and references.
        valid: (PathBuf, PathBuf),
    },
}

/// A parsed, checked sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sweep {
    /// What trials do.
    pub target: Target,
    /// Grid or random.
    pub method: Method,
    /// Random search: how many trials.
    pub trials: Option<usize>,
    /// Random search: the seed.
    pub seed: u64,
    /// What to optimize.
    pub objective: Objective,
    /// Per-trial budget.
    pub budget: Budget,
    /// Early stopping of trials.
    pub pruner: PrunerSpec,
    /// The search space.
    pub space: Space,
}

/// Keys the sweep sets itself.
const BUDGET_KEYS: [&str; 4] = [
    "train.max_steps",
    "train.max_epochs",
    "train.max_minutes",
    "train.stop_metric",
];

/// The value a key has in the default config (every default written out).
fn default_value(key: &str) -> Option<toml::Value> {
    let text = Config::default().to_toml().ok()?;
    space::get_key(&toml::from_str(&text).ok()?, key)
}

impl Sweep {
    /// Reads and checks a sweep file (not yet its trials: see [`Sweep::trials`]).
    pub fn load(path: &Path) -> Result<Sweep> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// Parses and checks the text of the sweep file `path` (its `base` is read relative to
    /// `path`'s directory), as [`Sweep::load`] does.
    pub fn from_toml(text: &str, path: &Path) -> Result<Sweep> {
        let fail = |message: String| Error::SweepFile {
            path: path.to_path_buf(),
            message,
        };
        let file: SweepFile = toml::from_str(text).map_err(|e| fail(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let target = match (&file.base, &file.model) {
            (Some(base), None) => {
                if file.valid_src.is_some() || file.valid_tgt.is_some() {
                    return Err(fail(
                        "valid_src/valid_tgt belong to decoding sweeps (model = ...); a training \
                         sweep validates on the base config's [data]"
                            .into(),
                    ));
                }
                let base_path = dir.join(base);
                let text =
                    std::fs::read_to_string(&base_path).map_err(|e| Error::io(&base_path, e))?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| Error::SweepFile {
                    path: base_path.clone(),
                    message: e.to_string(),
                })?;
                Target::Train {
                    path: base_path,
                    base: table,
                }
            }
            (None, Some(model)) => {
                let config_path = model.join("config.toml");
                let config = Config::load(&config_path).map_err(|e| {
                    fail(format!(
                        "model = {}: not a model directory ({e})",
                        model.display()
                    ))
                })?;
                let valid = match (&file.valid_src, &file.valid_tgt, config.data.valid()) {
                    (Some(s), Some(t), _) => (s.clone(), t.clone()),
                    (None, None, Ok(Some(CorpusSource::Parallel { src, tgt }))) => (src, tgt),
                    (None, None, _) => {
                        return Err(fail(format!(
                            "the model's config names no validation files: set valid_src and \
                             valid_tgt (the model was trained with {})",
                            config_path.display()
                        )));
                    }
                    _ => return Err(fail("give both valid_src and valid_tgt".into())),
                };
                if file.budget != Budget::default() || file.pruner.kind != PrunerKind::None {
                    return Err(fail(
                        "a decoding sweep trains nothing: remove [budget] and [pruner]".into(),
                    ));
                }
                if file.objective.metric == Metric::Ppl {
                    return Err(fail(
                        "search settings do not change perplexity: choose metric = \"bleu\" or \"chrf\""
                            .into(),
                    ));
                }
                Target::Decode {
                    model: model.clone(),
                    valid,
                }
            }
            (Some(_), Some(_)) => {
                return Err(fail(
                    "give either base (train a model per trial) or model (sweep decoding of a \
                     trained model), not both"
                        .into(),
                ));
            }
            (None, None) => {
                return Err(fail(
                    "name the base config to train (base = \"config.toml\") or the model whose \
                     decoding to sweep (model = \"runs/dir\")"
                        .into(),
                ));
            }
        };
        let params = space::parse_space(&file.space.clone().unwrap_or_default()).map_err(fail)?;
        let space = Space::new(params).map_err(fail)?;
        let decode = matches!(target, Target::Decode { .. });
        for p in space.params() {
            let search = p.key.starts_with("search.");
            if decode && !search {
                return Err(fail(format!(
                    "{} is not a search setting: a decoding sweep varies search.* keys (beam, \
                     length_penalty, max_len_a, ...)",
                    p.key
                )));
            }
            if !decode && search {
                return Err(fail(format!(
                    "{} is a search setting: sweep it on a trained model (model = \"runs/dir\") \
                     instead of retraining",
                    p.key
                )));
            }
            if BUDGET_KEYS.contains(&p.key.as_str()) {
                return Err(fail(format!(
                    "{} is set by the sweep itself ([budget] and [objective])",
                    p.key
                )));
            }
        }
        match (file.method, file.trials) {
            (Method::Random, None | Some(0)) => {
                return Err(fail("method = \"random\" needs trials = N (N ≥ 1)".into()));
            }
            // Every trial is drawn and checked up front: an absurd count would exhaust memory.
            (Method::Random, Some(n)) if n > GRID_HARD_LIMIT => {
                return Err(fail(format!(
                    "trials = {n} is more than a sweep runs ({GRID_HARD_LIMIT} at most)"
                )));
            }
            (Method::Grid, Some(_)) => {
                return Err(fail(
                    "trials sets the size of a random search; a grid runs every combination".into(),
                ));
            }
            _ => {}
        }
        let pruner = file.pruner;
        if pruner.kind == PrunerKind::Asha
            && (pruner.reduction_factor.is_nan() || pruner.reduction_factor < 2.0)
        {
            return Err(fail(format!(
                "pruner.reduction_factor = {} must be at least 2",
                pruner.reduction_factor
            )));
        }
        if pruner.kind == PrunerKind::Asha && pruner.min_steps == 0 {
            return Err(fail(
                "ASHA needs pruner.min_steps (the first rung, in updates; e.g. the validation interval)"
                    .into(),
            ));
        }
        if pruner.kind != PrunerKind::None && decode {
            return Err(fail("a decoding sweep has no curves to prune".into()));
        }
        let b = file.budget;
        if b.max_steps == Some(0)
            || b.max_epochs == Some(0)
            || b.max_minutes.is_some_and(|m| m <= 0.0)
        {
            return Err(fail("budget values must be positive".into()));
        }
        let swept: Vec<&str> = space.params().iter().map(|p| p.key.as_str()).collect();
        let known = |key: &str| -> bool {
            swept.contains(&key)
                || match &target {
                    Target::Train { base, .. } => {
                        space::get_key(base, key).is_some() || default_value(key).is_some()
                    }
                    Target::Decode { .. } => false,
                }
        };
        for p in space.params() {
            for (key, _) in &p.when {
                if !known(key) {
                    return Err(fail(format!(
                        "the condition of {} names {key}, which is neither swept nor a config key \
                         (it would never hold)",
                        p.key
                    )));
                }
            }
        }
        let metric = file.objective.metric;
        if let Some(direction) = file.objective.direction
            && direction != metric.default_direction()
        {
            return Err(fail(format!(
                "objective.direction = {direction:?} goes against {}: the trainer keeps the model \
                 with the best {0} in its own direction",
                metric.name()
            )));
        }
        Ok(Sweep {
            target,
            method: file.method,
            trials: file.trials,
            seed: file.seed,
            objective: Objective {
                metric: file.objective.metric,
                direction: file
                    .objective
                    .direction
                    .unwrap_or(file.objective.metric.default_direction()),
            },
            budget: b,
            pruner,
            space,
        })
    }

    /// The value a base-config key has (for conditions on keys the space does not vary); the
    /// defaults of an unset key come from the resolved default config.
    fn lookup(&self, key: &str) -> Option<toml::Value> {
        match &self.target {
            Target::Train { base, .. } => space::get_key(base, key).or_else(|| default_value(key)),
            Target::Decode { .. } => None,
        }
    }

    /// Every trial's assignment, in trial order.
    pub fn assignments(&self) -> std::result::Result<Vec<Assignment>, String> {
        let lookup = |k: &str| self.lookup(k);
        match self.method {
            Method::Grid => self.space.grid(&lookup),
            Method::Random => Ok(self
                .space
                .random(self.trials.unwrap_or(0), self.seed, &lookup)),
        }
    }

    /// The run config of a training trial: the base config, the budget, the objective's metric
    /// as `train.stop_metric`, then the trial's values.
    pub fn train_config(&self, assignment: &Assignment) -> std::result::Result<Config, String> {
        let Target::Train { base, .. } = &self.target else {
            return Err("a decoding sweep trains no model".into());
        };
        let mut table = base.clone();
        let stop = StopMetric::from(self.objective.metric);
        let stop = toml::Value::try_from(stop).map_err(|e| e.to_string())?;
        space::set_key(&mut table, "train.stop_metric", stop)?;
        let b = self.budget;
        if b != Budget::default() {
            // The budget replaces every limit of the base config, so that it alone decides.
            let steps = b.max_steps.unwrap_or(0) as i64;
            let epochs = b.max_epochs.unwrap_or(0) as i64;
            space::set_key(&mut table, "train.max_steps", toml::Value::Integer(steps))?;
            space::set_key(&mut table, "train.max_epochs", toml::Value::Integer(epochs))?;
            let minutes = toml::Value::Float(b.max_minutes.unwrap_or(0.0));
            space::set_key(&mut table, "train.max_minutes", minutes)?;
        }
        for (key, value) in assignment {
            space::set_key(&mut table, key, value.clone())?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().trim().to_owned())?;
        config.validate().map_err(|e| e.to_string())?;
        config.data.train().map_err(|e| e.to_string())?;
        if config.data.valid().map_err(|e| e.to_string())?.is_none() {
            return Err(
                "the base config has no validation data ([data] valid_src/valid_tgt): a sweep \
                 compares trials on it"
                    .into(),
            );
        }
        Ok(config)
    }

    /// The search settings of a decoding trial: the trial's `search.*` keys over `defaults`
    /// (the model's own, [`rosetta::translate::Translator::search_defaults`]).
    pub fn search_config(
        &self,
        assignment: &Assignment,
        defaults: &BeamConfig,
    ) -> std::result::Result<BeamConfig, String> {
        let mut table = toml::Table::new();
        let base = toml::Table::try_from(defaults)
            .map_err(|e| format!("search: cannot write the model's defaults: {e}"))?;
        table.insert("search".into(), toml::Value::Table(base));
        for (key, value) in assignment {
            space::set_key(&mut table, key, value.clone())?;
        }
        let search = table
            .remove("search")
            .unwrap_or(toml::Value::Table(toml::Table::new()));
        let config: BeamConfig = search
            .try_into()
            .map_err(|e: toml::de::Error| format!("search: {}", e.message()))?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// Builds every trial's configuration, and one at each end of every range, so that unknown
    /// keys, wrong types and out-of-range values are reported before anything trains.
    pub fn trials(&self, path: &Path, confirmed: bool) -> Result<Vec<Assignment>> {
        let fail = |message: String| Error::SweepFile {
            path: path.to_path_buf(),
            message,
        };
        if self.method == Method::Grid {
            // An upper bound (conditional axes counted as always active), before building any.
            let bound = self.space.params().iter().try_fold(1usize, |n, p| {
                let k = p.distribution.grid_values().map_or(1, |v| v.len());
                n.checked_mul(k)
            });
            if bound.is_none_or(|b| b > GRID_HARD_LIMIT) {
                return Err(fail(format!(
                    "the grid has more than {GRID_HARD_LIMIT} combinations: shorten its lists, or \
                     use method = \"random\" with a trial count"
                )));
            }
        }
        let assignments = self.assignments().map_err(fail)?;
        if assignments.is_empty() {
            return Err(fail("the sweep has no trials".into()));
        }
        if self.method == Method::Grid && assignments.len() > GRID_LIMIT && !confirmed {
            return Err(fail(format!(
                "the grid has {} trials (more than {GRID_LIMIT}): pass --yes to run them all, or \
                 use method = \"random\" with a trial count",
                assignments.len()
            )));
        }
        let check = |a: &Assignment| -> std::result::Result<(), String> {
            match self.target {
                Target::Train { .. } => self.train_config(a).map(|_| ()),
                Target::Decode { .. } => self.search_config(a, &BeamConfig::default()).map(|_| ()),
            }
        };
        for (i, a) in assignments.iter().enumerate() {
            check(a).map_err(|message| trial_error(i, a, message))?;
        }
        // Both ends of every range (listed values are all among the trials, or never run).
        for p in self.space.params() {
            if matches!(p.distribution, crate::space::Distribution::List(_)) {
                continue;
            }
            let Some(a) = assignments.iter().find(|a| a.contains_key(&p.key)) else {
                continue;
            };
            for value in p.distribution.extremes() {
                let mut a = a.clone();
                a.insert(p.key.clone(), value.clone());
                check(&a).map_err(|message| {
                    fail(format!(
                        "{} = {value} (an end of its range) is refused: {message}",
                        p.key
                    ))
                })?;
            }
        }
        Ok(assignments)
    }

    /// A canonical description of everything that decides the trials and their outcomes: a study
    /// directory refuses a sweep whose fingerprint differs from the one it began with.
    pub fn fingerprint(&self) -> String {
        let mut me = self.clone();
        // The trial count may grow (random search extends the same sequence of trials).
        me.trials = None;
        serde_json::to_string(&me).unwrap_or_default()
    }
}
