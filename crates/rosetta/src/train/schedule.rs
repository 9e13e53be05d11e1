//! Learning-rate schedules: constant, plateau (reduce on a validation metric), and noam (warmup
//! then inverse square root). Their state is plain data saved with every checkpoint.

use serde::{Deserialize, Serialize};

/// Which schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The same rate throughout.
    Constant,
    /// Multiply by `factor` when the validation metric has not improved for `patience` validations
    /// (PyTorch's ReduceLROnPlateau).
    #[default]
    Plateau,
    /// Linear warmup to the base rate over `warmup_steps`, then decay ∝ 1/√step: the schedule of
    /// Vaswani et al. 2017, §5.3, scaled so that its peak equals the configured learning rate.
    Noam,
}

/// Schedule settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSettings {
    /// Which schedule.
    pub kind: ScheduleKind,
    /// Base (peak) learning rate.
    pub learning_rate: f64,
    /// Plateau: multiply by this factor.
    pub factor: f64,
    /// Plateau: validations without improvement before reducing.
    pub patience: usize,
    /// Plateau: never go below this rate.
    pub min_lr: f64,
    /// Noam: warmup steps.
    pub warmup_steps: u64,
}

/// The mutable part of a schedule, saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// Current rate for constant/plateau.
    pub lr: f64,
    /// Validations since the plateau metric last improved.
    pub bad_validations: usize,
    /// Best plateau metric so far (higher is better).
    pub best: Option<f64>,
}

/// A schedule with its state.
#[derive(Debug, Clone)]
pub struct Schedule {
    settings: ScheduleSettings,
    state: ScheduleState,
}

impl Schedule {
    /// A fresh schedule.
    pub fn new(settings: ScheduleSettings) -> Self {
        let lr = settings.learning_rate;
        Schedule {
            settings,
            state: ScheduleState {
                lr,
                bad_validations: 0,
                best: None,
            },
        }
    }

    /// A schedule restored from a checkpoint.
    pub fn restore(settings: ScheduleSettings, state: ScheduleState) -> Self {
        Schedule { settings, state }
    }

    /// The state to save.
    pub fn state(&self) -> &ScheduleState {
        &self.state
    }

    /// The rate for 1-based optimizer step `step`.
    pub fn lr(&self, step: u64) -> f64 {
        match self.settings.kind {
            ScheduleKind::Constant | ScheduleKind::Plateau => self.state.lr,
            ScheduleKind::Noam => {
                let s = step.max(1) as f64;
                let w = self.settings.warmup_steps.max(1) as f64;
                self.settings.learning_rate * (s / w).min((w / s).sqrt())
            }
        }
    }

    /// Reports a validation result (higher is better). Returns true when the rate was reduced.
    pub fn on_validation(&mut self, metric: f64) -> bool {
        if self.settings.kind != ScheduleKind::Plateau {
            return false;
        }
        match self.state.best {
            Some(best) if metric <= best => self.state.bad_validations += 1,
            _ => {
                self.state.best = Some(metric);
                self.state.bad_validations = 0;
            }
        }
        if self.state.bad_validations > self.settings.patience {
            let reduced = (self.state.lr * self.settings.factor).max(self.settings.min_lr);
            self.state.bad_validations = 0;
            if reduced < self.state.lr {
                self.state.lr = reduced;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: ScheduleKind) -> ScheduleSettings {
        ScheduleSettings {
            kind,
            learning_rate: 1e-3,
            factor: 0.5,
            patience: 1,
            min_lr: 2e-4,
            warmup_steps: 100,
        }
    }

    #[test]
    fn noam_warms_up_then_decays() {
        let s = Schedule::new(settings(ScheduleKind::Noam));
        assert!((s.lr(50) - 5e-4).abs() < 1e-12);
        assert!((s.lr(100) - 1e-3).abs() < 1e-12);
        assert!((s.lr(400) - 5e-4).abs() < 1e-12);
    }

    #[test]
    fn plateau_reduces_after_patience_and_respects_min() {
        let mut s = Schedule::new(settings(ScheduleKind::Plateau));
        assert!(!s.on_validation(10.0));
        assert!(!s.on_validation(9.0)); // 1 bad, patience 1
        assert!(s.on_validation(9.5)); // 2 bad -> reduce
        assert!((s.lr(1) - 5e-4).abs() < 1e-12);
        s.on_validation(1.0);
        s.on_validation(1.0);
        s.on_validation(1.0);
        s.on_validation(1.0);
        s.on_validation(1.0);
        assert!((s.lr(1) - 2e-4).abs() < 1e-12);
    }
}
