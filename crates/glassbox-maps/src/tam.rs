//! The TAM computation: raw class activation maps, estimated causal inference, joint
//! normalisation and the rank Gaussian filter.

use std::collections::HashMap;

use serde::Serialize;

use crate::filter::rank_gaussian_filter;
use crate::grid::Grid;

/// A context or explained token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextToken {
    /// For a prompt token, its own position; for an explained (answer) token, the position
    /// that predicts it.
    pub position: usize,
    pub token: u32,
    /// Its text, to tell repeated tokens apart from different ones.
    pub text: String,
}

/// What the reference code (xmed-lab/TAM) does that the method as described does not: for
/// parity checks with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReferenceQuirks {
    /// The reference explains the first answer token with the class of the last prompt
    /// token (the token *at* the predicting position, not the one predicted).
    pub last_prompt_token: u32,
    /// The reference's first prompt token's class is the argmax of the logits at its own
    /// position, and the map it returns for the first answer token is that token's.
    pub first_prompt_argmax: u32,
}

/// Which computation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Mode {
    /// The method as specified: every token explained with its own class.
    #[default]
    Corrected,
    /// The reference code's behaviour (see [`ReferenceQuirks`]).
    Reference(ReferenceQuirks),
}

/// The maps of one computation, by stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// `max(0, h·w_c)` min-max normalised over the vision tokens (a logit lens at the last
    /// layer).
    Raw,
    /// The raw map through the rank Gaussian filter.
    RawFiltered,
    /// After estimated causal inference, normalised jointly with the text scores (no filter).
    Eci,
    /// The full TAM: ECI, joint normalisation, filter.
    Tam,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Raw,
        Variant::RawFiltered,
        Variant::Eci,
        Variant::Tam,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Variant::Raw => "raw",
            Variant::RawFiltered => "raw_filtered",
            Variant::Eci => "eci",
            Variant::Tam => "tam",
        }
    }
}

/// Per grid, values in `[0, 1]` row-major, for every variant.
#[derive(Debug, Clone, Serialize)]
pub struct VariantMaps {
    pub raw: Vec<Vec<f32>>,
    pub raw_filtered: Vec<Vec<f32>>,
    pub eci: Vec<Vec<f32>>,
    pub tam: Vec<Vec<f32>>,
}

impl VariantMaps {
    pub fn get(&self, variant: Variant) -> &[Vec<f32>] {
        match variant {
            Variant::Raw => &self.raw,
            Variant::RawFiltered => &self.raw_filtered,
            Variant::Eci => &self.eci,
            Variant::Tam => &self.tam,
        }
    }
}

/// The maps of one explained token.
#[derive(Debug, Clone, Serialize)]
pub struct TokenMap {
    pub token: u32,
    pub text: String,
    /// The class whose LM-head row made the map (the token itself unless in reference mode).
    pub class: u32,
    /// ECI's scale of the interference map (0 when there was none).
    pub alpha: f32,
    /// Share of the raw map's mass that ECI removed.
    pub removed: f32,
    /// Text scores (`max(0, h·w_c)` at the context positions, prompt then earlier answer
    /// tokens) after joint normalisation.
    pub text_scores: Vec<f32>,
    pub maps: VariantMaps,
}

/// What TAM reads from one forward pass.
pub struct TamInput<'a> {
    /// Final-norm hidden states `[positions, d]`.
    pub hidden: &'a [f32],
    pub d: usize,
    /// The vision tokens, one grid per image / tile / frame.
    pub grids: &'a [Grid],
    /// Prompt text tokens that count as context (the user's text), at their own positions.
    pub prompt: &'a [ContextToken],
    /// The explained tokens in order, each at the position that predicts it.
    pub answer: &'a [ContextToken],
    /// The LM-head row (`logit = h · row`) of a token.
    pub head_row: &'a dyn Fn(u32) -> Vec<f32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TamError {
    #[error("no vision tokens to map")]
    NoVisionTokens,
    #[error("grid of {rows} × {cols} has {positions} positions")]
    BadGrid {
        rows: usize,
        cols: usize,
        positions: usize,
    },
    #[error("position {position} is past the {positions} hidden states")]
    PositionOutOfRange { position: usize, positions: usize },
    #[error("head row of token {token} has length {len}, not {d}")]
    BadHeadRow { token: u32, len: usize, d: usize },
    #[error(
        "the reference code divides by zero on this input (a flat map); use the corrected mode"
    )]
    ReferenceUndefined,
}

/// Maps for every explained token of `input`.
pub fn tam(input: &TamInput<'_>, mode: Mode) -> Result<Vec<TokenMap>, TamError> {
    let positions = input.hidden.len() / input.d.max(1);
    let vision: Vec<usize> = input
        .grids
        .iter()
        .flat_map(|g| g.positions.iter().copied())
        .collect();
    if vision.is_empty() {
        return Err(TamError::NoVisionTokens);
    }
    for g in input.grids {
        if g.rows * g.cols != g.positions.len() {
            return Err(TamError::BadGrid {
                rows: g.rows,
                cols: g.cols,
                positions: g.positions.len(),
            });
        }
    }
    for &p in vision
        .iter()
        .chain(input.prompt.iter().map(|t| &t.position))
        .chain(input.answer.iter().map(|t| &t.position))
    {
        if p >= positions {
            return Err(TamError::PositionOutOfRange {
                position: p,
                positions,
            });
        }
    }
    let mut maps = Maps {
        input,
        vision,
        rows: HashMap::new(),
        raw: HashMap::new(),
    };
    // Each context token's class: its own token, except where the reference differs.
    let prompt_class = |k: usize| match mode {
        Mode::Reference(q) if k == 0 => q.first_prompt_argmax,
        _ => input.prompt[k].token,
    };
    let answer_class = |j: usize| match mode {
        Mode::Reference(q) if j == 0 => q.last_prompt_token,
        _ => input.answer[j].token,
    };
    let mut out = Vec::with_capacity(input.answer.len());
    for t in 0..input.answer.len() {
        let current = &input.answer[t];
        let class = answer_class(t);
        let map = match mode {
            Mode::Reference(q) if t == 0 && !input.prompt.is_empty() => {
                // The reference returns the first prompt token's map here: its class, no ECI,
                // normalised with the prompt's text scores.
                let class = q.first_prompt_argmax;
                let context: Vec<usize> = input.prompt.iter().map(|p| p.position).collect();
                maps.explain(current, class, &[], &context, true)?
            }
            _ => {
                // Earlier context tokens whose text differs from the current one interfere.
                let mut interfering = Vec::new();
                let mut context = Vec::new();
                for (k, p) in input.prompt.iter().enumerate() {
                    context.push(p.position);
                    if p.text != current.text {
                        interfering.push((p.position, prompt_class(k)));
                    }
                }
                for (j, a) in input.answer[..t].iter().enumerate() {
                    context.push(a.position);
                    if a.text != current.text {
                        interfering.push((a.position, answer_class(j)));
                    }
                }
                let reference = matches!(mode, Mode::Reference(_));
                maps.explain(current, class, &interfering, &context, reference)?
            }
        };
        out.push(map);
    }
    Ok(out)
}

struct Maps<'a, 'b> {
    input: &'a TamInput<'b>,
    vision: Vec<usize>,
    rows: HashMap<u32, Vec<f32>>,
    raw: HashMap<u32, Vec<f32>>,
}

impl Maps<'_, '_> {
    fn row(&mut self, class: u32) -> Result<&[f32], TamError> {
        if !self.rows.contains_key(&class) {
            let row = (self.input.head_row)(class);
            if row.len() != self.input.d {
                return Err(TamError::BadHeadRow {
                    token: class,
                    len: row.len(),
                    d: self.input.d,
                });
            }
            self.rows.insert(class, row);
        }
        Ok(&self.rows[&class])
    }

    /// `max(0, h[position] · w_class)`.
    fn score(&mut self, position: usize, class: u32) -> Result<f32, TamError> {
        let d = self.input.d;
        let h = &self.input.hidden[position * d..(position + 1) * d];
        let w = self.row(class)?;
        Ok(dot(h, w).max(0.0))
    }

    /// The raw map of `class` over the vision tokens (cached: context classes repeat).
    fn raw_map(&mut self, class: u32) -> Result<Vec<f32>, TamError> {
        if let Some(m) = self.raw.get(&class) {
            return Ok(m.clone());
        }
        let d = self.input.d;
        let w = self.row(class)?.to_vec();
        let map: Vec<f32> = self
            .vision
            .iter()
            .map(|&p| dot(&self.input.hidden[p * d..(p + 1) * d], &w).max(0.0))
            .collect();
        self.raw.insert(class, map.clone());
        Ok(map)
    }

    fn explain(
        &mut self,
        current: &ContextToken,
        class: u32,
        interfering: &[(usize, u32)],
        context: &[usize],
        reference: bool,
    ) -> Result<TokenMap, TamError> {
        let raw = self.raw_map(class)?;
        // Estimated causal inference: the context maps weighted by how much each context
        // position already scores the class, scaled by least squares, then subtracted.
        let mut weights = Vec::with_capacity(interfering.len());
        for &(position, _) in interfering {
            weights.push(self.score(position, class)?);
        }
        let total: f32 = weights.iter().sum();
        let mut interference = vec![0f32; raw.len()];
        for (&(_, k_class), &w) in interfering.iter().zip(&weights) {
            if w == 0.0 {
                continue;
            }
            let w = w / (total + 1e-8);
            let map = self.raw_map(k_class)?;
            interference
                .iter_mut()
                .zip(&map)
                .for_each(|(e, m)| *e += w * m);
        }
        let ee = dot(&interference, &interference);
        let alpha = if ee > 0.0 {
            dot(&raw, &interference) / ee
        } else {
            0.0
        };
        let eci: Vec<f32> = raw
            .iter()
            .zip(&interference)
            .map(|(a, e)| (a - alpha * e).max(0.0))
            .collect();
        let raw_mass: f32 = raw.iter().sum();
        let removed = if raw_mass > 0.0 {
            1.0 - eci.iter().sum::<f32>() / raw_mass
        } else {
            0.0
        };
        let mut text = Vec::with_capacity(context.len());
        for &p in context {
            text.push(self.score(p, class)?);
        }
        // Joint normalisation of the image part and the text scores.
        let (lo, hi) = eci
            .iter()
            .chain(&text)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        if reference && hi <= lo {
            return Err(TamError::ReferenceUndefined);
        }
        let normalize = |v: &[f32], lo: f32, hi: f32| -> Vec<f32> {
            if hi > lo {
                v.iter().map(|x| (x - lo) / (hi - lo)).collect()
            } else {
                vec![0.0; v.len()]
            }
        };
        let eci_norm = normalize(&eci, lo, hi);
        let text_scores = normalize(&text, lo, hi);
        let (raw_lo, raw_hi) = raw
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let raw_norm = normalize(&raw, raw_lo, raw_hi);
        let split = |flat: &[f32]| -> Vec<Vec<f32>> {
            let mut start = 0;
            self.input
                .grids
                .iter()
                .map(|g| {
                    let part = flat[start..start + g.positions.len()].to_vec();
                    start += g.positions.len();
                    part
                })
                .collect()
        };
        let filtered = |maps: &[Vec<f32>]| -> Vec<Vec<f32>> {
            maps.iter()
                .zip(self.input.grids)
                .map(|(m, g)| rank_gaussian_filter(m, g.rows, g.cols))
                .collect()
        };
        let raw_grids = split(&raw_norm);
        let eci_grids = split(&eci_norm);
        Ok(TokenMap {
            token: current.token,
            text: current.text.clone(),
            class,
            alpha,
            removed,
            text_scores,
            maps: VariantMaps {
                raw_filtered: filtered(&raw_grids),
                tam: filtered(&eci_grids),
                raw: raw_grids,
                eci: eci_grids,
            },
        })
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// How token maps combine into a word's or a span's map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Cell-wise maximum (the TAM evaluation's choice for words).
    Max,
    /// Cell-wise mean (for display).
    Mean,
}

/// The cell-wise combination of several tokens' maps (each a list of grids).
pub fn merge_maps(maps: &[&[Vec<f32>]], reduce: Reduce) -> Vec<Vec<f32>> {
    let Some(first) = maps.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(g, grid)| {
            (0..grid.len())
                .map(|i| {
                    let values = maps.iter().map(|m| m[g][i]);
                    match reduce {
                        Reduce::Max => values.fold(f32::NEG_INFINITY, f32::max),
                        Reduce::Mean => values.sum::<f32>() / maps.len() as f32,
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hidden states over a 4 × 4 grid at positions 0..16 whose features are
    /// `[planted, interference, 0, 0]`, then text positions 16.. with given states.
    fn states(planted: &[f32], interfering: &[f32], text: &[[f32; 4]]) -> Vec<f32> {
        let mut h: Vec<f32> = planted
            .iter()
            .zip(interfering)
            .flat_map(|(&p, &q)| [p, q, 0.0, 0.0])
            .collect();
        h.extend(text.iter().flatten());
        h
    }

    fn rows(token: u32) -> Vec<f32> {
        match token {
            // The explained token reads both features; the context token only the second.
            1 => vec![1.0, 1.0, 0.0, 0.0],
            2 => vec![0.0, 1.0, 0.0, 0.0],
            3 => vec![0.0, 0.0, 1.0, 0.0],
            _ => vec![0.0; 4],
        }
    }

    /// The test inputs: four-wide hidden states read with [`rows`].
    fn input<'a>(
        hidden: &'a [f32],
        grids: &'a [Grid],
        prompt: &'a [ContextToken],
        answer: &'a [ContextToken],
    ) -> TamInput<'a> {
        TamInput {
            hidden,
            d: 4,
            grids,
            prompt,
            answer,
            head_row: &rows,
        }
    }

    fn token(position: usize, token: u32, text: &str) -> ContextToken {
        ContextToken {
            position,
            token,
            text: text.into(),
        }
    }

    fn blob(cells: &[usize]) -> Vec<f32> {
        let mut m = vec![0f32; 16];
        cells.iter().for_each(|&c| m[c] = 1.0);
        m
    }

    #[test]
    fn eci_recovers_a_planted_map_under_interference() {
        let planted = blob(&[0, 1, 4, 5]);
        let other = blob(&[10, 11, 14, 15]);
        // The context position scores the class 1 (as the planted cells): joint normalisation
        // leaves them at 1.
        let hidden = states(
            &planted,
            &other,
            &[[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]],
        );
        let grids = [Grid::consecutive(0, 4, 4)];
        let prompt = [token(16, 2, " dog")];
        let answer = [token(17, 1, " cat")];
        let input = input(&hidden, &grids, &prompt, &answer);
        let maps = tam(&input, Mode::Corrected).unwrap();
        let m = &maps[0];
        assert!((m.alpha - 1.0).abs() < 1e-6, "alpha {}", m.alpha);
        assert!((m.removed - 0.5).abs() < 1e-6);
        // The raw map lights both objects, ECI only the planted one.
        let raw = &m.maps.raw[0];
        assert!(raw[0] == 1.0 && raw[15] == 1.0);
        let eci = &m.maps.eci[0];
        for c in 0..16 {
            assert!((eci[c] - planted[c]).abs() < 1e-6, "cell {c}: {}", eci[c]);
        }
        // The filter keeps the 2 × 2 blob's inside.
        assert!(m.maps.tam[0][0] > 0.5);
        assert!(m.maps.tam[0][15] == 0.0);
    }

    #[test]
    fn repeated_tokens_do_not_interfere() {
        let planted = blob(&[0, 1, 4, 5]);
        let other = blob(&[10, 11, 14, 15]);
        let hidden = states(
            &planted,
            &other,
            &[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]],
        );
        let grids = [Grid::consecutive(0, 4, 4)];
        // Same text as the explained token: not a source of interference.
        let prompt = [token(16, 2, " cat")];
        let answer = [token(17, 1, " cat")];
        let input = input(&hidden, &grids, &prompt, &answer);
        let m = &tam(&input, Mode::Corrected).unwrap()[0];
        assert_eq!(m.alpha, 0.0);
        assert_eq!(m.maps.eci[0][15], m.maps.eci[0][0]);
    }

    #[test]
    fn empty_context_and_flat_maps_give_no_nan() {
        let hidden = states(&[0.0; 16], &[0.0; 16], &[[0.0; 4]]);
        let grids = [Grid::consecutive(0, 4, 4)];
        let answer = [token(16, 1, "a")];
        let input = input(&hidden, &grids, &[], &answer);
        let m = &tam(&input, Mode::Corrected).unwrap()[0];
        for v in Variant::ALL {
            assert!(m.maps.get(v)[0].iter().all(|&x| x == 0.0), "{v:?}");
        }
        let quirks = ReferenceQuirks {
            last_prompt_token: 1,
            first_prompt_argmax: 1,
        };
        assert_eq!(
            tam(&input, Mode::Reference(quirks)).unwrap_err(),
            TamError::ReferenceUndefined
        );
    }

    #[test]
    fn grids_split_the_vision_tokens_in_order() {
        // Two 2 × 2 grids (two images); the second image's third cell is the bright one.
        let mut planted = vec![0f32; 16];
        planted[6] = 1.0;
        let hidden = states(&planted, &[0.0; 16], &[[0.0; 4]]);
        let grids = [
            Grid::consecutive(0, 2, 2),
            Grid {
                positions: vec![4, 5, 6, 7],
                rows: 2,
                cols: 2,
            },
        ];
        let answer = [token(16, 1, "a")];
        let input = input(&hidden, &grids, &[], &answer);
        let m = &tam(&input, Mode::Corrected).unwrap()[0];
        assert_eq!(m.maps.raw[0], vec![0.0; 4]);
        assert_eq!(m.maps.raw[1], vec![0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn reference_mode_explains_the_first_answer_token_as_the_reference_does() {
        let planted = blob(&[0, 1, 4, 5]);
        let hidden = states(
            &planted,
            &[0.0; 16],
            &[[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]],
        );
        let grids = [Grid::consecutive(0, 4, 4)];
        let prompt = [token(16, 3, " hi")];
        let answer = [token(17, 1, " cat"), token(17, 1, " cat")];
        let input = input(&hidden, &grids, &prompt, &answer);
        let quirks = ReferenceQuirks {
            last_prompt_token: 2,
            first_prompt_argmax: 3,
        };
        let r = tam(&input, Mode::Reference(quirks)).unwrap();
        // Answer token 0 gets the first prompt token's map (class 3, dark on the image) …
        assert_eq!(r[0].class, 3);
        // … and token 1 keeps its own class.
        assert_eq!(r[1].class, 1);
        let c = tam(&input, Mode::Corrected).unwrap();
        assert_eq!(c[0].class, 1);
        assert!(c[0].maps.raw[0][0] == 1.0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let hidden = vec![0f32; 4 * 4];
        let answer = [token(9, 1, "a")];
        let grids = [Grid::consecutive(0, 2, 2)];
        let input = input(&hidden, &grids, &[], &answer);
        assert!(matches!(
            tam(&input, Mode::Corrected),
            Err(TamError::PositionOutOfRange { position: 9, .. })
        ));
        let input = TamInput {
            grids: &[],
            ..input
        };
        assert_eq!(
            tam(&input, Mode::Corrected).unwrap_err(),
            TamError::NoVisionTokens
        );
    }

    #[test]
    fn word_maps_take_the_max_or_mean_of_their_tokens() {
        let a = vec![vec![0.0, 1.0]];
        let b = vec![vec![0.5, 0.0]];
        assert_eq!(merge_maps(&[&a, &b], Reduce::Max), vec![vec![0.5, 1.0]]);
        assert_eq!(merge_maps(&[&a, &b], Reduce::Mean), vec![vec![0.25, 0.5]]);
    }
}
