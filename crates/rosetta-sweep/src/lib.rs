//! Hyperparameter sweeps over any key of a Rosetta config: grid and seeded random search, median
//! stopping and asynchronous successive halving (ASHA), and a study database that survives
//! interruption and is shared by any number of worker processes.
//!
//! Follow one sweep: [`spec`] reads the sweep file and checks every trial's config up front;
//! [`space`] enumerates or samples the trials; [`study`] keeps them in SQLite; [`worker`] claims
//! trials and trains (or decodes) each one, recording its validation curve, which [`pruner`]
//! reads to stop the unpromising ones; [`report`] ranks the results.
#![deny(missing_docs)]

pub mod error;
pub mod pruner;
pub mod report;
pub mod space;
pub mod spec;
pub mod study;
pub mod worker;

pub use error::{Error, Result};

use std::path::Path;

/// Reads a sweep file, checks every trial, and opens (or creates, or continues) its study in
/// `dir`. `confirmed` allows a grid larger than [`spec::GRID_LIMIT`].
pub fn open(
    sweep_file: &Path,
    dir: &Path,
    confirmed: bool,
) -> Result<(spec::Sweep, study::SqliteStudy)> {
    let sweep = spec::Sweep::load(sweep_file)?;
    let trials = sweep.trials(sweep_file, confirmed)?;
    let mut study = study::SqliteStudy::open(dir)?;
    study::Storage::begin(&mut study, &sweep.fingerprint(), &trials)?;
    Ok((sweep, study))
}
