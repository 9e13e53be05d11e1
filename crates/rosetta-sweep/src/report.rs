//! The results of a study: trials ranked by their objective, as Markdown, CSV or JSON; the
//! compute that early stopping saved; the best trial's config.

use crate::error::{Error, Result};
use crate::spec::{Direction, Metric};
use crate::study::{Point, Status, Storage, TrialRow};
use crate::worker::trial_dir;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// A study's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The metric optimized.
    pub metric: Metric,
    /// Its direction.
    pub direction: Direction,
    /// Whether trials trained models (false: a decoding sweep).
    pub training: bool,
    /// The swept keys.
    pub keys: Vec<String>,
    /// Trials, best first; unfinished and failed trials last, by number.
    pub trials: Vec<TrialRow>,
    /// Validation curves by trial.
    pub curves: BTreeMap<usize, Vec<Point>>,
    /// What the trials cost.
    pub compute: Compute,
}

/// What the trials cost against running every one to its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Compute {
    /// Trials stopped by the pruner.
    pub pruned: usize,
    /// Updates trained.
    pub steps: u64,
    /// Updates had every trial run its whole budget (pruned trials counted at their budget).
    pub steps_full: u64,
    /// Training seconds.
    pub seconds: f64,
    /// Estimated seconds had every trial run its whole budget (a pruned trial at its own pace).
    pub seconds_full: f64,
}

impl Compute {
    /// The fraction of updates that early stopping saved.
    pub fn saved(&self) -> f64 {
        if self.steps_full == 0 {
            0.0
        } else {
            1.0 - self.steps as f64 / self.steps_full as f64
        }
    }
}

#[derive(serde::Deserialize)]
struct Fingerprint {
    target: serde_json::Value,
    objective: FingerprintObjective,
    space: FingerprintSpace,
}

#[derive(serde::Deserialize)]
struct FingerprintObjective {
    metric: Metric,
    direction: Direction,
}

#[derive(serde::Deserialize)]
struct FingerprintSpace {
    params: Vec<FingerprintParam>,
}

#[derive(serde::Deserialize)]
struct FingerprintParam {
    key: String,
}

impl Report {
    /// Reads a study.
    pub fn load(study: &mut dyn Storage) -> Result<Report> {
        let fingerprint = study
            .fingerprint()?
            .ok_or_else(|| Error::Mismatch(format!("{} holds no study yet", study.location())))?;
        let meta: Fingerprint = serde_json::from_str(&fingerprint).map_err(|e| {
            Error::Mismatch(format!(
                "{}: unreadable study description ({e})",
                study.location()
            ))
        })?;
        let mut trials = study.trials()?;
        let curves = study.points()?;
        let direction = meta.objective.direction;
        trials.sort_by(|a, b| {
            let rank = |t: &TrialRow| match (t.status, t.objective) {
                (Status::Complete | Status::Pruned, Some(v)) => Some(v),
                _ => None,
            };
            match (rank(a), rank(b)) {
                (Some(x), Some(y)) => {
                    let order = x.total_cmp(&y);
                    let order = if direction == Direction::Maximize {
                        order.reverse()
                    } else {
                        order
                    };
                    order.then(a.id.cmp(&b.id))
                }
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.id.cmp(&b.id),
            }
        });
        let mut compute = Compute::default();
        for t in trials.iter().filter(|t| t.status.is_finished()) {
            compute.steps += t.step;
            compute.seconds += t.seconds;
            let full = match t.status {
                Status::Pruned => t.planned_steps.unwrap_or(t.step).max(t.step),
                _ => t.step,
            };
            compute.steps_full += full;
            compute.seconds_full += if t.step > 0 {
                t.seconds * full as f64 / t.step as f64
            } else {
                t.seconds
            };
            compute.pruned += usize::from(t.status == Status::Pruned);
        }
        Ok(Report {
            metric: meta.objective.metric,
            direction,
            training: meta.target.get("train").is_some(),
            keys: meta.space.params.into_iter().map(|p| p.key).collect(),
            trials,
            curves,
            compute,
        })
    }

    /// The best finished trial.
    pub fn best(&self) -> Option<&TrialRow> {
        self.trials
            .first()
            .filter(|t| t.objective.is_some() && t.status.is_finished())
    }

    fn header(&self) -> Vec<String> {
        let mut h: Vec<String> = ["rank", "trial", "status", self.metric.name()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if self.training {
            h.extend(["best step", "steps", "minutes"].map(String::from));
        } else {
            h.push("seconds".into());
        }
        h.extend(self.keys.iter().cloned());
        h
    }

    fn cells(&self) -> Vec<Vec<String>> {
        self.trials
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let ranked = t.objective.is_some() && t.status.is_finished();
                let mut row = vec![
                    if ranked {
                        (i + 1).to_string()
                    } else {
                        "-".into()
                    },
                    t.id.to_string(),
                    t.status.to_string(),
                    t.objective.map_or("-".into(), |v| format!("{v:.2}")),
                ];
                if self.training {
                    row.push(t.best_step.map_or("-".into(), |s| s.to_string()));
                    row.push(t.step.to_string());
                    row.push(format!("{:.1}", t.seconds / 60.0));
                } else {
                    row.push(format!("{:.1}", t.seconds));
                }
                for key in &self.keys {
                    row.push(t.params.get(key).map_or("-".into(), show_value));
                }
                row
            })
            .collect()
    }

    /// A Markdown table, best trial first, with the compute summary below.
    pub fn markdown(&self) -> String {
        let header = self.header();
        let mut out = format!("| {} |\n", header.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            header
                .iter()
                .map(|h| if h == "status" { ":---|" } else { "---:|" })
                .collect::<String>()
        );
        for row in self.cells() {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        if self.training {
            let c = &self.compute;
            let _ = writeln!(
                out,
                "\n{} of {} finished trials stopped early; {} of {} updates trained ({:.0}% saved), \
                 {:.1} of an estimated {:.1} minutes.",
                c.pruned,
                self.trials
                    .iter()
                    .filter(|t| t.status.is_finished())
                    .count(),
                c.steps,
                c.steps_full,
                100.0 * c.saved(),
                c.seconds / 60.0,
                c.seconds_full / 60.0
            );
        }
        out
    }

    /// CSV (RFC 4180 quoting), best trial first.
    pub fn csv(&self) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_owned()
            }
        };
        let mut out = String::new();
        for row in std::iter::once(self.header()).chain(self.cells()) {
            let line: Vec<String> = row.iter().map(|c| quote(c)).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
        out
    }

    /// The whole report as JSON (trials with their parameters and curves).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The best trial's full config (training sweeps: its resolved `config.toml`; decoding
    /// sweeps: its search settings as a `[search]` table).
    pub fn best_config(&self, dir: &Path) -> Result<Option<String>> {
        let Some(best) = self.best() else {
            return Ok(None);
        };
        let header = format!(
            "# Best trial {} of the sweep in {}: {} {:.2}\n",
            best.id,
            dir.display(),
            self.metric.name(),
            best.objective.unwrap_or(f64::NAN)
        );
        if self.training {
            let path = trial_dir(dir, best.id).join("config.toml");
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            Ok(Some(header + &text))
        } else {
            let mut table = toml::Table::new();
            for (k, v) in &best.params {
                crate::space::set_key(&mut table, k, v.clone()).map_err(Error::Mismatch)?;
            }
            let text = toml::to_string_pretty(&table).unwrap_or_default();
            Ok(Some(header + &text))
        }
    }
}

/// A value as it reads in a table: strings without quotes.
pub fn show_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
