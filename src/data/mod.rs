//! The data stage: load, check, clean, group, split, encode and measure.
pub mod augment;
pub mod dedup;
pub mod load;
pub mod pii;
pub mod prepare;
pub mod split;
pub mod stats;
pub mod steps;
pub mod encode;
pub mod mix;
pub mod window;

use load::RowRef;

/// A cleaned example: one prompt and its numbered procedure.
#[derive(Debug, Clone)]
pub struct Example {
    /// The id column when mapped, else `<file name>:<row>`.
    pub id: String,
    pub prompt: String,
    pub output: String,
    /// Paraphrases of one request share a group (intent).
    pub group: String,
    pub at: RowRef,
    /// 0 for an original row; k for the k-th oversampled copy.
    pub copy: usize,
    /// The `data.mix` source's name; empty for the single-source `data.files`.
    pub source: String,
}
