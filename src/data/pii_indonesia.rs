//! Personal data in the formats of Indonesian support data, and names the text itself marks.
//!
//! Numbers are judged by their structure (a NIK's region and birth date, a mobile number's 08 /
//! 62 prefix) or by the words around them ("rekening", "NPWP"), never by length alone: the same
//! texts are full of order numbers, ticket numbers, prices in rupiah and dates. Names are taken
//! only after clear markers ("nama saya", "atas nama", "a.n.", "my name is", "this is X from",
//! a greeting followed by a comma, a sign-off followed by the name), never from a capitalised
//! word alone, so a UI word ("menu Pengaturan") stays.
use std::sync::LazyLock;

use regex::Regex;

use super::pii::{find_windows, is_word, next2_char, next_char, prev_char, splice, standalone, tokenise, Group, PHONE_RUN};

/// Province codes of the NIK (Kemendagri), including the Papua provinces created in 2022 (93–96).
const NIK_PROVINCES: [u32; 38] = [
    11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 31, 32, 33, 34, 35, 36, 51, 52, 53, 61, 62, 63, 64, 65, 71, 72, 73, 74, 75, 76, 81, 82,
    91, 92, 93, 94, 95, 96,
];

/// A run of digits joined by dots or dashes, or by single spaces before groups of 3+ digits (so
/// "1234567890 2 kali" does not take the "2").
const NUMBER: &str = r"[0-9]+(?:[.\-][0-9]+|[ ][0-9]{3,})*";

/// The words between a marker ("rekening", "NPWP") and its number: a few words and a colon,
/// not a line break or a digit.
const GAP: &str = r"[^0-9\n]{0,30}?";

static DIGIT_RUN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9]+").expect("static regex"));

static NPWP_FORMATTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9]{2}\.[0-9]{3}\.[0-9]{3}\.[0-9]-[0-9]{3}\.[0-9]{3}").expect("static regex"));

static NPWP_SAID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?i:\bNPWP\b)(?P<gap>{GAP})(?P<num>{NUMBER})")).expect("static regex"));

static NIK_SAID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?i:\bNIK\b|\bKTP\b)(?P<gap>{GAP})(?P<num>{NUMBER})")).expect("static regex"));

static BANK_SAID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i:\b(?:no(?:mor)?\.?\s*rek(?:ening)?\b\.?|rekening|rek\.|acc(?:ount|t)?\.?\s*(?:no\b\.?|num(?:ber)?\b|#)|a/c(?:\s*no\b\.?)?|bank\s+account))(?P<gap>{GAP})(?P<num>{NUMBER})"
    ))
    .expect("static regex")
});

/// A sentence ends inside the gap: the number belongs to the next sentence, not to the marker.
static SENTENCE_BREAK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[.!?]\s+\p{Lu}").expect("static regex"));

/// An amount is not an account: "rekening sebesar Rp 1.500.000".
static CURRENCY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(?:rp|idr|usd|sgd|sebesar|senilai|nominal|saldo|total|jumlah)\b|[$€£]").expect("static regex"));

/// One word of a name: capitalised ("Budi", "O'Neil", "Jean-Luc") or, as names on bank
/// accounts are written, in capitals ("BUDI").
const NAME_WORD: &str = r"(?:\p{Lu}\p{Ll}+(?:['’\-]\p{L}+)?|\p{Lu}{2,})";

/// Titles kept before the name: "Halo Pak [NAME],".
const HONORIFIC: &str = r"(?:(?:Pak|Bu|Bapak|Ibu|Mas|Mbak|Kak|Bang|Mr|Mrs|Ms|Miss|Dr|Sdr|Sdri)\.?[ \t]+)";

/// Words that follow the markers but are no one's name ("Halo Tim Support,", "Dear Customer,",
/// "a.n. PT Maju Jaya"), and titles on their own ("Halo Kak,").
const NOT_NAMES: [&str; 56] = [
    "team", "tim", "admin", "all", "everyone", "semua", "semuanya", "there", "guys", "customer", "customers", "pelanggan", "nasabah",
    "valued", "support", "cs", "world", "teman", "kakak", "gan", "agan", "sis", "bro", "min", "mimin", "user", "pengguna", "anda",
    "kamu", "sir", "madam", "bank", "bca", "bri", "bni", "btn", "mandiri", "pt", "cv", "tbk", "pak", "bu", "bapak", "ibu", "mas",
    "mbak", "kak", "bang", "mr", "mrs", "ms", "miss", "dr", "sdr", "sdri", "friend",
];

/// "nama saya Budi", "my name is Sarah Lee", "atas nama BUDI SANTOSO", "a.n. Rina".
static NAME_INTRO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i:\b(?:nama\s+saya(?:\s+adalah)?|my\s+name\s+is|my\s+name's|atas\s+nama)\b|\ba\.[ \t]?n\.?|\ba/n\b)[ \t]*:?[ \t]*{HONORIFIC}?(?P<name>{NAME_WORD}(?:[ \t]+{NAME_WORD}){{0,3}})"
    ))
    .expect("static regex")
});

/// "this is Sarah from", "I'm Budi from": the "from" makes it an introduction.
static NAME_FROM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i:\b(?:this\s+is|it's|it\s+is|i'm|i\s+am))[ \t]+{HONORIFIC}?(?P<name>{NAME_WORD}(?:[ \t]+{NAME_WORD}){{0,2}})[ \t]+(?i:from|dari)\b"
    ))
    .expect("static regex")
});

/// "Halo Budi,", "Hi Sarah!", "Dear Mr. Smith,": a name between a greeting and a comma. "Halo,
/// silakan buka menu Pengaturan" has no name there, so its UI word stays.
static NAME_GREETING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i:\b(?:halo|hallo|helo|hello|hai|hi|hey|dear|selamat\s+(?:pagi|siang|sore|malam)))[ \t]+{HONORIFIC}?(?P<name>{NAME_WORD}(?:[ \t]+{NAME_WORD}){{0,2}})[ \t]*(?:[,!:]|\n|$)"
    ))
    .expect("static regex")
});

/// "Salam, Budi", "Terima kasih,\nRina", "Regards, John": a sign-off, a comma, and a name that
/// ends the sentence or the text.
static NAME_SIGNOFF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i:\b(?:salam(?:\s+hangat)?|hormat\s+(?:saya|kami)|terima\s*kasih|makasih|thanks|thank\s+you|regards|best\s+regards|kind\s+regards|warm\s+regards|best|cheers|sincerely|yours\s+sincerely))[ \t]*,[ \t]*\n?[ \t]*{HONORIFIC}?(?P<name>{NAME_WORD}(?:[ \t]+{NAME_WORD}){{0,2}})[ \t]*(?:[.!]|\n|$)"
    ))
    .expect("static regex")
});

/// The digits of a number as written ("01.234.567.8-901.000" → "012345678901000").
fn digits_of(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// The number is followed by a decimal part or glued to a word: an amount or an id, not one
/// number on its own.
fn ends_cleanly(s: &str, end: usize) -> bool {
    let n = next_char(s, end);
    !is_word(n) && !(matches!(n, Some(',' | '.')) && next2_char(s, end).is_some_and(|c| c.is_ascii_digit()))
}

/// "1.500.000" is written like an amount: a short head and groups of three after dots.
fn thousands_grouped(number: &str) -> bool {
    let groups: Vec<&str> = number.split('.').collect();
    groups.len() >= 2 && groups[0].len() <= 3 && groups[1..].iter().all(|g| g.len() == 3)
}

/// A number after a marker word ("rekening", "NPWP"): the span of the number when the words in
/// between are few, hold no sentence break and no currency, and `digits_ok` accepts its digits.
fn said_numbers(s: &str, re: &Regex, digits_ok: impl Fn(&str) -> bool) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    for c in re.captures_iter(s) {
        let (gap, num) = (&c["gap"], c.name("num").expect("group"));
        let few_words = gap.split_whitespace().count() <= 4;
        let ok = few_words
            && !SENTENCE_BREAK.is_match(gap)
            && !CURRENCY.is_match(gap)
            && !thousands_grouped(num.as_str())
            && ends_cleanly(s, num.end())
            && digits_ok(&digits_of(num.as_str()));
        if ok {
            spans.push((num.start(), num.end()));
        }
    }
    spans
}

/// NPWP: always in its printed shape 99.999.999.9-999.999; as 15 plain digits, or the 16-digit
/// form used since 2024, only where the text says NPWP.
pub(super) fn replace_npwp(s: &str, count: &mut usize) -> String {
    let formatted: Vec<(usize, usize)> = NPWP_FORMATTED
        .find_iter(s)
        .filter(|m| {
            let p = prev_char(s, m.start());
            !is_word(p) && p != Some('.') && p != Some('-') && ends_cleanly(s, m.end())
        })
        .map(|m| (m.start(), m.end()))
        .collect();
    let out = splice(s, &formatted, "[NPWP]");
    let said = said_numbers(&out, &NPWP_SAID, |d| matches!(d.len(), 15 | 16));
    *count += formatted.len() + said.len();
    splice(&out, &said, "[NPWP]")
}

/// A bank account number where the text says so: "no. rek 1234567890", "rekening BCA saya:
/// 123-456-7890", "account number 12345678". 8 to 20 digits (Indonesian banks use 10 to 16).
pub(super) fn replace_bank_accounts(s: &str, count: &mut usize) -> String {
    let spans = said_numbers(s, &BANK_SAID, |d| (8..=20).contains(&d.len()));
    *count += spans.len();
    splice(s, &spans, "[BANK_ACCOUNT]")
}

/// The NIK's structure: province (the real list), regency and district (never 00), birth day
/// (women add 40: 01–31 or 41–71), month 01–12, two year digits, and a serial that is not 0000.
pub(crate) fn is_nik(digits: &str) -> bool {
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let n = |a: usize, b: usize| digits[a..b].parse::<u32>().unwrap_or(0);
    let (province, regency, district, day, month, serial) = (n(0, 2), n(2, 4), n(4, 6), n(6, 8), n(8, 10), n(12, 16));
    NIK_PROVINCES.contains(&province)
        && regency > 0
        && district > 0
        && ((1..=31).contains(&day) || (41..=71).contains(&day))
        && (1..=12).contains(&month)
        && serial > 0
}

/// A 16-digit number with the NIK's structure, on its own ("3174012304870002"), or written in
/// groups after "NIK" or "KTP" ("NIK: 3174 0123 0487 0002").
pub(super) fn replace_nik(s: &str, count: &mut usize) -> String {
    let said = said_numbers(s, &NIK_SAID, is_nik);
    let out = splice(s, &said, "[NIK]");
    let plain: Vec<(usize, usize)> = DIGIT_RUN
        .find_iter(&out)
        .filter(|m| m.len() == 16 && standalone(&out, m.start(), m.end()) && is_nik(m.as_str()))
        .map(|m| (m.start(), m.end()))
        .collect();
    *count += said.len() + plain.len();
    splice(&out, &plain, "[NIK]")
}

/// Indonesian mobile numbers without a `+` (those with one are international numbers already):
/// 0 or 62, then 8 and 8 to 11 more digits, written together or in groups ("08123456789",
/// "0812-3456-7890", "62 812 3456 7890").
pub(super) fn replace_indonesian_mobiles(s: &str, count: &mut usize) -> String {
    let mut spans = Vec::new();
    for m in PHONE_RUN.find_iter(s) {
        let (groups, seps) = tokenise(m.as_str(), m.start());
        spans.extend(find_windows(s, &groups, &seps, 14, is_indonesian_mobile));
    }
    *count += spans.len();
    splice(s, &spans, "[PHONE]")
}

fn is_indonesian_mobile(groups: &[Group], seps: &[Option<char>]) -> bool {
    if groups.iter().any(|g| g.paren) {
        return false;
    }
    let digits: String = groups.iter().map(|g| g.digits.as_str()).collect();
    let national = match digits.strip_prefix("62").or_else(|| digits.strip_prefix('0')) {
        Some(n) => n,
        None => return false,
    };
    if !national.starts_with('8') || !(9..=12).contains(&national.len()) {
        return false;
    }
    if groups.len() == 1 {
        return true;
    }
    // Grouped: groups of 2 to 5 digits, the last at least 3 (a following "2 kali" is not part of
    // it), and not an amount written with thousands dots ("62.812.345.678").
    let sizes_ok = groups.iter().all(|g| (2..=5).contains(&g.digits.len())) && groups.last().is_some_and(|g| g.digits.len() >= 3);
    let amount = seps.iter().all(|s| *s == Some('.')) && groups[1..].iter().all(|g| g.digits.len() == 3);
    sizes_ok && !amount
}

/// Names after the markers of [`NAME_INTRO`], [`NAME_FROM`], [`NAME_GREETING`] and
/// [`NAME_SIGNOFF`]; titles before them are kept and words in [`NOT_NAMES`] end the name.
pub(super) fn replace_marked_names(s: &str, count: &mut usize) -> String {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for re in [&*NAME_INTRO, &*NAME_FROM, &*NAME_GREETING, &*NAME_SIGNOFF] {
        for c in re.captures_iter(s) {
            let m = c.name("name").expect("group");
            if let Some(span) = name_span(m.as_str(), m.start()) {
                spans.push(span);
            }
        }
    }
    spans.sort();
    spans.dedup();
    // Two markers may find the same name ("Halo, nama saya Budi,"): keep non-overlapping spans.
    let mut kept: Vec<(usize, usize)> = Vec::new();
    for span in spans {
        if kept.last().is_none_or(|&(_, end)| span.0 >= end) {
            kept.push(span);
        }
    }
    *count += kept.len();
    splice(s, &kept, "[NAME]")
}

/// The name within the matched words: leading titles skipped, cut at the first word that is no
/// one's name; `None` when nothing is left.
fn name_span(words: &str, offset: usize) -> Option<(usize, usize)> {
    let mut start = None;
    let mut end = 0;
    let mut pos = 0;
    for w in words.split([' ', '\t']) {
        let (ws, we) = (pos, pos + w.len());
        pos = we + 1;
        if w.is_empty() {
            continue;
        }
        let bare = w.trim_end_matches('.').to_lowercase();
        if NOT_NAMES.contains(&bare.as_str()) {
            if start.is_none() && HONORIFIC_WORDS.contains(&bare.as_str()) {
                continue;
            }
            break;
        }
        start.get_or_insert(ws);
        end = we;
    }
    start.map(|s| (offset + s, offset + end))
}

/// Titles that may stand before a name the regex did not separate ("Halo Kak Rina,").
const HONORIFIC_WORDS: [&str; 16] = ["pak", "bu", "bapak", "ibu", "mas", "mbak", "kak", "bang", "mr", "mrs", "ms", "miss", "dr", "sdr", "sdri", "dear"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nik_structure() {
        assert!(is_nik("3174012304870002"));
        // A woman's NIK: 40 added to the day of birth.
        assert!(is_nik("3273016305900001"));
        for bad in [
            "1074012304870002", // province 10 does not exist
            "3100012304870002", // regency 00
            "3174002304870002", // district 00
            "3174013204870002", // day 32
            "3174017204870002", // day 72
            "3174012313870002", // month 13
            "3174012304870000", // serial 0000
            "317401230487000",  // 15 digits
        ] {
            assert!(!is_nik(bad), "{bad}");
        }
    }

    #[test]
    fn mobile_shapes() {
        let mut n = 0;
        assert_eq!(replace_indonesian_mobiles("WA 08123456789 ya", &mut n), "WA [PHONE] ya");
        assert_eq!(replace_indonesian_mobiles("62 812 3456 7890 atau 0812.3456.7890", &mut n), "[PHONE] atau [PHONE]");
        assert_eq!(n, 3);
        let mut n = 0;
        for text in ["Rp 62.812.345.678", "0712345678901", "081234", "ORD-08123456789", "08123456789012345"] {
            assert_eq!(replace_indonesian_mobiles(text, &mut n), text);
        }
        assert_eq!(n, 0);
    }

    #[test]
    fn names_stop_at_words_that_are_no_names_and_keep_titles() {
        let mut n = 0;
        assert_eq!(replace_marked_names("Halo Pak Budi, apa kabar", &mut n), "Halo Pak [NAME], apa kabar");
        assert_eq!(replace_marked_names("Halo Kak,", &mut n), "Halo Kak,");
        assert_eq!(replace_marked_names("a.n. PT Maju Jaya", &mut n), "a.n. PT Maju Jaya");
        assert_eq!(replace_marked_names("atas nama BUDI SANTOSO Bank BCA", &mut n), "atas nama [NAME] Bank BCA");
        assert_eq!(n, 2);
    }
}
