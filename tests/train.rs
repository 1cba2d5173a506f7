//! The training loop on tiny models: loss goes down; a run killed after N steps and resumed
//! gives exactly the losses of 2N steps straight (LoRA, and QLoRA with gradient checkpointing); a
//! NaN loss stops the run, names the step and keeps the last good checkpoint; early stopping
//! stops; T5 trains on the same loop (full and LoRA).
mod common;

use std::path::Path;

use steptune::data::prepare;
use steptune::recipe::LoadedRecipe;
use steptune::run::RunDir;
use steptune::train::{self, TrainOptions};

const TINY: &str = "\
model:
  source: random
  architecture: qwen3
  config: {model_type: qwen3, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 16}
  train_tokenizer: {vocab_size: 400}
data:
  files: [data/procedures.jsonl]
  columns: {group: intent}
  limit: 60
  max_length: 512
";

fn recipe(dir: &Path, method: &str, training: &str) -> LoadedRecipe {
    let yaml = format!("name: t\noutput_dir: {}\nseed: 5\n{TINY}finetune: {{method: {method}, lora_r: 4, lora_alpha: 8, lora_dropout: 0.1}}\ntraining:\n  device: cpu\n{training}", dir.display());
    common::recipe_in(&common::repo(), &yaml)
}

fn prepared(r: &LoadedRecipe) -> RunDir {
    let run = RunDir::create(r.output_dir()).unwrap();
    prepare::run(r, &run).unwrap();
    run
}

fn losses(run: &RunDir) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.path("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v["step"].as_u64()?, v["loss"].as_f64()?)))
        .collect()
}

const RESUMABLE: &str = "  max_steps: 8\n  per_device_train_batch_size: 4\n  gradient_accumulation_steps: 2\n  learning_rate: 3.0e-3\n  warmup_steps: 2\n  logging_steps: 1\n  eval_strategy: steps\n  eval_steps: 4\n  save_strategy: steps\n  save_steps: 4\n";

#[test]
fn killed_and_resumed_equals_straight_for_lora_with_dropout() {
    let _rng = common::rng_lock();
    let d = tempfile::tempdir().unwrap();
    let straight = recipe(&d.path().join("a"), "lora", RESUMABLE);
    let run_a = prepared(&straight);
    let out = train::run(&straight, &run_a, &TrainOptions::default()).unwrap();
    assert_eq!(out.steps, 8);
    let a = losses(&run_a);
    assert_eq!(a.len(), 8);

    let killed = recipe(&d.path().join("b"), "lora", RESUMABLE);
    let run_b = prepared(&killed);
    let err = train::run(&killed, &run_b, &TrainOptions { stop_after: Some(4), ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("stopped after step 4"));
    assert!(run_b.path("checkpoints/step-00000004/state.json").exists());
    assert_eq!(losses(&run_b).len(), 4);
    let out = train::run(&killed, &run_b, &TrainOptions::default()).unwrap();
    assert_eq!(out.steps, 8);
    let b = losses(&run_b);
    assert_eq!(a, b, "resumed losses differ from the straight run");
    // Only the best and the last checkpoints are kept.
    assert!(std::fs::read_dir(run_b.path("checkpoints")).unwrap().count() <= 2);
    // The adapter is written in PEFT's layout.
    assert!(run_b.path("adapter/adapter_model.safetensors").exists() && run_b.path("adapter/adapter_config.json").exists());
}

#[test]
fn a_run_stopped_inside_a_later_epoch_resumes_with_that_epochs_order() {
    // 4 steps per epoch: stopped at step 6, in the second epoch, whose batches are shuffled anew.
    let _rng = common::rng_lock();
    let d = tempfile::tempdir().unwrap();
    let straight = recipe(&d.path().join("a"), "lora", RESUMABLE);
    let run_a = prepared(&straight);
    train::run(&straight, &run_a, &TrainOptions::default()).unwrap();
    let killed = recipe(&d.path().join("b"), "lora", RESUMABLE);
    let run_b = prepared(&killed);
    let _ = train::run(&killed, &run_b, &TrainOptions { stop_after: Some(6), ..Default::default() }).unwrap_err();
    train::run(&killed, &run_b, &TrainOptions::default()).unwrap();
    assert_eq!(losses(&run_a), losses(&run_b), "resumed inside the second epoch");
    // Each epoch has its own order: the second epoch's batches are not the first's again.
    let tokens = |run: &RunDir| -> Vec<f64> {
        std::fs::read_to_string(run.path("metrics.jsonl")).unwrap().lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["step_tokens"].as_f64()).collect()
    };
    let t = tokens(&run_a);
    assert_ne!(t[0..4], t[4..8], "epoch 2 repeated epoch 1's batches");
}

#[test]
fn full_fine_tuning_lowers_the_loss_and_writes_a_loadable_model() {
    let _rng = common::rng_lock();
    let d = tempfile::tempdir().unwrap();
    let r = recipe(d.path(), "full", "  num_train_epochs: 10\n  per_device_train_batch_size: 8\n  learning_rate: 5.0e-3\n  logging_steps: 1\n");
    let run = prepared(&r);
    let out = train::run(&r, &run, &TrainOptions::default()).unwrap();
    let (first, last) = (out.initial_eval_loss.unwrap(), out.final_eval_loss.unwrap());
    assert!(last < first * 0.8, "eval loss {first} → {last}");
    let l = losses(&run);
    assert!(l.last().unwrap().1 < l.first().unwrap().1);
    let model = steptune::model::load_decoder(&run.path("model"), tch::Kind::Float, tch::Device::Cpu).unwrap();
    assert_eq!(model.cfg.hidden_size, 32);
    assert!(run.path("loss.png").exists() && run.path("base_model/model.safetensors").exists());
    // A finished run is not trained again by a second call.
    let again = train::run(&r, &run, &TrainOptions::default()).unwrap();
    assert_eq!(again.steps, out.steps);
    assert_eq!(again.initial_eval_loss, out.initial_eval_loss);
    // Changed settings do not resume someone else's checkpoints.
    let changed = recipe(&run.root, "full", "  num_train_epochs: 10\n  per_device_train_batch_size: 8\n  learning_rate: 1.0e-3\n");
    let msg = format!("{:#}", train::run(&changed, &run, &TrainOptions::default()).unwrap_err());
    assert!(msg.contains("--restart"), "{msg}");
    let fresh = train::run(&changed, &run, &TrainOptions { restart: true, ..Default::default() }).unwrap();
    assert!(fresh.steps > 0);
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let _rng = common::rng_lock();
    let d = tempfile::tempdir().unwrap();
    let r = recipe(d.path(), "lora", RESUMABLE);
    let run = prepared(&r);
    let _ = train::run(&r, &run, &TrainOptions { stop_after: Some(4), ..Default::default() }).unwrap_err();
    // Poison the base model's final norm: every later loss is NaN.
    let base = run.path("base_model/model.safetensors");
    let mut w = steptune::nn::weights::read_file(&base, None, tch::Device::Cpu, &|_| true).unwrap();
    let _ = w.get_mut("model.norm.weight").unwrap().fill_(f64::NAN);
    let refs: Vec<(String, &tch::Tensor)> = w.iter().map(|(k, v)| (k.clone(), v)).collect();
    steptune::nn::weights::write_file(&base, &refs).unwrap();
    let msg = format!("{:#}", train::run(&r, &run, &TrainOptions::default()).unwrap_err());
    assert!(msg.contains("became NaN at step 5"), "{msg}");
    assert!(msg.contains("step-00000004"), "{msg}");
    let ckpts: Vec<_> = std::fs::read_dir(run.path("checkpoints")).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name().into_string().unwrap()).collect();
    assert_eq!(ckpts, vec!["step-00000004".to_string()]);
}

#[test]
fn early_stopping_stops_after_patience_evaluations_without_improvement() {
    let _rng = common::rng_lock();
    let d = tempfile::tempdir().unwrap();
    // A threshold no improvement can reach: every evaluation after the first is "no better".
    let r = recipe(d.path(), "lora", "  max_steps: 20\n  per_device_train_batch_size: 4\n  eval_strategy: steps\n  eval_steps: 1\n  save_strategy: 'no'\n  early_stopping_patience: 2\n  early_stopping_threshold: 100\n");
    let run = prepared(&r);
    let out = train::run(&r, &run, &TrainOptions::default()).unwrap();
    assert!(out.stopped_early);
    assert_eq!(out.steps, 3);
}

#[test]
fn qlora_with_gradient_checkpointing_trains_resumes_exactly_and_matches_plain_backward() {
    let _rng = common::rng_lock();
    // A 4-bit base (quantized as the random base is loaded), LoRA with dropout, checkpointing.
    let d = tempfile::tempdir().unwrap();
    let gc = format!("{RESUMABLE}  gradient_checkpointing: true\n");
    let straight = recipe(&d.path().join("a"), "qlora", &gc);
    let run_a = prepared(&straight);
    let out = train::run(&straight, &run_a, &TrainOptions::default()).unwrap();
    assert_eq!(out.steps, 8);
    let a = losses(&run_a);
    assert!(a.iter().all(|(_, l)| l.is_finite()) && a.len() == 8);
    // The adapter is what trained; the base stays the 16-bit folder it was quantized from.
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run_a.path("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert!(out.base.join("model.safetensors").exists());

    let killed = recipe(&d.path().join("b"), "qlora", &gc);
    let run_b = prepared(&killed);
    let _ = train::run(&killed, &run_b, &TrainOptions { stop_after: Some(4), ..Default::default() }).unwrap_err();
    train::run(&killed, &run_b, &TrainOptions::default()).unwrap();
    assert_eq!(a, losses(&run_b), "resumed QLoRA losses differ from the straight run");

    // The same run without checkpointing: the same losses (same masks, same gradients).
    let plain = recipe(&d.path().join("c"), "qlora", RESUMABLE);
    let run_c = prepared(&plain);
    train::run(&plain, &run_c, &TrainOptions::default()).unwrap();
    for ((step, x), (_, y)) in a.iter().zip(losses(&run_c)) {
        assert!((x - y).abs() <= 1e-4 * x.abs(), "step {step}: {x} with checkpointing, {y} without");
    }
}

/// A T5 in miniature with flan-t5's real tokenizer (from ../shared).
fn t5_recipe(dir: &Path, finetune: &str) -> LoadedRecipe {
    let tok = common::shared().join("models/flan-t5-small");
    let yaml = format!(
        "name: t5\noutput_dir: {}\nseed: 3\nmodel:\n  source: random\n  architecture: t5\n  tokenizer: {}\n  config: {{model_type: t5, d_model: 32, d_kv: 8, d_ff: 64, num_layers: 2, num_heads: 4, feed_forward_proj: gated-gelu, tie_word_embeddings: false}}\nfinetune: {finetune}\ntraining:\n  device: cpu\n  max_steps: 6\n  per_device_train_batch_size: 8\n  learning_rate: 3.0e-3\n  logging_steps: 1\n  eval_strategy: steps\n  eval_steps: 3\ndata:\n  files: [data/procedures.jsonl]\n  columns: {{group: intent}}\n  limit: 60\n  max_length: 256\n",
        dir.display(),
        tok.display()
    );
    common::recipe_in(&common::repo(), &yaml)
}

#[test]
fn t5_trains_on_the_same_loop_full_and_lora() {
    let _rng = common::rng_lock();
    let d = tempfile::tempdir().unwrap();
    // Full fine-tuning: the loss falls and the model folder loads back as T5.
    let r = t5_recipe(&d.path().join("full"), "{method: full}");
    let run = prepared(&r);
    let out = train::run(&r, &run, &TrainOptions::default()).unwrap();
    assert_eq!(out.steps, 6);
    let (first, last) = (out.initial_eval_loss.unwrap(), out.final_eval_loss.unwrap());
    assert!(last < first, "eval loss {first} → {last}");
    let model = steptune::model::load_t5(&run.path("model"), tch::Kind::Float, tch::Device::Cpu).unwrap();
    assert_eq!(model.cfg.d_model, 32);
    // Generation from text, through the seq2seq path of the same generator evaluation uses.
    let tok = steptune::model::tokenizer::TokenizerBundle::from_dir(&run.path("tokenizer")).unwrap();
    let gen = steptune::model::generate::TextGenerator::new(&model, &tok, None).unwrap();
    let cfg = steptune::model::generate::GenerateConfig { max_new_tokens: 12, eos_ids: gen.stop_ids(), pad_id: gen.pad_id(), ..Default::default() };
    let g = gen.generate(&["How do I reset my password?".to_string()], &cfg, 4).unwrap();
    assert!(!g[0].token_ids.is_empty() && g[0].token_ids.len() <= 12);

    // LoRA on T5 through the same adapter code: peft's names and task type.
    let r = t5_recipe(&d.path().join("lora"), "{method: lora, lora_r: 4, lora_alpha: 8, lora_dropout: 0.1, lora_target_modules: [q, v, wo]}");
    let run = prepared(&r);
    let out = train::run(&r, &run, &TrainOptions::default()).unwrap();
    assert!(out.final_eval_loss.unwrap() < out.initial_eval_loss.unwrap());
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.path("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["task_type"], "SEQ_2_SEQ_LM");
    let w = steptune::nn::weights::read_file(&run.path("adapter/adapter_model.safetensors"), None, tch::Device::Cpu, &|_| true).unwrap();
    // 2 encoder blocks × (q, v, wo) + 2 decoder blocks × (self q, v; cross q, v; wo), A and B each.
    assert_eq!(w.len(), 2 * (2 * 3 + 2 * 5));
    assert!(w.contains_key("base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight"), "{:?}", w.keys().take(3).collect::<Vec<_>>());
    assert!(w.contains_key("base_model.model.decoder.block.1.layer.2.DenseReluDense.wo.lora_B.weight"));
    // The base loads back with the adapter, and merging folds it in.
    let mut m = steptune::model::load_model(&out.base, None, tch::Kind::Float, tch::Device::Cpu).unwrap();
    steptune::adapt::peft::load_adapter(m.as_mut(), &run.path("adapter")).unwrap();
    assert_eq!(steptune::adapt::peft::named_lora(m.as_ref()).len(), w.len());

    // Checkpointing is for decoder-only models: refused with the key named, not ignored.
    let r = t5_recipe(&d.path().join("gc"), "{method: full}");
    let yaml = r.recipe.to_yaml().replace("gradient_checkpointing: false", "gradient_checkpointing: true");
    let r = common::recipe_in(&common::repo(), &yaml);
    let run = prepared(&r);
    let msg = format!("{:#}", train::run(&r, &run, &TrainOptions::default()).unwrap_err());
    assert!(msg.contains("training.gradient_checkpointing") && msg.contains("T5"), "{msg}");
}

#[test]
fn flan_t5_small_recipe_trains_from_a_local_folder_of_the_real_shape() {
    let _rng = common::rng_lock();
    let d = tempfile::tempdir().unwrap();
    // A flan-t5-small-shaped checkpoint (random weights) with the real tokenizer, where the recipe
    // expects a downloaded folder.
    let shared = common::shared().join("models/flan-t5-small");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(shared.join("config.json")).unwrap()).unwrap();
    let cfg = steptune::model::t5::T5Config::from_json(&config).unwrap();
    tch::manual_seed(0);
    let mut w = steptune::model::t5::T5::random_weights(&cfg, tch::Kind::Float, tch::Device::Cpu);
    let model = steptune::model::t5::T5::from_weights(cfg, &mut w, tch::Kind::Float, tch::Device::Cpu).unwrap();
    let folder = d.path().join("models/flan-t5-small");
    let tok = steptune::model::tokenizer::TokenizerBundle::from_dir(&shared).unwrap();
    steptune::model::save_t5(&model, &folder, Some(&tok)).unwrap();
    drop(model);

    let mut r = LoadedRecipe::load(&common::repo().join("recipes/flan-t5-small-full.yaml")).unwrap();
    // The document's values.
    let (f, t) = (&r.recipe.finetune, &r.recipe.training);
    assert_eq!(format!("{:?}", f.method), "Full");
    assert_eq!((t.learning_rate, t.per_device_train_batch_size, t.num_train_epochs), (5e-5, 4, 100.0));
    assert!(t.early_stopping_patience > 0 && format!("{:?}", t.eval_strategy) == "Epoch");
    assert_eq!(r.recipe.model.source, "./models/flan-t5-small");
    // A folder that is not there is named, with what to do (not taken for a Hub id).
    r.recipe.model.source = "./no-such-folder/flan-t5-small".into();
    let missing = format!("{:#}", steptune::model::source::resolve(&r, true).map(|_| ()).unwrap_err());
    assert!(missing.contains("./no-such-folder/flan-t5-small") && missing.contains("huggingface-cli download"), "{missing}");
    // Present, it trains: two steps on a few rows.
    r.recipe.model.source = folder.display().to_string();
    r.recipe.output_dir = Some(d.path().join("run"));
    r.recipe.training.max_steps = Some(2);
    r.recipe.training.device = "cpu".into();
    r.recipe.data.limit = Some(12);
    let run = prepared(&r);
    let out = train::run(&r, &run, &TrainOptions::default()).unwrap();
    assert_eq!(out.steps, 2);
    assert!(out.final_eval_loss.unwrap().is_finite());
    let tuned = steptune::model::load_t5(&run.path("model"), tch::Kind::Float, tch::Device::Cpu).unwrap();
    assert_eq!((tuned.cfg.d_model, tuned.cfg.num_layers, tuned.cfg.vocab_size), (512, 8, 32128));
}
