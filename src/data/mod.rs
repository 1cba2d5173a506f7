//! The data stage: load, check, clean, group, split, encode and measure.
pub mod augment;
pub mod dedup;
pub mod load;
pub mod pii;
pub mod pii_indonesia;
pub mod prepare;
pub mod review;
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
    /// The input's provenance column (`data.columns.source`; `synthetic` for rows `steptune
    /// augment` wrote): decides what review treats as synthetic. Not the `data.mix` source.
    pub provenance: Option<String>,
    /// The review id: a hash of the row's prompt and output as the file holds them.
    pub review_id: String,
}
