//! Scores of a map against an object's pixel mask, as the TAM paper evaluates them (Otsu
//! threshold and IoU), plus the pointing game, energy inside the mask and interference.

use serde::Serialize;

use crate::grid::upsample_bilinear;

/// A map in `[0, 1]` as the 8-bit image the evaluation thresholds (`floor(255·v)`).
pub fn to_u8(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).floor() as u8)
        .collect()
}

/// Otsu's threshold of 8-bit values: the `t` maximising the between-class variance of
/// `v <= t` and `v > t` (the first such `t`, as OpenCV picks it).
pub fn otsu_threshold(values: &[u8]) -> u8 {
    let mut hist = [0u64; 256];
    values.iter().for_each(|&v| hist[v as usize] += 1);
    let n = values.len() as f64;
    if n == 0.0 {
        return 0;
    }
    let total: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut below, mut below_sum) = (0f64, 0f64);
    let (mut best, mut best_t) = (-1f64, 0u8);
    for (t, &count) in hist.iter().enumerate() {
        below += count as f64;
        below_sum += t as f64 * count as f64;
        let above = n - below;
        if below == 0.0 || above == 0.0 {
            continue;
        }
        let (m0, m1) = (below_sum / below, (total - below_sum) / above);
        let between = below * above * (m0 - m1).powi(2);
        if between > best {
            best = between;
            best_t = t as u8;
        }
    }
    best_t
}

/// How one map scores against one object mask.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MapScores {
    /// IoU of the Otsu-thresholded upsampled map with the mask (Obj-IoU).
    pub iou: f32,
    pub precision: f32,
    pub recall: f32,
    /// The Otsu threshold (8-bit), which Func-IoU reuses.
    pub threshold: u8,
    /// Whether the map's brightest pixel lies inside the mask (pointing game).
    pub pointing_hit: bool,
    /// Share of the map's mass inside the mask.
    pub energy_in_mask: f32,
}

/// Scores a `rows × cols` map in `[0, 1]` against `mask` (`width × height`, row-major).
pub fn score_map(
    map: &[f32],
    rows: usize,
    cols: usize,
    mask: &[bool],
    width: usize,
    height: usize,
) -> MapScores {
    assert_eq!(mask.len(), width * height, "mask is not width × height");
    let quantized: Vec<f32> = to_u8(map).iter().map(|&v| v as f32).collect();
    let pixels: Vec<u8> = upsample_bilinear(&quantized, rows, cols, width, height)
        .iter()
        .map(|&v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    let threshold = otsu_threshold(&pixels);
    let (mut tp, mut predicted, mut actual) = (0usize, 0usize, 0usize);
    for (&p, &m) in pixels.iter().zip(mask) {
        let on = p > threshold;
        tp += (on && m) as usize;
        predicted += on as usize;
        actual += m as usize;
    }
    let union = predicted + actual - tp;
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f32 / b as f32 };
    let total: f64 = pixels.iter().map(|&p| p as f64).sum();
    let inside: f64 = pixels
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(&p, _)| p as f64)
        .sum();
    MapScores {
        iou: ratio(tp, union),
        precision: ratio(tp, predicted),
        recall: ratio(tp, actual),
        threshold,
        pointing_hit: pointing_hit(&pixels, mask),
        energy_in_mask: if total > 0.0 {
            (inside / total) as f32
        } else {
            0.0
        },
    }
}

/// Whether the brightest pixel (the first, on ties) lies inside `mask`; a dark map points
/// nowhere.
pub fn pointing_hit(pixels: &[u8], mask: &[bool]) -> bool {
    let Some((i, &v)) = pixels
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
    else {
        return false;
    };
    v > 0 && mask[i]
}

/// Where a later word's map falls relative to the objects named before it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ObjectShares {
    /// Share of the map's mass (upsampled to the masks' size) on earlier objects' masks and
    /// not on the word's own object: how much the map is still about what was said before
    /// (0 for a dark map).
    pub interference: f32,
    /// Of the map's mass on the objects, the share on earlier ones rather than its own: 0 when
    /// the map tells its object apart, 0.5 when it cannot; `None` when the map is dark on
    /// every object.
    pub confusion: Option<f32>,
}

/// [`ObjectShares`] of a `rows × cols` map, for a word whose object is `own` after objects
/// `earlier` (masks `width × height`, row-major).
pub fn object_shares(
    map: &[f32],
    rows: usize,
    cols: usize,
    own: &[bool],
    earlier: &[&[bool]],
    width: usize,
    height: usize,
) -> ObjectShares {
    let pixels = upsample_bilinear(map, rows, cols, width, height);
    let (mut total, mut on_own, mut on_earlier) = (0f32, 0f32, 0f32);
    for (i, v) in pixels.iter().enumerate() {
        total += v;
        if own[i] {
            on_own += v;
        } else if earlier.iter().any(|m| m[i]) {
            on_earlier += v;
        }
    }
    ObjectShares {
        interference: if total > 0.0 { on_earlier / total } else { 0.0 },
        confusion: (on_own + on_earlier > 0.0).then(|| on_earlier / (on_own + on_earlier)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_splits_two_clusters() {
        let mut v = vec![10u8; 50];
        v.extend(vec![200u8; 30]);
        let t = otsu_threshold(&v);
        assert!((10..200).contains(&t), "{t}");
        assert_eq!(otsu_threshold(&[7; 20]), 0);
        assert_eq!(otsu_threshold(&[]), 0);
    }

    #[test]
    fn a_map_on_the_object_scores_well_and_one_off_it_does_not() {
        // 4 × 4 grid over a 16 × 16 image; the object is the top-left quadrant.
        let (w, h) = (16, 16);
        let mask: Vec<bool> = (0..w * h).map(|i| (i % w) < 8 && (i / w) < 8).collect();
        let mut on = vec![0f32; 16];
        for i in [0, 1, 4, 5] {
            on[i] = 1.0;
        }
        let s = score_map(&on, 4, 4, &mask, w, h);
        assert!(s.iou > 0.6, "{s:?}");
        assert!(s.pointing_hit);
        assert!(s.energy_in_mask > 0.8);
        let mut off = vec![0f32; 16];
        for i in [10, 11, 14, 15] {
            off[i] = 1.0;
        }
        let s = score_map(&off, 4, 4, &mask, w, h);
        assert!(s.iou < 0.05 && !s.pointing_hit, "{s:?}");
        // A flat map has no Otsu split: OpenCV's threshold stays 0, so the whole image is
        // foreground and the IoU is the mask's share of the image.
        let s = score_map(&[0.5; 16], 4, 4, &mask, w, h);
        assert_eq!((s.threshold, s.recall), (0, 1.0));
        assert!((s.iou - 0.25).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn object_shares_count_mass_on_earlier_objects() {
        let (w, h) = (3, 1);
        let own = [false, true, false];
        let earlier = [true, false, false];
        let shares = |map: [f32; 3]| object_shares(&map, 1, 3, &own, &[&earlier], w, h);
        assert_eq!(shares([1.0, 0.0, 0.0]).interference, 1.0);
        assert_eq!(shares([0.0, 1.0, 1.0]).interference, 0.0);
        // Background mass counts for interference, not for confusion.
        let s = shares([1.0, 3.0, 4.0]);
        assert_eq!((s.interference, s.confusion), (0.125, Some(0.25)));
        let dark = shares([0.0, 0.0, 0.0]);
        assert_eq!((dark.interference, dark.confusion), (0.0, None));
    }
}
