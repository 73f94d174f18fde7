//! Faithfulness of one explanation to the model, in two phases so that every model evaluation
//! all requested metrics need is one batch. [`FaithfulnessPlan::new`] lists the distinct
//! coalitions (which units are kept); the caller evaluates them however it removes units
//! (deleting text, a mask token, blocking attention) and [`FaithfulnessPlan::finish`] turns the
//! values into metrics. Keeping the model out makes every formula checkable by hand.
//!
//! ```
//! use glassbox_eval::{FaithfulnessPlan, MetricRequest, TargetView};
//!
//! // A toy additive "model": f(kept) = 0.5·kept₀ + 0.2·kept₁.
//! let oracle = |coalitions: &[Vec<bool>]| -> Vec<Vec<f64>> {
//!     let w = [0.5, 0.2];
//!     coalitions
//!         .iter()
//!         .map(|kept| vec![kept.iter().zip(w).filter(|(k, _)| **k).map(|(_, w)| w).sum::<f64>()])
//!         .collect()
//! };
//! let requests = [MetricRequest::parse("topk_drop:1").unwrap()];
//! let plan = FaithfulnessPlan::new(&[0.9, 0.1], &requests, 0).unwrap();
//! let values = oracle(plan.coalitions());
//! let results = plan.finish(&values, &TargetView::new(0)).unwrap();
//! // Removing the top unit (unit 0) drops f from 0.7 to 0.2.
//! assert!((results[0].value.unwrap() - 0.5).abs() < 1e-12);
//! ```

use std::collections::{BTreeSet, HashMap};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::EvalError;
use crate::input::check_scores;
use crate::rationale::{bin_size, keeping, ranking, top, without};
use crate::request::{
    Aopc, AopcMode, CONTRASTIVE_BINS_PERCENT, Direction, ERASER_BINS_PERCENT, FERRET_BINS_PERCENT,
    FlipMode, MetricRequest, metric_names,
};
use crate::stats::{kendall_tau_b, mean, spearman};

/// Index of the full coalition (every unit kept) in [`FaithfulnessPlan::coalitions`].
pub const FULL_COALITION: usize = 0;
/// Index of the empty coalition (no unit kept).
pub const EMPTY_COALITION: usize = 1;
/// Probability that a random removal of `infidelity` removes a unit: 1/2 makes every subset I
/// equally likely, so no removal size is favoured (the brief's choice for text units).
const INFIDELITY_REMOVAL_PROBABILITY: f64 = 0.5;

/// Which dimensions of the value vectors the metrics read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetView {
    /// The dimension that is f (a probability, or a log-probability for generation).
    pub value: usize,
    /// The competing labels' dimensions for decision flips; the predicted label is the argmax
    /// over them (the first one on ties).
    pub labels: Option<Vec<usize>>,
    /// The foil b's dimension for contrastive curves, which use `values[value] − values[foil]`.
    pub foil: Option<usize>,
}

impl TargetView {
    pub fn new(value: usize) -> Self {
        TargetView {
            value,
            labels: None,
            foil: None,
        }
    }

    pub fn with_labels(mut self, labels: Vec<usize>) -> Self {
        self.labels = Some(labels);
        self
    }

    pub fn with_foil(mut self, foil: usize) -> Self {
        self.foil = Some(foil);
        self
    }
}

/// One step of a metric's curve: a bin, a deletion step, a masking level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// The bin's nominal fraction of units (k/n for cumulative and flip steps).
    pub fraction: f64,
    /// Units actually in the rationale (fewer than the bin's floor(q·n) when only positive
    /// scores are kept).
    pub k: usize,
    /// The step's value: C or S for AOPC, the drop for top-k, 1/0 for a flip, p(a) − p(b) for
    /// contrastive curves.
    pub value: f64,
}

/// The result of one metric on one explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    /// Registry name (`comprehensiveness`, ...).
    pub metric: String,
    pub mode: Option<String>,
    /// The canonical request (`comprehensiveness:ferret`, `topk_drop:3`): enough to recompute.
    pub spec: String,
    pub direction: Direction,
    /// The main number; `None` when it is undefined for this explanation (see `undefined`).
    pub value: Option<f64>,
    /// Why `value` is `None`, e.g. a correlation with constant scores.
    pub undefined: Option<String>,
    pub curve: Vec<CurvePoint>,
    /// Per-unit numbers: the leave-one-out drops Δ_i of `rankdel` and `tau_loo`.
    pub per_unit: Option<Vec<f64>>,
    pub n_units: usize,
    /// Distinct coalitions (model evaluations) this metric needed, the full one included.
    pub evaluations: usize,
    /// The perturbation operator the values came from; the caller fills it in.
    pub perturbation: Option<String>,
    /// The target the values are of; the caller fills it in.
    pub target: Option<String>,
}

/// A planned step: a rationale of `k` units at nominal `fraction`, evaluated as `coalition`.
#[derive(Debug, Clone)]
struct Point {
    fraction: f64,
    k: usize,
    coalition: usize,
}

/// What a metric does with the values, with the coalitions it reads.
#[derive(Debug, Clone)]
enum Steps {
    /// AOPC and top-k drop: the mean over points of f(x) − f(coalition).
    Drops(Vec<Point>),
    /// DF_MIT: does the predicted label change at this coalition (x \ top-1)?
    FlipAfterTop(Point),
    /// DF_Frac: cumulative top-j deletions, j = 1..n.
    FlipFraction(Vec<Point>),
    /// x \ {i} for every unit i, correlated with the scores.
    LeaveOneOut {
        coalitions: Vec<usize>,
        correlation: Correlation,
    },
    /// Random removals I: Σ_{i∈I} s_i and the coalition x \ I.
    Infidelity(Vec<(f64, usize)>),
    /// Masking levels, read as p(a) − p(b).
    Contrastive(Vec<Point>),
}

#[derive(Debug, Clone, Copy)]
enum Correlation {
    Spearman,
    KendallTauB,
}

impl Steps {
    /// The coalitions read, the full one always among them.
    fn coalitions(&self) -> BTreeSet<usize> {
        let mut used = BTreeSet::from([FULL_COALITION]);
        match self {
            Steps::Drops(points) | Steps::FlipFraction(points) | Steps::Contrastive(points) => {
                used.extend(points.iter().map(|p| p.coalition));
            }
            Steps::FlipAfterTop(point) => {
                used.insert(point.coalition);
            }
            Steps::LeaveOneOut { coalitions, .. } => used.extend(coalitions),
            Steps::Infidelity(draws) => used.extend(draws.iter().map(|(_, c)| *c)),
        }
        used
    }
}

#[derive(Debug, Clone)]
struct PlannedMetric {
    request: MetricRequest,
    steps: Steps,
}

/// Distinct coalitions, each listed once however many metrics read it.
struct CoalitionSet {
    n: usize,
    coalitions: Vec<Vec<bool>>,
    index: HashMap<Vec<bool>, usize>,
}

impl CoalitionSet {
    /// Starts with the full and the empty coalition at [`FULL_COALITION`] and
    /// [`EMPTY_COALITION`]: every metric needs f(x), and callers report f(∅) as the baseline.
    fn new(n: usize) -> Self {
        let mut set = CoalitionSet {
            n,
            coalitions: Vec::new(),
            index: HashMap::new(),
        };
        set.add(vec![true; n]);
        set.add(vec![false; n]);
        set
    }

    fn add(&mut self, kept: Vec<bool>) -> usize {
        if let Some(&i) = self.index.get(&kept) {
            return i;
        }
        self.coalitions.push(kept.clone());
        self.index.insert(kept, self.coalitions.len() - 1);
        self.coalitions.len() - 1
    }

    fn without(&mut self, removed: &[usize]) -> usize {
        self.add(without(self.n, removed))
    }

    fn keeping(&mut self, kept: &[usize]) -> usize {
        self.add(keeping(self.n, kept))
    }
}

/// The coalitions the metrics of one explanation need, and how to read their values.
#[derive(Debug, Clone)]
pub struct FaithfulnessPlan {
    scores: Vec<f64>,
    coalitions: Vec<Vec<bool>>,
    metrics: Vec<PlannedMetric>,
}

impl FaithfulnessPlan {
    /// Plans `requests` for an explanation with unit scores `scores` (n = `scores.len()`).
    /// `seed` seeds the random removals of `infidelity` (rand's `StdRng`; each infidelity
    /// request draws from its own generator seeded with `seed`, so adding other metrics does
    /// not change its draws).
    pub fn new(
        scores: &[f64],
        requests: &[MetricRequest],
        seed: u64,
    ) -> Result<FaithfulnessPlan, EvalError> {
        check_scores("scores", scores)?;
        if requests.is_empty() {
            return Err(EvalError::NoMetrics {
                valid: metric_names(),
            });
        }
        let order = ranking(scores);
        let mut set = CoalitionSet::new(scores.len());
        let metrics = requests
            .iter()
            .map(|&request| {
                let steps = plan_steps(request, scores, &order, seed, &mut set)?;
                Ok(PlannedMetric { request, steps })
            })
            .collect::<Result<_, EvalError>>()?;
        Ok(FaithfulnessPlan {
            scores: scores.to_vec(),
            coalitions: set.coalitions,
            metrics,
        })
    }

    /// The distinct coalitions to evaluate (`kept[i]` = unit i kept): the full one first, the
    /// empty one second, then the rest in the order the metrics first need them.
    pub fn coalitions(&self) -> &[Vec<bool>] {
        &self.coalitions
    }

    pub fn n_units(&self) -> usize {
        self.scores.len()
    }

    /// The metrics from the model's values: `values[c][d]` is dimension d of the value vector
    /// of coalition c (in the order of [`coalitions`](Self::coalitions)), `target` says which
    /// dimensions to read. Results come in the order of the requests.
    pub fn finish(
        &self,
        values: &[Vec<f64>],
        target: &TargetView,
    ) -> Result<Vec<MetricResult>, EvalError> {
        let values = Values::check(values, self.coalitions.len(), target)?;
        self.metrics
            .iter()
            .map(|m| self.finish_one(m, &values))
            .collect()
    }

    fn finish_one(&self, m: &PlannedMetric, values: &Values) -> Result<MetricResult, EvalError> {
        let n = self.scores.len();
        let spec = m.request.to_string();
        let f_x = values.f(FULL_COALITION);
        let mut per_unit = None;
        let (value, curve) = match &m.steps {
            Steps::Drops(points) => {
                let curve: Vec<CurvePoint> = points
                    .iter()
                    .map(|p| p.at(f_x - values.f(p.coalition)))
                    .collect();
                (mean_of(&curve), curve)
            }
            Steps::FlipAfterTop(point) => {
                let labels = values.labels(&spec)?;
                let flipped =
                    values.label(point.coalition, labels) != values.label(FULL_COALITION, labels);
                let flip = if flipped { 1.0 } else { 0.0 };
                (Some(flip), vec![point.at(flip)])
            }
            Steps::FlipFraction(points) => {
                let labels = values.labels(&spec)?;
                let predicted = values.label(FULL_COALITION, labels);
                let curve: Vec<CurvePoint> = points
                    .iter()
                    .map(|p| {
                        let flipped = values.label(p.coalition, labels) != predicted;
                        p.at(if flipped { 1.0 } else { 0.0 })
                    })
                    .collect();
                // METRICS.md §4, DF_Frac = (j* + 1) / (n + 1), read with j* counted from 0:
                // j* = the top units deleted at the first flip minus one, n if none flips, so
                // the fraction lies in (0, 1] and "never flips" is exactly 1.
                let j_star = curve.iter().find(|p| p.value == 1.0).map_or(n, |p| p.k - 1);
                (Some((j_star + 1) as f64 / (n + 1) as f64), curve)
            }
            Steps::LeaveOneOut {
                coalitions,
                correlation,
            } => {
                let deltas: Vec<f64> = coalitions.iter().map(|&c| f_x - values.f(c)).collect();
                let value = match correlation {
                    Correlation::Spearman => spearman(&self.scores, &deltas),
                    Correlation::KendallTauB => kendall_tau_b(&self.scores, &deltas),
                };
                per_unit = Some(deltas);
                (value, Vec::new())
            }
            Steps::Infidelity(draws) => {
                let errors: Vec<f64> = draws
                    .iter()
                    .map(|&(removed_score, c)| (removed_score - (f_x - values.f(c))).powi(2))
                    .collect();
                (mean(&errors), Vec::new())
            }
            Steps::Contrastive(points) => {
                let foil = values.foil(&spec)?;
                let g_x = values.contrast(FULL_COALITION, foil);
                let drops: Vec<f64> = points
                    .iter()
                    .map(|p| g_x - values.contrast(p.coalition, foil))
                    .collect();
                let start = CurvePoint {
                    fraction: 0.0,
                    k: 0,
                    value: g_x,
                };
                let curve = std::iter::once(start)
                    .chain(
                        points
                            .iter()
                            .map(|p| p.at(values.contrast(p.coalition, foil))),
                    )
                    .collect();
                (mean(&drops), curve)
            }
        };
        Ok(MetricResult {
            metric: m.request.name().into(),
            mode: m.request.mode().map(String::from),
            spec,
            direction: m.request.direction(),
            undefined: value.is_none().then(|| undefined_reason(&m.steps).into()),
            value,
            curve,
            per_unit,
            n_units: n,
            evaluations: m.steps.coalitions().len(),
            perturbation: None,
            target: None,
        })
    }
}

impl Point {
    fn at(&self, value: f64) -> CurvePoint {
        CurvePoint {
            fraction: self.fraction,
            k: self.k,
            value,
        }
    }
}

fn mean_of(curve: &[CurvePoint]) -> Option<f64> {
    mean(&curve.iter().map(|p| p.value).collect::<Vec<_>>())
}

/// Why a metric of these steps can have no value (only AOPC with no bin left, and
/// correlations with a constant side, can).
fn undefined_reason(steps: &Steps) -> &'static str {
    match steps {
        Steps::LeaveOneOut { .. } => {
            "the scores or the leave-one-out drops are constant (or n = 1), so their rank \
             correlation is undefined"
        }
        _ => {
            "no rationale bin is left: ferret keeps only units with s_i > 0 and skips empty and \
             repeated bins"
        }
    }
}

/// The planned steps of one request.
fn plan_steps(
    request: MetricRequest,
    scores: &[f64],
    order: &[usize],
    seed: u64,
    set: &mut CoalitionSet,
) -> Result<Steps, EvalError> {
    let n = scores.len();
    let fraction = |k: usize| k as f64 / n as f64;
    Ok(match request {
        MetricRequest::Comprehensiveness(aopc) => {
            Steps::Drops(aopc_points(aopc, scores, order, |r| set.without(r)))
        }
        MetricRequest::Sufficiency(aopc) => {
            Steps::Drops(aopc_points(aopc, scores, order, |r| set.keeping(r)))
        }
        MetricRequest::TopKDrop { k } => {
            if k > n {
                return Err(EvalError::KOutOfRange {
                    what: "topk_drop",
                    k,
                    min: 0,
                    max: n,
                });
            }
            Steps::Drops(vec![Point {
                fraction: fraction(k),
                k,
                coalition: set.without(&order[..k]),
            }])
        }
        MetricRequest::DecisionFlip(FlipMode::Mit) => Steps::FlipAfterTop(Point {
            fraction: fraction(1),
            k: 1,
            coalition: set.without(&order[..1]),
        }),
        MetricRequest::DecisionFlip(FlipMode::Frac) => Steps::FlipFraction(
            (1..=n)
                .map(|j| Point {
                    fraction: fraction(j),
                    k: j,
                    coalition: set.without(&order[..j]),
                })
                .collect(),
        ),
        MetricRequest::RankDel | MetricRequest::TauLoo => Steps::LeaveOneOut {
            coalitions: (0..n).map(|i| set.without(&[i])).collect(),
            correlation: if request == MetricRequest::RankDel {
                Correlation::Spearman
            } else {
                Correlation::KendallTauB
            },
        },
        MetricRequest::Infidelity { samples } => {
            if samples == 0 {
                return Err(EvalError::ZeroSamples { what: "infidelity" });
            }
            let mut rng = StdRng::seed_from_u64(seed);
            Steps::Infidelity(
                (0..samples)
                    .map(|_| {
                        let removed: Vec<usize> = (0..n)
                            .filter(|_| rng.gen_bool(INFIDELITY_REMOVAL_PROBABILITY))
                            .collect();
                        let removed_score = removed.iter().map(|&i| scores[i]).sum();
                        (removed_score, set.without(&removed))
                    })
                    .collect(),
            )
        }
        MetricRequest::Contrastive => Steps::Contrastive(
            CONTRASTIVE_BINS_PERCENT
                .iter()
                .map(|&percent| {
                    let k = bin_size(percent, n);
                    Point {
                        fraction: f64::from(percent) / 100.0,
                        k,
                        coalition: set.without(&order[..k]),
                    }
                })
                .collect(),
        ),
    })
}

/// The bins of an AOPC mode, as (nominal fraction, floor(q·n) units), the k = 0 term included
/// where the mode averages over it.
fn aopc_bins(mode: AopcMode, n: usize) -> Vec<(f64, usize)> {
    let percent_bins = |bins: &[u32]| -> Vec<(f64, usize)> {
        bins.iter()
            .map(|&p| (f64::from(p) / 100.0, bin_size(p, n)))
            .collect()
    };
    match mode {
        AopcMode::Eraser => {
            let mut bins = vec![(0.0, 0)];
            bins.extend(percent_bins(&ERASER_BINS_PERCENT));
            bins
        }
        AopcMode::EraserCode => percent_bins(&ERASER_BINS_PERCENT),
        AopcMode::Ferret => percent_bins(&FERRET_BINS_PERCENT),
        AopcMode::Cumulative => (0..=n).map(|k| (k as f64 / n as f64, k)).collect(),
    }
}

/// The AOPC points of a mode, each rationale turned into a coalition by `coalition` (removing
/// it for comprehensiveness, keeping only it for sufficiency). In ferret's distinct-bin mode a
/// bin is skipped when its rationale equals the previous bin's; the "previous" rationale starts
/// as the empty one, so empty rationales (the k = 0 term, which ferret does not average over)
/// are skipped too. Rationales are nested prefixes, so equal sets are equal sizes.
fn aopc_points(
    aopc: Aopc,
    scores: &[f64],
    order: &[usize],
    mut coalition: impl FnMut(&[usize]) -> usize,
) -> Vec<Point> {
    let distinct = aopc.mode == AopcMode::Ferret;
    let mut previous = 0;
    let mut points = Vec::new();
    for (fraction, k) in aopc_bins(aopc.mode, scores.len()) {
        let rationale = top(order, scores, k, aopc.keeps_only_positive());
        if distinct && rationale.len() == previous {
            continue;
        }
        previous = rationale.len();
        points.push(Point {
            fraction,
            k: rationale.len(),
            coalition: coalition(rationale),
        });
    }
    points
}

/// Value rows checked against the plan and the target view.
struct Values<'a> {
    rows: &'a [Vec<f64>],
    view: &'a TargetView,
}

impl<'a> Values<'a> {
    /// Checks one row per coalition, equal row lengths, the view's dimensions in range and
    /// finite values in them, so that reading them afterwards cannot fail.
    fn check(
        rows: &'a [Vec<f64>],
        coalitions: usize,
        view: &'a TargetView,
    ) -> Result<Self, EvalError> {
        if rows.len() != coalitions {
            return Err(EvalError::ValueRows {
                expected: coalitions,
                found: rows.len(),
            });
        }
        let dims = rows.first().map_or(0, Vec::len);
        if let Some(c) = rows.iter().position(|row| row.len() != dims) {
            return Err(EvalError::ValueRowShape {
                coalition: c,
                expected: dims,
                found: rows[c].len(),
            });
        }
        let mut used = vec![("value", view.value)];
        used.extend(view.foil.map(|d| ("foil", d)));
        used.extend(view.labels.iter().flatten().map(|&d| ("label", d)));
        for &(role, dim) in &used {
            if dim >= dims {
                return Err(EvalError::TargetDim { role, dim, dims });
            }
            for (coalition, row) in rows.iter().enumerate() {
                if !row[dim].is_finite() {
                    return Err(EvalError::NonFiniteValue {
                        coalition,
                        dim,
                        value: row[dim],
                    });
                }
            }
        }
        Ok(Values { rows, view })
    }

    fn f(&self, coalition: usize) -> f64 {
        self.rows[coalition][self.view.value]
    }

    fn contrast(&self, coalition: usize, foil: usize) -> f64 {
        self.rows[coalition][self.view.value] - self.rows[coalition][foil]
    }

    fn labels(&self, metric: &str) -> Result<&'a [usize], EvalError> {
        match self.view.labels.as_deref() {
            Some(labels) if !labels.is_empty() => Ok(labels),
            _ => Err(EvalError::MissingLabels {
                metric: metric.into(),
            }),
        }
    }

    fn foil(&self, metric: &str) -> Result<usize, EvalError> {
        self.view.foil.ok_or_else(|| EvalError::MissingFoil {
            metric: metric.into(),
        })
    }

    /// The predicted label at a coalition: the position in `labels` of the largest value, the
    /// first on ties.
    fn label(&self, coalition: usize, labels: &[usize]) -> usize {
        let row = &self.rows[coalition];
        let mut best = 0;
        for (i, &d) in labels.iter().enumerate() {
            if row[d] > row[labels[best]] {
                best = i;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::close;

    /// An additive model: f(kept) = bias + Σ_{i kept} w_i, as one-dimensional value rows.
    fn additive(plan: &FaithfulnessPlan, w: &[f64], bias: f64) -> Vec<Vec<f64>> {
        plan.coalitions()
            .iter()
            .map(|kept| {
                let f: f64 = kept
                    .iter()
                    .zip(w)
                    .filter(|(k, _)| **k)
                    .map(|(_, w)| w)
                    .sum();
                vec![bias + f]
            })
            .collect()
    }

    fn run(scores: &[f64], spec: &str, w: &[f64], bias: f64) -> MetricResult {
        let plan =
            FaithfulnessPlan::new(scores, &[MetricRequest::parse(spec).unwrap()], 7).unwrap();
        let values = additive(&plan, w, bias);
        plan.finish(&values, &TargetView::new(0)).unwrap().remove(0)
    }

    fn curve(result: &MetricResult) -> Vec<(f64, usize, f64)> {
        result
            .curve
            .iter()
            .map(|p| (p.fraction, p.k, p.value))
            .collect()
    }

    fn assert_curve(result: &MetricResult, expected: &[(f64, usize, f64)]) {
        let got = curve(result);
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(
                close(g.0, e.0) && g.1 == e.1 && close(g.2, e.2),
                "{got:?} vs {expected:?}"
            );
        }
    }

    /// Ten units ranked in document order, w = [1.0, 0.9, ..., 0.1].
    fn ten() -> (Vec<f64>, Vec<f64>) {
        let scores = (0..10).map(|i| (10 - i) as f64).collect();
        let w = (0..10).map(|i| (10 - i) as f64 / 10.0).collect();
        (scores, w)
    }

    #[test]
    fn eraser_modes_by_hand() {
        let (scores, w) = ten();
        // Bins 1, 5, 10, 20, 50% of 10 → k = 0, 0, 1, 2, 5; C(top k) = Σ of the k largest w:
        // 0, 0, 1.0, 1.0 + 0.9 = 1.9, 1.0 + 0.9 + 0.8 + 0.7 + 0.6 = 4.0.
        let eraser = run(&scores, "comprehensiveness:eraser", &w, 0.2);
        // With the k = 0 term: (0 + 0 + 0 + 1.0 + 1.9 + 4.0) / 6 = 6.9 / 6 = 1.15.
        assert!(close(eraser.value.unwrap(), 1.15));
        assert_curve(
            &eraser,
            &[
                (0.0, 0, 0.0),
                (0.01, 0, 0.0),
                (0.05, 0, 0.0),
                (0.1, 1, 1.0),
                (0.2, 2, 1.9),
                (0.5, 5, 4.0),
            ],
        );
        // Full, x \ top1, x \ top2, x \ top5 (k = 0 bins are the full coalition).
        assert_eq!(eraser.evaluations, 4);
        assert_eq!(eraser.direction, Direction::HigherIsBetter);
        assert_eq!(eraser.mode.as_deref(), Some("eraser"));
        // Reference code: bins only, 6.9 / 5 = 1.38.
        let code = run(&scores, "comprehensiveness:eraser_code", &w, 0.2);
        assert!(close(code.value.unwrap(), 1.38));
        assert_eq!(code.curve.len(), 5);
    }

    #[test]
    fn ferret_uses_distinct_positive_bins() {
        let (scores, w) = ten();
        // Bins 10..100% of 10 → k = 1..10, all distinct; C = cumulative sums of w:
        // 1.0, 1.9, 2.7, 3.4, 4.0, 4.5, 4.9, 5.2, 5.4, 5.5, sum 38.5, mean 3.85.
        let r = run(&scores, "comprehensiveness:ferret", &w, 0.0);
        assert!(close(r.value.unwrap(), 3.85));
        assert_eq!(r.evaluations, 11);

        // n = 4, s = [0.4, 0.1, 0.3, -0.2] → ranking 0, 2, 1, 3 with three positive scores.
        // Bins 10..100% of 4 → floor k = 0, 0, 1, 1, 2, 2, 2, 3, 3, 4; only positive caps at 3:
        // 0, 0, 1, 1, 2, 2, 2, 3, 3, 3. Distinct non-empty: 30% {0}, 50% {0,2}, 80% {0,2,1}.
        let scores = [0.4, 0.1, 0.3, -0.2];
        let w = [0.5, 0.05, 0.2, -0.1];
        // f(x) = 0.1 + 0.5 + 0.05 + 0.2 − 0.1 = 0.75.
        // C: f(x) − f(x \ {0}) = 0.5; − f(x \ {0,2}) = 0.7; − f(x \ {0,2,1}) = 0.75.
        let c = run(&scores, "comprehensiveness:ferret", &w, 0.1);
        assert_curve(&c, &[(0.3, 1, 0.5), (0.5, 2, 0.7), (0.8, 3, 0.75)]);
        // (0.5 + 0.7 + 0.75) / 3 = 0.65
        assert!(close(c.value.unwrap(), 0.65));
        // S: f(r) = 0.1 + Σ_r w = 0.6, 0.8, 0.85 → S = 0.15, −0.05, −0.1, mean 0.
        let s = run(&scores, "sufficiency:ferret", &w, 0.1);
        assert_curve(&s, &[(0.3, 1, 0.15), (0.5, 2, -0.05), (0.8, 3, -0.1)]);
        assert!(close(s.value.unwrap(), 0.0));
        assert_eq!(s.direction, Direction::LowerIsBetter);
    }

    #[test]
    fn cumulative_mode_averages_n_plus_one_steps() {
        let scores = [0.4, 0.1, 0.3, -0.2];
        let w = [0.5, 0.05, 0.2, -0.1];
        // Deleting top-k, k = 0..4 (order 0, 2, 1, 3): C = 0, 0.5, 0.7, 0.75,
        // 0.75 − (0.75 − 0.65) = 0.65 (f(∅) = 0.1). Mean 2.6 / 5 = 0.52.
        let c = run(&scores, "comprehensiveness:cumulative", &w, 0.1);
        assert!(close(c.value.unwrap(), 0.52));
        assert_eq!(c.curve.len(), 5);
        assert_eq!(c.evaluations, 5);
        // Keeping top-k: f = 0.1, 0.6, 0.8, 0.85, 0.75 → S = 0.65, 0.15, −0.05, −0.1, 0;
        // sum 0.65, mean 0.13.
        let s = run(&scores, "sufficiency:cumulative", &w, 0.1);
        assert!(close(s.value.unwrap(), 0.13));
        // With only positive scores unit 3 is never removed: C = 0, 0.5, 0.7, 0.75, 0.75,
        // mean 2.7 / 5 = 0.54.
        let p = run(&scores, "comprehensiveness:cumulative:positive", &w, 0.1);
        assert!(close(p.value.unwrap(), 0.54));
    }

    #[test]
    fn fewer_units_than_bins_gives_empty_bins() {
        // n = 4: ERASER bins → k = 0, 0, 0, 0, 2 (50% of 4). C(top2 = {0, 2}) = 0.7.
        let scores = [0.4, 0.1, 0.3, -0.2];
        let w = [0.5, 0.05, 0.2, -0.1];
        let r = run(&scores, "comprehensiveness", &w, 0.1);
        // (0 · 5 + 0.7) / 6
        assert!(close(r.value.unwrap(), 0.7 / 6.0));
        // Sufficiency's k = 0 terms keep nothing: S(∅) = f(x) − f(∅) = 0.75 − 0.1 = 0.65, five
        // times; S({0,2}) = 0.75 − 0.8 = −0.05 → (5 · 0.65 − 0.05) / 6 = 3.2 / 6.
        let s = run(&scores, "sufficiency", &w, 0.1);
        assert!(close(s.value.unwrap(), 3.2 / 6.0));
        assert_eq!(s.evaluations, 3, "full, empty, {{0, 2}} kept");
        // n = 3, ferret: 10..100% → k = 0, 0, 0, 1, 1, 1, 2, 2, 2, 3. Ranking 1, 0, 2.
        let f = run(
            &[0.2, 0.5, 0.1],
            "comprehensiveness:ferret",
            &[0.2, 0.5, 0.1],
            0.0,
        );
        // C: 0.5, 0.5 + 0.2 = 0.7, 0.8 at 40%, 70%, 100%; mean 2.0 / 3.
        assert_curve(&f, &[(0.4, 1, 0.5), (0.7, 2, 0.7), (1.0, 3, 0.8)]);
        assert!(close(f.value.unwrap(), 2.0 / 3.0));
    }

    #[test]
    fn one_unit() {
        // Every ERASER bin of 1 unit is empty: C = 0.
        let r = run(&[0.3], "comprehensiveness", &[0.4], 0.1);
        assert!(close(r.value.unwrap(), 0.0));
        assert_eq!(r.evaluations, 1);
        // Cumulative: (0 + (0.5 − 0.1)) / 2 = 0.2.
        let c = run(&[0.3], "comprehensiveness:cumulative", &[0.4], 0.1);
        assert!(close(c.value.unwrap(), 0.2));
        // A single score has no rank correlation.
        let loo = run(&[0.3], "rankdel", &[0.4], 0.1);
        assert_eq!(loo.value, None);
        assert!(loo.undefined.is_some());
        assert_eq!(loo.per_unit, Some(vec![0.4]));
        let plan = FaithfulnessPlan::new(&[0.3], &[MetricRequest::RankDel], 0).unwrap();
        assert_eq!(plan.coalitions(), &[vec![true], vec![false]]);
    }

    #[test]
    fn all_zero_scores_rank_in_document_order() {
        let w = [0.5, 0.05, 0.2, -0.1];
        // Top 2 of 4 tied scores are units 0 and 1: C = 0.5 + 0.05 = 0.55, over 6 terms.
        let r = run(&[0.0; 4], "comprehensiveness", &w, 0.1);
        assert!(close(r.value.unwrap(), 0.55 / 6.0));
        // ferret keeps no unit with s_i <= 0: no bin, no value.
        let f = run(&[0.0; 4], "comprehensiveness:ferret", &w, 0.1);
        assert_eq!((f.value, f.curve.len(), f.evaluations), (None, 0, 1));
        assert!(f.undefined.unwrap().contains("ferret"));
        // Constant scores have no rank correlation with the drops.
        assert_eq!(run(&[0.0; 4], "tau_loo", &w, 0.1).value, None);
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        // Units 1 and 2 tie; unit 1 is removed first: drop w_1 = 0.3, not w_2 = 0.6.
        let r = run(
            &[0.2, 0.5, 0.5, 0.1],
            "topk_drop:1",
            &[0.1, 0.3, 0.6, 0.0],
            0.0,
        );
        assert!(close(r.value.unwrap(), 0.3));
        assert_curve(&r, &[(0.25, 1, 0.3)]);
    }

    #[test]
    fn topk_drop_bounds() {
        let scores = [0.4, 0.1, 0.3, -0.2];
        let w = [0.5, 0.05, 0.2, -0.1];
        // Removing top 2 = {0, 2}: 0.5 + 0.2 = 0.7.
        let r = run(&scores, "topk_drop:2", &w, 0.1);
        assert!(close(r.value.unwrap(), 0.7));
        assert_eq!(r.evaluations, 2);
        let zero = run(&scores, "topk_drop:0", &w, 0.1);
        assert_eq!((zero.value, zero.evaluations), (Some(0.0), 1));
        assert_eq!(
            FaithfulnessPlan::new(&scores, &[MetricRequest::TopKDrop { k: 5 }], 0).unwrap_err(),
            EvalError::KOutOfRange {
                what: "topk_drop",
                k: 5,
                min: 0,
                max: 4
            }
        );
    }

    #[test]
    fn leave_one_out_correlations() {
        // Additive model with bias 0: Δ_i = w_i = [0.5, 0.1, 0.3, −0.2].
        let scores = [0.4, 0.3, 0.2, 0.1];
        let w = [0.5, 0.1, 0.3, -0.2];
        // Ranks of s: 4, 3, 2, 1; of Δ: 4, 2, 3, 1; d = 0, 1, −1, 0, Σd² = 2;
        // ρ = 1 − 6 · 2 / (4 · 15) = 0.8.
        let rankdel = run(&scores, "rankdel", &w, 0.0);
        assert!(close(rankdel.value.unwrap(), 0.8));
        let deltas = rankdel.per_unit.clone().unwrap();
        assert!(
            deltas.iter().zip(w).all(|(d, w)| close(*d, w)),
            "{deltas:?}"
        );
        assert_eq!(rankdel.evaluations, 5);
        // Of 6 pairs only (1, 2) is discordant (s: 0.3 > 0.2, Δ: 0.1 < 0.3): (5 − 1) / 6.
        let tau = run(&scores, "tau_loo", &w, 0.0);
        assert!(close(tau.value.unwrap(), 4.0 / 6.0));
    }

    /// Value rows [p(a), p(b)] for three units ranked 0, 2, 1: p(a) = 0.3·kept₀ + 0.2·kept₂ +
    /// 0.1·kept₁ and a constant p(b).
    fn flip(p_b: f64, spec: &str) -> MetricResult {
        let plan =
            FaithfulnessPlan::new(&[0.5, 0.2, 0.3], &[MetricRequest::parse(spec).unwrap()], 0)
                .unwrap();
        let values: Vec<Vec<f64>> = plan
            .coalitions()
            .iter()
            .map(|k| {
                let a = [0.3, 0.1, 0.2]
                    .iter()
                    .zip(k)
                    .filter(|(_, k)| **k)
                    .map(|(w, _)| w)
                    .sum();
                vec![a, p_b]
            })
            .collect();
        let view = TargetView::new(0).with_labels(vec![0, 1]);
        plan.finish(&values, &view).unwrap().remove(0)
    }

    #[test]
    fn decision_flips() {
        // p(a) at x = 0.6 > 0.25: label a. x \ {0}: 0.3, still a → no flip.
        assert_eq!(flip(0.25, "decision_flip").value, Some(0.0));
        // x \ {0, 2}: 0.1 < 0.25 flips after 2 deletions, j* = 1: (1 + 1) / (3 + 1) = 0.5.
        let frac = flip(0.25, "decision_flip:frac");
        assert!(close(frac.value.unwrap(), 0.5));
        assert_curve(
            &frac,
            &[(1.0 / 3.0, 1, 0.0), (2.0 / 3.0, 2, 1.0), (1.0, 3, 1.0)],
        );
        assert_eq!(frac.evaluations, 4);
        // p(b) = 0.4: deleting unit 0 (0.3 < 0.4) flips: DF_MIT = 1, j* = 0 → 1 / 4.
        assert_eq!(flip(0.4, "decision_flip").value, Some(1.0));
        assert!(close(flip(0.4, "decision_flip:frac").value.unwrap(), 0.25));
        // p(b) = −1 never wins: j* = n = 3 → (3 + 1) / 4 = 1.
        assert!(close(flip(-1.0, "decision_flip:frac").value.unwrap(), 1.0));
    }

    #[test]
    fn decision_flip_needs_labels_and_contrastive_a_foil() {
        let requests = [MetricRequest::DecisionFlip(FlipMode::Mit)];
        let plan = FaithfulnessPlan::new(&[0.5, 0.2], &requests, 0).unwrap();
        let values = vec![vec![0.6, 0.4]; plan.coalitions().len()];
        assert!(matches!(
            plan.finish(&values, &TargetView::new(0)),
            Err(EvalError::MissingLabels { .. })
        ));
        assert!(matches!(
            plan.finish(&values, &TargetView::new(0).with_labels(vec![])),
            Err(EvalError::MissingLabels { .. })
        ));
        let plan = FaithfulnessPlan::new(&[0.5, 0.2], &[MetricRequest::Contrastive], 0).unwrap();
        let values = vec![vec![0.6, 0.4]; plan.coalitions().len()];
        assert!(matches!(
            plan.finish(&values, &TargetView::new(0)),
            Err(EvalError::MissingFoil { .. })
        ));
    }

    #[test]
    fn contrastive_curve() {
        // Ten units ranked in document order; p(a) = 0.1 · units kept, p(b) = 0.3.
        let (scores, _) = ten();
        let plan = FaithfulnessPlan::new(&scores, &[MetricRequest::Contrastive], 0).unwrap();
        let values: Vec<Vec<f64>> = plan
            .coalitions()
            .iter()
            .map(|k| vec![0.1 * k.iter().filter(|k| **k).count() as f64, 0.3])
            .collect();
        let r = plan
            .finish(&values, &TargetView::new(0).with_foil(1))
            .unwrap()
            .remove(0);
        // g(x) = 1.0 − 0.3 = 0.7; masking k = 1..9 units: g = 0.7 − 0.1k, drop 0.1k;
        // mean drop = 0.1 · 45 / 9 = 0.5.
        assert!(close(r.value.unwrap(), 0.5));
        assert_eq!(r.curve.len(), 10);
        assert!(close(r.curve[0].value, 0.7) && r.curve[0].k == 0);
        assert!(close(r.curve[3].value, 0.4) && r.curve[3].k == 3); // 30%: 0.7 − 0.3
        assert_eq!(r.evaluations, 10);
    }

    #[test]
    fn infidelity_of_an_exact_additive_explanation_is_zero() {
        // s = w on an additive model: Σ_{i∈I} s_i = f(x) − f(x \ I) for every I.
        let w = [0.5, -0.2, 0.1, 0.3, 0.05];
        let r = run(&w, "infidelity", &w, 0.4);
        assert!(r.value.unwrap().abs() < 1e-12);
        assert_eq!(r.direction, Direction::LowerIsBetter);
        assert!(r.evaluations <= 1 + 32);
    }

    #[test]
    fn infidelity_by_hand_with_one_unit() {
        // n = 1, s = 0.6, f(x) = 1.0, f(∅) = 0.8. A draw that removes the unit costs
        // (0.6 − (1.0 − 0.8))² = 0.16; one that keeps it costs (0 − 0)² = 0.
        let samples = 1000;
        let plan =
            FaithfulnessPlan::new(&[0.6], &[MetricRequest::Infidelity { samples }], 3).unwrap();
        let Steps::Infidelity(draws) = &plan.metrics[0].steps else {
            unreachable!("infidelity plans draws")
        };
        let removed = draws.iter().filter(|(_, c)| *c == EMPTY_COALITION).count();
        assert!((400..600).contains(&removed), "p = 1/2: {removed} of 1000");
        let values = vec![vec![1.0], vec![0.8]];
        let r = plan.finish(&values, &TargetView::new(0)).unwrap().remove(0);
        assert!(close(
            r.value.unwrap(),
            0.16 * removed as f64 / samples as f64
        ));
        assert_eq!(r.evaluations, 2);
    }

    #[test]
    fn infidelity_draws_are_seeded() {
        let requests = [MetricRequest::Infidelity { samples: 8 }];
        let scores = [0.1; 12];
        let a = FaithfulnessPlan::new(&scores, &requests, 1).unwrap();
        let b = FaithfulnessPlan::new(&scores, &requests, 1).unwrap();
        let c = FaithfulnessPlan::new(&scores, &requests, 2).unwrap();
        assert_eq!(a.coalitions(), b.coalitions());
        assert_ne!(a.coalitions(), c.coalitions());
    }

    #[test]
    fn coalitions_are_shared_and_distinct() {
        let requests = ["comprehensiveness:cumulative", "tau_loo", "topk_drop:1"]
            .map(|s| MetricRequest::parse(s).unwrap());
        let plan = FaithfulnessPlan::new(&[0.3, 0.2, 0.1], &requests, 0).unwrap();
        // Full, empty, x \ {0, 1}, and x \ {i} for i = 0, 1, 2 (x \ {0} is also the
        // cumulative k = 1 step and the top-1 drop): 6.
        assert_eq!(plan.coalitions().len(), 6);
        assert_eq!(plan.coalitions()[FULL_COALITION], vec![true; 3]);
        assert_eq!(plan.coalitions()[EMPTY_COALITION], vec![false; 3]);
        let distinct: BTreeSet<_> = plan.coalitions().iter().collect();
        assert_eq!(distinct.len(), 6);
        let values = additive(&plan, &[0.3, 0.2, 0.1], 0.0);
        let results = plan.finish(&values, &TargetView::new(0)).unwrap();
        let cost: Vec<usize> = results.iter().map(|r| r.evaluations).collect();
        // Cumulative: full, x\{0}, x\{0,1}, empty; tau_loo: full + 3; top-1: full + 1.
        assert_eq!(cost, vec![4, 4, 2]);
        let specs: Vec<&str> = results.iter().map(|r| r.spec.as_str()).collect();
        assert_eq!(
            specs,
            ["comprehensiveness:cumulative", "tau_loo", "topk_drop:1"]
        );
        assert_eq!(
            (results[0].perturbation.clone(), results[0].target.clone()),
            (None, None)
        );
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        assert_eq!(
            FaithfulnessPlan::new(&[], &[MetricRequest::RankDel], 0).unwrap_err(),
            EvalError::Empty { what: "scores" }
        );
        assert!(matches!(
            FaithfulnessPlan::new(&[0.1], &[], 0),
            Err(EvalError::NoMetrics { .. })
        ));
        assert!(matches!(
            FaithfulnessPlan::new(&[0.1, f64::INFINITY], &[MetricRequest::RankDel], 0),
            Err(EvalError::NonFinite { index: 1, .. })
        ));
        let plan = FaithfulnessPlan::new(&[0.3, 0.1], &[MetricRequest::RankDel], 0).unwrap();
        let rows = plan.coalitions().len(); // full, empty, x\{0}, x\{1}
        let view = TargetView::new(0);
        assert_eq!(
            plan.finish(&vec![vec![0.0]; rows - 1], &view).unwrap_err(),
            EvalError::ValueRows {
                expected: rows,
                found: rows - 1
            }
        );
        let mut ragged = vec![vec![0.0, 1.0]; rows];
        ragged[2] = vec![0.0];
        assert_eq!(
            plan.finish(&ragged, &view).unwrap_err(),
            EvalError::ValueRowShape {
                coalition: 2,
                expected: 2,
                found: 1
            }
        );
        assert_eq!(
            plan.finish(&vec![vec![]; rows], &view).unwrap_err(),
            EvalError::TargetDim {
                role: "value",
                dim: 0,
                dims: 0
            }
        );
        assert!(matches!(
            plan.finish(&vec![vec![0.0]; rows], &TargetView::new(0).with_foil(3)),
            Err(EvalError::TargetDim { role: "foil", .. })
        ));
        let mut infinite = vec![vec![0.0]; rows];
        infinite[3][0] = f64::NEG_INFINITY;
        assert!(matches!(
            plan.finish(&infinite, &view),
            Err(EvalError::NonFiniteValue {
                coalition: 3,
                dim: 0,
                ..
            })
        ));
    }

    #[test]
    fn results_serialize() {
        let r = run(
            &[0.4, 0.1],
            "comprehensiveness:cumulative",
            &[0.4, 0.1],
            0.0,
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["direction"], "higher_is_better");
        assert_eq!(json["perturbation"], serde_json::Value::Null);
        let back: MetricResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }
}
