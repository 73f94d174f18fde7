//! Chat templates: the model's own Jinja template, rendered as Hugging Face renders it.
//!
//! A chat model is only itself with the exact prompt format it was trained on, so prompts are
//! built from the template shipped with the model (GGUF metadata or `tokenizer_config.json`),
//! never from a hand-written imitation. Rendering follows `apply_chat_template`: blocks trimmed
//! and left-stripped, Python string methods available, `raise_exception` for template errors.

use minijinja::{Environment, ErrorKind, Value, context};
use serde::Serialize;

use crate::TokenizerError;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

const NAME: &str = "chat";

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are the texts templates may refer to.
    pub fn new(
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self, TokenizerError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| TokenizerError::ChatTemplate(format!("does not compile: {e}")))?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token,
            eos_token,
        })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The prompt text of `messages`; with `add_generation_prompt`, the assistant's turn is
    /// opened so that the model writes the reply next. Messages are [`ChatMessage`]s, or any
    /// other shape a template reads (multimodal templates read content parts such as
    /// `{"type": "image"}`).
    pub fn render<M: serde::Serialize>(
        &self,
        messages: &[M],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| TokenizerError::ChatTemplate(e.to_string()))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.clone().unwrap_or_default(),
                eos_token => self.eos_token.clone().unwrap_or_default(),
            })
            .map_err(|e| TokenizerError::ChatTemplate(format!("rendering failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as stored in its GGUF.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn user(text: &str) -> ChatMessage {
        ChatMessage {
            role: "user".into(),
            content: text.into(),
        }
    }

    #[test]
    fn renders_smollm2_as_hugging_face_does() {
        let t = ChatTemplate::new(SMOLLM2, None, Some("<|im_end|>".into())).unwrap();
        let text = t.render(&[user("What is 2+2?")], true).unwrap();
        // Rendered by transformers' apply_chat_template (tests/fixtures).
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let system = ChatMessage {
            role: "system".into(),
            content: "Be brief.".into(),
        };
        let text = t.render(&[system, user("Hi")], false).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn python_methods_globals_and_exceptions() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}{{ m.content.strip().upper() }}{% endfor %}";
        let t = ChatTemplate::new(src, Some("<s>".into()), None).unwrap();
        assert_eq!(t.render(&[user("  hi ")], false).unwrap(), "<s>HI");
        let tool = ChatMessage {
            role: "tool".into(),
            content: "x".into(),
        };
        let err = t.render(&[tool], false).unwrap_err().to_string();
        assert!(err.contains("no tools"), "{err}");
        assert!(ChatTemplate::new("{% for %}", None, None).is_err());
    }
}
