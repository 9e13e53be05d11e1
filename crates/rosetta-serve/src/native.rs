//! The native JSON API: `POST /v1/translate` with every decoding option of `rosetta translate`,
//! and `GET /v1/models`.

use crate::app::{Shared, body_error, header_key};
use crate::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use rosetta::search::{BeamConfig, SamplingConfig};
use rosetta::translate::{TranslateOptions, pharaoh};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// A translation request. Give `text` or `texts`; name the model, or the source and target languages,
/// or neither when the server has one model. Options left out take `rosetta translate`'s defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateRequest {
    /// Model name.
    pub model: Option<String>,
    /// Source language code.
    pub source: Option<String>,
    /// Target language code.
    pub target: Option<String>,
    /// One text.
    pub text: Option<String>,
    /// Several texts, decoded as one batch.
    pub texts: Option<Vec<String>>,
    /// Beam size (1 = greedy).
    pub beam: Option<usize>,
    /// Candidates per text.
    pub n_best: Option<usize>,
    /// GNMT length penalty α.
    pub length_penalty: Option<f64>,
    /// Maximum output length a · source length + b: a.
    pub max_len_a: Option<f64>,
    /// Maximum output length a · source length + b: b.
    pub max_len_b: Option<usize>,
    /// Minimum output length.
    pub min_len: Option<usize>,
    /// Forbid repeated n-grams of this size.
    pub no_repeat_ngram: Option<usize>,
    /// Sample instead of searching.
    pub sampling: Option<SamplingRequest>,
    /// Replace `<unk>` by the most-attended source piece.
    #[serde(default)]
    pub replace_unk: bool,
    /// Return hard alignments (Pharaoh format).
    #[serde(default)]
    pub alignments: bool,
    /// Return the attention matrix with the source and output pieces.
    #[serde(default)]
    pub attention: bool,
    /// API key (or send it as `Authorization: Bearer KEY`).
    pub api_key: Option<String>,
}

/// Sampling settings; each left out takes its default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingRequest {
    /// Temperature.
    pub temperature: Option<f64>,
    /// Sample from the k most probable tokens (0 = all).
    pub top_k: Option<usize>,
    /// Nucleus probability.
    pub top_p: Option<f64>,
    /// Seed.
    pub seed: Option<u64>,
}

impl TranslateRequest {
    /// The decoding options asked for; what the request leaves out comes from `d`, the model's
    /// defaults ([`crate::engine::Engine::search_defaults`]).
    pub fn options(&self, d: &BeamConfig) -> TranslateOptions {
        let sampling = self.sampling.as_ref().map(|s| {
            let ds = SamplingConfig::default();
            SamplingConfig {
                temperature: s.temperature.unwrap_or(ds.temperature),
                top_k: s.top_k.unwrap_or(ds.top_k),
                top_p: s.top_p.unwrap_or(ds.top_p),
                seed: s.seed.unwrap_or(ds.seed),
            }
        });
        TranslateOptions {
            search: BeamConfig {
                beam: if sampling.is_some() {
                    1
                } else {
                    self.beam.unwrap_or(d.beam.max(self.n_best.unwrap_or(1)))
                },
                n_best: self.n_best.unwrap_or(1),
                length_penalty: self.length_penalty.unwrap_or(d.length_penalty),
                max_len_a: self.max_len_a,
                max_len_b: self.max_len_b,
                min_len: self.min_len.unwrap_or(d.min_len),
                no_repeat_ngram: self.no_repeat_ngram.unwrap_or(d.no_repeat_ngram),
                rule: None,
            },
            sampling,
            replace_unk: self.replace_unk,
            ..TranslateOptions::default()
        }
    }
}

/// One candidate in the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidateOut {
    /// The translation.
    pub text: String,
    /// Ranking score (log-probability over the length penalty for beam search).
    pub score: f32,
    /// Log-probability under the model.
    pub log_prob: f32,
    /// Hard alignment `i-j` pairs, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alignment: Option<String>,
    /// Output pieces, when attention was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_tokens: Option<Vec<String>>,
    /// Attention `[output piece][source piece + </s>]`, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<Vec<Vec<f32>>>,
}

/// The answer for one text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranslationOut {
    /// The best translation.
    pub text: String,
    /// Whether the text was longer than the model reads and only its beginning was translated.
    pub truncated: bool,
    /// Source pieces, when attention was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_tokens: Option<Vec<String>>,
    /// Candidates, best first (`n_best` of them, fewer when the beam finished fewer).
    pub candidates: Vec<CandidateOut>,
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    /// Waiting in the queue.
    pub queue_ms: f64,
    /// Decoding the batch.
    pub decode_ms: f64,
    /// From the request's arrival to its answer.
    pub total_ms: f64,
    /// Texts in the batch this request was decoded in.
    pub batch_texts: usize,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranslateResponse {
    /// The model that translated.
    pub model: String,
    /// One per text, in order.
    pub translations: Vec<TranslationOut>,
    /// Timing.
    pub timing: Timing,
}

/// `POST /v1/translate`.
pub async fn translate(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TranslateResponse>, ApiError> {
    let started = Instant::now();
    let body = body.map_err(|r| body_error(r, state.config.limits.max_body_bytes))?;
    let request: TranslateRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON request: {e}")))?;
    // An empty `api_key` in the body is no key: the header's, if any, counts.
    let key = request
        .api_key
        .clone()
        .filter(|k| !k.is_empty())
        .or_else(|| header_key(&headers));
    if let Err(missing) = state.check_key(key.as_deref()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            if missing {
                "this server requires an API key (`Authorization: Bearer KEY`)"
            } else {
                "Invalid API key"
            },
        ));
    }
    let texts = match (&request.text, &request.texts) {
        (Some(t), None) => vec![t.clone()],
        (None, Some(ts)) if !ts.is_empty() => ts.clone(),
        (None, Some(_)) => return Err(ApiError::bad_request("`texts` is empty")),
        (None, None) => return Err(ApiError::bad_request("give `text` or `texts`")),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give `text` or `texts`, not both"));
        }
    };
    state.check_texts(&texts)?;
    let index = resolve_model(&state, &request)?;
    let mut defaults = state.models[index].engine.search_defaults();
    // A model's own default beam (an imported model's num_beams) within this server's limit.
    defaults.beam = defaults.beam.min(state.config.limits.max_beam);
    let options = request.options(&defaults);
    let finished = state.translate(index, texts, options).await?;
    let translations = finished
        .translations
        .into_iter()
        .map(|t| {
            let source_len = t.source_pieces.len();
            let candidates = t
                .candidates
                .iter()
                .map(|c| CandidateOut {
                    text: c.text.clone(),
                    score: c.score,
                    log_prob: c.log_prob,
                    alignment: request
                        .alignments
                        .then(|| pharaoh(&c.alignment(source_len))),
                    target_tokens: request.attention.then(|| c.pieces.clone()),
                    attention: request.attention.then(|| c.attention.clone()),
                })
                .collect();
            TranslationOut {
                text: t.text().to_owned(),
                truncated: t.truncated,
                source_tokens: request.attention.then(|| t.source_pieces.clone()),
                candidates,
            }
        })
        .collect();
    Ok(Json(TranslateResponse {
        model: state.models[index].name.clone(),
        translations,
        timing: Timing {
            queue_ms: finished.queued.as_secs_f64() * 1e3,
            decode_ms: finished.decoding.as_secs_f64() * 1e3,
            total_ms: started.elapsed().as_secs_f64() * 1e3,
            batch_texts: finished.batch_texts,
        },
    }))
}

/// The model a request names (by name, by languages, or the only one).
fn resolve_model(state: &Shared, request: &TranslateRequest) -> Result<usize, ApiError> {
    let names = || {
        state
            .models
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = &request.model {
        return state.model_named(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown model {name:?}; this server has: {}",
                names()
            ))
        });
    }
    match (&request.source, &request.target) {
        (Some(s), Some(t)) => state
            .model_for_pair(&s.to_lowercase(), &t.to_lowercase())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "no model translates {s} → {t}; this server has: {}",
                    names()
                ))
            }),
        (None, None) if state.models.len() == 1 => Ok(0),
        (None, None) => Err(ApiError::bad_request(format!(
            "name a `model` or a `source` and `target` language; this server has: {}",
            names()
        ))),
        _ => Err(ApiError::bad_request(
            "give both `source` and `target`, or `model`",
        )),
    }
}

/// A served model, as `GET /v1/models` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Name.
    pub name: String,
    /// Source language, when known.
    pub source: Option<String>,
    /// Target language, when known.
    pub target: Option<String>,
    /// `rnn` or `transformer`.
    pub arch: String,
    /// Models in the ensemble (1 for one model).
    pub ensemble: usize,
    /// Longest source read, in pieces.
    pub max_source_len: usize,
    /// Beam size of a request that names none (the model's `[decode]` default; 1 is greedy).
    pub beam: usize,
    /// Length penalty of a request that names none.
    pub length_penalty: f64,
}

/// `GET /v1/models`.
pub async fn models(State(state): State<Shared>) -> Json<Vec<ModelInfo>> {
    Json(
        state
            .models
            .iter()
            .map(|m| {
                let search = m.engine.search_defaults();
                ModelInfo {
                    name: m.name.clone(),
                    source: m.pair.as_ref().map(|p| p.0.clone()),
                    target: m.pair.as_ref().map(|p| p.1.clone()),
                    arch: m.engine.arch().to_owned(),
                    ensemble: m.engine.ensemble_size(),
                    max_source_len: m.engine.max_source_len(),
                    beam: search.beam,
                    length_penalty: search.length_penalty,
                }
            })
            .collect(),
    )
}
