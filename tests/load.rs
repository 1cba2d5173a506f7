//! Loaders for every source shape, and an error naming file, row and field for every bad input.
mod common;

use steptune::data::load::{load_file, RawOutput};
use steptune::recipe::{Columns, DataFormat};

fn cols() -> Columns {
    Columns::default()
}

#[test]
fn jsonl_prompt_output_shape() {
    let d = tempfile::tempdir().unwrap();
    let p = common::write(d.path(), "a.jsonl", b"{\"prompt\": \"Reset my password\", \"output\": \"1. Open\\n2. Tap\"}\n\n{\"prompt\": \"Change email\", \"output\": \"1. Go\\n2. Edit\", \"group\": \"email\"}\n");
    let l = load_file(&p, DataFormat::Auto, &cols()).unwrap();
    assert_eq!(l.rows.len(), 2);
    assert!(l.errors.is_empty());
    assert_eq!(l.rows[0].output, RawOutput::Text("1. Open\n2. Tap".into()));
    assert_eq!(l.rows[1].group.as_deref(), Some("email"));
    assert_eq!(l.rows[1].at.line, Some(3), "blank lines are skipped but line numbers stay true");
}

#[test]
fn json_array_instruction_list_shape() {
    let d = tempfile::tempdir().unwrap();
    let p = common::write(d.path(), "a.json", br#"[{"instruction": "How do I reset my password in the xx app?", "output": ["Open the app", "Go to the login page"]}]"#);
    let l = load_file(&p, DataFormat::Auto, &cols()).unwrap();
    assert_eq!(l.columns.prompt, "instruction");
    assert_eq!(l.rows[0].output, RawOutput::List(vec!["Open the app".into(), "Go to the login page".into()]));
}

#[test]
fn csv_with_column_mapping_and_multiline_quoted_fields() {
    let d = tempfile::tempdir().unwrap();
    let p = common::write(
        d.path(),
        "a.csv",
        b"flags,instruction,intent,response\nB,\"cancel order 1\",cancel_order,\"Sure:\n\n1. Log in\n2. Cancel, then confirm\"\nB,\"cancel order 2\",cancel_order,\"1. A\n2. B\"\n",
    );
    let c = Columns { prompt: Some("instruction".into()), output: Some("response".into()), group: Some("intent".into()), id: None, source: None };
    let l = load_file(&p, DataFormat::Auto, &c).unwrap();
    assert_eq!(l.rows.len(), 2, "{:?}", l.errors);
    assert_eq!(l.rows[0].group.as_deref(), Some("cancel_order"));
    assert_eq!(l.rows[0].output, RawOutput::Text("Sure:\n\n1. Log in\n2. Cancel, then confirm".into()));
    assert_eq!(l.rows[1].at.row, 2);
    assert_eq!(l.rows[1].at.line, Some(6));
}

#[test]
fn the_real_bitext_csv_loads_with_its_mapping() {
    let p = common::shared().join("data/bitext-customer-support.csv");
    let c = Columns { prompt: Some("instruction".into()), output: Some("response".into()), group: Some("intent".into()), id: None, source: None };
    let l = load_file(&p, DataFormat::Auto, &c).unwrap();
    assert_eq!(l.rows.len() + l.errors.len(), 4514);
    assert!(l.errors.is_empty(), "{:?}", &l.errors[..l.errors.len().min(3)]);
    let intents: std::collections::BTreeSet<_> = l.rows.iter().filter_map(|r| r.group.clone()).collect();
    assert_eq!(intents.len(), 27);
}

fn errors_of(name: &str, content: &[u8], c: &Columns) -> Vec<String> {
    let d = tempfile::tempdir().unwrap();
    let p = common::write(d.path(), name, content);
    load_file(&p, DataFormat::Auto, c).unwrap().errors.iter().map(|e| e.to_string()).collect()
}

#[test]
fn bad_rows_are_named_by_file_row_and_field() {
    let e = errors_of("a.jsonl", b"{\"prompt\": \"  \", \"output\": \"1. a\"}\n{\"prompt\": 5, \"output\": \"x\"}\n{\"prompt\": \"p\", \"output\": [\"a\", 3]}\n{\"prompt\": \"p\"}\n[1]\n{\"prompt\": \"p\", \"output\": \"x\", \"group\": [1]}\n", &cols());
    assert_eq!(e.len(), 6, "{e:#?}");
    assert!(e[0].contains("a.jsonl row 1 (line 1), field `prompt`: is empty"), "{}", e[0]);
    assert!(e[1].contains("row 2") && e[1].contains("`prompt`: must be a string, found a number"), "{}", e[1]);
    assert!(e[2].contains("`output`: step 2 must be a string, found a number"), "{}", e[2]);
    assert!(e[3].contains("`output`: is missing"), "{}", e[3]);
    assert!(e[4].contains("row 5") && e[4].contains("expected an object, found a list"), "{}", e[4]);
    assert!(e[5].contains("`group`: must be a non-empty string or a number"), "{}", e[5]);
}

#[test]
fn broken_json_line_and_invalid_utf8_are_named() {
    let e = errors_of("a.jsonl", b"{\"prompt\": \"a\", \"output\": \"b\"\n{\"prompt\": \"caf\xe9\", \"output\": \"b\"}\n", &cols());
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].contains("line 1") && e[0].contains("not valid JSON"), "{}", e[0]);
    assert!(e[1].contains("line 2") && e[1].contains("invalid UTF-8"), "{}", e[1]);
    let e = errors_of("a.csv", b"prompt,output\n\"caf\xe9\",\"1. a\"\n", &cols());
    assert!(e[0].contains("a.csv row 1 (line 2), field `prompt`: invalid UTF-8"), "{e:?}");
}

#[test]
fn broken_csv_quoting_is_named() {
    let e = errors_of("a.csv", b"prompt,output\nok,\"1. a\"\nbad \"quote\", 1. a, extra\n", &cols());
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("row 2 (line 3)") && e[0].contains("has 3 fields but the header has 2"), "{}", e[0]);
}

#[test]
fn file_level_problems_are_hard_errors() {
    let d = tempfile::tempdir().unwrap();
    let missing = load_file(&d.path().join("nope.jsonl"), DataFormat::Auto, &cols()).unwrap_err();
    assert!(format!("{missing:#}").contains("nope.jsonl"));
    let p = common::write(d.path(), "a.json", b"{\"prompt\": \"a\"}");
    assert!(format!("{:#}", load_file(&p, DataFormat::Auto, &cols()).unwrap_err()).contains("must hold an array"));
    let p = common::write(d.path(), "b.json", b"[{\"prompt\": \"a\",]");
    assert!(format!("{:#}", load_file(&p, DataFormat::Auto, &cols()).unwrap_err()).contains("not valid JSON at line 1"));
    let p = common::write(d.path(), "a.txt", b"x");
    assert!(format!("{:#}", load_file(&p, DataFormat::Auto, &cols()).unwrap_err()).contains("data.format"));
    let p = common::write(d.path(), "c.csv", b"question,reply\nq,r\n");
    let c = Columns { output: Some("response".into()), ..Default::default() };
    let e = format!("{:#}", load_file(&p, DataFormat::Auto, &c).unwrap_err());
    assert!(e.contains("column `response` (data.columns.output) is not in the file; it has: question, reply"), "{e}");
    let e = format!("{:#}", load_file(&p, DataFormat::Auto, &cols()).unwrap_err());
    assert!(e.contains("no output column") && e.contains("data.columns.output"), "{e}");
}
