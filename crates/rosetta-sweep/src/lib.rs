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
pub mod pg_study;
pub mod pruner;
pub mod report;
pub mod space;
pub mod spec;
pub mod study;
pub mod worker;

pub use error::{Error, Result};

use std::path::Path;

/// Where a study is kept.
#[derive(Debug, Clone, Default)]
pub struct StorageChoice {
    /// `postgres://…` (or `postgresql://…`): a PostgreSQL server; `None`: SQLite in the sweep
    /// directory.
    pub url: Option<String>,
    /// The study's name on a server (default: the sweep directory's name).
    pub study: Option<String>,
}

/// Opens the study of the sweep directory `dir`. With `create` false, a missing SQLite study is
/// an error (a report of a directory that holds none).
pub fn open_storage(
    dir: &Path,
    choice: &StorageChoice,
    create: bool,
) -> Result<Box<dyn study::Storage>> {
    match &choice.url {
        None if create => Ok(Box::new(study::SqliteStudy::open(dir)?)),
        None => Ok(Box::new(study::SqliteStudy::open_existing(dir)?)),
        Some(url) if pg_study::is_postgres_url(url) => {
            let name = match &choice.study {
                Some(name) => name.clone(),
                None => std::path::absolute(dir)
                    .ok()
                    .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_default(),
            };
            Ok(Box::new(pg_study::PgStudy::connect(url, &name)?))
        }
        Some(other) => Err(Error::Mismatch(format!(
            "--storage {other}: give a postgres:// URL (or leave it out for SQLite in the sweep directory)"
        ))),
    }
}

/// Reads a sweep file, checks every trial, and opens (or creates, or continues) its study.
/// `confirmed` allows a grid larger than [`spec::GRID_LIMIT`].
pub fn open(
    sweep_file: &Path,
    dir: &Path,
    storage: &StorageChoice,
    confirmed: bool,
) -> Result<(spec::Sweep, Box<dyn study::Storage>)> {
    let sweep = spec::Sweep::load(sweep_file)?;
    let trials = sweep.trials(sweep_file, confirmed)?;
    let mut study = open_storage(dir, storage, true)?;
    study.begin(&sweep.fingerprint(), &trials)?;
    Ok((sweep, study))
}
