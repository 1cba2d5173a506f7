//! The 25 IFEval instruction checkers, each equal to the reference's `check_following`
//! (google-research `instruction_following_eval/instructions.py`, as lm-eval 0.4.9.1 ships it).
//!
//! The reference is Python, and its answers hang on Python's text semantics: `\w`, `\s` and `\b`
//! in `re`, `str.split()`, `strip()`, `isupper()`/`islower()`, `json.loads`. Those live at the end
//! of this file, so each checker reads like its Python original.
//!
//! Where the reference draws a missing parameter at random (`build_description` with a `None`),
//! the score would not be reproducible; here that is an error naming the instruction and the key.
//! The one exception the issue settles: a `letter_frequency` letter outside a-z (keys 1122 `#`
//! and 1129 `!` of the shipped data) is counted as given instead of replaced by a random letter.
use std::collections::HashSet;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

use super::{punkt, words};

/// The instruction ids of the reference's `INSTRUCTION_DICT`, in its order.
pub const INSTRUCTION_IDS: &[&str] = &[
    "keywords:existence",
    "keywords:frequency",
    "keywords:forbidden_words",
    "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:number_sentences",
    "length_constraints:number_paragraphs",
    "length_constraints:number_words",
    "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:number_bullet_lists",
    "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections",
    "detectable_format:json_format",
    "detectable_format:title",
    "combination:two_responses",
    "combination:repeat_prompt",
    "startend:end_checker",
    "change_case:capital_word_frequency",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "punctuation:no_comma",
    "startend:quotation",
];

/// `_COMPARISON_RELATION`: "less than" is `<`, "at least" is `>=`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Relation {
    LessThan,
    AtLeast,
}

impl Relation {
    fn holds(self, actual: usize, threshold: i64) -> bool {
        match self {
            Relation::LessThan => (actual as i64) < threshold,
            Relation::AtLeast => (actual as i64) >= threshold,
        }
    }
}

/// One instruction with its parameters, ready to check responses.
#[derive(Debug)]
pub enum Instruction {
    KeywordsExistence { keywords: Vec<PyRegex> },
    KeywordFrequency { keyword: PyRegex, frequency: i64, relation: Relation },
    ForbiddenWords { words: Vec<PyRegex> },
    LetterFrequency { letter: String, frequency: i64, relation: Relation },
    ResponseLanguage { language: String },
    NumberSentences { num_sentences: i64, relation: Relation },
    NumberParagraphs { num_paragraphs: i64 },
    NumberWords { num_words: i64, relation: Relation },
    NthParagraphFirstWord { num_paragraphs: i64, nth_paragraph: i64, first_word: String },
    Placeholders { num_placeholders: i64 },
    Postscript { pattern: PyRegex },
    BulletLists { num_bullets: i64 },
    ConstrainedResponse,
    HighlightedSections { num_highlights: i64 },
    MultipleSections { splitter: PyRegex, num_sections: i64 },
    JsonFormat,
    Title,
    TwoResponses,
    RepeatPrompt { prompt_to_repeat: String },
    EndChecker { end_phrase: String },
    CapitalWordFrequency { frequency: i64, relation: Relation },
    EnglishCapital,
    EnglishLowercase,
    NoComma,
    Quotation,
}

/// `kwargs` of one instruction, with errors that name the instruction and the key.
struct Kwargs<'a> {
    id: &'a str,
    map: &'a Map<String, Value>,
}

/// The parameters of each instruction's `build_description` in the reference.
fn parameters_of(id: &str) -> &'static [&'static str] {
    match id {
        "keywords:existence" => &["keywords"],
        "keywords:frequency" => &["keyword", "frequency", "relation"],
        "keywords:forbidden_words" => &["forbidden_words"],
        "keywords:letter_frequency" => &["letter", "let_frequency", "let_relation"],
        "language:response_language" => &["language"],
        "length_constraints:number_sentences" => &["num_sentences", "relation"],
        "length_constraints:number_paragraphs" => &["num_paragraphs"],
        "length_constraints:number_words" => &["num_words", "relation"],
        "length_constraints:nth_paragraph_first_word" => &["num_paragraphs", "nth_paragraph", "first_word"],
        "detectable_content:number_placeholders" => &["num_placeholders"],
        "detectable_content:postscript" => &["postscript_marker"],
        "detectable_format:number_bullet_lists" => &["num_bullets"],
        "detectable_format:number_highlighted_sections" => &["num_highlights"],
        "detectable_format:multiple_sections" => &["section_spliter", "num_sections"],
        "combination:repeat_prompt" => &["prompt_to_repeat"],
        "startend:end_checker" => &["end_phrase"],
        "change_case:capital_word_frequency" => &["capital_frequency", "capital_relation"],
        _ => &[],
    }
}

impl Kwargs<'_> {
    /// A key the instruction does not take is an error (the reference's `build_description` raises
    /// TypeError); null values are skipped, as in the Hugging Face copy of the data, which lists
    /// every key of every instruction with nulls.
    fn only(&self, allowed: &[&str]) -> Result<()> {
        for (key, v) in self.map {
            if !v.is_null() && !allowed.contains(&key.as_str()) {
                bail!(
                    "{}: unexpected parameter `{key}`; it takes {}",
                    self.id,
                    if allowed.is_empty() { "none".to_string() } else { allowed.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ") }
                );
            }
        }
        Ok(())
    }
    fn random_in_reference(&self, key: &str) -> anyhow::Error {
        anyhow!(
            "{}: `{key}` is missing or null; the reference would draw it at random, which makes the \
             score irreproducible, so give it in the prompt file's kwargs",
            self.id
        )
    }
    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }
    fn string(&self, key: &str) -> Result<String> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => bail!("{}: `{key}` must be a string, got {v}", self.id),
            None => Err(self.random_in_reference(key)),
        }
    }
    fn int(&self, key: &str) -> Result<i64> {
        match self.get(key) {
            Some(v) => v.as_i64().ok_or_else(|| anyhow!("{}: `{key}` must be an integer, got {v}", self.id)),
            None => Err(self.random_in_reference(key)),
        }
    }
    /// A count the reference replaces at random when it is negative.
    fn count(&self, key: &str) -> Result<i64> {
        let n = self.int(key)?;
        if n < 0 {
            return Err(self.random_in_reference(key));
        }
        Ok(n)
    }
    fn strings(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key) {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| anyhow!("{}: `{key}` must list strings, got {v}", self.id)))
                .collect(),
            Some(Value::Array(_)) | None => Err(self.random_in_reference(key)),
            Some(v) => bail!("{}: `{key}` must be a list of strings, got {v}", self.id),
        }
    }
    fn relation(&self, key: &str) -> Result<Relation> {
        match self.string(key)?.as_str() {
            "less than" => Ok(Relation::LessThan),
            "at least" => Ok(Relation::AtLeast),
            other => bail!("{}: `{key}` must be \"less than\" or \"at least\", got {other:?}", self.id),
        }
    }
}

impl Instruction {
    /// `build_description(**kwargs)` of the reference, for one instruction id.
    pub fn new(id: &str, kwargs: &Map<String, Value>) -> Result<Instruction> {
        let k = Kwargs { id, map: kwargs };
        k.only(parameters_of(id))?;
        let regex = |pattern: &str, flags: &str| PyRegex::new(pattern, flags).with_context(|| format!("{id}: pattern {pattern:?}"));
        Ok(match id {
            "keywords:existence" => {
                let mut keywords = k.strings("keywords")?;
                keywords.sort();
                Instruction::KeywordsExistence { keywords: keywords.iter().map(|w| regex(w, "i")).collect::<Result<_>>()? }
            }
            "keywords:frequency" => {
                let keyword = k.string("keyword")?;
                if keyword.is_empty() {
                    return Err(k.random_in_reference("keyword"));
                }
                Instruction::KeywordFrequency {
                    keyword: regex(py_strip(&keyword), "i")?,
                    frequency: k.count("frequency")?,
                    relation: k.relation("relation")?,
                }
            }
            "keywords:forbidden_words" => {
                let set: HashSet<String> = k.strings("forbidden_words")?.into_iter().collect();
                let mut words: Vec<String> = set.into_iter().collect();
                words.sort();
                let words = words.iter().map(|w| regex(&format!(r"\b{w}\b"), "i")).collect::<Result<_>>()?;
                Instruction::ForbiddenWords { words }
            }
            "keywords:letter_frequency" => {
                let letter = k.string("letter")?;
                if letter.is_empty() {
                    return Err(k.random_in_reference("letter"));
                }
                let is_az = letter.chars().count() == 1 && letter.to_lowercase().chars().all(|c| c.is_ascii_lowercase());
                // Outside a-z the reference picks a random letter; counted as given here (see top).
                let letter = if is_az { py_strip(&letter).to_lowercase() } else { letter.to_lowercase() };
                Instruction::LetterFrequency { letter, frequency: k.count("let_frequency")?, relation: k.relation("let_relation")? }
            }
            "language:response_language" => Instruction::ResponseLanguage { language: k.string("language")? },
            "length_constraints:number_sentences" => {
                Instruction::NumberSentences { num_sentences: k.count("num_sentences")?, relation: k.relation("relation")? }
            }
            "length_constraints:number_paragraphs" => Instruction::NumberParagraphs { num_paragraphs: k.count("num_paragraphs")? },
            "length_constraints:number_words" => {
                Instruction::NumberWords { num_words: k.count("num_words")?, relation: k.relation("relation")? }
            }
            "length_constraints:nth_paragraph_first_word" => {
                let num_paragraphs = k.count("num_paragraphs")?;
                let nth_paragraph = k.int("nth_paragraph")?;
                if nth_paragraph <= 0 || nth_paragraph > num_paragraphs {
                    return Err(k.random_in_reference("nth_paragraph"));
                }
                Instruction::NthParagraphFirstWord { num_paragraphs, nth_paragraph, first_word: k.string("first_word")?.to_lowercase() }
            }
            "detectable_content:number_placeholders" => Instruction::Placeholders { num_placeholders: k.count("num_placeholders")? },
            "detectable_content:postscript" => {
                let marker = k.string("postscript_marker")?;
                let marker = py_strip(&marker);
                let pattern = match marker {
                    "P.P.S" => r"\s*p\.\s?p\.\s?s.*$".to_string(),
                    "P.S." => r"\s*p\.\s?s\..*$".to_string(),
                    _ => format!(r"\s*{}.*$", marker.to_lowercase()),
                };
                Instruction::Postscript { pattern: regex(&pattern, "m")? }
            }
            "detectable_format:number_bullet_lists" => Instruction::BulletLists { num_bullets: k.count("num_bullets")? },
            "detectable_format:constrained_response" => Instruction::ConstrainedResponse,
            "detectable_format:number_highlighted_sections" => {
                Instruction::HighlightedSections { num_highlights: k.count("num_highlights")? }
            }
            "detectable_format:multiple_sections" => {
                let splitter = k.string("section_spliter")?;
                Instruction::MultipleSections {
                    splitter: regex(&format!(r"\s?{}\s?\d+\s?", py_strip(&splitter)), "")?,
                    num_sections: k.count("num_sections")?,
                }
            }
            "detectable_format:json_format" => Instruction::JsonFormat,
            "detectable_format:title" => Instruction::Title,
            "combination:two_responses" => Instruction::TwoResponses,
            "combination:repeat_prompt" => {
                let prompt_to_repeat = k.string("prompt_to_repeat")?;
                if prompt_to_repeat.is_empty() {
                    bail!("{id}: `prompt_to_repeat` must be set");
                }
                Instruction::RepeatPrompt { prompt_to_repeat }
            }
            "startend:end_checker" => Instruction::EndChecker { end_phrase: py_strip(&k.string("end_phrase")?).to_string() },
            "change_case:capital_word_frequency" => {
                Instruction::CapitalWordFrequency { frequency: k.int("capital_frequency")?, relation: k.relation("capital_relation")? }
            }
            "change_case:english_capital" => Instruction::EnglishCapital,
            "change_case:english_lowercase" => Instruction::EnglishLowercase,
            "punctuation:no_comma" => Instruction::NoComma,
            "startend:quotation" => Instruction::Quotation,
            other => bail!("unknown instruction {other:?}; IFEval has {}", INSTRUCTION_IDS.join(", ")),
        })
    }

    /// `check_following(value)` of the reference.
    pub fn follows(&self, value: &str) -> bool {
        use Instruction::*;
        match self {
            KeywordsExistence { keywords } => keywords.iter().all(|k| k.is_match(value)),
            KeywordFrequency { keyword, frequency, relation } => relation.holds(keyword.count(value), *frequency),
            ForbiddenWords { words } => !words.iter().any(|w| w.is_match(value)),
            LetterFrequency { letter, frequency, relation } => {
                let lowered = value.to_lowercase();
                // collections.Counter over the characters: a key of several characters counts 0.
                let mut it = letter.chars();
                let n = match (it.next(), it.next()) {
                    (Some(c), None) => lowered.chars().filter(|&x| x == c).count(),
                    _ => 0,
                };
                relation.holds(n, *frequency)
            }
            ResponseLanguage { language } => detect_language(value).map_or(true, |l| &l == language),
            NumberSentences { num_sentences, relation } => relation.holds(punkt::sentences(value).len(), *num_sentences),
            NumberParagraphs { num_paragraphs } => {
                static DIVIDER: OnceLock<PyRegex> = OnceLock::new();
                let divider = DIVIDER.get_or_init(|| PyRegex::new(r"\s?\*\*\*\s?", "").unwrap());
                let paragraphs = divider.split(value);
                let mut n = paragraphs.len() as i64;
                for (i, p) in paragraphs.iter().enumerate() {
                    if py_strip(p).is_empty() {
                        if i == 0 || i == paragraphs.len() - 1 {
                            n -= 1;
                        } else {
                            return false;
                        }
                    }
                }
                n == *num_paragraphs
            }
            NumberWords { num_words, relation } => relation.holds(count_words(value), *num_words),
            NthParagraphFirstWord { num_paragraphs, nth_paragraph, first_word } => {
                let paragraphs: Vec<&str> = value.split("\n\n").collect();
                let n = paragraphs.iter().filter(|p| !py_strip(p).is_empty()).count() as i64;
                if *nth_paragraph > n {
                    return false;
                }
                // Indexed in the list that still holds the empty paragraphs, as the reference does.
                let paragraph = py_strip(paragraphs[(*nth_paragraph - 1) as usize]);
                if paragraph.is_empty() {
                    return false;
                }
                let word = py_split(paragraph)[0];
                let word = py_strip(word).trim_start_matches('\'').trim_start_matches('"');
                let mut first = String::new();
                for c in word.chars() {
                    if matches!(c, '.' | ',' | '?' | '!' | '\'' | '"') {
                        break;
                    }
                    first.extend(c.to_lowercase());
                }
                n == *num_paragraphs && &first == first_word
            }
            Placeholders { num_placeholders } => {
                static PLACEHOLDER: OnceLock<PyRegex> = OnceLock::new();
                let re = PLACEHOLDER.get_or_init(|| PyRegex::new(r"\[.*?\]", "").unwrap());
                re.count(value) as i64 >= *num_placeholders
            }
            Postscript { pattern } => pattern.is_match(&value.to_lowercase()),
            BulletLists { num_bullets } => {
                static BULLETS: OnceLock<(PyRegex, PyRegex)> = OnceLock::new();
                let (star, dash) = BULLETS
                    .get_or_init(|| (PyRegex::new(r"^\s*\*[^\*].*$", "m").unwrap(), PyRegex::new(r"^\s*-.*$", "m").unwrap()));
                (star.count(value) + dash.count(value)) as i64 == *num_bullets
            }
            ConstrainedResponse => {
                let v = py_strip(value);
                ["My answer is yes.", "My answer is no.", "My answer is maybe."].iter().any(|o| v.contains(o))
            }
            HighlightedSections { num_highlights } => {
                static HIGHLIGHTS: OnceLock<(PyRegex, PyRegex)> = OnceLock::new();
                let (single, double) = HIGHLIGHTS.get_or_init(|| {
                    (PyRegex::new(r"\*[^\n\*]*\*", "").unwrap(), PyRegex::new(r"\*\*[^\n\*]*\*\*", "").unwrap())
                });
                let mut n = 0i64;
                for h in single.find_all(value) {
                    n += !py_strip(h.trim_matches('*')).is_empty() as i64;
                }
                for h in double.find_all(value) {
                    let inner = h.strip_prefix("**").unwrap_or(h);
                    let inner = inner.strip_suffix("**").unwrap_or(inner);
                    n += !py_strip(inner).is_empty() as i64;
                }
                n >= *num_highlights
            }
            MultipleSections { splitter, num_sections } => splitter.split(value).len() as i64 - 1 >= *num_sections,
            JsonFormat => {
                let v = py_strip(value);
                let v = ["```json", "```Json", "```JSON", "```"].iter().fold(v, |v, p| v.strip_prefix(p).unwrap_or(v));
                let v = v.strip_suffix("```").unwrap_or(v);
                py_json_loads_ok(py_strip(v))
            }
            Title => {
                static TITLE: OnceLock<PyRegex> = OnceLock::new();
                let re = TITLE.get_or_init(|| PyRegex::new(r"<<[^\n]+>>", "").unwrap());
                re.find_all(value).iter().any(|t| !py_strip(t.trim_start_matches('<').trim_end_matches('>')).is_empty())
            }
            TwoResponses => {
                let parts: Vec<&str> = value.split("******").collect();
                let mut valid = Vec::new();
                for (i, r) in parts.iter().enumerate() {
                    if py_strip(r).is_empty() {
                        if i != 0 && i != parts.len() - 1 {
                            return false;
                        }
                    } else {
                        valid.push(*r);
                    }
                }
                valid.len() == 2 && py_strip(valid[0]) != py_strip(valid[1])
            }
            RepeatPrompt { prompt_to_repeat } => {
                py_strip(value).to_lowercase().starts_with(&py_strip(prompt_to_repeat).to_lowercase())
            }
            EndChecker { end_phrase } => {
                let v = py_strip(value).trim_matches('"').to_lowercase();
                v.ends_with(&py_strip(end_phrase).to_lowercase())
            }
            CapitalWordFrequency { frequency, relation } => {
                let n = words::word_tokenize(value).iter().filter(|w| py_isupper(w)).count();
                relation.holds(n, *frequency)
            }
            EnglishCapital => py_isupper(value) && detect_language(value).map_or(true, |l| l == "en"),
            EnglishLowercase => py_islower(value) && detect_language(value).map_or(true, |l| l == "en"),
            NoComma => !value.contains(','),
            Quotation => {
                let v = py_strip(value);
                v.chars().count() > 1 && v.starts_with('"') && v.ends_with('"')
            }
        }
    }
}

/// `instructions_util.count_words`: NLTK's `RegexpTokenizer(r"\w+")`, i.e. runs of Python `\w`.
pub fn count_words(text: &str) -> usize {
    let mut n = 0;
    let mut in_word = false;
    for c in text.chars() {
        let w = is_py_word(c);
        n += (w && !in_word) as usize;
        in_word = w;
    }
    n
}

/// langdetect 1.0.9's profiles in the order its `os.listdir` returned them where the fixtures
/// were made (tests/fixtures/ifeval/checkers.json records it). The order changes the last bits of
/// a probability in about one text in 100,000, so the reference's own order is kept.
pub const LANGDETECT_PROFILE_ORDER: &[&str] = &[
    "pl", "gu", "zh-tw", "fi", "af", "ne", "ro", "da", "hr", "de", "pa", "en", "fa", "ca", "so", "ja", "ko", "es",
    "cs", "ru", "vi", "uk", "bn", "fr", "kn", "hu", "te", "lv", "sk", "sl", "el", "id", "it", "bg", "ta", "he",
    "sq", "hi", "th", "tr", "ml", "mk", "pt", "tl", "mr", "sv", "et", "nl", "sw", "cy", "no", "ur", "lt", "ar",
    "zh-cn",
];

/// `langdetect.detect(text)` with `DetectorFactory.seed = 0`, as CPython 3.11 computes it (the
/// reference environment's Python); `None` where langdetect raises (no features in the text),
/// which every checker counts as followed.
pub fn detect_language(text: &str) -> Option<String> {
    static FACTORY: OnceLock<langdetect::DetectorFactory> = OnceLock::new();
    let factory = FACTORY.get_or_init(|| {
        let mut f = langdetect::DetectorFactory::new(langdetect::Compat::python(11));
        f.load_builtin(LANGDETECT_PROFILE_ORDER).expect("langdetect's built-in profiles");
        f.seed = langdetect::Seed::Int(0);
        f
    });
    factory.detect(text).ok()
}

// ---- Python's text semantics -------------------------------------------------------------------

/// `str.isspace()` (also `\s` in `re` and the separators of `str.split()`/`strip()`): Unicode
/// White_Space plus the four information separators U+001C..U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// `\w` of Python's `re` on str: `isalnum()` or `_` (Rust's `\w` also takes combining marks).
pub fn is_py_word(c: char) -> bool {
    c == '_' || is_letter(c) || c.is_numeric()
}

/// Letters (general category L*), what Python's `isalpha` tests.
fn is_letter(c: char) -> bool {
    static LETTER: OnceLock<regex::Regex> = OnceLock::new();
    let re = LETTER.get_or_init(|| regex::Regex::new(r"^\p{L}$").unwrap());
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

/// `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// `str.split()` without arguments.
pub fn py_split(s: &str) -> Vec<&str> {
    s.split(is_py_space).filter(|w| !w.is_empty()).collect()
}

/// Titlecase letters (category Lt), which `isupper()` and `islower()` both reject.
fn is_titlecase(c: char) -> bool {
    matches!(c as u32, 0x01C5 | 0x01C8 | 0x01CB | 0x01F2 | 0x1F88..=0x1F8F | 0x1F98..=0x1F9F | 0x1FA8..=0x1FAF | 0x1FBC | 0x1FCC | 0x1FFC)
}

/// `str.isupper()`: at least one cased character and none lowercase or titlecase.
pub fn py_isupper(s: &str) -> bool {
    all_cased_as(s, char::is_uppercase, char::is_lowercase)
}

/// `str.islower()`: at least one cased character and none uppercase or titlecase.
pub fn py_islower(s: &str) -> bool {
    all_cased_as(s, char::is_lowercase, char::is_uppercase)
}

/// CPython's loop behind both: false at the first `other` or titlecase character, else whether
/// some character was `wanted`.
fn all_cased_as(s: &str, wanted: fn(char) -> bool, other: fn(char) -> bool) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if other(c) || is_titlecase(c) {
            return false;
        }
        cased |= wanted(c);
    }
    cased
}

/// A pattern of Python's `re`, translated where the two engines read the same escape
/// differently: `\s`, `\S`, `\w`, `\W`, `\b`, `\B` (Python's classes, above). Flags: `i`
/// (IGNORECASE), `m` (MULTILINE).
#[derive(Debug)]
pub struct PyRegex {
    re: fancy_regex::Regex,
}

const PY_W: &str = r"\p{L}\p{N}_";
const PY_S: &str = r"\s\x1c-\x1f";

impl PyRegex {
    pub fn new(pattern: &str, flags: &str) -> Result<PyRegex> {
        let mut out = String::new();
        if !flags.is_empty() {
            out.push_str(&format!("(?{flags})"));
        }
        let mut in_class = false;
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let Some(e) = chars.next() else { bail!("pattern ends in a lone backslash") };
                    match (e, in_class) {
                        ('s', false) => out.push_str(&format!("[{PY_S}]")),
                        ('s', true) => out.push_str(PY_S),
                        ('S', false) => out.push_str(&format!("[^{PY_S}]")),
                        ('w', false) => out.push_str(&format!("[{PY_W}]")),
                        ('w', true) => out.push_str(PY_W),
                        ('W', false) => out.push_str(&format!("[^{PY_W}]")),
                        ('b', false) => out.push_str(&format!(
                            "(?:(?<=[{PY_W}])(?![{PY_W}])|(?<![{PY_W}])(?=[{PY_W}]))"
                        )),
                        ('B', false) => out.push_str(&format!(
                            "(?:(?<=[{PY_W}])(?=[{PY_W}])|(?<![{PY_W}])(?![{PY_W}]))"
                        )),
                        ('Z', false) => out.push_str(r"\z"),
                        _ => {
                            out.push('\\');
                            out.push(e);
                        }
                    }
                }
                '[' if !in_class => {
                    in_class = true;
                    out.push('[');
                    // `[]...]` and `[^]...]`: a leading `]` is a literal in Python.
                    if chars.peek() == Some(&'^') {
                        out.push(chars.next().unwrap());
                    }
                    if chars.peek() == Some(&']') {
                        chars.next();
                        out.push_str(r"\]");
                    }
                }
                '[' => out.push_str(r"\["),
                ']' if in_class => {
                    in_class = false;
                    out.push(']');
                }
                _ => out.push(c),
            }
        }
        let re = fancy_regex::Regex::new(&out).map_err(|e| anyhow!("not a regular expression steptune can run ({e})"))?;
        Ok(PyRegex { re })
    }

    /// `re.search(...) is not None`.
    pub fn is_match(&self, text: &str) -> bool {
        self.re.is_match(text).unwrap_or(false)
    }

    /// `re.findall(...)` (whole matches).
    pub fn find_all<'t>(&self, text: &'t str) -> Vec<&'t str> {
        self.re.find_iter(text).filter_map(|m| m.ok()).map(|m| m.as_str()).collect()
    }

    /// `len(re.findall(...))`.
    pub fn count(&self, text: &str) -> usize {
        self.re.find_iter(text).filter(|m| m.is_ok()).count()
    }

    /// `re.split(...)`.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        let mut last = 0;
        for m in self.re.find_iter(text).filter_map(|m| m.ok()) {
            out.push(&text[last..m.start()]);
            last = m.end();
        }
        out.push(&text[last..]);
        out
    }
}

/// Whether `json.loads(s)` succeeds: Python's JSON (with NaN, Infinity and -Infinity, strict
/// strings without raw control characters, lone surrogate escapes allowed, " \t\n\r" as the only
/// whitespace, nothing after the value).
pub fn py_json_loads_ok(s: &str) -> bool {
    let b: Vec<char> = s.chars().collect();
    let mut i = skip_ws(&b, 0);
    match json_value(&b, i) {
        Some(end) => {
            i = skip_ws(&b, end);
            i == b.len()
        }
        None => false,
    }
}

fn skip_ws(b: &[char], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], ' ' | '\t' | '\n' | '\r') {
        i += 1;
    }
    i
}

fn lit(b: &[char], i: usize, word: &str) -> Option<usize> {
    let n = word.chars().count();
    (b.len() >= i + n && b[i..i + n].iter().copied().eq(word.chars())).then_some(i + n)
}

/// The end of the JSON value starting at `i` (the scanner of CPython's `_json`).
fn json_value(b: &[char], i: usize) -> Option<usize> {
    match *b.get(i)? {
        '"' => json_string(b, i + 1),
        '{' => {
            let mut j = skip_ws(b, i + 1);
            if b.get(j) == Some(&'}') {
                return Some(j + 1);
            }
            loop {
                if b.get(j) != Some(&'"') {
                    return None;
                }
                j = skip_ws(b, json_string(b, j + 1)?);
                if b.get(j) != Some(&':') {
                    return None;
                }
                j = skip_ws(b, json_value(b, skip_ws(b, j + 1))?);
                match b.get(j) {
                    Some('}') => return Some(j + 1),
                    Some(',') => j = skip_ws(b, j + 1),
                    _ => return None,
                }
            }
        }
        '[' => {
            let mut j = skip_ws(b, i + 1);
            if b.get(j) == Some(&']') {
                return Some(j + 1);
            }
            loop {
                j = skip_ws(b, json_value(b, j)?);
                match b.get(j) {
                    Some(']') => return Some(j + 1),
                    Some(',') => j = skip_ws(b, j + 1),
                    _ => return None,
                }
            }
        }
        'n' => lit(b, i, "null"),
        't' => lit(b, i, "true"),
        'f' => lit(b, i, "false"),
        'N' => lit(b, i, "NaN"),
        'I' => lit(b, i, "Infinity"),
        '-' if lit(b, i, "-Infinity").is_some() => lit(b, i, "-Infinity"),
        '-' | '0'..='9' => json_number(b, i),
        _ => None,
    }
}

fn json_number(b: &[char], mut i: usize) -> Option<usize> {
    let digit = |j: usize| b.get(j).is_some_and(|c| c.is_ascii_digit());
    if b[i] == '-' {
        i += 1;
    }
    match b.get(i) {
        Some('0') => i += 1,
        Some('1'..='9') => {
            while digit(i) {
                i += 1;
            }
        }
        _ => return None,
    }
    if b.get(i) == Some(&'.') && digit(i + 1) {
        i += 1;
        while digit(i) {
            i += 1;
        }
    }
    if matches!(b.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some('+' | '-')) {
            j += 1;
        }
        if digit(j) {
            while digit(j) {
                j += 1;
            }
            i = j;
        }
    }
    Some(i)
}

/// The end of a string whose opening quote is just before `i`.
fn json_string(b: &[char], mut i: usize) -> Option<usize> {
    loop {
        match *b.get(i)? {
            '"' => return Some(i + 1),
            '\\' => match *b.get(i + 1)? {
                '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' => i += 2,
                'u' => {
                    if b.len() < i + 6 || !b[i + 2..i + 6].iter().all(|c| c.is_ascii_hexdigit()) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            c if (c as u32) < 0x20 => return None,
            _ => i += 1,
        }
    }
}
