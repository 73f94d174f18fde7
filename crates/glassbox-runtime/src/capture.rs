//! Named capture points of the instrumented forward pass, and the plain arrays they produce.
//!
//! Every internal activation has one stable name, used alike by the library, the CLI flags and
//! the JSON output (after TransformerLens): `blocks.3.attn.pattern`, `blocks.0.resid_pre`,
//! `final_norm`. A pattern may use `*` for the layer: `blocks.*.attn.pattern`.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::RuntimeError;

/// One capture point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// Residual stream entering block `l`, `[tokens, hidden]` (block 0: the input embeddings).
    ResidPre(usize),
    /// Residual stream after the attention sub-block of block `l`.
    ResidMid(usize),
    /// Residual stream leaving block `l`.
    ResidPost(usize),
    /// Attention probabilities of block `l`, `[heads, tokens, keys]` (keys include the cache).
    AttnPattern(usize),
    /// What the attention sub-block adds to the residual stream, `[tokens, hidden]`.
    AttnOut(usize),
    /// What the MLP sub-block adds to the residual stream, `[tokens, hidden]`.
    MlpOut(usize),
    /// Hidden states after the final norm (the LM head's input), `[tokens, hidden]`.
    FinalNorm,
}

/// The names a user can ask for, with what they hold (for `--help` and `list` output).
pub const HOOK_NAMES: &[(&str, &str)] = &[
    (
        "blocks.L.resid_pre",
        "residual stream entering block L [tokens, hidden]",
    ),
    (
        "blocks.L.resid_mid",
        "residual stream after block L's attention [tokens, hidden]",
    ),
    (
        "blocks.L.resid_post",
        "residual stream leaving block L [tokens, hidden]",
    ),
    (
        "blocks.L.attn.pattern",
        "attention probabilities of block L [heads, tokens, keys]",
    ),
    (
        "blocks.L.attn.out",
        "attention output added to the residual stream [tokens, hidden]",
    ),
    (
        "blocks.L.mlp.out",
        "MLP output added to the residual stream [tokens, hidden]",
    ),
    (
        "final_norm",
        "hidden states after the final norm, input of the LM head [tokens, hidden]",
    ),
];

impl Hook {
    /// The stable name of this capture point.
    pub fn name(&self) -> String {
        match self {
            Hook::ResidPre(l) => format!("blocks.{l}.resid_pre"),
            Hook::ResidMid(l) => format!("blocks.{l}.resid_mid"),
            Hook::ResidPost(l) => format!("blocks.{l}.resid_post"),
            Hook::AttnPattern(l) => format!("blocks.{l}.attn.pattern"),
            Hook::AttnOut(l) => format!("blocks.{l}.attn.out"),
            Hook::MlpOut(l) => format!("blocks.{l}.mlp.out"),
            Hook::FinalNorm => "final_norm".to_string(),
        }
    }

    /// Parses a name or a `*` pattern into the hooks it names, for a model of `layers` blocks.
    pub fn parse(spec: &str, layers: usize) -> Result<Vec<Hook>, RuntimeError> {
        let bad = |why: String| RuntimeError::BadHook {
            spec: spec.to_string(),
            why,
        };
        let spec_trim = spec.trim();
        if spec_trim == "final_norm" {
            return Ok(vec![Hook::FinalNorm]);
        }
        let rest = spec_trim
            .strip_prefix("blocks.")
            .ok_or_else(|| bad("names start with `blocks.` or are `final_norm`".into()))?;
        let (layer, point) = rest
            .split_once('.')
            .ok_or_else(|| bad("expected blocks.LAYER.POINT".into()))?;
        let make: fn(usize) -> Hook = match point {
            "resid_pre" => Hook::ResidPre,
            "resid_mid" => Hook::ResidMid,
            "resid_post" => Hook::ResidPost,
            "attn.pattern" => Hook::AttnPattern,
            "attn.out" => Hook::AttnOut,
            "mlp.out" => Hook::MlpOut,
            other => return Err(bad(format!("unknown capture point `{other}`"))),
        };
        if layer == "*" {
            return Ok((0..layers).map(make).collect());
        }
        let l: usize = layer
            .parse()
            .map_err(|_| bad(format!("`{layer}` is not a layer number or `*`")))?;
        if l >= layers {
            return Err(bad(format!("the model has layers 0..{}", layers - 1)));
        }
        Ok(vec![make(l)])
    }

    pub(crate) fn layer(&self) -> Option<usize> {
        match *self {
            Hook::ResidPre(l)
            | Hook::ResidMid(l)
            | Hook::ResidPost(l)
            | Hook::AttnPattern(l)
            | Hook::AttnOut(l)
            | Hook::MlpOut(l) => Some(l),
            Hook::FinalNorm => None,
        }
    }
}

/// What a forward call keeps besides logits.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub hooks: BTreeSet<Hook>,
    /// Return each row's extended KV cache (to continue it later).
    pub kv: bool,
}

impl Capture {
    pub fn none() -> Self {
        Self::default()
    }

    /// Only the KV cache.
    pub fn kv() -> Self {
        Self {
            hooks: BTreeSet::new(),
            kv: true,
        }
    }

    /// Captures the hooks named by `specs` (names or `*` patterns).
    pub fn parse<S: AsRef<str>>(specs: &[S], layers: usize) -> Result<Self, RuntimeError> {
        let mut hooks = BTreeSet::new();
        for s in specs {
            hooks.extend(Hook::parse(s.as_ref(), layers)?);
        }
        Ok(Self { hooks, kv: false })
    }

    pub fn with(mut self, hook: Hook) -> Self {
        self.hooks.insert(hook);
        self
    }

    pub(crate) fn wants(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    pub(crate) fn check_layers(&self, layers: usize) -> Result<(), RuntimeError> {
        match self
            .hooks
            .iter()
            .find(|h| h.layer().is_some_and(|l| l >= layers))
        {
            Some(h) => Err(RuntimeError::BadHook {
                spec: h.name(),
                why: format!("the model has layers 0..{}", layers - 1),
            }),
            None => Ok(()),
        }
    }
}

/// A dense f32 array with its shape (row-major): how activations leave the runtime.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Array {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// Row `i` along the first axis.
    pub fn row(&self, i: usize) -> &[f32] {
        let width: usize = self.shape[1..].iter().product();
        &self.data[i * width..(i + 1) * width]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_patterns_expand() {
        for h in [
            Hook::ResidPre(3),
            Hook::AttnPattern(0),
            Hook::MlpOut(2),
            Hook::FinalNorm,
        ] {
            assert_eq!(Hook::parse(&h.name(), 4).unwrap(), vec![h]);
        }
        assert_eq!(Hook::parse("blocks.*.attn.pattern", 3).unwrap().len(), 3);
        for bad in [
            "blocks.9.resid_pre",
            "blocks.x.resid_pre",
            "blocks.1.nope",
            "logits",
        ] {
            assert!(Hook::parse(bad, 4).is_err(), "{bad}");
        }
        let c = Capture::parse(&["blocks.*.resid_post", "final_norm"], 2).unwrap();
        assert_eq!(c.hooks.len(), 3);
    }
}
