//! Building a tokenizer from the `tokenizer.ggml.*` metadata of a GGUF file.
//!
//! The goal is llama.cpp's token ids exactly (tests hold both models to llama.cpp's output), so
//! each GGUF tokenizer family is rebuilt as the Hugging Face pipeline that computes the same
//! thing:
//! - `gpt2`: byte-level BPE from the stored merges, with the pre-tokenizer named by
//!   `tokenizer.ggml.pre`;
//! - `llama` (SentencePiece BPE, e.g. Gemma): llama.cpp repeatedly merges the adjacent pair whose
//!   concatenation is the highest-scoring vocabulary entry. A BPE whose merges are ranked by the
//!   score of their result does the same; unknown characters fall back to `<0xXX>` byte tokens.
//!
//! Control and user-defined tokens are matched in the raw text before anything else, as
//! llama.cpp does with `parse_special`.

use std::collections::HashMap;

use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{
    NormalizerWrapper, Prepend, Replace, Sequence as NormalizerSequence,
};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::TokenizerError;

/// Tokenizer description taken from GGUF metadata, as plain data (the runtime reads the file).
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer of `gpt2` models.
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    /// 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    /// `"left right"` pairs, in priority order (`gpt2` models).
    pub merges: Option<Vec<String>>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
}

const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// SentencePiece's visible space.
const SPM_SPACE: &str = "\u{2581}";

/// Pre-tokenizer names of `gpt2` models this crate reproduces.
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &[
    "default",
    "gpt-2",
    "gpt2",
    "smollm",
    "llama-bpe",
    "llama3",
    "qwen2",
];

/// Llama 3's split pattern (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's split pattern (llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn build_error(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build(e.to_string())
}

/// The Hugging Face tokenizer equivalent to llama.cpp's for this vocabulary.
pub(crate) fn build(vocab: &GgufVocab) -> Result<tokenizers::Tokenizer, TokenizerError> {
    if vocab.tokens.is_empty() {
        return Err(TokenizerError::Build("the GGUF vocabulary is empty".into()));
    }
    if let Some(types) = &vocab.token_types
        && types.len() != vocab.tokens.len()
    {
        return Err(TokenizerError::Build(format!(
            "{} token types for {} tokens",
            types.len(),
            vocab.tokens.len()
        )));
    }
    let ids: tokenizers::models::bpe::Vocab = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut tokenizer = match vocab.model.as_str() {
        "gpt2" => byte_level(vocab, ids)?,
        "llama" => sentencepiece(vocab, ids)?,
        other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
    };
    let type_of = |i: usize| vocab.token_types.as_ref().map_or(TYPE_NORMAL, |t| t[i]);
    let added: Vec<AddedToken> = vocab
        .tokens
        .iter()
        .enumerate()
        .filter(|&(i, _)| matches!(type_of(i), TYPE_CONTROL | TYPE_USER_DEFINED))
        .map(|(i, t)| AddedToken::from(t.clone(), type_of(i) == TYPE_CONTROL).normalized(false))
        .collect();
    tokenizer.add_tokens(&added);
    Ok(tokenizer)
}

fn byte_level(
    vocab: &GgufVocab,
    ids: tokenizers::models::bpe::Vocab,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let merges = vocab
        .merges
        .as_ref()
        .ok_or_else(|| {
            TokenizerError::Build("a gpt2 tokenizer needs tokenizer.ggml.merges".into())
        })?
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| TokenizerError::Build(format!("malformed merge `{m}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pre = vocab.pre.as_deref().unwrap_or("default");
    let split = |pattern: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
        Ok(PreTokenizerWrapper::Split(
            Split::new(
                SplitPattern::Regex(pattern.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(build_error)?,
        ))
    };
    // llama.cpp's Llama 3 and Qwen 2 tokenizers look a whole pre-token up before merging.
    let (pre_tokenizer, ignore_merges) = match pre {
        "default" | "gpt-2" | "gpt2" => (
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
            false,
        ),
        "smollm" => (
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
            ])),
            false,
        ),
        "llama-bpe" | "llama3" => (
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                split(LLAMA3_PATTERN)?,
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
            ])),
            true,
        ),
        "qwen2" => (
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                split(QWEN2_PATTERN)?,
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
            ])),
            false,
        ),
        other => {
            return Err(TokenizerError::UnsupportedPreTokenizer {
                name: other.to_string(),
                supported: SUPPORTED_PRE_TOKENIZERS.join(", "),
            });
        }
    };
    let bpe = BPE::builder()
        .vocab_and_merges(ids, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(build_error)?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    Ok(tokenizer)
}

fn sentencepiece(
    vocab: &GgufVocab,
    ids: tokenizers::models::bpe::Vocab,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let scores = vocab
        .scores
        .as_ref()
        .filter(|s| s.len() == vocab.tokens.len())
        .ok_or_else(|| {
            TokenizerError::Build(
                "a llama (SentencePiece) tokenizer needs one score per token".into(),
            )
        })?;
    let is_normal = |i: usize| {
        vocab
            .token_types
            .as_ref()
            .is_none_or(|t| t[i] == TYPE_NORMAL)
    };
    // Every split of a normal token into two vocabulary entries is a merge, ranked by the
    // token's score (higher first; ties by id for a deterministic order).
    let index: HashMap<&str, usize> = vocab
        .tokens
        .iter()
        .enumerate()
        .filter(|&(i, _)| is_normal(i))
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut candidates: Vec<(f32, usize, usize)> = Vec::new();
    for (&token, &id) in &index {
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if index.contains_key(left) && index.contains_key(right) {
                candidates.push((scores[id], id, split));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<(String, String)> = candidates
        .into_iter()
        .map(|(_, id, split)| {
            let (l, r) = vocab.tokens[id].split_at(split);
            (l.to_string(), r.to_string())
        })
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(ids, merges)
        .byte_fallback(true);
    if let Some(unk) = vocab.unk_id.and_then(|u| vocab.tokens.get(u as usize)) {
        builder = builder.unk_token(unk.clone());
    }
    let bpe = builder.build().map_err(build_error)?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    let replace = NormalizerWrapper::Replace(Replace::new(" ", SPM_SPACE).map_err(build_error)?);
    let prefix = vocab.add_space_prefix.unwrap_or(false);
    tokenizer.with_normalizer(Some(if prefix {
        NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
            NormalizerWrapper::Prepend(Prepend::new(SPM_SPACE.into())),
            replace,
        ]))
    } else {
        replace
    }));
    let mut decoders = vec![
        DecoderWrapper::Replace(Replace::new(SPM_SPACE, " ").map_err(build_error)?),
        DecoderWrapper::ByteFallback(ByteFallback::default()),
        DecoderWrapper::Fuse(Fuse::default()),
    ];
    if prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tokenizer.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
        decoders,
    ))));
    Ok(tokenizer)
}
