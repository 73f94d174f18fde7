//! Groups first: attribute contiguous groups of passages, then only the groups that matter
//! down to their passages (AttriBoT's hierarchical attribution, for any method).
//!
//! With n passages in groups of g, leave-one-out costs n/g + 1 evaluations at the group level
//! plus g per expanded group, instead of n + 1. Passages of groups not expanded share their
//! group's score equally: an estimate that keeps the ranking between groups, and says so.
//! When a passage's effect depends on another in a different group (an answer that needs
//! both), both groups carry the effect and both get expanded if they clear the rule.

use std::num::NonZeroUsize;

use glassbox_attribution::{AttributionError, Coalition, Estimate, Game, Method, estimate};
use serde_json::json;

/// Which groups are expanded into their passages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpandRule {
    /// Expand every group whose |score| is at least this share of the largest |score|
    /// (the top group always is).
    pub share: f64,
    /// At most this many groups (largest |score| first); `None`: no cap.
    pub max_groups: Option<NonZeroUsize>,
}

impl ExpandRule {
    pub fn new(share: f64, max_groups: Option<usize>) -> Result<Self, AttributionError> {
        if !(0.0..=1.0).contains(&share) {
            return Err(AttributionError::BadInput(format!(
                "the expansion share must be in [0, 1], got {share}"
            )));
        }
        let max_groups = match max_groups {
            Some(0) => {
                return Err(AttributionError::BadInput(
                    "at least one group must be expandable (--expand-max 0)".into(),
                ));
            }
            Some(k) => NonZeroUsize::new(k),
            None => None,
        };
        Ok(Self { share, max_groups })
    }

    /// The groups to expand, given the group-level headline scores.
    fn select(&self, scores: &[f64]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].abs().total_cmp(&scores[a].abs()).then(a.cmp(&b)));
        let top = order.first().map_or(0.0, |&g| scores[g].abs());
        let cap = self.max_groups.map_or(scores.len(), NonZeroUsize::get);
        let mut chosen: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|&(rank, &g)| rank == 0 || scores[g].abs() >= self.share * top)
            .map(|(_, &g)| g)
            .take(cap)
            .collect();
        chosen.sort_unstable();
        chosen
    }
}

/// Contiguous groups of `size` passages (the last may be shorter).
pub fn contiguous_groups(passages: usize, size: NonZeroUsize) -> Vec<Vec<usize>> {
    (0..passages)
        .collect::<Vec<_>>()
        .chunks(size.get())
        .map(<[usize]>::to_vec)
        .collect()
}

/// The game over groups: a coalition of groups keeps all their passages.
struct GroupGame<'a> {
    inner: &'a mut dyn Game,
    groups: &'a [Vec<usize>],
}

impl Game for GroupGame<'_> {
    fn players(&self) -> usize {
        self.groups.len()
    }

    fn dims(&self) -> usize {
        self.inner.dims()
    }

    fn values(&mut self, coalitions: &[Coalition]) -> Result<Vec<Vec<f64>>, AttributionError> {
        let n = self.inner.players();
        let expanded: Vec<Coalition> = coalitions
            .iter()
            .map(|c| Coalition::from_members(n, c.members().flat_map(|g| self.groups[g].clone())))
            .collect();
        self.inner.values(&expanded)
    }
}

/// The game inside one group: every other passage kept, the group's members as players.
struct WithinGroup<'a> {
    inner: &'a mut dyn Game,
    members: &'a [usize],
}

impl Game for WithinGroup<'_> {
    fn players(&self) -> usize {
        self.members.len()
    }

    fn dims(&self) -> usize {
        self.inner.dims()
    }

    fn values(&mut self, coalitions: &[Coalition]) -> Result<Vec<Vec<f64>>, AttributionError> {
        let n = self.inner.players();
        let full: Vec<Coalition> = coalitions
            .iter()
            .map(|c| {
                let mut kept = Coalition::full(n);
                for (k, &p) in self.members.iter().enumerate() {
                    if !c.contains(k) {
                        kept.remove(p);
                    }
                }
                kept
            })
            .collect();
        self.inner.values(&full)
    }
}

/// `method` over groups, then within the groups `rule` expands (each with the rest of the
/// prompt kept). The estimate's diagnostics record the groups, their scores and which were
/// expanded; its params, the hierarchy's settings.
pub fn hierarchical(
    game: &mut dyn Game,
    groups: &[Vec<usize>],
    rule: ExpandRule,
    method: Method,
    seed: u64,
) -> Result<Estimate, AttributionError> {
    let n = game.players();
    if groups.iter().map(Vec::len).sum::<usize>() != n || groups.iter().any(Vec::is_empty) {
        return Err(AttributionError::BadInput(
            "groups must be non-empty and cover every passage once".into(),
        ));
    }
    let top = estimate(
        method,
        &mut GroupGame {
            inner: game,
            groups,
        },
        seed,
    )?;
    let dims = top.scores.len();
    let expand = rule.select(&top.scores[0]);
    let mut scores = vec![vec![0f64; n]; dims];
    let mut errors = top.std_errors.as_ref().map(|_| vec![vec![0f64; n]; dims]);
    for (g, members) in groups.iter().enumerate() {
        let size = members.len() as f64;
        for d in 0..dims {
            for &p in members {
                scores[d][p] = top.scores[d][g] / size;
                if let (Some(e), Some(te)) = (errors.as_mut(), top.std_errors.as_ref()) {
                    e[d][p] = te[d][g] / size;
                }
            }
        }
    }
    let mut expanded_diagnostics = Vec::new();
    for &g in &expand {
        let members = &groups[g];
        // A group of one is its passage: the group-level score is already the passage's.
        if members.len() == 1 {
            continue;
        }
        let within = estimate(
            method,
            &mut WithinGroup {
                inner: game,
                members,
            },
            seed.wrapping_add(1 + g as u64),
        )?;
        for d in 0..dims {
            for (k, &p) in members.iter().enumerate() {
                scores[d][p] = within.scores[d][k];
                if let Some(e) = errors.as_mut() {
                    e[d][p] = within.std_errors.as_ref().map_or(0.0, |w| w[d][k]);
                }
            }
        }
        expanded_diagnostics.push(within.diagnostics);
    }
    Ok(Estimate {
        scores,
        std_errors: errors,
        value_full: top.value_full,
        value_empty: top.value_empty,
        params: top.params,
        diagnostics: json!({
            "groups": groups,
            "group_scores": top.scores[0],
            "expanded_groups": expand,
            "group_diagnostics": top.diagnostics,
            "within_group_diagnostics": expanded_diagnostics,
        }),
    })
}

#[cfg(test)]
mod tests {
    use glassbox_attribution::FnGame;

    use super::*;

    /// An additive game with one pair interaction: passages 1 and 6 only count together.
    fn game() -> FnGame<impl FnMut(&Coalition) -> Vec<f64>> {
        let w = [0.1, 0.0, -0.2, 3.0, 0.05, 0.0, 0.0, 0.3];
        FnGame::new(8, 1, move |c: &Coalition| {
            let mut v: f64 = c.members().map(|i| w[i]).sum();
            if c.contains(1) && c.contains(6) {
                v += 2.0;
            }
            vec![v]
        })
    }

    #[test]
    fn groups_of_one_are_the_method_itself() {
        let groups = contiguous_groups(8, NonZeroUsize::new(1).unwrap());
        let rule = ExpandRule::new(0.5, None).unwrap();
        let h = hierarchical(&mut game(), &groups, rule, Method::LeaveOneOut, 3).unwrap();
        let plain = estimate(Method::LeaveOneOut, &mut game(), 3).unwrap();
        assert_eq!(h.scores, plain.scores);
    }

    #[test]
    fn expanded_groups_get_exact_leave_one_out_and_the_rest_share_their_group() {
        let groups = contiguous_groups(8, NonZeroUsize::new(4).unwrap());
        assert_eq!(groups, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        let plain = estimate(Method::LeaveOneOut, &mut game(), 0).unwrap();
        // Only the top group: passage 3 (and 1, which needs 6) get their LOO; group 2 shares.
        let rule = ExpandRule::new(1.0, None).unwrap();
        let mut g = game();
        let h = hierarchical(&mut g, &groups, rule, Method::LeaveOneOut, 0).unwrap();
        assert_eq!(h.diagnostics["expanded_groups"], json!([0]));
        for p in 0..4 {
            assert!((h.scores[0][p] - plain.scores[0][p]).abs() < 1e-12, "{p}");
        }
        // Group 2's LOO is 0.05 + 2.0 (the pair) + 0.3, shared by its four passages.
        for p in 4..8 {
            assert!((h.scores[0][p] - 2.35 / 4.0).abs() < 1e-12, "{p}");
        }
        // Group level: full, empty, each group out; within the group: full, the group out,
        // each member out (repeats are memoized by a real game).
        assert_eq!(g.queries, 4 + 6);
        // A lower share expands both, recovering plain LOO everywhere.
        let rule = ExpandRule::new(0.1, None).unwrap();
        let h = hierarchical(&mut game(), &groups, rule, Method::LeaveOneOut, 0).unwrap();
        for p in 0..8 {
            assert!((h.scores[0][p] - plain.scores[0][p]).abs() < 1e-12, "{p}");
        }
    }

    #[test]
    fn bad_rules_and_groups_are_refused() {
        assert!(ExpandRule::new(1.5, None).is_err());
        assert!(ExpandRule::new(0.5, Some(0)).is_err());
        let rule = ExpandRule::new(0.5, Some(1)).unwrap();
        let err = hierarchical(&mut game(), &[vec![0, 1]], rule, Method::LeaveOneOut, 0);
        assert!(err.is_err());
    }
}
