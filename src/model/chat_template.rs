//! The model's own Jinja chat template, rendered with minijinja the way transformers renders it
//! (trim_blocks, lstrip_blocks, Python string methods); thinking off unless asked. It sits beside
//! the tokenizer because both come from the same files (`tokenizer_config.json`).
use anyhow::{Context, Result};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

use super::tokenizer::TokenizerBundle;

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: Option<String>, eos_token: Option<String>) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks on; without them whitespace differs.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> { Err(Error::new(ErrorKind::InvalidOperation, msg)) });
        env.add_template_owned("chat", source.to_string()).context("the chat template is not valid Jinja")?;
        Ok(ChatTemplate { env, bos_token, eos_token })
    }

    pub fn from_tokenizer(tok: &TokenizerBundle) -> Result<ChatTemplate> {
        let src = tok.chat_template.as_deref().context(
            "the tokenizer has no chat template (tokenizer_config.json has no `chat_template`); set `model.chat_template` in the recipe",
        )?;
        ChatTemplate::new(src, tok.bos_token.clone(), tok.eos_token.clone())
    }

    /// `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=..., enable_thinking=...)`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool, enable_thinking: bool) -> Result<String> {
        let tmpl = self.env.get_template("chat").expect("template was added");
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            enable_thinking => enable_thinking,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        tmpl.render(ctx).map_err(|e| anyhow::anyhow!("rendering the chat template failed: {e:#}"))
    }
}

pub fn chat_messages(system: Option<&str>, prompt: &str, answer: Option<&str>) -> Vec<Message> {
    let mut m = Vec::with_capacity(3);
    if let Some(s) = system {
        m.push(Message::new("system", s));
    }
    m.push(Message::new("user", prompt));
    if let Some(a) = answer {
        m.push(Message::new("assistant", a));
    }
    m
}
