//! Benchmarks of the text pipeline:
//! - `prepare/multi30k-*`: what `rosetta prepare` does on Multi30k train (29,000 pairs, de-en):
//!   train a joint tokenizer, then encode the corpus with statistics.
//! - `batch/plan-5m`: planning one epoch of batches over 5 million pairs (memory is printed).
//!
//! Run with `cargo bench -p rosetta-text --bench text_pipeline`. Multi30k is read from
//! `../shared/data/multi30k` (or `$ROSETTA_DATA/multi30k`); those benchmarks are skipped when absent.

use criterion::{Criterion, criterion_group, criterion_main};
use rosetta_text::batch::BatchPlanner;
use rosetta_text::corpus::CorpusSource;
use rosetta_text::encoded::ParallelIds;
use rosetta_text::pipeline::{TextConfig, TextPipeline};
use rosetta_text::tokenize::TokenizerKind;
use std::path::PathBuf;

fn multi30k() -> Option<CorpusSource> {
    let root = std::env::var_os("ROSETTA_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let src = root.join("multi30k/train.de.gz");
    let tgt = root.join("multi30k/train.en.gz");
    if src.exists() && tgt.exists() {
        Some(CorpusSource::Parallel { src, tgt })
    } else {
        eprintln!(
            "skipping the Multi30k benchmarks: {} not found",
            src.display()
        );
        None
    }
}

fn prepare(c: &mut Criterion) {
    let Some(source) = multi30k() else { return };
    let mut group = c.benchmark_group("prepare");
    group.sample_size(10);
    for (name, kind) in [
        ("multi30k-bpe8k", TokenizerKind::Bpe),
        ("multi30k-unigram8k", TokenizerKind::Unigram),
        ("multi30k-word", TokenizerKind::Word),
    ] {
        let config = TextConfig {
            tokenizer: kind,
            vocab_size: 8000,
            ..Default::default()
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let pipeline = TextPipeline::fit(&source, &config, &|_| {}).expect("fit");
                pipeline.encode_corpus(&source, &|_| {}).expect("encode").1
            })
        });
    }
    let pipeline = TextPipeline::fit(
        &source,
        &TextConfig {
            vocab_size: 8000,
            ..Default::default()
        },
        &|_| {},
    )
    .expect("fit");
    group.bench_function("multi30k-encode-only", |b| {
        b.iter(|| pipeline.encode_corpus(&source, &|_| {}).expect("encode").1)
    });
    group.finish();
}

fn plan_5m(c: &mut Criterion) {
    // 5 million pairs with realistic lengths (5-60 tokens), stored as the trainer stores them.
    let mut data = ParallelIds::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut seq = Vec::with_capacity(64);
    for _ in 0..5_000_000 {
        let (s, t) = (5 + next() % 56, 5 + next() % 56);
        seq.clear();
        seq.extend((0..s).map(|i| 4 + i as u32));
        let tgt: Vec<u32> = (0..t).map(|i| 4 + i as u32).collect();
        data.push(&seq, &tgt);
    }
    let (src, tgt) = data.batch_lengths();
    let planner = BatchPlanner::new(src, tgt, 4096).expect("planner");
    let store_mb = (data.src.heap_bytes() + data.tgt.heap_bytes()) as f64 / 1e6;
    eprintln!(
        "5M pairs: {} tokens stored in {store_mb:.0} MB; {} batches per epoch at 4096 tokens",
        data.src.total_tokens() + data.tgt.total_tokens(),
        planner.epoch(0, 0).len()
    );
    let mut group = c.benchmark_group("batch");
    group.sample_size(10);
    group.bench_function("plan-5m", |b| b.iter(|| planner.epoch(7, 1).len()));
    group.finish();
}

criterion_group!(benches, prepare, plan_5m);
criterion_main!(benches);
