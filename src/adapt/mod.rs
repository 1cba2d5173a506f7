//! Adapting a model: hand-built LoRA layers, PEFT-format adapters, merging, NF4 quantization.
pub mod lora;
pub mod nf4;
pub mod peft;
pub mod quantize;
