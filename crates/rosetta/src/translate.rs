//! The translation API: load a model directory, translate lines. Used by the CLI and the server.

use crate::config::Config;
use crate::error::Result;
use crate::model::input::source_batch;
use crate::model::seq2seq::RnnSeq2Seq;
use crate::search::greedy;
use crate::train::checkpoint::{WEIGHTS, load_weights};
use crate::train::trainer::CONFIG_FILE;
use burn::prelude::*;
use rosetta_text::batch::PaddedIds;
use rosetta_text::pipeline::TextPipeline;
use std::path::Path;

/// One translated line.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// Detokenized output.
    pub text: String,
    /// Source pieces the model read (after truncation), without `</s>`.
    pub source_pieces: Vec<String>,
    /// Output pieces, without `</s>`.
    pub pieces: Vec<String>,
    /// Log-probability of the output under the model.
    pub score: f32,
    /// Attention of each output piece over the source pieces (and `</s>`); empty without attention.
    pub attention: Vec<Vec<f32>>,
    /// Whether the source was longer than the model's maximum length and was truncated.
    pub truncated: bool,
}

/// A loaded model ready to translate.
#[derive(Debug)]
pub struct Translator<B: Backend> {
    model: RnnSeq2Seq<B>,
    pipeline: TextPipeline,
    config: Config,
    device: B::Device,
}

impl<B: Backend> Translator<B> {
    /// Loads `config.toml`, the text pipeline and `model.safetensors` from a model directory.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = Config::load(&dir.join(CONFIG_FILE))?;
        let pipeline = TextPipeline::load(dir)?;
        let model = RnnSeq2Seq::new(
            &config.model,
            pipeline.src_vocab().len(),
            pipeline.tgt_vocab().len(),
            device,
        );
        let model = load_weights(model, &dir.join(WEIGHTS))?;
        Ok(Translator {
            model,
            pipeline,
            config,
            device: device.clone(),
        })
    }

    /// Wraps an in-memory model.
    pub fn new(
        model: RnnSeq2Seq<B>,
        pipeline: TextPipeline,
        config: Config,
        device: B::Device,
    ) -> Self {
        Translator {
            model,
            pipeline,
            config,
            device,
        }
    }

    /// The model's text pipeline.
    pub fn pipeline(&self) -> &TextPipeline {
        &self.pipeline
    }

    /// Translates lines, returning exactly one translation per line, in order. Empty lines give empty
    /// translations; lines longer than the model's maximum length are truncated (and flagged).
    pub fn translate(&self, lines: &[&str]) -> Result<Vec<Translation>> {
        let max_len = self.config.text.max_len;
        let mut encoded = Vec::with_capacity(lines.len());
        for line in lines {
            let mut pieces = self.pipeline.src_pieces(line)?;
            let truncated = pieces.len() > max_len;
            pieces.truncate(max_len);
            let ids = self.pipeline.src_vocab().encode(&pieces);
            encoded.push((pieces, ids, truncated));
        }
        let mut order: Vec<usize> = (0..lines.len())
            .filter(|&i| !encoded[i].1.is_empty())
            .collect();
        order.sort_by_key(|&i| encoded[i].1.len());
        let mut out: Vec<Option<Translation>> = vec![None; lines.len()];
        let budget = self.config.train.batch_tokens.max(max_len + 1);
        let mut start = 0;
        while start < order.len() {
            // Sorted by length: the last row of a chunk is the longest.
            let mut end = start + 1;
            while end < order.len()
                && (end + 1 - start) * (encoded[order[end]].1.len() + 1) <= budget
            {
                end += 1;
            }
            let chunk = &order[start..end];
            let padded =
                PaddedIds::new(chunk.iter().map(|&i| encoded[i].1.as_slice()), false, true);
            let src = source_batch::<B>(&padded, &self.device);
            let (a, b) = (
                self.config.train.valid_max_len_a,
                self.config.train.valid_max_len_b,
            );
            let hyps = greedy(&self.model, &src, |n| (a * n as f64) as usize + b);
            for (hyp, &i) in hyps.into_iter().zip(chunk) {
                let pieces = self.pipeline.tgt_vocab().decode(&hyp.tokens);
                out[i] = Some(Translation {
                    text: self.pipeline.detokenize_tgt(&pieces)?,
                    source_pieces: encoded[i].0.clone(),
                    pieces,
                    score: hyp.score,
                    attention: hyp.attention,
                    truncated: encoded[i].2,
                });
            }
            start = end;
        }
        Ok(out
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.unwrap_or_else(|| Translation {
                    text: String::new(),
                    source_pieces: encoded[i].0.clone(),
                    pieces: Vec::new(),
                    score: 0.0,
                    attention: Vec::new(),
                    truncated: false,
                })
            })
            .collect())
    }
}
