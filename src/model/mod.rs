//! Models: where their files come from, their tokenizers, and (later stages) the networks.
pub mod source;
pub mod tokenizer;
