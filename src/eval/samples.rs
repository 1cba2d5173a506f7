//! What evaluation needs from a trained run: the tuned model and the generation settings.
use anyhow::Result;

use crate::model::generate::{TextGenerator, GenerateConfig};
use crate::model::Model;
use crate::recipe::{LoadedRecipe, Method};
use crate::train::{device_of, kind_of, TrainOutcome};

/// The tuned model: the trained folder (full fine-tuning) or the base with the adapter (QLoRA:
/// the 4-bit base it trained on).
pub fn load_tuned(recipe: &LoadedRecipe, out: &TrainOutcome) -> Result<Box<dyn Model>> {
    let t = &recipe.recipe.training;
    let (kind, device) = (kind_of(t.precision), device_of(&t.device));
    match recipe.recipe.finetune.method {
        Method::Full => crate::model::load_model(&out.output, None, kind, device),
        _ => {
            let mut m = crate::model::load_model(&out.base, crate::train::quant_spec(recipe), kind, device)?;
            crate::adapt::peft::load_adapter(m.as_mut(), &out.output)?;
            Ok(m)
        }
    }
}

pub fn generation_config(recipe: &LoadedRecipe, gen: &TextGenerator) -> GenerateConfig {
    let e = &recipe.recipe.eval;
    gen.config(e.max_new_tokens, e.do_sample, e.temperature, e.top_p, e.top_k)
}
