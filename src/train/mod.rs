//! The training stage.
pub mod batches;
pub mod optim;
pub mod schedule;
