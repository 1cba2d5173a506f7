//! Step normalisation. Source data writes procedures as JSON lists, numbered lists with every
//! numbering style, bullets, or one run-on line; the model should learn a single target format,
//! "1. ...\n2. ...", so every output is rewritten to it before training.
use std::sync::LazyLock;

use regex::Regex;

pub use crate::recipe::StepStyle;

/// How the steps were written in the source; reported so odd sources stand out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepShape {
    List,
    Numbered,
    Bulleted,
    Mixed,
    NoSteps,
}

/// `text` is what gets trained on; `steps` are kept apart for statistics and evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pub text: String,
    pub steps: Vec<String>,
    pub shape: StepShape,
}

/// "1." "1)" "(1)" "Step 1:" "Step 1 -", optionally wrapped in markdown bold ("**1.**",
/// "**Step 1:** ..."), followed by whitespace or the end of the line so "1.5 kg" is not a marker.
static NUM_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?P<lb>\*\*|__)?[ \t]*(?:(?i:step)[ \t]*(?P<s>[0-9]{1,3})[ \t]*(?:[:.)]|[-–—])|(?P<n>[0-9]{1,3})[.)]|\((?P<p>[0-9]{1,3})\))(?P<tb>\*\*|__)?(?:\s+|$)",
    )
    .expect("static regex")
});

/// "- " "* " "• " "– " "+ "; "**bold**" and "-5" are not bullets because a space must follow.
static BULLET: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[-*•–+](?:\s+|$)").expect("static regex"));

/// A number marker inside a line, for answers that put the whole list on one line.
static INLINE_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|\s)(?:\*\*)?(?:(?i:step)[ \t]*(?P<s>[0-9]{1,2})[ \t]*[:.)\-]|(?P<n>[0-9]{1,2})[.)])(?:\*\*)?\s+")
        .expect("static regex")
});

/// Start of a generated step for evaluation: "N." or "N)" not followed by a digit ("1.5").
static PARSE_MARKER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*[0-9]{1,3}[.)](?:[^0-9]|$)").expect("static regex"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Numbered(u32),
    Bullet,
}

#[derive(Debug, Clone)]
enum Line {
    Blank,
    Item { indent: usize, marker: Marker, text: String },
    Text { indent: usize, text: String },
}

#[derive(Debug, Clone)]
struct Step {
    text: String,
    marker: Marker,
}

/// The document as prose and list items in their original order.
#[derive(Debug, Clone)]
enum Block {
    Prose(String),
    Blank,
    Step(usize),
}

/// A list of steps (the {"instruction", "output": [..]} shape): strips any numbering/bullet each
/// item already has, drops empty items.
pub fn normalise_list(items: &[String]) -> Normalised {
    let steps: Vec<String> = items
        .iter()
        .map(|item| {
            // A list item is one step; a line break inside it would break the one-line-per-step format.
            let one_line = item.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
            match parse_line(&one_line) {
                Line::Item { text, .. } => text,
                Line::Text { text, .. } => text,
                Line::Blank => String::new(),
            }
        })
        .filter(|s| !s.is_empty())
        .collect();
    if steps.is_empty() {
        // Nothing usable: the caller's no-steps policy applies.
        return Normalised { text: String::new(), steps, shape: StepShape::NoSteps };
    }
    Normalised { text: number(&steps), steps, shape: StepShape::List }
}

/// A free-text answer: finds the list items (numbered "1." "1)" "(1)" "Step 1:" "Step 1 -", or
/// bulleted "- " "* " "• " "– "), renumbers them 1..n as "N. text".
pub fn normalise_text(text: &str, style: StepStyle) -> Normalised {
    let unix = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<Line> = unix.split('\n').map(parse_line).collect();
    let (mut blocks, mut steps) = group(&lines);
    if steps.len() < 2 {
        match split_inline(&lines) {
            Some((b, s)) => (blocks, steps) = (b, s),
            None => return no_steps(text),
        }
    }
    // Markers with nothing after them ("3." alone) carry no step.
    let keep: Vec<bool> = steps.iter().map(|s| !s.text.is_empty()).collect();
    let mut renumber = vec![usize::MAX; steps.len()];
    let mut kept = Vec::new();
    for (i, s) in steps.into_iter().enumerate() {
        if keep[i] {
            renumber[i] = kept.len();
            kept.push(s);
        }
    }
    if kept.len() < 2 {
        return no_steps(text);
    }
    let numbered = kept.iter().filter(|s| matches!(s.marker, Marker::Numbered(_))).count();
    let shape = if numbered == kept.len() {
        StepShape::Numbered
    } else if numbered == 0 {
        StepShape::Bulleted
    } else {
        StepShape::Mixed
    };
    let texts: Vec<String> = kept.into_iter().map(|s| s.text).collect();
    let out = match style {
        StepStyle::StepsOnly => number(&texts),
        StepStyle::KeepProse => render_with_prose(&blocks, &renumber, &texts),
    };
    Normalised { text: out, steps: texts, shape }
}

/// Parses numbered steps out of generated text (used later by evaluation): lines that start with
/// "N." or "N)" after optional whitespace, in order.
pub fn parse_numbered_steps(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let m = PARSE_MARKER.find(line)?;
            // The match may have taken the first character after the marker; re-split at the marker.
            let marker_end = line[..m.end()].rfind(['.', ')']).map_or(m.end(), |i| i + 1);
            let step = line[marker_end..].trim();
            (!step.is_empty()).then(|| step.to_string())
        })
        .collect()
}

fn no_steps(text: &str) -> Normalised {
    Normalised { text: text.trim().to_string(), steps: Vec::new(), shape: StepShape::NoSteps }
}

fn number(steps: &[String]) -> String {
    steps.iter().enumerate().map(|(i, s)| format!("{}. {s}", i + 1)).collect::<Vec<_>>().join("\n")
}

fn indent_of(line: &str) -> usize {
    line.chars().take_while(|c| c.is_whitespace()).map(|c| if c == '\t' { 4 } else { 1 }).sum()
}

fn parse_line(raw: &str) -> Line {
    let line = raw.trim_end();
    let body = line.trim_start();
    if body.is_empty() {
        return Line::Blank;
    }
    let indent = indent_of(line);
    if let Some(c) = NUM_MARKER.captures(body) {
        let num = c.name("s").or(c.name("n")).or(c.name("p")).and_then(|m| m.as_str().parse::<u32>().ok());
        if let (Some(num), Some(whole)) = (num, c.get(0)) {
            let text = unbold(c.name("lb").map(|m| m.as_str()), c.name("tb").is_some(), body[whole.end()..].trim());
            return Line::Item { indent, marker: Marker::Numbered(num), text };
        }
    }
    if let Some(m) = BULLET.find(body) {
        return Line::Item { indent, marker: Marker::Bullet, text: body[m.end()..].trim().to_string() };
    }
    Line::Text { indent, text: body.to_string() }
}

/// Removes the bold that wrapped the marker. When the bold ran past the marker ("**1. Open:**
/// the app") its closing `**` is either at the very end (dropped) or inside the text (the opening
/// one is put back in front of the text so the markdown stays balanced).
fn unbold(lead: Option<&str>, trail_closed: bool, rest: &str) -> String {
    let Some(delim) = lead else {
        return rest.to_string();
    };
    if trail_closed || rest.matches(delim).count() % 2 == 0 {
        return rest.to_string();
    }
    match rest.strip_suffix(delim) {
        Some(inner) => inner.trim_end().to_string(),
        None => format!("{delim}{rest}"),
    }
}

/// Splits the lines into prose and steps. The list's left edge is the indentation of its first
/// item; anything further right directly under an item is part of that item.
fn group(lines: &[Line]) -> (Vec<Block>, Vec<Step>) {
    let mut blocks = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut base: Option<usize> = None;
    let mut in_item = false;
    let mut saw_blank = false;
    for (i, line) in lines.iter().enumerate() {
        match line {
            Line::Blank => {
                if in_item {
                    saw_blank = true;
                } else {
                    blocks.push(Block::Blank);
                }
            }
            Line::Item { indent, marker, text } => {
                let base_indent = base.unwrap_or(*indent);
                let current = steps.last().filter(|_| in_item).map(|s| s.marker);
                let nested = current.is_some() && *indent > base_indent;
                // Unindented bullets between step n and step n+1 belong to step n.
                let bullet_under_number = match (current, marker) {
                    (Some(Marker::Numbered(n)), Marker::Bullet) => {
                        next_number(lines, i + 1, base_indent) == Some(n + 1)
                    }
                    _ => false,
                };
                if (nested || bullet_under_number) && !steps.is_empty() {
                    if let Some(step) = steps.last_mut() {
                        append(&mut step.text, text, "; ");
                    }
                } else {
                    if saw_blank {
                        blocks.push(Block::Blank);
                    }
                    base = Some(base.map_or(*indent, |b| b.min(*indent)));
                    steps.push(Step { text: text.clone(), marker: *marker });
                    blocks.push(Block::Step(steps.len() - 1));
                }
                in_item = true;
                saw_blank = false;
            }
            Line::Text { indent, text } => {
                let base_indent = base.unwrap_or(0);
                let continues = in_item && (*indent > base_indent || (!saw_blank && lazy_continuation(lines, i, text)));
                if continues {
                    if let Some(step) = steps.last_mut() {
                        append(&mut step.text, text, " ");
                    }
                    saw_blank = false;
                } else {
                    if saw_blank {
                        blocks.push(Block::Blank);
                    }
                    blocks.push(Block::Prose(text.clone()));
                    in_item = false;
                    saw_blank = false;
                }
            }
        }
    }
    (blocks, steps)
}

/// An unindented line right under an item continues it when more list follows before any blank
/// line, or when it plainly continues a sentence (starts in lower case). A line ending in ':'
/// introduces something new ("Option B:") and is prose.
fn lazy_continuation(lines: &[Line], i: usize, text: &str) -> bool {
    if text.ends_with(':') {
        return false;
    }
    if text.chars().next().is_some_and(char::is_lowercase) {
        return true;
    }
    for line in &lines[i + 1..] {
        match line {
            Line::Text { .. } => continue,
            Line::Item { .. } => return true,
            Line::Blank => return false,
        }
    }
    false
}

/// The number of the next top-level numbered item, looking past bullets, blank lines and
/// indented text; `None` when prose or the end comes first.
fn next_number(lines: &[Line], from: usize, base: usize) -> Option<u32> {
    for line in &lines[from..] {
        match line {
            Line::Blank => continue,
            Line::Item { marker: Marker::Bullet, .. } => continue,
            Line::Item { marker: Marker::Numbered(n), indent, .. } => {
                if *indent > base {
                    continue;
                }
                return Some(*n);
            }
            Line::Text { indent, .. } if *indent > base => continue,
            Line::Text { .. } => return None,
        }
    }
    None
}

fn append(step: &mut String, more: &str, sep: &str) {
    if more.is_empty() {
        return;
    }
    if step.is_empty() {
        step.push_str(more);
    } else {
        // "Open Settings:" followed by sub-bullets reads as a sentence, not "Settings:; Tap".
        let sep = if step.ends_with(':') { " " } else { sep };
        step.push_str(sep);
        step.push_str(more);
    }
}

/// One-line lists ("1. Open the app 2. Tap Settings 3. ..."): a marker only counts when it is
/// the next number in order, so "page 2." splits a step only where 2 is the step that follows 1.
fn split_inline(lines: &[Line]) -> Option<(Vec<Block>, Vec<Step>)> {
    let texts: Vec<Option<String>> = lines
        .iter()
        .map(|l| match l {
            Line::Blank => None,
            Line::Text { text, .. } => Some(text.clone()),
            // Give the inline search back the marker the line parser took off.
            Line::Item { marker: Marker::Numbered(n), text, .. } => Some(format!("{n}. {text}")),
            Line::Item { marker: Marker::Bullet, text, .. } => Some(text.clone()),
        })
        .collect();
    for (li, t) in texts.iter().enumerate() {
        let Some(line) = t else { continue };
        let Some(chain) = inline_chain(line) else { continue };
        let mut blocks = Vec::new();
        for prev in &texts[..li] {
            blocks.push(prev.clone().map_or(Block::Blank, Block::Prose));
        }
        let intro = line[..chain[0].0].trim();
        if !intro.is_empty() {
            blocks.push(Block::Prose(intro.to_string()));
            blocks.push(Block::Blank);
        }
        let mut steps = Vec::new();
        for (k, &(_, text_start)) in chain.iter().enumerate() {
            let text_end = chain.get(k + 1).map_or(line.len(), |next| next.0);
            steps.push(Step {
                text: line[text_start..text_end].trim().to_string(),
                marker: Marker::Numbered(k as u32 + 1),
            });
            blocks.push(Block::Step(k));
        }
        for next in &texts[li + 1..] {
            blocks.push(next.clone().map_or(Block::Blank, Block::Prose));
        }
        return Some((blocks, steps));
    }
    None
}

/// (marker start, text start) of each link in the first 1, 2, 3, ... chain of inline markers.
fn inline_chain(line: &str) -> Option<Vec<(usize, usize)>> {
    let mut chain = Vec::new();
    let mut expected = 1u32;
    for c in INLINE_MARKER.captures_iter(line) {
        let (Some(whole), Some(num)) = (c.get(0), c.name("s").or(c.name("n"))) else { continue };
        if num.as_str().parse::<u32>().ok() != Some(expected) {
            continue;
        }
        // The match may begin with the whitespace before the marker.
        let start = whole.start() + (whole.as_str().len() - whole.as_str().trim_start().len());
        chain.push((start, whole.end()));
        expected += 1;
    }
    (chain.len() >= 2).then_some(chain)
}

/// Prose as written, steps renumbered where they stood, one blank line between a paragraph and
/// a list and no runs of blank lines.
fn render_with_prose(blocks: &[Block], renumber: &[usize], texts: &[String]) -> String {
    enum Seg {
        Prose(Vec<String>),
        List(Vec<usize>),
    }
    let mut segs: Vec<Seg> = Vec::new();
    for block in blocks {
        match block {
            Block::Step(i) => {
                let Some(&k) = renumber.get(*i) else { continue };
                if k == usize::MAX {
                    continue;
                }
                match segs.last_mut() {
                    Some(Seg::List(items)) => items.push(k),
                    _ => segs.push(Seg::List(vec![k])),
                }
            }
            Block::Prose(line) => match segs.last_mut() {
                Some(Seg::Prose(lines)) => lines.push(line.clone()),
                _ => segs.push(Seg::Prose(vec![line.clone()])),
            },
            Block::Blank => {
                if let Some(Seg::Prose(lines)) = segs.last_mut() {
                    lines.push(String::new());
                }
            }
        }
    }
    let mut parts = Vec::new();
    for seg in segs {
        match seg {
            Seg::List(items) => parts.push(
                items
                    .iter()
                    .filter_map(|&k| texts.get(k).map(|t| format!("{}. {t}", k + 1)))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Seg::Prose(lines) => {
                let mut out: Vec<&str> = Vec::new();
                for l in &lines {
                    if l.is_empty() && out.last().is_none_or(|p| p.is_empty()) {
                        continue;
                    }
                    out.push(l);
                }
                while out.last().is_some_and(|l| l.is_empty()) {
                    out.pop();
                }
                if !out.is_empty() {
                    parts.push(out.join("\n"));
                }
            }
        }
    }
    parts.join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BITEXT: &str = "I'm here to assist you with canceling purchase 732201349959. Let's go through the process together:\n\n1. Log in to your account on our {{Website Name}}.\n2. Go to the {{Order Details}} section.\n3. Find the specific purchase with the number 732201349959.\n4. Look for the {{Cancel Purchase}} button next to the order details.\n5. Click on the button and follow the instructions provided to complete the cancellation.\n\nIf you have any further questions or encounter any difficulties, please don't hesitate to reach out to our support team.";

    const BITEXT_STEPS: &str = "1. Log in to your account on our {{Website Name}}.\n2. Go to the {{Order Details}} section.\n3. Find the specific purchase with the number 732201349959.\n4. Look for the {{Cancel Purchase}} button next to the order details.\n5. Click on the button and follow the instructions provided to complete the cancellation.";

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bitext_steps_only() {
        let n = normalise_text(BITEXT, StepStyle::StepsOnly);
        assert_eq!(n.text, BITEXT_STEPS);
        assert_eq!(n.shape, StepShape::Numbered);
        assert_eq!(n.steps.len(), 5);
        assert_eq!(n.steps[2], "Find the specific purchase with the number 732201349959.");
    }

    #[test]
    fn bitext_keep_prose() {
        let n = normalise_text(BITEXT, StepStyle::KeepProse);
        let expected = format!(
            "I'm here to assist you with canceling purchase 732201349959. Let's go through the process together:\n\n{BITEXT_STEPS}\n\nIf you have any further questions or encounter any difficulties, please don't hesitate to reach out to our support team."
        );
        assert_eq!(n.text, expected);
        assert_eq!(n.steps.len(), 5);
        assert_eq!(n.shape, StepShape::Numbered);
    }

    #[test]
    fn windows_line_endings() {
        let crlf = BITEXT.replace('\n', "\r\n");
        let n = normalise_text(&crlf, StepStyle::StepsOnly);
        assert_eq!(n.text, BITEXT_STEPS);
        let kept = normalise_text(&crlf, StepStyle::KeepProse);
        assert!(!kept.text.contains('\r'));
        assert_eq!(kept.text, normalise_text(BITEXT, StepStyle::KeepProse).text);
    }

    #[test]
    fn marker_styles_are_all_recognised() {
        let text = "Step 1: Open the app\nStep 2 - Tap Settings\n(3) Choose Wi-Fi\n4) Pick a network\n5. Connect";
        let n = normalise_text(text, StepStyle::StepsOnly);
        assert_eq!(n.text, "1. Open the app\n2. Tap Settings\n3. Choose Wi-Fi\n4. Pick a network\n5. Connect");
        assert_eq!(n.shape, StepShape::Numbered);
    }

    #[test]
    fn bullets_are_numbered() {
        let n =
            normalise_text("To reset:\n- Open the app\n* Tap Settings\n• Tap Reset\n– Confirm", StepStyle::StepsOnly);
        assert_eq!(n.text, "1. Open the app\n2. Tap Settings\n3. Tap Reset\n4. Confirm");
        assert_eq!(n.shape, StepShape::Bulleted);
    }

    #[test]
    fn mixed_markers() {
        let n = normalise_text("1. Open the app\n2. Tap Settings\n- Tap Reset", StepStyle::StepsOnly);
        assert_eq!(n.steps, strings(&["Open the app", "Tap Settings", "Tap Reset"]));
        assert_eq!(n.shape, StepShape::Mixed);
    }

    #[test]
    fn bold_around_the_marker_is_stripped() {
        let text = "**1. Bold step**\n**2.** Plain after bold marker\n**Step 3:** Done\n**4. Open:** the app\n5. **Keep** inner bold";
        let n = normalise_text(text, StepStyle::StepsOnly);
        assert_eq!(
            n.steps,
            strings(&["Bold step", "Plain after bold marker", "Done", "**Open:** the app", "**Keep** inner bold"])
        );
    }

    #[test]
    fn restarting_or_skipping_numbers_are_renumbered() {
        let n = normalise_text("3. Open the app\n5. Tap Settings\n1. Tap Reset\n1. Confirm", StepStyle::StepsOnly);
        assert_eq!(n.text, "1. Open the app\n2. Tap Settings\n3. Tap Reset\n4. Confirm");
    }

    #[test]
    fn nested_bullets_join_their_step() {
        let text = "Follow these steps:\n1. Open Settings:\n   - Tap Network\n   - Tap Wi-Fi\n2. Choose a network\n   and enter the password\n3. Tap Connect\n\nDone!";
        let n = normalise_text(text, StepStyle::StepsOnly);
        assert_eq!(
            n.steps,
            strings(&[
                "Open Settings: Tap Network; Tap Wi-Fi",
                "Choose a network and enter the password",
                "Tap Connect"
            ])
        );
        assert_eq!(n.shape, StepShape::Numbered);
        let kept = normalise_text(text, StepStyle::KeepProse);
        assert_eq!(
            kept.text,
            "Follow these steps:\n\n1. Open Settings: Tap Network; Tap Wi-Fi\n2. Choose a network and enter the password\n3. Tap Connect\n\nDone!"
        );
    }

    #[test]
    fn unindented_bullets_between_numbered_steps_are_sub_steps() {
        let n =
            normalise_text("1. Open the menu\n- Tap Account\n- Tap Orders\n2. Select the order", StepStyle::StepsOnly);
        assert_eq!(n.steps, strings(&["Open the menu; Tap Account; Tap Orders", "Select the order"]));
        assert_eq!(n.shape, StepShape::Numbered);
    }

    #[test]
    fn numbers_inside_a_step_do_not_split_it() {
        let n =
            normalise_text("1. Go to page 2. Then tap Next\n2. Install version 2.5 of the app", StepStyle::StepsOnly);
        assert_eq!(n.steps, strings(&["Go to page 2. Then tap Next", "Install version 2.5 of the app"]));
    }

    #[test]
    fn inline_numbering_is_split() {
        let n =
            normalise_text("To do it: 1. Open the app 2. Tap Settings 3. Save version 2.5 now.", StepStyle::StepsOnly);
        assert_eq!(n.steps, strings(&["Open the app", "Tap Settings", "Save version 2.5 now."]));
        assert_eq!(n.text, "1. Open the app\n2. Tap Settings\n3. Save version 2.5 now.");
        assert_eq!(n.shape, StepShape::Numbered);
        let kept = normalise_text("To do it: 1. Open the app 2. Tap Settings", StepStyle::KeepProse);
        assert_eq!(kept.text, "To do it:\n\n1. Open the app\n2. Tap Settings");
        let words = normalise_text("Step 1: Open the app. Step 2: Tap Save.", StepStyle::StepsOnly);
        assert_eq!(words.steps, strings(&["Open the app.", "Tap Save."]));
    }

    #[test]
    fn inline_numbers_out_of_order_are_not_steps() {
        let text = "  Turn to page 2. Then read chapter 1. Version 2.5 is out.  ";
        let n = normalise_text(text, StepStyle::StepsOnly);
        assert_eq!(n.shape, StepShape::NoSteps);
        assert_eq!(n.text, text.trim());
        assert!(n.steps.is_empty());
    }

    #[test]
    fn fewer_than_two_items_is_no_steps() {
        let text = "Sure!\n\n1. Just restart the router.\n\nThanks.\n";
        let n = normalise_text(text, StepStyle::KeepProse);
        assert_eq!(n.shape, StepShape::NoSteps);
        assert_eq!(n.text, "Sure!\n\n1. Just restart the router.\n\nThanks.");
        assert!(n.steps.is_empty());
        assert_eq!(normalise_text("", StepStyle::StepsOnly).shape, StepShape::NoSteps);
    }

    #[test]
    fn prose_between_lists_stays_in_place() {
        let text = "Option A:\n1. Call us\n2. Wait\nOption B:\n1. Email us\n2. Wait for the reply";
        let only = normalise_text(text, StepStyle::StepsOnly);
        assert_eq!(only.text, "1. Call us\n2. Wait\n3. Email us\n4. Wait for the reply");
        let kept = normalise_text(text, StepStyle::KeepProse);
        assert_eq!(kept.text, "Option A:\n\n1. Call us\n2. Wait\n\nOption B:\n\n3. Email us\n4. Wait for the reply");
    }

    #[test]
    fn empty_markers_are_dropped_and_split_markers_joined() {
        let n = normalise_text("1.\nOpen the app\n2. \n3. Tap Save", StepStyle::StepsOnly);
        assert_eq!(n.text, "1. Open the app\n2. Tap Save");
    }

    #[test]
    fn list_input_strips_markers_and_blank_items() {
        let items = strings(&[
            "1) Open the app",
            "  ",
            "2. Tap Settings",
            "- Tap Reset",
            "Step 4: Confirm\r\n  the reset",
            "",
            "(5) Keep  two spaces",
        ]);
        let n = normalise_list(&items);
        assert_eq!(n.text, "1. Open the app\n2. Tap Settings\n3. Tap Reset\n4. Confirm the reset\n5. Keep  two spaces");
        assert_eq!(n.steps.len(), 5);
        assert_eq!(n.shape, StepShape::List);
        let empty = normalise_list(&strings(&["", " - "]));
        assert_eq!(empty.shape, StepShape::NoSteps);
        assert!(empty.text.is_empty());
    }

    #[test]
    fn list_input_keeps_numbers_that_are_content() {
        let n = normalise_list(&strings(&["2.5 kg of flour", "100 ml milk"]));
        assert_eq!(n.steps, strings(&["2.5 kg of flour", "100 ml milk"]));
    }

    #[test]
    fn parse_numbered_steps_reads_generated_text() {
        let text = "Here you go:\n1. Open the app\n  2) Tap Settings\n2.5 is a version\n- a bullet\n3.Save\n4.\n";
        assert_eq!(parse_numbered_steps(text), strings(&["Open the app", "Tap Settings", "Save"]));
        assert_eq!(parse_numbered_steps(BITEXT).len(), 5);
        assert!(parse_numbered_steps("no steps here").is_empty());
    }

    #[test]
    fn normalised_output_round_trips_through_the_parser() {
        let n = normalise_text(BITEXT, StepStyle::KeepProse);
        assert_eq!(parse_numbered_steps(&n.text), n.steps);
    }
}
