//! Early stopping of unpromising trials from the validation curves of all trials.
//!
//! Both rules compare a trial's *best value so far* (what the trial would deliver if stopped now:
//! the trainer keeps its best weights) with other trials' best values at the same point of
//! training, measured in updates.

use crate::spec::{Direction, PrunerKind, PrunerSpec};
use crate::study::Point;
use std::collections::BTreeMap;

/// The best point of a curve.
pub fn best_point(points: &[Point], direction: Direction) -> Option<Point> {
    points.iter().copied().reduce(|a, b| {
        if direction.better(b.objective, a.objective) {
            b
        } else {
            a
        }
    })
}

/// The best objective value among `points` at or before `step`.
fn best_until(points: &[Point], step: u64, direction: Direction) -> Option<f64> {
    points
        .iter()
        .filter(|p| p.step <= step)
        .map(|p| p.objective)
        .reduce(|a, b| if direction.better(b, a) { b } else { a })
}

/// A trial's value at a rung: its best value up to its first validation at or after the rung.
fn at_rung(points: &[Point], rung: u64, direction: Direction) -> Option<f64> {
    let reached = points.iter().map(|p| p.step).filter(|&s| s >= rung).min()?;
    best_until(points, reached, direction)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Whether to stop `trial` after its latest validation, and why. `curves` holds every trial's
/// points (this one's included); `max_steps` is the trial's budget in updates, when known: a
/// trial at or beyond it has finished, not been stopped (and no ASHA rung lies there).
pub fn should_stop(
    spec: &PrunerSpec,
    direction: Direction,
    trial: usize,
    curves: &BTreeMap<usize, Vec<Point>>,
    max_steps: Option<u64>,
) -> Option<String> {
    let mine = curves.get(&trial)?;
    let last = mine.iter().map(|p| p.step).max()?;
    if last < spec.min_steps || max_steps.is_some_and(|m| last >= m) {
        return None;
    }
    match spec.kind {
        PrunerKind::None => None,
        PrunerKind::Median => {
            let value = best_until(mine, last, direction)?;
            let others: Vec<f64> = curves
                .iter()
                .filter(|(id, points)| **id != trial && points.iter().any(|p| p.step >= last))
                .filter_map(|(_, points)| best_until(points, last, direction))
                .collect();
            if others.len() < spec.startup_trials.max(1) {
                return None;
            }
            let n = others.len();
            let m = median(others);
            direction.better(m, value).then(|| {
                format!(
                    "median stopping at step {last}: best {value:.2} is worse than the median \
                     {m:.2} of {n} other trials there"
                )
            })
        }
        PrunerKind::Asha => {
            // The rung this validation reached: the highest one in (previous validation, last].
            let previous = mine
                .iter()
                .map(|p| p.step)
                .filter(|&s| s < last)
                .max()
                .unwrap_or(0);
            let eta = spec.reduction_factor;
            let mut rung = spec.min_steps as f64;
            let mut reached = None;
            let mut k = 0;
            while rung.round() as u64 <= last {
                let r = rung.round() as u64;
                if r > previous && max_steps.is_none_or(|m| r < m) {
                    reached = Some((k, r));
                }
                rung *= eta;
                k += 1;
            }
            let (k, rung) = reached?;
            let value = at_rung(mine, rung, direction)?;
            let values: Vec<f64> = curves
                .values()
                .filter_map(|points| at_rung(points, rung, direction))
                .collect();
            let n = values.len();
            // Asynchronous promotion: the top ⌊n/η⌋ of the trials at the rung so far (at least one).
            let keep = ((n as f64 / eta).floor() as usize).max(1);
            let better = values
                .iter()
                .filter(|&&v| direction.better(v, value))
                .count();
            (better >= keep).then(|| {
                format!(
                    "ASHA rung {k} (step {rung}): {value:.2} is not in the top {keep} of {n} \
                     trials there"
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(values: &[(u64, f64)]) -> Vec<Point> {
        values
            .iter()
            .map(|&(step, objective)| Point {
                step,
                objective,
                bleu: objective,
                chrf: 0.0,
                ppl: 0.0,
                elapsed: 0.0,
            })
            .collect()
    }

    #[test]
    fn median_rule_waits_for_startup_trials_and_compares_best_so_far() {
        let spec = PrunerSpec {
            kind: PrunerKind::Median,
            min_steps: 100,
            startup_trials: 2,
            ..PrunerSpec::default()
        };
        let mut curves = BTreeMap::new();
        curves.insert(0, curve(&[(100, 10.0), (200, 20.0)]));
        curves.insert(5, curve(&[(100, 5.0)]));
        // One other trial at step 100: fewer than startup_trials.
        assert!(should_stop(&spec, Direction::Maximize, 5, &curves, None).is_none());
        curves.insert(1, curve(&[(100, 12.0), (200, 14.0)]));
        let why = should_stop(&spec, Direction::Maximize, 5, &curves, None).unwrap();
        assert!(why.contains("median"), "{why}");
        // Its best so far, not its latest value, is what counts.
        curves.insert(5, curve(&[(100, 30.0), (200, 1.0)]));
        assert!(should_stop(&spec, Direction::Maximize, 5, &curves, None).is_none());
        // Before min_steps nothing is stopped.
        curves.insert(6, curve(&[(50, 0.0)]));
        assert!(should_stop(&spec, Direction::Maximize, 6, &curves, None).is_none());
    }
}
