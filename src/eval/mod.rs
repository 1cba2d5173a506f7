//! Evaluation: metrics equal to their reference implementations, and the eval stage.
pub mod bleu;
pub mod meteor;
pub mod porter;
pub mod rouge;
pub mod samples;
pub mod wordnet;
