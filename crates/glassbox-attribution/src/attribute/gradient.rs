//! Gradient methods: saliency, gradient × input, integrated gradients and SmoothGrad, all with
//! respect to the input embeddings of the real model (through the runtime's hand-written
//! backward, [`Model::gradients`]).
//!
//! Each needs one forward and one backward per target per point (integrated gradients' steps,
//! SmoothGrad's noisy samples), and all of a method's points run as one batched call; nothing
//! is decoded token by token. Scores are per input token; words and sentences are sums of
//! them, formed when the result is viewed.

use glassbox_runtime::{Capture, GradientRow, Hook, LogitsAt, Model, Row};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::target::Targets;
use crate::AttributionError;
use crate::methods::Estimate;

/// What integrated gradients integrates from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// All-zero embeddings.
    Zero,
    /// The embedding of the padding token.
    Pad,
    /// The embedding of the unknown token.
    Unk,
}

impl Baseline {
    pub fn parse(name: &str) -> Result<Self, AttributionError> {
        match name {
            "zero" => Ok(Baseline::Zero),
            "pad" => Ok(Baseline::Pad),
            "unk" => Ok(Baseline::Unk),
            other => Err(AttributionError::BadInput(format!(
                "unknown baseline `{other}`; baselines: zero, pad, unk"
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Baseline::Zero => "zero",
            Baseline::Pad => "pad",
            Baseline::Unk => "unk",
        }
    }
}

/// Vocabulary entries tried, in order, for the padding and unknown tokens. Byte-level BPE
/// vocabularies (GPT-2, SmolLM2) have neither and use `<|endoftext|>` for both, as their
/// Hugging Face tokenizer configurations do.
const PAD_TOKENS: &[&str] = &["<pad>", "[PAD]", "<|pad|>", "<|padding|>", "<|endoftext|>"];
const UNK_TOKENS: &[&str] = &["<unk>", "[UNK]", "<|unk|>", "<|endoftext|>"];

/// The id of the padding (`pad`) or unknown (`!pad`) token.
pub fn special_token(model: &Model, pad: bool) -> Result<u32, AttributionError> {
    let names = if pad { PAD_TOKENS } else { UNK_TOKENS };
    names
        .iter()
        .find_map(|n| model.tokenizer().token_id(n))
        .ok_or_else(|| {
            AttributionError::BadInput(format!(
                "the vocabulary has no {} token (tried {}); use --baseline zero",
                if pad { "padding" } else { "unknown" },
                names.join(", ")
            ))
        })
}

/// A gradient method and its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GradientMethod {
    /// `‖∂f/∂e_i‖₂` per token (unsigned).
    Saliency,
    /// `∂f/∂e_i · e_i` per token (signed).
    GradientXInput,
    /// `(e_i - b_i) · Σ_k w_k ∂f/∂e_i(b + α_k (e - b))`, Gauss–Legendre nodes `α_k` and
    /// weights `w_k` on `steps` points.
    IntegratedGradients { steps: usize, baseline: Baseline },
    /// `‖mean_k ∂f/∂e_i(e + ε_k)‖₂`, `ε_k ~ N(0, σ²)` on the input tokens only, σ = `noise` ×
    /// the range of the input embeddings (Smilkov et al.).
    SmoothGrad { samples: usize, noise: f64 },
    /// `a_i · ∂f/∂a_i` at a capture point `at` (Captum's LayerGradientXActivation): what
    /// each token's state at that layer contributes, to first order.
    LayerGradientXActivation { at: Hook },
    /// Integrated gradients in the activation space of a residual-stream point (Captum's
    /// LayerIntegratedGradients): the stream at `at` moves from its value under the baseline
    /// input `a'` to its value under the input `a`, and token `i` gets
    /// `(a_i − a'_i) · Σ_k w_k ∂f/∂a_i(a' + α_k (a − a'))`.
    LayerIntegratedGradients {
        at: Hook,
        steps: usize,
        baseline: Baseline,
    },
    /// Attention × gradient at one layer (default the last): token `k` gets
    /// `Σ_heads Σ_queries P[h, q, k] · ∂f/∂P[h, q, k]`, the first-order share of every attention
    /// edge into it.
    AttentionXGradient { layer: Option<usize> },
}

impl GradientMethod {
    pub fn name(&self) -> &'static str {
        match self {
            GradientMethod::Saliency => "saliency",
            GradientMethod::GradientXInput => "gradient_x_input",
            GradientMethod::IntegratedGradients { .. } => "integrated_gradients",
            GradientMethod::SmoothGrad { .. } => "smoothgrad",
            GradientMethod::LayerGradientXActivation { .. } => "layer_gradxact",
            GradientMethod::LayerIntegratedGradients { .. } => "layer_ig",
            GradientMethod::AttentionXGradient { .. } => "attgrad",
        }
    }

    /// The method a saved result names (its `name` and `params`), or `None` when the result
    /// was not made by a gradient method.
    pub fn from_saved(name: &str, params: &serde_json::Value) -> Option<Self> {
        let number = |key: &str| params.get(key).and_then(|v| v.as_f64());
        Some(match name {
            "saliency" => GradientMethod::Saliency,
            "gradient_x_input" => GradientMethod::GradientXInput,
            "integrated_gradients" => GradientMethod::IntegratedGradients {
                steps: number("steps")? as usize,
                baseline: Baseline::parse(params.get("baseline")?.as_str()?).ok()?,
            },
            "smoothgrad" => GradientMethod::SmoothGrad {
                samples: number("samples")? as usize,
                noise: number("noise_level")?,
            },
            "layer_gradxact" => GradientMethod::LayerGradientXActivation {
                at: parse_point(params.get("at")?.as_str()?).ok()?,
            },
            "attgrad" => GradientMethod::AttentionXGradient {
                layer: number("layer").map(|l| l as usize),
            },
            "layer_ig" => GradientMethod::LayerIntegratedGradients {
                at: parse_point(params.get("at")?.as_str()?).ok()?,
                steps: number("steps")? as usize,
                baseline: Baseline::parse(params.get("baseline")?.as_str()?).ok()?,
            },
            _ => return None,
        })
    }

    pub fn params(&self) -> serde_json::Value {
        match *self {
            GradientMethod::Saliency => json!({"norm": "l2"}),
            GradientMethod::GradientXInput => json!({}),
            GradientMethod::IntegratedGradients { steps, baseline } => {
                json!({"steps": steps, "baseline": baseline.name(), "rule": "gauss_legendre"})
            }
            GradientMethod::SmoothGrad { samples, noise } => {
                json!({"samples": samples, "noise_level": noise, "norm": "l2"})
            }
            GradientMethod::LayerGradientXActivation { at } => json!({"at": at.name()}),
            GradientMethod::AttentionXGradient { layer } => json!({"layer": layer}),
            GradientMethod::LayerIntegratedGradients {
                at,
                steps,
                baseline,
            } => json!({
                "at": at.name(),
                "steps": steps,
                "baseline": baseline.name(),
                "rule": "gauss_legendre",
            }),
        }
    }
}

/// The capture point a layer method reads (`blocks.L.resid_pre`, ...): one point, whose layer
/// the runtime checks against the model.
pub fn parse_point(spec: &str) -> Result<Hook, AttributionError> {
    let bad = |why: &str| AttributionError::BadInput(format!("capture point `{spec}`: {why}"));
    if spec.contains('*') {
        return Err(bad("a layer method reads one point, not a pattern"));
    }
    match Hook::parse(spec, usize::MAX)
        .map_err(|e| AttributionError::BadInput(e.to_string()))?
        .as_slice()
    {
        [
            hook @ (Hook::ResidPre(_)
            | Hook::ResidMid(_)
            | Hook::ResidPost(_)
            | Hook::AttnOut(_)
            | Hook::MlpOut(_)),
        ] => Ok(*hook),
        _ => Err(bad(
            "layer methods read the residual stream or a sub-block output \
             (blocks.L.resid_pre, resid_mid, resid_post, attn.out, mlp.out)",
        )),
    }
}

/// A sequence to differentiate: its token ids and which of them are the input's units.
pub struct GradientInput<'a> {
    pub ids: &'a [u32],
    /// Range of the input text's tokens within `ids`.
    pub units: std::ops::Range<usize>,
    /// Row of the logits that predicts the answer's first token.
    pub first: usize,
    /// Added to the input tokens' embeddings (`units.len() × hidden` values): the explanation
    /// of a perturbed input x + δ, as sensitivity measures ask for. `None`: x itself.
    pub shift: Option<&'a [f32]>,
    /// Also give the targets' values with the input's tokens deleted (`value_empty`), from
    /// the same runtime call as the method's own points: a separate forward would stream the
    /// weights once more, a fifth of gradient × input's time.
    pub empty: bool,
}

/// A point whose target values are wanted, not its gradients: embeddings, and the row that
/// predicts the answer's first token.
struct ValuePoint {
    embeddings: Vec<f32>,
    first: usize,
}

/// Gradients `[point][target][input value]` and target values `[point][target]`.
type PointGradients = (Vec<Vec<Vec<f32>>>, Vec<Vec<f64>>);

/// Counters of a gradient run.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradientCost {
    /// Distinct embedding points evaluated (each one forward).
    pub points: usize,
    /// Rows differentiated: one backward per point per target.
    pub backwards: usize,
    /// Calls into the runtime (each runs its rows as packed batches).
    pub calls: usize,
}

/// Per-token scores (`[target][token of the input]`) of `method`.
///
/// Every point a method needs (the input, integrated gradients' path nodes, SmoothGrad's noisy
/// copies), times every target, is one row of a single batched gradient call.
pub fn gradient_scores(
    model: &Model,
    input: &GradientInput<'_>,
    targets: &Targets,
    method: GradientMethod,
    seed: u64,
) -> Result<(Estimate, GradientCost), AttributionError> {
    let d = model.config().hidden_size;
    let mut embedded = model.embed(input.ids)?.data;
    let units = input.units.clone();
    if let Some(shift) = input.shift {
        let rows = &mut embedded[units.start * d..units.end * d];
        if shift.len() != rows.len() {
            return Err(AttributionError::BadInput(format!(
                "an input shift of {} values for {} input embeddings of width {d}",
                shift.len(),
                units.len()
            )));
        }
        rows.iter_mut().zip(shift).for_each(|(v, s)| *v += s);
    }
    let x = embedded;
    let dims = targets.formulas.len();
    // The sequence without the input's tokens, whose answer starts `units.len()` rows earlier.
    let empty: Vec<ValuePoint> = if input.empty {
        let Some(first) = input.first.checked_sub(units.len()) else {
            return Err(AttributionError::BadInput(
                "the prompt has no tokens besides the input, so the value with the input \
                 deleted is undefined; give a template (e.g. --chat) or a BOS token"
                    .into(),
            ));
        };
        let ids: Vec<u32> = input.ids[..units.start]
            .iter()
            .chain(&input.ids[units.end..])
            .copied()
            .collect();
        vec![ValuePoint {
            embeddings: model.embed(&ids)?.data,
            first,
        }]
    } else {
        Vec::new()
    };
    let point = |embeddings: &[f32]| ValuePoint {
        embeddings: embeddings.to_vec(),
        first: input.first,
    };
    // The values at a path's two ends (the input and `base`) and with the input deleted, in
    // one forward.
    let path_ends = |base: &[f32], empty: Vec<ValuePoint>, cost: &mut GradientCost| {
        let ends = [point(&x), point(base)];
        let mut values = values_at(model, ends.into_iter().chain(empty), targets, cost)?;
        let value_empty = values.drain(2..).next().unwrap_or_default();
        let at_base = values.pop().expect("two ends");
        Ok::<_, AttributionError>((values.pop().expect("two ends"), at_base, value_empty))
    };
    let mut cost = GradientCost::default();
    // Only the rows predicting the answer feed any target.
    let answer_rows = input.first..input.first + targets.answer.len();
    let span = units.start * d..units.end * d;

    // Gradients (`[point][target]`, the input's rows only) at every point, in one call, and
    // the targets' values there (`[point][target]`, from the logits the backward started at),
    // and the values at the value-only points `also`.
    let mut grads_at = |points: Vec<Vec<f32>>,
                        also: &[ValuePoint]|
     -> Result<(PointGradients, Vec<Vec<f64>>), AttributionError> {
        let (out, also) =
            differentiate(model, points, &answer_rows, &[], targets, also, &mut cost)?;
        let grads = out
            .chunks(dims)
            .map(|per_target| {
                per_target
                    .iter()
                    .map(|g| g.input.data[span.clone()].to_vec())
                    .collect()
            })
            .collect();
        let values = out
            .chunks(dims)
            .map(|per_target| {
                per_target
                    .iter()
                    .enumerate()
                    .map(|(t, g)| targets.value_and_gradient(t, &g.logits).0)
                    .collect()
            })
            .collect();
        Ok(((grads, values), also))
    };
    let input_rows = x[span.clone()].to_vec();
    let per_token = |v: &[f32], f: &dyn Fn(&[f32], usize) -> f64| -> Vec<f64> {
        (0..units.len())
            .map(|i| f(&v[i * d..(i + 1) * d], i))
            .collect()
    };
    let norm = |g: &[f32], _: usize| g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();

    let mut diagnostics = json!({});
    // Values with the input deleted, whichever call computed them.
    let value_empty: Vec<f64>;
    let (scores, value_full) = match method {
        GradientMethod::Saliency => {
            let ((mut grads, mut values), also) = grads_at(vec![x.clone()], &empty)?;
            value_empty = also.into_iter().next().unwrap_or_default();
            let (grads, values) = (grads.remove(0), values.remove(0));
            (grads.iter().map(|g| per_token(g, &norm)).collect(), values)
        }
        GradientMethod::GradientXInput => {
            let ((mut grads, mut values), also) = grads_at(vec![x.clone()], &empty)?;
            value_empty = also.into_iter().next().unwrap_or_default();
            let (grads, values) = (grads.remove(0), values.remove(0));
            let scores = grads
                .iter()
                .map(|g| per_token(g, &|gi, i| dot(gi, &input_rows[i * d..(i + 1) * d])))
                .collect();
            (scores, values)
        }
        GradientMethod::IntegratedGradients { steps, baseline } => {
            if steps == 0 {
                return Err(AttributionError::BadBudget(
                    "integrated gradients needs at least 1 step".into(),
                ));
            }
            let base = baseline_input(model, &x, &units, baseline)?;
            // The path integral by Gauss–Legendre quadrature (as Captum does): with an
            // all-zero baseline the integrand spikes near α = 0, where RMS norm rescales tiny
            // inputs to full size, and these nodes crowd the ends of the path.
            let rule = gauss_legendre(steps);
            let points: Vec<Vec<f32>> = rule
                .iter()
                .map(|&(alpha, _)| {
                    base.iter()
                        .zip(&x)
                        .map(|(&b, &v)| b + (v - b) * alpha as f32)
                        .collect()
                })
                .collect();
            let ((grads, _), _) = grads_at(points, &[])?;
            let mut sum = vec![vec![0f64; units.len() * d]; dims];
            for (&(_, weight), at_point) in rule.iter().zip(&grads) {
                for (s, g) in sum.iter_mut().zip(at_point) {
                    add_scaled(s, weight, g);
                }
            }
            let (at_input, at_base);
            (at_input, at_base, value_empty) = path_ends(&base, empty, &mut cost)?;
            let base_rows = &base[span.clone()];
            let mut scores = Vec::with_capacity(dims);
            let mut gaps = Vec::with_capacity(dims);
            for t in 0..dims {
                let row: Vec<f64> = (0..units.len())
                    .map(|i| {
                        (0..d)
                            .map(|h| {
                                let j = i * d + h;
                                (input_rows[j] - base_rows[j]) as f64 * sum[t][j]
                            })
                            .sum()
                    })
                    .collect();
                gaps.push(row.iter().sum::<f64>() - (at_input[t] - at_base[t]));
                scores.push(row);
            }
            diagnostics = json!({
                "completeness_gap": gaps,
                "value_baseline": at_base,
            });
            (scores, at_input)
        }
        GradientMethod::SmoothGrad { samples, noise } => {
            if samples == 0 {
                return Err(AttributionError::BadBudget(
                    "SmoothGrad needs at least 1 sample".into(),
                ));
            }
            let (lo, hi) = input_rows
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            if !(noise.is_finite() && noise >= 0.0) {
                return Err(AttributionError::BadBudget(format!(
                    "the noise level must be a non-negative number, not {noise}"
                )));
            }
            let sigma = noise * (hi - lo) as f64;
            let mut rng = StdRng::seed_from_u64(seed);
            let points: Vec<Vec<f32>> = (0..samples)
                .map(|_| {
                    let mut noisy = x.clone();
                    for v in &mut noisy[span.clone()] {
                        *v += (sigma * standard_normal(&mut rng)) as f32;
                    }
                    noisy
                })
                .collect();
            let ((grads, _), _) = grads_at(points, &[])?;
            let mut sum = vec![vec![0f64; units.len() * d]; dims];
            for at_point in &grads {
                for (s, g) in sum.iter_mut().zip(at_point) {
                    add_scaled(s, 1.0, g);
                }
            }
            let mut values = values_at(
                model,
                [point(&x)].into_iter().chain(empty),
                targets,
                &mut cost,
            )?;
            value_empty = values.drain(1..).next().unwrap_or_default();
            let values = values.remove(0);
            let scores = sum
                .iter()
                .map(|s| {
                    (0..units.len())
                        .map(|i| {
                            s[i * d..(i + 1) * d]
                                .iter()
                                .map(|v| (v / samples as f64).powi(2))
                                .sum::<f64>()
                                .sqrt()
                        })
                        .collect()
                })
                .collect();
            diagnostics = json!({ "sigma": sigma });
            (scores, values)
        }
        GradientMethod::LayerGradientXActivation { at } => {
            let (out, also) = differentiate(
                model,
                vec![x.clone()],
                &answer_rows,
                &[at],
                targets,
                &empty,
                &mut cost,
            )?;
            value_empty = also.into_iter().next().unwrap_or_default();
            let scores = out
                .iter()
                .map(|g| {
                    let (act, grad) = &g.at[&at];
                    units
                        .clone()
                        .map(|i| dot(act.row(i), grad.row(i)))
                        .collect()
                })
                .collect();
            (scores, values_of(&out, targets))
        }
        GradientMethod::AttentionXGradient { layer } => {
            let layers = model.config().num_layers;
            let l = layer.unwrap_or(layers - 1);
            let hook = Hook::AttnPattern(l);
            let (out, also) = differentiate(
                model,
                vec![x.clone()],
                &answer_rows,
                &[hook],
                targets,
                &empty,
                &mut cost,
            )?;
            value_empty = also.into_iter().next().unwrap_or_default();
            let len = input.ids.len();
            let scores = out
                .iter()
                .map(|g| {
                    let e = &g.edges[&hook].data;
                    units
                        .clone()
                        .map(|k| {
                            (0..e.len() / (len * len))
                                .flat_map(|h| (0..len).map(move |q| (h * len + q) * len + k))
                                .map(|i| e[i] as f64)
                                .sum()
                        })
                        .collect()
                })
                .collect();
            diagnostics = json!({ "layer": l });
            (scores, values_of(&out, targets))
        }
        GradientMethod::LayerIntegratedGradients {
            at,
            steps,
            baseline,
        } => {
            if !matches!(
                at,
                Hook::ResidPre(_) | Hook::ResidMid(_) | Hook::ResidPost(_)
            ) {
                return Err(AttributionError::BadInput(format!(
                    "layer integrated gradients moves the residual stream, so it reads \
                     blocks.L.resid_pre, resid_mid or resid_post, not {}; layer_gradxact \
                     reads sub-block outputs",
                    at.name()
                )));
            }
            if steps == 0 {
                return Err(AttributionError::BadBudget(
                    "layer integrated gradients needs at least 1 step".into(),
                ));
            }
            let base = baseline_input(model, &x, &units, baseline)?;
            // The stream at the point under the input and under the baseline input.
            let capture = Capture::none().with(at);
            let ends = model.forward(
                vec![
                    Row::embeddings(x.clone()).with_logits(LogitsAt::None),
                    Row::embeddings(base.clone()).with_logits(LogitsAt::None),
                ],
                &capture,
            )?;
            cost.calls += 1;
            let (a, a0) = (
                &ends[0].activations[&at].data,
                &ends[1].activations[&at].data,
            );
            let rule = gauss_legendre(steps);
            let mut rows = Vec::with_capacity(steps * dims);
            for &(alpha, _) in &rule {
                let stream: Vec<f32> = a0
                    .iter()
                    .zip(a)
                    .map(|(&b, &v)| b + (v - b) * alpha as f32)
                    .collect();
                for _ in 0..dims {
                    // The input is irrelevant past the patch; it only sizes the row.
                    let mut row = GradientRow::new(x.clone(), answer_rows.clone().collect());
                    row.patch = Some((at, stream.clone()));
                    rows.push(row);
                }
            }
            let out = model.gradients(rows, &[at], &|r, logits| {
                targets.value_and_gradient(r % dims, logits).1
            })?;
            cost.points += steps;
            cost.backwards += steps * dims;
            cost.calls += 1;
            let len = input.ids.len();
            let mut sum = vec![vec![0f64; len * d]; dims];
            for (k, &(_, weight)) in rule.iter().enumerate() {
                for (t, s) in sum.iter_mut().enumerate() {
                    add_scaled(s, weight, &out[k * dims + t].at[&at].1.data);
                }
            }
            let (at_input, at_base);
            (at_input, at_base, value_empty) = path_ends(&base, empty, &mut cost)?;
            let per_position = |t: usize, i: usize| -> f64 {
                (i * d..(i + 1) * d)
                    .map(|j| (a[j] - a0[j]) as f64 * sum[t][j])
                    .sum()
            };
            let mut scores = Vec::with_capacity(dims);
            let (mut gaps, mut outside) = (Vec::new(), Vec::new());
            for t in 0..dims {
                let all: Vec<f64> = (0..len).map(|i| per_position(t, i)).collect();
                let total: f64 = all.iter().sum();
                gaps.push(total - (at_input[t] - at_base[t]));
                // Template positions move too (attention mixes the input into them).
                outside.push(total - all[units.clone()].iter().sum::<f64>());
                scores.push(all[units.clone()].to_vec());
            }
            diagnostics = json!({
                "completeness_gap": gaps,
                "outside_input": outside,
                "value_baseline": at_base,
            });
            (scores, at_input)
        }
    };
    Ok((
        Estimate {
            scores,
            std_errors: None,
            value_full,
            value_empty,
            params: method.params(),
            diagnostics,
        },
        cost,
    ))
}

/// Every target's gradient at every point (rows point-major, target-minor), with activations
/// and gradients at `hooks`, and the targets' values at the value-only points `also` (rows of
/// the same call whose objective is zero: a few more tokens in the batch cost far less than
/// another pass over the weights): one batched call into the runtime.
fn differentiate(
    model: &Model,
    points: Vec<Vec<f32>>,
    answer_rows: &std::ops::Range<usize>,
    hooks: &[Hook],
    targets: &Targets,
    also: &[ValuePoint],
    cost: &mut GradientCost,
) -> Result<(Vec<glassbox_runtime::RowGradients>, Vec<Vec<f64>>), AttributionError> {
    let (n, dims) = (points.len(), targets.formulas.len());
    let answer = targets.answer.len();
    let mut rows: Vec<GradientRow> = points
        .into_iter()
        .flat_map(|p| std::iter::repeat_n(p, dims))
        .map(|embeddings| GradientRow::new(embeddings, answer_rows.clone().collect()))
        .collect();
    rows.extend(
        also.iter()
            .map(|p| GradientRow::new(p.embeddings.clone(), (p.first..p.first + answer).collect())),
    );
    let mut out = model.gradients(rows, hooks, &|r, logits| {
        if r < n * dims {
            targets.value_and_gradient(r % dims, logits).1
        } else {
            vec![0.0; logits.data.len()]
        }
    })?;
    let values = out
        .drain(n * dims..)
        .map(|g| {
            (0..dims)
                .map(|t| targets.value_and_gradient(t, &g.logits).0)
                .collect()
        })
        .collect();
    cost.points += n;
    cost.backwards += n * dims;
    cost.calls += 1;
    Ok((out, values))
}

/// The targets' values (`[target]`) at a single point, from its rows of a gradient call.
fn values_of(out: &[glassbox_runtime::RowGradients], targets: &Targets) -> Vec<f64> {
    out.iter()
        .enumerate()
        .map(|(t, g)| targets.value_and_gradient(t, &g.logits).0)
        .collect()
}

/// The input embeddings `x` with the input's tokens (`units`) replaced by the baseline; the
/// template stays.
fn baseline_input(
    model: &Model,
    x: &[f32],
    units: &std::ops::Range<usize>,
    baseline: Baseline,
) -> Result<Vec<f32>, AttributionError> {
    let d = model.config().hidden_size;
    let row = match baseline {
        Baseline::Zero => vec![0f32; d],
        Baseline::Pad => model.embed(&[special_token(model, true)?])?.data,
        Baseline::Unk => model.embed(&[special_token(model, false)?])?.data,
    };
    let mut base = x.to_vec();
    for i in units.clone() {
        base[i * d..(i + 1) * d].copy_from_slice(&row);
    }
    Ok(base)
}

/// Target values (`[point][target]`) at embedding points: one batched fast forward.
fn values_at(
    model: &Model,
    points: impl Iterator<Item = ValuePoint>,
    targets: &Targets,
    cost: &mut GradientCost,
) -> Result<Vec<Vec<f64>>, AttributionError> {
    let answer = targets.answer.len();
    let batch = points
        .map(|p| {
            Row::embeddings(p.embeddings).with_logits(LogitsAt::Range(p.first..p.first + answer))
        })
        .collect();
    let out = model.forward(batch, &Capture::none())?;
    cost.calls += 1;
    Ok(out
        .into_iter()
        .map(|o| {
            let logits = o.logits.expect("logits were asked for").values;
            (0..targets.formulas.len())
                .map(|t| targets.value_and_gradient(t, &logits).0)
                .collect()
        })
        .collect())
}

/// Nodes and weights of `n`-point Gauss–Legendre quadrature on `[0, 1]` (Newton's method on
/// the Legendre polynomial from Chebyshev-like starting points).
fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    (1..=n)
        .map(|i| {
            let mut x = (std::f64::consts::PI * (i as f64 - 0.25) / (n as f64 + 0.5)).cos();
            let mut derivative = 1.0;
            for _ in 0..100 {
                let (mut p0, mut p1) = (1.0, x);
                for k in 2..=n {
                    let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                    p0 = p1;
                    p1 = p2;
                }
                if n == 1 {
                    p0 = 1.0;
                }
                derivative = n as f64 * (x * p1 - p0) / (x * x - 1.0);
                let step = p1 / derivative;
                x -= step;
                if step.abs() < 1e-15 {
                    break;
                }
            }
            let weight = 2.0 / ((1.0 - x * x) * derivative * derivative);
            ((x + 1.0) / 2.0, weight / 2.0)
        })
        .collect()
}

/// A standard normal draw (Box–Muller), so the noise depends on the seed alone.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u: f64 = 1.0 - rng.r#gen::<f64>();
    let v: f64 = rng.r#gen::<f64>();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// `acc += weight · g`, accumulated in f64 (a quadrature's or an average's sum).
fn add_scaled(acc: &mut [f64], weight: f64, g: &[f32]) {
    acc.iter_mut()
        .zip(g)
        .for_each(|(a, &v)| *a += weight * v as f64);
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_integrates_polynomials_exactly() {
        for n in [1, 2, 5, 32] {
            let rule = gauss_legendre(n);
            assert!((rule.iter().map(|r| r.1).sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(
                rule.iter()
                    .all(|&(a, w)| (0.0..=1.0).contains(&a) && w > 0.0)
            );
            // Exact up to degree 2n - 1: ∫ x^k dx = 1 / (k + 1).
            let k = 2 * n as i32 - 1;
            let integral: f64 = rule.iter().map(|&(a, w)| w * a.powi(k)).sum();
            assert!((integral - 1.0 / (k as f64 + 1.0)).abs() < 1e-12, "n = {n}");
        }
    }
}
