//! A minimal WordNet 3.0 reader: exactly the part of NLTK's `WordNetCorpusReader` that
//! METEOR's synonym stage uses (`wordnet.synsets(word)` with `pos=None`, then the lemma
//! names of every synset).
//!
//! It reads the plain WordNet database files (`index.{noun,verb,adj,adv}`,
//! `data.{noun,verb,adj,adv}`, `{noun,verb,adj,adv}.exc`), the same files NLTK reads, and
//! ports NLTK 3.10.4 (`nltk/corpus/reader/wordnet.py`) line by line where it matters:
//!
//! * **Index** (`_load_lemma_pos_offset_map`): lines starting with a space (the license
//!   header) are skipped; every other line is `lemma pos n_synsets n_pointers
//!   pointer... n_senses tagsense_cnt offset...` giving `lemma -> pos -> offsets`.
//!   Lemmas are the raw index keys (lower case, `_` for spaces), looked up as given (no
//!   space-to-underscore conversion, as in NLTK 3.10.4).
//! * **Exceptions** (`_load_exception_map`): `form base...` per line, last line wins.
//! * **Morphy** (`_morphy`): if `form` is in the POS's exception list, the candidates are
//!   `[form] + exceptions[form]`; otherwise `[form] + apply_rules([form])` with NLTK's
//!   `MORPHOLOGICAL_SUBSTITUTIONS` (applied once, in order). Candidates are kept, in order
//!   and de-duplicated, when the index has them for that POS.
//! * **synsets(word)**: `word.lower()`, then for POS in `[n, v, a, r]` (NLTK's `POS_LIST`;
//!   satellites are reached through `a`, whose index lists them), for every morphy form,
//!   every offset of `index[form][pos]`, the synset at that byte offset of `data.<pos>`.
//! * **Lemma names** (`_synset_from_pos_and_line`): the `w_cnt` (hex) lemma tokens of the
//!   data line, each with a trailing syntactic marker such as `(a)`, `(p)`, `(ip)`
//!   removed (NLTK's `(.*?)(\([^()]*\))?$`), case kept as in the file (`Party`, `DNA`).
//!
//! [`WordNet::open`] reads the index and data files into memory (about 28 MB) and parses
//! only the exception lists; index lines are found by binary search (the index files are
//! sorted, as WordNet's own library requires; [`WordNet::verify`] checks it) and synset
//! lines are parsed when looked up. `WordNet` is `Send + Sync`; share one instance, e.g.
//! through [`WordNet::shared_default`].

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// Environment variable naming the WordNet database folder (default `/usr/share/wordnet`).
pub const WORDNET_ENV: &str = "STEPTUNE_WORDNET";
/// Where Debian's `wordnet-base` package installs the WordNet 3.0 database.
pub const DEFAULT_WORDNET_DIR: &str = "/usr/share/wordnet";

/// NLTK's `POS_LIST` order, which is also the order of the per-POS arrays below.
const POS_LIST: [char; 4] = ['n', 'v', 'a', 'r'];
const FILE_SUFFIX: [&str; 4] = ["noun", "verb", "adj", "adv"];

/// NLTK's `MORPHOLOGICAL_SUBSTITUTIONS`, indexed like [`POS_LIST`].
const SUBSTITUTIONS: [&[(&str, &str)]; 4] = [
    &[
        ("s", ""),
        ("ses", "s"),
        ("ves", "f"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ],
    &[
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ],
    &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    &[],
];

/// One `index.<pos>` file, kept as text and searched by binary search (WordNet's index
/// files are sorted by lemma in byte order with one line per lemma, which is what
/// WordNet's own library relies on; [`WordNet::verify`] checks it). A lookup is then
/// the same as NLTK's `_lemma_pos_offset_map[lemma][pos]`, without building a map of
/// 150 000 lemmas at start-up.
struct IndexFile {
    text: String,
    /// Byte offset of the first line after the license header (lines starting with ' ').
    body: usize,
}

impl IndexFile {
    fn new(text: String) -> IndexFile {
        let mut body = 0;
        while text[body..].starts_with(' ') {
            body = match text[body..].find('\n') {
                Some(i) => body + i + 1,
                None => text.len(),
            };
        }
        IndexFile { text, body }
    }

    /// The line whose lemma (first field) is `key`.
    fn find(&self, key: &str) -> Option<&str> {
        let bytes = self.text.as_bytes();
        let key = key.as_bytes();
        let (mut lo, mut hi) = (self.body, bytes.len());
        // Invariant: lo and hi are line starts (or the end); the line sought, if any,
        // starts in lo..hi.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let s = bytes[lo..mid]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(lo, |i| lo + i + 1);
            let e = bytes[s..hi]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(hi, |i| s + i + 1);
            let line = &self.text[s..e];
            let lemma = py_split(line).next().unwrap_or("").as_bytes();
            match lemma.cmp(key) {
                std::cmp::Ordering::Equal => return Some(line),
                std::cmp::Ordering::Less => lo = e,
                std::cmp::Ordering::Greater => hi = s,
            }
        }
        None
    }

    /// The lines after the header.
    fn lines(&self) -> impl Iterator<Item = &str> {
        self.text[self.body..].split_terminator('\n')
    }
}

/// NLTK's parse of one index line: `(lemma, pos, synset offsets)`, with its checks.
fn parse_index_line(line: &str) -> Result<(&str, &str, Vec<u32>)> {
    let mut it = py_split(line);
    let mut next = || it.next().ok_or_else(|| anyhow::anyhow!("line too short"));
    let lemma = next()?;
    let pos = next()?;
    let n_synsets = parse_int(next()?, "n_synsets")?;
    if n_synsets == 0 {
        bail!("n_synsets is 0");
    }
    let n_pointers = parse_int(next()?, "n_pointers")?;
    for _ in 0..n_pointers {
        next()?;
    }
    let n_senses = parse_int(next()?, "n_senses")?;
    if n_senses != n_synsets {
        bail!("n_senses {n_senses} != n_synsets {n_synsets}");
    }
    next()?; // tagsense_cnt
    let mut offsets = Vec::with_capacity(n_synsets.min(1024) as usize);
    for _ in 0..n_synsets {
        let o = parse_int(next()?, "synset offset")?;
        offsets.push(u32::try_from(o).context("synset offset too large")?);
    }
    Ok((lemma, pos, offsets))
}

/// An in-memory WordNet database. See the module documentation.
pub struct WordNet {
    dir: PathBuf,
    index: [IndexFile; 4],
    exceptions: [HashMap<String, Vec<String>>; 4],
    data: [Vec<u8>; 4],
}

impl std::fmt::Debug for WordNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordNet")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn missing_help(dir: &Path, what: &str) -> String {
    format!(
        "WordNet database not found: {what} in {}. METEOR needs the WordNet 3.0 database: \
         run scripts/wordnet-setup.sh (as root it runs `apt-get install -y wordnet-base \
         wordnet-sense-index`, which installs it in {DEFAULT_WORDNET_DIR}), or set \
         {WORDNET_ENV} to a folder holding the WordNet 3.0 dict files (index.*, data.*, *.exc)",
        dir.display()
    )
}

fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `str.split()` (no arguments).
fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|t| !t.is_empty())
}

/// Python's `str.strip()` (no arguments).
fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `int(token)` for the decimal fields of the database.
fn parse_int(tok: &str, what: &str) -> Result<u64> {
    tok.replace('_', "")
        .parse::<u64>()
        .with_context(|| format!("invalid literal for int() in {what}: {tok:?}"))
}

/// NLTK's `redos.match(r"(.*?)(\([^()]*\))?$", name).group(1)`: drop one trailing
/// parenthesised syntactic marker (`(a)`, `(p)`, `(ip)`) that holds no other parenthesis.
fn strip_syntactic_marker(name: &str) -> &str {
    if let Some(body) = name.strip_suffix(')') {
        if let Some(open) = body.rfind('(') {
            if !body[open + 1..].contains(')') {
                return &name[..open];
            }
        }
    }
    name
}

fn read_text(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(missing_help(dir, &format!("no {file}")))
        } else {
            anyhow::Error::new(e).context(format!("reading {}", path.display()))
        }
    })?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))
}

impl WordNet {
    /// Opens the database in `$STEPTUNE_WORDNET` if that is set (and not empty), else in
    /// `/usr/share/wordnet`. The error says how to install it when it is missing.
    pub fn open_default() -> Result<WordNet> {
        WordNet::open(&Self::default_dir())
    }

    /// The folder [`WordNet::open_default`] reads.
    pub fn default_dir() -> PathBuf {
        match std::env::var_os(WORDNET_ENV) {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from(DEFAULT_WORDNET_DIR),
        }
    }

    /// One process-wide instance of [`WordNet::open_default`], opened on first use and
    /// shared afterwards (an error is kept too, and returned on every call).
    pub fn shared_default() -> Result<&'static WordNet> {
        static SHARED: OnceLock<std::result::Result<WordNet, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| WordNet::open_default().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Opens the WordNet database in `dir` (the folder holding `index.noun`, `data.noun`,
    /// `noun.exc`, ...): reads the index and data files (about 28 MB) and parses the
    /// exception lists; nothing else is parsed until it is looked up.
    pub fn open(dir: &Path) -> Result<WordNet> {
        if !dir.is_dir() {
            bail!(missing_help(dir, "no such folder"));
        }
        if !dir.join("data.noun").is_file() {
            bail!(missing_help(dir, "no data.noun"));
        }
        let mut index: Vec<IndexFile> = Vec::with_capacity(4);
        let mut exceptions: [HashMap<String, Vec<String>>; 4] = Default::default();
        let mut data: [Vec<u8>; 4] = Default::default();
        for (p, suffix) in FILE_SUFFIX.iter().enumerate() {
            index.push(IndexFile::new(read_text(dir, &format!("index.{suffix}"))?));
            data[p] = read_text(dir, &format!("data.{suffix}"))?.into_bytes();
            // NLTK's _load_exception_map: `terms = line.split(); map[terms[0]] = terms[1:]`
            for line in read_text(dir, &format!("{suffix}.exc"))?.lines() {
                let mut terms = py_split(line);
                if let Some(form) = terms.next() {
                    exceptions[p].insert(form.to_string(), terms.map(str::to_string).collect());
                }
            }
        }
        let index: [IndexFile; 4] = index
            .try_into()
            .map_err(|_| anyhow::anyhow!("index files"))?;
        Ok(WordNet {
            dir: dir.to_path_buf(),
            index,
            exceptions,
            data,
        })
    }

    /// The folder this database was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `index[form][pos]`: the synset offsets of `form` in POS `p`, `None` when the index
    /// has no such lemma for that POS.
    fn offsets(&self, form: &str, p: usize) -> Option<Vec<u32>> {
        let line = self.index[p].find(form)?;
        parse_index_line(line).ok().map(|(_, _, offsets)| offsets)
    }

    /// NLTK's `_morphy(form, pos, check_exceptions=True)`: the base forms of `form` that
    /// the index has for `pos` (`'n'`, `'v'`, `'a'` or `'r'`), in NLTK's order. `form`
    /// is used as given (NLTK's `synsets` lower-cases before calling it).
    pub fn morphy(&self, form: &str, pos: char) -> Vec<String> {
        match POS_LIST.iter().position(|&c| c == pos) {
            Some(p) => self.morphy_idx(form, p),
            None => Vec::new(),
        }
    }

    fn morphy_idx(&self, form: &str, p: usize) -> Vec<String> {
        let mut candidates: Vec<String> = vec![form.to_string()];
        if let Some(exc) = self.exceptions[p].get(form) {
            candidates.extend(exc.iter().cloned());
        } else {
            for (old, new) in SUBSTITUTIONS[p] {
                if let Some(stem) = form.strip_suffix(old) {
                    candidates.push(format!("{stem}{new}"));
                }
            }
        }
        let mut out: Vec<String> = Vec::new();
        for c in candidates {
            if !out.contains(&c) && self.index[p].find(&c).is_some() {
                out.push(c);
            }
        }
        out
    }

    /// The lemma names (syntactic markers removed, case kept) of the synset at byte
    /// `offset` of `data.<pos>`, or `None` when no synset line starts there (NLTK warns
    /// and yields `None` there) or the line does not parse.
    fn names_at(&self, p: usize, offset: u32) -> Option<Vec<&str>> {
        let data = &self.data[p];
        let start = offset as usize;
        if start >= data.len() {
            return None;
        }
        let end = data[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |e| start + e + 1);
        let line = std::str::from_utf8(&data[start..end]).ok()?;
        // line_offset.isalnum() and line_offset == "%08d" % offset
        if line.get(..8)? != format!("{offset:08}") {
            return None;
        }
        // columns_str, gloss = data_file_line.strip().split("|")
        let mut parts = py_strip(line).split('|');
        let columns = parts.next()?;
        parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let mut it = py_split(columns);
        it.next()?; // offset
        it.next()?; // lexname index
        it.next()?; // ss_type
        let n = usize::from_str_radix(it.next()?, 16).ok()?;
        let mut names = Vec::with_capacity(n.min(256));
        for _ in 0..n {
            let name = it.next()?;
            it.next()?; // lex_id
            names.push(strip_syntactic_marker(name));
        }
        Some(names)
    }

    /// Calls `f(pos index, offset)` for every synset of NLTK's `synsets(word)`, in order.
    fn for_each_synset(&self, word: &str, mut f: impl FnMut(usize, u32)) {
        let lemma = word.to_lowercase();
        for p in 0..POS_LIST.len() {
            for form in self.morphy_idx(&lemma, p) {
                for off in self.offsets(&form, p).unwrap_or_default() {
                    f(p, off);
                }
            }
        }
    }

    /// The lemma names of NLTK's `synsets(word)` over all POS, synset by synset, in
    /// NLTK's order (duplicates and multi-word `_` names kept).
    pub fn synset_lemma_names(&self, word: &str) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.for_each_synset(word, |p, off| {
            if let Some(names) = self.names_at(p, off) {
                out.push(names.into_iter().map(str::to_string).collect());
            }
        });
        out
    }

    /// Exactly the synonym set NLTK's METEOR builds for a hypothesis word:
    ///
    /// ```python
    /// set(chain.from_iterable(
    ///     (lemma.name() for lemma in synset.lemmas() if lemma.name().find("_") < 0)
    ///     for synset in wordnet.synsets(word))).union({word})
    /// ```
    ///
    /// i.e. the lemma names (case as in WordNet, multi-word names with `_` dropped) of
    /// every synset of `word.lower()` in every POS, found through morphy, plus `word`
    /// itself (as given).
    pub fn synonyms(&self, word: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.for_each_synset(word, |p, off| {
            for name in self.names_at(p, off).unwrap_or_default() {
                if !name.contains('_') && !out.contains(name) {
                    out.insert(name.to_string());
                }
            }
        });
        out.insert(word.to_string());
        out
    }

    /// Checks what the lazy reader assumes and NLTK's eager reader would reject: every
    /// index line parses as NLTK parses it and carries its file's POS, the lemmas are in
    /// strictly increasing byte order (so binary search finds exactly NLTK's entries),
    /// and every offset points at a synset line that parses. Returns the number of
    /// (pos, offset) pairs checked. Takes a fraction of a second; meant for tests.
    pub fn verify(&self) -> Result<usize> {
        let mut n = 0;
        for (p, file) in self.index.iter().enumerate() {
            let name = format!("index.{}", FILE_SUFFIX[p]);
            let mut prev: Option<&str> = None;
            for line in file.lines() {
                if line.starts_with(' ') {
                    bail!("{name}: header line after the first lemma: {line:?}");
                }
                let (lemma, pos, offsets) =
                    parse_index_line(line).with_context(|| format!("{name}: line {line:?}"))?;
                if pos != POS_LIST[p].to_string() {
                    bail!("{name}: lemma {lemma:?} has POS {pos:?}");
                }
                if prev.is_some_and(|q| q.as_bytes() >= lemma.as_bytes()) {
                    bail!("{name}: not sorted or not unique at {lemma:?} (after {prev:?})");
                }
                prev = Some(lemma);
                for off in offsets {
                    if self.names_at(p, off).is_none() {
                        bail!("{name}: lemma {lemma:?}: no valid synset at offset {off}");
                    }
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    const HEADER: &str = "  1 This software and database is being provided to you, the LICENSEE, by  \n  2 Princeton University under the following license.  \n";

    /// Builds a data file from `(lemmas, gloss)` entries, computing the byte offsets, and
    /// returns its text and the offsets.
    fn data_file(pos: char, entries: &[(&[&str], &str)]) -> (String, Vec<u32>) {
        let mut text = HEADER.to_string();
        let mut offsets = Vec::new();
        for (lemmas, gloss) in entries {
            let off = text.len() as u32;
            offsets.push(off);
            let mut line = format!("{off:08} 03 {pos} {:02x}", lemmas.len());
            for l in lemmas.iter() {
                line.push_str(&format!(" {l} 0"));
            }
            line.push_str(&format!(" 000 | {gloss}  \n"));
            text.push_str(&line);
        }
        (text, offsets)
    }

    /// A tiny synthetic database with the quirks the reader must handle.
    pub(crate) fn mini_wordnet() -> (PathBuf, WordNet) {
        let dir = std::env::temp_dir().join(format!(
            "steptune-wn-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (noun, no) = data_file(
            'n',
            &[
                (
                    &["dog", "domestic_dog", "Canis_familiaris"],
                    "a member of the genus Canis",
                ),
                (&["guide", "usher"], "someone who shows the way"),
                (&["party", "Party", "political_party"], "an organization"),
                (&["church", "church_building"], "a place for worship"),
                (&["man", "adult_male"], "an adult person who is male"),
            ],
        );
        let (verb, vo) = data_file(
            'v',
            &[
                (
                    &["chase", "dog", "tail", "track"],
                    "go after with the intent to catch",
                ),
                (&["guide", "steer", "direct"], "direct the course"),
                (&["see", "understand"], "perceive by sight"),
            ],
        );
        let (adj, ao) = data_file(
            'a',
            &[
                (&["big(a)", "large(p)"], "above average in size"),
                (&["good(ip)"], "having desirable qualities"),
            ],
        );
        let (adv, ro) = data_file('r', &[(&["well", "good"], "in a good manner")]);
        let idx = |lines: &[String]| format!("{HEADER}{}", lines.concat());
        let entry = |lemma: &str, pos: char, offs: &[u32]| {
            let o: Vec<String> = offs.iter().map(|o| format!("{o:08}")).collect();
            format!(
                "{lemma} {pos} {} 1 @ {} 0 {}  \n",
                offs.len(),
                offs.len(),
                o.join(" ")
            )
        };
        fs::write(
            dir.join("index.noun"),
            idx(&[
                entry("canis_familiaris", 'n', &[no[0]]),
                entry("church", 'n', &[no[3]]),
                entry("dog", 'n', &[no[0]]),
                entry("guide", 'n', &[no[1]]),
                entry("man", 'n', &[no[4]]),
                entry("party", 'n', &[no[2]]),
            ]),
        )
        .unwrap();
        fs::write(
            dir.join("index.verb"),
            idx(&[
                entry("dog", 'v', &[vo[0]]),
                entry("guide", 'v', &[vo[1]]),
                entry("see", 'v', &[vo[2]]),
            ]),
        )
        .unwrap();
        fs::write(
            dir.join("index.adj"),
            idx(&[entry("big", 'a', &[ao[0]]), entry("good", 'a', &[ao[1]])]),
        )
        .unwrap();
        fs::write(dir.join("index.adv"), idx(&[entry("well", 'r', &[ro[0]])])).unwrap();
        fs::write(dir.join("data.noun"), noun).unwrap();
        fs::write(dir.join("data.verb"), verb).unwrap();
        fs::write(dir.join("data.adj"), adj).unwrap();
        fs::write(dir.join("data.adv"), adv).unwrap();
        fs::write(dir.join("noun.exc"), "men man\n").unwrap();
        fs::write(dir.join("verb.exc"), "saw see\nseen see\n").unwrap();
        fs::write(dir.join("adj.exc"), "better good well\nbigger big\n").unwrap();
        fs::write(dir.join("adv.exc"), "best well\n").unwrap();
        let wn = WordNet::open(&dir).unwrap();
        (dir, wn)
    }

    fn set(words: &[&str]) -> BTreeSet<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wordnet_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<WordNet>();
    }

    #[test]
    fn syntactic_markers_are_stripped_like_nltk() {
        assert_eq!(strip_syntactic_marker("big(a)"), "big");
        assert_eq!(strip_syntactic_marker("good(ip)"), "good");
        assert_eq!(strip_syntactic_marker("dog"), "dog");
        assert_eq!(strip_syntactic_marker("a(b)c"), "a(b)c");
        assert_eq!(strip_syntactic_marker("a(b(c)"), "a(b");
        assert_eq!(strip_syntactic_marker("a)"), "a)");
        assert_eq!(strip_syntactic_marker("()"), "");
    }

    #[test]
    fn morphy_follows_nltk_rules_and_exceptions() {
        let (dir, wn) = mini_wordnet();
        assert_eq!(wn.morphy("dogs", 'n'), vec!["dog"]);
        assert_eq!(wn.morphy("dog", 'n'), vec!["dog"]);
        assert_eq!(wn.morphy("churches", 'n'), vec!["church"]);
        // exception list: the original form first, then the listed bases
        assert_eq!(wn.morphy("men", 'n'), vec!["man"]);
        assert_eq!(wn.morphy("saw", 'v'), vec!["see"]);
        assert_eq!(wn.morphy("better", 'a'), vec!["good"]);
        // an exception entry replaces the rules: "bigger" -> only "big" via exc
        assert_eq!(wn.morphy("bigger", 'a'), vec!["big"]);
        assert_eq!(wn.morphy("guided", 'v'), vec!["guide"]);
        assert_eq!(wn.morphy("guiding", 'v'), vec!["guide"]);
        assert!(wn.morphy("dogs", 'r').is_empty());
        assert!(wn.morphy("dog", 'x').is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn synonyms_are_meteors_set() {
        let (dir, wn) = mini_wordnet();
        // noun + verb synsets; names with '_' dropped; the word itself added
        assert_eq!(
            wn.synonyms("dogs"),
            set(&["chase", "dog", "dogs", "tail", "track"])
        );
        // case of lemma names is kept; the word is lower-cased for the lookup only
        assert_eq!(wn.synonyms("Party"), set(&["Party", "party"]));
        assert_eq!(wn.synonyms("better"), set(&["better", "good"]));
        assert_eq!(wn.synonyms("big"), set(&["big", "large"]));
        assert_eq!(wn.synonyms("unknownword"), set(&["unknownword"]));
        assert_eq!(wn.synonyms(""), set(&[""]));
        assert_eq!(
            wn.synset_lemma_names("dog"),
            vec![
                vec![
                    "dog".to_string(),
                    "domestic_dog".into(),
                    "Canis_familiaris".into()
                ],
                vec![
                    "chase".to_string(),
                    "dog".into(),
                    "tail".into(),
                    "track".into()
                ],
            ]
        );
        assert_eq!(wn.verify().unwrap(), 12);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_database_error_says_how_to_install() {
        let err = WordNet::open(Path::new("/nonexistent/wordnet")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("scripts/wordnet-setup.sh"), "{msg}");
        assert!(msg.contains("wordnet-base"), "{msg}");
        assert!(msg.contains(WORDNET_ENV), "{msg}");
    }

    #[test]
    fn bad_offset_yields_no_synset() {
        let (dir, wn) = mini_wordnet();
        assert!(wn.names_at(0, 3).is_none());
        assert!(wn.names_at(0, 1 << 30).is_none());
        fs::remove_dir_all(dir).unwrap();
    }

    /// Checks against the real WordNet 3.0 (installed by scripts/wordnet-setup.sh).
    #[test]
    fn real_wordnet() {
        // Required, not optional: scripts/wordnet-setup.sh is part of the test command.
        let wn = WordNet::open_default().unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(wn.morphy("dogs", 'n'), vec!["dog"]);
        assert_eq!(wn.morphy("aardwolves", 'n'), vec!["aardwolf"]);
        assert_eq!(wn.morphy("abaci", 'n'), vec!["abacus"]);
        assert!(wn.morphy("hardrock", 'r').is_empty());
        assert!(wn.synonyms("dogs").contains("frump"));
        assert!(wn.synonyms("guide").contains("steer"));
        assert!(wn.verify().unwrap() > 200_000);
    }
}
