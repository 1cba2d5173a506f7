//! Human evaluation: blinded rating sheets for raters, and the report from the filled
//! sheets.
//!
//! [`export`] writes one CSV sheet (columns `item, id, prompt, reference, output,
//! clarity, correctness, completeness, relevance, comment`) with one row per (example,
//! system). The systems of each example appear in a seeded random order and the item ids
//! ("17-a", "17-b": the example's position in the sheet and a letter) do not reveal the
//! system; a separate JSON key, never given to raters, maps each item to its example id
//! and system. Raters fill the four criteria with integers 1-5 (and a comment if they
//! like), each in their own copy of the sheet.
//!
//! [`import`] reads the filled sheets (the rater's name is the file stem: `alice.csv` →
//! "alice"), checks every cell, unblinds the items with the key and computes, per system
//! and criterion, the mean rating with a 95% confidence interval, and per criterion the
//! inter-rater agreement (Krippendorff's alpha, interval metric).
//!
//! Statistics:
//!
//! - **unit of analysis = item**: each item's ratings are first averaged over the raters
//!   who rated it, and the mean, standard deviation and confidence interval are taken over
//!   those item means (`n` = items). Ratings of the same item by different raters are not
//!   independent, so treating them as separate observations would make the interval too
//!   narrow. With the same number of raters on every item the mean equals the plain mean
//!   of all ratings;
//! - **95% confidence interval**: `mean ± t(0.975, n-1) · sd / √n` with the sample
//!   standard deviation; the Student-t quantile is computed for any `df ≥ 1` by bisection
//!   on the t distribution function (regularised incomplete beta function; relative error
//!   about 1e-15 for df ≤ 100, see [`student_t_quantile`]), no table or normal
//!   approximation. No interval with fewer than 2 items;
//! - **Krippendorff's alpha** ([`krippendorff_alpha`]): units = items, coders = raters,
//!   values = the 1-5 ratings, missing ratings allowed; the coincidence-matrix formula
//!   with the interval metric `δ²(c, k) = (c - k)²` (Krippendorff 2011, "Computing
//!   Krippendorff's Alpha-Reliability"). Only items rated by at least two raters count.
//!   `None` when there are no such items or all their ratings are equal (expected
//!   disagreement 0: alpha is undefined).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The rated criteria, in sheet and report order.
pub const CRITERIA: [&str; 4] = ["clarity", "correctness", "completeness", "relevance"];

/// The sheet's columns.
const COLUMNS: [&str; 10] = [
    "item",
    "id",
    "prompt",
    "reference",
    "output",
    "clarity",
    "correctness",
    "completeness",
    "relevance",
    "comment",
];

/// What the key file says it is.
const KEY_FORMAT: &str = "steptune human-eval key v1";

/// How many problems an import error lists.
const MAX_LISTED_ERRORS: usize = 20;

/// One example to rate: its prompt and reference, and the output of each system as
/// `(system, text)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SheetRow {
    pub id: String,
    pub prompt: String,
    pub reference: String,
    pub outputs: Vec<(String, String)>,
}

/// An item of the key: which example and which system a sheet row shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeyItem {
    id: String,
    system: String,
}

#[derive(Serialize)]
struct KeyOut<'a> {
    format: &'a str,
    note: &'a str,
    seed: u64,
    criteria: [&'a str; 4],
    systems: Vec<&'a str>,
    /// item → {id, system}, in sheet order.
    items: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct KeyIn {
    format: Option<String>,
    systems: Option<Vec<String>>,
    items: HashMap<String, KeyItem>,
}

/// "a".."z", "aa".."az", "ba"...: the letter part of an item id.
fn letters(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).expect("ASCII")
}

/// Writes the rating sheet (CSV) and its key (JSON); see the module documentation. The
/// systems of each example are shuffled with a ChaCha8 generator seeded with `seed`, so
/// the same rows and seed give the same sheet. Errors: no outputs at all, duplicate
/// example ids, a system twice in one example, the key and the sheet being one file, or a
/// file that cannot be written.
pub fn export(rows: &[SheetRow], seed: u64, sheet: &Path, key: &Path) -> Result<()> {
    if sheet == key {
        bail!(
            "the key must be a separate file from the sheet (both are {})",
            sheet.display()
        );
    }
    if rows.iter().all(|r| r.outputs.is_empty()) {
        bail!("nothing to rate: no example has an output");
    }
    let mut ids = HashSet::new();
    for r in rows {
        if !ids.insert(r.id.as_str()) {
            bail!("example id {:?} appears twice", r.id);
        }
        let mut systems = HashSet::new();
        for (system, _) in &r.outputs {
            if !systems.insert(system.as_str()) {
                bail!("example {:?} has two outputs of system {:?}", r.id, system);
            }
        }
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w =
        csv::Writer::from_path(sheet).with_context(|| format!("writing {}", sheet.display()))?;
    w.write_record(COLUMNS)?;
    let mut items = serde_json::Map::new();
    let mut systems = BTreeSet::new();
    for (i, r) in rows.iter().enumerate() {
        let mut order: Vec<usize> = (0..r.outputs.len()).collect();
        order.shuffle(&mut rng);
        for (slot, &o) in order.iter().enumerate() {
            let (system, text) = &r.outputs[o];
            let item = format!("{}-{}", i + 1, letters(slot));
            w.write_record([
                item.as_str(),
                &r.id,
                &r.prompt,
                &r.reference,
                text,
                "",
                "",
                "",
                "",
                "",
            ])?;
            systems.insert(system.as_str());
            let entry = KeyItem {
                id: r.id.clone(),
                system: system.clone(),
            };
            items.insert(item, serde_json::to_value(entry)?);
        }
    }
    w.flush()
        .with_context(|| format!("writing {}", sheet.display()))?;
    let out = KeyOut {
        format: KEY_FORMAT,
        note: "Unblinding key: do not give this file to raters.",
        seed,
        criteria: CRITERIA,
        systems: systems.into_iter().collect(),
        items,
    };
    let json = serde_json::to_string_pretty(&out)? + "\n";
    std::fs::write(key, json).with_context(|| format!("writing {}", key.display()))?;
    Ok(())
}

/// One rater's sheet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RaterSummary {
    /// The sheet's file stem.
    pub rater: String,
    pub sheet: String,
    /// Rows the rater rated (blank rows are not counted).
    pub rated: usize,
}

/// One system on one criterion (ratings 1-5).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CriterionScore {
    pub criterion: String,
    /// Mean over items of the item's mean rating; `None` when no item was rated.
    pub mean: Option<f64>,
    /// Items rated (the sample size of the interval).
    pub n: usize,
    /// Individual ratings (items × raters who rated them).
    pub ratings: usize,
    /// Sample standard deviation of the item means; `None` with fewer than 2 items.
    pub sd: Option<f64>,
    /// 95% t confidence interval of the mean; `None` with fewer than 2 items.
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
}

/// One system's scores, criteria in [`CRITERIA`] order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemScores {
    pub system: String,
    pub criteria: Vec<CriterionScore>,
}

/// Inter-rater agreement on one criterion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    pub criterion: String,
    /// Krippendorff's alpha, interval metric; `None` when undefined (see the module
    /// documentation).
    pub krippendorff_alpha: Option<f64>,
    /// Items rated by at least two raters (the units alpha uses).
    pub units: usize,
    /// Ratings on those items (the pairable values).
    pub pairable_ratings: usize,
}

/// The result of [`import`]; serialisable so it can join report.json.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HumanReport {
    pub raters: Vec<RaterSummary>,
    /// Items in the key.
    pub items_in_key: usize,
    /// Items rated by at least one rater.
    pub items_rated: usize,
    /// Every system of the key, sorted by name.
    pub systems: Vec<SystemScores>,
    /// Criteria in [`CRITERIA`] order.
    pub agreement: Vec<Agreement>,
}

/// Parses a rating cell: blank → `Ok(None)`; an integer 1-5 (also written "4.0", as
/// spreadsheets sometimes save numbers) → `Ok(Some)`; anything else → `Err`.
fn parse_rating(cell: &str) -> std::result::Result<Option<u8>, ()> {
    let t = cell.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Ok(i) = t.parse::<i64>() {
        return if (1..=5).contains(&i) {
            Ok(Some(i as u8))
        } else {
            Err(())
        };
    }
    match t.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && (1.0..=5.0).contains(&f) => Ok(Some(f as u8)),
        _ => Err(()),
    }
}

/// A rated row: (item, ratings in CRITERIA order).
type Rating = (String, [u8; 4]);

/// Reads one sheet, appending its ratings to `out` and its problems to `errors`; returns
/// how many rows it rated.
fn read_sheet(
    path: &Path,
    key: &HashMap<String, KeyItem>,
    out: &mut Vec<Rating>,
    errors: &mut Vec<String>,
) -> usize {
    let name = path.display().to_string();
    let mut reader = match csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_path(path)
    {
        Ok(r) => r,
        Err(e) => {
            errors.push(format!("{name}: cannot read: {e}"));
            return 0;
        }
    };
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h
            .iter()
            .map(|c| c.trim_start_matches('\u{feff}').trim().to_lowercase())
            .collect(),
        Err(e) => {
            errors.push(format!("{name}: cannot read the header row: {e}"));
            return 0;
        }
    };
    let col = |c: &str| headers.iter().position(|h| h == c);
    let Some(item_col) = col("item") else {
        errors.push(format!("{name}: no \"item\" column in the header row"));
        return 0;
    };
    let mut crit_cols = [0usize; 4];
    let mut missing = Vec::new();
    for (k, c) in CRITERIA.iter().enumerate() {
        match col(c) {
            Some(i) => crit_cols[k] = i,
            None => missing.push(*c),
        }
    }
    if !missing.is_empty() {
        errors.push(format!(
            "{name}: no {} column(s) in the header row",
            missing.join(", ")
        ));
        return 0;
    }
    let id_col = col("id");

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rated = 0;
    for (i, rec) in reader.records().enumerate() {
        let row = i + 2; // as a spreadsheet numbers it: the header is row 1
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{name}, row {row}: cannot read: {e}"));
                continue;
            }
        };
        let cell = |c: usize| rec.get(c).unwrap_or("");
        let item = cell(item_col).trim();
        let mut ratings = [0u8; 4];
        let mut given = Vec::new();
        let mut blank = Vec::new();
        let mut bad = false;
        for (k, &c) in crit_cols.iter().enumerate() {
            match parse_rating(cell(c)) {
                Ok(Some(v)) => {
                    ratings[k] = v;
                    given.push(CRITERIA[k]);
                }
                Ok(None) => blank.push(CRITERIA[k]),
                Err(()) => {
                    bad = true;
                    errors.push(format!(
                        "{name}, row {row}, column {}: value '{}' is not an integer 1-5",
                        CRITERIA[k],
                        cell(c)
                    ));
                }
            }
        }
        if given.is_empty() && !bad {
            continue; // not rated
        }
        if !bad && !blank.is_empty() {
            errors.push(format!(
                "{name}, row {row}: partially rated: {} given but {} blank (rate all four \
                 criteria or none)",
                given.join(", "),
                blank.join(", ")
            ));
            bad = true;
        }
        let Some(entry) = key.get(item) else {
            errors.push(format!(
                "{name}, row {row}, column item: item '{item}' is not in the key"
            ));
            continue;
        };
        if let Some(c) = id_col {
            let id = cell(c).trim();
            if id != entry.id.trim() {
                errors.push(format!(
                    "{name}, row {row}, column id: '{id}' is not the id of item '{item}' \
                     in the key ('{}')",
                    entry.id
                ));
                bad = true;
            }
        }
        if let Some(first) = seen.insert(item.to_string(), row) {
            errors.push(format!(
                "{name}, row {row}: item '{item}' is rated twice (also on row {first})"
            ));
            bad = true;
        }
        if !bad {
            rated += 1;
            out.push((item.to_string(), ratings));
        }
    }
    rated
}

/// Reads filled sheets (one per rater; the rater is the file stem) and the key, and
/// computes the report; see the module documentation.
///
/// Every cell problem is collected — a rating that is not an integer 1-5 ("file, row N,
/// column X: value 'y' is not an integer 1-5"), a partially rated row, a rated item that
/// is not in the key or whose id column disagrees with the key, an item rated twice in one
/// sheet — and the first 20 are reported in one error. Blank rows are allowed (not rated).
/// Rows are numbered as a spreadsheet shows them: the header is row 1.
pub fn import(sheets: &[PathBuf], key: &Path) -> Result<HumanReport> {
    if sheets.is_empty() {
        bail!("no rating sheets given");
    }
    let key_text =
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let key_in: KeyIn = serde_json::from_str(&key_text)
        .with_context(|| format!("{} is not a steptune human-eval key", key.display()))?;
    if let Some(f) = &key_in.format {
        if f != KEY_FORMAT {
            bail!("{}: unknown key format {f:?}", key.display());
        }
    }
    let key_items = key_in.items;

    let mut raters: Vec<RaterSummary> = Vec::new();
    let mut ratings: Vec<Rating> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut names: HashMap<String, &Path> = HashMap::new();
    for path in sheets {
        let rater = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(other) = names.insert(rater.clone(), path) {
            bail!(
                "two sheets have the rater name {rater:?} (the file stem): {} and {}",
                other.display(),
                path.display()
            );
        }
        let rated = read_sheet(path, &key_items, &mut ratings, &mut errors);
        raters.push(RaterSummary {
            rater,
            sheet: path.display().to_string(),
            rated,
        });
    }
    if !errors.is_empty() {
        let mut msg = format!("{} problem(s) in the rating sheets:", errors.len());
        for e in errors.iter().take(MAX_LISTED_ERRORS) {
            let _ = write!(msg, "\n  {e}");
        }
        if errors.len() > MAX_LISTED_ERRORS {
            let _ = write!(msg, "\n  ... and {} more", errors.len() - MAX_LISTED_ERRORS);
        }
        bail!(msg);
    }

    // item → per criterion, the ratings of each rater who rated it.
    let mut by_item: BTreeMap<&str, Vec<[u8; 4]>> = BTreeMap::new();
    for (item, r) in &ratings {
        by_item.entry(item.as_str()).or_default().push(*r);
    }
    let mut systems: BTreeSet<String> = key_items.values().map(|k| k.system.clone()).collect();
    systems.extend(key_in.systems.unwrap_or_default());

    let system_scores = systems
        .iter()
        .map(|system| {
            let items: Vec<&Vec<[u8; 4]>> = by_item
                .iter()
                .filter(|(item, _)| key_items[**item].system == *system)
                .map(|(_, r)| r)
                .collect();
            let criteria = CRITERIA
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let item_means: Vec<f64> = items
                        .iter()
                        .map(|rs| rs.iter().map(|r| r[k] as f64).sum::<f64>() / rs.len() as f64)
                        .collect();
                    let ratings = items.iter().map(|rs| rs.len()).sum();
                    criterion_score(c, &item_means, ratings)
                })
                .collect();
            SystemScores {
                system: system.clone(),
                criteria,
            }
        })
        .collect();

    let agreement = CRITERIA
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let units: Vec<Vec<f64>> = by_item
                .values()
                .map(|rs| rs.iter().map(|r| r[k] as f64).collect())
                .collect();
            let pairable: Vec<&Vec<f64>> = units.iter().filter(|u| u.len() >= 2).collect();
            Agreement {
                criterion: c.to_string(),
                krippendorff_alpha: krippendorff_alpha(&units, AlphaMetric::Interval),
                units: pairable.len(),
                pairable_ratings: pairable.iter().map(|u| u.len()).sum(),
            }
        })
        .collect();

    Ok(HumanReport {
        raters,
        items_in_key: key_items.len(),
        items_rated: by_item.len(),
        systems: system_scores,
        agreement,
    })
}

fn criterion_score(criterion: &str, xs: &[f64], ratings: usize) -> CriterionScore {
    let n = xs.len();
    let mean = (n > 0).then(|| xs.iter().sum::<f64>() / n as f64);
    let (mut sd, mut lo, mut hi) = (None, None, None);
    if let (Some(m), true) = (mean, n >= 2) {
        let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
        let s = var.sqrt();
        let half = student_t_quantile(0.975, (n - 1) as f64) * s / (n as f64).sqrt();
        sd = Some(s);
        lo = Some(m - half);
        hi = Some(m + half);
    }
    CriterionScore {
        criterion: criterion.to_string(),
        mean,
        n,
        ratings,
        sd,
        ci95_low: lo,
        ci95_high: hi,
    }
}

/// The difference function of [`krippendorff_alpha`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlphaMetric {
    /// `δ² = 0` for equal values, 1 otherwise.
    Nominal,
    /// `δ² = (c - k)²`.
    Interval,
}

/// Krippendorff's alpha from the coincidence matrix (Krippendorff 2011, "Computing
/// Krippendorff's Alpha-Reliability"): `units[u]` holds the values the coders gave unit
/// `u` (missing values left out, coder identity does not enter the formula). Units with
/// fewer than two values are not pairable and are ignored. Each ordered pair of values
/// from different coders in a unit with `m_u` values adds `1/(m_u - 1)` to `o[c][k]`;
/// with `n_c = Σ_k o[c][k]` and `n = Σ_c n_c`,
/// `α = 1 - (n - 1) · Σ o[c][k] δ²(c,k) / Σ n_c n_k δ²(c,k)`.
/// `None` when nothing is pairable or the expected disagreement is 0 (every pairable
/// value equal).
pub fn krippendorff_alpha(units: &[Vec<f64>], metric: AlphaMetric) -> Option<f64> {
    let mut values: Vec<f64> = units
        .iter()
        .filter(|u| u.len() >= 2)
        .flatten()
        .copied()
        .collect();
    values.sort_by(f64::total_cmp);
    values.dedup();
    let v = values.len();
    if v == 0 {
        return None;
    }
    let index = |x: f64| {
        values
            .binary_search_by(|p| p.total_cmp(&x))
            .expect("value collected above")
    };
    let mut o = vec![vec![0.0f64; v]; v];
    let mut counts = vec![0usize; v];
    for u in units.iter().filter(|u| u.len() >= 2) {
        counts.iter_mut().for_each(|c| *c = 0);
        for &x in u {
            counts[index(x)] += 1;
        }
        let w = 1.0 / (u.len() - 1) as f64;
        for c in 0..v {
            if counts[c] == 0 {
                continue;
            }
            for k in 0..v {
                // Pairs of values from different coders: a value is not paired with itself.
                let pairs = counts[c] * (counts[k] - usize::from(c == k));
                if pairs > 0 {
                    o[c][k] += pairs as f64 * w;
                }
            }
        }
    }
    let n_c: Vec<f64> = o.iter().map(|row| row.iter().sum()).collect();
    let n: f64 = n_c.iter().sum();
    let delta2 = |c: usize, k: usize| match metric {
        AlphaMetric::Nominal => f64::from(u8::from(c != k)),
        AlphaMetric::Interval => (values[c] - values[k]).powi(2),
    };
    let (mut observed, mut expected) = (0.0, 0.0);
    for c in 0..v {
        for k in 0..v {
            let d = delta2(c, k);
            observed += o[c][k] * d;
            expected += n_c[c] * n_c[k] * d;
        }
    }
    if expected == 0.0 {
        return None;
    }
    Some(1.0 - (n - 1.0) * observed / expected)
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms; relative error about 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1-x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..100_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularised incomplete beta function `I_x(a, b)`.
fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// `P(T > t)` for `t ≥ 0`, T Student-t with `df` degrees of freedom.
fn t_upper_tail(t: f64, df: f64) -> f64 {
    0.5 * inc_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// The `p` quantile of Student's t distribution with `df > 0` degrees of freedom
/// (`student_t_quantile(0.975, 10.0)` = 2.2281388519862...). Found by bisection on the
/// distribution function, computed with the regularised incomplete beta function. Checked
/// against 50-digit values: relative error about 1e-15 up to df = 100, 1e-13 at df =
/// 1000, 2e-11 at df = 100 000 (the log-gamma differences lose digits as df grows). NaN
/// unless `0 < p < 1` and `df > 0`.
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    if !(p > 0.0 && p < 1.0 && df > 0.0) {
        return f64::NAN;
    }
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -student_t_quantile(1.0 - p, df);
    }
    let tail = 1.0 - p;
    let mut hi = 1.0;
    while t_upper_tail(hi, df) > tail {
        hi *= 2.0;
        if hi > 1e300 {
            return f64::INFINITY;
        }
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if t_upper_tail(mid, df) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The report as Markdown: per system and criterion "mean ± half-width of the 95%
/// interval (n items)", then the agreement per criterion.
pub fn report_markdown(r: &HumanReport) -> String {
    let mut out = String::new();
    let names: Vec<&str> = r.raters.iter().map(|x| x.rater.as_str()).collect();
    let _ = writeln!(
        out,
        "Human evaluation: {} rater(s) ({}); {} of {} items rated.\n",
        r.raters.len(),
        names.join(", "),
        r.items_rated,
        r.items_in_key
    );
    out.push_str("| system |");
    for c in CRITERIA {
        let _ = write!(out, " {c} |");
    }
    out.push_str("\n|---|");
    for _ in CRITERIA {
        out.push_str("--:|");
    }
    out.push('\n');
    for s in &r.systems {
        let _ = write!(out, "| {} |", s.system.replace('|', "\\|"));
        for c in &s.criteria {
            let cell = match (c.mean, c.ci95_low, c.ci95_high) {
                (None, _, _) => "-".to_string(),
                (Some(m), Some(lo), Some(hi)) => {
                    format!("{m:.2} ± {:.2} (n={})", (hi - lo) / 2.0, c.n)
                }
                (Some(m), _, _) => format!("{m:.2} (n={})", c.n),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out.push_str(
        "\nMean rating (1-5) ± half-width of the 95% t confidence interval, over items \
         (each item's ratings averaged over its raters).\n\n",
    );
    out.push_str("| criterion | Krippendorff's α (interval) | items with ≥2 raters | ratings |\n");
    out.push_str("|---|--:|--:|--:|\n");
    for a in &r.agreement {
        let alpha = a
            .krippendorff_alpha
            .map_or_else(|| "-".to_string(), |x| format!("{x:.3}"));
        let _ = writeln!(
            out,
            "| {} | {alpha} | {} | {} |",
            a.criterion, a.units, a.pairable_ratings
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C:
    /// 4 coders × 12 units with missing values (`None`).
    #[rustfmt::skip]
    fn krippendorff_2011() -> Vec<Vec<f64>> {
        let n = None;
        let coders: [[Option<f64>; 12]; 4] = [
            [Some(1.), Some(2.), Some(3.), Some(3.), Some(2.), Some(1.), Some(4.), Some(1.), Some(2.), n, n, n],
            [Some(1.), Some(2.), Some(3.), Some(3.), Some(2.), Some(2.), Some(4.), Some(1.), Some(2.), Some(5.), n, Some(3.)],
            [n, Some(3.), Some(3.), Some(3.), Some(2.), Some(3.), Some(4.), Some(2.), Some(2.), Some(5.), Some(1.), n],
            [Some(1.), Some(2.), Some(3.), Some(3.), Some(2.), Some(4.), Some(4.), Some(1.), Some(2.), Some(5.), Some(1.), n],
        ];
        (0..12)
            .map(|u| coders.iter().filter_map(|c| c[u]).collect())
            .collect()
    }

    #[test]
    fn alpha_reproduces_krippendorff_2011() {
        let units = krippendorff_2011();
        let nominal = krippendorff_alpha(&units, AlphaMetric::Nominal).unwrap();
        let interval = krippendorff_alpha(&units, AlphaMetric::Interval).unwrap();
        // Published: α_nominal = 0.743, α_interval = 0.849.
        assert_eq!(format!("{nominal:.3}"), "0.743");
        assert_eq!(format!("{interval:.3}"), "0.849");
        // The Python package `krippendorff` 0.9.0 (`krippendorff.alpha(data,
        // level_of_measurement=...)`) on the same data prints these.
        assert!((nominal - 0.743421052631579).abs() < 1e-12, "{nominal}");
        assert!((interval - 0.8491071428571428).abs() < 1e-12, "{interval}");
    }

    #[test]
    fn alpha_equals_python_krippendorff() {
        // krippendorff 0.9.0: alpha(reliability_data=[[5,4,3,2,1,5,4,nan,2,3],
        // [4,4,3,1,2,5,nan,3,2,nan], [5,3,nan,2,1,4,4,3,nan,nan]], level_of_measurement=..)
        let n = f64::NAN;
        let coders = [
            [5., 4., 3., 2., 1., 5., 4., n, 2., 3.],
            [4., 4., 3., 1., 2., 5., n, 3., 2., n],
            [5., 3., n, 2., 1., 4., 4., 3., n, n],
        ];
        let units: Vec<Vec<f64>> = (0..10)
            .map(|u| {
                coders
                    .iter()
                    .map(|c| c[u])
                    .filter(|x| !x.is_nan())
                    .collect()
            })
            .collect();
        let interval = krippendorff_alpha(&units, AlphaMetric::Interval).unwrap();
        let nominal = krippendorff_alpha(&units, AlphaMetric::Nominal).unwrap();
        assert!((interval - 0.8761261261261262).abs() < 1e-12, "{interval}");
        assert!((nominal - 0.4736842105263158).abs() < 1e-12, "{nominal}");
    }

    #[test]
    fn alpha_edge_cases() {
        // Nothing pairable.
        assert_eq!(krippendorff_alpha(&[], AlphaMetric::Interval), None);
        assert_eq!(
            krippendorff_alpha(&[vec![3.0], vec![4.0]], AlphaMetric::Interval),
            None
        );
        // Perfect agreement but no variation: undefined.
        assert_eq!(
            krippendorff_alpha(&[vec![3.0, 3.0], vec![3.0, 3.0]], AlphaMetric::Interval),
            None
        );
        // Perfect agreement with variation: 1.
        assert_eq!(
            krippendorff_alpha(
                &[vec![1.0, 1.0], vec![5.0, 5.0, 5.0], vec![2.0]],
                AlphaMetric::Interval
            ),
            Some(1.0)
        );
        // Systematic disagreement is below 0: units (1,5) and (5,1).
        // o[1][5] = o[5][1] = 2, n = 4, n_1 = n_5 = 2: α = 1 - 3·(2·16+2·16)/(2·2·16·2) = -0.5.
        assert_eq!(
            krippendorff_alpha(&[vec![1.0, 5.0], vec![5.0, 1.0]], AlphaMetric::Interval),
            Some(-0.5)
        );
    }

    #[test]
    fn t_quantiles() {
        // mpmath (50 digits) inverse of the t distribution function at 0.975.
        let cases = [
            (1.0, 12.706204736174705),
            (2.0, 4.302652729749464),
            (3.0, 3.1824463052837095),
            (4.0, 2.7764451051977943),
            (5.0, 2.5705818356363155),
            (10.0, 2.228138851986275),
            (29.0, 2.0452296421327043),
            (30.0, 2.042272456301238),
            (100.0, 1.9839715185235522),
            (1000.0, 1.9623390808264085),
            (100_000.0, 1.9599877075346097),
        ];
        for (df, want) in cases {
            let got = student_t_quantile(0.975, df);
            let tol = if df <= 100.0 { 1e-14 } else { 1e-10 };
            assert!(
                ((got - want) / want).abs() < tol,
                "df {df}: {got} vs {want}"
            );
        }
        // Closed forms: df = 1 is Cauchy, df = 2 has (2p-1)/sqrt(2p(1-p)).
        for p in [0.6, 0.9, 0.995] {
            let cauchy = (std::f64::consts::PI * (p - 0.5)).tan();
            assert!((student_t_quantile(p, 1.0) - cauchy).abs() < 1e-9 * cauchy);
            let two = (2.0 * p - 1.0) / (2.0 * p * (1.0 - p)).sqrt();
            assert!((student_t_quantile(p, 2.0) - two).abs() < 1e-10 * two);
        }
        assert_eq!(student_t_quantile(0.5, 7.0), 0.0);
        assert_eq!(
            student_t_quantile(0.025, 10.0),
            -student_t_quantile(0.975, 10.0)
        );
        assert!(student_t_quantile(1.0, 3.0).is_nan());
        assert!(student_t_quantile(0.9, 0.0).is_nan());
    }

    #[test]
    fn item_letters() {
        assert_eq!(letters(0), "a");
        assert_eq!(letters(25), "z");
        assert_eq!(letters(26), "aa");
        assert_eq!(letters(27), "ab");
        assert_eq!(letters(26 + 26 * 26), "aaa");
    }

    #[test]
    fn rating_cells() {
        assert_eq!(parse_rating(""), Ok(None));
        assert_eq!(parse_rating("  "), Ok(None));
        assert_eq!(parse_rating(" 4 "), Ok(Some(4)));
        assert_eq!(parse_rating("5.0"), Ok(Some(5)));
        for bad in ["0", "6", "3.5", "x", "four", "-1", "NaN", "inf"] {
            assert_eq!(parse_rating(bad), Err(()), "{bad}");
        }
    }

    #[test]
    fn confidence_interval_hand_computed() {
        // Item means 2, 4, 6 (out of range is fine here): mean 4, sd 2,
        // half-width t(0.975, 2) · 2 / √3.
        let s = criterion_score("clarity", &[2.0, 4.0, 6.0], 5);
        assert_eq!((s.mean, s.n, s.ratings, s.sd), (Some(4.0), 3, 5, Some(2.0)));
        let half = 4.302652729749464 * 2.0 / 3f64.sqrt();
        assert!((s.ci95_high.unwrap() - (4.0 + half)).abs() < 1e-9);
        assert!((s.ci95_low.unwrap() - (4.0 - half)).abs() < 1e-9);
        let one = criterion_score("clarity", &[3.0], 1);
        assert_eq!((one.mean, one.sd, one.ci95_low), (Some(3.0), None, None));
        let none = criterion_score("clarity", &[], 0);
        assert_eq!((none.mean, none.n), (None, 0));
    }

    fn examples() -> Vec<SheetRow> {
        (1..=6)
            .map(|i| SheetRow {
                id: format!("ex{i}"),
                prompt: format!("How do I do task {i}?"),
                reference: format!("1. Do step one of {i}.\n2. Do step two, \"quoted\"."),
                outputs: vec![
                    ("good".into(), format!("1. GOOD answer {i}\n2. more")),
                    ("bad".into(), format!("BAD answer {i}")),
                    ("meh".into(), format!("1. MEH answer {i}, with a comma")),
                ],
            })
            .collect()
    }

    fn read_csv(path: &Path) -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(path)
            .unwrap()
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect()
    }

    fn write_csv(path: &Path, rows: &[Vec<String>]) {
        let mut w = csv::Writer::from_path(path).unwrap();
        for r in rows {
            w.write_record(r).unwrap();
        }
        w.flush().unwrap();
    }

    /// Fills a copy of the sheet as a rater would, judging only the output text:
    /// GOOD → 5, MEH → 3, BAD → 1, `clarity_delta` added to clarity (clamped), and only
    /// the first `examples` examples rated (the other rows left blank).
    fn fill(sheet: &[Vec<String>], clarity_delta: i32, examples: usize) -> Vec<Vec<String>> {
        let mut out = vec![sheet[0].clone()];
        for row in &sheet[1..] {
            let mut row = row.clone();
            let example: usize = row[0].split('-').next().unwrap().parse().unwrap();
            if example <= examples {
                let base: i32 = if row[4].contains("GOOD") {
                    5
                } else if row[4].contains("MEH") {
                    3
                } else {
                    1
                };
                row[5] = (base + clarity_delta).clamp(1, 5).to_string();
                for cell in &mut row[6..9] {
                    *cell = base.to_string();
                }
                row[9] = "looked fine, I think".into();
            }
            out.push(row);
        }
        out
    }

    #[test]
    fn export_fill_import_round_trip_unblinds() {
        let dir = tempfile::tempdir().unwrap();
        let (sheet, key) = (dir.path().join("sheet.csv"), dir.path().join("key.json"));
        export(&examples(), 7, &sheet, &key).unwrap();

        let rows = read_csv(&sheet);
        assert_eq!(rows[0], COLUMNS);
        assert_eq!(rows.len(), 1 + 6 * 3);
        // Blinded: item ids are "<example>-<letter>", nothing in the sheet names a system,
        // and the GOOD output is not always in the same slot.
        let mut good_slots = BTreeSet::new();
        for r in &rows[1..] {
            let (ex, slot) = r[0].split_once('-').unwrap();
            assert!(
                ex.parse::<usize>().is_ok() && ["a", "b", "c"].contains(&slot),
                "{r:?}"
            );
            assert_eq!(r[1], format!("ex{ex}"));
            for cell in r {
                for system in ["good", "bad", "meh"] {
                    assert!(!cell.contains(system), "{cell:?}");
                }
            }
            assert!(r[5..].iter().all(String::is_empty));
            if r[4].contains("GOOD") {
                good_slots.insert(slot.to_string());
            }
        }
        assert!(good_slots.len() > 1, "{good_slots:?}");
        // The key names every item's system.
        let k: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
        assert_eq!(k["items"].as_object().unwrap().len(), 18);
        assert_eq!(k["systems"], serde_json::json!(["bad", "good", "meh"]));

        // Same seed → same files; another seed shuffles differently.
        let (sheet2, key2) = (dir.path().join("s2.csv"), dir.path().join("k2.json"));
        export(&examples(), 7, &sheet2, &key2).unwrap();
        assert_eq!(
            std::fs::read(&sheet).unwrap(),
            std::fs::read(&sheet2).unwrap()
        );
        assert_eq!(std::fs::read(&key).unwrap(), std::fs::read(&key2).unwrap());
        export(&examples(), 8, &sheet2, &key2).unwrap();
        assert_ne!(
            std::fs::read(&sheet).unwrap(),
            std::fs::read(&sheet2).unwrap()
        );

        // alice rates everything; bob rates the first four examples, one point lower on
        // clarity.
        let alice = dir.path().join("alice.csv");
        let bob = dir.path().join("bob.csv");
        write_csv(&alice, &fill(&rows, 0, 6));
        write_csv(&bob, &fill(&rows, -1, 4));
        let r = import(&[alice, bob], &key).unwrap();

        assert_eq!(
            r.raters
                .iter()
                .map(|x| (x.rater.as_str(), x.rated))
                .collect::<Vec<_>>(),
            [("alice", 18), ("bob", 12)]
        );
        assert_eq!((r.items_in_key, r.items_rated), (18, 18));
        let names: Vec<&str> = r.systems.iter().map(|s| s.system.as_str()).collect();
        assert_eq!(names, ["bad", "good", "meh"]);
        let get = |system: &str, criterion: &str| -> &CriterionScore {
            r.systems
                .iter()
                .find(|s| s.system == system)
                .unwrap()
                .criteria
                .iter()
                .find(|c| c.criterion == criterion)
                .unwrap()
        };
        for (system, want) in [("good", 5.0), ("meh", 3.0), ("bad", 1.0)] {
            let c = get(system, "correctness");
            assert_eq!((c.mean, c.n, c.ratings), (Some(want), 6, 10), "{system}");
            assert_eq!(
                (c.sd, c.ci95_low, c.ci95_high),
                (Some(0.0), Some(want), Some(want))
            );
        }
        // good clarity: items 1-4 (5 + 4) / 2 = 4.5, items 5-6 5 → mean 28/6.
        let c = get("good", "clarity");
        assert!((c.mean.unwrap() - 28.0 / 6.0).abs() < 1e-12);
        assert!(c.ci95_low.unwrap() < c.mean.unwrap() && c.mean.unwrap() < c.ci95_high.unwrap());
        // bad clarity: bob's 1 - 1 is clamped to 1, so all agree.
        assert_eq!(get("bad", "clarity").mean, Some(1.0));

        let alpha = |c: &str| r.agreement.iter().find(|a| a.criterion == c).unwrap();
        assert_eq!(alpha("correctness").krippendorff_alpha, Some(1.0));
        assert_eq!(
            (
                alpha("correctness").units,
                alpha("correctness").pairable_ratings
            ),
            (12, 24)
        );
        let clarity = alpha("clarity").krippendorff_alpha.unwrap();
        assert!(clarity > 0.8 && clarity < 1.0, "{clarity}");

        let md = report_markdown(&r);
        assert!(
            md.contains("2 rater(s) (alice, bob); 18 of 18 items rated"),
            "{md}"
        );
        assert!(md.contains("| good | 4.67 ± "), "{md}");
        assert!(md.contains("| correctness | 1.000 | 12 | 24 |"), "{md}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["systems"][1]["criteria"][1]["mean"], 5.0);
    }

    #[test]
    fn bad_cells_name_file_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let (sheet, key) = (dir.path().join("sheet.csv"), dir.path().join("key.json"));
        export(&examples(), 1, &sheet, &key).unwrap();
        let mut rows = fill(&read_csv(&sheet), 0, 6);
        rows[2][5] = "6".into(); // spreadsheet row 3
        rows[4][8] = "good".into(); // row 5
        rows[6][6] = "3.5".into(); // row 7
        rows[7][7] = String::new(); // row 8: partially rated
        let carol = dir.path().join("carol.csv");
        write_csv(&carol, &rows);
        let msg = format!(
            "{:#}",
            import(std::slice::from_ref(&carol), &key).unwrap_err()
        );
        let name = carol.display().to_string();
        assert!(msg.starts_with("4 problem(s)"), "{msg}");
        assert!(
            msg.contains(&format!(
                "{name}, row 3, column clarity: value '6' is not an integer 1-5"
            )),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "{name}, row 5, column relevance: value 'good' is not an integer 1-5"
            )),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("{name}, row 7, column correctness: value '3.5'")),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("{name}, row 8: partially rated")),
            "{msg}"
        );

        // At most 20 are listed.
        let mut rows = fill(&read_csv(&sheet), 0, 6);
        for r in rows.iter_mut().skip(1) {
            r[5] = "0".into();
            r[6] = "9".into();
        }
        write_csv(&carol, &rows);
        let msg = format!("{:#}", import(&[carol], &key).unwrap_err());
        assert!(msg.starts_with("36 problem(s)"), "{msg}");
        assert!(msg.ends_with("... and 16 more"), "{msg}");
        assert_eq!(msg.lines().count(), 1 + 20 + 1);
    }

    #[test]
    fn rated_item_missing_from_key_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (sheet, key) = (dir.path().join("sheet.csv"), dir.path().join("key.json"));
        export(&examples(), 1, &sheet, &key).unwrap();
        let mut rows = fill(&read_csv(&sheet), 0, 6);
        rows[3][0] = "99-z".into();
        // A blank row with an unknown item is only a blank row.
        let mut blank = rows[1].clone();
        blank[0] = "98-a".into();
        for cell in &mut blank[5..10] {
            cell.clear();
        }
        rows.push(blank);
        let dan = dir.path().join("dan.csv");
        write_csv(&dan, &rows);
        let msg = format!(
            "{:#}",
            import(std::slice::from_ref(&dan), &key).unwrap_err()
        );
        assert!(msg.starts_with("1 problem(s)"), "{msg}");
        assert!(
            msg.contains(&format!(
                "{}, row 4, column item: item '99-z' is not in the key",
                dan.display()
            )),
            "{msg}"
        );

        // The id column must agree with the key, and an item is rated once per sheet.
        let mut rows = fill(&read_csv(&sheet), 0, 6);
        rows[2][1] = "ex5".into();
        let dup = rows[5].clone();
        rows.push(dup);
        write_csv(&dan, &rows);
        let msg = format!("{:#}", import(&[dan], &key).unwrap_err());
        assert!(
            msg.contains("row 3, column id: 'ex5' is not the id of item"),
            "{msg}"
        );
        assert!(
            msg.contains("row 20: item") && msg.contains("rated twice (also on row 6)"),
            "{msg}"
        );
    }

    #[test]
    fn import_checks_sheets_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let (sheet, key) = (dir.path().join("sheet.csv"), dir.path().join("key.json"));
        export(&examples(), 1, &sheet, &key).unwrap();
        assert!(import(&[], &key).is_err());
        // A sheet without the criteria columns.
        let eve = dir.path().join("eve.csv");
        std::fs::write(&eve, "item,id,clarity\n1-a,ex1,3\n").unwrap();
        let msg = format!("{:#}", import(&[eve], &key).unwrap_err());
        assert!(
            msg.contains("no correctness, completeness, relevance column(s)"),
            "{msg}"
        );
        // Columns may be reordered, a BOM is tolerated, unrated sheets are fine.
        let frank = dir.path().join("frank.csv");
        std::fs::write(
            &frank,
            "\u{feff}Relevance,Completeness,item,Correctness,Clarity\n5,4,1-a,3,2\n,,1-b,,\n",
        )
        .unwrap();
        let r = import(std::slice::from_ref(&frank), &key).unwrap();
        assert_eq!((r.items_rated, r.raters[0].rated), (1, 1));
        let rated: Vec<(&str, Vec<Option<f64>>)> = r
            .systems
            .iter()
            .map(|s| {
                (
                    s.system.as_str(),
                    s.criteria.iter().map(|c| c.mean).collect::<Vec<_>>(),
                )
            })
            .filter(|(_, m)| m[0].is_some())
            .collect();
        assert_eq!(rated.len(), 1);
        assert_eq!(rated[0].1, [Some(2.0), Some(3.0), Some(4.0), Some(5.0)]);
        assert_eq!(r.agreement[0].krippendorff_alpha, None);
        // Two sheets with the same rater name.
        let other = dir.path().join("sub");
        std::fs::create_dir(&other).unwrap();
        std::fs::copy(&frank, other.join("frank.csv")).unwrap();
        let msg = format!(
            "{:#}",
            import(&[frank, other.join("frank.csv")], &key).unwrap_err()
        );
        assert!(msg.contains("rater name \"frank\""), "{msg}");
        // Export refuses ambiguous input.
        let mut rows = examples();
        rows[1].id = "ex1".into();
        assert!(export(&rows, 1, &sheet, &key).is_err());
        let mut rows = examples();
        rows[0].outputs[1].0 = "good".into();
        assert!(export(&rows, 1, &sheet, &key).is_err());
        assert!(export(&examples(), 1, &sheet, &sheet).is_err());
    }
}
