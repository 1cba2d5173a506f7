//! Building blocks every model uses, below the models: checkpoint tensors (safetensors I/O),
//! the projection layer (a dense or NF4 base plus the hand-built LoRA branch), NF4 storage, the
//! language-model head's chunked loss.
pub mod head;
pub mod linear;
pub mod nf4;
pub mod weights;
