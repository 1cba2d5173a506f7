//! METEOR parity with NLTK 3.10.4 (`nltk.translate.meteor_score`), WordNet stage included.
//!
//! The fixture tests/fixtures/meteor.json is made by scripts/make_metric_fixtures_meteor.py
//! from tests/fixtures/metric_corpus.json. These tests need the WordNet 3.0 database
//! (run scripts/wordnet-setup.sh, or set STEPTUNE_WORDNET).
//!
//! Run with `--nocapture` to see the maximum differences.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;
use steptune::eval::meteor::{is_space_char, is_word_char, meteor, meteor_multi, tokenize};
use steptune::eval::porter::PorterStemmer;
use steptune::eval::wordnet::WordNet;

const TOLERANCE: f64 = 1e-9;

#[derive(Deserialize)]
struct Fixture {
    generator: String,
    wordnet_files: HashMap<String, u64>,
    pairs: Vec<Pair>,
    multi: Vec<Multi>,
    tokenize: Vec<TokenizeCase>,
    char_classes: CharClasses,
    lowercase: Vec<(String, String)>,
    stems: Vec<(String, String)>,
    synonyms: Vec<Synonyms>,
}

#[derive(Deserialize)]
struct Pair {
    id: u64,
    hypothesis: Vec<String>,
    reference: Vec<String>,
    meteor: f64,
    meteor_repr: String,
}

#[derive(Deserialize)]
struct Multi {
    name: String,
    hypothesis: Vec<String>,
    references: Vec<Vec<String>>,
    meteor: f64,
    meteor_repr: String,
}

#[derive(Deserialize)]
struct TokenizeCase {
    text: String,
    tokens: Vec<String>,
}

#[derive(Deserialize)]
struct CharClasses {
    unicode_version: String,
    word: Vec<(u32, u32)>,
    space: Vec<(u32, u32)>,
}

#[derive(Deserialize)]
struct Synonyms {
    word: String,
    synonyms: Vec<String>,
}

#[derive(Deserialize)]
struct Corpus {
    pairs: Vec<CorpusPair>,
}

#[derive(Deserialize)]
struct CorpusPair {
    id: u64,
    prediction: String,
    reference: String,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let path = fixtures_dir().join("meteor.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
    })
}

fn wordnet() -> &'static WordNet {
    match WordNet::shared_default() {
        Ok(wn) => wn,
        Err(e) => panic!("{e:#}"),
    }
}

#[test]
fn fixture_is_complete() {
    let f = fixture();
    assert!(f.generator.contains("nltk==3.10.4"), "{}", f.generator);
    assert!(f.pairs.len() >= 500, "{} pairs", f.pairs.len());
    assert!(
        f.multi.len() >= 50,
        "{} multi-reference cases",
        f.multi.len()
    );
    assert!(
        f.synonyms.len() >= 2000,
        "{} synonym sets",
        f.synonyms.len()
    );
}

#[test]
fn wordnet_is_the_fixtures_database() {
    let wn = wordnet();
    let mut names: Vec<_> = fixture().wordnet_files.iter().collect();
    names.sort();
    for (name, &size) in names {
        let path = wn.dir().join(name);
        let have = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len();
        assert_eq!(
            have,
            size,
            "{} has {have} bytes, the fixture was made from a {size}-byte file: \
             a different WordNet than Debian's wordnet-base 3.0",
            path.display()
        );
    }
    // The reader's assumptions (sorted unique index files, valid offsets) hold.
    let n = wn.verify().unwrap();
    assert!(n > 200_000, "{n} synset offsets");
}

#[test]
fn tokenize_matches_python_re() {
    let f = fixture();
    let path = fixtures_dir().join("metric_corpus.json");
    let corpus: Corpus = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        corpus.pairs.len(),
        f.pairs.len(),
        "metric_corpus.json changed: regenerate meteor.json"
    );
    for (c, p) in corpus.pairs.iter().zip(&f.pairs) {
        assert_eq!(
            c.id, p.id,
            "metric_corpus.json changed: regenerate meteor.json"
        );
        assert_eq!(
            tokenize(&c.prediction),
            p.hypothesis,
            "pair {} prediction {:?}",
            c.id,
            c.prediction
        );
        assert_eq!(
            tokenize(&c.reference),
            p.reference,
            "pair {} reference {:?}",
            c.id,
            c.reference
        );
    }
    for case in &f.tokenize {
        assert_eq!(tokenize(&case.text), case.tokens, "text {:?}", case.text);
    }
    println!(
        "tokenize: {} pairs and {} extra cases equal",
        f.pairs.len(),
        f.tokenize.len()
    );
}

#[test]
fn char_classes_match_python_re_everywhere() {
    let classes = &fixture().char_classes;
    let inside = |ranges: &[(u32, u32)], cp: u32| {
        let i = ranges.partition_point(|&(_, hi)| hi < cp);
        i < ranges.len() && ranges[i].0 <= cp
    };
    let mut bad = Vec::new();
    let mut n = 0;
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        n += 1;
        let cp = c as u32;
        if is_word_char(c) != inside(&classes.word, cp) {
            bad.push(format!("U+{cp:04X}: rust word {}", is_word_char(c)));
        }
        if is_space_char(c) != inside(&classes.space, cp) {
            bad.push(format!("U+{cp:04X}: rust space {}", is_space_char(c)));
        }
    }
    let shown = bad.iter().take(30).cloned().collect::<Vec<_>>().join("\n");
    assert!(
        bad.is_empty(),
        "{} code points classified unlike Python's re (Unicode {}); if the Rust toolchain's \
         Unicode tables changed, regenerate NOT_PY_WORD in src/eval/meteor.rs:\n{shown}",
        bad.len(),
        classes.unicode_version
    );
    println!(
        "char classes: {n} code points agree with Python (Unicode {})",
        classes.unicode_version
    );
}

#[test]
fn lowercase_matches_python_str_lower() {
    for (word, lower) in &fixture().lowercase {
        assert_eq!(&word.to_lowercase(), lower, "{word:?}");
    }
}

#[test]
fn porter_stems_match_nltk() {
    let stemmer = PorterStemmer::new();
    let f = fixture();
    let bad: Vec<_> = f
        .stems
        .iter()
        .filter_map(|(w, s)| {
            let have = stemmer.stem(w);
            (&have != s).then(|| format!("{w:?}: nltk {s:?}, rust {have:?}"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} stems differ:\n{}",
        bad.len(),
        f.stems.len(),
        bad.join("\n")
    );
}

#[test]
fn synonyms_match_nltk() {
    let wn = wordnet();
    let f = fixture();
    let mut bad = Vec::new();
    for case in &f.synonyms {
        let want: BTreeSet<String> = case.synonyms.iter().cloned().collect();
        let have = wn.synonyms(&case.word);
        if have != want {
            let missing: Vec<_> = want.difference(&have).collect();
            let extra: Vec<_> = have.difference(&want).collect();
            bad.push(format!(
                "{:?}: missing {missing:?}, extra {extra:?}",
                case.word
            ));
        }
    }
    let shown = bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n");
    assert!(
        bad.is_empty(),
        "{} of {} synonym sets differ:\n{shown}",
        bad.len(),
        f.synonyms.len()
    );
    println!("synonyms: {} sets equal", f.synonyms.len());
}

/// NLTK's score, exactly: Python's repr read back with Rust's correctly rounded parser
/// (serde_json's default float parsing may be an ulp off); checked against the number.
fn nltk_score(number: f64, repr: &str) -> f64 {
    let exact: f64 = repr
        .parse()
        .unwrap_or_else(|e| panic!("meteor_repr {repr:?}: {e}"));
    assert!(
        (exact - number).abs() <= 1e-15,
        "meteor {number} vs meteor_repr {repr}"
    );
    exact
}

fn report(what: &str, diffs: &[(String, f64, f64)]) {
    let max = diffs
        .iter()
        .map(|(_, want, have)| (want - have).abs())
        .fold(0.0, f64::max);
    let exact = diffs.iter().filter(|(_, want, have)| want == have).count();
    println!(
        "{what}: {} cases, max |rust - nltk| = {max:e}, {exact} bit-identical",
        diffs.len()
    );
    let bad: Vec<_> = diffs
        .iter()
        .filter(|(_, want, have)| (want - have).abs() > TOLERANCE)
        .map(|(id, want, have)| format!("{id}: nltk {want}, rust {have}"))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} cases differ by more than {TOLERANCE}:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn meteor_matches_nltk_on_the_corpus() {
    let wn = wordnet();
    let diffs: Vec<_> = fixture()
        .pairs
        .iter()
        .map(|p| {
            let want = nltk_score(p.meteor, &p.meteor_repr);
            (
                format!("pair {}", p.id),
                want,
                meteor(&p.reference, &p.hypothesis, wn),
            )
        })
        .collect();
    report("meteor (single reference)", &diffs);
    // meteor_multi with one reference is the same number
    for p in &fixture().pairs {
        let refs = vec![p.reference.clone()];
        assert_eq!(
            meteor_multi(&refs, &p.hypothesis, wn),
            meteor(&p.reference, &p.hypothesis, wn)
        );
    }
}

#[test]
fn meteor_multi_matches_nltk() {
    let wn = wordnet();
    let diffs: Vec<_> = fixture()
        .multi
        .iter()
        .map(|m| {
            let want = nltk_score(m.meteor, &m.meteor_repr);
            (
                m.name.clone(),
                want,
                meteor_multi(&m.references, &m.hypothesis, wn),
            )
        })
        .collect();
    report("meteor (multiple references)", &diffs);
}
