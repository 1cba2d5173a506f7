//! NLTK's `word_tokenize` (language "english", preserve_line False): Punkt sentences, then
//! `NLTKWordTokenizer.tokenize` on each, as NLTK 3.10.4 does. IFEval's `capital_word_frequency`
//! counts the `isupper()` tokens.
//!
//! Each rule of NLTKWordTokenizer is a substitution over the whole sentence, applied in NLTK's
//! order; here each is a small scanner over code points that makes the same leftmost,
//! non-overlapping matches as the Python pattern (several need lookaround, which Rust's `regex`
//! lacks). Most patterns go through NLTK's `redos` wrapper, i.e. the `regex` module (Unicode
//! `\w`, `\d`, `\s`, see punkt.rs); CONTRACTIONS2/3 are compiled with `re`, whose `\w` is
//! `str.isalnum()` or `_` and whose IGNORECASE also folds ı/İ to i and ſ to s.

use std::sync::OnceLock;

use regex::Regex;

use super::punkt::{py_space, re_digit, re_space, re_word, sentences};

/// The tokens of `nltk.word_tokenize(text)`.
pub fn word_tokenize(text: &str) -> Vec<String> {
    sentences(text).iter().flat_map(|s| treebank_tokenize(s)).collect()
}

type Chars = Vec<char>;

/// Copies `s`, putting a space on each side of every character `pad` selects (`r" \g<0> "`).
fn pad_chars(s: &[char], pad: impl Fn(char) -> bool) -> Chars {
    let mut out = Vec::with_capacity(s.len() + 8);
    for &c in s {
        if pad(c) {
            out.extend([' ', c, ' ']);
        } else {
            out.push(c);
        }
    }
    out
}

/// A global substitution: `at(s, i)` returns the end of a match starting at `i` and its
/// replacement; the scan resumes after the match, as `re.sub` does.
fn substitute(s: &[char], at: impl Fn(&[char], usize) -> Option<(usize, Chars)>) -> Chars {
    let mut out = Vec::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < s.len() {
        if let Some((end, rep)) = at(s, i) {
            out.extend(rep);
            i = end;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fn chars(s: &str) -> Chars {
    s.chars().collect()
}

fn cat(parts: &[&[char]]) -> Chars {
    parts.concat()
}

/// `re`'s `\w` (`str.isalnum()` or `_`): letters and every numeric category, no marks.
fn py_word(c: char) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    let re = RE.get_or_init(|| Regex::new(r"^[\p{L}\p{N}_]$").expect("class"));
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

/// One character of an IGNORECASE literal: `p` is an ASCII lower-case letter. `re` also takes
/// ı and İ for i and ſ for s; `regex` takes İ (not ı) for i and ſ for s.
fn ci_eq(c: char, p: char, stdlib_re: bool) -> bool {
    c == p
        || c == p.to_ascii_uppercase()
        || (p == 's' && c == 'ſ')
        || (p == 'i' && (c == 'İ' || (stdlib_re && c == 'ı')))
}

fn ci_match_at(s: &[char], i: usize, lit: &str, stdlib_re: bool) -> Option<usize> {
    let mut j = i;
    for p in lit.chars() {
        if j >= s.len() {
            return None;
        }
        let ok = if p.is_ascii_alphabetic() {
            ci_eq(s[j], p, stdlib_re)
        } else {
            s[j] == p
        };
        if !ok {
            return None;
        }
        j += 1;
    }
    Some(j)
}

/// The final-period rule, `([^\.])(\.)([<closing>]*)\s*$` → `\1 \2\3 ` (or `\1 \2 \3 ` when
/// `spaced`). Only the last period can be followed by nothing but closing characters and
/// whitespace, so only it can match; `$` may also stand before a final newline, which `\s*`
/// has already taken.
fn final_period(s: &[char], closing: impl Fn(char) -> bool, spaced: bool) -> Chars {
    let Some(q) = s.iter().rposition(|&c| c == '.') else {
        return s.to_vec();
    };
    if q == 0 || s[q - 1] == '.' {
        return s.to_vec();
    }
    let run_end = q + 1 + s[q + 1..].iter().take_while(|&&c| closing(c)).count();
    let ws_end = run_end + s[run_end..].iter().take_while(|&&c| re_space(c)).count();
    if ws_end != s.len() {
        return s.to_vec();
    }
    let mut out = s[..q].to_vec();
    out.extend_from_slice(if spaced { &[' ', '.', ' '] } else { &[' ', '.'] });
    out.extend_from_slice(&s[q + 1..run_end]);
    out.push(' ');
    out
}

/// `NLTKWordTokenizer().tokenize(text)` (convert_parentheses False).
pub fn treebank_tokenize(text: &str) -> Vec<String> {
    let mut s = chars(text);

    // STARTING_QUOTES
    s = substitute(&s, |s, i| match s[i] {
        '«' | '“' | '‘' | '„' => Some((i + 1, vec![' ', s[i], ' '])),
        '`' => {
            let n = s[i..].iter().take_while(|&&c| c == '`').count();
            Some((i + n, cat(&[&[' '], &s[i..i + n], &[' ']])))
        }
        _ => None,
    });
    if s.first() == Some(&'"') {
        s = cat(&[&['`', '`'], &s[1..]]);
    }
    s = substitute(&s, |s, i| {
        s[i..].starts_with(&['`', '`']).then(|| (i + 2, chars(" `` ")))
    });
    s = substitute(&s, |s, i| {
        if !matches!(s[i], ' ' | '(' | '[' | '{' | '<') {
            return None;
        }
        let end = if s.get(i + 1) == Some(&'"') {
            i + 2
        } else if s[i + 1..].starts_with(&['\'', '\'']) {
            i + 3
        } else {
            return None;
        };
        Some((end, cat(&[&[s[i]], &chars(" `` ")])))
    });
    // (?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w) → "\1 "
    s = substitute(&s, |s, i| {
        if s[i] != '\'' || (i > 0 && re_word(s[i - 1])) || !s.get(i + 1).is_some_and(|&c| re_word(c)) {
            return None;
        }
        let clitic = ["re", "ve", "ll", "m", "t", "s", "d", "n"]
            .iter()
            .any(|lit| ci_match_at(s, i + 1, lit, false).is_some_and(|j| j == s.len() || !re_word(s[j])));
        (!clitic).then(|| (i + 1, vec!['\'', ' ']))
    });

    // PUNCTUATION
    s = final_period(
        &s,
        |c| matches!(c, ']' | ')' | '}' | '>' | '"' | '\'' | '»' | '”' | '’' | ' '),
        true,
    );
    s = substitute(&s, |s, i| {
        (matches!(s[i], ':' | ',') && s.get(i + 1).is_some_and(|&c| !re_digit(c)))
            .then(|| (i + 2, vec![' ', s[i], ' ', s[i + 1]]))
    });
    s = substitute(&s, |s, i| {
        let at_end = i + 1 == s.len() || (i + 2 == s.len() && s[i + 1] == '\n');
        (matches!(s[i], ':' | ',') && at_end).then(|| (i + 1, vec![' ', s[i], ' ']))
    });
    s = substitute(&s, |s, i| {
        let n = s[i..].iter().take_while(|&&c| c == '.').count();
        (n >= 2).then(|| (i + n, cat(&[&[' '], &s[i..i + n], &[' ']])))
    });
    s = pad_chars(&s, |c| matches!(c, ';' | '@' | '#' | '$' | '%' | '&'));
    s = pad_chars(&s, |c| ('\u{2012}'..='\u{2015}').contains(&c));
    s = final_period(&s, |c| matches!(c, ']' | ')' | '}' | '>' | '"' | '\''), false);
    s = pad_chars(&s, |c| matches!(c, '?' | '!'));
    s = substitute(&s, |s, i| {
        (s[i] != '\'' && s[i + 1..].starts_with(&['\'', ' '])).then(|| (i + 3, vec![s[i], ' ', '\'', ' ']))
    });
    s = pad_chars(&s, |c| c == '*');

    // PARENS_BRACKETS, DOUBLE_DASHES
    s = pad_chars(&s, |c| matches!(c, ']' | '[' | '(' | ')' | '{' | '}' | '<' | '>'));
    s = substitute(&s, |s, i| {
        s[i..].starts_with(&['-', '-']).then(|| (i + 2, chars(" -- ")))
    });
    s = cat(&[&[' '], &s, &[' ']]);

    // ENDING_QUOTES
    s = pad_chars(&s, |c| matches!(c, '»' | '”' | '’'));
    s = substitute(&s, |s, i| {
        s[i..].starts_with(&['\'', '\'']).then(|| (i + 2, chars(" '' ")))
    });
    s = substitute(&s, |s, i| (s[i] == '"').then(|| (i + 1, chars(" '' "))));
    s = substitute(&s, |s, i| {
        let n = s[i..].iter().take_while(|&&c| re_space(c)).count();
        (n > 0).then(|| (i + n, vec![' ']))
    });
    // ([^' ])('[sS]|'[mM]|'[dD]|') → "\1 \2 "
    s = substitute(&s, |s, i| {
        if matches!(s[i], '\'' | ' ') || s.get(i + 1) != Some(&'\'') {
            return None;
        }
        let clitic_end = if s.get(i + 2).is_some_and(|c| "sSmMdD".contains(*c)) && s.get(i + 3) == Some(&' ') {
            i + 3
        } else if s.get(i + 2) == Some(&' ') {
            i + 2
        } else {
            return None;
        };
        Some((clitic_end + 1, cat(&[&[s[i], ' '], &s[i + 1..clitic_end], &[' ']])))
    });
    // ([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) → "\1 \2 "
    s = substitute(&s, |s, i| {
        if matches!(s[i], '\'' | ' ') {
            return None;
        }
        ["'ll", "'LL", "'re", "'RE", "'ve", "'VE", "n't", "N'T"]
            .iter()
            .find_map(|lit| {
                let lit = chars(lit);
                (s[i + 1..].starts_with(&lit) && s.get(i + 4) == Some(&' '))
                    .then(|| (i + 5, cat(&[&[s[i], ' '], &lit, &[' ']])))
            })
    });

    // CONTRACTIONS2 and CONTRACTIONS3 (stdlib `re`), each pattern over the whole text in turn.
    let c2: [(&str, &str, bool); 8] = [
        ("can", "not", false),
        ("d", "'ye", false),
        ("gim", "me", false),
        ("gon", "na", false),
        ("got", "ta", false),
        ("lem", "me", false),
        ("more", "'n", false),
        ("wan", "na", true), // (?=\s) instead of \b
    ];
    for (a, b, space_after) in c2 {
        s = substitute(&s, |s, i| {
            if i > 0 && py_word(s[i - 1]) {
                return None; // \b before a letter
            }
            let mid = ci_match_at(s, i, a, true)?;
            let end = ci_match_at(s, mid, b, true)?;
            let ok = if space_after {
                s.get(end).is_some_and(|&c| py_space(c))
            } else {
                end == s.len() || !py_word(s[end])
            };
            ok.then(|| (end, cat(&[&[' '], &s[i..mid], &[' '], &s[mid..end], &[' ']])))
        });
    }
    for b in ["is", "was"] {
        s = substitute(&s, |s, i| {
            if s[i] != ' ' {
                return None;
            }
            let mid = ci_match_at(s, i + 1, "'t", true)?;
            let end = ci_match_at(s, mid, b, true)?;
            (end == s.len() || !py_word(s[end]))
                .then(|| (end, cat(&[&[' '], &s[i + 1..mid], &[' '], &s[mid..end], &[' ']])))
        });
    }

    // text.split()
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s {
        if py_space(c) {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
