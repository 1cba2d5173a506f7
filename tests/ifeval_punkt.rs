//! Parity of steptune's Punkt sentence splitter and `word_tokenize` with NLTK 3.10.4
//! (`PunktTokenizer("english")`, `nltk.word_tokenize`), which IFEval's sentence and
//! capital-word checkers call. tests/fixtures/ifeval/punkt.json is made by
//! scripts/make_punkt_fixtures.py: procedures, customer-support texts, the IFEval prompts,
//! hand-written hard cases and seeded synthetic mixes. With STEPTUNE_PUNKT_EXTRA=PATH the
//! texts of PATH (same format, e.g. from `make_punkt_fixtures.py --fuzz`) are checked as well.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use serde::Deserialize;
use steptune::eval::ifeval::punkt::{sentence_count, sentence_spans, sentences};
use steptune::eval::ifeval::words::word_tokenize;

#[derive(Deserialize)]
struct Fixture {
    generator: String,
    nltk: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    source: String,
    text: String,
    /// Code point offsets.
    spans: Vec<(usize, usize)>,
    /// Tokens joined by one space.
    tokens: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let read = |path: PathBuf| -> Fixture {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let mut f = read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ifeval/punkt.json"));
        if let Some(extra) = std::env::var_os("STEPTUNE_PUNKT_EXTRA") {
            let extra = read(PathBuf::from(extra));
            assert_eq!(extra.nltk, f.nltk, "STEPTUNE_PUNKT_EXTRA made with another NLTK");
            f.cases.extend(extra.cases);
        }
        f
    })
}

fn char_slice(text: &str, a: usize, b: usize) -> String {
    text.chars().skip(a).take(b.saturating_sub(a)).collect()
}

fn show(text: &str) -> String {
    let t: String = text.chars().take(400).collect();
    format!("{t:?}{}", if text.chars().count() > 400 { " (cut)" } else { "" })
}

#[test]
fn fixture_is_the_pinned_reference() {
    let f = fixture();
    assert_eq!(f.generator, "scripts/make_punkt_fixtures.py");
    assert_eq!(f.nltk, "3.10.4");
    assert!(f.cases.len() >= 2000, "only {} texts", f.cases.len());
    for src in [
        "procedures.output",
        "bitext.response",
        "ifeval.prompt",
        "hard",
        "synthetic",
    ] {
        assert!(f.cases.iter().any(|c| c.source == src), "no {src} texts");
    }
}

#[test]
fn sentences_match_nltk() {
    let f = fixture();
    let start = Instant::now();
    let mut bad = Vec::new();
    for c in &f.cases {
        let want: Vec<String> = c.spans.iter().map(|&(a, b)| char_slice(&c.text, a, b)).collect();
        let got = sentences(&c.text);
        if got != want {
            bad.push(format!(
                "[{}] {}\n  nltk: {want:?}\n  ours: {got:?}",
                c.source,
                show(&c.text)
            ));
            continue;
        }
        // Spans are byte ranges of the same sentences; the count is their number.
        let spans = sentence_spans(&c.text);
        let by_span: Vec<&str> = spans.iter().map(|&(a, b)| &c.text[a..b]).collect();
        if by_span != want || sentence_count(&c.text) != want.len() {
            bad.push(format!(
                "[{}] spans disagree with sentences: {}",
                c.source,
                show(&c.text)
            ));
        }
    }
    eprintln!(
        "punkt: {} texts in {:?}, {} mismatches",
        f.cases.len(),
        start.elapsed(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "{} of {} texts split differently:\n{}",
        bad.len(),
        f.cases.len(),
        bad.join("\n")
    );
}

#[test]
fn word_tokenize_matches_nltk() {
    let f = fixture();
    let start = Instant::now();
    let mut bad = Vec::new();
    for c in &f.cases {
        let want: Vec<&str> = if c.tokens.is_empty() {
            vec![]
        } else {
            c.tokens.split(' ').collect()
        };
        let got = word_tokenize(&c.text);
        if got != want {
            bad.push(format!(
                "[{}] {}\n  nltk: {want:?}\n  ours: {got:?}",
                c.source,
                show(&c.text)
            ));
        }
    }
    eprintln!(
        "word_tokenize: {} texts in {:?}, {} mismatches",
        f.cases.len(),
        start.elapsed(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "{} of {} texts tokenised differently:\n{}",
        bad.len(),
        f.cases.len(),
        bad.join("\n")
    );
}

#[test]
fn named_cases() {
    assert!(sentences("").is_empty());
    assert!(sentences("  \n\t ").is_empty());
    assert_eq!(sentence_count("Hello"), 1);
    // Known abbreviation, and "p.m." before a lower-case word.
    assert_eq!(
        sentences("Mr. Smith went to Washington. He arrived at 5 p.m. on Monday."),
        ["Mr. Smith went to Washington.", "He arrived at 5 p.m. on Monday."]
    );
    // Closing brackets after the period stay with their sentence (realign_boundaries).
    assert_eq!(
        sentences("(This is a note.) This is not. [Another one.] Yes."),
        ["(This is a note.)", "This is not.", "[Another one.]", "Yes."]
    );
    // Initials are not sentence ends.
    assert_eq!(
        sentences("J. R. R. Tolkien wrote books. J.K. Rowling did too. A. Smith agreed."),
        [
            "J. R. R. Tolkien wrote books.",
            "J.K. Rowling did too.",
            "A. Smith agreed."
        ]
    );
    assert_eq!(
        sentences("What?! Really?! No way!!! Yes?? Okay."),
        ["What?!", "Really?!", "No way!!!", "Yes??", "Okay."]
    );
    // An ellipsis before a lower-case word continues the sentence.
    assert_eq!(
        sentences("Wait... what happened? I don't know... Really."),
        ["Wait... what happened?", "I don't know... Really."]
    );
    // NLTK's quirk: a spaced ellipsis splits into one-period "sentences".
    assert_eq!(
        sentences("Wait . . . what? He paused. . . and left."),
        ["Wait .", ".", ".", "what?", "He paused.", ".", ".", "and left."]
    );
    let toks = |s: &str| word_tokenize(s);
    assert_eq!(
        toks("Wait... what happened? I don't know... Really."),
        ["Wait", "...", "what", "happened", "?", "I", "do", "n't", "know", "...", "Really", "."]
    );
    // Only a sentence's final period is split off; abbreviations inside keep theirs.
    assert_eq!(
        toks("Mr. Smith arrived at 5 p.m. on Monday."),
        ["Mr.", "Smith", "arrived", "at", "5", "p.m.", "on", "Monday", "."]
    );
    assert_eq!(
        toks("I cannot go. Gimme that. Wanna play? 'Tis true."),
        ["I", "can", "not", "go", ".", "Gim", "me", "that", ".", "Wan", "na", "play", "?", "'", "Tis", "true", "."]
    );
    assert_eq!(toks("He said \"Stop.\""), ["He", "said", "``", "Stop", ".", "''"]);
}
