//! steptune: fine-tune open LLMs to turn a user's intent into a numbered step-by-step procedure.
//!
//! The flow of one run is recipe → prepare → train → evaluate → report; each stage is a module.
//! `jobs` holds the drivers above the stages: the main job, sweeps, comparisons, Slurm scripts.
pub mod adapt;
pub mod data;
pub mod dist;
pub mod eval;
pub mod ffi;
pub mod jobs;
pub mod model;
pub mod recipe;
pub mod run;
pub mod train;
