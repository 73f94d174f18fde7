//! Saliency-map verbalization: sentences that say which units carry what share of a target,
//! computed from the scores alone (model-free), so they are faithful to the attribution by
//! construction — every number in them is a share of the scores being described.

use crate::schema::{Attribution, Target};

/// Most units named as carrying a target.
const MAX_NAMED: usize = 3;
/// Units are named until they carry this share of the positive attribution.
const COVER: f64 = 0.5;
/// A unit working against the target is mentioned from this share (of all absolute scores).
const AGAINST: f64 = 0.1;

/// How a target is described in a sentence.
pub fn describe_target(t: &Target) -> String {
    match t.kind.as_str() {
        "token_logprob" => format!("the log-probability of {:?}", t.label),
        "token_prob" => format!("the probability of {:?}", t.label),
        "token_logit" => format!("the logit of {:?}", t.label),
        "sum_logprob" | "mean_logprob" => "the continuation's log-probability".to_string(),
        "contrast_logit" => format!("the preference {}", t.label.replace(" vs ", " over ")),
        "label_prob" => format!("the label {:?}", t.label),
        _ => format!("{:?}", t.label),
    }
}

/// One or two sentences on target `t`: the smallest set of top units (at most three) that
/// carries half of the positive attribution, with its share of all attribution, and the unit
/// working most against the target if it matters.
pub fn verbalize(a: &Attribution, t: usize) -> String {
    let scores = &a.scores[t];
    let total: f64 = scores.iter().map(|s| s.abs()).sum();
    let target = describe_target(&a.targets[t]);
    if total == 0.0 || !total.is_finite() {
        return format!("No unit changes {target}.");
    }
    let positive: f64 = scores.iter().filter(|s| **s > 0.0).sum();
    let order = a.ranking(t);
    let mut named = Vec::new();
    let mut carried = 0.0;
    for &u in order.iter().take(MAX_NAMED) {
        if scores[u] <= 0.0 || carried >= COVER * positive {
            break;
        }
        carried += scores[u];
        named.push(u);
    }
    let quote = |u: usize| format!("\"{}\"", a.units[u].label.trim());
    let mut sentence = match named.as_slice() {
        [] => format!("No unit supports {target}"),
        [one] => format!(
            "{} carries {:.0}% of the attribution to {target}",
            quote(*one),
            100.0 * carried / total
        ),
        many => {
            let (last, rest) = many.split_last().expect("two or more");
            format!(
                "{} and {} carry {:.0}% of the attribution to {target}",
                rest.iter()
                    .map(|&u| quote(u))
                    .collect::<Vec<_>>()
                    .join(", "),
                quote(*last),
                100.0 * carried / total
            )
        }
    };
    if let Some(&worst) = order.last()
        && scores[worst] < 0.0
        && -scores[worst] / total >= AGAINST
    {
        sentence.push_str(&format!(
            "; {} works against it ({:.0}%)",
            quote(worst),
            100.0 * scores[worst] / total
        ));
    }
    sentence.push('.');
    sentence
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::report;

    #[test]
    fn names_the_top_units_with_their_exact_share() {
        let mut a = report().attribution;
        a.scores[0] = vec![0.6, -0.3, 0.1, 0.0];
        a.targets[0].kind = "label_prob".into();
        a.targets[0].label = "positive".into();
        // Total |score| = 1.0; unit 0 alone carries 0.6 ≥ half of the positive 0.7.
        let text = verbalize(&a, 0);
        assert_eq!(
            text,
            format!(
                "\"{}\" carries 60% of the attribution to the label \"positive\"; \"{}\" works against it (-30%).",
                a.units[0].label, a.units[1].label
            )
        );
        a.scores[0] = vec![0.2, 0.2, 0.2, 0.2];
        assert!(verbalize(&a, 0).contains("and"), "{}", verbalize(&a, 0));
        assert!(verbalize(&a, 0).contains("50%"));
        a.scores[0] = vec![0.0; 4];
        assert!(verbalize(&a, 0).starts_with("No unit changes"));
    }
}
