//! An Ollama Modelfile beside the GGUF file. Ollama does not run the Jinja chat template that
//! the GGUF carries; it needs the turn format as a Go template, and stop tokens. steptune writes
//! the two formats its models use: ChatML (Qwen2/Qwen3; with Qwen3's empty thinking block, since
//! procedures are trained with thinking off) and Llama 3's header format.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The chat format a Jinja template implements, by its markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<|im_start|>role\n...<|im_end|>`; `think_off` adds Qwen3's `<think>\n\n</think>\n\n`.
    ChatMl { think_off: bool },
    /// `<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>`.
    Llama3,
}

pub fn detect(chat_template: &str) -> Option<ChatFormat> {
    if chat_template.contains("<|im_start|>") {
        Some(ChatFormat::ChatMl { think_off: chat_template.contains("<think>") })
    } else if chat_template.contains("<|start_header_id|>") {
        Some(ChatFormat::Llama3)
    } else {
        None
    }
}

fn template(f: ChatFormat) -> (String, &'static [&'static str]) {
    match f {
        ChatFormat::ChatMl { think_off } => {
            let gen = if think_off { "<|im_start|>assistant\n<think>\n\n</think>\n\n" } else { "<|im_start|>assistant\n" };
            (
                format!(
                    "{{{{- if .System }}}}<|im_start|>system\n{{{{ .System }}}}<|im_end|>\n{{{{ end }}}}\
{{{{- range $i, $_ := .Messages }}}}{{{{- $last := eq (len (slice $.Messages $i)) 1 }}}}\
{{{{- if eq .Role \"user\" }}}}<|im_start|>user\n{{{{ .Content }}}}<|im_end|>\n\
{{{{ else if eq .Role \"assistant\" }}}}<|im_start|>assistant\n{{{{ .Content }}}}{{{{ if not $last }}}}<|im_end|>\n{{{{ end }}}}\
{{{{ end }}}}{{{{- if and (ne .Role \"assistant\") $last }}}}{gen}{{{{ end }}}}{{{{- end }}}}"
                ),
                &["<|im_end|>", "<|endoftext|>"],
            )
        }
        ChatFormat::Llama3 => (
            "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}\
{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}\
<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}{{ if or (ne .Role \"assistant\") (not $last) }}<|eot_id|>{{ end }}\
{{- if and (ne .Role \"assistant\") $last }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ end }}{{- end }}"
                .to_string(),
            &["<|eot_id|>", "<|end_of_text|>"],
        ),
    }
}

/// Go's `"""` strings cannot hold `"""`; the system prompt is written in one.
fn triple_quoted(s: &str) -> Result<String> {
    if s.contains("\"\"\"") {
        bail!("the system prompt contains \"\"\", which an Ollama Modelfile cannot quote");
    }
    Ok(format!("\"\"\"{s}\"\"\""))
}

/// The Modelfile text for `gguf_file` (named relative to the Modelfile).
pub fn render(gguf_file: &str, format: ChatFormat, system: Option<&str>) -> Result<String> {
    let (tmpl, stops) = template(format);
    let mut out = format!("# Written by steptune export. Load it with: ollama create NAME -f Modelfile\nFROM ./{gguf_file}\n\nTEMPLATE {}\n", triple_quoted(&tmpl)?);
    if let Some(s) = system {
        out.push_str(&format!("\nSYSTEM {}\n", triple_quoted(s)?));
    }
    out.push('\n');
    for s in stops {
        out.push_str(&format!("PARAMETER stop \"{s}\"\n"));
    }
    // Procedures are evaluated greedily; keep Ollama's sampling close to that.
    out.push_str("PARAMETER temperature 0\n");
    Ok(out)
}

/// Writes `Modelfile` in the GGUF file's folder (`<stem>.Modelfile` when a Modelfile for another
/// file is already there).
pub fn write_beside(gguf: &Path, model_dir: &Path, system: Option<&str>) -> Result<PathBuf> {
    let tc_path = model_dir.join("tokenizer_config.json");
    let tc: serde_json::Value = std::fs::read_to_string(&tc_path).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    let tmpl = tc.get("chat_template").and_then(|v| v.as_str()).map(str::to_string).or_else(|| std::fs::read_to_string(model_dir.join("chat_template.jinja")).ok());
    let Some(tmpl) = tmpl else { bail!("{}: no chat template, so no Modelfile TEMPLATE can be written", tc_path.display()) };
    let Some(format) = detect(&tmpl) else { bail!("{}: the chat template is neither ChatML nor Llama 3's format; write the Modelfile's TEMPLATE by hand", tc_path.display()) };
    let name = gguf.file_name().context("the output has no file name")?.to_string_lossy().to_string();
    let folder = gguf.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut path = folder.join("Modelfile");
    if path.exists() && !std::fs::read_to_string(&path).unwrap_or_default().contains(&format!("FROM ./{name}\n")) {
        path = folder.join(format!("{}.Modelfile", gguf.file_stem().unwrap_or_default().to_string_lossy()));
    }
    crate::run::write_atomic(&path, render(&name, format, system)?.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_modelfile_has_think_off_and_stops() {
        let m = render("m.gguf", ChatFormat::ChatMl { think_off: true }, Some("Answer in numbered steps.")).unwrap();
        assert!(m.contains("FROM ./m.gguf\n"));
        assert!(m.contains("<|im_start|>assistant\n<think>\n\n</think>\n\n{{ end }}"));
        assert!(m.contains("SYSTEM \"\"\"Answer in numbered steps.\"\"\""));
        assert!(m.contains("PARAMETER stop \"<|im_end|>\""));
        assert!(render("m.gguf", ChatFormat::Llama3, Some("a \"\"\" b")).is_err());
        assert_eq!(detect("{{ '<|start_header_id|>' }}"), Some(ChatFormat::Llama3));
        assert_eq!(detect("plain"), None);
    }
}
