//! Recipes: every shipped one validates; typos and bad values give errors that name the key.
use steptune::recipe::{parse, LoadedRecipe, Method, QUICKSTART_YAML};

fn err(yaml: &str) -> String {
    format!("{:#}", parse(yaml, "r.yaml").unwrap_err())
}

const MIN: &str = "model: {source: Qwen/Qwen3-8B}\ndata: {files: [d.jsonl]}\n";

#[test]
fn every_shipped_recipe_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            LoadedRecipe::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "expected at least 4 recipes, found {n}");
}

#[test]
fn shipped_recipes_carry_the_documents_values() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let q = LoadedRecipe::load(&root.join("qwen3-8b-qlora.yaml")).unwrap().recipe;
    assert_eq!(q.finetune.method, Method::Qlora);
    assert_eq!((q.finetune.lora_r, q.finetune.lora_alpha), (16, 32.0));
    assert_eq!(q.finetune.lora_target_modules.len(), 7);
    assert_eq!(q.training.learning_rate, 2e-4);
    assert_eq!(q.training.weight_decay, 0.01);
    let t = LoadedRecipe::load(&root.join("flan-t5-small-full.yaml")).unwrap().recipe;
    assert_eq!(t.finetune.method, Method::Full);
    assert_eq!((t.training.learning_rate, t.training.per_device_train_batch_size, t.training.num_train_epochs), (5e-5, 4, 100.0));
    assert!(t.training.early_stopping_patience > 0);
}

#[test]
fn embedded_quickstart_is_the_shipped_file() {
    let file = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/quickstart.yaml")).unwrap();
    assert_eq!(file, QUICKSTART_YAML);
    let q = LoadedRecipe::quickstart();
    assert_eq!(q.recipe.name, "quickstart");
    assert_eq!(q.output_dir(), std::path::PathBuf::from("runs/quickstart"));
}

#[test]
fn unknown_key_names_it_and_suggests_the_nearest() {
    let e = err(&format!("{MIN}training: {{learnig_rate: 1.0e-4}}\n"));
    assert!(e.contains("unknown key `training.learnig_rate`"), "{e}");
    assert!(e.contains("did you mean `training.learning_rate`?"), "{e}");
    let e = err(&format!("{MIN}finetune: {{lora_rank: 8}}\n"));
    assert!(e.contains("`finetune.lora_rank`") && e.contains("`finetune.lora_r`"), "{e}");
}

#[test]
fn key_at_the_wrong_level_says_where_it_belongs() {
    let e = err(&format!("{MIN}learning_rate: 1.0e-4\n"));
    assert!(e.contains("unknown key `learning_rate`: it belongs at `training.learning_rate`"), "{e}");
}

#[test]
fn every_unknown_key_is_reported_at_once() {
    let e = err(&format!("{MIN}trainig: {{}}\ndata2: 1\n"));
    assert!(e.contains("`trainig`") && e.contains("`data2`"), "{e}");
}

#[test]
fn out_of_range_values_name_the_key_and_range() {
    let e = err(&format!("{MIN}finetune: {{lora_dropout: 1.5}}\n"));
    assert!(e.contains("`finetune.lora_dropout` is 1.5, must be in [0, 1)"), "{e}");
    let e = err(&format!("{MIN}training: {{learning_rate: 0}}\n"));
    assert!(e.contains("`training.learning_rate` is 0, must be in (0, 1]"), "{e}");
    parse(&format!("{MIN}training: {{warmup_steps: 10}}\n"), "r.yaml").unwrap();
    let e = err(&format!("{MIN}training: {{warmup_steps: 10, warmup_ratio: 0.1}}\n"));
    assert!(e.contains("warmup_ratio") && e.contains("both set"), "{e}");
    let e = err(&format!("{MIN}finetune: {{lora_target_modules: [q_prj]}}\n"));
    assert!(e.contains("unknown module `q_prj`") && e.contains("did you mean `q_proj`"), "{e}");
    let e = err(&format!("{MIN}training: {{device: gpu}}\n"));
    assert!(e.contains("`training.device`"), "{e}");
}

#[test]
fn wrong_enum_value_names_the_key_and_choices() {
    let e = err(&format!("{MIN}training: {{lr_scheduler_type: cosin}}\n"));
    assert!(e.contains("training.lr_scheduler_type") && e.contains("cosine"), "{e}");
    let e = err("model: {source: Qwen/Qwen3-8B}\ndata: {files: [a.csv], over_length: cut}\n");
    assert!(e.contains("over_length") && e.contains("truncate"), "{e}");
}

#[test]
fn missing_required_values_are_named() {
    let e = err("data: {files: [a.jsonl]}\n");
    assert!(e.contains("`model.source` is required"), "{e}");
    let e = err("model: {source: random}\ndata: {files: [a.jsonl]}\n");
    assert!(e.contains("needs `model.config`"), "{e}");
    let e = err("model: {source: x/y}\n");
    assert!(e.contains("`data.files` is empty"), "{e}");
}

#[test]
fn resolved_recipe_round_trips_with_defaults_filled_in() {
    let r = parse(MIN, "r.yaml").unwrap();
    let yaml = r.to_yaml();
    assert!(yaml.contains("learning_rate: 0.0002"), "{yaml}");
    assert!(yaml.contains("lr_scheduler_type: linear"));
    assert_eq!(parse(&yaml, "resolved").unwrap(), r);
}

#[test]
fn invalid_yaml_names_the_file() {
    let e = err("model: [unclosed\n");
    assert!(e.starts_with("r.yaml: not valid YAML"), "{e}");
}

#[test]
fn readme_documents_every_recipe_key() {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let schema = serde_yaml::to_value(steptune::recipe::Recipe::default()).unwrap();
    fn walk(v: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
        if let serde_yaml::Value::Mapping(m) = v {
            for (k, sub) in m {
                let p = if prefix.is_empty() { k.as_str().unwrap().to_string() } else { format!("{prefix}.{}", k.as_str().unwrap()) };
                // Leaves only: a section's name is not a setting.
                if sub.is_mapping() {
                    walk(sub, &p, out);
                } else {
                    out.push(p);
                }
            }
        }
    }
    let mut keys = Vec::new();
    walk(&schema, "", &mut keys);
    let missing: Vec<&String> = keys.iter().filter(|k| !readme.contains(&format!("| `{k}` |"))).collect();
    assert!(missing.is_empty(), "README's recipe reference lacks: {missing:?}");
    assert!(keys.len() > 60, "{} keys", keys.len());
}

#[test]
fn report_to_defaults_to_none_and_rejects_unknown_loggers_with_the_nearest() {
    assert!(parse(MIN, "r.yaml").unwrap().training.report_to.is_empty());
    let r = parse(&format!("{MIN}training: {{report_to: [tensorboard]}}\n"), "r.yaml").unwrap();
    assert_eq!(r.training.report_to, vec!["tensorboard".to_string()]);
    let e = err(&format!("{MIN}training: {{report_to: [tensorbord]}}\n"));
    assert!(e.contains("`training.report_to` has unknown logger `tensorbord`") && e.contains("did you mean `tensorboard`?"), "{e}");
    let e = err(&format!("{MIN}training: {{report_to: [wandb]}}\n"));
    assert!(e.contains("unknown logger `wandb`") && e.contains("valid: tensorboard"), "{e}");
}

/// `--set` overrides pass the file's own checks, and every error names the argument.
#[test]
fn overrides_are_checked_like_the_file_and_named_in_errors() {
    use steptune::recipe::{parse_with, Override};
    let set = |args: &[&str]| Override::parse_all(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let seterr = |args: &[&str]| format!("{:#}", parse_with(MIN, "r.yaml", &set(args)).unwrap_err());
    let r = parse_with(MIN, "r.yaml", &set(&["training.learning_rate=1e-4", "finetune.lora_r=32", "finetune.lora_target_modules=[q_proj, v_proj]", "eval.compare_base=false", "training.max_steps=7"])).unwrap();
    assert_eq!(r.training.learning_rate, 1e-4);
    assert_eq!(r.finetune.lora_r, 32);
    assert_eq!(r.finetune.lora_target_modules, vec!["q_proj", "v_proj"]);
    assert!(!r.eval.compare_base);
    assert_eq!(r.training.max_steps, Some(7));
    // The resolved recipe holds the override, so run folders and fingerprints see it.
    assert!(r.to_yaml().contains("lora_r: 32"));
    // The later of two overrides of one key wins; a section absent from the file is made.
    let r = parse_with(MIN, "r.yaml", &set(&["finetune.lora_r=8", "finetune.lora_r=4", "model.train_tokenizer.vocab_size=512"])).unwrap();
    assert_eq!(r.finetune.lora_r, 4);
    assert_eq!(r.model.train_tokenizer.unwrap().vocab_size, 512);
    let e = seterr(&["training.lerning_rate=1e-4"]);
    assert!(e.contains("--set training.lerning_rate=1e-4: unknown key `training.lerning_rate`: did you mean `training.learning_rate`?"), "{e}");
    let e = seterr(&["learning_rate=1e-4"]);
    assert!(e.contains("--set learning_rate=1e-4: unknown key `learning_rate`: it belongs at `training.learning_rate`"), "{e}");
    let e = seterr(&["finetune.lora_r=32", "training.learning_rate=fast"]);
    assert!(e.contains("--set training.learning_rate=fast:") && e.contains("invalid type"), "{e}");
    let e = seterr(&["training.learning_rate=2"]);
    assert!(e.contains("--set training.learning_rate=2: `training.learning_rate` is 2, must be in (0, 1]"), "{e}");
    let e = seterr(&["training.lr_scheduler_type=cosin"]);
    assert!(e.contains("--set training.lr_scheduler_type=cosin") && e.contains("cosine"), "{e}");
    let e = seterr(&["model.train_tokenizer.vocab_sise=512"]);
    assert!(e.contains("--set model.train_tokenizer.vocab_sise=512") && e.contains("vocab_size"), "{e}");
    let e = seterr(&["training.learning_rate.x=1"]);
    assert!(e.contains("`training.learning_rate` is a value"), "{e}");
    let e = format!("{:#}", Override::parse("training.learning_rate").unwrap_err());
    assert!(e.contains("expected KEY.PATH=VALUE"), "{e}");
    // A file error is still the file's, with its line.
    let e = format!("{:#}", parse_with(&format!("{MIN}training: {{learning_rate: x}}\n"), "r.yaml", &set(&["finetune.lora_r=8"])).unwrap_err());
    assert!(e.contains("r.yaml: training.learning_rate") && !e.contains("--set"), "{e}");
}
