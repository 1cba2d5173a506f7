//! The 25 IFEval instruction checkers (placeholder: being ported).
use anyhow::{bail, Result};
use serde_json::{Map, Value};

pub const INSTRUCTION_IDS: &[&str] = &[];

/// Python's `str.isspace` for one character.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

pub struct Instruction;

impl Instruction {
    pub fn new(id: &str, _kwargs: &Map<String, Value>, _prompt: &str) -> Result<Instruction> {
        bail!("instruction {id}: not implemented yet")
    }
    pub fn follows(&self, _response: &str) -> bool {
        false
    }
}
