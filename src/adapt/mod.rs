//! Adapting a model: PEFT-format adapters (the LoRA layers themselves are in `nn`), merging,
//! NF4 quantization of checkpoints.
pub mod peft;
pub mod quantize;
