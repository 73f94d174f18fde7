//! Token-, word- and sentence-level attribution of a model's output to its input text: the
//! question inseq and Captum answer ("which input tokens drove this prediction?"), with every
//! method family on one engine.
//!
//! - The input is tokenized once; units (tokens, words, sentences, custom spans) are runs of
//!   those tokens, so every level describes the same model input.
//! - The output is the next token (predicted), a given continuation (teacher-forced), or a
//!   greedy generation; targets are formulas over the logits at the answer's positions
//!   ([`target`]), shared by all methods.
//! - Perturbation methods play a coalition game on the evaluation engine (prefix trie, KV
//!   reuse, batching, memo); gradient methods differentiate the real model with respect to its
//!   input embeddings; attention methods read captured attention patterns.

mod attention;
mod gradient;
mod rescore;
mod target;
mod units;

use std::collections::BTreeMap;
use std::time::Instant;

use glassbox_report::{
    ATTRIBUTE_SCHEMA, ATTRIBUTION_SCHEMA, Aggregation, AnswerToken, AttributeReport, Attribution,
    Cost, MethodInfo, RequestRecord, Target, ViewSettings,
};
use glassbox_runtime::{Capture, GenerateOptions, Hook, LogitsAt, Model, Row, Sampling, argmax};

pub use attention::{AttentionMethod, attention_rows};
pub use gradient::{Baseline, GradientMethod, parse_point};
pub use rescore::{Rescorer, SENSITIVITY_RADIUS, Sensitivity, gradient_sensitivity};
pub use target::{Formula, TARGET_KINDS, TargetSpec, Targets};
pub use units::{InputUnits, UNIT_LEVELS, UnitLevel};

use crate::engine::{Engine, TokenSegment};
use crate::methods::{Estimate, METHODS, Method, estimate};
use crate::{AttributionError, Coalition, Game, Perturbation};

/// Integrated-gradients steps when not given. The default baseline is the padding token's
/// embedding, not zeros: on RMS-normed models the path from all-zero embeddings crosses the
/// region where the norm rescales tiny inputs to full size, where the integrand swings
/// sharply, and the completeness gap stays large (SmolLM2, "The capital of France is": 32
/// steps leave a gap of 4.9 of a 12.4 change from zeros, 128 steps 1.0; from pad, 128 steps
/// 0.09).
pub const DEFAULT_IG_STEPS: usize = 32;
/// SmoothGrad's noisy samples when not given.
pub const DEFAULT_SMOOTHGRAD_SAMPLES: usize = 16;
/// SmoothGrad's noise, as a fraction of the range of the input embeddings (the paper finds
/// 10-20% works best).
pub const DEFAULT_SMOOTHGRAD_NOISE: f64 = 0.1;
/// Longest greedy generation of `--generate` when not given.
pub const DEFAULT_GENERATE_TOKENS: usize = 24;

/// Gradient and attention methods by name, with what they do (the perturbation methods are
/// [`METHODS`]).
pub const MODEL_METHODS: &[(&str, &str)] = &[
    (
        "saliency",
        "gradient: L2 norm of the gradient at each input embedding (unsigned)",
    ),
    (
        "gradxinput",
        "gradient: gradient · input embedding (signed)",
    ),
    (
        "ig",
        "gradient: integrated gradients from a zero/pad/unk baseline, with the completeness gap",
    ),
    (
        "smoothgrad",
        "gradient: norm of the gradient averaged over Gaussian-noised embeddings",
    ),
    (
        "layer_gradxact",
        "gradient: layer gradient × activation at a capture point (--at blocks.L.resid_pre, resid_mid, resid_post, attn.out, mlp.out)",
    ),
    (
        "layer_ig",
        "gradient: layer integrated gradients in the residual stream at --at blocks.L.resid_pre/resid_mid/resid_post, from the baseline input's stream",
    ),
    (
        "attgrad",
        "gradient: attention × gradient at one layer (--layer, default the last): each attention edge's first-order share, summed into the token it reads",
    ),
    (
        "attention",
        "attention: one layer's (default last) attention from the predicting position, one head or the mean",
    ),
    (
        "rollout",
        "attention: attention rollout over all layers (residual-mixed)",
    ),
];

/// The method families of `attribute`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenMethod {
    Perturbation(Method),
    Gradient(GradientMethod),
    Attention(AttentionMethod),
}

/// Settings a method may take (each uses those that apply to it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodOptions {
    /// Samples, permutations or noisy copies; the method's default when `None`.
    pub samples: Option<usize>,
    pub steps: usize,
    pub baseline: Baseline,
    pub noise: f64,
    pub layer: Option<usize>,
    pub head: Option<usize>,
    /// The capture point of layer methods.
    pub at: Option<Hook>,
}

impl Default for MethodOptions {
    fn default() -> Self {
        Self {
            samples: None,
            steps: DEFAULT_IG_STEPS,
            baseline: Baseline::Pad,
            noise: DEFAULT_SMOOTHGRAD_NOISE,
            layer: None,
            head: None,
            at: None,
        }
    }
}

impl TokenMethod {
    pub fn parse(name: &str, options: &MethodOptions) -> Result<Self, AttributionError> {
        Ok(match name {
            "saliency" => TokenMethod::Gradient(GradientMethod::Saliency),
            "gradxinput" | "gradient_x_input" => {
                TokenMethod::Gradient(GradientMethod::GradientXInput)
            }
            "ig" | "integrated_gradients" => {
                TokenMethod::Gradient(GradientMethod::IntegratedGradients {
                    steps: options.steps,
                    baseline: options.baseline,
                })
            }
            "smoothgrad" => TokenMethod::Gradient(GradientMethod::SmoothGrad {
                samples: options.samples.unwrap_or(DEFAULT_SMOOTHGRAD_SAMPLES),
                noise: options.noise,
            }),
            "attgrad" => TokenMethod::Gradient(GradientMethod::AttentionXGradient {
                layer: options.layer,
            }),
            "layer_gradxact" | "layer_ig" => {
                let at = options.at.ok_or_else(|| {
                    AttributionError::BadInput(format!(
                        "{name} reads a capture point: give one (e.g. --at blocks.10.resid_pre)"
                    ))
                })?;
                TokenMethod::Gradient(if name == "layer_ig" {
                    GradientMethod::LayerIntegratedGradients {
                        at,
                        steps: options.steps,
                        baseline: options.baseline,
                    }
                } else {
                    GradientMethod::LayerGradientXActivation { at }
                })
            }
            "attention" => TokenMethod::Attention(AttentionMethod::Raw {
                layer: options.layer,
                head: options.head,
            }),
            "rollout" => TokenMethod::Attention(AttentionMethod::Rollout),
            other => match Method::parse(other, options.samples) {
                Ok(m) => TokenMethod::Perturbation(m),
                Err(AttributionError::UnknownMethod { name, .. }) => {
                    return Err(AttributionError::UnknownMethod {
                        name,
                        known: METHODS
                            .iter()
                            .chain(MODEL_METHODS)
                            .map(|m| m.0)
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                Err(e) => return Err(e),
            },
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            TokenMethod::Perturbation(m) => m.name(),
            TokenMethod::Gradient(m) => m.name(),
            TokenMethod::Attention(m) => m.name(),
        }
    }

    fn is_sampled(&self) -> bool {
        match self {
            TokenMethod::Perturbation(m) => m.is_sampled(),
            TokenMethod::Gradient(m) => matches!(m, GradientMethod::SmoothGrad { .. }),
            TokenMethod::Attention(_) => false,
        }
    }
}

/// What output the targets are about.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerSpec {
    /// The next token: the model's prediction (or the contrast's first token, or the label the
    /// model prefers).
    NextToken,
    /// A given continuation, teacher-forced.
    Given(String),
    /// A greedy generation of at most this many tokens.
    Generate(usize),
}

/// How the input becomes the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptFormat {
    /// The text as written, after the model's start-of-document token.
    Raw,
    /// The text as the user turn of the model's chat template; the answer is the assistant's.
    Chat,
}

impl PromptFormat {
    pub fn name(&self) -> &'static str {
        match self {
            PromptFormat::Raw => "raw",
            PromptFormat::Chat => "chat",
        }
    }
}

/// Fixed text around the input inside the prompt, never a unit: a classification prompt's
/// `Review: ` before the text and `\nSentiment:` after it. With a chat prompt it sits inside
/// the user's turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputTemplate {
    pub before: String,
    pub after: String,
}

impl InputTemplate {
    /// The placeholder that marks where the input goes in a template.
    pub const PLACEHOLDER: &'static str = "{input}";

    /// A template written as one string with `{input}` once, e.g.
    /// `"Review: {input}\nSentiment:"`.
    pub fn parse(template: &str) -> Result<Self, AttributionError> {
        match template.split_once(Self::PLACEHOLDER) {
            Some((before, after)) if !after.contains(Self::PLACEHOLDER) => Ok(Self {
                before: before.to_string(),
                after: after.to_string(),
            }),
            Some(_) => Err(AttributionError::BadInput(format!(
                "the template has `{}` more than once",
                Self::PLACEHOLDER
            ))),
            None => Err(AttributionError::BadInput(format!(
                "the template has no `{}` placeholder for the input",
                Self::PLACEHOLDER
            ))),
        }
    }
}

/// Everything `attribute` needs besides the model.
#[derive(Debug, Clone)]
pub struct AttributeRequest {
    pub input: String,
    /// Fixed text around the input (empty: the input alone).
    pub template: InputTemplate,
    pub answer: AnswerSpec,
    pub target: TargetSpec,
    pub method: TokenMethod,
    pub unit: UnitLevel,
    pub format: PromptFormat,
    pub system: Option<String>,
    pub perturbation: Perturbation,
    pub aggregate: Aggregation,
    pub seed: u64,
}

/// The prompt around the input, as tokens.
struct Frame {
    before: Vec<u32>,
    after: Vec<u32>,
}

/// The token that starts a raw prompt: BOS for models that want it; otherwise the
/// end-of-text separator byte-level BPE models saw between training documents (a prompt needs
/// one fixed token so that the input with every unit removed is still a prompt).
fn document_start(model: &Model) -> Result<u32, AttributionError> {
    let tok = model.tokenizer();
    let start = if tok.wants_bos() {
        tok.bos_id()
    } else {
        tok.token_id("<|endoftext|>")
            .or(tok.bos_id())
            .or(tok.eos_id())
    };
    start.ok_or_else(|| {
        AttributionError::BadInput(
            "the model has no BOS or end-of-text token to start a raw prompt with; use --chat"
                .into(),
        )
    })
}

fn frame(model: &Model, request: &AttributeRequest) -> Result<Frame, AttributionError> {
    let encode = |text: &str| -> Result<Vec<u32>, AttributionError> {
        Ok(model
            .tokenizer()
            .encode(text, false)
            .map_err(glassbox_runtime::RuntimeError::from)?
            .ids)
    };
    let InputTemplate { before, after } = &request.template;
    match request.format {
        PromptFormat::Raw => Ok(Frame {
            before: [vec![document_start(model)?], encode(before)?].concat(),
            after: encode(after)?,
        }),
        PromptFormat::Chat => {
            if !model.has_chat_template() {
                return Err(glassbox_runtime::RuntimeError::NoChatTemplate(
                    model.info().name.clone(),
                )
                .into());
            }
            let (head, tail, _) = crate::cite::chat_frame(model, request.system.as_deref())?;
            Ok(Frame {
                before: [encode(&head)?, encode(before)?].concat(),
                after: [encode(after)?, encode(&tail)?].concat(),
            })
        }
    }
}

/// The answer's tokens and where they came from.
fn answer_tokens(
    model: &Model,
    request: &AttributeRequest,
    prompt: &[u32],
) -> Result<(Vec<u32>, &'static str), AttributionError> {
    let window = model.config().context_length;
    if prompt.len() >= window {
        return Err(glassbox_runtime::RuntimeError::ContextOverflow {
            tokens: prompt.len() + 1,
            window,
        }
        .into());
    }
    if request.target.next_token_only() && request.answer != AnswerSpec::NextToken {
        return Err(AttributionError::BadInput(
            "contrast and label targets are about the next token; drop --continuation/--generate"
                .into(),
        ));
    }
    let next_logits = || -> Result<Vec<f32>, AttributionError> {
        let out = model
            .forward(
                vec![Row::tokens(prompt.to_vec()).with_logits(LogitsAt::Last)],
                &Capture::none(),
            )?
            .remove(0);
        Ok(out.logits.expect("asked for logits").at(0).to_vec())
    };
    let (answer, source) = match &request.answer {
        AnswerSpec::Given(text) => {
            let ids = model
                .tokenizer()
                .encode(text, false)
                .map_err(glassbox_runtime::RuntimeError::from)?
                .ids;
            if ids.is_empty() {
                return Err(AttributionError::BadInput(
                    "the continuation tokenizes to nothing; give some text, or drop --continuation to explain the next token".into(),
                ));
            }
            (ids, "given")
        }
        AnswerSpec::Generate(max) => {
            let options = GenerateOptions {
                max_new_tokens: *max,
                sampling: Sampling::Greedy,
                stop_at_eos: true,
            };
            let tokens = model.generate(prompt, &options)?.tokens;
            if tokens.is_empty() {
                return Err(AttributionError::BadInput(
                    "the model generated nothing (it ended its turn at once); give a continuation instead".into(),
                ));
            }
            (tokens, "generated")
        }
        AnswerSpec::NextToken => match &request.target {
            TargetSpec::Contrast(a, _) => (
                vec![target::single_token(model, a, "contrast token")?],
                "given",
            ),
            TargetSpec::Label(labels) => {
                let ids = labels
                    .iter()
                    .map(|l| target::single_token(model, l, "label"))
                    .collect::<Result<Vec<_>, _>>()?;
                let logits = next_logits()?;
                let best = ids
                    .iter()
                    .copied()
                    .max_by(|&a, &b| logits[a as usize].total_cmp(&logits[b as usize]))
                    .expect("at least two labels");
                (vec![best], "predicted")
            }
            _ => (vec![argmax(&next_logits()?)], "predicted"),
        },
    };
    Ok((answer, source))
}

/// The targets of a request, given the answer.
fn targets(model: &Model, spec: &TargetSpec, answer: &[u32]) -> Result<Targets, AttributionError> {
    let text = |id: u32| model.tokenizer().decode(&[id]).unwrap_or_default();
    let label = |label: String, kind: &str, tokens: Option<(usize, usize)>| Target {
        label,
        kind: kind.into(),
        tokens,
    };
    let (mut formulas, mut labels) = (Vec::new(), Vec::new());
    match spec {
        TargetSpec::Contrast(a, b) => {
            let (a_id, b_id) = (
                target::single_token(model, a, "contrast token")?,
                target::single_token(model, b, "contrast token")?,
            );
            formulas.push(Formula::Contrast {
                pos: 0,
                a: a_id,
                b: b_id,
            });
            labels.push(label(
                format!("{a:?} vs {b:?}"),
                "contrast_logit",
                Some((0, 1)),
            ));
        }
        TargetSpec::Label(names) => {
            let ids = names
                .iter()
                .map(|l| target::single_token(model, l, "label"))
                .collect::<Result<Vec<_>, _>>()?;
            for (k, name) in names.iter().enumerate() {
                formulas.push(Formula::Label {
                    pos: 0,
                    labels: ids.clone(),
                    k,
                });
                labels.push(label(name.trim().to_string(), "label_prob", Some((0, 1))));
            }
        }
        TargetSpec::LogProb | TargetSpec::Prob | TargetSpec::Logit => {
            if *spec == TargetSpec::LogProb && answer.len() > 1 {
                formulas.push(Formula::SumLogProb {
                    answer: answer.to_vec(),
                });
                labels.push(label(
                    "continuation".into(),
                    "sum_logprob",
                    Some((0, answer.len())),
                ));
            }
            for (pos, &token) in answer.iter().enumerate() {
                let (formula, kind) = match spec {
                    TargetSpec::LogProb => (Formula::LogProb { pos, token }, "token_logprob"),
                    TargetSpec::Prob => (Formula::Prob { pos, token }, "token_prob"),
                    _ => (Formula::Logit { pos, token }, "token_logit"),
                };
                formulas.push(formula);
                labels.push(label(text(token), kind, Some((pos, pos + 1))));
            }
        }
    }
    Ok(Targets::new(formulas, labels, answer.to_vec()))
}

/// The coalition game of a target set on the engine.
struct TargetGame<'e, 'm> {
    engine: &'e mut Engine<'m>,
    targets: &'e Targets,
}

impl Game for TargetGame<'_, '_> {
    fn players(&self) -> usize {
        self.engine.units()
    }

    fn dims(&self) -> usize {
        self.targets.formulas.len()
    }

    fn values(&mut self, coalitions: &[Coalition]) -> Result<Vec<Vec<f64>>, AttributionError> {
        Ok(self
            .engine
            .readouts(coalitions)?
            .iter()
            .map(|r| self.targets.from_readout(r))
            .collect())
    }
}

/// A request made concrete: the prompt's tokens, the input's units and the answer.
pub struct Prepared {
    pub units: InputUnits,
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
    pub answer: Vec<u32>,
    pub answer_source: &'static str,
    pub targets: Targets,
}

impl Prepared {
    /// The prompt's tokens: prefix, input, suffix.
    pub fn prompt(&self) -> Vec<u32> {
        [&self.prefix[..], &self.units.ids, &self.suffix].concat()
    }

    /// The engine of the input cut into `owner`'s units (`owner[i]`: the unit of input token
    /// `i`, `None` for fixed tokens), with `placeholder` standing in for dropped tokens.
    pub fn engine<'m>(
        &self,
        model: &'m Model,
        owner: &[Option<usize>],
        perturbation: Perturbation,
        placeholder: u32,
    ) -> Result<Engine<'m>, AttributionError> {
        let mut pieces = vec![TokenSegment::Fixed(self.prefix.clone())];
        for (&id, &unit) in self.units.ids.iter().zip(owner) {
            match (pieces.last_mut(), unit) {
                (Some(TokenSegment::Fixed(t)), None) => t.push(id),
                (
                    Some(TokenSegment::Unit {
                        unit: u,
                        kept,
                        dropped,
                    }),
                    Some(o),
                ) if *u == o => {
                    kept.push(id);
                    dropped.push(placeholder);
                }
                (_, None) => pieces.push(TokenSegment::Fixed(vec![id])),
                (_, Some(o)) => pieces.push(TokenSegment::Unit {
                    unit: o,
                    kept: vec![id],
                    dropped: vec![placeholder],
                }),
            }
        }
        if !self.suffix.is_empty() {
            pieces.push(TokenSegment::Fixed(self.suffix.clone()));
        }
        Engine::from_tokens(model, pieces, perturbation, self.answer.clone())?
            .with_readout(self.targets.readout.clone())
    }
}

/// Validates a request, tokenizes the input and fixes the answer and targets.
pub fn prepare(model: &Model, request: &AttributeRequest) -> Result<Prepared, AttributionError> {
    prepare_with(model, request, None)
}

/// [`prepare`], with the answer's tokens given (a saved result's) instead of found anew.
fn prepare_with(
    model: &Model,
    request: &AttributeRequest,
    answer: Option<(Vec<u32>, &'static str)>,
) -> Result<Prepared, AttributionError> {
    let units = InputUnits::new(model, &request.input)?;
    let Frame { before, after } = frame(model, request)?;
    let prompt = [&before[..], &units.ids, &after].concat();
    let (answer, answer_source) = match answer {
        Some(given) => given,
        None => answer_tokens(model, request, &prompt)?,
    };
    let window = model.config().context_length;
    if prompt.len() + answer.len() > window + 1 {
        return Err(glassbox_runtime::RuntimeError::ContextOverflow {
            tokens: prompt.len() + answer.len() - 1,
            window,
        }
        .into());
    }
    let targets = targets(model, &request.target, &answer)?;
    Ok(Prepared {
        units,
        prefix: before,
        suffix: after,
        answer,
        answer_source,
        targets,
    })
}

/// Explains the request's output in terms of its input.
pub fn attribute(
    model: &Model,
    request: &AttributeRequest,
) -> Result<AttributeReport, AttributionError> {
    let prepared = prepare(model, request)?;
    let started = Instant::now();
    // The token standing in for dropped ones; the engine reads it only under the placeholder
    // perturbation, so other runs do not need the vocabulary to have one.
    let placeholder = match request.perturbation {
        Perturbation::Placeholder => gradient::special_token(model, false)?,
        Perturbation::Delete | Perturbation::AttentionBlock => 0,
    };
    let (units, estimate, cost) = match request.method {
        TokenMethod::Perturbation(method) => {
            let (units, owner) = prepared.units.at(&request.unit, &request.input)?;
            let mut engine =
                prepared.engine(model, &owner, request.perturbation.clone(), placeholder)?;
            let estimate = estimate(
                method,
                &mut TargetGame {
                    engine: &mut engine,
                    targets: &prepared.targets,
                },
                request.seed,
            )?;
            let s = engine.stats();
            let cost = s.cost(0.0);
            (units, estimate, cost)
        }
        TokenMethod::Gradient(method) => {
            let ids = sequence(&prepared);
            let input = gradient::GradientInput {
                ids: &ids,
                units: prepared.prefix.len()..prepared.prefix.len() + prepared.units.ids.len(),
                first: prepared.prefix.len() + prepared.units.ids.len() + prepared.suffix.len() - 1,
                shift: None,
                empty: true,
            };
            let (mut estimate, runs) =
                gradient::gradient_scores(model, &input, &prepared.targets, method, request.seed)?;
            if let serde_json::Value::Object(d) = &mut estimate.diagnostics {
                d.insert("backward_passes".into(), runs.backwards.into());
            }
            let cost = Cost {
                evaluations: runs.points,
                forward_passes: runs.calls,
                tokens: runs.backwards * ids.len(),
                tokens_from_scratch: runs.backwards * ids.len(),
                seconds: 0.0,
            };
            (prepared.units.tokens.clone(), estimate, cost)
        }
        TokenMethod::Attention(method) => {
            if request.target.next_token_only() {
                return Err(AttributionError::BadInput(
                    "attention does not depend on the target token, so it cannot explain a contrast or a label choice; use a perturbation or gradient method".into(),
                ));
            }
            let ids = sequence(&prepared);
            let first =
                prepared.prefix.len() + prepared.units.ids.len() + prepared.suffix.len() - 1;
            let m = prepared.answer.len();
            let positions: Vec<usize> = (first..first + m).collect();
            let (rows, params) = attention::attention_rows(model, &ids, &positions, method)?;
            let span = prepared.prefix.len()..prepared.prefix.len() + prepared.units.ids.len();
            // A target at one position reads that position's row; a sum over the answer, the
            // mean of the answer's rows.
            let scores: Vec<Vec<f64>> = (0..prepared.targets.formulas.len())
                .map(|t| match prepared.targets.position(t) {
                    Some(p) => rows[p][span.clone()].to_vec(),
                    None => span
                        .clone()
                        .map(|k| rows.iter().map(|r| r[k]).sum::<f64>() / m as f64)
                        .collect(),
                })
                .collect();
            let values = full_values(model, &prepared)?;
            let estimate = Estimate {
                scores,
                std_errors: None,
                value_full: values.0,
                value_empty: values.1,
                params,
                diagnostics: serde_json::json!({"note": "attention weights, not effects on the target"}),
            };
            let cost = Cost {
                evaluations: 1,
                forward_passes: 1,
                tokens: ids.len(),
                tokens_from_scratch: ids.len(),
                seconds: 0.0,
            };
            (prepared.units.tokens.clone(), estimate, cost)
        }
    };
    let attribution = Attribution {
        schema: ATTRIBUTION_SCHEMA.into(),
        model: model.info().name.clone(),
        method: MethodInfo {
            name: request.method.name().into(),
            params: estimate.params,
            seed: request.method.is_sampled().then_some(request.seed),
        },
        perturbation: match request.method {
            TokenMethod::Perturbation(_) => request.perturbation.name().into(),
            TokenMethod::Gradient(_) => "none (gradients)".into(),
            TokenMethod::Attention(_) => "none (attention)".into(),
        },
        units,
        targets: prepared.targets.labels.clone(),
        scores: estimate.scores,
        std_errors: estimate.std_errors,
        value_full: estimate.value_full,
        value_empty: estimate.value_empty,
        cost: Cost {
            seconds: started.elapsed().as_secs_f64(),
            ..cost
        },
        diagnostics: estimate.diagnostics,
    };
    report(model, request, &prepared, attribution)
}

/// The report of an attribution of a prepared request: the attribution with the input's
/// units at every level, the answer, and what it takes to re-score it.
pub fn report(
    model: &Model,
    request: &AttributeRequest,
    prepared: &Prepared,
    attribution: Attribution,
) -> Result<AttributeReport, AttributionError> {
    let mut levels = BTreeMap::new();
    levels.insert("token".to_string(), prepared.units.tokens.clone());
    levels.insert("word".to_string(), prepared.units.words.clone());
    levels.insert("sentence".to_string(), prepared.units.sentences.clone());
    let answer_tokens = prepared
        .answer
        .iter()
        .map(|&id| AnswerToken {
            id,
            text: model.tokenizer().decode(&[id]).unwrap_or_default(),
        })
        .collect();
    Ok(AttributeReport {
        schema: ATTRIBUTE_SCHEMA.into(),
        input: request.input.clone(),
        prompt_format: request.format.name().into(),
        answer: model
            .tokenizer()
            .decode(&prepared.answer)
            .map_err(glassbox_runtime::RuntimeError::from)?,
        answer_tokens,
        answer_source: prepared.answer_source.into(),
        levels,
        attribution,
        view: ViewSettings {
            unit: request.unit.name().to_string(),
            aggregate: request.aggregate,
        },
        request: Some(RequestRecord {
            before: request.template.before.clone(),
            after: request.template.after.clone(),
            system: request.system.clone(),
            target: request.target.spec(),
        }),
    })
}

/// The prompt followed by the answer but its last token (what one teacher-forced pass runs).
fn sequence(p: &Prepared) -> Vec<u32> {
    let mut ids = p.prompt();
    ids.extend_from_slice(&p.answer[..p.answer.len() - 1]);
    ids
}

/// A prepared request's target values with the whole input and with every input token
/// deleted (one batched pass).
pub fn full_values(model: &Model, p: &Prepared) -> Result<(Vec<f64>, Vec<f64>), AttributionError> {
    let owner: Vec<Option<usize>> = (0..p.units.ids.len()).map(Some).collect();
    // Deleting needs no placeholder token.
    let mut engine = p.engine(model, &owner, Perturbation::Delete, 0)?;
    let n = engine.units();
    let r = engine.readouts(&[Coalition::full(n), Coalition::empty(n)])?;
    Ok((p.targets.from_readout(&r[0]), p.targets.from_readout(&r[1])))
}
