//! The sweep library without training: the space (grid, random, conditions), the checks made
//! before anything trains, ASHA on synthetic curves, and concurrent claims on one study.

use rosetta_sweep::pruner::should_stop;
use rosetta_sweep::space::Assignment;
use rosetta_sweep::spec::{Direction, PrunerKind, PrunerSpec, Sweep};
use rosetta_sweep::study::{Point, SqliteStudy, Storage};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

const BASE: &str = r#"
[data]
train_src = "train.src"
train_tgt = "train.tgt"
valid_src = "valid.src"
valid_tgt = "valid.tgt"

[text]
tokenizer = "word"

[train]
max_steps = 100
valid_every = 10
"#;

/// A sweep file (and its base config) in a fresh directory.
fn sweep_file(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.toml"), BASE).unwrap();
    let path = dir.path().join("sweep.toml");
    std::fs::write(&path, format!("base = \"base.toml\"\n{body}")).unwrap();
    (dir, path)
}

fn load(body: &str) -> (tempfile::TempDir, PathBuf, rosetta_sweep::Result<Sweep>) {
    let (dir, path) = sweep_file(body);
    let sweep = Sweep::load(&path);
    (dir, path, sweep)
}

fn trials(body: &str) -> rosetta_sweep::Result<Vec<Assignment>> {
    let (_dir, path, sweep) = load(body);
    sweep?.trials(&path, false)
}

fn error(body: &str) -> String {
    match trials(body) {
        Ok(t) => panic!("expected an error, got {} trials", t.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn grid_enumerates_exactly_the_product() {
    let t = trials(
        "[space]\nmodel.dropout = [0.1, 0.2, 0.3]\ntrain.learning_rate = [1e-3, 3e-3]\n\
         model.cell = [\"gru\", \"lstm\"]\n",
    )
    .unwrap();
    assert_eq!(t.len(), 12);
    let distinct: BTreeSet<String> = t.iter().map(rosetta_sweep::space::describe).collect();
    assert_eq!(distinct.len(), 12, "every combination exactly once");
    for a in &t {
        assert_eq!(a.len(), 3);
    }
}

#[test]
fn conditional_keys_apply_only_where_their_condition_holds() {
    let t = trials(
        "[space]\nmodel.arch = [\"rnn\", \"transformer\"]\n\
         model.heads = { choice = [2, 4], when = { \"model.arch\" = \"transformer\" } }\n\
         model.cell = { choice = [\"gru\", \"lstm\"], when = { model.arch = \"rnn\" } }\n",
    )
    .unwrap();
    // rnn × {gru, lstm} + transformer × {2, 4} heads.
    assert_eq!(t.len(), 4);
    for a in &t {
        let transformer = a["model.arch"].as_str() == Some("transformer");
        assert_eq!(a.contains_key("model.heads"), transformer, "{a:?}");
        assert_eq!(a.contains_key("model.cell"), !transformer, "{a:?}");
    }
}

#[test]
fn random_search_is_reproducible_from_its_seed_and_extends_with_more_trials() {
    let body = |seed: u64, n: usize| {
        format!(
            "method = \"random\"\ntrials = {n}\nseed = {seed}\n[space]\n\
             train.learning_rate = {{ log_uniform = [1e-4, 1e-2] }}\n\
             model.dropout = {{ uniform = [0.0, 0.5] }}\n\
             model.encoder_hidden = {{ int = [16, 64], step = 16 }}\n"
        )
    };
    let a = trials(&body(7, 10)).unwrap();
    let b = trials(&body(7, 10)).unwrap();
    let c = trials(&body(8, 10)).unwrap();
    let longer = trials(&body(7, 15)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(&longer[..10], &a[..]);
    for t in &a {
        let lr = t["train.learning_rate"].as_float().unwrap();
        let dropout = t["model.dropout"].as_float().unwrap();
        let hidden = t["model.encoder_hidden"].as_integer().unwrap();
        assert!((1e-4..=1e-2).contains(&lr), "{lr}");
        assert!((0.0..=0.5).contains(&dropout), "{dropout}");
        assert!([16, 32, 48, 64].contains(&hidden), "{hidden}");
    }
}

#[test]
fn bad_sweeps_are_refused_before_anything_trains() {
    let e = error("[space]\nmodel.dropuot = [0.1]\n");
    assert!(e.contains("dropuot") && e.contains("trial 0"), "{e}");
    let e = error("[space]\nmodel.dropout = [\"high\"]\n");
    assert!(e.contains("model.dropout = \"high\""), "{e}");
    let e = error("[space]\ntrain.label_smoothing = [0.1, 1.5]\n");
    assert!(e.contains("label_smoothing = 1.5"), "{e}");
    // Out of range at one end of a random range, though no sampled trial may land there.
    let e = error(
        "method = \"random\"\ntrials = 1\n[space]\ntrain.label_smoothing = { uniform = [0.0, 1.5] }\n",
    );
    assert!(e.contains("label_smoothing"), "{e}");
    assert!(error("[space]\n").contains("empty"));
    assert!(error("").contains("empty"));
    let e = error("[space]\nmodel.dropout = { uniform = [0.0, 0.5] }\n");
    assert!(e.contains("grid needs a list"), "{e}");
    let e = error("method = \"random\"\n[space]\nmodel.dropout = [0.1]\n");
    assert!(e.contains("trials = N"), "{e}");
    let e = error("[space]\nsearch.beam = [1, 5]\n");
    assert!(e.contains("sweep it on a trained model"), "{e}");
    let e = error("[space]\ntrain.max_steps = [1, 5]\n");
    assert!(e.contains("[budget]"), "{e}");
    let e = error("[objective]\nmetric = \"bleu4\"\n[space]\nmodel.dropout = [0.1]\n");
    assert!(e.contains("bleu4"), "{e}");
    let e = error("[pruner]\nkind = \"asha\"\n[space]\nmodel.dropout = [0.1]\n");
    assert!(e.contains("min_steps"), "{e}");
    let e =
        error("[space]\nmodel.dropout = { choice = [0.1], when = { \"model.acrh\" = \"rnn\" } }\n");
    assert!(e.contains("model.acrh") && e.contains("never hold"), "{e}");
    let e = error("unknown = 1\n[space]\nmodel.dropout = [0.1]\n");
    assert!(e.contains("unknown"), "{e}");
}

/// Found while fuzzing sweep files (`fuzz/corpus/sweep/regression-random-trials-beyond-the-limit`):
/// every trial is drawn and checked up front, so `trials = 100000000` exhausted memory.
#[test]
fn a_random_search_of_more_trials_than_the_limit_is_refused() {
    let e = error("method = \"random\"\ntrials = 100000000\n[space]\nmodel.dropout = [0.1, 0.2]\n");
    assert!(
        e.contains("trials = 100000000") && e.contains("100000 at most"),
        "{e}"
    );
    let limit = rosetta_sweep::spec::GRID_HARD_LIMIT;
    let at_limit =
        format!("method = \"random\"\ntrials = {limit}\n[space]\nmodel.dropout = [0.1]\n");
    let (_dir, _path, sweep) = load(&at_limit);
    assert_eq!(sweep.unwrap().trials, Some(limit));
}

#[test]
fn a_grid_over_the_limit_needs_confirmation() {
    let values: Vec<String> = (0..11).map(|i| format!("{}", 16 + i)).collect();
    let body = format!(
        "[space]\nmodel.encoder_hidden = [{0}]\nmodel.embedding_size = [{0}]\n",
        values.join(", ")
    );
    let (_dir, path, sweep) = load(&body);
    let sweep = sweep.unwrap();
    let e = sweep.trials(&path, false).unwrap_err().to_string();
    assert!(e.contains("121 trials") && e.contains("--yes"), "{e}");
    assert_eq!(sweep.trials(&path, true).unwrap().len(), 121);
}

#[test]
fn the_budget_and_objective_replace_the_base_configs_limits() {
    let (_dir, _path, sweep) = load(
        "[objective]\nmetric = \"chrf\"\n[budget]\nmax_minutes = 2.5\n[space]\nmodel.dropout = [0.1]\n",
    );
    let sweep = sweep.unwrap();
    let a = &sweep.assignments().unwrap()[0];
    let config = sweep.train_config(a).unwrap();
    assert_eq!(
        config.train.max_steps, 0,
        "the base's max_steps is replaced"
    );
    assert_eq!(config.train.max_minutes, 2.5);
    assert_eq!(config.train.stop_metric, rosetta::config::StopMetric::Chrf);
    assert!(config.to_toml().unwrap().contains("dropout = 0.1"));
}

// ---------------------------------------------------------------------------------------------------
// ASHA on synthetic curves

fn asha(min_steps: u64, eta: f64) -> PrunerSpec {
    PrunerSpec {
        kind: PrunerKind::Asha,
        min_steps,
        reduction_factor: eta,
        ..PrunerSpec::default()
    }
}

/// Runs trials one after another, as one worker does, validating every 10 steps up to 90 (the
/// budget), feeding each validation to ASHA; returns where each trial stopped.
fn run_sequentially(finals: &[f64], spec: &PrunerSpec) -> Vec<u64> {
    let mut curves: BTreeMap<usize, Vec<Point>> = BTreeMap::new();
    let mut stopped_at = Vec::new();
    for (trial, &final_value) in finals.iter().enumerate() {
        let mut stop = 90;
        for step in (10..=90).step_by(10) {
            // A learning curve rising toward the trial's final value.
            let value = final_value * step as f64 / 90.0;
            curves.entry(trial).or_default().push(Point {
                step,
                objective: value,
                bleu: value,
                chrf: 0.0,
                ppl: 0.0,
                elapsed: 0.0,
            });
            if should_stop(spec, Direction::Maximize, trial, &curves, Some(90)).is_some() {
                stop = step;
                break;
            }
        }
        stopped_at.push(stop);
    }
    stopped_at
}

#[test]
fn asha_stops_the_trials_it_should_on_synthetic_curves() {
    // Rungs at 10 and 30 (90 is the budget: no rung there), η = 3.
    let spec = asha(10, 3.0);
    // Trial values in arrival order; the first trial at a rung always continues.
    let stopped = run_sequentially(&[30.0, 10.0, 20.0, 40.0, 5.0, 35.0], &spec);
    // 0: alone at both rungs → runs to the end.
    // 1: rung 10, 2 trials, keep ⌊2/3⌋→1: 0 is better → stopped at 10.
    // 2: rung 10, 3 trials, keep 1: 0 is better → stopped at 10.
    // 3: best at rung 10 (keep 1 of 4) and at rung 30 (keep 1 of 2) → runs to the end.
    // 4: rung 10, 5 trials, keep 1 → stopped.
    // 5: rung 10, 6 trials, keep 2: only trial 3 is better → continues; rung 30: 3 trials
    //    (0, 3, 5), keep 1: 3 is better → stopped at 30.
    assert_eq!(stopped, [90, 10, 10, 90, 10, 30]);
    // Minimizing flips the order: the worst of the maximizing run is now the best.
    let mut curves = BTreeMap::new();
    for (trial, v) in [(0usize, 5.0), (1, 9.0)] {
        curves.insert(
            trial,
            vec![Point {
                step: 10,
                objective: v,
                bleu: 0.0,
                chrf: 0.0,
                ppl: v,
                elapsed: 0.0,
            }],
        );
    }
    assert!(should_stop(&spec, Direction::Minimize, 1, &curves, Some(90)).is_some());
    assert!(should_stop(&spec, Direction::Minimize, 0, &curves, Some(90)).is_none());
    // No pruner: nothing stops.
    let none = PrunerSpec::default();
    assert_eq!(run_sequentially(&[30.0, 1.0], &none), [90, 90]);
}

// ---------------------------------------------------------------------------------------------------
// The study under concurrent workers

fn claim_all(study: &mut dyn Storage, worker: &str) -> Vec<usize> {
    let mut mine = Vec::new();
    while let Some(claim) = study.claim(worker, &|_| Some(true), 3600.0).unwrap() {
        mine.push(claim.id);
        let finished = study
            .finish(
                claim.id,
                worker,
                &rosetta_sweep::study::Outcome {
                    status: rosetta_sweep::study::Status::Complete,
                    objective: Some(claim.id as f64),
                    best_step: None,
                    steps: 0,
                    seconds: 0.0,
                    message: String::new(),
                },
            )
            .unwrap();
        assert!(finished);
    }
    mine
}

/// What every storage must do: refuse another sweep, grow but never shrink, and hand each trial
/// to exactly one of several concurrent workers (each with its own connection, as separate
/// processes have).
fn storage_contract(open: impl Fn() -> Box<dyn Storage> + Send + Sync + 'static) {
    let trials: Vec<Assignment> = (0..200)
        .map(|i| {
            [("model.x".to_owned(), toml::Value::Integer(i))]
                .into_iter()
                .collect()
        })
        .collect();
    let mut study = open();
    study.begin("sweep", &trials[..150]).unwrap();
    study.begin("sweep", &trials).unwrap();
    let e = study.begin("other", &trials).unwrap_err().to_string();
    assert!(e.contains("another sweep"), "{e}");
    let e = study.begin("sweep", &trials[..10]).unwrap_err().to_string();
    assert!(e.contains("grow, not shrink"), "{e}");
    assert_eq!(study.fingerprint().unwrap().as_deref(), Some("sweep"));
    let open = std::sync::Arc::new(open);
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let open = open.clone();
            std::thread::spawn(move || claim_all(open().as_mut(), &format!("worker-{w}")))
        })
        .collect();
    let mut all: Vec<usize> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>(), "each trial exactly once");
    let rows = study.trials().unwrap();
    assert!(
        rows.iter()
            .all(|t| t.attempts == 1 && t.status.is_finished())
    );
    // Points are replaced at the same step (a resumed trial repeats its validation).
    let point = |objective| Point {
        step: 10,
        objective,
        bleu: objective,
        chrf: 0.0,
        ppl: 1.0,
        elapsed: 1.0,
    };
    study.record_point(3, &point(1.0)).unwrap();
    study.record_point(3, &point(2.0)).unwrap();
    assert_eq!(study.points().unwrap()[&3], [point(2.0)]);
}

#[test]
fn workers_sharing_a_sqlite_study_never_run_the_same_trial() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    storage_contract(move || Box::new(SqliteStudy::open(&path).unwrap()));
}

/// A throwaway PostgreSQL server on loopback (Debian's `postgresql`), stopped when dropped.
struct Server {
    dir: tempfile::TempDir,
    bin: PathBuf,
    url: String,
    as_postgres: bool,
}

impl Server {
    fn command(&self, tool: &str) -> std::process::Command {
        let tool = self.bin.join(tool);
        if self.as_postgres {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(tool);
            cmd
        } else {
            std::process::Command::new(tool)
        }
    }

    /// Starts a server, or says why it cannot.
    fn start() -> Result<Server, String> {
        let bin = std::env::var_os("PG_BIN")
            .map(PathBuf::from)
            .into_iter()
            .chain(
                std::fs::read_dir("/usr/lib/postgresql")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path().join("bin")),
            )
            .find(|b| b.join("initdb").exists())
            .ok_or("no PostgreSQL server installed (Debian: apt-get install postgresql)")?;
        // SAFETY: geteuid only reads the process's user id.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        if as_postgres {
            // initdb refuses to run as root: the server runs as the postgres user.
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("cannot hand the data directory to the postgres user".into());
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut server = Server {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            bin,
            as_postgres,
        };
        let data = server.dir.path().join("data");
        let out = server
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {}",
            server.dir.path().display()
        );
        let out = server
            .command("pg_ctl")
            .args(["-w", "-D"])
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(server.dir.path().join("log"))
            .arg("start")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            server.bin = PathBuf::new();
            return Err(format!(
                "pg_ctl start failed: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.bin.as_os_str().is_empty() {
            return;
        }
        let _ = self
            .command("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
    }
}

#[test]
fn workers_sharing_a_postgres_study_never_run_the_same_trial() {
    let server = match Server::start() {
        Ok(server) => server,
        Err(why) => {
            eprintln!("SKIPPED: PostgreSQL study tests: {why}");
            return;
        }
    };
    let url = server.url.clone();
    let choice = rosetta_sweep::StorageChoice {
        url: Some(url.clone()),
        study: Some("contract".into()),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    storage_contract(move || rosetta_sweep::open_storage(&path, &choice, true).unwrap());
    // Two studies in one database stay apart.
    let mut other = rosetta_sweep::pg_study::PgStudy::connect(&url, "other").unwrap();
    assert_eq!(other.fingerprint().unwrap(), None);
    let e = rosetta_sweep::pg_study::PgStudy::connect(&url, "bad name")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("study name"), "{e}");
    // A server that is not there: an error naming it, never a hang or a panic.
    let e = rosetta_sweep::pg_study::PgStudy::connect("postgres://nobody:pw@127.0.0.1:1/db", "x")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("127.0.0.1:1") && !e.contains("pw"), "{e}");
    drop(server);
}
#[test]
fn example_sweeps_load_and_every_trial_validates() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut count = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        for entry in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if path.extension().is_none_or(|e| e != "toml")
                || !toml::from_str::<toml::Table>(&text)
                    .unwrap()
                    .contains_key("space")
            {
                continue;
            }
            let sweep = Sweep::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let trials = sweep
                .trials(&path, false)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!trials.is_empty());
            count += 1;
        }
    }
    assert!(count >= 1, "no example sweep found");
}
