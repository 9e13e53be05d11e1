//! Rosetta versus PyTorch on the same model, in one run: the reference attention GRU (default), or
//! with `ROSETTA_BENCH_MODEL=transformer` a pre-norm Transformer (3+3 layers, d_model 256, 4 heads,
//! feed-forward 1024, relu, one shared embedding table tied to the output, sinusoidal positions, no
//! dropout; same vocabulary, batch and modes), whose PyTorch side is `benches/torch_transformer.py`
//! (decoding with a key/value cache as fairseq does).
//!
//! The model is the shape of `../shared/bench/torch_attention_gru.py`: BiGRU 2×256 encoder (one
//! layer), GRU 512 decoder, Bahdanau attention 512, mean bridge, `[state; context]` projected straight
//! to a vocabulary of 8,000, no dropout; batch 64 × 25, Adam 1e-3. Both sides run three modes, each in
//! a fresh process so that peak RSS is the mode's own: a training step (forward, backward, Adam), a
//! greedy decode of the batch, and a beam-5 decode. End-of-sentence is never chosen on either side, so
//! every decode runs exactly 25 steps for every sentence. Each mode runs for several rounds, the two
//! sides taking turns to go first; the speed ratio reported is the median of the rounds' ratios, with
//! their range, so one noisy minute does not decide it.
//!
//! ```sh
//! cargo bench -p rosetta --bench vs_pytorch
//! ROSETTA_PYTHON=/path/to/venv/bin/python3 ROSETTA_BENCH_THREADS=2 cargo bench -p rosetta --bench vs_pytorch
//! ROSETTA_BENCH_ROUNDS=5 cargo bench -p rosetta --bench vs_pytorch   # more rounds (default 3)
//! # on an NVIDIA GPU (both sides): build with --features cuda, then ROSETTA_BENCH_DEVICE=cuda
//! ```
//!
//! The PyTorch side is `benches/torch_attention_gru.py` (needs `torch`); without it the Rosetta column is
//! still printed. This is a benchmark, not a test: CI does not run it.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rosetta::device::{DeviceChoice, Job, resolve, run_on};
use rosetta::model::architecture::{ModelConfig, Seq2Seq, TrainableJob, dispatch_trainable};
use rosetta::model::attention::AttentionKind;
use rosetta::model::bridge::BridgeKind;
use rosetta::model::cell::CellKind;
use rosetta::model::embedding::EmbeddingInit;
use rosetta::model::input::SourceBatch;
use rosetta::model::seq2seq::RnnConfig;
use rosetta::model::transformer::TransformerConfig;
use rosetta::model::transformer::config::{Activation, NormPosition, PositionKind};
use rosetta::search::beam::{BeamConfig, beam_search};
use rosetta::search::greedy::greedy;
use rosetta::search::scorer::{Scorer, Step};
use rosetta::train::gradients::{TeacherForced, batch_gradients, parts_for};
use rosetta::train::optim::{AnyOptimizer, OptimizerKind, OptimizerSettings, grad_norm};
use rosetta::train::trainer::count_parameters;
use rosetta_text::vocab::EOS;
use std::process::Command;
use std::time::Instant;

const BATCH: usize = 64;
const SRC_LEN: usize = 25;
const TGT_LEN: usize = 25;
const VOCAB: usize = 8000;
const BEAM: usize = 5;

/// The reference model's shape.
fn reference_config() -> RnnConfig {
    RnnConfig {
        cell: CellKind::Gru,
        embedding_size: 256,
        encoder_hidden: 256,
        encoder_layers: 1,
        bidirectional: true,
        decoder_hidden: 512,
        decoder_layers: 1,
        bridge: BridgeKind::Mean,
        attention: AttentionKind::Bahdanau,
        attention_size: 512,
        input_feeding: false,
        embedding_to_output: false,
        attentional_layer: false,
        tie_embeddings: false,
        dropout: 0.0,
        embedding_init: EmbeddingInit::Normal,
    }
}

/// The Transformer's shape (`benches/torch_transformer.py`).
fn transformer_config() -> TransformerConfig {
    TransformerConfig {
        encoder_layers: 3,
        decoder_layers: 3,
        d_model: 256,
        heads: 4,
        ffn_size: 1024,
        activation: Activation::Relu,
        norm: NormPosition::Pre,
        positions: PositionKind::Sinusoidal,
        max_positions: 1024,
        scale_embeddings: true,
        share_embeddings: true,
        tie_output: true,
        output_bias: false,
        dropout: 0.0,
        attention_dropout: 0.0,
        activation_dropout: 0.0,
        layer_norm_eps: 1e-5,
        alignment_layer: -1,
    }
}

/// The model `ROSETTA_BENCH_MODEL` names: `rnn` (default) or `transformer`.
fn bench_model() -> String {
    std::env::var("ROSETTA_BENCH_MODEL").unwrap_or_else(|_| "rnn".into())
}

fn bench_config(model: &str) -> ModelConfig {
    match model {
        "transformer" => ModelConfig::Transformer(transformer_config()),
        _ => ModelConfig::Rnn(reference_config()),
    }
}

/// Seeded token ids in `[4, VOCAB)` (never a special token), `[rows, cols]`.
fn random_ids(rows: usize, cols: usize, seed: u64) -> Vec<i32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols)
        .map(|_| rng.random_range(4..VOCAB as i32))
        .collect()
}

/// The model with end-of-sentence masked out, so every sentence decodes the full length.
struct NoEos<'a, B: Backend, S> {
    model: &'a S,
    mask: Tensor<B, 2>,
}

impl<B: Backend, S: Scorer<B>> Scorer<B> for NoEos<'_, B, S> {
    type State = S::State;

    fn start(&self, src: &SourceBatch<B>) -> Self::State {
        self.model.start(src)
    }

    fn step(&self, prev: Tensor<B, 1, Int>, state: Self::State) -> Step<B, Self::State> {
        let mut step = self.model.step(prev, state);
        step.logits = step.logits + self.mask.clone();
        step
    }

    fn select(&self, state: Self::State, indices: Tensor<B, 1, Int>) -> Self::State {
        self.model.select(state, indices)
    }

    fn reorder(&self, state: Self::State, indices: Tensor<B, 1, Int>) -> Self::State {
        self.model.reorder(state, indices)
    }
}

/// One mode of the Rosetta side, run in this process.
struct RosettaMode {
    model: String,
    mode: String,
    runs: usize,
}

impl Job for RosettaMode {
    type Output = (f64, usize);

    fn run<B: AutodiffBackend>(self, device: B::Device) -> (f64, usize) {
        let config = bench_config(&self.model);
        dispatch_trainable::<B, _>(
            &config.clone(),
            ModeJob {
                mode: self,
                config,
                device,
            },
        )
    }
}

/// [`RosettaMode`] for the model type `M` the config names.
struct ModeJob<B: Backend> {
    mode: RosettaMode,
    config: ModelConfig,
    device: B::Device,
}

impl<B: AutodiffBackend> TrainableJob<B> for ModeJob<B> {
    type Output = (f64, usize);

    fn run<M>(self) -> (f64, usize)
    where
        M: Seq2Seq<B> + AutodiffModule<B>,
        M::InnerModule: Seq2Seq<B::InnerBackend>,
    {
        let ModeJob {
            mode: this,
            config,
            device,
        } = self;
        B::seed(&device, 0);
        let src = SourceBatch::<B> {
            ids: Tensor::from_data(
                TensorData::new(random_ids(BATCH, SRC_LEN, 1), [BATCH, SRC_LEN]),
                &device,
            ),
            lengths: vec![SRC_LEN; BATCH],
            specials: Default::default(),
        };
        let tgt = random_ids(BATCH, TGT_LEN + 1, 2);
        let column = |range: std::ops::Range<usize>| -> Vec<i32> {
            tgt.chunks(TGT_LEN + 1)
                .flat_map(|row| row[range.clone()].to_vec())
                .collect()
        };
        let tgt_in = Tensor::<B, 2, Int>::from_data(
            TensorData::new(column(0..TGT_LEN), [BATCH, TGT_LEN]),
            &device,
        );
        let tgt_out = Tensor::<B, 2, Int>::from_data(
            TensorData::new(column(1..TGT_LEN + 1), [BATCH, TGT_LEN]),
            &device,
        );
        let warmup = if this.mode == "train" { 3 } else { 2 };
        let mut times = Vec::new();
        let params;
        if this.mode == "train" {
            let mut model = M::init(&config, VOCAB, VOCAB, &device).expect("bench model");
            params = count_parameters(&model);
            let mut optimizer = AnyOptimizer::new(&OptimizerSettings {
                kind: OptimizerKind::Adam,
                weight_decay: 0.0,
                momentum: 0.0,
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-8,
            });
            for i in 0..this.runs + warmup {
                let t0 = Instant::now();
                // The trainer's step: loss and gradients (one part per thread on the CPU),
                // gradient norm (for clipping), Adam.
                let parts = parts_for::<B>(BATCH);
                let pieces = rosetta::parallel::interleaved(BATCH, parts)
                    .into_iter()
                    .map(|rows| {
                        let n = rows.len();
                        let index = rows.iter().map(|&r| r as i64).collect::<Vec<_>>();
                        let index =
                            Tensor::<B, 1, Int>::from_data(TensorData::new(index, [n]), &device);
                        TeacherForced {
                            src: src.rows(&rows),
                            tgt_in: tgt_in.clone().select(0, index.clone()),
                            tgt_out: tgt_out.clone().select(0, index),
                            tokens: n * TGT_LEN,
                        }
                    })
                    .collect();
                let (value, grads) =
                    batch_gradients(&model, pieces, 0.0, rosetta_text::vocab::PAD, i as u64)
                        .expect("finite loss");
                let norm = grad_norm(&model, &grads);
                model = optimizer.step(1e-3, model, grads);
                if i >= warmup {
                    times.push(t0.elapsed().as_secs_f64());
                }
                if i % 5 == 0 {
                    eprintln!("rosetta step {i}: loss {value:.4}, grad norm {norm:.3}");
                }
            }
        } else {
            let model = M::InnerModule::init(&config, VOCAB, VOCAB, &device).expect("bench model");
            params = count_parameters(&model);
            let src = SourceBatch::<B::InnerBackend> {
                ids: src.ids.inner(),
                lengths: src.lengths,
                specials: src.specials,
            };
            let mut mask = vec![0.0f32; VOCAB];
            mask[EOS as usize] = f32::NEG_INFINITY;
            let scorer = NoEos {
                model: &model,
                mask: Tensor::from_data(TensorData::new(mask, [1, VOCAB]), &device),
            };
            let beam = BeamConfig {
                beam: BEAM,
                n_best: 1,
                length_penalty: 0.0,
                max_len_a: Some(0.0),
                max_len_b: Some(TGT_LEN),
                min_len: 0,
                no_repeat_ngram: 0,
                rule: None,
            };
            for i in 0..this.runs + warmup {
                let t0 = Instant::now();
                let produced: usize = if this.mode == "greedy" {
                    greedy(&scorer, &src, |_| TGT_LEN)
                        .iter()
                        .map(|h| h.tokens.len())
                        .sum()
                } else {
                    beam_search(&scorer, &src, &beam)
                        .iter()
                        .map(|n| n.first().map_or(0, |h| h.tokens.len()))
                        .sum()
                };
                if i >= warmup {
                    times.push(t0.elapsed().as_secs_f64());
                }
                assert_eq!(
                    produced,
                    BATCH * TGT_LEN,
                    "every sentence decodes 25 tokens"
                );
            }
        }
        eprintln!("rosetta {} seconds per run: {times:.3?}", this.mode);
        times.sort_by(f64::total_cmp);
        (times[times.len() / 2], params)
    }
}

/// Peak resident set size of this process in MB (Linux), from `/proc/self/status`.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A measured mode of one side.
#[derive(Debug, Clone, Copy)]
struct Measured {
    median_s: f64,
    peak_rss_mb: f64,
}

fn parse_result(stdout: &str) -> Option<serde_json::Value> {
    let line = stdout.lines().rev().find(|l| l.starts_with("RESULT "))?;
    serde_json::from_str(&line["RESULT ".len()..]).ok()
}

fn measured(value: &serde_json::Value) -> Option<Measured> {
    Some(Measured {
        median_s: value.get("median_s")?.as_f64()?,
        peak_rss_mb: value.get("peak_rss_mb")?.as_f64()?,
    })
}

fn runs_for(mode: &str) -> usize {
    let var = format!("ROSETTA_BENCH_{}_RUNS", mode.to_uppercase());
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(match mode {
            "train" => 10,
            "greedy" => 10,
            _ => 5,
        })
}

/// Rounds per mode (`ROSETTA_BENCH_ROUNDS`, default 3).
fn rounds() -> usize {
    std::env::var("ROSETTA_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(3)
}

/// The median (mean of the middle two for an even count), `None` for no values.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// One mode of the Rosetta side, in a fresh process of this benchmark.
fn run_ours(exe: &std::path::Path, mode: &str, threads: &str) -> Option<Measured> {
    let out = Command::new(exe)
        .env("ROSETTA_BENCH_CHILD", mode)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .expect("run the Rosetta side");
    let json = parse_result(&String::from_utf8_lossy(&out.stdout));
    match &json {
        Some(json) => println!("  {json}"),
        None => eprintln!(
            "rosetta {mode} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    json.as_ref().and_then(measured)
}

/// One mode of the PyTorch side, `None` (with the reason on stderr) when it cannot run.
fn run_theirs(
    python: &str,
    script: &str,
    mode: &str,
    device: &str,
    threads: &str,
) -> Option<Measured> {
    let runs = runs_for(mode).to_string();
    let out = Command::new(python)
        .args([
            script,
            mode,
            &runs,
            "--device",
            device,
            "--threads",
            threads,
        ])
        .output();
    let json = match &out {
        Ok(out) => {
            let parsed = parse_result(&String::from_utf8_lossy(&out.stdout));
            if parsed.is_none() {
                eprintln!(
                    "pytorch {mode} failed (is torch installed for {python}?):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            parsed
        }
        Err(e) => {
            eprintln!("could not run {python}: {e}");
            None
        }
    };
    if let Some(json) = &json {
        println!("  {json}");
    }
    json.as_ref().and_then(measured)
}

fn main() {
    // As the `rosetta` binary does.
    let child = std::env::var("ROSETTA_BENCH_CHILD");
    rosetta::device::init_cpu_runtime(match child.as_deref() {
        Ok("train") => rosetta::device::Workload::Training,
        _ => rosetta::device::Workload::Decoding,
    });
    let threads = std::env::var("ROSETTA_BENCH_THREADS").unwrap_or_else(|_| "2".into());
    let device_name = std::env::var("ROSETTA_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    if let Ok(mode) = std::env::var("ROSETTA_BENCH_CHILD") {
        let choice: DeviceChoice = device_name.parse().expect("ROSETTA_BENCH_DEVICE");
        let device = resolve(choice).expect("device");
        let runs = runs_for(&mode);
        let (median_s, params) = run_on(
            device,
            RosettaMode {
                model: bench_model(),
                mode: mode.clone(),
                runs,
            },
        );
        let result = serde_json::json!({
            "side": "rosetta", "mode": mode, "device": device.to_string(), "params": params,
            "median_s": median_s, "runs": runs, "peak_rss_mb": peak_rss_mb(),
        });
        println!("RESULT {result}");
        return;
    }

    let python = std::env::var("ROSETTA_PYTHON").unwrap_or_else(|_| "python3".into());
    let model = bench_model();
    let script = if model == "transformer" {
        concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_transformer.py")
    } else {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/torch_attention_gru.py"
        )
    };
    let exe = std::env::current_exe().expect("own path");
    let rounds = rounds();
    let shape = if model == "transformer" {
        "pre-norm Transformer 3+3, d_model 256, 4 heads, ffn 1024"
    } else {
        "BiGRU 2x256, GRU 512, Bahdanau 512"
    };
    println!(
        "Rosetta vs PyTorch: {shape}, vocab {VOCAB}, batch {BATCH}x{TGT_LEN}, \
         device {device_name}, {threads} threads, {rounds} rounds"
    );
    let mut rows = Vec::new();
    for mode in ["train", "greedy", "beam"] {
        let mut pairs = Vec::with_capacity(rounds);
        for round in 0..rounds {
            // Sides alternate which goes first, so a machine that speeds up or slows down during the
            // run weighs on both; each round gives one ratio, and the table reports their median.
            let ours = || run_ours(&exe, mode, &threads);
            let theirs = || run_theirs(&python, script, mode, &device_name, &threads);
            let pair = if round % 2 == 0 {
                let o = ours();
                (o, theirs())
            } else {
                let t = theirs();
                (ours(), t)
            };
            pairs.push(pair);
        }
        rows.push((mode, pairs));
    }

    println!();
    println!(
        "| mode | Rosetta | PyTorch | speed ratio (Rosetta/PyTorch), median of rounds (range) | peak RSS Rosetta | peak RSS PyTorch | RSS ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    let target_tokens = (BATCH * TGT_LEN) as f64;
    for (mode, pairs) in rows {
        let ours: Vec<Measured> = pairs.iter().filter_map(|p| p.0).collect();
        let theirs: Vec<Measured> = pairs.iter().filter_map(|p| p.1).collect();
        let ratios: Vec<f64> = pairs
            .iter()
            .filter_map(|p| Some(p.1?.median_s / p.0?.median_s))
            .collect();
        let rate = |seconds: f64| match mode {
            "train" => format!("{:.0} tgt tok/s", target_tokens / seconds),
            _ => format!("{:.1} sent/s", BATCH as f64 / seconds),
        };
        let time = |side: &[Measured]| {
            median(side.iter().map(|m| m.median_s).collect())
                .map_or("–".to_string(), |s| format!("{} ({s:.3} s)", rate(s)))
        };
        let peak = |side: &[Measured]| side.iter().map(|m| m.peak_rss_mb).reduce(f64::max);
        let speed = match median(ratios.clone()) {
            Some(m) => {
                let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ratios.iter().copied().fold(0.0, f64::max);
                format!("{m:.2}× ({lo:.2}–{hi:.2}, {} rounds)", ratios.len())
            }
            None => "–".into(),
        };
        let rss = match (peak(&ours), peak(&theirs)) {
            (Some(o), Some(t)) => format!("{:.2}×", o / t),
            _ => "–".into(),
        };
        let mb = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0} MB"));
        println!(
            "| {mode} | {} | {} | {speed} | {} | {} | {rss} |",
            time(&ours),
            time(&theirs),
            mb(peak(&ours)),
            mb(peak(&theirs)),
        );
    }
}
