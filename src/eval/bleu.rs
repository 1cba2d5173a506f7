//! BLEU exactly as sacrebleu 2.6.0 computes it with its defaults: the `13a` tokenizer
//! (mteval-v13a.pl), case-sensitive, up to 4-grams, `exp` smoothing; `corpus_bleu` without
//! and `sentence_bleu` with effective order.
//!
//! sacrebleu is what BLEU numbers in papers come from, and small tokenizer or smoothing
//! differences move scores by whole points, so this reproduces its code path: the 13a
//! substitutions and regexes, Python's `str.split`/`rstrip` whitespace (which also counts
//! U+001C..U+001F), clipped counts against the per-n-gram maximum over references, the
//! closest reference length (ties → the shorter), its brevity penalty, the "no match at
//! all → 0" early exit, `exp` smoothing and the `-9999999999` floor for `log(0)`. The float
//! operations are the same ones in the same order, so scores match to the last bit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash-style hasher for the small integer keys below: n-gram counting is most of
/// BLEU's work, and SipHash's DoS resistance buys nothing for local texts.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// sacrebleu's `BLEUScore`. `score` is on sacrebleu's 0–100 scale, `precisions` are
/// percentages too; `sys_len`/`ref_len` are the (summed) hypothesis and closest reference
/// lengths in tokens.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Bleu {
    pub score: f64,
    pub counts: [usize; 4],
    pub totals: [usize; 4],
    pub precisions: [f64; 4],
    pub bp: f64,
    pub sys_len: usize,
    pub ref_len: usize,
}

const MAX_ORDER: usize = 4;

/// Python's `str.isspace`, which `str.split()` and `str.rstrip()` use: Unicode White_Space
/// plus the four information separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// sacrebleu's `Tokenizer13a()(line)`: the mteval-v13a tokenization, returned as
/// space-joined tokens. (BLEU also strips trailing whitespace first; see `tokens_13a`.)
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let chars: Vec<char> = format!(" {line} ").chars().collect();

    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> ' \1 ': ASCII punctuation and symbols except
    // ' , - . (and the space itself, which the class includes).
    let mut s1: Vec<char> = Vec::with_capacity(chars.len() * 2);
    for &c in &chars {
        if matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/') {
            s1.extend([' ', c, ' ']);
        } else {
            s1.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let punct = |c: char| c == '.' || c == ',';
    // Each of the next three is Python's re.sub with a two-character pattern: matches are
    // found left to right and do not overlap, so a match consumes both characters.
    // ([^0-9])([\.,]) -> '\1 \2 '
    let s2 = sub_pairs(
        &s1,
        |a, b| !digit(a) && punct(b),
        |a, b, out| out.extend([a, ' ', b, ' ']),
    );
    // ([\.,])([^0-9]) -> ' \1 \2'
    let s3 = sub_pairs(
        &s2,
        |a, b| punct(a) && !digit(b),
        |a, b, out| out.extend([' ', a, ' ', b]),
    );
    // ([0-9])(-) -> '\1 \2 '
    let s4 = sub_pairs(
        &s3,
        |a, b| digit(a) && b == '-',
        |a, b, out| out.extend([a, ' ', b, ' ']),
    );

    let s: String = s4.into_iter().collect();
    s.split(is_py_space)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `re.sub` for a pattern that matches exactly two characters.
fn sub_pairs(
    s: &[char],
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char, &mut Vec<char>),
) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len() + s.len() / 2);
    let mut i = 0;
    while i < s.len() {
        if i + 1 < s.len() && matches(s[i], s[i + 1]) {
            replace(s[i], s[i + 1], &mut out);
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// BLEU's `_preprocess_segment` (no lowercasing, `rstrip`, 13a) split into tokens.
fn tokens_13a(segment: &str) -> Vec<String> {
    tokenize_13a(segment.trim_end_matches(is_py_space))
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// An n-gram of 1..=4 token ids; unused slots hold `u32::MAX`.
type NGram = [u32; MAX_ORDER];

/// Counts all 1..=4-grams of a segment (sacrebleu's `extract_all_word_ngrams`).
fn ngrams<'t>(tokens: &'t [String], vocab: &mut HashMap<&'t str, u32>) -> FxMap<NGram, usize> {
    let ids: Vec<u32> = tokens
        .iter()
        .map(|t| {
            let next = vocab.len() as u32;
            *vocab.entry(t.as_str()).or_insert(next)
        })
        .collect();
    let mut counts = FxMap::default();
    for n in 1..=MAX_ORDER {
        for w in ids.windows(n) {
            let mut key = [u32::MAX; MAX_ORDER];
            key[..n].copy_from_slice(w);
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

fn order(ng: &NGram) -> usize {
    ng.iter().take_while(|&&t| t != u32::MAX).count()
}

/// Sufficient statistics of one segment: `[hyp_len, ref_len, correct×4, total×4]`.
fn segment_stats(hyp: &str, refs: &[&str]) -> [usize; 2 + 2 * MAX_ORDER] {
    let ref_toks: Vec<Vec<String>> = refs.iter().map(|r| tokens_13a(r)).collect();
    let hyp_toks = tokens_13a(hyp);
    let hyp_len = hyp_toks.len();
    let mut vocab: HashMap<&str, u32> = HashMap::new();
    // Reference n-grams: per n-gram the maximum count over references.
    let mut ref_ngrams: FxMap<NGram, usize> = FxMap::default();
    let mut ref_lens = Vec::with_capacity(refs.len());
    for toks in &ref_toks {
        ref_lens.push(toks.len());
        for (ng, c) in ngrams(toks, &mut vocab) {
            let e = ref_ngrams.entry(ng).or_insert(0);
            *e = (*e).max(c);
        }
    }

    // Closest reference length; on a tie the shorter one.
    let mut closest: Option<(usize, usize)> = None; // (diff, len)
    for &rl in &ref_lens {
        let diff = hyp_len.abs_diff(rl);
        closest = match closest {
            None => Some((diff, rl)),
            Some((d, l)) if diff < d || (diff == d && rl < l) => Some((diff, rl)),
            keep => keep,
        };
    }
    // sacrebleu's sentinel for "no reference" is -1; with no references we never get here
    // with a segment (see `corpus_bleu`), so 0 is only a placeholder.
    let ref_len = closest.map_or(0, |(_, l)| l);

    let mut st = [0usize; 2 + 2 * MAX_ORDER];
    st[0] = hyp_len;
    st[1] = ref_len;
    for (ng, c) in ngrams(&hyp_toks, &mut vocab) {
        let n = order(&ng) - 1;
        st[2 + MAX_ORDER + n] += c;
        if let Some(&rc) = ref_ngrams.get(&ng) {
            st[2 + n] += c.min(rc);
        }
    }
    st
}

/// sacrebleu's `my_log`: `log`, with 0 mapped to -9999999999 instead of -inf.
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// sacrebleu's `BLEU.compute_bleu` with `smooth_method='exp'`.
fn compute_bleu(stats: &[usize; 2 + 2 * MAX_ORDER], effective_order: bool) -> Bleu {
    let sys_len = stats[0];
    let ref_len = stats[1];
    let mut counts = [0usize; MAX_ORDER];
    let mut totals = [0usize; MAX_ORDER];
    counts.copy_from_slice(&stats[2..2 + MAX_ORDER]);
    totals.copy_from_slice(&stats[2 + MAX_ORDER..]);

    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        };
    }
    let mut precisions = [0.0f64; MAX_ORDER];
    // Early stop if there are no matches at all (sacrebleu #141).
    if counts.iter().all(|&c| c == 0) {
        return Bleu {
            score: 0.0,
            counts,
            totals,
            precisions,
            bp,
            sys_len,
            ref_len,
        };
    }

    let mut smooth_mteval = 1.0f64;
    let mut eff_order = MAX_ORDER;
    for n in 1..=MAX_ORDER {
        if totals[n - 1] == 0 {
            break;
        }
        if effective_order {
            eff_order = n;
        }
        if counts[n - 1] == 0 {
            smooth_mteval *= 2.0;
            precisions[n - 1] = 100.0 / (smooth_mteval * totals[n - 1] as f64);
        } else {
            precisions[n - 1] = 100.0 * counts[n - 1] as f64 / totals[n - 1] as f64;
        }
    }
    // Python's sum(): left to right, starting from 0.
    let log_sum = precisions[..eff_order]
        .iter()
        .fold(0.0f64, |acc, &p| acc + my_log(p));
    let score = bp * (log_sum / eff_order as f64).exp();
    Bleu {
        score,
        counts,
        totals,
        precisions,
        bp,
        sys_len,
        ref_len,
    }
}

/// sacrebleu `corpus_bleu(hypotheses, references)` with its defaults (13a, mixed case,
/// `exp` smoothing, no effective order). `references` is a list of reference *streams*,
/// each parallel to `hypotheses` (`references[k][i]` is the k-th reference of hypothesis
/// i), exactly as sacrebleu takes them. As in sacrebleu (Python `zip`), segments beyond
/// the shortest of the hypotheses and the streams are ignored. Where sacrebleu raises
/// (no hypotheses, no reference streams) this returns the all-zero statistics' result:
/// score 0 with bp 1.
pub fn corpus_bleu(hypotheses: &[&str], references: &[Vec<&str>]) -> Bleu {
    let n_seg = references
        .iter()
        .map(Vec::len)
        .min()
        .unwrap_or(0)
        .min(hypotheses.len());
    let mut total = [0usize; 2 + 2 * MAX_ORDER];
    let mut refs: Vec<&str> = Vec::with_capacity(references.len());
    for (i, hyp) in hypotheses.iter().enumerate().take(n_seg) {
        refs.clear();
        refs.extend(references.iter().map(|stream| stream[i]));
        let st = segment_stats(hyp, &refs);
        for (t, s) in total.iter_mut().zip(st) {
            *t += s;
        }
    }
    compute_bleu(&total, false)
}

/// sacrebleu `sentence_bleu(hypothesis, references)` with its defaults (13a, mixed case,
/// `exp` smoothing, effective order: only n-gram orders the hypothesis has count).
/// `references` are alternative references for this one hypothesis. With no references
/// (sacrebleu raises) the result is score 0 with bp 1.
pub fn sentence_bleu(hypothesis: &str, references: &[&str]) -> Bleu {
    let st = if references.is_empty() {
        [0; 2 + 2 * MAX_ORDER]
    } else {
        segment_stats(hypothesis, references)
    };
    compute_bleu(&st, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_13a_rules() {
        assert_eq!(tokenize_13a("Hello, world."), "Hello , world .");
        assert_eq!(
            tokenize_13a("It's 3.14, 1,000 and 3-4 a-b"),
            "It's 3.14 , 1,000 and 3 - 4 a-b"
        );
        assert_eq!(
            tokenize_13a("Tom &amp; Jerry &lt;b&gt; &quot;x&quot;"),
            "Tom & Jerry < b > \" x \""
        );
        assert_eq!(tokenize_13a("hy-\nphen\nline <skipped>x"), "hyphen line x");
        assert_eq!(tokenize_13a("(a){b}[c]$d"), "( a ) { b } [ c ] $ d");
        assert_eq!(tokenize_13a("x.,y"), "x . , y");
        assert_eq!(tokenize_13a("a\u{1c}b\u{a0}c"), "a b c");
        assert_eq!(tokenize_13a("  "), "");
    }

    #[test]
    fn identical_sentence_is_100() {
        let b = sentence_bleu("The cat sat on the mat.", &["The cat sat on the mat."]);
        // exp(4·ln(100)/4) is not exactly 100; sacrebleu prints this very value.
        assert_eq!(b.score, 100.00000000000004);
        assert_eq!(b.counts, [7, 6, 5, 4]);
        assert_eq!(b.totals, [7, 6, 5, 4]);
        assert_eq!(b.bp, 1.0);
    }

    #[test]
    fn zero_cases() {
        let b = sentence_bleu("", &["a b c"]);
        assert_eq!((b.score, b.bp, b.sys_len, b.ref_len), (0.0, 0.0, 0, 3));
        let b = sentence_bleu("x y", &["a b c"]);
        assert_eq!(b.score, 0.0);
        assert_eq!(b.totals, [2, 1, 0, 0]);
        assert_eq!(sentence_bleu("a", &[]).score, 0.0);
        assert_eq!(corpus_bleu(&[], &[vec![]]).bp, 1.0);
        // Corpus BLEU without effective order: no 4-grams at all -> log floor -> 0.
        let c = corpus_bleu(&["a b c"], &[vec!["a b c"]]);
        assert_eq!(c.counts, [3, 2, 1, 0]);
        assert_eq!(c.score, 0.0);
        // ... while sentence BLEU uses the orders that exist.
        assert_eq!(sentence_bleu("a b c", &["a b c"]).score, 100.00000000000004);
    }

    #[test]
    fn exp_smoothing_and_brevity_penalty() {
        // hyp "a b c d" vs ref "a b x d e": counts [3,1,0,0], totals [4,3,2,1].
        let b = sentence_bleu("a b c d", &["a b x d e"]);
        assert_eq!(b.counts, [3, 1, 0, 0]);
        assert_eq!(b.totals, [4, 3, 2, 1]);
        assert_eq!(
            b.precisions,
            [75.0, 100.0 / 3.0, 100.0 / (2.0 * 2.0), 100.0 / (4.0 * 1.0)]
        );
        assert_eq!(b.bp, (1.0 - 5.0 / 4.0f64).exp());
        let logs = 75.0f64.ln() + (100.0f64 / 3.0).ln() + 25.0f64.ln() + 25.0f64.ln();
        assert_eq!(b.score, b.bp * (logs / 4.0).exp());
    }

    #[test]
    fn multiple_references_clip_by_max_and_pick_closest_length() {
        let b = sentence_bleu("the the the", &["the cat", "the the dog sat"]);
        assert_eq!(b.counts[0], 2);
        // Lengths 2 and 4 are both 1 away from 3: the shorter wins.
        assert_eq!(b.ref_len, 2);
        let c = corpus_bleu(&["a b", "c d"], &[vec!["a b", "c d"], vec!["a", "c d e"]]);
        assert_eq!(c.sys_len, 4);
        assert_eq!(c.ref_len, 4);
    }

    #[test]
    fn odd_and_huge_inputs() {
        for s in [
            "",
            "\n",
            "&",
            "&amp;amp;",
            "-\n",
            "🙂",
            "日本語",
            "\u{0}",
            ". , . ,",
            "1-2-3",
        ] {
            let _ = sentence_bleu(s, &[s, ""]);
        }
        let long = "step one. ".repeat(100_000);
        let b = sentence_bleu(&long, &[&long]);
        assert_eq!(b.score, 100.00000000000004);
        assert_eq!(b.counts, [300_000, 299_999, 299_998, 299_997]);
    }
}
