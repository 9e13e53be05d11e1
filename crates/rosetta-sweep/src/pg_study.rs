//! A study kept in PostgreSQL (`--storage postgres://…`), so that workers on several machines
//! share it, as Optuna's RDB storage does. Each study lives in its own schema of the database;
//! every change is one transaction, and claims are serialized by a transaction-scoped advisory
//! lock on the study, so two workers never take the same trial.

use crate::error::{Error, Result};
use crate::space::Assignment;
use crate::study::{
    Claim, FORMAT, Outcome, Point, Running, Status, Storage, TrialRow, given_up_message, now,
    pick_trial, plan_begin,
};
use postgres::{Client, NoTls};
use std::collections::BTreeMap;

/// A study in a PostgreSQL database.
pub struct PgStudy {
    client: Client,
    /// The schema holding the study's tables.
    study: String,
    /// `server/study`, for messages (without the password).
    location: String,
}

/// Whether a `--storage` value names a PostgreSQL server.
pub fn is_postgres_url(storage: &str) -> bool {
    storage.starts_with("postgres://") || storage.starts_with("postgresql://")
}

impl PgStudy {
    /// Connects to `url` and opens (creating when absent) the study `study` in it. A study name
    /// is letters, digits, `_` and `-`.
    pub fn connect(url: &str, study: &str) -> Result<Self> {
        let location = format!("{}/{study}", redact(url));
        if study.is_empty()
            || !study
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::Mismatch(format!(
                "study name \"{study}\": use letters, digits, _ and - (it names a PostgreSQL schema)"
            )));
        }
        let pg = |source| Error::Postgres {
            location: location.clone(),
            source,
        };
        let mut client = Client::connect(url, NoTls).map_err(pg)?;
        let schema = format!("\"sweep_{study}\"");
        let mut tx = client.transaction().map_err(pg)?;
        // Two workers creating the same study at once would race on CREATE ... IF NOT EXISTS.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&study])
            .map_err(pg)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS {schema}.trials (
                 id BIGINT PRIMARY KEY,
                 params TEXT NOT NULL,
                 status TEXT NOT NULL DEFAULT 'pending',
                 worker TEXT,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 started DOUBLE PRECISION,
                 finished DOUBLE PRECISION,
                 heartbeat DOUBLE PRECISION,
                 step BIGINT NOT NULL DEFAULT 0,
                 planned_steps BIGINT,
                 objective DOUBLE PRECISION,
                 best_step BIGINT,
                 seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
                 message TEXT
             );
             CREATE TABLE IF NOT EXISTS {schema}.points (
                 trial BIGINT NOT NULL,
                 step BIGINT NOT NULL,
                 objective DOUBLE PRECISION NOT NULL,
                 bleu DOUBLE PRECISION NOT NULL,
                 chrf DOUBLE PRECISION NOT NULL,
                 ppl DOUBLE PRECISION NOT NULL,
                 elapsed DOUBLE PRECISION NOT NULL,
                 PRIMARY KEY (trial, step)
             );"
        ))
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(PgStudy {
            client,
            study: schema,
            location,
        })
    }

    fn pg(&self) -> impl Fn(postgres::Error) -> Error + '_ {
        |source| Error::Postgres {
            location: self.location.clone(),
            source,
        }
    }
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn row_to_trial(r: &postgres::Row, location: &str) -> Result<TrialRow> {
    let pg = |source| Error::Postgres {
        location: location.to_owned(),
        source,
    };
    let corrupt = |message: String| Error::Mismatch(format!("{location}: {message}"));
    let params: String = r.try_get("params").map_err(pg)?;
    let status: String = r.try_get("status").map_err(pg)?;
    let row = |r: &postgres::Row| -> Result<TrialRow, postgres::Error> {
        Ok(TrialRow {
            id: r.try_get::<_, i64>("id")? as usize,
            params: Default::default(),
            status: Status::Pending,
            worker: r.try_get("worker")?,
            attempts: r.try_get::<_, i32>("attempts")?.max(0) as u32,
            started: r.try_get("started")?,
            finished: r.try_get("finished")?,
            heartbeat: r.try_get("heartbeat")?,
            step: r.try_get::<_, i64>("step")?.max(0) as u64,
            planned_steps: r
                .try_get::<_, Option<i64>>("planned_steps")?
                .map(|s| s.max(0) as u64),
            objective: r.try_get("objective")?,
            best_step: r
                .try_get::<_, Option<i64>>("best_step")?
                .map(|s| s.max(0) as u64),
            seconds: r.try_get("seconds")?,
            message: r.try_get("message")?,
        })
    };
    let mut trial = row(r).map_err(pg)?;
    trial.params = serde_json::from_str(&params)
        .map_err(|e| corrupt(format!("trial parameters {params}: {e}")))?;
    trial.status = Status::parse(&status).map_err(corrupt)?;
    Ok(trial)
}

impl Storage for PgStudy {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn fingerprint(&mut self) -> Result<Option<String>> {
        let sql = format!(
            "SELECT value FROM {}.meta WHERE key = 'fingerprint'",
            self.study
        );
        let row = self.client.query_opt(&sql, &[]).map_err(self.pg())?;
        row.map(|r| r.try_get(0)).transpose().map_err(self.pg())
    }

    fn begin(&mut self, fingerprint: &str, trials: &[Assignment]) -> Result<()> {
        let (s, location) = (self.study.clone(), self.location.clone());
        let pg = |source| Error::Postgres {
            location: location.clone(),
            source,
        };
        let mut tx = self.client.transaction().map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&s])
            .map_err(pg)?;
        let meta = |tx: &mut postgres::Transaction<'_>, key: &str| -> Result<Option<String>> {
            let row = tx
                .query_opt(
                    &format!("SELECT value FROM {s}.meta WHERE key = $1"),
                    &[&key],
                )
                .map_err(pg)?;
            row.map(|r| r.try_get(0)).transpose().map_err(pg)
        };
        let (stored, format) = (meta(&mut tx, "fingerprint")?, meta(&mut tx, "format")?);
        let existing: Vec<String> = tx
            .query(&format!("SELECT params FROM {s}.trials ORDER BY id"), &[])
            .map_err(pg)?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(pg)?;
        let add = plan_begin(
            &location,
            stored
                .as_deref()
                .map(|f| (f, format.as_deref().unwrap_or(FORMAT))),
            fingerprint,
            &existing,
            trials,
        )?;
        if stored.is_none() {
            let created = now().to_string();
            tx.execute(
                &format!(
                    "INSERT INTO {s}.meta (key, value) VALUES ('fingerprint', $1), ('format', $2), ('created', $3)"
                ),
                &[&fingerprint, &FORMAT, &created],
            )
            .map_err(pg)?;
        }
        for (i, json) in add {
            tx.execute(
                &format!("INSERT INTO {s}.trials (id, params) VALUES ($1, $2)"),
                &[&(i as i64), &json],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)
    }

    fn claim(
        &mut self,
        worker: &str,
        is_alive: &dyn Fn(&str) -> Option<bool>,
        stale_after: f64,
    ) -> Result<Option<Claim>> {
        let (s, location) = (self.study.clone(), self.location.clone());
        let pg = |source| Error::Postgres {
            location: location.clone(),
            source,
        };
        let mut tx = self.client.transaction().map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&s])
            .map_err(pg)?;
        let running: Vec<Running> = tx
            .query(
                &format!(
                    "SELECT id, worker, heartbeat, attempts FROM {s}.trials WHERE status = 'running' ORDER BY id"
                ),
                &[],
            )
            .map_err(pg)?
            .iter()
            .map(|r| {
                Ok(Running {
                    id: r.try_get(0)?,
                    worker: r.try_get(1)?,
                    heartbeat: r.try_get(2)?,
                    attempts: r.try_get::<_, i32>(3)?.max(0) as u32,
                })
            })
            .collect::<Result<_, postgres::Error>>()
            .map_err(pg)?;
        let pending: Option<i64> = tx
            .query_opt(
                &format!("SELECT id FROM {s}.trials WHERE status = 'pending' ORDER BY id LIMIT 1"),
                &[],
            )
            .map_err(pg)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(pg)?;
        let time = now();
        let pick = pick_trial(&running, pending, is_alive, stale_after, time);
        for id in &pick.give_up {
            tx.execute(
                &format!(
                    "UPDATE {s}.trials SET status = 'failed', message = $2, finished = $3 WHERE id = $1"
                ),
                &[id, &given_up_message(), &time],
            )
            .map_err(pg)?;
        }
        let Some(id) = pick.take else {
            tx.commit().map_err(pg)?;
            return Ok(None);
        };
        let row = tx
            .query_one(
                &format!(
                    "UPDATE {s}.trials SET status = 'running', worker = $2, attempts = attempts + 1,
                         started = COALESCE(started, $3), heartbeat = $3 WHERE id = $1
                     RETURNING params, attempts"
                ),
                &[&id, &worker, &time],
            )
            .map_err(pg)?;
        let params: String = row.try_get(0).map_err(pg)?;
        let attempts: i32 = row.try_get(1).map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(Some(Claim {
            id: id as usize,
            params: serde_json::from_str(&params).map_err(|e| {
                Error::Mismatch(format!(
                    "{location}: trial {id}: unreadable parameters ({e})"
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
        let sql = format!(
            "UPDATE {}.trials SET heartbeat = $3, step = $4, planned_steps = COALESCE($5, planned_steps)
             WHERE id = $1 AND worker = $2 AND status = 'running'",
            self.study
        );
        let planned = planned_steps.map(|s| s as i64);
        let changed = self
            .client
            .execute(
                &sql,
                &[&(trial as i64), &worker, &now(), &(step as i64), &planned],
            )
            .map_err(self.pg())?;
        Ok(changed == 1)
    }

    fn record_point(&mut self, trial: usize, p: &Point) -> Result<()> {
        let sql = format!(
            "INSERT INTO {}.points (trial, step, objective, bleu, chrf, ppl, elapsed)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (trial, step) DO UPDATE SET objective = EXCLUDED.objective,
                 bleu = EXCLUDED.bleu, chrf = EXCLUDED.chrf, ppl = EXCLUDED.ppl,
                 elapsed = EXCLUDED.elapsed",
            self.study
        );
        self.client
            .execute(
                &sql,
                &[
                    &(trial as i64),
                    &(p.step as i64),
                    &p.objective,
                    &p.bleu,
                    &p.chrf,
                    &p.ppl,
                    &p.elapsed,
                ],
            )
            .map_err(self.pg())?;
        Ok(())
    }

    fn finish(&mut self, trial: usize, worker: &str, o: &Outcome) -> Result<bool> {
        let sql = format!(
            "UPDATE {}.trials SET status = $2, objective = $3, best_step = $4, step = $5,
                 seconds = $6, message = $7, finished = $8
             WHERE id = $1 AND worker = $9 AND status = 'running'",
            self.study
        );
        let changed = self
            .client
            .execute(
                &sql,
                &[
                    &(trial as i64),
                    &o.status.as_str(),
                    &o.objective,
                    &o.best_step.map(|s| s as i64),
                    &(o.steps as i64),
                    &o.seconds,
                    &o.message,
                    &now(),
                    &worker,
                ],
            )
            .map_err(self.pg())?;
        Ok(changed == 1)
    }

    fn trials(&mut self) -> Result<Vec<TrialRow>> {
        let sql = format!("SELECT * FROM {}.trials ORDER BY id", self.study);
        let rows = self.client.query(&sql, &[]).map_err(self.pg())?;
        rows.iter()
            .map(|r| row_to_trial(r, &self.location))
            .collect()
    }

    fn points(&mut self) -> Result<BTreeMap<usize, Vec<Point>>> {
        let sql = format!(
            "SELECT trial, step, objective, bleu, chrf, ppl, elapsed FROM {}.points ORDER BY trial, step",
            self.study
        );
        let rows = self.client.query(&sql, &[]).map_err(self.pg())?;
        let mut out: BTreeMap<usize, Vec<Point>> = BTreeMap::new();
        for r in rows {
            let get = || -> Result<(usize, Point), postgres::Error> {
                Ok((
                    r.try_get::<_, i64>(0)? as usize,
                    Point {
                        step: r.try_get::<_, i64>(1)?.max(0) as u64,
                        objective: r.try_get(2)?,
                        bleu: r.try_get(3)?,
                        chrf: r.try_get(4)?,
                        ppl: r.try_get(5)?,
                        elapsed: r.try_get(6)?,
                    },
                ))
            };
            let (trial, point) = get().map_err(self.pg())?;
            out.entry(trial).or_default().push(point);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://sweeper:secret@db.example:5432/studies"),
            "postgres://sweeper@db.example:5432/studies"
        );
        assert_eq!(redact("postgres://db/studies"), "postgres://db/studies");
    }
}
