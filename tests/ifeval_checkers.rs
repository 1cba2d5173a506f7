//! The 25 IFEval checkers equal the pinned reference (lm-eval 0.4.9.1's copy of google-research's
//! instruction_following_eval, langdetect seeded with 0) boolean for boolean, strict and loose,
//! on the corpus scripts/make_ifeval_fixtures.py wrote: hand-written edge cases per checker and
//! generated responses for every real (instruction, kwargs) pair; then whole prompts, scored as
//! the reference's evaluation_lib scores them.
use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};
use steptune::eval::ifeval::{self, checkers, IfevalPrompt};

fn fixture(name: &str) -> Value {
    let p = format!("{}/tests/fixtures/ifeval/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(120).collect();
    format!("{s:?}")
}

#[test]
fn every_checker_decides_as_the_reference_strict_and_loose() {
    let fx = fixture("checkers.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 400, "the corpus has {} responses", cases.len());
    let mut per_type: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for c in cases {
        let id = c["instruction_id"].as_str().unwrap().to_string();
        let kwargs: Map<String, Value> = c["kwargs"].as_object().unwrap().clone();
        let p = IfevalPrompt {
            key: 0,
            prompt: c["prompt"].as_str().unwrap().to_string(),
            instruction_id_list: vec![id.clone()],
            kwargs: vec![kwargs],
        };
        let response = c["response"].as_str().unwrap();
        let got = ifeval::score_one(&p, response).unwrap();
        let (want_s, want_l) = (c["strict"].as_bool().unwrap(), c["loose"].as_bool().unwrap());
        let e = per_type.entry(id.clone()).or_default();
        e.0 += 1;
        if got.strict[0] != want_s || got.loose[0] != want_l {
            e.1 += 1;
            mismatches.push(format!(
                "{id} {}: strict {} (reference {want_s}), loose {} (reference {want_l}) on {}",
                c["kwargs"], got.strict[0], got.loose[0], short(response)
            ));
        }
    }
    assert_eq!(per_type.len(), checkers::INSTRUCTION_IDS.len(), "every instruction type has cases");
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ from the reference ({per_type:?}):\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn whole_prompts_score_as_the_reference_row_by_row() {
    let want = fixture("scores.json");
    let prompts = ifeval::read_prompts(None).unwrap();
    assert_eq!(prompts.len(), 541);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ifeval/responses.jsonl");
    let responses = ifeval::read_responses(&path).unwrap();
    let got = ifeval::score(&prompts, &responses).unwrap();
    let want_rows = want["rows"].as_array().unwrap();
    let mut bad = Vec::new();
    for (row, w) in got.rows.iter().zip(want_rows) {
        assert_eq!(row.key, w["key"].as_i64().unwrap());
        let ws: Vec<bool> = serde_json::from_value(w["strict"].clone()).unwrap();
        let wl: Vec<bool> = serde_json::from_value(w["loose"].clone()).unwrap();
        if row.strict != ws || row.loose != wl {
            bad.push(format!("key {}: {:?} strict {:?} vs {ws:?}, loose {:?} vs {wl:?}", row.key, row.instruction_id_list, row.strict, row.loose));
        }
    }
    assert!(bad.is_empty(), "{} prompts differ:\n{}", bad.len(), bad.join("\n"));
    for k in ["strict_prompt", "strict_instruction", "loose_prompt", "loose_instruction"] {
        let g = match k {
            "strict_prompt" => got.strict_prompt,
            "strict_instruction" => got.strict_instruction,
            "loose_prompt" => got.loose_prompt,
            _ => got.loose_instruction,
        };
        // Both are count/count in f64; serde_json's default float parser may be 1 ulp off.
        assert!((g - want[k].as_f64().unwrap()).abs() < 1e-12, "{k}: {g} vs {}", want[k]);
    }
    // The per-type table counts every instruction of the data once.
    let n: usize = got.per_type.values().map(|t| t.count).sum();
    assert_eq!(n, 834);
    assert_eq!(got.per_type.len(), 25);
}

#[test]
fn language_detection_equals_langdetect_seeded_with_0() {
    let fx = fixture("checkers.json");
    let order: Vec<String> = serde_json::from_value(fx["meta"]["langdetect_profile_order"].clone()).unwrap();
    assert_eq!(order, checkers::LANGDETECT_PROFILE_ORDER, "the reference's profile order");
    let mut bad = Vec::new();
    let langs = fx["languages"].as_array().unwrap();
    for l in langs {
        let text = l["text"].as_str().unwrap();
        let want = l["lang"].as_str().map(str::to_string);
        let got = checkers::detect_language(text);
        if got != want {
            bad.push(format!("{}: {got:?} vs {want:?}", short(text)));
        }
    }
    assert!(langs.iter().filter(|l| l["lang"].is_null()).count() >= 3, "featureless texts are covered");
    assert!(bad.is_empty(), "{} texts differ:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn python_text_semantics() {
    use checkers::{count_words, py_islower, py_isupper, py_json_loads_ok, py_split, py_strip};
    assert_eq!(py_strip("\x1c a \u{3000}"), "a");
    assert_eq!(py_split(" a\tb\x1fc "), vec!["a", "b", "c"]);
    assert!(py_isupper("ABC 1") && !py_isupper("123") && !py_isupper("ǅ") && !py_isupper("ABc"));
    assert!(py_islower("abc 1") && !py_islower("123") && !py_islower("ǆA"));
    // Python's \w takes letters and numbers but not combining marks: "e\u0301" is two words, as is "don't".
    assert_eq!(count_words("e\u{301}t\u{e9} don't x_y ١٢"), 6);
    assert!(py_json_loads_ok("NaN") && py_json_loads_ok("[-Infinity]") && py_json_loads_ok("\"\\ud800\""));
    assert!(!py_json_loads_ok("{'a': 1}") && !py_json_loads_ok("01") && !py_json_loads_ok("\"a\tb\""));
}

#[test]
fn a_missing_or_malformed_parameter_is_named() {
    let kw = |v: Value| v.as_object().unwrap().clone();
    let e = checkers::Instruction::new("length_constraints:number_words", &kw(serde_json::json!({"num_words": 5})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`relation`") && e.contains("at random"), "{e}");
    let e = checkers::Instruction::new("keywords:frequency", &kw(serde_json::json!({"keyword": "a", "frequency": "3", "relation": "at least"})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`frequency` must be an integer"), "{e}");
    let e = checkers::Instruction::new("punctuation:no_comma", &kw(serde_json::json!({"num_words": 5}))).unwrap_err().to_string();
    assert!(e.contains("unexpected parameter `num_words`; it takes none"), "{e}");
    // The Hugging Face copy of the data lists every key with nulls: those are skipped.
    let hf = kw(serde_json::json!({"num_words": 5, "relation": "less than", "keywords": null, "language": null}));
    assert!(checkers::Instruction::new("length_constraints:number_words", &hf).unwrap().follows("one two"));
    let e = checkers::Instruction::new("keywords:key_sentences", &Map::new()).unwrap_err().to_string();
    assert!(e.contains("unknown instruction"), "{e}");
    let bad = r#"{"key": 7, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []}"#;
    let e = ifeval::parse_prompts(bad, "mine.jsonl").unwrap_err().to_string();
    assert!(e.contains("mine.jsonl line 1 (key 7)") && e.contains("1 instructions but 0 kwargs"), "{e}");
    let responses: HashMap<String, String> = HashMap::new();
    let prompts = ifeval::parse_prompts(&bad.replace("[]}", "[{}]}"), "mine.jsonl").unwrap();
    let e = ifeval::score(&prompts, &responses).unwrap_err().to_string();
    assert!(e.contains("no response for prompt key 7"), "{e}");
}
