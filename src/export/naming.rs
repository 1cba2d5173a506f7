//! The `general.*` keys as llama.cpp's converter derives them (gguf-py's `Metadata`): sampling
//! settings from generation_config.json, the model card's YAML front matter (README.md), the
//! config's `_name_or_path`, and the folder name split into basename, size label, finetune and
//! version; a size label from the parameter count otherwise. Ported rule for rule so the keys
//! match the converter's, Python's string semantics included (`str.title`, `islower`).
use std::path::Path;

use anyhow::{Context, Result};
use regex::Regex;
use serde_json::Value as Json;

use super::gguf::Value;

#[derive(Default, Debug, Clone)]
pub struct Metadata {
    pub name: Option<String>,
    pub author: Option<String>,
    pub version: Option<String>,
    pub organization: Option<String>,
    pub finetune: Option<String>,
    pub basename: Option<String>,
    pub description: Option<String>,
    pub size_label: Option<String>,
    pub license: Option<Vec<String>>,
    pub license_name: Option<String>,
    pub license_link: Option<String>,
    pub source_url: Option<String>,
    pub source_doi: Option<String>,
    pub source_uuid: Option<String>,
    pub source_repo_url: Option<String>,
    pub base_models: Option<Vec<Vec<(String, String)>>>,
    pub datasets: Option<Vec<Vec<(String, String)>>>,
    pub tags: Option<Vec<String>>,
    pub languages: Option<Vec<String>>,
    /// general.sampling.* in gguf-py's order, with their GGUF types.
    pub sampling: Vec<(String, Value)>,
}

/// Python's `str.title()`: a cased letter is upper-cased after a non-cased character, else
/// lower-cased.
fn py_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if cased {
            if prev_cased { out.extend(c.to_lowercase()) } else { out.extend(c.to_uppercase()) }
        } else {
            out.push(c);
        }
        prev_cased = cased;
    }
    out
}

/// Python's `str.islower()`: at least one cased character and none upper-case.
fn py_islower(s: &str) -> bool {
    s.chars().any(|c| c.is_lowercase()) && !s.chars().any(|c| c.is_uppercase())
}

/// `Metadata.id_to_title`: title-case lower-case words unless they are versions or numbers.
pub fn id_to_title(s: &str) -> String {
    let keep = Regex::new(r"^(v\d+(?:\.\d+)*|\d.*)$").unwrap();
    s.trim().replace('-', " ").split_whitespace().map(|w| if py_islower(w) && !keep.is_match(w) { py_title(w) } else { w.to_string() }).collect::<Vec<_>>().join(" ")
}

#[derive(Default, Debug, PartialEq)]
pub struct IdParts {
    pub full_name: Option<String>,
    pub org: Option<String>,
    pub basename: Option<String>,
    pub finetune: Option<String>,
    pub version: Option<String>,
    pub size_label: Option<String>,
}

fn full(re: &str) -> Regex {
    Regex::new(&format!("^(?:{re})$")).unwrap()
}

/// `Metadata.get_model_id_components`: "org/Name-7B-Instruct-v0.2" into its parts.
pub fn model_id_components(model_id: Option<&str>, total_params: i64) -> IdParts {
    let Some(model_id) = model_id else { return IdParts::default() };
    if model_id.contains(' ') {
        return IdParts { full_name: Some(model_id.to_string()), ..Default::default() };
    }
    let (mut org, name) = match model_id.split_once('/') {
        Some((o, n)) => (Some(o.to_string()), n.to_string()),
        None => (None, model_id.to_string()),
    };
    if org.as_deref().is_some_and(|o| o.starts_with('.')) {
        org = None;
    }
    let mut parts: Vec<String> = name.split('-').filter(|p| !p.is_empty()).map(str::to_string).collect();
    let mut types: Vec<Vec<&'static str>> = vec![Vec::new(); parts.len()];
    let version_re = full(r"(?i)(v|iter)?\d+([.]\d+)*");
    let type_re = full(r"(?i)i?q\d(_\w)*|b?fp?(16|32)");
    let size_re = full(r"(?i)(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)");
    let finetune_re = full(r"(?i)chat|instruct|vision|lora");
    let add = |t: &mut Vec<&'static str>, k: &'static str| {
        if !t.contains(&k) {
            t.push(k)
        }
    };
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if version_re.is_match(&part) {
            add(&mut types[i], "version");
        } else if type_re.is_match(&part) {
            add(&mut types[i], "type");
            parts[i] = part.to_uppercase();
        } else if i > 0 && size_re.is_match(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            let n = p.len();
            // bloom-7b1 notation: 7b1 -> 7.1b
            if p[n - 1].is_ascii_digit() && n >= 2 {
                let (a, b) = (p[n - 2], p[n - 1]);
                p.truncate(n - 2);
                p.push('.');
                p.push(b);
                p.push(a);
            }
            let n = p.len();
            if n > 1 && p[n - 2].is_ascii_digit() && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            let mut s: String = p.iter().collect();
            if total_params != 0 {
                let (num, unit) = s.split_at(s.len() - s.chars().last().map_or(0, char::len_utf8));
                if let Ok(v) = num.parse::<f64>() {
                    let pos = " KMBT".find(unit).map_or(-1, |x| x as i32);
                    let label = v * 1000f64.powi(pos);
                    let too_far = (total_params < 0 && label < ((total_params.abs()) / 8) as f64)
                        || (total_params > 0 && (label - total_params as f64).abs() > (7 * total_params / 8) as f64);
                    if too_far {
                        add(&mut types[i], "finetune");
                        s = format!("{}{}", num, unit.to_lowercase());
                    }
                }
            }
            if types[i].is_empty() {
                add(&mut types[i], "size_label");
            }
            parts[i] = s;
        } else if i > 0 && finetune_re.is_match(&part) {
            if total_params < 0 && part.to_lowercase() == "lora" {
                add(&mut types[i], "type");
            } else {
                add(&mut types[i], "finetune");
            }
        }
    }
    // Word sizes ("small") give way to a numeric one.
    if parts.iter().zip(&types).any(|(n, t)| t.contains(&"size_label") && n.chars().any(|c| c.is_ascii_digit())) {
        for (n, t) in parts.iter().zip(types.iter_mut()) {
            if t.contains(&"size_label") && n.chars().all(char::is_alphabetic) {
                t.retain(|k| *k != "size_label");
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(types.iter_mut()) {
        let first_alpha = p.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((t.is_empty() && first_alpha) || t.contains(&"version")) {
            add(t, "basename");
        } else {
            at_start = false;
            if t.is_empty() {
                add(t, "finetune");
            }
        }
    }
    for t in types.iter_mut().rev() {
        if t.contains(&"basename") && t.len() > 1 {
            t.retain(|k| *k != "basename");
        } else {
            break;
        }
    }
    let join = |pred: &dyn Fn(&Vec<&str>) -> bool| -> Option<String> {
        let v: Vec<&str> = parts.iter().zip(&types).filter(|(_, t)| pred(t)).map(|(p, _)| p.as_str()).collect();
        if v.is_empty() { None } else { Some(v.join("-")) }
    };
    let mut basename = join(&|t| t.contains(&"basename"));
    let mut sizes: Vec<&str> = Vec::new();
    for (p, t) in parts.iter().zip(&types) {
        if t.contains(&"size_label") && !sizes.contains(&p.as_str()) {
            sizes.push(p);
        }
    }
    let size_label = if sizes.is_empty() { None } else { Some(sizes.join("-")) };
    let finetune = join(&|t| t.contains(&"finetune"));
    let version = join(&|t| t.contains(&"version") && !t.contains(&"basename"));
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    IdParts { full_name: Some(name), org, basename, finetune, version, size_label }
}

/// gguf-py's `model_weight_count_rounded_notation(n, min_digits=2)`: "4.9M", "8.2B".
pub fn size_label(total_params: u64) -> String {
    let n = total_params as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let digits = format!("{}", scaled.round_ties_even() as i64);
    let fix = 2usize.saturating_sub(digits.trim_start_matches('0').len());
    format!("{scaled:.fix$}{suffix}")
}

fn read_json(path: &Path) -> Option<Json> {
    std::fs::read_to_string(path).ok().and_then(|s| serde_json::from_str(&s).ok())
}

/// The YAML front matter of README.md, as `load_model_card` reads it (empty when absent).
fn model_card(dir: &Path) -> Result<serde_yaml::Mapping> {
    let path = dir.join("README.md");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Default::default()) };
    let lines: Vec<&str> = text.lines().collect();
    if lines.first() != Some(&"---") {
        return Ok(Default::default());
    }
    let mut yaml = String::new();
    for l in &lines[1..] {
        if *l == "---" {
            break;
        }
        yaml.push_str(l);
        yaml.push('\n');
    }
    let yaml = yaml.replace("- no\n", "- \"no\"\n").replace('\t', "  ");
    match serde_yaml::from_str::<serde_yaml::Value>(&yaml).with_context(|| format!("{}: the YAML front matter does not parse", path.display()))? {
        serde_yaml::Value::Mapping(m) => Ok(m),
        _ => Ok(Default::default()),
    }
}

fn yaml_str(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

fn yaml_list(v: &serde_yaml::Value) -> Vec<serde_yaml::Value> {
    match v {
        serde_yaml::Value::Sequence(s) => s.clone(),
        serde_yaml::Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// A base model or dataset entry from a card: a Hub id, a URL, or a mapping given as is.
fn source_entry(v: &serde_yaml::Value, total_params: i64) -> Vec<(String, String)> {
    let mut e = Vec::new();
    match v {
        serde_yaml::Value::String(id) => {
            let hf = Regex::new(r"^https?://huggingface.co/([^/]+/[^/]+)$").unwrap();
            let (parts, url) = if id.starts_with("http://") || id.starts_with("https://") || id.starts_with("ssh://") {
                e.push(("repo_url".to_string(), id.clone()));
                match hf.captures(id).filter(|_| id.contains("huggingface.co")) {
                    Some(c) => (Some(model_id_components(Some(&c[1]), total_params)), None),
                    None => (None, None),
                }
            } else {
                let p = model_id_components(Some(id), total_params);
                let url = match (&p.org, &p.full_name) {
                    (Some(o), Some(n)) => Some(format!("https://huggingface.co/{o}/{n}")),
                    _ => None,
                };
                (Some(p), url)
            };
            if let Some(p) = parts {
                let mut head = Vec::new();
                if let Some(n) = &p.full_name {
                    head.push(("name".to_string(), id_to_title(n)));
                }
                if let Some(o) = &p.org {
                    head.push(("organization".to_string(), id_to_title(o)));
                }
                if let Some(v) = &p.version {
                    head.push(("version".to_string(), v.clone()));
                }
                // Python dict order: repo_url first for URLs (set before the parts), last for ids.
                e.extend(head);
                if let Some(u) = url {
                    e.push(("repo_url".to_string(), u));
                }
            }
        }
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                if let (Some(k), Some(v)) = (yaml_str(k), yaml_str(v)) {
                    e.push((k, v));
                }
            }
        }
        _ => {}
    }
    e
}

impl Metadata {
    /// What `Metadata.load` + `prepare_metadata` compute for a model folder. `name_dir` is the
    /// folder whose name the heuristics read (the merged model's, when an adapter is merged).
    pub fn load(model_dir: &Path, name_dir: &Path, total_params: i64) -> Result<Metadata> {
        let mut m = Metadata::default();
        let card = model_card(model_dir)?;
        let get = |k: &str| card.get(serde_yaml::Value::String(k.to_string()));
        let set = |field: &mut Option<String>, key: &str| {
            if field.is_none() {
                if let Some(v) = get(key).and_then(yaml_str) {
                    *field = Some(v);
                }
            }
        };
        for prefix in ["", "model_"] {
            set(&mut m.name, &format!("{prefix}name"));
            set(&mut m.author, &format!("{prefix}author"));
            set(&mut m.version, &format!("{prefix}version"));
            set(&mut m.organization, &format!("{prefix}organization"));
            set(&mut m.description, &format!("{prefix}description"));
            set(&mut m.finetune, &format!("{prefix}finetune"));
            set(&mut m.basename, &format!("{prefix}basename"));
            set(&mut m.size_label, &format!("{prefix}size_label"));
            set(&mut m.source_url, &format!("{prefix}url"));
            set(&mut m.source_doi, &format!("{prefix}doi"));
            set(&mut m.source_uuid, &format!("{prefix}uuid"));
            set(&mut m.source_repo_url, &format!("{prefix}repo_url"));
        }
        set(&mut m.name, "model_name");
        set(&mut m.author, "model_creator");
        set(&mut m.basename, "model_type");
        if let Some(v) = get("base_model").or_else(|| get("base_models")).or_else(|| get("base_model_sources")) {
            m.base_models = Some(yaml_list(v).iter().map(|x| source_entry(x, total_params)).collect());
        } else if ["base_model", "base_models", "base_model_sources"].iter().any(|k| get(k).is_some()) {
            m.base_models = Some(Vec::new());
        }
        if let Some(v) = get("datasets").or_else(|| get("dataset")).or_else(|| get("dataset_sources")) {
            m.datasets = Some(yaml_list(v).iter().map(|x| source_entry(x, total_params)).collect());
        }
        if let Some(v) = get("license") {
            m.license = match v {
                serde_yaml::Value::Sequence(s) => Some(s.iter().filter_map(yaml_str).collect()),
                other => yaml_str(other).map(|s| vec![s]),
            };
        }
        set(&mut m.license_name, "license_name");
        set(&mut m.license_link, "license_link");
        let list = |field: &mut Option<Vec<String>>, key: &str| {
            if let Some(v) = get(key) {
                let cur = field.get_or_insert_with(Vec::new);
                cur.extend(yaml_list(v).iter().filter_map(yaml_str));
            }
        };
        list(&mut m.tags, "tags");
        list(&mut m.tags, "pipeline_tag");
        list(&mut m.languages, "languages");
        list(&mut m.languages, "language");

        let apply = |p: IdParts, m: &mut Metadata| {
            if m.name.is_none() {
                m.name = p.full_name.as_deref().map(id_to_title);
            }
            if m.organization.is_none() {
                m.organization = p.org.as_deref().map(id_to_title);
            }
            m.basename = m.basename.take().or(p.basename);
            m.finetune = m.finetune.take().or(p.finetune);
            m.version = m.version.take().or(p.version);
            m.size_label = m.size_label.take().or(p.size_label);
        };
        if let Some(id) = read_json(&model_dir.join("config.json")).and_then(|c| c.get("_name_or_path").and_then(Json::as_str).map(str::to_string)) {
            if id.matches('/').count() <= 1 {
                apply(model_id_components(Some(&id), total_params), &mut m);
            }
        }
        let dir_name = name_dir.canonicalize().unwrap_or_else(|_| name_dir.to_path_buf());
        let dir_name = dir_name.file_name().map(|s| s.to_string_lossy().to_string());
        apply(model_id_components(dir_name.as_deref(), total_params), &mut m);

        if let Some(g) = read_json(&model_dir.join("generation_config.json")) {
            let f32_of = |k: &str| g.get(k).and_then(Json::as_f64).map(|x| Value::F32(x as f32));
            let i32_of = |k: &str| g.get(k).and_then(Json::as_i64).map(|x| Value::I32(x as i32));
            let entries: [(&str, Option<Value>); 12] = [
                ("sequence", g.get("sequence").and_then(Json::as_str).map(|s| Value::Str(s.to_string()))),
                ("top_k", i32_of("top_k")),
                ("top_p", f32_of("top_p")),
                ("min_p", f32_of("min_p")),
                ("xtc_probability", f32_of("xtc_probability")),
                ("xtc_threshold", f32_of("xtc_threshold")),
                ("temp", f32_of("temperature")),
                ("penalty_last_n", i32_of("penalty_last_n")),
                ("penalty_repeat", f32_of("penalty_repeat").or_else(|| f32_of("repetition_penalty"))),
                ("mirostat", i32_of("mirostat")),
                ("mirostat_tau", f32_of("mirostat_tau")),
                ("mirostat_eta", f32_of("mirostat_eta")),
            ];
            m.sampling = entries.into_iter().filter_map(|(k, v)| v.map(|v| (format!("general.sampling.{k}"), v))).collect();
        }
        if m.name.is_none() {
            m.name = dir_name;
        }
        Ok(m)
    }

    /// The keys in `set_gguf_meta_model`'s order.
    pub fn keys(&self) -> Vec<(String, Value)> {
        let mut kv: Vec<(String, Value)> = self.sampling.clone();
        let s = |k: &str, v: &Option<String>, kv: &mut Vec<(String, Value)>| {
            if let Some(v) = v {
                kv.push((format!("general.{k}"), Value::Str(v.clone())));
            }
        };
        s("name", &self.name, &mut kv);
        s("author", &self.author, &mut kv);
        s("version", &self.version, &mut kv);
        s("organization", &self.organization, &mut kv);
        s("finetune", &self.finetune, &mut kv);
        s("basename", &self.basename, &mut kv);
        s("description", &self.description, &mut kv);
        s("size_label", &self.size_label, &mut kv);
        if let Some(l) = &self.license {
            kv.push(("general.license".into(), Value::Str(l.join(","))));
        }
        s("license.name", &self.license_name, &mut kv);
        s("license.link", &self.license_link, &mut kv);
        s("source.url", &self.source_url, &mut kv);
        s("source.doi", &self.source_doi, &mut kv);
        s("source.uuid", &self.source_uuid, &mut kv);
        s("source.repo_url", &self.source_repo_url, &mut kv);
        for (group, list) in [("base_model", &self.base_models), ("dataset", &self.datasets)] {
            if let Some(list) = list {
                kv.push((format!("general.{group}.count"), Value::U32(list.len() as u32)));
                for (i, entry) in list.iter().enumerate() {
                    for field in ["name", "author", "version", "organization", "description", "url", "doi", "uuid", "repo_url"] {
                        if let Some((_, v)) = entry.iter().find(|(k, _)| k == field) {
                            kv.push((format!("general.{group}.{i}.{field}"), Value::Str(v.clone())));
                        }
                    }
                }
            }
        }
        if let Some(t) = &self.tags {
            kv.push(("general.tags".into(), Value::StrArray(t.clone())));
        }
        if let Some(l) = &self.languages {
            kv.push(("general.languages".into(), Value::StrArray(l.clone())));
        }
        kv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_components_follow_llama_cpp() {
        let p = model_id_components(Some("Qwen/Qwen3-8B"), 8_190_735_360);
        assert_eq!((p.org.as_deref(), p.basename.as_deref(), p.size_label.as_deref(), p.finetune.as_deref()), (Some("Qwen"), Some("Qwen3"), Some("8B"), None));
        let p = model_id_components(Some("meta-llama/Llama-3.1-8B-Instruct"), 8_030_261_248);
        // The version right after the name stays in the basename (gguf-py gives the same).
        assert_eq!((p.basename.as_deref(), p.version.as_deref(), p.size_label.as_deref(), p.finetune.as_deref()), (Some("Llama-3.1"), None, Some("8B"), Some("Instruct")));
        // A folder name with no size, finetune or version says nothing but its name.
        let p = model_id_components(Some("qwen3_tied"), 4_900_000);
        assert_eq!((p.full_name.as_deref(), p.basename), (Some("qwen3_tied"), None));
        assert_eq!(id_to_title("qwen3_tied"), "Qwen3_Tied");
        assert_eq!(id_to_title("Qwen3-8B"), "Qwen3 8B");
        assert_eq!(size_label(4_870_000), "4.9M");
        assert_eq!(size_label(8_190_735_360), "8.2B");
        assert_eq!(size_label(12_345_678_901), "12B");
    }
}
