//! End-to-end tests of the `rosetta` binary: each test runs the real executable, as a user would, and
//! checks its exit status, its output and the files it writes.
//!
//! The model tests share one tiny model (a reverse-the-symbols task, trained once for 60 steps on the
//! CPU) so that the whole file stays fast.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------------
// Helpers

fn rosetta() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rosetta"));
    // Warnings only, whatever the caller's environment says.
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs `rosetta ARGS`, feeding `stdin` (or nothing), and collects its output.
fn run<I, S>(args: I, stdin: Option<&[u8]>) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = rosetta();
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("cannot start the rosetta binary");
    // Feed stdin from another thread: the child may fill its stdout pipe before reading all input.
    let feeder = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            // The child may legitimately exit before reading everything.
            let _ = pipe.write_all(&bytes);
        })
    });
    let output = child.wait_with_output().expect("cannot wait for rosetta");
    if let Some(feeder) = feeder {
        feeder.join().expect("stdin feeder panicked");
    }
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "rosetta failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Asserts a clean failure (exit status 1, an `error:` line, no panic) and returns stderr.
#[track_caller]
fn fails(output: &Output) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected a failure, got {}:\n--- stdout\n{}\n--- stderr\n{stderr}",
        output.status,
        text(&output.stdout)
    );
    assert!(stderr.contains("error: "), "no error message: {stderr}");
    assert!(!stderr.contains("panicked"), "rosetta panicked: {stderr}");
    stderr
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut content = lines.join("\n");
    content.push('\n');
    std::fs::write(path, content).unwrap();
}

fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// A temporary directory under Cargo's per-target scratch space.
fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("rosetta-cli-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------------
// The shared tiny model: reverse a sequence of symbols ("a b c d" → "d c b a").

const SYMBOLS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

/// `n` deterministic pairs of 2–6 symbols and their reversal.
fn reversal_pairs(n: usize, seed: u64) -> (Vec<String>, Vec<String>) {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let mut src = Vec::with_capacity(n);
    let mut tgt = Vec::with_capacity(n);
    for _ in 0..n {
        let len = 2 + next() % 5;
        let mut symbols: Vec<&str> = (0..len).map(|_| SYMBOLS[next() % SYMBOLS.len()]).collect();
        src.push(symbols.join(" "));
        symbols.reverse();
        tgt.push(symbols.join(" "));
    }
    (src, tgt)
}

/// Writes the corpus and the config of the tiny task into `root`; returns the config path.
fn write_task(root: &Path) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (name, n, seed) in [("train", 300, 1), ("valid", 30, 2), ("test", 20, 3)] {
        let (src, tgt) = reversal_pairs(n, seed);
        write_lines(&data.join(format!("{name}.src")), &src);
        write_lines(&data.join(format!("{name}.tgt")), &tgt);
    }
    // TOML literal strings: no escaping of the paths.
    let config = format!(
        r#"[data]
train_src = '{train_src}'
train_tgt = '{train_tgt}'
valid_src = '{valid_src}'
valid_tgt = '{valid_tgt}'

[text]
tokenizer = "word"

[model]
embedding_size = 16
encoder_hidden = 16
encoder_layers = 1
decoder_hidden = 32
attention_size = 16
dropout = 0.0

[train]
max_steps = 60
max_epochs = 0
batch_tokens = 300
learning_rate = 0.01
valid_every = 30
log_every = 10
schedule = "constant"
"#,
        train_src = s(&data.join("train.src")),
        train_tgt = s(&data.join("train.tgt")),
        valid_src = s(&data.join("valid.src")),
        valid_tgt = s(&data.join("valid.tgt")),
    );
    let path = root.join("config.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// The task directory, with `model/` trained (once per test process).
fn task() -> &'static Path {
    static TASK: OnceLock<TempDir> = OnceLock::new();
    TASK.get_or_init(|| {
        let root = temp_dir();
        let config = write_task(root.path());
        let model = root.path().join("model");
        let output = run(
            [
                "train",
                s(&config),
                "--model-dir",
                s(&model),
                "--device",
                "cpu",
            ],
            None,
        );
        let stdout = ok(&output);
        assert!(stdout.contains("finished after 60 steps"), "{stdout}");
        // stderr is not a terminal here: the log lines must still be written (a redirected log).
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(" parameters; 300 training pairs"),
            "{stderr}"
        );
        assert!(stderr.contains("step     60: valid ppl"), "{stderr}");
        root
    })
    .path()
}

/// `rosetta prepare --tokenizer word` on a source, target and output path.
fn prepare_word(src: &str, tgt: &str, out: &str) -> Output {
    run(
        [
            "prepare",
            "--src",
            src,
            "--tgt",
            tgt,
            "-o",
            out,
            "--tokenizer",
            "word",
        ],
        None,
    )
}

fn model_dir() -> PathBuf {
    task().join("model")
}

// ---------------------------------------------------------------------------------------------------
// prepare

#[test]
fn prepare_reports_mismatched_line_counts_with_both_files_and_counts() {
    let dir = temp_dir();
    let src = dir.path().join("corpus.src");
    let tgt = dir.path().join("corpus.tgt");
    std::fs::write(&src, "a b\nc d\ne f\n").unwrap();
    std::fs::write(&tgt, "x\ny\n").unwrap();
    let out = dir.path().join("out");
    let stderr = fails(&prepare_word(s(&src), s(&tgt), s(&out)));
    assert!(stderr.contains("corpus.src has 3 lines"), "{stderr}");
    assert!(stderr.contains("corpus.tgt has 2 lines"), "{stderr}");
    assert!(
        !out.join("text.toml").exists(),
        "a failed prepare wrote output"
    );
}

#[test]
fn prepare_reports_invalid_utf8_with_file_and_line() {
    let dir = temp_dir();
    let src = dir.path().join("bad.src");
    let tgt = dir.path().join("bad.tgt");
    std::fs::write(&src, b"a b\nc d\ne \xff\xfe f\n").unwrap();
    std::fs::write(&tgt, "x\ny\nz\n").unwrap();
    let stderr = fails(&prepare_word(s(&src), s(&tgt), s(&dir.path().join("out"))));
    assert!(stderr.contains("bad.src:3"), "{stderr}");
    assert!(stderr.contains("UTF-8"), "{stderr}");
}

#[test]
fn prepare_reports_a_missing_file_once() {
    let dir = temp_dir();
    let tgt = dir.path().join("present.tgt");
    std::fs::write(&tgt, "x\n").unwrap();
    let stderr = fails(&prepare_word(
        s(&dir.path().join("missing.src")),
        s(&tgt),
        s(&dir.path().join("out")),
    ));
    assert!(stderr.contains("missing.src"), "{stderr}");
    // The OS error is given, and only once (not repeated by every layer of context).
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
}

#[test]
fn prepare_word_writes_the_pipeline_and_prints_statistics() {
    let dir = temp_dir();
    let src = dir.path().join("train.src");
    let tgt = dir.path().join("train.tgt");
    // Four pairs, one with an empty target side (dropped and counted).
    std::fs::write(
        &src,
        "Hello, world!\nThe cat sat.\nGood   morning\nlonely\n",
    )
    .unwrap();
    std::fs::write(&tgt, "Hallo, Welt!\nDie Katze saß.\nGuten Morgen\n\n").unwrap();
    let out = dir.path().join("prepared");
    let stdout = ok(&prepare_word(s(&src), s(&tgt), s(&out)));
    assert!(
        stdout.contains("pairs: 4 read, 3 kept, 1 dropped as empty"),
        "{stdout}"
    );
    assert!(stdout.contains("(word, joint)"), "{stdout}");
    for file in ["text.toml", "vocab.txt", "stats.json"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["pairs_read"], 4);
    assert_eq!(stats["pairs_kept"], 3);
    assert_eq!(stats["dropped_empty"], 1);
    // "Hello , world !" + "The cat sat ." + "Good morning"
    assert_eq!(stats["src"]["tokens"], 10);
    let vocab = std::fs::read_to_string(out.join("vocab.txt")).unwrap();
    for piece in ["<pad>", "<unk>", "Katze", "world"] {
        assert!(
            vocab.lines().any(|l| l.split('\t').next() == Some(piece)),
            "{piece} not in {vocab}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// score

/// A reference file of sentences long enough for 4-grams, written into `dir`.
fn reference(dir: &Path) -> (PathBuf, String) {
    let refs = "The quick brown fox jumps over the lazy dog .\n\
                A stitch in time saves nine , they say .\n\
                Rosetta translates text from one language to another .\n";
    let path = dir.join("ref.txt");
    std::fs::write(&path, refs).unwrap();
    (path, refs.to_owned())
}

#[test]
fn score_identical_hypotheses_give_bleu_100_in_json() {
    let dir = temp_dir();
    let (refs, content) = reference(dir.path());
    let hyps = dir.path().join("hyp.txt");
    std::fs::write(&hyps, &content).unwrap();
    let stdout = ok(&run(
        ["score", s(&refs), "-i", s(&hyps), "-f", "json"],
        None,
    ));
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("score prints JSON");
    assert_eq!(json["name"], "BLEU", "{stdout}");
    assert_eq!(json["score"].as_f64(), Some(100.0), "{stdout}");
    assert!(
        json["signature"].as_str().unwrap().contains("tok:13a"),
        "{stdout}"
    );
}

#[test]
fn score_two_metrics_as_text_with_two_decimals() {
    let dir = temp_dir();
    let (refs, content) = reference(dir.path());
    let hyps = dir.path().join("hyp.txt");
    std::fs::write(&hyps, &content).unwrap();
    let stdout = ok(&run(
        [
            "score",
            s(&refs),
            "-i",
            s(&hyps),
            "-m",
            "bleu",
            "chrf",
            "-f",
            "text",
            "-w",
            "2",
        ],
        None,
    ));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].trim_start().starts_with("BLEU|"), "{stdout}");
    assert!(lines[0].contains("= 100.00 "), "{stdout}");
    assert!(lines[1].trim_start().starts_with("chrF2|"), "{stdout}");
    assert!(lines[1].ends_with("= 100.00"), "{stdout}");
}

#[test]
fn score_lowercase_flag_and_stdin_hypotheses() {
    let dir = temp_dir();
    let (refs, content) = reference(dir.path());
    let upper = content.to_uppercase();
    let bleu = |extra: &[&str]| -> f64 {
        let mut args = vec!["score", s(&refs), "-b"];
        args.extend_from_slice(extra);
        let stdout = ok(&run(args, Some(upper.as_bytes())));
        stdout.trim().parse().expect("-b prints the score only")
    };
    // Hypotheses from stdin: uppercased, they do not match the mixed-case references...
    let cased = bleu(&[]);
    assert!(cased < 50.0, "cased BLEU {cased}");
    // ...but do with sacreBLEU's `-lc`.
    assert_eq!(bleu(&["-lc"]), 100.0);
}

#[test]
fn score_rejects_mismatched_line_counts() {
    let dir = temp_dir();
    let (refs, _) = reference(dir.path());
    let hyps = dir.path().join("short.txt");
    std::fs::write(&hyps, "only one line\nand two\n").unwrap();
    let stderr = fails(&run(["score", s(&refs), "-i", s(&hyps)], None));
    assert!(stderr.contains("have 2 lines"), "{stderr}");
    assert!(stderr.contains("ref.txt has 3 lines"), "{stderr}");
    // From stdin too.
    let stderr = fails(&run(["score", s(&refs)], Some(b"one\n")));
    assert!(stderr.contains("<stdin>"), "{stderr}");
    assert!(stderr.contains("have 1 lines"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------------
// train

#[test]
fn train_writes_a_complete_model_directory() {
    let model = model_dir();
    for file in ["config.toml", "model.safetensors", "metrics.jsonl"] {
        assert!(model.join(file).is_file(), "{file} missing");
    }
    let checkpoints: Vec<_> = std::fs::read_dir(model.join("checkpoints"))
        .expect("checkpoints/ missing")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        checkpoints.iter().any(|name| name.starts_with("step-")),
        "{checkpoints:?}"
    );
    // The resolved config keeps the settings given and writes out the defaults.
    let config = std::fs::read_to_string(model.join("config.toml")).unwrap();
    assert!(config.contains("embedding_size = 16"), "{config}");
    assert!(config.contains("max_steps = 60"), "{config}");
    assert!(config.contains("label_smoothing"), "{config}");
    // Every metrics line is a JSON object.
    let metrics = std::fs::read_to_string(model.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 2, "{metrics}");
    for line in metrics.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("metrics line is JSON");
        assert!(value.is_object(), "{line}");
    }
}

#[test]
fn train_refuses_to_overwrite_a_model_without_resume() {
    let model = model_dir();
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();
    let stderr = fails(&run(
        [
            "train",
            s(&task().join("config.toml")),
            "--model-dir",
            s(&model),
            "--device",
            "cpu",
        ],
        None,
    ));
    assert!(stderr.contains("--resume"), "{stderr}");
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        weights,
        "the refused run changed the model"
    );
}

// ---------------------------------------------------------------------------------------------------
// translate

#[test]
fn translate_keeps_one_output_line_per_input_line() {
    let model = model_dir();
    let long_line = "!?.,".repeat(500);
    let mut input: Vec<u8> = Vec::new();
    for line in [
        "a b c d",           // 1
        "",                  // 2
        "   \t  ",           // 3
        long_line.as_str(),  // 4
        "a b 東京 Привет c", // 5
        "zzz qqq",           // 6
    ] {
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    input.extend_from_slice(b"a \xff\xfe b\n"); // 7: invalid UTF-8
    input.extend_from_slice(b"h g f e\n"); // 8
    let output = run(
        [
            "translate",
            "--model",
            s(&model),
            "--device",
            "cpu",
            "--beam",
            "3",
        ],
        Some(&input),
    );
    let stdout = ok(&output);
    let stderr = text(&output.stderr);
    assert_eq!(stdout.matches('\n').count(), 8, "{stdout:?}");
    let lines: Vec<&str> = stdout.split('\n').collect();
    assert_eq!(lines[1], "", "empty input line");
    assert_eq!(lines[2], "", "whitespace-only input line");
    assert!(
        stderr.contains("input line 4 is longer than the model's"),
        "no truncation warning: {stderr}"
    );
    assert!(
        stderr.contains("input line 7 is not valid UTF-8"),
        "no UTF-8 warning: {stderr}"
    );
    // The model has learnt something of its (tiny) vocabulary: it answers in symbols of the task.
    assert!(
        lines[0]
            .split_whitespace()
            .all(|w| SYMBOLS.contains(&w) || w == "<unk>"),
        "{:?}",
        lines[0]
    );
}

/// `translate -i FILE.gz` read the compressed bytes as text (a warning per line, garbage out,
/// exit 0); a gzip input now translates as its plain text does, as `evaluate --src` always did.
#[test]
fn translate_reads_a_gzip_input_like_its_plain_text() {
    use std::io::Write;
    let model = model_dir();
    let dir = tempfile::tempdir().unwrap();
    let lines = "a b c d\nh g f e\n\nzzz qqq\n";
    let plain = dir.path().join("in.txt");
    std::fs::write(&plain, lines).unwrap();
    let gz = dir.path().join("in.txt.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(lines.as_bytes()).unwrap();
    std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
    let translate = |input: &Path| {
        let output = run(
            [
                "translate",
                "--model",
                s(&model),
                "--device",
                "cpu",
                "-i",
                s(input),
            ],
            None,
        );
        (ok(&output), text(&output.stderr))
    };
    let (from_plain, _) = translate(&plain);
    let (from_gz, warnings) = translate(&gz);
    assert_eq!(from_gz, from_plain);
    assert_eq!(from_gz.matches('\n').count(), 4);
    assert!(!warnings.contains("not valid UTF-8"), "{warnings}");
}

/// `--quantize int8` translates every line (in the task's symbols), names its kernel, reports
/// `--timing`, and honours `--max-sentences-per-batch`.
#[test]
fn translate_in_int8_with_timing() {
    let model = model_dir();
    let input = b"a b c d\nh g f e\n\ne f\n";
    let output = run(
        [
            "translate",
            "--model",
            s(&model),
            "--device",
            "cpu",
            "--quantize",
            "int8",
            "--timing",
            "--max-sentences-per-batch",
            "1",
        ],
        Some(input),
    );
    let stdout = ok(&output);
    let stderr = text(&output.stderr);
    assert_eq!(stdout.matches('\n').count(), 4, "{stdout:?}");
    assert!(stderr.contains("int8 search ("), "{stderr}");
    assert!(stderr.contains("timing: 4 lines, "), "{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first
            .split_whitespace()
            .all(|w| SYMBOLS.contains(&w) || w == "<unk>"),
        "{first:?}"
    );
}

#[test]
fn translate_n_best_lists_are_sorted() {
    let model = model_dir();
    let input = "a b c\nd e f g\nb a\n";
    let stdout = ok(&run(
        [
            "translate",
            "--model",
            s(&model),
            "--device",
            "cpu",
            "--beam",
            "3",
            "--n-best",
            "2",
        ],
        Some(input.as_bytes()),
    ));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    for (sentence, pair) in lines.chunks(2).enumerate() {
        let mut scores = Vec::new();
        for line in pair {
            let fields: Vec<&str> = line.split(" ||| ").collect();
            assert_eq!(fields.len(), 3, "{line:?}");
            assert_eq!(fields[0].parse::<usize>().unwrap(), sentence, "{line:?}");
            let score: f64 = fields[2].parse().expect("a numeric score");
            assert!(score.is_finite(), "{line:?}");
            scores.push(score);
        }
        assert!(scores[0] >= scores[1], "n-best not sorted: {pair:?}");
        assert_ne!(pair[0], pair[1], "duplicate candidates: {pair:?}");
    }
}

#[test]
fn translate_alignments_are_in_pharaoh_format() {
    let model = model_dir();
    let input = ["a b c d", "h g", "b c d e f"];
    let stdout = ok(&run(
        [
            "translate",
            "--model",
            s(&model),
            "--device",
            "cpu",
            "--beam",
            "3",
            "--alignments",
        ],
        Some(format!("{}\n", input.join("\n")).as_bytes()),
    ));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), input.len(), "{stdout}");
    for (line, source) in lines.iter().zip(input) {
        let (translation, alignment) = line
            .split_once(" ||| ")
            .unwrap_or_else(|| panic!("no alignment in {line:?}"));
        let source_len = source.split_whitespace().count();
        let target_len = translation.split_whitespace().count();
        if target_len > 0 {
            assert!(!alignment.is_empty(), "{line:?}");
        }
        for pair in alignment.split_whitespace() {
            let (i, j) = pair
                .split_once('-')
                .unwrap_or_else(|| panic!("bad pair {pair:?} in {line:?}"));
            let i: usize = i.parse().unwrap();
            let j: usize = j.parse().unwrap();
            assert!(i < source_len, "source index out of range in {line:?}");
            assert!(j < target_len, "target index out of range in {line:?}");
        }
    }
}

#[test]
fn translate_exits_cleanly_when_the_reader_goes_away() {
    let model = model_dir();
    let dir = temp_dir();
    let input = dir.path().join("many.src");
    // 3000 lines of about 20 symbols; with 4 candidates per line the output is far larger than a pipe
    // buffer, so rosetta is still writing when the reader goes away.
    let (pairs, _) = reversal_pairs(15_000, 7);
    let src: Vec<String> = pairs.chunks(5).map(|chunk| chunk.join(" ")).collect();
    write_lines(&input, &src);
    let mut child = rosetta()
        .args([
            "translate",
            "--model",
            s(&model),
            "--device",
            "cpu",
            "--beam",
            "4",
            "--n-best",
            "4",
            "--input",
            s(&input),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(first.ends_with('\n'), "{first:?}");
    // The reader (and with it the pipe) is gone: like `rosetta translate ... | head -n 1`.
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "status {} after a closed pipe: {stderr}",
        output.status
    );
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn translate_reports_a_missing_model() {
    let stderr = fails(&run(
        [
            "translate",
            "--model",
            "/nonexistent/rosetta-model",
            "--device",
            "cpu",
        ],
        Some(b"a b\n"),
    ));
    assert!(
        stderr.contains("/nonexistent/rosetta-model") || stderr.contains("config.toml"),
        "{stderr}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn translate_on_cuda_without_support_is_a_clear_error() {
    let stderr = fails(&run(
        ["translate", "--model", s(&model_dir()), "--device", "cuda"],
        Some(b"a b\n"),
    ));
    assert!(stderr.contains("CUDA"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------------
// evaluate

#[test]
fn evaluate_prints_json_and_writes_the_hypotheses() {
    let model = model_dir();
    let src = task().join("data/test.src");
    let reference = task().join("data/test.tgt");
    let stdout = ok(&run(
        [
            "evaluate",
            "--model",
            s(&model),
            "--src",
            s(&src),
            "--ref",
            s(&reference),
            "--json",
            "--device",
            "cpu",
            "--beam",
            "3",
        ],
        None,
    ));
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("evaluate --json");
    for key in ["bleu", "bleu_lc", "chrf", "ppl", "sentences_per_sec"] {
        let value = json[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {stdout}"));
        assert!(value.is_finite() && value >= 0.0, "{key} = {value}");
    }
    for key in ["bleu", "bleu_lc", "chrf"] {
        assert!(json[key].as_f64().unwrap() <= 100.0, "{stdout}");
    }
    assert!(
        json["bleu_lc"].as_f64() >= json["bleu"].as_f64(),
        "{stdout}"
    );
    assert!(json["ppl"].as_f64().unwrap() >= 1.0, "{stdout}");
    assert!(
        json["sentences_per_sec"].as_f64().unwrap() > 0.0,
        "{stdout}"
    );
    assert_eq!(json["sentences"], 20);
    let hyp_path = PathBuf::from(json["hypotheses"].as_str().expect("hypotheses path"));
    let hyps = std::fs::read_to_string(&hyp_path).expect("hypothesis file");
    let src_lines = std::fs::read_to_string(&src).unwrap().lines().count();
    assert_eq!(hyps.matches('\n').count(), src_lines);
}

#[test]
fn evaluate_decodes_with_an_ensemble_of_models() {
    let model = model_dir();
    let output = run(
        [
            "evaluate",
            "--model",
            s(&model),
            s(&model),
            "--src",
            s(&task().join("data/test.src")),
            "--ref",
            s(&task().join("data/test.tgt")),
            "--json",
            "--device",
            "cpu",
        ],
        None,
    );
    let stdout = ok(&output);
    assert!(text(&output.stderr).contains("ensemble of 2 models"));
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("evaluate --json");
    assert_eq!(json["model"].as_array().map(Vec::len), Some(2), "{stdout}");
    let hyps = json["hypotheses"].as_str().expect("hypotheses path");
    assert!(hyps.ends_with("test.src.ensemble2.hyp"), "{hyps}");
    assert!(
        json["bleu"].as_f64().is_some_and(f64::is_finite),
        "{stdout}"
    );
}

#[test]
fn evaluate_rejects_references_of_another_length() {
    let dir = temp_dir();
    let reference = dir.path().join("short.tgt");
    std::fs::write(&reference, "a b\n").unwrap();
    let stderr = fails(&run(
        [
            "evaluate",
            "--model",
            s(&model_dir()),
            "--src",
            s(&task().join("data/test.src")),
            "--ref",
            s(&reference),
            "--device",
            "cpu",
        ],
        None,
    ));
    assert!(stderr.contains("has 20 lines"), "{stderr}");
    assert!(stderr.contains("short.tgt has 1"), "{stderr}");
}

#[test]
fn translate_writes_attention_heatmaps_for_non_empty_lines() {
    let model = model_dir();
    let out = temp_dir();
    let png_dir = out.path().join("png");
    let stdout = ok(&run(
        [
            "translate",
            "--model",
            s(&model),
            "--device",
            "cpu",
            "--attention-png",
            s(&png_dir),
        ],
        Some(b"a b c\n\nh g f e\n"),
    ));
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    let mut files: Vec<String> = std::fs::read_dir(&png_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["000001.png", "000003.png"]);
    let bytes = std::fs::read(png_dir.join("000001.png")).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

// ---------------------------------------------------------------------------------------------------
// average

#[test]
fn average_writes_a_model_that_translates_and_never_overwrites() {
    let model = model_dir();
    let root = temp_dir();
    let out = root.path().join("avg");
    let output = run(
        [
            "average",
            "--model",
            s(&model),
            "--last",
            "2",
            "--out",
            s(&out),
        ],
        None,
    );
    ok(&output);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("averaged 2 checkpoint(s)"), "{stderr}");
    assert!(stderr.contains("(steps 30, 60)"), "{stderr}");
    let record = std::fs::read_to_string(out.join("average.json")).unwrap();
    assert!(record.contains("30") && record.contains("60"), "{record}");
    let stdout = ok(&run(
        ["translate", "--model", s(&out), "--device", "cpu"],
        Some(b"a b c\n\nd e\n"),
    ));
    assert_eq!(stdout.lines().count(), 3, "{stdout}");

    // The same output directory again: refused, and the model there is kept.
    let err = fails(&run(
        ["average", "--model", s(&model), "--out", s(&out)],
        None,
    ));
    assert!(err.contains("not empty"), "{err}");
    assert!(out.join("model.safetensors").is_file());
    let err = fails(&run(
        [
            "average",
            "--model",
            s(&model),
            "--steps",
            "30,45",
            "--out",
            s(&root.path().join("x")),
        ],
        None,
    ));
    assert!(err.contains("no checkpoint of step 45"), "{err}");
}

// ---------------------------------------------------------------------------------------------------
// sweep

/// A sweep directory beside the shared task, with a sweep file over the task's config.
fn write_sweep(root: &Path, body: &str) -> PathBuf {
    let path = root.join("sweep.toml");
    let base = task().join("config.toml");
    std::fs::write(&path, format!("base = '{}'\n{body}", s(&base))).unwrap();
    path
}

/// The report of a sweep directory as JSON.
fn sweep_report(dir: &Path) -> serde_json::Value {
    let stdout = ok(&run(["sweep", "report", s(dir), "--format", "json"], None));
    serde_json::from_str(&stdout).unwrap()
}

/// A safetensors file as (header, tensor bytes): burn writes its metadata map in no fixed order,
/// so equal weights may differ in the file's bytes.
fn safetensors_parts(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

/// Three trials of 300 updates: long enough to be killed in the middle of one.
const KILLABLE: &str = "[budget]\nmax_steps = 300\n[space]\nmodel.encoder_hidden = [8, 16, 24]\n";

#[test]
fn sweep_killed_with_sigkill_continues_without_training_anything_twice() {
    let root = temp_dir();
    let file = write_sweep(root.path(), KILLABLE);
    let dir = root.path().join("sweep");
    let mut child = rosetta()
        .args(["sweep", s(&file), "--dir", s(&dir), "--device", "cpu"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the second trial has written a checkpoint (and is still training).
    let checkpoints = dir.join("trials/0001/checkpoints");
    let clock = std::time::Instant::now();
    loop {
        let written = std::fs::read_dir(&checkpoints)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("step-"))
            })
            .unwrap_or(false);
        if written {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before it was killed"
        );
        assert!(
            clock.elapsed().as_secs() < 300,
            "no checkpoint of trial 1 in 5 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = sweep_report(&dir);
    let status = |r: &serde_json::Value, id: u64| {
        let t = r["trials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()
            .clone();
        (
            t["status"].as_str().unwrap().to_owned(),
            t["attempts"].as_u64().unwrap(),
            t,
        )
    };
    assert_eq!(status(&before, 0).0, "complete");
    assert_eq!(status(&before, 1).0, "running", "orphaned by the kill");
    let finished_before = status(&before, 0).2["finished"].clone();

    // The same command again: trial 0 is kept, trial 1 resumes from its checkpoint, 2 runs.
    let stdout = ok(&run(
        ["sweep", s(&file), "--dir", s(&dir), "--device", "cpu"],
        None,
    ));
    assert!(stdout.contains("| rank |"), "{stdout}");
    let after = sweep_report(&dir);
    for id in 0..3 {
        assert_eq!(status(&after, id).0, "complete", "trial {id}");
    }
    assert_eq!(status(&after, 0).1, 1, "trial 0 was not trained twice");
    assert_eq!(status(&after, 0).2["finished"], finished_before);
    assert_eq!(status(&after, 1).1, 2, "trial 1 was resumed");
    assert_eq!(status(&after, 2).1, 1);

    // Resuming is exact: the interrupted trial ends with the weights of an uninterrupted one.
    let clean = root.path().join("clean");
    ok(&run(
        ["sweep", s(&file), "--dir", s(&clean), "--device", "cpu"],
        None,
    ));
    for id in ["0001", "0002"] {
        let a = safetensors_parts(&dir.join("trials").join(id).join("model.safetensors"));
        let b = safetensors_parts(&clean.join("trials").join(id).join("model.safetensors"));
        assert!(a == b, "trial {id} differs from an uninterrupted run");
    }
    // Every trial is an ordinary model directory.
    let out = ok(&run(
        [
            "translate",
            "--model",
            s(&dir.join("trials/0001")),
            "--device",
            "cpu",
        ],
        Some(b"a b c\n"),
    ));
    assert_eq!(out.lines().count(), 1);
}

#[test]
fn sweep_with_two_jobs_runs_every_trial_once_and_reports_plots() {
    let root = temp_dir();
    let file = write_sweep(
        root.path(),
        "method = \"random\"\ntrials = 5\nseed = 1\n[budget]\nmax_steps = 60\n\
         [pruner]\nkind = \"median\"\nmin_steps = 30\nstartup_trials = 1\n\
         [space]\ntrain.learning_rate = { log_uniform = [1e-3, 3e-2] }\n\
         model.cell = [\"gru\", \"lstm\"]\n",
    );
    let dir = root.path().join("sweep");
    let stdout = ok(&run(
        [
            "sweep",
            s(&file),
            "--dir",
            s(&dir),
            "--jobs",
            "2",
            "--device",
            "cpu",
        ],
        None,
    ));
    assert!(stdout.contains("| rank |"), "{stdout}");
    let report = sweep_report(&dir);
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 5);
    for t in trials {
        let status = t["status"].as_str().unwrap();
        assert!(status == "complete" || status == "pruned", "{t}");
        assert_eq!(t["attempts"], 1, "{t}");
    }
    let workers: BTreeSet<&str> = trials
        .iter()
        .map(|t| t["worker"].as_str().unwrap())
        .collect();
    assert!(
        !workers
            .iter()
            .any(|w| w.contains(&format!("/{}/", std::process::id())))
    );
    for log in ["worker-0.log", "worker-1.log"] {
        assert!(dir.join("logs").join(log).is_file(), "{log}");
    }
    let out = dir.join("report");
    for file in ["trials.md", "trials.csv", "trials.json", "best.toml"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    // The best config trains as it is.
    let best = std::fs::read_to_string(out.join("best.toml")).unwrap();
    assert!(
        best.contains("[model]") && best.contains("max_steps = 60"),
        "{best}"
    );
    // Plots need a font; the machine may have none, then they are skipped with a note.
    let has_png = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "png"));
    let font = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"]
        .iter()
        .any(|f| Path::new(f).exists());
    if font {
        assert!(has_png);
    } else {
        eprintln!("SKIPPED: plot check (no DejaVuSans.ttf on this machine)");
    }
}

#[test]
fn sweep_of_search_settings_decodes_a_trained_model_without_training() {
    let root = temp_dir();
    let file = root.path().join("decode.toml");
    std::fs::write(
        &file,
        format!(
            "model = '{}'\n[objective]\nmetric = \"chrf\"\n[space]\nsearch.beam = [1, 3]\n\
             search.length_penalty = [0.6, 1.0]\n",
            s(&model_dir())
        ),
    )
    .unwrap();
    let dir = root.path().join("sweep");
    ok(&run(
        ["sweep", s(&file), "--dir", s(&dir), "--device", "cpu"],
        None,
    ));
    let report = sweep_report(&dir);
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    for t in trials {
        assert_eq!(t["status"], "complete", "{t}");
        let id = t["id"].as_u64().unwrap();
        let hyps = std::fs::read_to_string(dir.join(format!("trials/{id:04}/hyps.txt"))).unwrap();
        assert_eq!(hyps.lines().count(), 30, "one line per validation sentence");
    }
    let best = std::fs::read_to_string(dir.join("report/best.toml")).unwrap();
    assert!(
        best.contains("[search]") && best.contains("beam ="),
        "{best}"
    );
}

#[test]
fn sweep_with_a_bad_key_fails_before_training_anything() {
    let root = temp_dir();
    let file = write_sweep(root.path(), "[space]\nmodel.hiden_size = [8, 16]\n");
    let dir = root.path().join("sweep");
    let err = fails(&run(["sweep", s(&file), "--dir", s(&dir)], None));
    assert!(
        err.contains("hiden_size") && err.contains("trial 0"),
        "{err}"
    );
    assert!(!dir.join("trials").exists());
    // Another sweep cannot take over the directory of this one.
    let file = write_sweep(
        root.path(),
        "[budget]\nmax_steps = 30\n[space]\nmodel.encoder_hidden = [8]\n",
    );
    ok(&run(
        ["sweep", s(&file), "--dir", s(&dir), "--device", "cpu"],
        None,
    ));
    let other = write_sweep(
        root.path(),
        "[budget]\nmax_steps = 30\n[space]\nmodel.encoder_hidden = [12]\n",
    );
    let err = fails(&run(
        ["sweep", s(&other), "--dir", s(&dir), "--device", "cpu"],
        None,
    ));
    assert!(err.contains("another sweep"), "{err}");
    let err = fails(&run(
        ["sweep", "report", s(&root.path().join("nothing"))],
        None,
    ));
    assert!(err.contains("no sweep study here"), "{err}");
}

/// `(step, loss)` of every training update in a model directory's metrics log.
fn logged_losses(dir: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].to_string()))
        .collect()
}

#[test]
fn train_killed_with_sigkill_three_times_resumes_to_the_same_model() {
    let root = temp_dir();
    let config = root.path().join("config.toml");
    let text = std::fs::read_to_string(task().join("config.toml"))
        .unwrap()
        .replace("max_steps = 60", "max_steps = 200");
    std::fs::write(&config, text).unwrap();
    let train = |dir: &Path| {
        rosetta()
            .args([
                "train",
                s(&config),
                "--model-dir",
                s(dir),
                "--resume",
                "--device",
                "cpu",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let straight = root.path().join("straight");
    assert!(train(&straight).wait().unwrap().success());

    // Killed after update 5 (before the first checkpoint), 45 (between checkpoints) and 125.
    let killed = root.path().join("killed");
    for step in [5u64, 45, 125] {
        let mut child = train(&killed);
        let clock = std::time::Instant::now();
        while logged_losses(&killed).last().is_none_or(|l| l.0 < step) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "training ended before step {step}"
            );
            assert!(
                clock.elapsed().as_secs() < 300,
                "no step {step} in 5 minutes"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(
        train(&killed).wait().unwrap().success(),
        "the last --resume failed"
    );
    assert_eq!(logged_losses(&killed), logged_losses(&straight));
    assert_eq!(logged_losses(&straight).len(), 200);
    assert!(
        safetensors_parts(&killed.join("model.safetensors"))
            == safetensors_parts(&straight.join("model.safetensors")),
        "the weights differ from an uninterrupted run"
    );
}

// ---------------------------------------------------------------------------------------------------
// Hostile input lines (issue 26 §5; `scripts/hostile.sh` is the 100,000-line bench)

/// `n` hostile input lines (seeded): empty and whitespace-only lines, 10,000-character lines (spaced
/// and unbroken), control characters, invalid UTF-8, right-to-left text with bidi controls,
/// combining marks, emoji and CRLF endings. Returns the bytes (the last line without its newline),
/// the numbers of lines with invalid UTF-8, and the indices of empty lines.
fn hostile_lines(n: usize, seed: u64) -> (Vec<u8>, usize, Vec<usize>) {
    let mut state = seed;
    let mut next = move |k: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize % k
    };
    fn symbols(chars: usize, next: &mut dyn FnMut(usize) -> usize, spaced: bool) -> String {
        let mut out = String::with_capacity(chars);
        while out.len() < chars {
            if spaced && !out.is_empty() && next(3) == 0 {
                out.push(' ');
            }
            out.push_str(SYMBOLS[next(SYMBOLS.len())]);
        }
        out
    }
    let controls = [
        "\0", "\x1b", "\x7f", "\x0b", "\x0c", "\r", "\u{85}", "\u{2028}", "\u{2029}", "\t",
    ];
    let invalid: [&[u8]; 7] = [
        b"\x80",
        b"\xc3",
        b"\xe6\x9d",
        b"\xf0\x9f\x98",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\xff\xfe",
    ];
    let rtl = [
        "\u{202e}مرحبا بالعالم\u{202c}",
        "\u{200f}שלום עולם",
        "\u{2067}a b\u{2069}",
    ];
    let (mut bytes, mut bad, mut empty) = (Vec::new(), 0, Vec::new());
    for i in 0..n {
        let line: Vec<u8> = match next(12) {
            0 => {
                empty.push(i);
                Vec::new()
            }
            1 => " \t\x0b\x0c\u{3000}\u{a0}".as_bytes().to_vec(),
            // Long lines are rarer than in the bench, to keep the test fast.
            2 if next(4) == 0 => symbols(10_000, &mut next, true).into_bytes(),
            3 if next(4) == 0 => symbols(10_000, &mut next, false).into_bytes(),
            4 => (0..8)
                .map(|_| format!("{} {}", SYMBOLS[next(8)], controls[next(controls.len())]))
                .collect::<String>()
                .into_bytes(),
            5 => {
                bad += 1;
                let mut line = b"a b ".to_vec();
                line.extend_from_slice(invalid[next(invalid.len())]);
                line.extend_from_slice(b" c");
                line
            }
            6 => format!("{} {}", rtl[next(3)], rtl[next(3)]).into_bytes(),
            7 => "a\u{301}\u{302}\u{303}\u{304} b\u{20dd}\u{20de}"
                .as_bytes()
                .to_vec(),
            8 => "😀 👩‍👩‍👧 🇫🇷 東京 \u{feff} \u{10fffd}".as_bytes().to_vec(),
            9 => b"a b c\r".to_vec(),
            _ => symbols(12, &mut next, true).into_bytes(),
        };
        bytes.extend_from_slice(&line);
        if i + 1 < n {
            bytes.push(b'\n');
        }
    }
    (bytes, bad, empty)
}

#[test]
fn translate_gives_one_line_per_hostile_input_line_and_counts_its_warnings() {
    let (input, invalid, empty) = hostile_lines(2000, 26);
    assert!(invalid > 5 && empty.len() > 5, "{invalid} {}", empty.len());
    let dir = temp_dir();
    let path = dir.path().join("hostile.src");
    std::fs::write(&path, &input).unwrap();
    let output = run(
        [
            "translate",
            "--model",
            s(&model_dir()),
            "--device",
            "cpu",
            "--beam",
            "2",
            // Several chunks, so line numbers and counts run across them.
            "--chunk-lines",
            "300",
            "--input",
            s(&path),
        ],
        None,
    );
    let stdout = ok(&output);
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The last input line has no newline; every output line has one.
    assert_eq!(stdout.matches('\n').count(), 2000);
    let lines: Vec<&str> = stdout.split('\n').collect();
    for &i in &empty {
        assert_eq!(lines[i], "", "line {} was empty", i + 1);
    }
    // Counted, not listed line by line: five listed, then one total.
    assert!(
        stderr.contains(&format!(
            "warning: {invalid} of 2000 input lines were not valid UTF-8"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("is not valid UTF-8").count(), 5, "{stderr}");
    assert!(
        stderr.contains("input lines were longer than the model's maximum source length"),
        "{stderr}"
    );
    assert!(stderr.lines().count() < 30, "{stderr}");
}

#[test]
fn translate_keeps_the_old_output_file_until_the_new_one_is_complete() {
    let model = model_dir();
    let dir = temp_dir();
    let out = dir.path().join("out.txt");
    std::fs::write(&out, "previous\n").unwrap();
    // Reading fails (a directory as input, refused when it is opened, as training data is): the
    // old file is intact and no temporary is left beside it.
    let stderr = fails(&run(
        [
            "translate",
            "--model",
            s(&model),
            "--device",
            "cpu",
            "-i",
            s(dir.path()),
            "-o",
            s(&out),
        ],
        None,
    ));
    assert!(stderr.contains("is a directory, not a file"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous\n");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["out.txt"]);
    // The input as its own output: read whole before the file is replaced.
    std::fs::write(&out, "a b c\n\nd e\n").unwrap();
    ok(&run(
        [
            "translate",
            "--model",
            s(&model),
            "--device",
            "cpu",
            "-i",
            s(&out),
            "-o",
            s(&out),
        ],
        None,
    ));
    let translated = std::fs::read_to_string(&out).unwrap();
    assert_eq!(translated.matches('\n').count(), 3, "{translated:?}");
    assert_ne!(translated, "a b c\n\nd e\n");
    // Missing parent directories are created, as for `evaluate -o` and `train --model-dir`.
    let nested = dir.path().join("new/sub/out.txt");
    ok(&run(
        [
            "translate",
            "--model",
            s(&model),
            "--device",
            "cpu",
            "-o",
            s(&nested),
        ],
        Some(b"a b\n"),
    ));
    assert_eq!(std::fs::read_to_string(&nested).unwrap().lines().count(), 1);
    // A parent that cannot be created (a file is in the way) is named.
    let blocked = dir.path().join("out.txt/sub/x.txt");
    let stderr = fails(&run(
        [
            "translate",
            "--model",
            s(&model),
            "--device",
            "cpu",
            "-o",
            s(&blocked),
        ],
        Some(b"a b\n"),
    ));
    assert!(
        stderr.contains(&format!(
            "cannot create the directory {}",
            s(&dir.path().join("out.txt/sub"))
        )),
        "{stderr}"
    );
    // A directory as the output file.
    let stderr = fails(&run(
        [
            "translate",
            "--model",
            s(&model),
            "--device",
            "cpu",
            "-o",
            s(dir.path()),
        ],
        Some(b"a b\n"),
    ));
    assert!(stderr.contains("is a directory"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------------
// Full disks and read-only directories (issue 26 §3)

/// A small tmpfs, unmounted when dropped (needs root; see `crates/rosetta/tests/checkpoint.rs`).
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = temp_dir();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("mount -t tmpfs failed (needs root)".into());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem to the last byte; returns the filler file.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
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

    /// Remounts it read-only.
    fn read_only(&self) -> Result<(), String> {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err("mount -o remount,ro failed".into())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// The Marian fixture of the rosetta crate's tests.
fn marian_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rosetta/tests/fixtures/marian-tiny")
}

/// The files under `dir` (recursively, relative names), for "nothing left behind" checks.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out
}

/// Every command that writes outputs (hypotheses, model directories), run onto `root` where
/// writing fails with `reason`: each must exit 1 naming the path and the reason, keep the earlier
/// files `previous.txt` and `previous.hyp`, and leave no temporary or half-written model behind.
fn writes_fail_cleanly(root: &Path, reason: &str) {
    let model = model_dir();
    let before = files_under(root);
    let check = |what: &str, output: Output, path: &Path| {
        let stderr = fails(&output);
        assert!(
            stderr.contains(s(path)) && stderr.contains(reason),
            "{what}: the error should name {} and say {reason:?}: {stderr}",
            path.display()
        );
    };
    let translate_to = |out: &Path| {
        run(
            [
                "translate",
                "--model",
                s(&model),
                "--device",
                "cpu",
                "-o",
                s(out),
            ],
            Some(b"a b c\nd e f\n"),
        )
    };
    let out = root.join("previous.txt");
    check("translate -o FILE", translate_to(&out), &out);
    let out = root.join("new.txt");
    check("translate -o NEW", translate_to(&out), &out);
    let out = root.join("missing/dir/out.txt");
    check("translate -o MISSING/DIR/FILE", translate_to(&out), &out);
    let out = root.join("previous.hyp");
    check(
        "evaluate -o",
        run(
            [
                "evaluate",
                "--model",
                s(&model),
                "--src",
                s(&task().join("data/test.src")),
                "--ref",
                s(&task().join("data/test.tgt")),
                "--device",
                "cpu",
                "-o",
                s(&out),
            ],
            None,
        ),
        &out,
    );
    let out = root.join("trained");
    check(
        "train --model-dir",
        run(
            [
                "train",
                s(&task().join("config.toml")),
                "--model-dir",
                s(&out),
                "--device",
                "cpu",
            ],
            None,
        ),
        &out,
    );
    let out = root.join("averaged");
    check(
        "average -o",
        run(
            [
                "average",
                "--model",
                s(&model),
                "--last",
                "2",
                "-o",
                s(&out),
            ],
            None,
        ),
        &out,
    );
    let out = root.join("imported");
    check(
        "import marian -o",
        run(
            ["import", "marian", s(&marian_fixture()), "-o", s(&out)],
            None,
        ),
        &out,
    );
    let out = root.join("exported");
    check(
        "export marian -o",
        run(["export", "marian", s(&imported()), "-o", s(&out)], None),
        &out,
    );
    assert_eq!(
        std::fs::read_to_string(root.join("previous.txt")).unwrap(),
        "previous\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("previous.hyp")).unwrap(),
        "previous\n"
    );
    // Only a failed `train` leaves a (resumable, model-less) directory behind.
    let after: BTreeSet<String> = files_under(root)
        .into_iter()
        .filter(|f| !f.starts_with("trained/"))
        .collect();
    assert_eq!(after, before, "files left behind");
    assert!(!root.join("trained/model.safetensors").exists());
}

/// An imported copy of the Marian fixture (once per test process).
fn imported() -> PathBuf {
    static IMPORTED: OnceLock<TempDir> = OnceLock::new();
    IMPORTED
        .get_or_init(|| {
            let dir = temp_dir();
            ok(&run(
                [
                    "import",
                    "marian",
                    s(&marian_fixture()),
                    "-o",
                    s(&dir.path().join("m")),
                ],
                None,
            ));
            dir
        })
        .path()
        .join("m")
}

#[test]
fn writes_onto_a_full_disk_are_clear_errors_that_keep_earlier_files() {
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: full-disk test: {why}");
            return;
        }
    };
    for name in ["previous.txt", "previous.hyp"] {
        std::fs::write(fs.path().join(name), "previous\n").unwrap();
    }
    let filler = fs.fill();
    writes_fail_cleanly(fs.path(), "No space left on device");
    // Once there is room again, the same commands write to the same places.
    std::fs::remove_file(filler).unwrap();
    ok(&run(
        [
            "average",
            "--model",
            s(&model_dir()),
            "--last",
            "2",
            "-o",
            s(&fs.path().join("averaged")),
        ],
        None,
    ));
    ok(&run(
        [
            "translate",
            "--model",
            s(&fs.path().join("averaged")),
            "--device",
            "cpu",
            "-o",
            s(&fs.path().join("previous.txt")),
        ],
        Some(b"a b c\n\n"),
    ));
    assert_eq!(
        std::fs::read_to_string(fs.path().join("previous.txt"))
            .unwrap()
            .matches('\n')
            .count(),
        2
    );
}

#[test]
fn writes_into_a_read_only_directory_are_clear_errors_that_keep_earlier_files() {
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(why) => {
            // Permission bits would do without root, but root (who can mount) ignores them.
            eprintln!("SKIPPED: read-only directory test: {why}");
            return;
        }
    };
    for name in ["previous.txt", "previous.hyp"] {
        std::fs::write(fs.path().join(name), "previous\n").unwrap();
    }
    if let Err(why) = fs.read_only() {
        eprintln!("SKIPPED: read-only directory test: {why}");
        return;
    }
    writes_fail_cleanly(fs.path(), "Read-only file system");
}
