//! The chat template and tokenisation equal transformers' `apply_chat_template` (thinking off) on
//! the real Qwen3-8B tokenizer, and T5 tokenisation equals transformers' T5 tokenizer.
//! Fixtures: scripts/make_fixtures.py (pinned transformers 5.23.0).
mod common;

use serde_json::Value;
use steptune::data::encode::{ChatEncoder, IGNORE_INDEX};
use steptune::model::chat_template::{ChatTemplate, Message};
use steptune::model::tokenizer::TokenizerBundle;

fn fixture(name: &str) -> Value {
    let p = common::repo().join("tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn qwen3_chat_template_text_and_ids_equal_transformers() {
    let tok = TokenizerBundle::from_dir(&common::shared().join("models/qwen3-8b")).unwrap();
    let tmpl = ChatTemplate::from_tokenizer(&tok).unwrap();
    let fx = fixture("qwen3_chat_template.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 40, "fixture has {} cases", cases.len());
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let messages: Vec<Message> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let text = tmpl.render(&messages, false, false).unwrap();
        assert_eq!(text, c["text"].as_str().unwrap(), "case {name}: rendered text differs");
        let got = tok.tokenizer.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(got, ids(&c["input_ids"]), "case {name}: token ids differ");
        let prompt_only = &messages[..messages.len() - 1];
        let ptext = tmpl.render(prompt_only, true, false).unwrap();
        assert_eq!(ptext, c["prompt_text"].as_str().unwrap(), "case {name}: prompt text differs");
        let pids = tok.tokenizer.encode(ptext.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(pids, ids(&c["prompt_ids"]), "case {name}: prompt ids differ");
    }
}

#[test]
fn qwen3_labels_cover_exactly_the_answer_and_im_end() {
    let tok = TokenizerBundle::from_dir(&common::shared().join("models/qwen3-8b")).unwrap();
    let enc = ChatEncoder::new(&tok, ChatTemplate::from_tokenizer(&tok).unwrap(), None, false).unwrap();
    let fx = fixture("qwen3_chat_template.json");
    let mut checked = 0;
    for c in fx["cases"].as_array().unwrap() {
        let m = c["messages"].as_array().unwrap();
        // Single-turn user → assistant cases without chat markers inside the content.
        if m.len() != 2 || c["name"].as_str().unwrap().contains("token") || c["name"].as_str().unwrap().contains("think") {
            continue;
        }
        let (p, a) = (m[0]["content"].as_str().unwrap(), m[1]["content"].as_str().unwrap());
        let e = enc.encode_batch(&[(p, a)]).pop().unwrap().unwrap();
        assert_eq!(e.input_ids, ids(&c["input_ids"]));
        let n_prompt = ids(&c["prompt_ids"]).len();
        assert!(e.labels[..n_prompt].iter().all(|&l| l == IGNORE_INDEX), "{}: prompt tokens must be masked", c["name"]);
        let labelled: Vec<u32> = e.labels.iter().filter(|&&l| l != IGNORE_INDEX).map(|&l| l as u32).collect();
        let decoded = tok.tokenizer.decode(&labelled, false).unwrap();
        // The template strips leading newlines from the answer; the label ends with <|im_end|>.
        assert_eq!(decoded, format!("{}<|im_end|>", a.trim_start_matches('\n')), "{}", c["name"]);
        // The newline after <|im_end|> is not learned.
        assert_eq!(*e.labels.last().unwrap(), IGNORE_INDEX);
        assert_eq!(e.answer_tokens, labelled.len());
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} cases checked");
}

#[test]
fn t5_tokenization_equals_transformers() {
    let tok = TokenizerBundle::from_dir(&common::shared().join("models/t5-small")).unwrap();
    let fx = fixture("t5_tokenization.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let got = tok.tokenizer.encode(text, true).unwrap().get_ids().to_vec();
        assert_eq!(got, ids(&c["input_ids"]), "text {text:?}");
    }
}
