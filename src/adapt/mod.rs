//! Adapting a model: hand-built LoRA layers, PEFT-format adapters, merging.
pub mod lora;
pub mod nf4;
pub mod peft;
