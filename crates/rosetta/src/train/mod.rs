//! Training: loss, optimizers, schedules, checkpoints, logging, and the loop that ties them together.

pub mod adam;
pub mod average;
pub mod checkpoint;
pub mod gradients;
pub mod loss;
pub mod merge;
pub mod optim;
pub mod safetensors_file;
pub mod schedule;
pub mod tensorboard;
pub mod trainer;
