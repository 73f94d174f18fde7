//! Text to token ids (with character offsets) and back, for the models Glassbox loads, and
//! chat-template rendering.
//!
//! Attribution works on units of text (words, sentences, passages) mapped to tokens, so every
//! token carries the character span it came from. Tokenizers come from a Hugging Face
//! `tokenizer.json` or are rebuilt from GGUF metadata ([`GgufVocab`]); either way the ids must
//! be the ones the model was trained with, which tests check against llama.cpp and Hugging Face
//! on both default models. The crate knows nothing of tensors: the runtime reads the model
//! files and hands over plain data.

mod chat;
mod gguf;

use std::path::{Path, PathBuf};

pub use chat::{ChatMessage, ChatTemplate};
pub use gguf::{GgufVocab, SUPPORTED_PRE_TOKENIZERS};

/// Errors of building and running tokenizers and chat templates.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot build the tokenizer: {0}")]
    Build(String),
    #[error("tokenizer model `{0}` is not supported (GGUF tokenizers: gpt2, llama)")]
    UnsupportedModel(String),
    #[error("pre-tokenizer `{name}` is not supported; supported: {supported}")]
    UnsupportedPreTokenizer { name: String, supported: String },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("tokenizing failed: {0}")]
    Encode(String),
    #[error("token ids cannot be decoded: {0}")]
    Decode(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
}

/// Token ids of a text with the character span each came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    /// Half-open character ranges into the input, one per id (`(0, 0)` for an added BOS).
    /// A byte token of a multi-byte character spans the whole character.
    pub offsets: Vec<(usize, usize)>,
}

/// Token texts that end a turn or a document in common chat formats; those present in a
/// vocabulary stop generation along with EOS.
const END_OF_TURN: &[&str] = &[
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|endoftext|>",
    "<|end|>",
    "</s>",
    "<eos>",
];

/// A tokenizer with the special-token facts the runtime needs.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Cached: the `tokenizers` crate counts by cloning the whole vocabulary.
    vocab_size: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer[{} tokens]", self.vocab_size())
    }
}

impl Tokenizer {
    /// Rebuilds the tokenizer described by GGUF metadata.
    pub fn from_gguf(vocab: &GgufVocab) -> Result<Self, TokenizerError> {
        let inner = gguf::build(vocab)?;
        let valid = |id: Option<u32>| id.filter(|&i| (i as usize) < vocab.tokens.len());
        Ok(Self {
            vocab_size: inner.get_vocab_size(true),
            inner,
            bos: valid(vocab.bos_id),
            eos: valid(vocab.eos_id),
            add_bos: vocab.add_bos.unwrap_or(false) && valid(vocab.bos_id).is_some(),
        })
    }

    /// Loads `tokenizer.json`, with BOS/EOS and whether to add BOS from `tokenizer_config.json`
    /// when given (else from the tokenizer's own post-processor).
    pub fn from_hf_files(
        tokenizer_json: &Path,
        config: Option<&Path>,
    ) -> Result<Self, TokenizerError> {
        let file_error = |path: &Path, message: String| TokenizerError::File {
            path: path.to_path_buf(),
            message,
        };
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json)
            .map_err(|e| file_error(tokenizer_json, e.to_string()))?;
        let config: serde_json::Value = match config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| file_error(path, e.to_string()))?;
                serde_json::from_str(&text)
                    .map_err(|e| file_error(path, format!("not valid JSON: {e}")))?
            }
            None => serde_json::Value::Null,
        };
        // A special token is written as a string or as {"content": ...}.
        let token_id = |key: &str| -> Option<u32> {
            let v = &config[key];
            let text = v.as_str().or_else(|| v["content"].as_str())?;
            inner.token_to_id(text)
        };
        let bos = token_id("bos_token");
        let eos = token_id("eos_token");
        let add_bos = match config["add_bos_token"].as_bool() {
            Some(flag) => flag && bos.is_some(),
            // Without a config, see whether the post-processor puts BOS in front.
            None => match (bos, inner.encode("a", true)) {
                (Some(b), Ok(e)) => e.get_ids().first() == Some(&b),
                _ => false,
            },
        };
        Ok(Self {
            vocab_size: inner.get_vocab_size(true),
            inner,
            bos,
            eos,
            add_bos,
        })
    }

    /// Tokenizes `text`. Special tokens written in it (e.g. `<|im_start|>`) are recognised, as
    /// in llama.cpp with `parse_special`; `add_bos` puts BOS in front.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Encoding, TokenizerError> {
        let encoded = self
            .inner
            .encode_char_offsets(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = Vec::with_capacity(encoded.len() + 1);
        let mut offsets = Vec::with_capacity(encoded.len() + 1);
        if add_bos && let Some(bos) = self.bos {
            ids.push(bos);
            offsets.push((0, 0));
        }
        ids.extend_from_slice(encoded.get_ids());
        offsets.extend_from_slice(encoded.get_offsets());
        Ok(Encoding { ids, offsets })
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size()) {
            return Err(TokenizerError::Decode(format!(
                "id {bad} is outside the vocabulary"
            )));
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The vocabulary entry of `id` as stored (e.g. `Ġthe`, `▁the`, `<0x0A>`).
    pub fn token_str(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Id of a vocabulary entry, written as stored.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether prompts should start with BOS (Gemma: yes; SmolLM2: no).
    pub fn wants_bos(&self) -> bool {
        self.add_bos
    }

    /// Ids that end a generation: EOS and the end-of-turn tokens the vocabulary has.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos.into_iter().collect();
        for t in END_OF_TURN {
            if let Some(id) = self.inner.token_to_id(t)
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
        ids
    }

    /// Writes the tokenizer as a `tokenizer.json` (so a GGUF model can be exported to a
    /// Hugging Face style directory).
    pub fn save_json(&self, path: &Path) -> Result<(), TokenizerError> {
        self.inner
            .save(path, false)
            .map_err(|e| TokenizerError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level vocabulary over "a", "b", " " with merges "a b" → "ab", "Ġ ab" → "Ġab".
    fn tiny_gpt2() -> GgufVocab {
        let tokens = [
            "<s>",
            "</s>",
            "a",
            "b",
            "Ġ",
            "ab",
            "Ġab",
            "Ã",
            "©",
            "<|im_end|>",
        ];
        GgufVocab {
            model: "gpt2".into(),
            pre: Some("default".into()),
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            token_types: Some(vec![3, 3, 1, 1, 1, 1, 1, 1, 1, 3]),
            merges: Some(vec!["a b".into(), "Ġ ab".into()]),
            bos_id: Some(0),
            eos_id: Some(1),
            add_bos: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn byte_level_bpe_merges_and_keeps_character_offsets() {
        let t = Tokenizer::from_gguf(&tiny_gpt2()).unwrap();
        let e = t.encode("ab ab", true).unwrap();
        assert_eq!(e.ids, vec![0, 5, 6]);
        assert_eq!(e.offsets, vec![(0, 0), (0, 2), (2, 5)]);
        assert_eq!(t.decode(&e.ids[1..]).unwrap(), "ab ab");
        // A control token in the text is one token.
        let e = t.encode("ab<|im_end|>", false).unwrap();
        assert_eq!(e.ids, vec![5, 9]);
        assert!(t.wants_bos());
        assert_eq!(t.stop_ids(), vec![1, 9]);
        // "é" is two bytes (Ã ©): both byte tokens span the one character.
        let e = t.encode("é", false).unwrap();
        assert_eq!(e.ids, vec![7, 8]);
        assert_eq!(e.offsets, vec![(0, 1), (0, 1)]);
    }

    #[test]
    fn sentencepiece_merges_follow_scores_and_fall_back_to_bytes() {
        // "▁ab" can form as "▁a"+"b" or "▁"+"ab"; scores decide which pair merges first.
        let mut tokens: Vec<String> = [
            "<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "▁ab", "\n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut types = vec![2, 3, 3, 1, 1, 1, 1, 1, 1, 4];
        let mut scores = vec![0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -5.0, -4.0, -0.5, 0.0];
        for byte in 0..=255u8 {
            tokens.push(format!("<0x{byte:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        let vocab = GgufVocab {
            model: "llama".into(),
            tokens,
            scores: Some(scores),
            token_types: Some(types),
            unk_id: Some(0),
            bos_id: Some(1),
            eos_id: Some(2),
            add_bos: Some(true),
            add_space_prefix: Some(false),
            ..Default::default()
        };
        let t = Tokenizer::from_gguf(&vocab).unwrap();
        assert_eq!(t.encode(" ab", false).unwrap().ids, vec![8]);
        assert_eq!(t.encode("ba", false).unwrap().ids, vec![5, 4]);
        // "z" is not in the vocabulary: its byte 0x7A.
        let z = t.encode("z\n", true).unwrap();
        assert_eq!(z.ids, vec![1, 10 + 0x7A, 9]);
        assert_eq!(t.decode(&z.ids[1..]).unwrap(), "z\n");
        assert_eq!(t.decode(&[8]).unwrap(), " ab");
    }

    #[test]
    fn bad_vocabularies_are_refused_with_reasons() {
        let mut v = tiny_gpt2();
        v.pre = Some("mystery".into());
        let err = Tokenizer::from_gguf(&v).err().unwrap().to_string();
        assert!(err.contains("mystery") && err.contains("smollm"), "{err}");
        let mut v = tiny_gpt2();
        v.model = "bert".into();
        assert!(Tokenizer::from_gguf(&v).is_err());
        let mut v = tiny_gpt2();
        v.token_types = Some(vec![1]);
        assert!(Tokenizer::from_gguf(&v).is_err());
        let t = Tokenizer::from_gguf(&tiny_gpt2()).unwrap();
        assert!(t.decode(&[99]).is_err());
    }

    #[test]
    fn saved_json_loads_back_identically() {
        let t = Tokenizer::from_gguf(&tiny_gpt2()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        t.save_json(&path).unwrap();
        let config = dir.path().join("tokenizer_config.json");
        std::fs::write(
            &config,
            r#"{"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true}"#,
        )
        .unwrap();
        let back = Tokenizer::from_hf_files(&path, Some(&config)).unwrap();
        for text in ["ab ab", "é<|im_end|>b"] {
            assert_eq!(
                back.encode(text, true).unwrap(),
                t.encode(text, true).unwrap()
            );
        }
        assert_eq!(
            (back.bos_id(), back.eos_id(), back.wants_bos()),
            (Some(0), Some(1), true)
        );
        let err = Tokenizer::from_hf_files(&dir.path().join("missing.json"), None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing.json"));
    }
}
