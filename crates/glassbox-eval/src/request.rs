//! What to measure: the faithfulness metrics as a string-keyed registry (for `list` and CLI
//! flags) and as typed requests with their parameters.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::EvalError;

/// ERASER's AOPC bins (DeYoung et al. 2020, "ERASER: A Benchmark to Evaluate Rationalized NLP
/// Models", §4): rationales of the top 1, 5, 10, 20 and 50% of units.
pub const ERASER_BINS_PERCENT: [u32; 5] = [1, 5, 10, 20, 50];
/// ferret's AOPC thresholds (Attanasio et al. 2023, "ferret: a Framework for Benchmarking
/// Explainers on Transformers"): 10, 20, ..., 100% of units.
pub const FERRET_BINS_PERCENT: [u32; 10] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
/// RFxG contrastive curves (Elisha et al. 2025; METRICS.md §9): masking the top 10..90%.
pub const CONTRASTIVE_BINS_PERCENT: [u32; 9] = [10, 20, 30, 40, 50, 60, 70, 80, 90];
/// Random removals of `infidelity` unless `infidelity:M` says otherwise. The standard error of
/// the mean shrinks as 1/√M; 32 keeps one explanation's batch small (32 coalitions at most)
/// while the squared errors it averages are typically of similar size.
pub const DEFAULT_INFIDELITY_SAMPLES: usize = 32;

/// The metric registry: names as the CLI spells them, with a one-line description each.
pub const METRICS: &[(&str, &str)] = &[
    (
        "comprehensiveness",
        "AOPC of f(x) - f(x \\ r) over rationale bins, higher is better; \
         `comprehensiveness[:MODE][:positive]`, MODE eraser (default), eraser_code, ferret, cumulative",
    ),
    (
        "sufficiency",
        "AOPC of f(x) - f(r), keeping only the rationale, lower is better; \
         same options as comprehensiveness",
    ),
    (
        "decision_flip",
        "`:mit` (default): 1 if deleting the top unit flips the predicted label, higher is better; \
         `:frac`: (j*+1)/(n+1) for the first top-j deletion that flips, lower is better",
    ),
    (
        "rankdel",
        "Spearman between scores and leave-one-out drops f(x) - f(x \\ {i}), higher is better",
    ),
    (
        "tau_loo",
        "Kendall tau-b between scores and leave-one-out drops, higher is better",
    ),
    (
        "topk_drop",
        "`topk_drop:K`: ContextCite's drop f(x) - f(x \\ top_K), higher is better",
    ),
    (
        "infidelity",
        "`infidelity[:M]`: mean (sum of s over I - (f(x) - f(x \\ I)))^2 over M random removals I \
         (default 32), lower is better",
    ),
    (
        "contrastive",
        "RFxG: p(a) - p(b) while masking the top 10..90% of units; mean drop, higher is better",
    ),
];

/// The registry's names, comma-separated, for error messages.
pub(crate) fn metric_names() -> String {
    METRICS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which way a metric improves, for table arrows and for sorting explainers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    HigherIsBetter,
    LowerIsBetter,
}

impl Direction {
    /// `↑` or `↓`.
    pub fn arrow(&self) -> &'static str {
        match self {
            Direction::HigherIsBetter => "↑",
            Direction::LowerIsBetter => "↓",
        }
    }
}

/// How AOPC averages comprehensiveness or sufficiency over rationale bins. The papers differ,
/// and the numbers are not comparable across modes, so the mode is part of every result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AopcMode {
    /// ERASER paper: bins [`ERASER_BINS_PERCENT`] plus the empty rationale (k = 0), summed and
    /// divided by |B| + 1.
    Eraser,
    /// ERASER reference code: the mean over the bins only.
    EraserCode,
    /// ferret: bins [`FERRET_BINS_PERCENT`], only positive scores, distinct bins (a bin whose
    /// rationale equals the previous one, or is empty, is skipped).
    Ferret,
    /// Huang et al. 2023: cumulative top-1..n rationales averaged over n + 1 steps, k = 0
    /// included.
    Cumulative,
}

impl AopcMode {
    pub const ALL: [AopcMode; 4] = [
        AopcMode::Eraser,
        AopcMode::EraserCode,
        AopcMode::Ferret,
        AopcMode::Cumulative,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(&self) -> &'static str {
        match self {
            AopcMode::Eraser => "eraser",
            AopcMode::EraserCode => "eraser_code",
            AopcMode::Ferret => "ferret",
            AopcMode::Cumulative => "cumulative",
        }
    }
}

/// Which decision-flip number to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlipMode {
    /// DF_MIT: whether deleting the single most informative unit flips the label.
    Mit,
    /// DF_Frac: how much of the ranking must be deleted before the label flips
    /// (METRICS.md §4, DF_Frac = (j* + 1) / (n + 1), with j* counted from 0): j* + 1 top units
    /// are deleted at the first flip, j* = n if no deletion flips. It lies in [1/(n+1), n/(n+1)]
    /// when the label flips and is exactly 1 when it never does, so "never flips" ranks worst.
    Frac,
}

impl FlipMode {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "mit" => Some(FlipMode::Mit),
            "frac" => Some(FlipMode::Frac),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            FlipMode::Mit => "mit",
            FlipMode::Frac => "frac",
        }
    }
}

/// Settings of an AOPC metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aopc {
    pub mode: AopcMode,
    /// Keep only units with s_i > 0 in rationales. [`AopcMode::Ferret`] always does, whatever
    /// this says, because that is part of its definition.
    pub only_positive: bool,
}

impl Aopc {
    pub fn new(mode: AopcMode) -> Self {
        Aopc {
            mode,
            only_positive: false,
        }
    }

    /// Whether rationales drop units with s_i <= 0, the mode's rule included.
    pub(crate) fn keeps_only_positive(&self) -> bool {
        self.only_positive || self.mode == AopcMode::Ferret
    }

    /// Reads `[:MODE][:positive]`, in any order.
    fn parse_args(metric: &str, args: &[&str]) -> Result<Self, EvalError> {
        let mut aopc = Aopc::new(AopcMode::Eraser);
        let mut mode_given = false;
        for &arg in args {
            match (arg, AopcMode::parse(arg)) {
                ("positive", _) => aopc.only_positive = true,
                (_, Some(mode)) if !mode_given => {
                    aopc.mode = mode;
                    mode_given = true;
                }
                _ => {
                    return Err(bad_argument(
                        metric,
                        arg,
                        "one mode (eraser, eraser_code, ferret, cumulative) and optionally `positive`",
                    ));
                }
            }
        }
        Ok(aopc)
    }
}

/// One metric to compute, with its parameters. Parse from the CLI's spelling with
/// [`MetricRequest::parse`]; `to_string()` gives the canonical spelling back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricRequest {
    /// AOPC of C(r) = f(x) − f(x \ r); the curve holds each bin's C.
    Comprehensiveness(Aopc),
    /// AOPC of S(r) = f(x) − f(r), r kept alone; the curve holds each bin's S.
    Sufficiency(Aopc),
    /// Needs the label dimensions of the [`TargetView`](crate::TargetView).
    DecisionFlip(FlipMode),
    /// Spearman(s, Δ) with Δ_i = f(x) − f(x \ {i}) (average ranks for ties).
    RankDel,
    /// Kendall τ-b(s, Δ).
    TauLoo,
    /// ContextCite's top-k drop f(x) − f(x \ top_k) (a log-probability drop when f is a
    /// log-probability); `k` may be 0 (no drop) up to n.
    TopKDrop { k: usize },
    /// Yeh et al.'s infidelity with `samples` random removals, each unit removed with
    /// probability 1/2.
    Infidelity { samples: usize },
    /// RFxG: masking the top 10..90% of units, the curve holds g = p(a) − p(b) (starting with
    /// the unmasked g(x) at k = 0) and the value is the mean drop g(x) − g(x \ r_q) over the
    /// nine bins. Needs the foil dimension of the [`TargetView`](crate::TargetView).
    Contrastive,
}

fn bad_argument(metric: &str, argument: &str, expected: &str) -> EvalError {
    EvalError::BadArgument {
        metric: metric.into(),
        argument: argument.into(),
        expected: expected.into(),
    }
}

impl MetricRequest {
    /// Parses `NAME[:ARG]...`, e.g. `comprehensiveness:ferret`, `decision_flip:frac`,
    /// `topk_drop:3`, `infidelity:64`. An unknown name is reported with the list of valid ones.
    pub fn parse(spec: &str) -> Result<Self, EvalError> {
        let mut parts = spec.trim().split(':');
        let name = parts.next().unwrap_or_default();
        let args: Vec<&str> = parts.collect();
        let no_args = |request: MetricRequest| match args.first() {
            None => Ok(request),
            Some(arg) => Err(bad_argument(name, arg, "no arguments")),
        };
        let count = |arg: &str, what: &str| {
            arg.parse::<usize>()
                .map_err(|_| bad_argument(name, arg, what))
        };
        match name {
            "comprehensiveness" => Ok(Self::Comprehensiveness(Aopc::parse_args(name, &args)?)),
            "sufficiency" => Ok(Self::Sufficiency(Aopc::parse_args(name, &args)?)),
            "decision_flip" => match args.as_slice() {
                [] => Ok(Self::DecisionFlip(FlipMode::Mit)),
                [mode] => FlipMode::parse(mode)
                    .map(Self::DecisionFlip)
                    .ok_or_else(|| bad_argument(name, mode, "`mit` or `frac`")),
                [_, extra, ..] => Err(bad_argument(name, extra, "one mode, `mit` or `frac`")),
            },
            "rankdel" => no_args(Self::RankDel),
            "tau_loo" => no_args(Self::TauLoo),
            "contrastive" => no_args(Self::Contrastive),
            "topk_drop" => match args.as_slice() {
                [k] => Ok(Self::TopKDrop {
                    k: count(k, "a number of units, e.g. `topk_drop:3`")?,
                }),
                _ => Err(bad_argument(
                    name,
                    &args.join(":"),
                    "one number of units, e.g. `topk_drop:3`",
                )),
            },
            "infidelity" => match args.as_slice() {
                [] => Ok(Self::Infidelity {
                    samples: DEFAULT_INFIDELITY_SAMPLES,
                }),
                [m] => match count(m, "a number of random removals >= 1, e.g. `infidelity:64`")? {
                    0 => Err(bad_argument(name, m, "a number of random removals >= 1")),
                    samples => Ok(Self::Infidelity { samples }),
                },
                [_, extra, ..] => Err(bad_argument(name, extra, "one number of random removals")),
            },
            _ => Err(EvalError::UnknownMetric {
                name: name.into(),
                valid: metric_names(),
            }),
        }
    }

    /// The registry name (`comprehensiveness`, `topk_drop`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Comprehensiveness(_) => "comprehensiveness",
            Self::Sufficiency(_) => "sufficiency",
            Self::DecisionFlip(_) => "decision_flip",
            Self::RankDel => "rankdel",
            Self::TauLoo => "tau_loo",
            Self::TopKDrop { .. } => "topk_drop",
            Self::Infidelity { .. } => "infidelity",
            Self::Contrastive => "contrastive",
        }
    }

    /// The mode, for metrics that have named modes.
    pub fn mode(&self) -> Option<&'static str> {
        match self {
            Self::Comprehensiveness(aopc) | Self::Sufficiency(aopc) => Some(aopc.mode.name()),
            Self::DecisionFlip(mode) => Some(mode.name()),
            _ => None,
        }
    }

    pub fn direction(&self) -> Direction {
        match self {
            Self::Sufficiency(_) | Self::DecisionFlip(FlipMode::Frac) | Self::Infidelity { .. } => {
                Direction::LowerIsBetter
            }
            _ => Direction::HigherIsBetter,
        }
    }
}

impl fmt::Display for MetricRequest {
    /// The canonical spelling, which [`MetricRequest::parse`] reads back to the same request.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        match self {
            Self::Comprehensiveness(aopc) | Self::Sufficiency(aopc) => {
                write!(f, ":{}", aopc.mode.name())?;
                if aopc.only_positive && aopc.mode != AopcMode::Ferret {
                    write!(f, ":positive")?;
                }
                Ok(())
            }
            Self::DecisionFlip(mode) => write!(f, ":{}", mode.name()),
            Self::TopKDrop { k } => write!(f, ":{k}"),
            Self::Infidelity { samples } => write!(f, ":{samples}"),
            Self::RankDel | Self::TauLoo | Self::Contrastive => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_name_parses_and_round_trips() {
        for (name, description) in METRICS {
            let spec = if *name == "topk_drop" {
                "topk_drop:2".to_string()
            } else {
                name.to_string()
            };
            let request = MetricRequest::parse(&spec).unwrap();
            assert_eq!(request.name(), *name);
            assert!(!description.is_empty());
            assert_eq!(MetricRequest::parse(&request.to_string()), Ok(request));
        }
    }

    #[test]
    fn parameters_are_read() {
        assert_eq!(
            MetricRequest::parse("comprehensiveness"),
            Ok(MetricRequest::Comprehensiveness(Aopc::new(
                AopcMode::Eraser
            )))
        );
        let positive = MetricRequest::parse("sufficiency:positive:cumulative").unwrap();
        assert_eq!(
            positive,
            MetricRequest::Sufficiency(Aopc {
                mode: AopcMode::Cumulative,
                only_positive: true
            })
        );
        assert_eq!(positive.to_string(), "sufficiency:cumulative:positive");
        assert_eq!(
            MetricRequest::parse(" decision_flip:frac ")
                .unwrap()
                .direction(),
            Direction::LowerIsBetter
        );
        assert_eq!(
            MetricRequest::parse("topk_drop:3"),
            Ok(MetricRequest::TopKDrop { k: 3 })
        );
        assert_eq!(
            MetricRequest::parse("infidelity"),
            Ok(MetricRequest::Infidelity {
                samples: DEFAULT_INFIDELITY_SAMPLES
            })
        );
        for mode in AopcMode::ALL {
            assert_eq!(AopcMode::parse(mode.name()), Some(mode));
        }
        assert_eq!(
            MetricRequest::parse("comprehensiveness:ferret")
                .unwrap()
                .to_string(),
            "comprehensiveness:ferret",
            "ferret's only-positive rule is part of the mode"
        );
    }

    #[test]
    fn bad_names_and_arguments_say_what_is_valid() {
        let unknown = MetricRequest::parse("comprehensivness").unwrap_err();
        assert!(matches!(unknown, EvalError::UnknownMetric { .. }));
        let message = unknown.to_string();
        assert!(message.contains("comprehensiveness") && message.contains("tau_loo"));
        for bad in [
            "topk_drop",
            "topk_drop:x",
            "topk_drop:1:2",
            "infidelity:0",
            "rankdel:3",
            "decision_flip:most",
            "comprehensiveness:ferret:eraser",
            "sufficiency:all",
        ] {
            assert!(
                matches!(
                    MetricRequest::parse(bad),
                    Err(EvalError::BadArgument { .. })
                ),
                "{bad}"
            );
        }
    }
}
