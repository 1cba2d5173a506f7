//! Evaluation: metrics equal to their reference implementations, and the eval stage.
pub mod bleu;
pub mod human;
pub mod ifeval;
pub mod meteor;
pub mod porter;
pub mod rouge;
pub mod samples;
pub mod score;
pub mod stage;
pub mod stepmetrics;
pub mod wordnet;
