//! Personal data scrubbing. Fine-tuning data must not teach a model real e-mail addresses,
//! phone numbers, card numbers, IP addresses or customer names, so each is replaced by a fixed
//! placeholder. Customer-support data is full of order ids, dates, prices and versions that look
//! numeric too, so every detector errs on the side of leaving those alone.
//!
//! Indonesian support data carries its own kinds: mobile numbers written 08xx / 62 / +62, the
//! 16-digit NIK (identity number, checked against its region and birth-date structure), NPWP tax
//! numbers and bank accounts (taken only where the text says so), and names that the text itself
//! marks ("nama saya Budi", "Halo Budi,", "Terima kasih, Rina").
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use anyhow::{Context, Result};
use regex::{Regex, RegexBuilder};

use crate::recipe::LoadedRecipe;

/// How many of each kind one text (or a whole data set, via `add`) had replaced.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct PiiCounts {
    pub email: usize,
    pub phone: usize,
    pub card: usize,
    pub ip: usize,
    pub name: usize,
    pub nik: usize,
    pub npwp: usize,
    pub bank_account: usize,
}

impl PiiCounts {
    pub fn add(&mut self, other: &PiiCounts) {
        self.email += other.email;
        self.phone += other.phone;
        self.card += other.card;
        self.ip += other.ip;
        self.name += other.name;
        self.nik += other.nik;
        self.npwp += other.npwp;
        self.bank_account += other.bank_account;
    }

    pub fn total(&self) -> usize {
        self.email + self.phone + self.card + self.ip + self.name + self.nik + self.npwp + self.bank_account
    }
}

/// Which kinds to scrub; `names` are the personal names to replace (matched as whole words,
/// case-insensitively); `name_markers` replaces the names the text marks as names.
#[derive(Debug, Clone)]
pub struct PiiOptions {
    pub email: bool,
    pub phone: bool,
    pub card: bool,
    pub ip: bool,
    pub nik: bool,
    pub npwp: bool,
    pub bank_account: bool,
    pub name_markers: bool,
    pub names: Vec<String>,
}

impl PiiOptions {
    /// Every kind on, with this list of names.
    pub fn all(names: Vec<String>) -> PiiOptions {
        PiiOptions { email: true, phone: true, card: true, ip: true, nik: true, npwp: true, bank_account: true, name_markers: true, names }
    }
}

pub struct PiiScrubber {
    email: bool,
    phone: bool,
    card: bool,
    ip: bool,
    nik: bool,
    npwp: bool,
    bank_account: bool,
    name_markers: bool,
    /// Longest names first across the list, so "Ann Lee" wins over "Ann". Several regexes only
    /// when one would exceed the regex size limit.
    names: Vec<Regex>,
}

/// Template slots (`{{Order Number}}`) belong to the data set's format, and placeholders from an
/// earlier pass must not be re-matched (a name "Ip" would otherwise eat `[IP]`).
static PROTECTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)\{\{.*?\}\}|\[(?:EMAIL|PHONE|CARD|IP|NAME|NIK|NPWP|BANK_ACCOUNT)\]").expect("static regex"));

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"[A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b",
    )
    .expect("static regex")
});

/// Digit groups joined by single spaces or dashes; which consecutive groups form a card is
/// decided afterwards (Luhn and issuer), so an order id next to a card does not hide it.
static CARD_RUN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9]+(?:[ \-][0-9]+)*").expect("static regex"));

/// A leading `+` and country code is strong enough evidence on its own.
static PHONE_INTL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+[0-9]{1,4}(?:[ .\-]?(?:\([0-9]{1,5}\)|[0-9]+))*").expect("static regex"));

/// Digit groups (and a leading area code in parentheses) joined by space, dot or dash. The shape
/// is judged afterwards, window by window.
pub(super) static PHONE_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:\([0-9]+\) ?)?[0-9]+(?:[ .\-][0-9]+)*").expect("static regex"));

/// Whole dotted runs, so "1.2.3.4.5" is judged as five parts rather than matched in its first four.
static IPV4_RUN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9]+(?:\.[0-9]+)+").expect("static regex"));

/// Anything made of hex digits, colons and dots with a colon in it; `Ipv6Addr` decides.
static IPV6_RUN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*").expect("static regex"));

impl PiiScrubber {
    pub fn new(opts: &PiiOptions) -> PiiScrubber {
        PiiScrubber {
            email: opts.email,
            phone: opts.phone,
            card: opts.card,
            ip: opts.ip,
            nik: opts.nik,
            npwp: opts.npwp,
            bank_account: opts.bank_account,
            name_markers: opts.name_markers,
            names: build_name_regexes(&opts.names),
        }
    }

    /// Returns the scrubbed text and what was replaced.
    pub fn scrub(&self, text: &str) -> (String, PiiCounts) {
        let mut counts = PiiCounts::default();
        let mut out = text.to_string();
        // E-mails first: their local parts may hold digits or names. Cards before phones, and
        // IPs before phones, so a valid card or address is never half-taken as a phone.
        if self.email {
            out = map_unprotected(&out, |s| replace_email(s, &mut counts.email));
        }
        if self.card {
            out = map_unprotected(&out, |s| replace_cards(s, &mut counts.card));
        }
        // The identity numbers before IPs and phones: a dotted NPWP can look like an address, a
        // number the text calls an account is an account even when it starts with 08, and a
        // NIK is longer than any phone.
        if self.npwp {
            out = map_unprotected(&out, |s| super::pii_indonesia::replace_npwp(s, &mut counts.npwp));
        }
        if self.bank_account {
            out = map_unprotected(&out, |s| super::pii_indonesia::replace_bank_accounts(s, &mut counts.bank_account));
        }
        if self.nik {
            out = map_unprotected(&out, |s| super::pii_indonesia::replace_nik(s, &mut counts.nik));
        }
        if self.ip {
            // IPv6 first so the IPv4 tail of "::ffff:192.0.2.1" goes with its address.
            out = map_unprotected(&out, |s| replace_ipv6(s, &mut counts.ip));
            out = map_unprotected(&out, |s| replace_ipv4(s, &mut counts.ip));
        }
        if self.phone {
            out = map_unprotected(&out, |s| replace_intl_phones(s, &mut counts.phone));
            out = map_unprotected(&out, |s| super::pii_indonesia::replace_indonesian_mobiles(s, &mut counts.phone));
            out = map_unprotected(&out, |s| replace_grouped_phones(s, &mut counts.phone));
        }
        if self.name_markers {
            out = map_unprotected(&out, |s| super::pii_indonesia::replace_marked_names(s, &mut counts.name));
        }
        for re in &self.names {
            out = map_unprotected(&out, |s| {
                let mut n = 0;
                let replaced = re.replace_all(s, |_: &regex::Captures| {
                    n += 1;
                    "[NAME]"
                });
                counts.name += n;
                replaced.into_owned()
            });
        }
        (out, counts)
    }
}

const NAME_CHUNK: usize = 1000;

fn build_name_regexes(names: &[String]) -> Vec<Regex> {
    let mut seen = std::collections::HashSet::new();
    let mut list: Vec<Vec<&str>> = Vec::new();
    for name in names {
        let words: Vec<&str> = name.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        if seen.insert(words.join(" ").to_lowercase()) {
            list.push(words);
        }
    }
    let char_len = |w: &Vec<&str>| w.iter().map(|s| s.chars().count()).sum::<usize>() + w.len();
    list.sort_by_key(|w| std::cmp::Reverse(char_len(w)));
    let patterns: Vec<String> = list.iter().map(|w| name_pattern(w)).collect();
    let mut out = Vec::new();
    for chunk in patterns.chunks(NAME_CHUNK) {
        match compile_names(chunk) {
            Some(re) => out.push(re),
            // Too big as one regex: fall back to one per name rather than silently skip names.
            None => out.extend(chunk.iter().filter_map(|p| compile_names(std::slice::from_ref(p)))),
        }
    }
    out
}

/// Whole-word only where the name starts/ends with a word character; `\b` next to "J." would
/// never match. Inner whitespace matches any whitespace so "Mary  Ann" still counts.
fn name_pattern(words: &[&str]) -> String {
    let body = words.iter().map(|w| regex::escape(w)).collect::<Vec<_>>().join(r"\s+");
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let first = words.first().and_then(|w| w.chars().next());
    let last = words.last().and_then(|w| w.chars().last());
    format!("{}{}{}", if is_word(first) { r"\b" } else { "" }, body, if is_word(last) { r"\b" } else { "" })
}

fn compile_names(patterns: &[String]) -> Option<Regex> {
    let alternation = patterns.iter().map(|p| format!("(?:{p})")).collect::<Vec<_>>().join("|");
    RegexBuilder::new(&alternation).case_insensitive(true).size_limit(64 << 20).build().ok()
}

/// Applies `f` to the parts of `text` outside template slots and existing placeholders.
pub(super) fn map_unprotected(text: &str, mut f: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in PROTECTED.find_iter(text) {
        out.push_str(&f(&text[last..m.start()]));
        out.push_str(m.as_str());
        last = m.end();
    }
    out.push_str(&f(&text[last..]));
    out
}

pub(super) fn prev_char(s: &str, i: usize) -> Option<char> {
    s[..i].chars().next_back()
}

pub(super) fn prev2_char(s: &str, i: usize) -> Option<char> {
    let mut it = s[..i].chars();
    it.next_back();
    it.next_back()
}

pub(super) fn next_char(s: &str, i: usize) -> Option<char> {
    s[i..].chars().next()
}

pub(super) fn next2_char(s: &str, i: usize) -> Option<char> {
    s[i..].chars().nth(1)
}

pub(super) fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

pub(super) fn is_digit(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

/// A number standing on its own: not glued to a word ("ORD4111..."), not the tail of an id
/// ("ORD-...", "#..."), not part of a decimal or a longer dotted number.
pub(super) fn standalone(s: &str, start: usize, end: usize) -> bool {
    let p = prev_char(s, start);
    if is_word(p) || matches!(p, Some('+' | '#' | '$' | '€' | '£' | '¥')) {
        return false;
    }
    if matches!(p, Some('.' | ',' | '-' | '/')) && is_word(prev2_char(s, start)) {
        return false;
    }
    let n = next_char(s, end);
    if is_word(n) {
        return false;
    }
    if matches!(n, Some('.' | ',')) && is_digit(next2_char(s, end)) {
        return false;
    }
    if n == Some('-') && is_word(next2_char(s, end)) {
        return false;
    }
    true
}

fn replace_email(s: &str, count: &mut usize) -> String {
    let replaced = EMAIL.replace_all(s, |_: &regex::Captures| {
        *count += 1;
        "[EMAIL]"
    });
    replaced.into_owned()
}

/// Replaces the validated spans (sorted, non-overlapping byte ranges) with `placeholder`.
pub(super) fn splice(s: &str, spans: &[(usize, usize)], placeholder: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for &(a, b) in spans {
        out.push_str(&s[last..a]);
        out.push_str(placeholder);
        last = b;
    }
    out.push_str(&s[last..]);
    out
}

/// One digit group of a run: its byte span in the text, its digits, and whether it was
/// written as "(415)".
pub(super) struct Group {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) digits: String,
    pub(super) paren: bool,
}

/// Splits a matched run into groups and the separator before each group after the first
/// (`None` where a parenthesised group is followed directly by digits).
pub(super) fn tokenise(s: &str, offset: usize) -> (Vec<Group>, Vec<Option<char>>) {
    let mut groups: Vec<Group> = Vec::new();
    let mut seps: Vec<Option<char>> = Vec::new();
    let mut pending_sep: Option<char> = None;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_ascii_digit() || c == '(' {
            let paren = c == '(';
            let mut digits = String::new();
            if !paren {
                digits.push(c);
            }
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if d.is_ascii_digit() {
                    digits.push(d);
                    end = j + 1;
                    chars.next();
                } else if paren && d == ')' {
                    end = j + 1;
                    chars.next();
                    break;
                } else {
                    break;
                }
            }
            if !groups.is_empty() {
                seps.push(pending_sep.take());
            }
            groups.push(Group { start: offset + i, end: offset + end, digits, paren });
        } else {
            pending_sep = Some(c);
        }
    }
    (groups, seps)
}

/// Leftmost-longest windows of consecutive groups that `valid` accepts. A window may only start
/// or stop where the run is split by a space: a dash or dot binds its neighbours together.
/// Windows hold at most `max_digits` digits, which keeps a long run of numbers linear.
pub(super) fn find_windows(
    text: &str,
    groups: &[Group],
    seps: &[Option<char>],
    max_digits: usize,
    valid: impl Fn(&[Group], &[Option<char>]) -> bool,
) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let n = groups.len();
    let mut a = 0;
    while a < n {
        let starts_ok = a == 0 || seps[a - 1] == Some(' ');
        let mut found = None;
        if starts_ok {
            let mut digits = 0;
            let mut last = a;
            while last < n && digits + groups[last].digits.len() <= max_digits {
                digits += groups[last].digits.len();
                last += 1;
            }
            for b in (a..last).rev() {
                let ends_ok = b == n - 1 || seps[b] == Some(' ');
                if !ends_ok {
                    continue;
                }
                let (start, end) = (groups[a].start, groups[b].end);
                if standalone(text, start, end) && valid(&groups[a..=b], &seps[a..b]) {
                    found = Some(b);
                    break;
                }
            }
        }
        match found {
            Some(b) => {
                spans.push((groups[a].start, groups[b].end));
                a = b + 1;
            }
            None => a += 1,
        }
    }
    spans
}

fn replace_cards(s: &str, count: &mut usize) -> String {
    let mut spans = Vec::new();
    for m in CARD_RUN.find_iter(s) {
        let (groups, seps) = tokenise(m.as_str(), m.start());
        spans.extend(find_windows(s, &groups, &seps, 19, |g, _| {
            let digits: String = g.iter().map(|g| g.digits.as_str()).collect();
            card_grouping(g) && is_card(&digits)
        }));
    }
    *count += spans.len();
    splice(s, &spans, "[CARD]")
}

/// Printed cards are grouped 4-4-4-4, 4-6-5, 4-6-4 or 4-4-4-4-3; requiring that shape keeps a
/// row of small numbers ("40 41 42 43 44 45 46 47") from adding up to a valid card.
fn card_grouping(groups: &[Group]) -> bool {
    groups.len() == 1
        || (groups[0].digits.len() == 4 && groups[1..].iter().all(|g| (3..=6).contains(&g.digits.len())))
}

/// Luhn alone passes one random number in ten; an issuer range with its real lengths cuts that
/// to a sliver, which matters in data full of long order numbers.
pub(crate) fn is_card(digits: &str) -> bool {
    let len = digits.len();
    if !(13..=19).contains(&len) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let prefix = |n: usize| digits[..n].parse::<u32>().unwrap_or(0);
    let (p2, p3, p4) = (prefix(2), prefix(3), prefix(4));
    let issuer = (digits.starts_with('4') && matches!(len, 13 | 16 | 19))
        || (((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16)
        || (matches!(p2, 34 | 37) && len == 15)
        || ((p4 == 6011 || p2 == 65 || (644..=649).contains(&p3)) && (16..=19).contains(&len))
        || ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
        || (((300..=305).contains(&p3) || matches!(p2, 36 | 38)) && (14..=19).contains(&len));
    issuer && luhn(digits)
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let v = u32::from(b - b'0');
            if i % 2 == 1 {
                let d = v * 2;
                if d > 9 {
                    d - 9
                } else {
                    d
                }
            } else {
                v
            }
        })
        .sum();
    matches!(sum % 10, 0)
}

/// Only a globally routable address can point at a person; private, loopback, link-local and
/// documentation addresses (a router's 192.168.1.1 in a procedure) are content, not personal data.
fn is_public_v4(a: Ipv4Addr) -> bool {
    !(a.is_private() || a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_broadcast() || a.is_documentation())
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    if let Some(v4) = a.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let doc = a.segments()[0] == 0x2001 && a.segments()[1] == 0x0db8;
    !(a.is_loopback() || a.is_unspecified() || a.is_unique_local() || a.is_unicast_link_local() || doc)
}

fn replace_ipv6(s: &str, count: &mut usize) -> String {
    let mut spans = Vec::new();
    for m in IPV6_RUN.find_iter(s) {
        let cand = m.as_str().trim_end_matches('.');
        let (start, end) = (m.start(), m.start() + cand.len());
        let ok = cand.matches(':').count() >= 2
            && !cand.starts_with('.')
            && cand.bytes().any(|b| b.is_ascii_digit())
            && cand.parse::<Ipv6Addr>().is_ok_and(is_public_v6)
            && !is_word(prev_char(s, start))
            && !is_word(next_char(s, end));
        if ok {
            spans.push((start, end));
        }
    }
    *count += spans.len();
    splice(s, &spans, "[IP]")
}

fn replace_ipv4(s: &str, count: &mut usize) -> String {
    let mut spans = Vec::new();
    for m in IPV4_RUN.find_iter(s) {
        let parts: Vec<&str> = m.as_str().split('.').collect();
        let octets_ok =
            parts.len() == 4 && parts.iter().all(|p| p.len() <= 3 && p.parse::<u16>().is_ok_and(|v| v <= 255));
        let p = prev_char(s, m.start());
        let public = octets_ok && m.as_str().parse::<Ipv4Addr>().is_ok_and(is_public_v4);
        let ok = public && !is_word(p) && p != Some('.') && !is_word(next_char(s, m.end()));
        if ok {
            spans.push((m.start(), m.end()));
        }
    }
    *count += spans.len();
    splice(s, &spans, "[IP]")
}

fn replace_intl_phones(s: &str, count: &mut usize) -> String {
    let mut spans = Vec::new();
    for m in PHONE_INTL.find_iter(s) {
        let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        let p = prev_char(s, m.start());
        let n = next_char(s, m.end());
        if (7..=15).contains(&digits) && !is_word(p) && !is_word(n) {
            spans.push((m.start(), m.end()));
        }
    }
    *count += spans.len();
    splice(s, &spans, "[PHONE]")
}

fn replace_grouped_phones(s: &str, count: &mut usize) -> String {
    let mut spans = Vec::new();
    for m in PHONE_RUN.find_iter(s) {
        let (groups, seps) = tokenise(m.as_str(), m.start());
        spans.extend(find_windows(s, &groups, &seps, 15, is_grouped_phone));
    }
    *count += spans.len();
    splice(s, &spans, "[PHONE]")
}

/// Without a `+`, only the grouping tells a phone from an id, a date, a price or a version, so
/// the shape is checked strictly: one kind of separator, 7-15 digits, and not a date
/// ("2024-01-05", "05.01.2024"), a year range ("2023-2024") or a thousands-grouped amount
/// ("1 250 000").
fn is_grouped_phone(groups: &[Group], seps: &[Option<char>]) -> bool {
    let digits: usize = groups.iter().map(|g| g.digits.len()).sum();
    if !(7..=15).contains(&digits) || groups.iter().skip(1).any(|g| g.paren) {
        return false;
    }
    let paren = groups.first().is_some_and(|g| g.paren);
    if paren {
        // "(415) 555-0132": the area code must look like one and something must follow it.
        let area = groups[0].digits.len();
        return (2..=5).contains(&area)
            && groups.len() >= 2
            && groups[1..].iter().all(|g| (1..=5).contains(&g.digits.len()))
            && consistent(&seps[1..]);
    }
    // A lone trailing digit is the next word ("415 555 0132 2 times"), not part of the number.
    let last_len = groups.last().map_or(0, |g| g.digits.len());
    if groups.len() < 2 || last_len < 2 || groups.iter().any(|g| !(1..=5).contains(&g.digits.len())) {
        return false;
    }
    if !consistent(seps) {
        return false;
    }
    let sep = seps.first().copied().flatten();
    let sizes: Vec<usize> = groups.iter().map(|g| g.digits.len()).collect();
    match sep {
        // Dots are versions and dates far more often than phones: only 415.555.0132.
        Some('.') => sizes.len() == 3 && (2..=4).contains(&sizes[0]) && sizes[1] == 3 && sizes[2] == 4,
        Some('-') | Some(' ') => {
            if sizes.len() == 2 {
                // "555-0132"; "2023-2024", "12345 10" and the like are not phones.
                return sep == Some('-') && sizes == [3, 4];
            }
            let is_date = sizes.len() == 3
                && ((sizes[0] == 4 && sizes[1] <= 2 && sizes[2] <= 2)
                    || (sizes[0] <= 2 && sizes[1] <= 2 && (sizes[2] == 4 || sizes[2] == 2)));
            if is_date {
                return false;
            }
            let leading_zero = groups[0].digits.starts_with('0');
            let thousands = sizes[0] <= 3 && sizes[1..].iter().all(|&n| n == 3);
            if sep == Some(' ') && thousands && !leading_zero {
                return false;
            }
            // "01 23 45 67 89" is a French number; "10 20 30 40" is not.
            if sizes.iter().all(|&n| n <= 2) && !leading_zero {
                return false;
            }
            true
        }
        _ => false,
    }
}

fn consistent(seps: &[Option<char>]) -> bool {
    seps.iter().all(|s| s.is_some() && *s == seps[0])
}

/// The recipe's PII scrubber (None when `data.pii.enabled` is false): the one `prepare` and `augment` use.
pub fn scrubber_of(recipe: &LoadedRecipe) -> Result<Option<PiiScrubber>> {
    let p = &recipe.recipe.data.pii;
    if !p.enabled {
        return Ok(None);
    }
    let names = match &p.names_file {
        Some(f) => {
            let path = recipe.resolve(f).context("data.pii.names_file")?;
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read names file {}", path.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        }
        None => Vec::new(),
    };
    Ok(Some(PiiScrubber::new(&PiiOptions {
        email: p.email,
        phone: p.phone,
        card: p.card,
        ip: p.ip,
        nik: p.nik,
        npwp: p.npwp,
        bank_account: p.bank_account,
        name_markers: p.name_markers,
        names,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(names: &[&str]) -> PiiScrubber {
        PiiScrubber::new(&PiiOptions::all(names.iter().map(|s| s.to_string()).collect()))
    }

    fn scrub(text: &str) -> (String, PiiCounts) {
        all(&[]).scrub(text)
    }

    fn unchanged(text: &str) {
        let (out, counts) = scrub(text);
        assert_eq!(out, text, "should be left alone");
        assert_eq!(counts.total(), 0, "{text}: {counts:?}");
    }

    #[test]
    fn emails_are_replaced() {
        let (out, c) = scrub("Write to john.doe+support@mail.example.co.uk or a-b@x.io.");
        assert_eq!(out, "Write to [EMAIL] or [EMAIL].");
        assert_eq!(c.email, 2);
        assert_eq!(c.total(), 2);
    }

    #[test]
    fn email_lookalikes_stay() {
        unchanged("Mention @support on Twitter, or user@localhost, or name@domain.c");
    }

    #[test]
    fn cards_need_luhn_and_issuer() {
        let (out, c) = scrub("Visa 4111 1111 1111 1111, MC 5555-5555-5555-4444, Amex 378282246310005.");
        assert_eq!(out, "Visa [CARD], MC [CARD], Amex [CARD].");
        assert_eq!(c.card, 3);
        for card in ["6011111111111117", "3530111333300000", "30569309025904", "2223003122003222", "4222222222222"] {
            assert_eq!(scrub(card).0, "[CARD]", "{card}");
        }
    }

    #[test]
    fn order_ids_are_not_cards_or_phones() {
        // Passes Luhn, but 11 is no issuer prefix: only the issuer check keeps this order id.
        assert!(luhn("113542617735902"));
        unchanged("Your order 113542617735902 ships today.");
        // Fails Luhn.
        unchanged("Ref 4111111111111112 and ticket 4587345.");
        // Valid card digits glued to an id prefix.
        unchanged("Order ORD-4111111111111111 and #4111111111111111.");
        // Passes Luhn with an Amex prefix, but Amex numbers have 15 digits.
        assert!(luhn("3782822463100052"));
        unchanged("Item 3782822463100052 is out of stock.");
    }

    #[test]
    fn card_next_to_an_order_number_is_still_found() {
        let (out, c) = scrub("order 2024 4111 1111 1111 1111 paid");
        assert_eq!(out, "order 2024 [CARD] paid");
        assert_eq!(c.card, 1);
    }

    #[test]
    fn phones_with_country_code() {
        let (out, c) = scrub("Call +1 415 555 0132, +62 812-3456-7890 or +44 (0)20 7946 0958 today. Or +14155550132.");
        assert_eq!(out, "Call [PHONE], [PHONE] or [PHONE] today. Or [PHONE].");
        assert_eq!(c.phone, 4);
    }

    #[test]
    fn phone_does_not_swallow_a_following_number() {
        let (out, c) = scrub("Call 415 555 0132 2 times, or 021 555 1234.");
        assert_eq!(out, "Call [PHONE] 2 times, or [PHONE].");
        assert_eq!(c.phone, 2);
    }

    #[test]
    fn grouped_phones() {
        for phone in [
            "(415) 555-0132",
            "(415)555-0132",
            "415-555-0132",
            "415.555.0132",
            "0812 3456 7890",
            "1-800-555-0199",
            "555-0132",
            "01 23 45 67 89",
        ] {
            let (out, c) = scrub(&format!("Phone: {phone}."));
            assert_eq!(out, "Phone: [PHONE].", "{phone}");
            assert_eq!(c.phone, 1, "{phone}");
        }
    }

    #[test]
    fn numbers_that_are_not_phones() {
        unchanged("Order 4587345 and 113542617735902 were merged.");
        unchanged("It was placed on 2024-01-05 at 10:30, or 05.01.2024 in Europe.");
        unchanged("Upgrade from version 1.2.3.4.5 to 10.15.7 in 2023-2024.");
        unchanged("The price is $1,299.99 or 1 250 000 IDR, 12345 10 items, lines 10 20 30 40.");
        unchanged("Score +5 points; 2+2=4; 3.14159265 is pi.");
    }

    #[test]
    fn ipv4() {
        let (out, c) = scrub("Server 81.2.69.142 and 8.8.4.4:8080, net 93.184.0.0/16.");
        assert_eq!(out, "Server [IP] and [IP]:8080, net [IP]/16.");
        assert_eq!(c.ip, 3);
        unchanged("Version 1.2.3.4.5, build 256.1.1.1, release 1.2.3.");
        // Private, loopback and documentation addresses are procedure content.
        unchanged("Open 192.168.1.1 or 10.0.0.1, then 127.0.0.1 and 203.0.113.5.");
    }

    #[test]
    fn ipv6() {
        let (out, c) = scrub("Hosts 2a00:1450:4001:0829:0000:0000:0000:200e, 2606:4700::1111 and ::ffff:81.2.69.142.");
        assert_eq!(out, "Hosts [IP], [IP] and [IP].");
        assert_eq!(c.ip, 3);
        unchanged("Local fe80::1, fd00::1, ::1 and 2001:db8::1 stay.");
        unchanged("Meet at 10:30 or 10:30:45; see std::fs and Add::fee; MAC 00:1A:2B:3C:4D:5E.");
    }

    #[test]
    fn names_whole_word_case_insensitive_longest_first() {
        let s = all(&["Ann", "ann lee", " ", "J. R."]);
        let (out, c) = s.scrub("Dear ANN LEE, Ann's ticket; Annabel is fine; signed J. R. Smith");
        assert_eq!(out, "Dear [NAME], [NAME]'s ticket; Annabel is fine; signed [NAME] Smith");
        assert_eq!(c.name, 3);
    }

    #[test]
    fn regex_metacharacters_in_names_are_escaped() {
        let s = all(&["a+b", "(x)"]);
        let (out, c) = s.scrub("aab and a+b and (x) and x");
        assert_eq!(out, "aab and [NAME] and [NAME] and x");
        assert_eq!(c.name, 2);
    }

    #[test]
    fn template_slots_and_placeholders_are_preserved() {
        let s = all(&["Ip", "Order", "Email"]);
        let text = "Quote {{Order Number}} or call {{Customer Support Phone Number}} / {{Call 415-555-0132}}; \
                    we saw [EMAIL] and [IP] before.";
        let (out, c) = s.scrub(text);
        assert_eq!(out, text);
        assert_eq!(c, PiiCounts::default());
    }

    #[test]
    fn mixed_sentence() {
        let s = all(&["Maria Garcia"]);
        let text = "Hi, I'm maria garcia (maria.g@example.com, +1 415 555 0132). Card 4111-1111-1111-1111 \
                    was charged for order {{Order Number}} #113542617735902 from 81.2.69.142 on 2024-01-05.";
        let (out, c) = s.scrub(text);
        assert_eq!(
            out,
            "Hi, I'm [NAME] ([EMAIL], [PHONE]). Card [CARD] was charged for order {{Order Number}} \
             #113542617735902 from [IP] on 2024-01-05."
        );
        assert_eq!(c, PiiCounts { email: 1, phone: 1, card: 1, ip: 1, name: 1, ..PiiCounts::default() });
        assert_eq!(c.total(), 5);
    }

    #[test]
    fn disabled_kinds_are_left() {
        let s = PiiScrubber::new(&PiiOptions { email: false, phone: false, ip: false, nik: false, npwp: false, bank_account: false, name_markers: false, ..PiiOptions::all(vec![]) });
        let text = "a@b.com 415-555-0132 10.0.0.1 4111111111111111";
        let (out, c) = s.scrub(text);
        assert_eq!(out, "a@b.com 415-555-0132 10.0.0.1 [CARD]");
        assert_eq!(c, PiiCounts { card: 1, ..PiiCounts::default() });
    }

    #[test]
    fn counts_add_up() {
        let mut total = PiiCounts::default();
        total.add(&PiiCounts { email: 1, phone: 2, card: 0, ip: 1, name: 0, nik: 1, npwp: 0, bank_account: 2 });
        total.add(&PiiCounts { email: 0, phone: 1, card: 1, ip: 0, name: 3, nik: 0, npwp: 1, bank_account: 1 });
        assert_eq!(total, PiiCounts { email: 1, phone: 3, card: 1, ip: 1, name: 3, nik: 1, npwp: 1, bank_account: 3 });
        assert_eq!(total.total(), 14);
    }

    #[test]
    fn odd_input_does_not_panic() {
        for text in ["", "{{", "}}{{x", "+", "(", "(415", "é١٢٣٤٥٦٧٨٩ 👍 1-", "::", "a@", "4111 1111 1111 1111 "]
        {
            let _ = all(&["é"]).scrub(text);
        }
        assert_eq!(scrub("(415").0, "(415");
    }

    /// Every line of `tests/fixtures/pii_corpus.jsonl` (Indonesian and English support texts):
    /// the scrubbed text and the kind of every replacement, and the procedure content that must
    /// stay as it is.
    #[test]
    fn indonesian_and_english_corpus() {
        let corpus = include_str!("../../tests/fixtures/pii_corpus.jsonl");
        let scrubber = all(&[]);
        let mut failures = Vec::new();
        let mut kinds_seen = std::collections::BTreeSet::new();
        let (mut lines, mut untouched) = (0, 0);
        for (i, line) in corpus.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("pii_corpus.jsonl line {}: {e}", i + 1));
            let text = v["text"].as_str().expect("text");
            let expected = v["scrubbed"].as_str().expect("scrubbed");
            let mut want = PiiCounts::default();
            for kind in v["kinds"].as_array().expect("kinds") {
                let kind = kind.as_str().expect("kind");
                kinds_seen.insert(kind.to_string());
                match kind {
                    "email" => want.email += 1,
                    "phone" => want.phone += 1,
                    "card" => want.card += 1,
                    "ip" => want.ip += 1,
                    "name" => want.name += 1,
                    "nik" => want.nik += 1,
                    "npwp" => want.npwp += 1,
                    "bank_account" => want.bank_account += 1,
                    other => panic!("pii_corpus.jsonl line {}: unknown kind {other}", i + 1),
                }
            }
            let (out, got) = scrubber.scrub(text);
            if out != expected || got != want {
                failures.push(format!("line {}: {text:?}\n   got {out:?} {got:?}\n  want {expected:?} {want:?}", i + 1));
            }
            lines += 1;
            untouched += usize::from(text == expected);
        }
        assert!(failures.is_empty(), "{} of {lines} corpus lines differ:\n{}", failures.len(), failures.join("\n"));
        assert!(lines >= 60, "the corpus has {lines} lines");
        assert!(untouched >= 20, "only {untouched} lines check that content survives");
        for kind in ["phone", "nik", "npwp", "bank_account", "name", "email"] {
            assert!(kinds_seen.contains(kind), "no corpus line has a {kind}");
        }
    }

    #[test]
    fn long_runs_of_numbers_stay_fast_and_untouched() {
        let text = (1..20_000).map(|i| (i % 90 + 10).to_string()).collect::<Vec<_>>().join(" ");
        let start = std::time::Instant::now();
        let (out, c) = scrub(&text);
        assert_eq!(out, text);
        assert_eq!(c.total(), 0);
        assert!(start.elapsed().as_secs() < 5);
    }
}
