//! Targets: what number about the model's output an attribution explains.
//!
//! A target is a formula over the logits at the answer's positions (the positions that predict
//! the answer's tokens). The same formula is evaluated two ways — on the engine's readouts for
//! perturbation methods, and on a differentiable logits tensor for gradient methods — so every
//! method explains exactly the same number.

use glassbox_report::Target;
use glassbox_runtime::{Array, Model, log_softmax_at};

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

    /// Target `t`'s value on `logits` (`[answer positions, vocab]`, row `j` predicting answer
    /// token `j`) and its gradient with respect to them (same layout), in closed form: the
    /// gradient methods seed the runtime's backward with it.
    pub fn value_and_gradient(&self, t: usize, logits: &Array) -> (f64, Vec<f32>) {
        let vocab = logits.shape[1];
        let mut grad = vec![0f32; logits.data.len()];
        // ln p(token) at `pos`, adding `scale · ∂/∂logits` into the gradient.
        let log_prob = |pos: usize, token: u32, scale: f64, grad: &mut [f32]| -> f64 {
            let row = logits.row(pos);
            let lse = log_sum_exp(row) as f64;
            let g = &mut grad[pos * vocab..(pos + 1) * vocab];
            for (gv, &l) in g.iter_mut().zip(row) {
                *gv -= (scale * (l as f64 - lse).exp()) as f32;
            }
            g[token as usize] += scale as f32;
            row[token as usize] as f64 - lse
        };
        let logit = |pos: usize, token: u32| logits.row(pos)[token as usize] as f64;
        let value = match &self.formulas[t] {
            Formula::LogProb { pos, token } => log_prob(*pos, *token, 1.0, &mut grad),
            Formula::Prob { pos, token } => {
                let row = logits.row(*pos);
                let p = (row[*token as usize] as f64 - log_sum_exp(row) as f64).exp();
                log_prob(*pos, *token, p, &mut grad);
                p
            }
            Formula::Logit { pos, token } => {
                grad[pos * vocab + *token as usize] = 1.0;
                logit(*pos, *token)
            }
            Formula::Contrast { pos, a, b } => {
                grad[pos * vocab + *a as usize] += 1.0;
                grad[pos * vocab + *b as usize] -= 1.0;
                logit(*pos, *a) - logit(*pos, *b)
            }
            Formula::Label { pos, labels, k } => {
                let picked: Vec<f64> = labels.iter().map(|&l| logit(*pos, l)).collect();
                let q: Vec<f64> = (0..labels.len()).map(|j| softmax_at(&picked, j)).collect();
                for (j, &l) in labels.iter().enumerate() {
                    let delta = if j == *k { 1.0 } else { 0.0 };
                    grad[pos * vocab + l as usize] += (q[*k] * (delta - q[j])) as f32;
                }
                q[*k]
            }
            Formula::SumLogProb { answer } => answer
                .iter()
                .enumerate()
                .map(|(j, &tok)| log_prob(j, tok, 1.0, &mut grad))
                .sum(),
        };
        (value, grad)
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

/// `ln Σ e^{row}` (the runtime's stable log-softmax, read backwards).
fn log_sum_exp(row: &[f32]) -> f32 {
    row[0] - log_softmax_at(row, 0)
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
    fn closed_form_gradients_equal_finite_differences() {
        let vocab = 6;
        let logits = Array::new(
            vec![2, vocab],
            vec![
                0.3, -1.2, 2.0, 0.1, -0.4, 0.9, 1.1, 0.0, -2.0, 0.5, 0.7, -0.3,
            ],
        );
        let answer = vec![2, 4];
        let formulas = vec![
            Formula::LogProb { pos: 1, token: 4 },
            Formula::Prob { pos: 0, token: 5 },
            Formula::Logit { pos: 0, token: 1 },
            Formula::Contrast { pos: 1, a: 0, b: 3 },
            Formula::Label {
                pos: 0,
                labels: vec![2, 5, 1],
                k: 1,
            },
            Formula::SumLogProb {
                answer: answer.clone(),
            },
        ];
        let targets = Targets::new(formulas, Vec::new(), answer);
        for t in 0..targets.formulas.len() {
            let (value, grad) = targets.value_and_gradient(t, &logits);
            for i in 0..logits.data.len() {
                let bumped = |h: f32| {
                    let mut data = logits.data.clone();
                    data[i] += h;
                    targets
                        .value_and_gradient(t, &Array::new(logits.shape.clone(), data))
                        .0
                };
                let numeric = (bumped(1e-3) - bumped(-1e-3)) / 2e-3;
                assert!(
                    (grad[i] as f64 - numeric).abs() < 1e-3,
                    "target {t}, logit {i}"
                );
            }
            // The value agrees with the engine's readout of the same logits.
            let Readout::Logits(queries) = &targets.readout else {
                unreachable!("logits and labels are read")
            };
            let mut readout = Vec::new();
            for (p, q) in queries.iter().enumerate() {
                let row = logits.row(p);
                readout.push(log_sum_exp(row));
                readout.extend(q.iter().map(|&tok| row[tok as usize]));
            }
            assert!(
                (targets.from_readout(&readout)[t] - value).abs() < 1e-5,
                "target {t}"
            );
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
