//! Corrupt files in a model directory and in its checkpoints: truncated, emptied or with their
//! first bytes flipped, each is an error naming the file — never a panic, never a silently
//! different model.

use burn::backend::{Autodiff, Flex};
use rosetta::config::Config;
use rosetta::model::architecture::ModelConfig;
use rosetta::model::seq2seq::RnnConfig;
use rosetta::train::schedule::ScheduleKind;
use rosetta::train::trainer::{Silent, TrainData, TrainOptions, train};
use rosetta::translate::Translator;
use rosetta_text::corpus::CorpusSource;
use rosetta_text::tokenize::TokenizerKind;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

type B = Autodiff<Flex>;

fn config(max_steps: u64) -> Config {
    let mut c = Config::default();
    c.text.tokenizer = TokenizerKind::Word;
    c.model = ModelConfig::Rnn(RnnConfig {
        embedding_size: 8,
        encoder_hidden: 8,
        encoder_layers: 1,
        decoder_hidden: 16,
        attention_size: 8,
        dropout: 0.0,
        ..RnnConfig::default()
    });
    c.train.batch_tokens = 200;
    c.train.schedule = ScheduleKind::Constant;
    c.train.max_epochs = 0;
    c.train.max_steps = max_steps;
    c.train.valid_every = 5;
    c
}

fn data() -> TrainData {
    let pairs: Vec<(String, String)> = (0..60)
        .map(|i| {
            let s = format!("a{} b{} c{}", i % 7, i % 5, i % 3);
            let t: Vec<&str> = s.split(' ').rev().collect();
            (s.clone(), t.join(" "))
        })
        .collect();
    TrainData {
        train: CorpusSource::Memory(Arc::new(pairs.clone())),
        valid: Some(CorpusSource::Memory(Arc::new(pairs[..10].to_vec()))),
    }
}

/// A model directory trained for 10 updates (checkpoints at 5 and 10), once per test process.
fn trained() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        train::<B>(
            &config(10),
            &data(),
            &TrainOptions {
                model_dir: dir.path().to_path_buf(),
                resume: false,
            },
            &Default::default(),
            &mut Silent,
        )
        .unwrap();
        dir
    })
    .path()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut to half its length (a write interrupted by a crash or a full disk).
    Truncated,
    /// Zero bytes.
    Empty,
    /// Its first 16 bytes inverted (headers, magic numbers, the first entries).
    Flipped,
}

fn damage(path: &Path, how: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        Damage::Truncated => bytes.truncate(bytes.len() / 2),
        Damage::Empty => bytes.clear(),
        Damage::Flipped => bytes.iter_mut().take(16).for_each(|b| *b = !*b),
    }
    std::fs::write(path, bytes).unwrap();
}

/// A copy of the trained directory with `file` damaged.
fn damaged(file: &str, how: Damage) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(trained(), &model);
    damage(&model.join(file), how);
    (dir, model)
}

/// The error of `run`, which must fail without panicking; its message must name `file`.
fn clear_error<T>(what: &str, file: &str, run: impl FnOnce() -> rosetta::Result<T>) {
    match catch_unwind(AssertUnwindSafe(run)) {
        Err(_) => panic!("{what}: panicked instead of an error"),
        Ok(Ok(_)) => panic!("{what}: accepted"),
        Ok(Err(e)) => {
            let name = Path::new(file).file_name().unwrap().to_string_lossy();
            let message = e.to_string();
            assert!(message.contains(&*name), "{what}: {message}");
        }
    }
}

#[test]
fn a_corrupt_file_of_a_model_directory_is_an_error_naming_it() {
    for file in ["model.safetensors", "config.toml", "text.toml", "vocab.txt"] {
        for how in [Damage::Truncated, Damage::Empty, Damage::Flipped] {
            let (_keep, model) = damaged(file, how);
            clear_error(&format!("{file} {how:?}"), file, || {
                Translator::<Flex>::load(&model, &Default::default())
            });
        }
    }
}

/// A model directory records its format; one from a newer Rosetta is refused as such (not as an
/// "unknown key" of whatever it added), and one from before the key existed still loads.
#[test]
fn a_model_directory_of_another_format_is_named_as_such() {
    let config_path = trained().join("config.toml");
    let written = std::fs::read_to_string(&config_path).unwrap();
    assert!(
        written.starts_with(&format!("format = {}\n", rosetta::config::FORMAT)),
        "{written}"
    );
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(trained(), &model);
    let current = format!("format = {}", rosetta::config::FORMAT);
    let next = rosetta::config::FORMAT + 1;
    let newer =
        written.replacen(&current, &format!("format = {next}"), 1) + "\n[quantize]\nbits = 4\n";
    std::fs::write(model.join("config.toml"), newer).unwrap();
    let e = Translator::<Flex>::load(&model, &Default::default()).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("config.toml")
            && message.contains(&format!("newer Rosetta (model-directory format {next}")),
        "{message}"
    );
    std::fs::write(
        model.join("config.toml"),
        written.replacen(&current, "format = \"two\"", 1),
    )
    .unwrap();
    clear_error("format = \"two\"", "config.toml", || {
        Translator::<Flex>::load(&model, &Default::default())
    });
    // Formats 2 (what the previous release wrote) and 1 (no key: every directory before it) load.
    for older in ["format = 2\n", ""] {
        std::fs::write(
            model.join("config.toml"),
            written.replacen(&format!("{current}\n"), older, 1),
        )
        .unwrap();
        Translator::<Flex>::load(&model, &Default::default()).unwrap();
    }
}

#[test]
fn a_corrupt_checkpoint_is_an_error_naming_the_file() {
    let last = "checkpoints/step-00000010";
    for file in ["model.mpk", "optim.mpk", "state.json"] {
        for how in [Damage::Truncated, Damage::Empty, Damage::Flipped] {
            let (_keep, model) = damaged(&format!("{last}/{file}"), how);
            clear_error(&format!("{file} {how:?}"), file, || {
                train::<B>(
                    &config(15),
                    &data(),
                    &TrainOptions {
                        model_dir: model.clone(),
                        resume: true,
                    },
                    &Default::default(),
                    &mut Silent,
                )
            });
        }
    }
}

/// Regression: an emptied `text.toml` parsed as all defaults and sent the loader after a
/// `tokenizer.json` the pipeline never had, naming that file instead.
#[test]
fn an_emptied_text_toml_is_named_not_a_tokenizer_file_it_never_had() {
    let (_keep, model) = damaged("text.toml", Damage::Empty);
    let err = Translator::<Flex>::load(&model, &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("text.toml") && !err.contains("tokenizer.json"),
        "{err}"
    );
}

/// Regression: a vocabulary cut at a line boundary loaded with fewer entries, and the weights'
/// shape error blamed only `model.safetensors` and `config.toml`.
#[test]
fn a_vocabulary_cut_at_a_line_boundary_is_named_by_the_shape_error() {
    let (_keep, model) = damaged("vocab.txt", Damage::Truncated);
    let text = std::fs::read_to_string(model.join("vocab.txt")).unwrap();
    assert!(
        text.ends_with('\n'),
        "this case is a cut at a line boundary"
    );
    let err = Translator::<Flex>::load(&model, &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("entries in vocab.txt"), "{err}");
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("mount -t tmpfs failed (needs root)".into());
        }
        Ok(Tmpfs { dir })
    }

    /// Fills the filesystem to the last byte; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        for _ in 0..4096 {
            if file.write_all(&[0]).and_then(|()| file.sync_all()).is_err() {
                break;
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_is_an_error_naming_the_path_and_the_last_checkpoint_survives() {
    let fs = match Tmpfs::mount("8m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: full-disk test: {why}");
            return;
        }
    };
    let model = fs.dir.path().join("model");
    copy_dir(trained(), &model);
    let resume = |max_steps: u64| {
        train::<B>(
            &config(max_steps),
            &data(),
            &TrainOptions {
                model_dir: model.clone(),
                resume: true,
            },
            &Default::default(),
            &mut Silent,
        )
    };
    let filler = fs.fill();
    let err = match catch_unwind(AssertUnwindSafe(|| resume(15))) {
        Err(_) => panic!("a full disk panicked"),
        Ok(Ok(_)) => panic!("training on a full disk reported success"),
        Ok(Err(e)) => e.to_string(),
    };
    assert!(
        err.contains(&*fs.dir.path().to_string_lossy()) && err.contains("No space left"),
        "{err}"
    );
    // Nothing half-written is left to be mistaken for a checkpoint, and the last one loads.
    let checkpoints: Vec<String> = std::fs::read_dir(model.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        checkpoints.iter().all(|c| !c.contains("15")),
        "{checkpoints:?}"
    );
    std::fs::remove_file(filler).unwrap();
    let summary = resume(15).unwrap();
    assert_eq!(summary.steps, 15);
    Translator::<Flex>::load(&model, &Default::default()).unwrap();
}
