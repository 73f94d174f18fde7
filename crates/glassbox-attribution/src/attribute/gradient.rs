//! Gradient methods: saliency, gradient × input, integrated gradients and SmoothGrad, all with
//! respect to the input embeddings of the real model (through the runtime's hand-written
//! backward, [`Model::gradients`]).
//!
//! Each needs one forward and one backward per target per point (integrated gradients' steps,
//! SmoothGrad's noisy samples), and all of a method's points run as one batched call; nothing
//! is decoded token by token. Scores are per input token; words and sentences are sums of
//! them, formed when the result is viewed.

use glassbox_runtime::{Capture, GradientRow, LogitsAt, Model, Row};
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
}

impl GradientMethod {
    pub fn name(&self) -> &'static str {
        match self {
            GradientMethod::Saliency => "saliency",
            GradientMethod::GradientXInput => "gradient_x_input",
            GradientMethod::IntegratedGradients { .. } => "integrated_gradients",
            GradientMethod::SmoothGrad { .. } => "smoothgrad",
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
        }
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
}

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
    let mut cost = GradientCost::default();
    // Only the rows predicting the answer feed any target.
    let answer_rows = input.first..input.first + targets.answer.len();
    let span = units.start * d..units.end * d;

    // Gradients (`[point][target]`, the input's rows only) at every point, in one call.
    let mut grads_at = |points: Vec<Vec<f32>>| -> Result<Vec<Vec<Vec<f32>>>, AttributionError> {
        let n = points.len();
        let rows: Vec<GradientRow> = points
            .into_iter()
            .flat_map(|p| std::iter::repeat_n(p, dims))
            .map(|embeddings| GradientRow::new(embeddings, answer_rows.clone().collect()))
            .collect();
        let out = model.gradients(rows, &[], &|r, logits| {
            targets.value_and_gradient(r % dims, logits).1
        })?;
        cost.points += n;
        cost.backwards += n * dims;
        cost.calls += 1;
        Ok(out
            .chunks(dims)
            .map(|per_target| {
                per_target
                    .iter()
                    .map(|g| g.input.data[span.clone()].to_vec())
                    .collect()
            })
            .collect())
    };
    let input_rows = x[span.clone()].to_vec();
    let per_token = |v: &[f32], f: &dyn Fn(&[f32], usize) -> f64| -> Vec<f64> {
        (0..units.len())
            .map(|i| f(&v[i * d..(i + 1) * d], i))
            .collect()
    };
    let norm = |g: &[f32], _: usize| g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();

    let mut diagnostics = json!({});
    let (scores, value_full) = match method {
        GradientMethod::Saliency => {
            let grads = grads_at(vec![x.clone()])?.remove(0);
            let values = values_at(model, &[&x], targets, input.first, &mut cost)?.remove(0);
            (grads.iter().map(|g| per_token(g, &norm)).collect(), values)
        }
        GradientMethod::GradientXInput => {
            let grads = grads_at(vec![x.clone()])?.remove(0);
            let values = values_at(model, &[&x], targets, input.first, &mut cost)?.remove(0);
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
            let base_row = match baseline {
                Baseline::Zero => vec![0f32; d],
                Baseline::Pad => model.embed(&[special_token(model, true)?])?.data,
                Baseline::Unk => model.embed(&[special_token(model, false)?])?.data,
            };
            // The baseline replaces the input's tokens only; the template stays.
            let mut base = x.clone();
            for i in units.clone() {
                base[i * d..(i + 1) * d].copy_from_slice(&base_row);
            }
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
            let grads = grads_at(points)?;
            let mut sum = vec![vec![0f64; units.len() * d]; dims];
            for (&(_, weight), at_point) in rule.iter().zip(&grads) {
                for (s, g) in sum.iter_mut().zip(at_point) {
                    s.iter_mut()
                        .zip(g)
                        .for_each(|(a, &v)| *a += weight * v as f64);
                }
            }
            let mut ends = values_at(model, &[&x, &base], targets, input.first, &mut cost)?;
            let (at_base, at_input) = (ends.pop().expect("two"), ends.pop().expect("two"));
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
            let grads = grads_at(points)?;
            let mut sum = vec![vec![0f64; units.len() * d]; dims];
            for at_point in &grads {
                for (s, g) in sum.iter_mut().zip(at_point) {
                    s.iter_mut().zip(g).for_each(|(a, &v)| *a += v as f64);
                }
            }
            let values = values_at(model, &[&x], targets, input.first, &mut cost)?.remove(0);
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
    };
    Ok((
        Estimate {
            scores,
            std_errors: None,
            value_full,
            value_empty: Vec::new(),
            params: method.params(),
            diagnostics,
        },
        cost,
    ))
}

/// Target values (`[point][target]`) at embedding points: one batched fast forward.
fn values_at(
    model: &Model,
    points: &[&[f32]],
    targets: &Targets,
    first: usize,
    cost: &mut GradientCost,
) -> Result<Vec<Vec<f64>>, AttributionError> {
    let rows = first..first + targets.answer.len();
    let batch = points
        .iter()
        .map(|x| Row::embeddings(x.to_vec()).with_logits(LogitsAt::Range(rows.clone())))
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
