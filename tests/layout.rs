//! The module layering of `src/lib.rs`: a module may import only modules below it, so the
//! building blocks never reach up into the stages that use them (no import loops).
use std::collections::BTreeSet;
use std::path::Path;

/// Bottom first, as `src/lib.rs` documents it.
const LAYERS: [&str; 12] = ["ffi", "recipe", "dist", "run", "nn", "model", "data", "adapt", "train", "eval", "export", "jobs"];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules a file names as `crate::NAME`.
fn imported(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        out.insert(name);
    }
    out
}

#[test]
fn modules_import_only_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel.iter().next().unwrap().to_str().unwrap().trim_end_matches(".rs").to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let level = LAYERS.iter().position(|&l| l == top).unwrap_or_else(|| panic!("src/{top} is not in LAYERS: place it in the layering of src/lib.rs"));
        seen.insert(top.clone());
        for m in imported(&std::fs::read_to_string(f).unwrap()) {
            if m == top {
                continue;
            }
            match LAYERS.iter().position(|&l| l == m) {
                Some(l) if l < level => {}
                _ => wrong.push(format!("{} imports crate::{m}", rel.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "imports that go up or sideways:\n{}", wrong.join("\n"));
    assert_eq!(seen.len(), LAYERS.len(), "every layer exists: {seen:?}");
}

#[test]
fn the_checker_sees_an_upward_import() {
    let text = "use crate::nn::linear::Linear;\nfn f() { crate::model::load_model(); }\n";
    assert_eq!(imported(text), BTreeSet::from(["nn".to_string(), "model".to_string()]));
}
