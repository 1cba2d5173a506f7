//! steptune: fine-tune open LLMs to turn a user's intent into a numbered step-by-step procedure.
//!
//! The flow of one run is recipe → prepare → train → evaluate → report → export; each stage is a module.
//! `jobs` holds the drivers above the stages: the main job, sweeps, comparisons, Slurm scripts.
//!
//! A module imports only modules below it (`tests/layout.rs` holds this), bottom first:
//! `ffi` (the C++ in `csrc/`), `recipe` (the schema every stage reads), `dist`, `run`, `nn`
//! (weights I/O, the projection layer with its LoRA branch, NF4), `model` (tokenizer, chat
//! template, the networks, generation), `data`, `adapt` (PEFT files, merge, quantize), `train`,
//! `eval`, `export` (GGUF for llama.cpp and Ollama), `jobs`.
// bench-train's one-line JSON result is a large `json!` literal.
#![recursion_limit = "256"]

pub mod adapt;
pub mod data;
pub mod dist;
pub mod eval;
pub mod export;
pub mod ffi;
pub mod jobs;
pub mod model;
pub mod nn;
pub mod recipe;
pub mod run;
pub mod train;
