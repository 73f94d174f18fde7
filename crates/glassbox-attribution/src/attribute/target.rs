//! Targets: what number about the model's output an attribution explains.
//!
//! A target is a formula over the logits at the answer's positions (the positions that predict
//! the answer's tokens). The same formula is evaluated two ways — on the engine's readouts for
//! perturbation methods, and on a differentiable logits tensor for gradient methods — so every
//! method explains exactly the same number.

use candle_core::{D, Tensor};
use glassbox_report::Target;
use glassbox_runtime::Model;

use crate::AttributionError;
use crate::engine::Readout;

/// Target kinds by name, with what they are (for `glassbox list targets`).
pub const TARGET_KINDS: &[(&str, &str)] = &[
    (
        "logprob",
        "log-probability of the target token (per token of a continuation, plus their sum)",
    ),
    (
        "prob",
        "probability of the target token (per token of a continuation)",
    ),
    (
        "logit",
        "raw logit of the target token (per token of a continuation)",
    ),
    (
        "contrast:A,B",
        "why A and not B: log p(A) - log p(B) for the next token (= logit(A) - logit(B)); A and B single tokens, spaces kept",
    ),
    (
        "label:A,B,...",
        "verbalizer classification: probability of each label among the labels for the next token",
    ),
];

/// The target as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Prob,
    LogProb,
    Logit,
    Contrast(String, String),
    Label(Vec<String>),
}

impl TargetSpec {
    pub fn parse(spec: &str) -> Result<Self, AttributionError> {
        let list = |rest: &str| -> Vec<String> { rest.split(',').map(str::to_string).collect() };
        let bad = |why: String| {
            AttributionError::BadInput(format!(
                "target `{spec}`: {why}; targets: {}",
                TARGET_KINDS
                    .iter()
                    .map(|t| t.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        match spec {
            "prob" => Ok(TargetSpec::Prob),
            "logprob" => Ok(TargetSpec::LogProb),
            "logit" => Ok(TargetSpec::Logit),
            s if s.starts_with("contrast:") => match list(&s["contrast:".len()..]).as_slice() {
                [a, b] if !a.is_empty() && !b.is_empty() && a != b => {
                    Ok(TargetSpec::Contrast(a.clone(), b.clone()))
                }
                _ => Err(bad("a contrast names two different tokens, A,B".into())),
            },
            s if s.starts_with("label:") => {
                let labels = list(&s["label:".len()..]);
                if labels.len() < 2 || labels.iter().any(String::is_empty) {
                    return Err(bad("a verbalizer names at least two labels".into()));
                }
                Ok(TargetSpec::Label(labels))
            }
            _ => Err(bad("unknown target".into())),
        }
    }

    /// The target written as [`TargetSpec::parse`] reads it (spaces inside names kept).
    pub fn spec(&self) -> String {
        match self {
            TargetSpec::Prob => "prob".into(),
            TargetSpec::LogProb => "logprob".into(),
            TargetSpec::Logit => "logit".into(),
            TargetSpec::Contrast(a, b) => format!("contrast:{a},{b}"),
            TargetSpec::Label(labels) => format!("label:{}", labels.join(",")),
        }
    }

    /// Whether the target is about the next token only (contrasts and labels).
    pub fn next_token_only(&self) -> bool {
        matches!(self, TargetSpec::Contrast(..) | TargetSpec::Label(_))
    }
}

/// The one token `text` tokenizes to, or a clear error.
pub fn single_token(model: &Model, text: &str, role: &str) -> Result<u32, AttributionError> {
    let ids = model
        .tokenizer()
        .encode(text, false)
        .map_err(glassbox_runtime::RuntimeError::from)?
        .ids;
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => Err(AttributionError::BadInput(format!(
            "the {role} `{text}` has no tokens"
        ))),
        many => {
            let pieces: Vec<String> = many
                .iter()
                .map(|&t| format!("{:?}", model.tokenizer().decode(&[t]).unwrap_or_default()))
                .collect();
            Err(AttributionError::BadInput(format!(
                "the {role} {text:?} is {} tokens ({}); it must be a single token — spaces count \
                 (e.g. \" Paris\" and \"Paris\" differ), so try another spelling or a shorter word",
                many.len(),
                pieces.join(" ")
            )))
        }
    }
}

/// One target as a formula over the logits at answer position `pos`.
#[derive(Debug, Clone, PartialEq)]
pub enum Formula {
    LogProb {
        pos: usize,
        token: u32,
    },
    Prob {
        pos: usize,
        token: u32,
    },
    Logit {
        pos: usize,
        token: u32,
    },
    /// `logit(a) - logit(b)`, which equals `ln p(a) - ln p(b)`.
    Contrast {
        pos: usize,
        a: u32,
        b: u32,
    },
    /// Probability of label `k` among `labels` (a softmax over their logits).
    Label {
        pos: usize,
        labels: Vec<u32>,
        k: usize,
    },
    /// `Σ_j ln p(answer_j)`.
    SumLogProb {
        answer: Vec<u32>,
    },
}

impl Formula {
    /// Tokens whose logits the formula reads at each of `positions` answer positions.
    fn queries(&self, queries: &mut [Vec<u32>]) {
        let mut add = |pos: usize, t: u32| {
            if !queries[pos].contains(&t) {
                queries[pos].push(t);
            }
        };
        match self {
            Formula::LogProb { pos, token }
            | Formula::Prob { pos, token }
            | Formula::Logit { pos, token } => add(*pos, *token),
            Formula::Contrast { pos, a, b } => {
                add(*pos, *a);
                add(*pos, *b);
            }
            Formula::Label { pos, labels, .. } => labels.iter().for_each(|&t| add(*pos, t)),
            Formula::SumLogProb { answer } => {
                answer.iter().enumerate().for_each(|(j, &t)| add(j, t))
            }
        }
    }

    /// Whether the answer's log-probabilities alone determine the formula.
    fn needs_only_answer_logprobs(&self, answer: &[u32]) -> bool {
        match self {
            Formula::LogProb { pos, token } | Formula::Prob { pos, token } => {
                answer[*pos] == *token
            }
            Formula::SumLogProb { .. } => true,
            _ => false,
        }
    }
}

/// The targets of one attribution: formulas, how the engine reads them, and their labels.
#[derive(Debug, Clone)]
pub struct Targets {
    pub formulas: Vec<Formula>,
    pub labels: Vec<Target>,
    pub readout: Readout,
    pub answer: Vec<u32>,
}

impl Targets {
    pub fn new(formulas: Vec<Formula>, labels: Vec<Target>, answer: Vec<u32>) -> Self {
        let readout = if formulas
            .iter()
            .all(|f| f.needs_only_answer_logprobs(&answer))
        {
            Readout::AnswerLogprobs
        } else {
            let mut queries: Vec<Vec<u32>> = answer.iter().map(|&t| vec![t]).collect();
            formulas.iter().for_each(|f| f.queries(&mut queries));
            Readout::Logits(queries)
        };
        Self {
            formulas,
            labels,
            readout,
            answer,
        }
    }

    /// Target values from one engine readout (layout: see [`Readout`]).
    pub fn from_readout(&self, values: &[f32]) -> Vec<f64> {
        let at = |pos: usize, token: u32| -> (f64, f64) {
            match &self.readout {
                Readout::AnswerLogprobs => {
                    debug_assert_eq!(self.answer[pos], token);
                    (values[pos] as f64, f64::NAN)
                }
                Readout::Logits(queries) => {
                    let start: usize = queries[..pos].iter().map(|q| q.len() + 1).sum();
                    let k = queries[pos]
                        .iter()
                        .position(|&t| t == token)
                        .expect("queried");
                    let (lse, logit) = (values[start] as f64, values[start + 1 + k] as f64);
                    (logit - lse, logit)
                }
            }
        };
        self.formulas
            .iter()
            .map(|f| match f {
                Formula::LogProb { pos, token } => at(*pos, *token).0,
                Formula::Prob { pos, token } => at(*pos, *token).0.exp(),
                Formula::Logit { pos, token } => at(*pos, *token).1,
                Formula::Contrast { pos, a, b } => at(*pos, *a).1 - at(*pos, *b).1,
                Formula::Label { pos, labels, k } => {
                    let logits: Vec<f64> = labels.iter().map(|&t| at(*pos, t).1).collect();
                    softmax_at(&logits, *k)
                }
                Formula::SumLogProb { answer } => {
                    answer.iter().enumerate().map(|(j, &t)| at(j, t).0).sum()
                }
            })
            .collect()
    }

    /// Target `t` as a differentiable scalar of `logits: [answer positions, vocab]` (row `j`
    /// predicts answer token `j`).
    pub fn on_logits(&self, t: usize, logits: &Tensor) -> Result<Tensor, candle_core::Error> {
        let row = |pos: usize| logits.get(pos);
        let logit = |pos: usize, token: u32| row(pos)?.get(token as usize);
        let log_prob = |pos: usize, token: u32| -> Result<Tensor, candle_core::Error> {
            let r = row(pos)?;
            let max = r.max_keepdim(D::Minus1)?.detach();
            let lse = (r.broadcast_sub(&max)?.exp()?.sum_all()?.log()? + max.squeeze(0)?)?;
            r.get(token as usize)? - lse
        };
        match &self.formulas[t] {
            Formula::LogProb { pos, token } => log_prob(*pos, *token),
            Formula::Prob { pos, token } => log_prob(*pos, *token)?.exp(),
            Formula::Logit { pos, token } => logit(*pos, *token),
            Formula::Contrast { pos, a, b } => logit(*pos, *a)? - logit(*pos, *b)?,
            Formula::Label { pos, labels, k } => {
                let picked = Tensor::stack(
                    &labels
                        .iter()
                        .map(|&l| logit(*pos, l))
                        .collect::<Result<Vec<_>, _>>()?,
                    0,
                )?;
                let max = picked.max_keepdim(0)?.detach();
                let e = picked.broadcast_sub(&max)?.exp()?;
                e.get(*k)? / e.sum_all()?
            }
            Formula::SumLogProb { answer } => {
                let mut total = log_prob(0, answer[0])?;
                for (j, &tok) in answer.iter().enumerate().skip(1) {
                    total = (total + log_prob(j, tok)?)?;
                }
                Ok(total)
            }
        }
    }

    /// The answer position each target reads (`None`: several, as for a sum).
    pub fn position(&self, t: usize) -> Option<usize> {
        match &self.formulas[t] {
            Formula::LogProb { pos, .. }
            | Formula::Prob { pos, .. }
            | Formula::Logit { pos, .. }
            | Formula::Contrast { pos, .. }
            | Formula::Label { pos, .. } => Some(*pos),
            Formula::SumLogProb { .. } => None,
        }
    }
}

fn softmax_at(x: &[f64], k: usize) -> f64 {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = x.iter().map(|v| (v - max).exp()).sum();
    (x[k] - max).exp() / total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_unknown_ones_list_the_valid_names() {
        assert_eq!(TargetSpec::parse("logit").unwrap(), TargetSpec::Logit);
        assert_eq!(
            TargetSpec::parse("contrast: Paris, London").unwrap(),
            TargetSpec::Contrast(" Paris".into(), " London".into())
        );
        assert_eq!(
            TargetSpec::parse("label: positive, negative").unwrap(),
            TargetSpec::Label(vec![" positive".into(), " negative".into()])
        );
        for bad in [
            "probability",
            "contrast:A",
            "contrast:A,A",
            "label:yes",
            "label:a,",
        ] {
            let err = TargetSpec::parse(bad).unwrap_err().to_string();
            assert!(err.contains("logprob, prob, logit"), "{err}");
        }
    }

    #[test]
    fn readout_layout_gives_logprobs_logits_contrasts_and_labels() {
        let answer = vec![5, 7];
        let formulas = vec![
            Formula::SumLogProb {
                answer: answer.clone(),
            },
            Formula::Logit { pos: 1, token: 7 },
            Formula::Contrast { pos: 0, a: 5, b: 9 },
            Formula::Label {
                pos: 0,
                labels: vec![5, 9],
                k: 1,
            },
        ];
        let targets = Targets::new(formulas, Vec::new(), answer);
        assert_eq!(targets.readout, Readout::Logits(vec![vec![5, 9], vec![7]]));
        // Position 0: lse 2, logits 1 (token 5), -1 (token 9); position 1: lse 3, logit 0.5.
        let v = targets.from_readout(&[2.0, 1.0, -1.0, 3.0, 0.5]);
        assert!((v[0] - ((1.0 - 2.0) + (0.5 - 3.0))).abs() < 1e-9);
        assert!((v[1] - 0.5).abs() < 1e-9);
        assert!((v[2] - 2.0).abs() < 1e-9);
        assert!((v[3] - 1.0 / (1.0 + 2f64.exp())).abs() < 1e-9);
        let cheap = Targets::new(
            vec![Formula::Prob { pos: 0, token: 5 }],
            Vec::new(),
            vec![5],
        );
        assert_eq!(cheap.readout, Readout::AnswerLogprobs);
        assert!((cheap.from_readout(&[-0.5])[0] - (-0.5f64).exp()).abs() < 1e-12);
    }
}
