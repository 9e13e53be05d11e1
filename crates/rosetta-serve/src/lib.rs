//! Rosetta's HTTP translation server: a native JSON API (`/v1/translate`, `/v1/models`), a
//! LibreTranslate-compatible API (`/translate`, `/languages`, `/detect`), health, readiness and
//! Prometheus metrics, and a web page at `/`.
//!
//! A request flows: HTTP body → parameters and limits ([`native`], [`libre`]) → the bounded queue
//! ([`batcher`]) → a batch of texts from concurrent requests → a decoding thread running the model
//! ([`engine`]) → each request's own translations back to it. The binary loads the models on the
//! chosen device and calls [`app::run_until_signal`]; another Rust program embeds the server the
//! same way, or with [`app::Server`] for its own runtime and shutdown signal.
#![deny(missing_docs)]

pub mod app;
pub mod batcher;
pub mod config;
pub mod engine;
pub mod error;
pub mod html;
pub mod languages;
pub mod libre;
pub mod metrics;
pub mod native;
pub mod split;

pub use app::{ServedModel, Server, run_until_signal};
pub use config::{BatchConfig, Limits, ModelSpec, ServerConfig};
pub use engine::Engine;
pub use error::{ApiError, ServeError};

use rosetta::burn::tensor::backend::Backend;
use rosetta::translate::Translator;
use std::sync::Arc;

/// Loads every model of `config` on `device` (several directories of one spec form an ensemble).
pub fn load_models<B: Backend>(
    config: &ServerConfig,
    device: &B::Device,
) -> Result<Vec<ServedModel>, ServeError>
where
    Translator<B>: Send + Sync,
{
    config
        .models
        .iter()
        .map(|spec| {
            let translator = Translator::<B>::load_ensemble(&spec.paths, device).map_err(|e| {
                ServeError::Model {
                    name: spec.name.clone(),
                    source: e,
                }
            })?;
            Ok(ServedModel {
                name: spec.name.clone(),
                pair: spec.pair(),
                paths: spec.paths.clone(),
                engine: Arc::new(translator),
            })
        })
        .collect()
}
