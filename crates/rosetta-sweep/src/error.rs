//! The sweep's errors: each names the file, key or trial it is about.

use std::path::PathBuf;

/// Why a sweep could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sweep file is wrong (unknown key, bad range, empty space, …).
    #[error("{path}: {message}")]
    SweepFile {
        /// The sweep file.
        path: PathBuf,
        /// What is wrong, in plain English.
        message: String,
    },
    /// A trial's configuration is refused by Rosetta (unknown key, wrong type, out of range).
    #[error("trial {trial} ({params}): {message}")]
    Trial {
        /// Trial number.
        trial: usize,
        /// Its parameters, as `key = value` pairs.
        params: String,
        /// What is wrong.
        message: String,
    },
    /// The study directory belongs to another sweep.
    #[error("{0}")]
    Mismatch(String),
    /// The study database failed.
    #[error("study database {path}: {source}")]
    Database {
        /// The database.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL study failed.
    #[error("study {location}: {source}")]
    Postgres {
        /// The server and study.
        location: String,
        /// The client's error.
        #[source]
        source: postgres::Error,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Training or decoding failed in Rosetta.
    #[error(transparent)]
    Rosetta(#[from] rosetta::Error),
    /// Reading a corpus failed.
    #[error(transparent)]
    Text(#[from] rosetta_text::error::Error),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The sweep's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
