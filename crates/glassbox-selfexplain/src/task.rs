//! Classification tasks and elicitation protocols as data (`prompts/tasks/*.toml`,
//! `prompts/selfexplain/*.toml`): another task or another way of asking is a new file, not new
//! code. Built-in files are compiled in, so the binary needs no `prompts/` folder at run time.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::SelfExplainError;
use crate::parse::AnswerFormat;

/// The built-in tasks, by name.
pub const BUILTIN_TASKS: &[(&str, &str)] = &[(
    "sentiment",
    include_str!("../../../prompts/tasks/sentiment.toml"),
)];

/// The built-in elicitation protocols, by name.
pub const BUILTIN_PROTOCOLS: &[(&str, &str)] = &[
    (
        "topk-predict-then-explain",
        include_str!("../../../prompts/selfexplain/topk-predict-then-explain.toml"),
    ),
    (
        "topk-explain-then-predict",
        include_str!("../../../prompts/selfexplain/topk-explain-then-predict.toml"),
    ),
    (
        "scores-predict-then-explain",
        include_str!("../../../prompts/selfexplain/scores-predict-then-explain.toml"),
    ),
    (
        "scores-explain-then-predict",
        include_str!("../../../prompts/selfexplain/scores-explain-then-predict.toml"),
    ),
];

/// The built-in protocols with what they ask (for `glassbox list protocols`).
pub const PROTOCOL_DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "topk-predict-then-explain",
        "the answer opens with the model's prediction; it then lists the k words that made it decide",
    ),
    (
        "topk-explain-then-predict",
        "the model lists the k most important words, then writes its label (read back and compared)",
    ),
    (
        "scores-predict-then-explain",
        "after its prediction the model scores every word in [-1, 1] towards the first label",
    ),
    (
        "scores-explain-then-predict",
        "the model scores every word in [-1, 1], then writes its label",
    ),
];

/// The protocol used unless another is named.
pub const DEFAULT_PROTOCOL: &str = "topk-predict-then-explain";

/// A prompt the model classifies with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framing {
    /// Whether the template is the user turn of the model's chat template (else raw text after
    /// the start-of-document token).
    pub chat: bool,
    /// The prompt, with `{input}` once.
    pub template: String,
    /// Each label's word as it follows the prompt (one token each; spaces count), in the
    /// order of the task's `label_names`.
    pub labels: Vec<String>,
}

/// A few-shot example for base models.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub input: String,
    /// Index into the task's `label_names`.
    pub label: usize,
    /// The example's most important words (top-k protocols).
    pub words: Vec<String>,
    /// One score in [-1, 1] per whitespace-separated word of `input` (score protocols).
    pub scores: Vec<f64>,
}

/// A classification task: its labels, framings and few-shot examples.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub name: String,
    pub version: u32,
    /// The question put to the model in self-explanation prompts.
    pub question: String,
    /// The labels as words for people and for prompts.
    pub label_names: Vec<String>,
    pub default_framing: String,
    pub framings: BTreeMap<String, Framing>,
    #[serde(default)]
    pub examples: Vec<Example>,
}

impl Task {
    /// A built-in task by name, or a task file.
    pub fn load(name_or_path: &str) -> Result<Self, SelfExplainError> {
        match BUILTIN_TASKS.iter().find(|(name, _)| *name == name_or_path) {
            Some((name, text)) => Self::parse(text, name),
            None => Self::parse(&read(name_or_path, "task")?, name_or_path),
        }
    }

    /// Parses and checks a task file's text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, SelfExplainError> {
        let task: Task = toml::from_str(text).map_err(|e| SelfExplainError::BadFile {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let bad = |message: String| SelfExplainError::BadFile {
            origin: origin.to_string(),
            message,
        };
        if task.label_names.len() < 2 {
            return Err(bad(
                "a task needs at least two labels in `label_names`".into()
            ));
        }
        if task.framings.is_empty() {
            return Err(bad("a task needs at least one framing".into()));
        }
        if !task.framings.contains_key(&task.default_framing) {
            return Err(bad(format!(
                "`default_framing` = `{}` is not one of the framings ({})",
                task.default_framing,
                task.framing_names()
            )));
        }
        for (name, framing) in &task.framings {
            if framing.labels.len() != task.label_names.len() {
                return Err(bad(format!(
                    "framing `{name}` has {} label words for {} labels",
                    framing.labels.len(),
                    task.label_names.len()
                )));
            }
            if framing.template.matches("{input}").count() != 1 {
                return Err(bad(format!(
                    "framing `{name}`: the template needs `{{input}}` exactly once"
                )));
            }
        }
        for (i, ex) in task.examples.iter().enumerate() {
            if ex.label >= task.label_names.len() {
                return Err(bad(format!(
                    "example {}: label {} is out of range",
                    i + 1,
                    ex.label
                )));
            }
            let words = ex.input.split_whitespace().count();
            if ex.scores.len() != words {
                return Err(bad(format!(
                    "example {}: {} scores for {words} words",
                    i + 1,
                    ex.scores.len()
                )));
            }
        }
        Ok(task)
    }

    /// The framing called `name`, or the default one.
    pub fn framing(&self, name: Option<&str>) -> Result<(&str, &Framing), SelfExplainError> {
        let name = name.unwrap_or(&self.default_framing);
        self.framings
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| {
                SelfExplainError::BadInput(format!(
                    "task `{}` has no framing `{name}`; it has {}",
                    self.name,
                    self.framing_names()
                ))
            })
    }

    fn framing_names(&self) -> String {
        self.framings.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// "positive or negative", for prompts.
    pub fn labels_phrase(&self) -> String {
        match self.label_names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => self.label_names.join(""),
        }
    }
}

/// Which comes first in the model's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// The answer starts with the model's prediction (its most probable label), then the
    /// explanation follows.
    PredictThenExplain,
    /// The explanation comes first; the label the model then writes is read back.
    ExplainThenPredict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FormatName {
    Topk,
    Scores,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtocolFile {
    name: String,
    version: u32,
    order: Order,
    format: FormatName,
    k: Option<usize>,
    user: String,
    assistant: String,
    #[serde(default)]
    answer_prefix: String,
    shot: String,
    query: String,
}

/// How a self-explanation is asked for: a versioned prompt file.
#[derive(Debug, Clone, PartialEq)]
pub struct Protocol {
    pub name: String,
    pub version: u32,
    pub order: Order,
    pub format: AnswerFormat,
    /// Chat models: the user's message and the start of the assistant's answer.
    pub user: String,
    pub assistant: String,
    /// Chat models: text that opens the explanation itself (e.g. `[` of a JSON list, or
    /// `{first_word}:`), filled like the other templates, appended to the assistant's opening
    /// and read back with the model's continuation by the parser. Base models continue the
    /// few-shot query as written.
    pub answer_prefix: String,
    /// Base models: each few-shot example, then the query the model continues.
    pub shot: String,
    pub query: String,
}

impl Protocol {
    /// A built-in protocol by name, or a protocol file.
    pub fn load(name_or_path: &str) -> Result<Self, SelfExplainError> {
        match BUILTIN_PROTOCOLS
            .iter()
            .find(|(name, _)| *name == name_or_path)
        {
            Some((name, text)) => Self::parse(text, name),
            None if !Path::new(name_or_path).exists() && !name_or_path.ends_with(".toml") => {
                Err(SelfExplainError::BadInput(format!(
                    "unknown protocol `{name_or_path}`; built-in protocols: {} (or give a .toml file)",
                    BUILTIN_PROTOCOLS
                        .iter()
                        .map(|p| p.0)
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            None => Self::parse(&read(name_or_path, "protocol")?, name_or_path),
        }
    }

    /// Parses and checks a protocol file's text.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SelfExplainError> {
        let bad = |message: String| SelfExplainError::BadFile {
            origin: origin.to_string(),
            message,
        };
        let file: ProtocolFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let format = match (file.format, file.k) {
            (FormatName::Topk, Some(k)) if k > 0 => AnswerFormat::TopK { k },
            (FormatName::Topk, _) => return Err(bad("a top-k protocol needs `k` ≥ 1".into())),
            (FormatName::Scores, None) => AnswerFormat::Scores,
            (FormatName::Scores, Some(_)) => {
                return Err(bad("`k` belongs to top-k protocols only".into()));
            }
        };
        for (field, template) in [("user", &file.user), ("query", &file.query)] {
            if !template.contains("{input}") {
                return Err(bad(format!("`{field}` needs the `{{input}}` placeholder")));
            }
        }
        if file.order == Order::PredictThenExplain
            && !(file.assistant.contains("{prediction}") && file.query.contains("{prediction}"))
        {
            return Err(bad(
                "a predict-then-explain protocol puts `{prediction}` in `assistant` and `query`"
                    .into(),
            ));
        }
        Ok(Self {
            name: file.name,
            version: file.version,
            order: file.order,
            format,
            user: file.user,
            assistant: file.assistant,
            answer_prefix: file.answer_prefix,
            shot: file.shot,
            query: file.query,
        })
    }
}

fn read(path: &str, what: &str) -> Result<String, SelfExplainError> {
    std::fs::read_to_string(path).map_err(|e| {
        SelfExplainError::BadInput(format!("cannot read the {what} file `{path}`: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_files_load() {
        let task = Task::load("sentiment").unwrap();
        assert_eq!(task.label_names, ["positive", "negative"]);
        assert_eq!(task.framing(None).unwrap().0, "raw");
        assert_eq!(task.labels_phrase(), "positive or negative");
        for (name, _) in BUILTIN_PROTOCOLS {
            let p = Protocol::load(name).unwrap();
            assert_eq!(&p.name, name);
        }
        assert_eq!(
            Protocol::load("topk-predict-then-explain").unwrap().format,
            AnswerFormat::TopK { k: 3 }
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let base = BUILTIN_TASKS[0].1;
        let no_labels = base.replace(
            "label_names = [\"positive\", \"negative\"]",
            "label_names = [\"positive\"]",
        );
        let no_placeholder = base.replace("Review: {input}\\nSentiment", "Review:\\nSentiment");
        let malformed = format!("{base}\n[[[");
        for (text, needle) in [
            (no_labels.as_str(), "at least two labels"),
            (no_placeholder.as_str(), "{input}"),
            (malformed.as_str(), "t.toml"),
        ] {
            let err = Task::parse(text, "t.toml").unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("t.toml"), "{err}");
        }
        let p = BUILTIN_PROTOCOLS[0].1;
        let no_k = p.replace("k = 3\n", "");
        assert!(
            Protocol::parse(&no_k, "p")
                .unwrap_err()
                .to_string()
                .contains("`k`")
        );
        let no_input = p.replace(r"Review: {input}\n{question}", "{question}");
        assert!(
            Protocol::parse(&no_input, "p")
                .unwrap_err()
                .to_string()
                .contains("{input}")
        );
        assert!(
            Protocol::load("no-such-protocol")
                .unwrap_err()
                .to_string()
                .contains("topk-predict-then-explain")
        );
        assert!(Task::load("/nowhere/task.toml").is_err());
    }
}
