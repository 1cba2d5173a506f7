//! The tokenizer keys of a GGUF file for byte-level BPE models (Qwen2/Qwen3, Llama 3), as
//! llama.cpp's converter writes them (`_set_vocab_gpt2` + gguf-py's `SpecialVocab`): every id up
//! to the config's vocab_size with its type, the merges, the special ids, add_bos/add_eos and the
//! chat template. `tokenizer.ggml.pre` names llama.cpp's pre-tokenizer; like the converter, it is
//! recognised by hashing the tokenization of a fixed text (table in bpe_pre_hashes.tsv).
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::gguf::Value;

const PRE_TABLE: &str = include_str!("bpe_pre_hashes.tsv");

fn read_json(path: &Path) -> Result<Option<Json>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?))
}

/// The converter's identifier of a pre-tokenizer: sha256 of Python's `str(tokenizer.encode(chktxt))`.
pub fn chkhsh(tok: &Tokenizer) -> Result<String> {
    let mut lines = PRE_TABLE.lines().filter(|l| !l.starts_with('#'));
    let chk = lines.next().and_then(|l| l.strip_prefix("chktxt\t")).context("bpe_pre_hashes.tsv has no chktxt line")?;
    let chktxt: String = serde_json::from_str(chk)?;
    let enc = tok.encode(chktxt.as_str(), true).map_err(|e| anyhow::anyhow!("tokenizing the pre-tokenizer check text: {e}"))?;
    let list = format!("[{}]", enc.get_ids().iter().map(u32::to_string).collect::<Vec<_>>().join(", "));
    Ok(format!("{:x}", Sha256::digest(list.as_bytes())))
}

/// llama.cpp's name for the pre-tokenizer with this hash (the table's last match, as the
/// converter's chain of `if`s).
pub fn pre_name(hash: &str) -> Option<&'static str> {
    PRE_TABLE.lines().filter(|l| !l.starts_with('#') && !l.starts_with("chktxt")).filter_map(|l| l.split_once('\t')).filter(|(h, _)| *h == hash).map(|(_, n)| n).last()
}

/// The converter's `does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

struct Added {
    special: bool,
    normalized: bool,
}

/// The tokenizer keys in the converter's order. `pre` overrides the recognised pre-tokenizer.
pub fn keys(dir: &Path, vocab_size: usize, pre: Option<&str>) -> Result<Vec<(String, Value)>> {
    let tj_path = dir.join("tokenizer.json");
    let tok = Tokenizer::from_file(&tj_path).map_err(|e| anyhow::anyhow!("cannot load {}: {e}", tj_path.display()))?;
    let tj = read_json(&tj_path)?.context("tokenizer.json vanished")?;
    let tc = read_json(&dir.join("tokenizer_config.json"))?;

    let pre = match pre {
        Some(p) => {
            let known: Vec<&str> = PRE_TABLE.lines().filter(|l| !l.starts_with('#') && !l.starts_with("chktxt")).filter_map(|l| l.split_once('\t')).map(|(_, n)| n).chain(["gpt-2", "default"]).collect();
            if !known.contains(&p) {
                let mut names = known.clone();
                names.sort_unstable();
                names.dedup();
                bail!("--tokenizer-pre {p}: llama.cpp has no pre-tokenizer of that name (known: {})", names.join(", "));
            }
            p.to_string()
        }
        None => {
            let h = chkhsh(&tok)?;
            match pre_name(&h) {
                Some(n) => n.to_string(),
                None => bail!(
                    "{}: llama.cpp does not know this BPE pre-tokenizer (chkhsh {h}), so its converter refuses it too; \
                     if you know which of llama.cpp's pre-tokenizers it behaves as (Qwen: qwen2, Llama 3: llama-bpe, a byte-level BPE with GPT-2's split: gpt-2), \
                     pass --tokenizer-pre NAME",
                    tj_path.display()
                ),
            }
        }
    };

    // Added tokens as transformers sees them: tokenizer_config's added_tokens_decoder over
    // tokenizer.json's list.
    let mut added: HashMap<u32, Added> = HashMap::new();
    for a in tj.get("added_tokens").and_then(Json::as_array).into_iter().flatten() {
        if let Some(id) = a.get("id").and_then(Json::as_u64) {
            added.insert(id as u32, Added { special: a.get("special").and_then(Json::as_bool).unwrap_or(false), normalized: a.get("normalized").and_then(Json::as_bool).unwrap_or(true) });
        }
    }
    if let Some(dec) = tc.as_ref().and_then(|c| c.get("added_tokens_decoder")).and_then(Json::as_object) {
        for (id, a) in dec {
            if let Ok(id) = id.parse::<u32>() {
                added.insert(id, Added { special: a.get("special").and_then(Json::as_bool).unwrap_or(false), normalized: a.get("normalized").and_then(Json::as_bool).unwrap_or(true) });
            }
        }
    }
    let vocab = tok.get_vocab(true);
    if let Some(max) = vocab.values().max() {
        if *max as usize >= vocab_size {
            bail!("{}: token id {max} is not below the config's vocab_size {vocab_size}", tj_path.display());
        }
    }
    let mut reverse: Vec<Option<&str>> = vec![None; vocab_size];
    for (t, id) in &vocab {
        reverse[*id as usize] = Some(t.as_str());
    }
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (i, t) in reverse.iter().enumerate() {
        match (t, added.get(&(i as u32))) {
            (None, _) => {
                tokens.push(format!("[PAD{i}]"));
                types.push(5);
            }
            (Some(t), Some(a)) => {
                let mut t = t.to_string();
                if !a.normalized {
                    let ids = tok.encode(t.as_str(), false).map_err(|e| anyhow::anyhow!("{e}"))?;
                    t = tok.decode(ids.get_ids(), false).map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                if a.special || looks_special(&t) {
                    types.push(3);
                } else {
                    t = t.replace('\u{2581}', " ");
                    types.push(4);
                }
                tokens.push(t);
            }
            (Some(t), None) => {
                tokens.push(t.to_string());
                types.push(1);
            }
        }
    }
    let mut kv = vec![
        ("tokenizer.ggml.model".to_string(), Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), Value::Str(pre)),
        ("tokenizer.ggml.tokens".to_string(), Value::StrArray(tokens)),
        ("tokenizer.ggml.token_type".to_string(), Value::I32Array(types)),
    ];
    kv.extend(special_vocab(dir, &tj, tc, vocab_size)?);
    Ok(kv)
}

/// gguf-py's `SpecialVocab(dir, load_merges=True)` for tokenizer.json + tokenizer_config.json +
/// config.json: merges, special token ids, add_bos/add_eos, chat template.
fn special_vocab(dir: &Path, tj: &Json, mut tc: Option<Json>, n_vocab: usize) -> Result<Vec<(String, Value)>> {
    let mut kv = Vec::new();
    let merges: Vec<String> = match tj.pointer("/model/merges").and_then(Json::as_array) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|e| match e {
                Json::String(s) => Ok(s.clone()),
                Json::Array(p) if p.len() == 2 => Ok(p
                    .iter()
                    .map(|s| s.as_str().unwrap_or_default().chars().map(|c| if c == ' ' { '\u{120}' } else { c }).collect::<String>())
                    .collect::<Vec<_>>()
                    .join(" ")),
                _ => bail!("{}: unknown merges format", dir.join("tokenizer.json").display()),
            })
            .collect::<Result<_>>()?,
        _ => Vec::new(),
    };
    if merges.is_empty() {
        bail!("{}: no BPE merges; steptune exports byte-level BPE tokenizers only", dir.join("tokenizer.json").display());
    }
    kv.push(("tokenizer.ggml.merges".to_string(), Value::StrArray(merges)));

    let mut ids: Vec<(&'static str, u32)> = Vec::new();
    let mut add_tok: Vec<(&'static str, bool)> = Vec::new();
    let set_add = |add_tok: &mut Vec<(&'static str, bool)>, k: &'static str, v: bool, overwrite: bool| match add_tok.iter_mut().find(|(n, _)| *n == k) {
        Some(e) if overwrite => e.1 = v,
        Some(_) => {}
        None => add_tok.push((k, v)),
    };
    let types = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];
    let added_tokens: Vec<&Json> = tj.get("added_tokens").and_then(Json::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    let tc_token = |tc: &Option<Json>, typ: &str| -> Option<String> {
        match tc.as_ref()?.get(format!("{typ}_token"))? {
            Json::String(s) => Some(s.clone()),
            Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
            _ => None,
        }
    };
    // The post-processor says whether BOS/EOS are added (ByteLevel: neither; a template with a
    // leading special token: BOS).
    if let Some(pp) = tj.get("post_processor").filter(|p| !p.is_null()) {
        let procs: Vec<&Json> = match pp.get("processors").and_then(Json::as_array) {
            Some(list) => list.iter().collect(),
            None => vec![pp],
        };
        for p in procs {
            match p.get("type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    set_add(&mut add_tok, "bos", false, false);
                    set_add(&mut add_tok, "eos", false, false);
                }
                Some("TemplateProcessing") => {
                    // Mirrors SpecialVocab's crude reading of simple templates, rule for rule.
                    let single = p.get("single").and_then(Json::as_array).cloned().unwrap_or_default();
                    let pair = p.get("pair").and_then(Json::as_array).cloned().unwrap_or_default();
                    let sp = |e: &Json| e.pointer("/SpecialToken/id").and_then(Json::as_str).map(str::to_string);
                    let mut special_bos = tc_token(&tc, "bos");
                    let mut special_cls = tc_token(&tc, "cls");
                    let special_eos = tc_token(&tc, "eos");
                    let special_sep = tc_token(&tc, "sep");
                    let (mut first, mut last) = (None, None);
                    if single.len() > 1 {
                        first = sp(&single[0]);
                        if let Some(f) = &first {
                            if tc.is_none() {
                                special_bos = Some(f.clone());
                            } else if special_bos.as_ref() != Some(f) && special_cls.as_ref() != Some(f) {
                                if special_bos.is_none() {
                                    tc.as_mut().unwrap()["bos_token"] = Json::String(f.clone());
                                    special_bos = Some(f.clone());
                                }
                                if special_cls.is_none() {
                                    tc.as_mut().unwrap()["cls_token"] = Json::String(f.clone());
                                    special_cls = Some(f.clone());
                                }
                            }
                            set_add(&mut add_tok, "bos", special_bos.as_ref() == Some(f) || special_cls.as_ref() == Some(f), true);
                        }
                        last = sp(&single[single.len() - 1]);
                        if let Some(l) = &last {
                            if tc.is_some() && special_eos.as_ref() != Some(l) {
                                bail!("{}: a trailing special token in the post-processor's template ({l}) other than EOS is not supported", dir.join("tokenizer.json").display());
                            }
                            set_add(&mut add_tok, "eos", true, true);
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(first.is_some() && sp(&pair[0]) == first);
                        let stop = if last.is_some() && sp(&pair[pair.len() - 1]) == last { pair.len() - 1 } else { pair.len() };
                        let inner = if start < stop { &pair[start..stop] } else { &pair[0..0] };
                        if !inner.is_empty() {
                            let seq = |e: &Json| e.pointer("/Sequence/id").and_then(Json::as_str).map(str::to_string);
                            let (a, b) = (seq(&inner[0]), seq(&inner[inner.len() - 1]));
                            if a.as_deref() == Some("A") && b.as_deref() == Some("B") && inner.len() > 2 {
                                let mid = &inner[1..inner.len() - 1];
                                let mut add_sep = false;
                                let is_sep = |x: &Option<String>| x.is_some() && (*x == special_sep || *x == special_eos);
                                let e0 = sp(&mid[0]);
                                if e0.is_some() && is_sep(&e0) && last.is_none() {
                                    add_sep = true;
                                }
                                if mid.len() == 2 && is_sep(&sp(&mid[1])) {
                                    add_sep = true;
                                }
                                set_add(&mut add_tok, "sep", add_sep, true);
                                if add_sep && special_sep.is_none() {
                                    if let Some(c) = tc.as_mut() {
                                        c["sep_token"] = special_eos.clone().map(Json::String).unwrap_or(Json::Null);
                                    }
                                }
                            }
                        }
                    }
                }
                Some("RobertaProcessing") => bail!("{}: RobertaProcessing tokenizers are not byte-level chat models; not supported", dir.join("tokenizer.json").display()),
                _ => {}
            }
        }
    }
    let set_id = |ids: &mut Vec<(&'static str, u32)>, typ: &'static str, id: Option<u64>| {
        if let Some(id) = id {
            if (id as usize) < n_vocab && !ids.iter().any(|(t, _)| *t == typ) {
                ids.push((typ, id as u32));
            }
        }
    };
    let mut chat_template: Option<String> = None;
    if let Some(c) = &tc {
        chat_template = match c.get("chat_template") {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Array(_)) => bail!("{}: a list of named chat templates is not supported; keep one string", dir.join("tokenizer_config.json").display()),
            _ => None,
        };
        if chat_template.is_none() {
            if let Ok(t) = std::fs::read_to_string(dir.join("chat_template.jinja")) {
                chat_template = Some(t);
            } else if let Some(j) = read_json(&dir.join("chat_template.json"))? {
                chat_template = j.get("chat_template").and_then(Json::as_str).map(str::to_string);
            }
        }
        for typ in types {
            if let Some(b) = c.get(format!("add_{typ}_token")).and_then(Json::as_bool) {
                set_add(&mut add_tok, typ, b, false);
            }
            if let Some(content) = tc_token(&tc, typ) {
                let id = added_tokens.iter().find(|a| a.get("content").and_then(Json::as_str) == Some(content.as_str())).and_then(|a| a.get("id")).and_then(Json::as_u64);
                set_id(&mut ids, typ, id);
            }
        }
    }
    if let Some(cfg) = read_json(&dir.join("config.json"))? {
        for typ in types {
            let id = cfg.get(format!("{typ}_token_id")).or_else(|| cfg.pointer(&format!("/text_config/{typ}_token_id"))).and_then(Json::as_u64);
            set_id(&mut ids, typ, id);
        }
    }
    for (typ, id) in ids {
        // gguf-py has no writer for cls ids: the converter skips them.
        let key = match typ {
            "pad" => "padding",
            "sep" => "seperator",
            "unk" => "unknown",
            "cls" => continue,
            t => t,
        };
        kv.push((format!("tokenizer.ggml.{key}_token_id"), Value::U32(id)));
    }
    for (typ, v) in add_tok {
        if !matches!(typ, "bos" | "eos" | "sep") {
            continue; // no writer in gguf-py for the others
        }
        kv.push((format!("tokenizer.ggml.add_{typ}_token"), Value::Bool(v)));
    }
    if let Some(t) = chat_template {
        kv.push(("tokenizer.chat_template".to_string(), Value::Str(t)));
    }
    Ok(kv)
}
