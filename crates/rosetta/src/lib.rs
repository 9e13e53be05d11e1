//! Rosetta's models, trainer and search, written once against burn's `Backend`.
//!
//! Follow one batch: [`model::encoder`] reads the source, [`model::bridge`] hands its summary to
//! [`model::decoder`], which attends ([`model::attention`]) while it predicts the target;
//! [`train`] turns the predictions into a loss and updates the weights; [`search`] decodes new input.
#![deny(missing_docs)]

/// The burn version Rosetta is built on, re-exported so callers name the same backend traits.
pub use burn;

pub mod config;
pub mod device;
pub mod error;
pub mod kernels;
pub mod marian;
pub mod model;
pub mod parallel;
pub mod search;
pub mod train;
pub mod translate;

pub use error::{Error, Result};
