//! Plausibility: how well an explanation matches human rationales (gold = the units annotators
//! marked), the ERASER way (DeYoung et al. 2020; METRICS.md §7). Plausible is not faithful —
//! a rationale can convince people without being what the model used — so these sit next to
//! the faithfulness metrics, not in place of them.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::EvalError;
use crate::input::check_scores;
use crate::rationale::ranking;
use crate::stats::{cmp_f64, mean};

/// ERASER's IOU-F1 match threshold: a predicted span counts when its best IoU with a gold span
/// is at least 0.5 (DeYoung et al. 2020, §4.1).
pub const IOU_THRESHOLD: f64 = 0.5;

/// One explanation with its human rationale (`gold[i]` = unit i marked).
#[derive(Debug, Clone, Copy)]
pub struct Instance<'a> {
    pub scores: &'a [f64],
    pub gold: &'a [bool],
}

/// How many top units make the predicted rationale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RationaleLength {
    /// Each instance's own number of gold units.
    GoldCount,
    /// The corpus's mean number of gold units, rounded to the nearest integer and capped at
    /// each instance's length (ERASER's choice for soft scores, METRICS.md §7).
    MeanGoldCount,
    /// A fixed k; an instance shorter than k is an error.
    Fixed(usize),
}

/// Overlap counts of a predicted and a gold rationale (units, or spans for IOU-F1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrfCounts {
    pub true_positives: usize,
    pub predicted: usize,
    pub gold: usize,
}

impl PrfCounts {
    /// TP / predicted; `None` with nothing predicted.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.true_positives, self.predicted)
    }

    /// TP / gold; `None` with no gold.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.true_positives, self.gold)
    }

    /// 2·TP / (predicted + gold), the harmonic mean of precision and recall written so that it
    /// is 0 (not undefined) when only one side is empty; `None` when both are.
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.true_positives, self.predicted + self.gold)
    }

    fn add(&mut self, other: PrfCounts) {
        self.true_positives += other.true_positives;
        self.predicted += other.predicted;
        self.gold += other.gold;
    }
}

fn ratio(numerator: usize, denominator: usize) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Token-level overlap of one instance's top-k rationale with the gold one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenPrf {
    pub k: usize,
    pub counts: PrfCounts,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

/// Token precision, recall and F1 of the top-`k` units by score (ties to the lower index)
/// against `gold`, with k = the number of gold units unless given.
pub fn token_prf(scores: &[f64], gold: &[bool], k: Option<usize>) -> Result<TokenPrf, EvalError> {
    let instance = Instance { scores, gold };
    check_instance(&instance)?;
    let k = match k {
        Some(k) => fixed_k(k, scores.len())?,
        None => gold_count(gold),
    };
    let counts = token_counts(&predicted_mask(scores, k), gold);
    Ok(TokenPrf {
        k,
        counts,
        precision: counts.precision(),
        recall: counts.recall(),
        f1: counts.f1(),
    })
}

/// Token P/R/F1 over a corpus. Macro numbers are means of the instances' numbers where they are
/// defined (an instance with no gold has no recall); micro numbers pool the counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusPrf {
    pub instances: usize,
    pub macro_precision: Option<f64>,
    pub macro_recall: Option<f64>,
    pub macro_f1: Option<f64>,
    pub micro: PrfCounts,
    pub micro_precision: Option<f64>,
    pub micro_recall: Option<f64>,
    pub micro_f1: Option<f64>,
}

pub fn corpus_token_prf(
    instances: &[Instance],
    length: RationaleLength,
) -> Result<CorpusPrf, EvalError> {
    let ks = rationale_lengths(instances, length)?;
    let per: Vec<PrfCounts> = instances
        .iter()
        .zip(&ks)
        .map(|(x, &k)| token_counts(&predicted_mask(x.scores, k), x.gold))
        .collect();
    let macro_mean =
        |of: fn(&PrfCounts) -> Option<f64>| mean(&per.iter().filter_map(of).collect::<Vec<_>>());
    let micro = pooled(&per);
    Ok(CorpusPrf {
        instances: instances.len(),
        macro_precision: macro_mean(PrfCounts::precision),
        macro_recall: macro_mean(PrfCounts::recall),
        macro_f1: macro_mean(PrfCounts::f1),
        micro,
        micro_precision: micro.precision(),
        micro_recall: micro.recall(),
        micro_f1: micro.f1(),
    })
}

/// ERASER's IOU-F1 over a corpus: spans are maximal runs of marked units; a predicted span is
/// a true positive when its best IoU with a gold span is at least [`IOU_THRESHOLD`].
/// Following ERASER's code, precision is TP / predicted spans and recall TP / gold spans with
/// the same TP; macro precision and recall average the instances that have predicted
/// (respectively gold) spans, and macro F1 is the harmonic mean of those two averages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IouF1 {
    pub micro: PrfCounts,
    pub micro_precision: Option<f64>,
    pub micro_recall: Option<f64>,
    pub micro_f1: Option<f64>,
    pub macro_precision: Option<f64>,
    pub macro_recall: Option<f64>,
    pub macro_f1: Option<f64>,
}

pub fn iou_f1(instances: &[Instance], length: RationaleLength) -> Result<IouF1, EvalError> {
    let ks = rationale_lengths(instances, length)?;
    let per: Vec<PrfCounts> = instances
        .iter()
        .zip(&ks)
        .map(|(x, &k)| span_counts(&predicted_mask(x.scores, k), x.gold))
        .collect();
    let micro = pooled(&per);
    let macro_precision = mean(
        &per.iter()
            .filter_map(PrfCounts::precision)
            .collect::<Vec<_>>(),
    );
    let macro_recall = mean(&per.iter().filter_map(PrfCounts::recall).collect::<Vec<_>>());
    Ok(IouF1 {
        micro,
        micro_precision: micro.precision(),
        micro_recall: micro.recall(),
        micro_f1: micro.f1(),
        macro_precision,
        macro_recall,
        macro_f1: harmonic_mean(macro_precision, macro_recall),
    })
}

fn harmonic_mean(p: Option<f64>, r: Option<f64>) -> Option<f64> {
    let (p, r) = (p?, r?);
    Some(if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    })
}

/// Average precision of one instance's scores as a ranking of the gold units: Σ_t (R_t −
/// R_{t−1}) · P_t over the distinct score values t as thresholds (units scoring >= t predicted),
/// as scikit-learn's `average_precision_score` computes it. `None` with no gold unit.
pub fn average_precision(scores: &[f64], gold: &[bool]) -> Result<Option<f64>, EvalError> {
    check_instance(&Instance { scores, gold })?;
    let positives = gold_count(gold);
    if positives == 0 {
        return Ok(None);
    }
    let order = ranking(scores);
    let (mut true_positives, mut predicted, mut previous_recall, mut ap) = (0, 0, 0.0, 0.0);
    for (position, &i) in order.iter().enumerate() {
        predicted += 1;
        true_positives += usize::from(gold[i]);
        let last_of_tie = order
            .get(position + 1)
            .is_none_or(|&next| cmp_f64(scores[next], scores[i]).is_ne());
        if last_of_tie {
            let recall = true_positives as f64 / positives as f64;
            ap += (recall - previous_recall) * (true_positives as f64 / predicted as f64);
            previous_recall = recall;
        }
    }
    Ok(Some(ap))
}

/// Mean of the instances' average precisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanAveragePrecision {
    /// Instances with at least one gold unit, the only ones AP is defined for.
    pub instances: usize,
    pub value: Option<f64>,
}

pub fn mean_average_precision(instances: &[Instance]) -> Result<MeanAveragePrecision, EvalError> {
    if instances.is_empty() {
        return Err(EvalError::Empty { what: "instances" });
    }
    let mut aps = Vec::new();
    for x in instances {
        aps.extend(average_precision(x.scores, x.gold)?);
    }
    Ok(MeanAveragePrecision {
        instances: aps.len(),
        value: mean(&aps),
    })
}

fn check_instance(x: &Instance) -> Result<(), EvalError> {
    check_scores("scores", x.scores)?;
    if x.gold.len() != x.scores.len() {
        return Err(EvalError::LengthMismatch {
            what: "plausibility: scores and gold rationale",
            left: x.scores.len(),
            right: x.gold.len(),
        });
    }
    Ok(())
}

fn gold_count(gold: &[bool]) -> usize {
    gold.iter().filter(|g| **g).count()
}

fn fixed_k(k: usize, n: usize) -> Result<usize, EvalError> {
    if k > n {
        return Err(EvalError::KOutOfRange {
            what: "predicted rationale length",
            k,
            min: 0,
            max: n,
        });
    }
    Ok(k)
}

/// Each instance's k, after checking the instances.
fn rationale_lengths(
    instances: &[Instance],
    length: RationaleLength,
) -> Result<Vec<usize>, EvalError> {
    if instances.is_empty() {
        return Err(EvalError::Empty { what: "instances" });
    }
    for x in instances {
        check_instance(x)?;
    }
    let counts: Vec<f64> = instances
        .iter()
        .map(|x| gold_count(x.gold) as f64)
        .collect();
    let mean_gold = mean(&counts).unwrap_or(0.0).round() as usize;
    instances
        .iter()
        .map(|x| match length {
            RationaleLength::GoldCount => Ok(gold_count(x.gold)),
            RationaleLength::MeanGoldCount => Ok(mean_gold.min(x.scores.len())),
            RationaleLength::Fixed(k) => fixed_k(k, x.scores.len()),
        })
        .collect()
}

/// The top-k units as a mask.
fn predicted_mask(scores: &[f64], k: usize) -> Vec<bool> {
    let mut mask = vec![false; scores.len()];
    for &i in &ranking(scores)[..k] {
        mask[i] = true;
    }
    mask
}

fn token_counts(predicted: &[bool], gold: &[bool]) -> PrfCounts {
    PrfCounts {
        true_positives: predicted
            .iter()
            .zip(gold)
            .filter(|(p, g)| **p && **g)
            .count(),
        predicted: gold_count(predicted),
        gold: gold_count(gold),
    }
}

fn pooled(per: &[PrfCounts]) -> PrfCounts {
    let mut total = PrfCounts::default();
    for c in per {
        total.add(*c);
    }
    total
}

/// Maximal runs of marked units, as index ranges.
fn spans(mask: &[bool]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, &marked) in mask.iter().chain([&false]).enumerate() {
        match (marked, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                spans.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    spans
}

fn iou(a: &Range<usize>, b: &Range<usize>) -> f64 {
    let intersection = a.end.min(b.end).saturating_sub(a.start.max(b.start));
    let union = a.len() + b.len() - intersection;
    intersection as f64 / union as f64
}

/// Span counts for IOU-F1: predicted spans whose best IoU reaches the threshold.
fn span_counts(predicted: &[bool], gold: &[bool]) -> PrfCounts {
    let (predicted, gold) = (spans(predicted), spans(gold));
    let true_positives = predicted
        .iter()
        .filter(|p| gold.iter().any(|g| iou(p, g) >= IOU_THRESHOLD))
        .count();
    PrfCounts {
        true_positives,
        predicted: predicted.len(),
        gold: gold.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::close;

    fn mask(bits: &[u8]) -> Vec<bool> {
        bits.iter().map(|&b| b == 1).collect()
    }

    fn near(x: Option<f64>, expected: f64) -> bool {
        x.is_some_and(|x| close(x, expected))
    }

    #[test]
    fn token_prf_by_hand() {
        let scores = [0.9, 0.1, 0.8, 0.3, 0.05];
        let gold = mask(&[1, 0, 0, 1, 0]);
        // k = 2 gold units: top 2 = {0, 2}; TP = 1 (unit 0); P = R = F1 = 1/2.
        let r = token_prf(&scores, &gold, None).unwrap();
        assert_eq!(r.k, 2);
        assert!(near(r.precision, 0.5) && near(r.recall, 0.5) && near(r.f1, 0.5));
        // k = 3: {0, 2, 3}, TP = 2: P = 2/3, R = 1, F1 = 2 · 2 / (3 + 2) = 0.8.
        let r = token_prf(&scores, &gold, Some(3)).unwrap();
        assert!(near(r.precision, 2.0 / 3.0) && near(r.recall, 1.0) && near(r.f1, 0.8));
        // No gold and k = 0: nothing to compare.
        let none = token_prf(&[0.1, 0.2], &[false, false], None).unwrap();
        assert_eq!((none.precision, none.recall, none.f1), (None, None, None));
        assert!(matches!(
            token_prf(&scores, &gold, Some(6)),
            Err(EvalError::KOutOfRange { .. })
        ));
        assert!(matches!(
            token_prf(&scores, &gold[..4], None),
            Err(EvalError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn corpus_macro_and_micro() {
        let (gold_a, gold_b, gold_c) = (mask(&[1, 0, 0, 1, 0]), mask(&[0, 1, 0]), mask(&[0, 0]));
        let a = Instance {
            scores: &[0.9, 0.1, 0.8, 0.3, 0.05],
            gold: &gold_a,
        };
        let b = Instance {
            scores: &[0.2, 0.7, 0.4],
            gold: &gold_b,
        };
        // a: TP 1 of 2 predicted, 2 gold (F1 0.5); b: top 1 = {1}, TP 1 of 1, 1 (F1 1).
        let r = corpus_token_prf(&[a, b], RationaleLength::GoldCount).unwrap();
        assert!(near(r.macro_f1, 0.75)); // (0.5 + 1) / 2
        // Pooled TP 2, predicted 3, gold 3 → P = R = F1 = 2/3.
        assert_eq!(
            r.micro,
            PrfCounts {
                true_positives: 2,
                predicted: 3,
                gold: 3
            }
        );
        assert!(near(r.micro_f1, 2.0 / 3.0));
        // Mean gold count (2 + 1) / 2 = 1.5 → k = 2 for both; b: top 2 = {1, 2}, TP 1:
        // P 1/2, R 1, F1 2/3. Macro F1 (0.5 + 2/3) / 2; micro TP 2, predicted 4, gold 3:
        // F1 = 4 / 7.
        let r = corpus_token_prf(&[a, b], RationaleLength::MeanGoldCount).unwrap();
        assert!(near(r.macro_f1, (0.5 + 2.0 / 3.0) / 2.0));
        assert!(near(r.micro_f1, 4.0 / 7.0));
        // An instance without gold has no F1 under GoldCount and is left out of the macro mean.
        let c = Instance {
            scores: &[0.3, 0.1],
            gold: &gold_c,
        };
        let r = corpus_token_prf(&[a, b, c], RationaleLength::GoldCount).unwrap();
        assert_eq!(r.instances, 3);
        assert!(near(r.macro_f1, 0.75));
        assert!(matches!(
            corpus_token_prf(&[a, b], RationaleLength::Fixed(4)),
            Err(EvalError::KOutOfRange { .. })
        ));
        assert!(matches!(
            corpus_token_prf(&[], RationaleLength::GoldCount),
            Err(EvalError::Empty { .. })
        ));
    }

    #[test]
    fn spans_and_iou() {
        assert_eq!(spans(&mask(&[1, 1, 0, 1, 0, 0, 1])), vec![0..2, 3..4, 6..7]);
        assert_eq!(spans(&mask(&[0, 0])), vec![]);
        // [0, 2) and [1, 4): intersection 1, union 4.
        assert!(close(iou(&(0..2), &(1..4)), 0.25));
        assert_eq!(iou(&(0..1), &(3..5)), 0.0);
    }

    #[test]
    fn iou_f1_by_hand() {
        // Gold spans [0, 3) and [5, 7). The top 5 by score, units 0, 3, 5, 6, 7, form the
        // predicted spans [0, 1) (IoU with [0, 3) = 1/3, miss), [3, 4) (IoU 0, miss) and
        // [5, 8) (IoU with [5, 7) = 2/3, hit): TP 1, 3 predicted, 2 gold.
        let gold_a = mask(&[1, 1, 1, 0, 0, 1, 1, 0]);
        let a = Instance {
            scores: &[0.9, 0.1, 0.2, 0.8, 0.0, 0.7, 0.6, 0.5],
            gold: &gold_a,
        };
        // Gold [1, 3), predicted top 2 = {1, 2} = [1, 3): TP 1 of 1, 1.
        let gold_b = mask(&[0, 1, 1, 0]);
        let b = Instance {
            scores: &[0.1, 0.9, 0.8, 0.0],
            gold: &gold_b,
        };
        let r = iou_f1(&[a, b], RationaleLength::GoldCount).unwrap();
        // Micro: TP 2, predicted 4, gold 3 → P 1/2, R 2/3, F1 = 2 · 2 / 7 = 4/7.
        assert!(near(r.micro_precision, 0.5) && near(r.micro_recall, 2.0 / 3.0));
        assert!(near(r.micro_f1, 4.0 / 7.0));
        // Macro: P = (1/3 + 1) / 2 = 2/3, R = (1/2 + 1) / 2 = 3/4,
        // F1 = 2 · (2/3) · (3/4) / (2/3 + 3/4) = 1 / (17/12) = 12/17.
        assert!(near(r.macro_precision, 2.0 / 3.0) && near(r.macro_recall, 0.75));
        assert!(near(r.macro_f1, 12.0 / 17.0));
    }

    #[test]
    fn average_precision_by_hand() {
        // Thresholds 0.9: P 1, R 1/2; 0.8: R unchanged; 0.7: P 2/3, R 1; 0.1: R unchanged.
        // AP = 1/2 · 1 + 1/2 · 2/3 = 5/6.
        let gold = mask(&[1, 0, 1, 0]);
        let ap = average_precision(&[0.9, 0.8, 0.7, 0.1], &gold).unwrap();
        assert!(near(ap, 5.0 / 6.0));
        // All tied: one threshold, P = 1/4, R = 1 → AP = 1/4.
        let ap = average_precision(&[0.5; 4], &mask(&[0, 0, 1, 0])).unwrap();
        assert!(near(ap, 0.25));
        assert_eq!(average_precision(&[0.5, 0.2], &[false, false]), Ok(None));
        let no_gold = [false, false];
        let instances = [
            Instance {
                scores: &[0.9, 0.8, 0.7, 0.1],
                gold: &gold,
            },
            Instance {
                scores: &[0.5, 0.2],
                gold: &no_gold,
            },
        ];
        // Only the first instance has gold: mean AP = 5/6 over 1 instance.
        let m = mean_average_precision(&instances).unwrap();
        assert_eq!(m.instances, 1);
        assert!(near(m.value, 5.0 / 6.0));
    }
}
