//! Why an evaluation could not be computed: bad inputs are reported as values, never panicked
//! on, because a CLI or a batch job evaluating many explanations must be able to say which one
//! was at fault and go on.

/// Errors of evaluating explanations.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// Metrics need at least one unit to rank.
    #[error("{what} is empty: an explanation needs at least one unit")]
    Empty { what: &'static str },
    /// A NaN or infinite score would make every ranking and mean meaningless.
    #[error("{what}[{index}] is {value}: scores must be finite numbers")]
    NonFinite {
        what: &'static str,
        index: usize,
        value: f64,
    },
    /// Two inputs that must describe the same units disagree in length.
    #[error("{what}: {left} and {right} units; both must describe the same units")]
    LengthMismatch {
        what: &'static str,
        left: usize,
        right: usize,
    },
    /// A number of units outside what the explanation has.
    #[error("{what}: k = {k} is out of range; choose {min} <= k <= {max}")]
    KOutOfRange {
        what: &'static str,
        k: usize,
        min: usize,
        max: usize,
    },
    #[error("unknown metric `{name}`; valid metrics: {valid}")]
    UnknownMetric { name: String, valid: String },
    #[error("metric `{metric}`: cannot use `{argument}`; expected {expected}")]
    BadArgument {
        metric: String,
        argument: String,
        expected: String,
    },
    #[error("no metrics requested; name one or more of: {valid}")]
    NoMetrics { valid: String },
    /// The values do not line up with the plan's coalitions.
    #[error(
        "got {found} value rows for {expected} coalitions; give one row per coalition, in the \
         order of `FaithfulnessPlan::coalitions()`"
    )]
    ValueRows { expected: usize, found: usize },
    #[error(
        "value row {coalition} has {found} dimensions but row 0 has {expected}; every \
         coalition's value vector must have the same dimensions"
    )]
    ValueRowShape {
        coalition: usize,
        expected: usize,
        found: usize,
    },
    #[error(
        "the target's {role} dimension {dim} is out of range: value rows have {dims} dimensions"
    )]
    TargetDim {
        role: &'static str,
        dim: usize,
        dims: usize,
    },
    /// Differences of infinite values (e.g. a log-probability of 0) are not numbers.
    #[error(
        "the value of coalition {coalition}, dimension {dim}, is {value}; give finite values \
         (probabilities, or log-probabilities clamped away from -inf)"
    )]
    NonFiniteValue {
        coalition: usize,
        dim: usize,
        value: f64,
    },
    #[error(
        "metric `{metric}` needs the dimensions of the competing labels \
         (`TargetView::with_labels`) to find the predicted label"
    )]
    MissingLabels { metric: String },
    #[error(
        "metric `{metric}` needs the foil's dimension (`TargetView::with_foil`) to compute \
         p(a) - p(b)"
    )]
    MissingFoil { metric: String },
    #[error("{what} needs at least one sample")]
    ZeroSamples { what: &'static str },
    /// Sensitivity is relative to the base explanation's norm.
    #[error(
        "the base explanation is all zeros, so a change relative to its norm is undefined; \
         report the absolute change instead"
    )]
    ZeroNorm,
    #[error("table row `{row}` has {found} cells for {expected} columns")]
    TableShape {
        row: String,
        expected: usize,
        found: usize,
    },
    #[error("target {target} does not exist: the attribution has {targets} targets")]
    NoSuchTarget { target: usize, targets: usize },
    /// A saved attribution whose arrays disagree in size.
    #[error("inconsistent attribution: {0}")]
    Shape(String),
}
