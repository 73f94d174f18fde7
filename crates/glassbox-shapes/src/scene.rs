//! Synthetic scenes: one or two coloured shapes on a plain background, each with its pixel
//! mask, and the caption that names them from left to right.

use glassbox_vision::RgbImage;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

/// Scene images are this many pixels a side: with 8-pixel patches a 12 × 12 token grid, on
/// which an object covers several cells (a 6 × 6 grid left objects 2 × 2 cells, which TAM's
/// 3 × 3 rank filter mostly erases; measured, see docs/vision.md).
pub const SIZE: u32 = 96;
const BACKGROUND: [u8; 3] = [236, 236, 232];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Square,
    Circle,
    Triangle,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Square, Kind::Circle, Kind::Triangle];

    pub fn word(&self) -> &'static str {
        match self {
            Kind::Square => "square",
            Kind::Circle => "circle",
            Kind::Triangle => "triangle",
        }
    }

    /// Whether pixel `(x, y)` (centre-relative, in units of the half-size) is inside.
    fn contains(&self, u: f32, v: f32) -> bool {
        match self {
            Kind::Square => u.abs() <= 1.0 && v.abs() <= 1.0,
            Kind::Circle => u * u + v * v <= 1.0,
            // Apex up: the base spans the bottom edge.
            Kind::Triangle => (-1.0..=1.0).contains(&v) && u.abs() <= (v + 1.0) / 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
}

impl Colour {
    pub const ALL: [Colour; 4] = [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow];

    pub fn word(&self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
        }
    }

    fn rgb(&self) -> [u8; 3] {
        match self {
            Colour::Red => [210, 40, 40],
            Colour::Green => [40, 170, 60],
            Colour::Blue => [40, 70, 210],
            Colour::Yellow => [230, 200, 30],
        }
    }
}

/// One shape of a scene.
#[derive(Debug, Clone, Serialize)]
pub struct Object {
    pub kind: Kind,
    pub colour: Colour,
    /// Centre and half-size in pixels.
    pub cx: f32,
    pub cy: f32,
    pub half: f32,
    /// Row-major over the image.
    #[serde(skip)]
    pub mask: Vec<bool>,
}

/// A scene: the image, its objects left to right, and the caption naming them.
#[derive(Debug, Clone)]
pub struct Scene {
    pub image: RgbImage,
    pub objects: Vec<Object>,
    pub caption: String,
}

impl Scene {
    /// A random scene of one or two shapes (distinct in kind or colour, not overlapping).
    pub fn random(rng: &mut StdRng) -> Self {
        let count = if rng.gen_bool(0.3) { 1 } else { 2 };
        let mut objects: Vec<Object> = Vec::new();
        let mut attempts = 0;
        while objects.len() < count {
            // A first shape can leave no room for a second: start the scene over.
            attempts += 1;
            if attempts > 200 {
                objects.clear();
                attempts = 0;
            }
            let half = rng.gen_range(SIZE as f32 / 8.0..SIZE as f32 / 4.8);
            let cx = rng.gen_range(half + 1.0..SIZE as f32 - half - 1.0);
            let cy = rng.gen_range(half + 1.0..SIZE as f32 - half - 1.0);
            let kind = Kind::ALL[rng.gen_range(0..Kind::ALL.len())];
            let colour = Colour::ALL[rng.gen_range(0..Colour::ALL.len())];
            let apart = objects.iter().all(|o| {
                (o.cx - cx).abs() > o.half + half + 2.0 || (o.cy - cy).abs() > o.half + half + 2.0
            });
            // Left-to-right order must be clear, and two objects must differ somehow.
            let distinct = objects.iter().all(|o| {
                (o.cx - cx).abs() > SIZE as f32 / 12.0 && (o.kind != kind || o.colour != colour)
            });
            if apart && distinct {
                objects.push(Object {
                    kind,
                    colour,
                    cx,
                    cy,
                    half,
                    mask: Vec::new(),
                });
            }
        }
        objects.sort_by(|a, b| a.cx.total_cmp(&b.cx));
        Self::draw(objects)
    }

    /// The scene of these objects (masks and pixels drawn from their geometry).
    pub fn draw(mut objects: Vec<Object>) -> Self {
        let n = (SIZE * SIZE) as usize;
        let mut data = BACKGROUND.repeat(n);
        for o in &mut objects {
            o.mask = (0..n)
                .map(|i| {
                    let (x, y) = (
                        (i as u32 % SIZE) as f32 + 0.5,
                        (i as u32 / SIZE) as f32 + 0.5,
                    );
                    o.kind.contains((x - o.cx) / o.half, (y - o.cy) / o.half)
                })
                .collect();
            for (i, _) in o.mask.iter().enumerate().filter(|(_, m)| **m) {
                data[3 * i..3 * i + 3].copy_from_slice(&o.colour.rgb());
            }
        }
        let caption = format!(
            "{}.",
            objects
                .iter()
                .map(|o| format!("a {} {}", o.colour.word(), o.kind.word()))
                .collect::<Vec<_>>()
                .join(" and ")
        );
        Self {
            image: RgbImage {
                width: SIZE,
                height: SIZE,
                data,
            },
            objects,
            caption,
        }
    }
}

/// The seed of held-out scenes (training draws from its own `--seed`).
pub const HELD_OUT_SEED: u64 = 77;

/// `count` scenes from `seed` (training and held-out sets use different seeds).
pub fn scenes(seed: u64, count: usize) -> Vec<Scene> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|_| Scene::random(&mut rng)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_deterministic_and_masks_match_pixels() {
        let a = scenes(7, 20);
        let b = scenes(7, 20);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.image, y.image);
            assert_eq!(x.caption, y.caption);
        }
        for s in &a {
            assert!(s.caption.starts_with("a ") && s.caption.ends_with('.'));
            for o in &s.objects {
                let area = o.mask.iter().filter(|m| **m).count();
                assert!(area > 100, "{area}");
                // Every masked pixel has the object's colour.
                for (i, _) in o.mask.iter().enumerate().filter(|(_, m)| **m) {
                    assert_eq!(s.image.data[3 * i..3 * i + 3], o.colour.rgb());
                }
            }
            if s.objects.len() == 2 {
                assert!(s.objects[0].cx < s.objects[1].cx);
                assert!(s.caption.contains(" and "));
                let overlap = s.objects[0]
                    .mask
                    .iter()
                    .zip(&s.objects[1].mask)
                    .any(|(a, b)| *a && *b);
                assert!(!overlap);
            }
        }
    }
}
