//! Generated tasks with real structure, for the quickstart and for tests. They need no files and
//! no downloads.

pub mod dates;
