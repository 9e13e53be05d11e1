//! The study: every trial's parameters, status, validation curve and result, kept in a database
//! that several worker processes share. Each change is one transaction, so a worker killed at any
//! moment leaves the study consistent; the worker that next finds the trial orphaned resumes it.
//!
//! [`Storage`] is what a worker needs from a database; [`SqliteStudy`] keeps it in one SQLite file
//! in the sweep directory (WAL mode: readers never block the writer).

use crate::error::{Error, Result};
use crate::space::Assignment;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The database file in a sweep directory.
pub const DATABASE: &str = "study.sqlite";

/// Where a trial stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not started.
    Pending,
    /// Claimed by a worker (or orphaned by one that died).
    Running,
    /// Trained to its budget (or stopped by its own early stopping).
    Complete,
    /// Stopped early by the pruner.
    Pruned,
    /// Training failed (the message says why); not retried.
    Failed,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Status {
    /// The name stored in the database and shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Complete => "complete",
            Status::Pruned => "pruned",
            Status::Failed => "failed",
        }
    }

    /// Reads a stored status; text the study never writes is an error, not a guess.
    pub(crate) fn parse(s: &str) -> Result<Status, String> {
        match s {
            "pending" => Ok(Status::Pending),
            "running" => Ok(Status::Running),
            "complete" => Ok(Status::Complete),
            "pruned" => Ok(Status::Pruned),
            "failed" => Ok(Status::Failed),
            other => Err(format!("unknown trial status \"{other}\"")),
        }
    }

    /// Whether the trial is over.
    pub fn is_finished(self) -> bool {
        matches!(self, Status::Complete | Status::Pruned | Status::Failed)
    }
}

/// A trial as the study records it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrialRow {
    /// Trial number (0-based, in the sweep's order).
    pub id: usize,
    /// Its values.
    pub params: Assignment,
    /// Where it stands.
    pub status: Status,
    /// The worker that holds (or last held) it.
    pub worker: Option<String>,
    /// How many times a worker started it (more than 1: it was interrupted and resumed).
    pub attempts: u32,
    /// Unix time of its first start.
    pub started: Option<f64>,
    /// Unix time it finished.
    pub finished: Option<f64>,
    /// Unix time its worker last reported.
    pub heartbeat: Option<f64>,
    /// Updates made so far.
    pub step: u64,
    /// Updates its budget allows, when known.
    pub planned_steps: Option<u64>,
    /// Best objective value.
    pub objective: Option<f64>,
    /// Update of the best objective value.
    pub best_step: Option<u64>,
    /// Training (or decoding) seconds.
    pub seconds: f64,
    /// Why it stopped, or why it failed.
    pub message: Option<String>,
}

/// One validation of a trial.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Point {
    /// Updates made.
    pub step: u64,
    /// The objective metric.
    pub objective: f64,
    /// Validation BLEU.
    pub bleu: f64,
    /// Validation chrF.
    pub chrf: f64,
    /// Validation perplexity.
    pub ppl: f64,
    /// Training seconds so far.
    pub elapsed: f64,
}

/// A trial a worker has claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Trial number.
    pub id: usize,
    /// Its values.
    pub params: Assignment,
    /// Whether an earlier worker started it (so it continues from its checkpoint).
    pub resumed: bool,
}

/// How a trial ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Complete, pruned or failed.
    pub status: Status,
    /// Best objective value.
    pub objective: Option<f64>,
    /// Its update.
    pub best_step: Option<u64>,
    /// Updates made.
    pub steps: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Why it stopped.
    pub message: String,
}

/// What a worker needs from the study's database.
pub trait Storage {
    /// Where the study is, for messages (a file, or a database and study name).
    fn location(&self) -> String;
    /// The fingerprint of the sweep the study began with (`None`: not begun).
    fn fingerprint(&mut self) -> Result<Option<String>>;
    /// Creates the study with its trials, or checks that an existing study is the same sweep
    /// (adding trials when a random search asks for more).
    fn begin(&mut self, fingerprint: &str, trials: &[Assignment]) -> Result<()>;
    /// Takes the next trial to run: an orphaned one (its worker is dead by `is_alive`, or silent
    /// for `stale_after` seconds) first, then the first pending one. `None` when none is left.
    fn claim(
        &mut self,
        worker: &str,
        is_alive: &dyn Fn(&str) -> Option<bool>,
        stale_after: f64,
    ) -> Result<Option<Claim>>;
    /// Records progress; false when the trial is no longer this worker's.
    fn heartbeat(
        &mut self,
        trial: usize,
        worker: &str,
        step: u64,
        planned_steps: Option<u64>,
    ) -> Result<bool>;
    /// Records a validation (replacing one at the same step, which a resumed trial repeats).
    fn record_point(&mut self, trial: usize, point: &Point) -> Result<()>;
    /// Marks a trial finished, if `worker` still holds it; false when another worker took it over.
    fn finish(&mut self, trial: usize, worker: &str, outcome: &Outcome) -> Result<bool>;
    /// Every trial.
    fn trials(&mut self) -> Result<Vec<TrialRow>>;
    /// Every trial's validation curve.
    fn points(&mut self) -> Result<BTreeMap<usize, Vec<Point>>>;
}

/// Unix time in seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The study format; a database of another version is refused rather than misread.
pub(crate) const FORMAT: &str = "1";

/// Checks what a database holds against the sweep being begun (`stored`: its fingerprint and
/// format, `existing`: its trials' parameters as JSON, in order) and returns the trials to add.
pub(crate) fn plan_begin(
    location: &str,
    stored: Option<(&str, &str)>,
    fingerprint: &str,
    existing: &[String],
    trials: &[Assignment],
) -> Result<Vec<(usize, String)>> {
    if let Some((stored, format)) = stored {
        if format != FORMAT {
            return Err(Error::Mismatch(format!(
                "{location} is a study of format {format}; this rosetta reads format {FORMAT}"
            )));
        }
        if stored != fingerprint {
            return Err(Error::Mismatch(format!(
                "{location} holds a study of another sweep (its sweep file, base config or space \
                 changed since it began); use a new --dir (or study), or restore the sweep file"
            )));
        }
    }
    if existing.len() > trials.len() {
        return Err(Error::Mismatch(format!(
            "{location} already holds {} trials; this sweep has {}: a study can grow, not shrink",
            existing.len(),
            trials.len()
        )));
    }
    let mut add = Vec::new();
    for (i, assignment) in trials.iter().enumerate() {
        let json = serde_json::to_string(assignment).unwrap_or_default();
        match existing.get(i) {
            Some(stored) if *stored != json => {
                return Err(Error::Mismatch(format!(
                    "{location}: trial {i} was {stored}, the sweep now gives {json}"
                )));
            }
            Some(_) => {}
            None => add.push((i, json)),
        }
    }
    Ok(add)
}

/// A trial whose workers died this many times is marked failed instead of handed out again: a
/// trial that crashes its worker would otherwise stop every worker that takes it.
pub const MAX_ATTEMPTS: u32 = 3;

/// A running trial as [`pick_trial`] sees it.
pub(crate) struct Running {
    pub id: i64,
    pub worker: Option<String>,
    pub heartbeat: Option<f64>,
    pub attempts: u32,
}

/// What a claim does: the trial to take, and orphans to mark failed (out of attempts).
pub(crate) struct Pick {
    pub take: Option<i64>,
    pub give_up: Vec<i64>,
}

/// The trial a worker should take: the first orphaned running trial (its worker dead by
/// `is_alive`, or, for a worker elsewhere, silent for `stale_after` seconds), else the first
/// pending one. Orphans that already had [`MAX_ATTEMPTS`] workers are given up.
pub(crate) fn pick_trial(
    running: &[Running],
    first_pending: Option<i64>,
    is_alive: &dyn Fn(&str) -> Option<bool>,
    stale_after: f64,
    time: f64,
) -> Pick {
    let mut pick = Pick {
        take: None,
        give_up: Vec::new(),
    };
    for r in running {
        let orphaned = match is_alive(r.worker.as_deref().unwrap_or("")) {
            Some(alive) => !alive,
            // A worker on another machine: judged by its heartbeat.
            None => r.heartbeat.is_none_or(|b| time - b > stale_after),
        };
        if !orphaned {
            continue;
        }
        if r.attempts >= MAX_ATTEMPTS {
            pick.give_up.push(r.id);
        } else if pick.take.is_none() {
            pick.take = Some(r.id);
        }
    }
    pick.take = pick.take.or(first_pending);
    pick
}

/// The message of a trial given up after [`MAX_ATTEMPTS`].
pub(crate) fn given_up_message() -> String {
    format!("its worker died or failed {MAX_ATTEMPTS} times (see the worker logs); not retried")
}

/// Wraps SQLite errors with the database file they concern.
fn db_error(path: &Path) -> impl Fn(rusqlite::Error) -> Error + Copy + '_ {
    move |source| Error::Database {
        path: path.to_path_buf(),
        source,
    }
}

/// A study in one SQLite file.
pub struct SqliteStudy {
    path: PathBuf,
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    params TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL,
    heartbeat REAL,
    step INTEGER NOT NULL DEFAULT 0,
    planned_steps INTEGER,
    objective REAL,
    best_step INTEGER,
    seconds REAL NOT NULL DEFAULT 0,
    message TEXT
);
CREATE TABLE IF NOT EXISTS points (
    trial INTEGER NOT NULL,
    step INTEGER NOT NULL,
    objective REAL NOT NULL,
    bleu REAL NOT NULL,
    chrf REAL NOT NULL,
    ppl REAL NOT NULL,
    elapsed REAL NOT NULL,
    PRIMARY KEY (trial, step)
);
";

impl SqliteStudy {
    /// Opens (creating when absent) the study database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(DATABASE);
        let db = db_error(&path);
        let conn = Connection::open(&path).map_err(db)?;
        // Workers wait for each other's short transactions instead of failing.
        conn.busy_timeout(Duration::from_secs(60)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        Ok(SqliteStudy { path, conn })
    }

    /// Opens an existing study for reading (the report); an error when `dir` holds none.
    pub fn open_existing(dir: &Path) -> Result<Self> {
        let path = dir.join(DATABASE);
        if !path.exists() {
            return Err(Error::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no sweep study here (run `rosetta sweep SWEEP.toml --dir DIR` first)",
                ),
            ));
        }
        Self::open(dir)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        db_error(&self.path)
    }
}

/// A stored value the study cannot have written (a corrupt or foreign database).
fn corrupt(message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, message.into())
}

fn row_to_trial(r: &rusqlite::Row<'_>) -> rusqlite::Result<TrialRow> {
    let params: String = r.get("params")?;
    let status: String = r.get("status")?;
    Ok(TrialRow {
        id: r.get::<_, i64>("id")? as usize,
        params: serde_json::from_str(&params)
            .map_err(|e| corrupt(format!("trial parameters {params}: {e}")))?,
        status: Status::parse(&status).map_err(corrupt)?,
        worker: r.get("worker")?,
        attempts: r.get("attempts")?,
        started: r.get("started")?,
        finished: r.get("finished")?,
        heartbeat: r.get("heartbeat")?,
        step: r.get::<_, i64>("step")? as u64,
        planned_steps: r.get::<_, Option<i64>>("planned_steps")?.map(|s| s as u64),
        objective: r.get("objective")?,
        best_step: r.get::<_, Option<i64>>("best_step")?.map(|s| s as u64),
        seconds: r.get("seconds")?,
        message: r.get("message")?,
    })
}

impl Storage for SqliteStudy {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn fingerprint(&mut self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'fingerprint'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db())
    }

    fn begin(&mut self, fingerprint: &str, trials: &[Assignment]) -> Result<()> {
        let path = self.path.clone();
        let db = db_error(&path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let meta = |key: &str| -> Result<Option<String>> {
            tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(db)
        };
        let (stored, format) = (meta("fingerprint")?, meta("format")?);
        let existing: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT params FROM trials ORDER BY id")
                .map_err(db)?;
            stmt.query_map([], |r| r.get(0))
                .map_err(db)?
                .collect::<rusqlite::Result<_>>()
                .map_err(db)?
        };
        let add = plan_begin(
            &path.display().to_string(),
            stored
                .as_deref()
                .map(|f| (f, format.as_deref().unwrap_or(FORMAT))),
            fingerprint,
            &existing,
            trials,
        )?;
        if stored.is_none() {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('fingerprint', ?1), ('format', ?2), ('created', ?3)",
                params![fingerprint, FORMAT, now().to_string()],
            )
            .map_err(db)?;
        }
        for (i, json) in add {
            tx.execute(
                "INSERT INTO trials (id, params) VALUES (?1, ?2)",
                params![i as i64, json],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    fn claim(
        &mut self,
        worker: &str,
        is_alive: &dyn Fn(&str) -> Option<bool>,
        stale_after: f64,
    ) -> Result<Option<Claim>> {
        let path = self.path.clone();
        let db = db_error(&path);
        // IMMEDIATE takes the write lock before reading: two workers never both see a trial as
        // free.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let running: Vec<Running> = {
            let mut stmt = tx
                .prepare("SELECT id, worker, heartbeat, attempts FROM trials WHERE status = 'running' ORDER BY id")
                .map_err(db)?;
            stmt.query_map([], |r| {
                Ok(Running {
                    id: r.get(0)?,
                    worker: r.get(1)?,
                    heartbeat: r.get(2)?,
                    attempts: r.get(3)?,
                })
            })
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)?
        };
        let time = now();
        let pending: Option<i64> = tx
            .query_row(
                "SELECT id FROM trials WHERE status = 'pending' ORDER BY id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let pick = pick_trial(&running, pending, is_alive, stale_after, time);
        for id in &pick.give_up {
            tx.execute(
                "UPDATE trials SET status = 'failed', message = ?2, finished = ?3 WHERE id = ?1",
                params![id, given_up_message(), time],
            )
            .map_err(db)?;
        }
        let Some(id) = pick.take else {
            tx.commit().map_err(db)?;
            return Ok(None);
        };
        tx.execute(
            "UPDATE trials SET status = 'running', worker = ?2, attempts = attempts + 1,
                 started = COALESCE(started, ?3), heartbeat = ?3 WHERE id = ?1",
            params![id, worker, time],
        )
        .map_err(db)?;
        let (params_json, attempts): (String, u32) = tx
            .query_row(
                "SELECT params, attempts FROM trials WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Some(Claim {
            id: id as usize,
            params: serde_json::from_str(&params_json).map_err(|e| {
                Error::Mismatch(format!(
                    "{}: trial {id}: unreadable parameters ({e})",
                    path.display()
                ))
            })?,
            resumed: attempts > 1,
        }))
    }

    fn heartbeat(
        &mut self,
        trial: usize,
        worker: &str,
        step: u64,
        planned_steps: Option<u64>,
    ) -> Result<bool> {
        let changed = self
            .conn
            .execute(
                "UPDATE trials SET heartbeat = ?3, step = ?4,
                     planned_steps = COALESCE(?5, planned_steps)
                 WHERE id = ?1 AND worker = ?2 AND status = 'running'",
                params![
                    trial as i64,
                    worker,
                    now(),
                    step as i64,
                    planned_steps.map(|s| s as i64)
                ],
            )
            .map_err(self.db())?;
        Ok(changed == 1)
    }

    fn record_point(&mut self, trial: usize, p: &Point) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO points (trial, step, objective, bleu, chrf, ppl, elapsed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    trial as i64,
                    p.step as i64,
                    p.objective,
                    p.bleu,
                    p.chrf,
                    p.ppl,
                    p.elapsed
                ],
            )
            .map_err(self.db())?;
        Ok(())
    }

    fn finish(&mut self, trial: usize, worker: &str, o: &Outcome) -> Result<bool> {
        let changed = self
            .conn
            .execute(
                "UPDATE trials SET status = ?2, objective = ?3, best_step = ?4, step = ?5,
                     seconds = ?6, message = ?7, finished = ?8
                 WHERE id = ?1 AND worker = ?9 AND status = 'running'",
                params![
                    trial as i64,
                    o.status.as_str(),
                    o.objective,
                    o.best_step.map(|s| s as i64),
                    o.steps as i64,
                    o.seconds,
                    o.message,
                    now(),
                    worker
                ],
            )
            .map_err(self.db())?;
        Ok(changed == 1)
    }

    fn trials(&mut self) -> Result<Vec<TrialRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM trials ORDER BY id")
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], row_to_trial)
            .map_err(self.db())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.db())?;
        Ok(rows)
    }

    fn points(&mut self) -> Result<BTreeMap<usize, Vec<Point>>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT trial, step, objective, bleu, chrf, ppl, elapsed FROM points ORDER BY trial, step",
            )
            .map_err(self.db())?;
        let mut out: BTreeMap<usize, Vec<Point>> = BTreeMap::new();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as usize,
                    Point {
                        step: r.get::<_, i64>(1)? as u64,
                        objective: r.get(2)?,
                        bleu: r.get(3)?,
                        chrf: r.get(4)?,
                        ppl: r.get(5)?,
                        elapsed: r.get(6)?,
                    },
                ))
            })
            .map_err(self.db())?;
        for row in rows {
            let (trial, point) = row.map_err(self.db())?;
            out.entry(trial).or_default().push(point);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(v: i64) -> Assignment {
        [("model.x".to_owned(), toml::Value::Integer(v))]
            .into_iter()
            .collect()
    }

    #[test]
    fn a_study_refuses_another_sweep_and_grows_but_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let mut study = SqliteStudy::open(dir.path()).unwrap();
        let trials: Vec<_> = (0..3).map(assignment).collect();
        study.begin("a", &trials).unwrap();
        study.begin("a", &trials).unwrap();
        assert_eq!(study.trials().unwrap().len(), 3);
        let more: Vec<_> = (0..5).map(assignment).collect();
        study.begin("a", &more).unwrap();
        assert_eq!(study.trials().unwrap().len(), 5);
        let err = study.begin("b", &more).unwrap_err().to_string();
        assert!(err.contains("another sweep"), "{err}");
        let err = study.begin("a", &trials).unwrap_err().to_string();
        assert!(err.contains("grow, not shrink"), "{err}");
    }

    #[test]
    fn orphans_are_claimed_before_pending_trials_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut study = SqliteStudy::open(dir.path()).unwrap();
        study
            .begin("a", &(0..3).map(assignment).collect::<Vec<_>>())
            .unwrap();
        let alive = |w: &str| Some(w != "dead");
        let first = study.claim("dead", &alive, 60.0).unwrap().unwrap();
        assert_eq!((first.id, first.resumed), (0, false));
        let again = study.claim("me", &alive, 60.0).unwrap().unwrap();
        assert_eq!((again.id, again.resumed), (0, true));
        let next = study.claim("me", &alive, 60.0).unwrap().unwrap();
        assert_eq!((next.id, next.resumed), (1, false));
        // A worker elsewhere (liveness unknown) keeps its trial while its heartbeat is fresh.
        let remote = |w: &str| if w == "remote" { None } else { Some(true) };
        let taken = study.claim("remote", &remote, 60.0).unwrap().unwrap();
        assert_eq!(taken.id, 2);
        assert!(study.claim("me", &remote, 60.0).unwrap().is_none());
        assert_eq!(study.claim("me", &remote, -1.0).unwrap().unwrap().id, 2);
    }
}
