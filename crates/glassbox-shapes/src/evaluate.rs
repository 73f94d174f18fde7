//! How well each kind of map finds what the caption names, on scenes whose objects' pixels
//! are known (the TAM paper's protocol): Obj-IoU of shape words, the same for colour words,
//! Func-IoU of function words, their F1, the pointing game, energy inside the object, and
//! interference (a later object's words lighting up an earlier object).

use glassbox_maps::{
    ExplainError, ModeChoice, Reduce, explain_answer, merge_maps, object_shares, score_map, to_u8,
    words,
};
use glassbox_runtime::{GenerateOptions, Sampling};
use glassbox_vision::{Prompt, VisionLanguageModel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::frontend::GRID;
use crate::scene::{Colour, Kind, SIZE, Scene};
use crate::train::QUESTION;

/// The map kinds compared; `random` (seeded uniform noise a word) is the floor.
pub const KINDS: [&str; 6] = ["tam", "raw", "raw_filtered", "eci", "attention", "random"];

/// Means over the scenes of one kind of map.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindScores {
    pub kind: String,
    /// Shape words: IoU of the Otsu-thresholded map with the object's mask.
    pub obj_iou: f32,
    /// Colour words, the same against their object.
    pub colour_iou: f32,
    /// Function words (a, and): share of cells below the scene's mean noun threshold.
    pub func_iou: f32,
    /// Harmonic mean of `obj_iou` and `func_iou`.
    pub f1_iou: f32,
    /// Shape words whose brightest pixel is on their object.
    pub pointing: f32,
    pub energy_in_mask: f32,
    /// Words of second objects: share of their map on the first object.
    pub interference: f32,
    /// Words of second objects: of their map's mass on the two objects, the share on the
    /// first (0.5: the map cannot tell the objects apart).
    pub confusion: f32,
}

/// The study's result.
#[derive(Debug, Clone, Serialize)]
pub struct MapEvaluation {
    pub scenes: usize,
    /// `teacher_forced` (the true caption) or `generated` (the model's greedy caption; words
    /// are matched to objects by shape and colour, unmatched words are skipped).
    pub captions: &'static str,
    pub shape_words: usize,
    pub colour_words: usize,
    pub function_words: usize,
    pub second_object_words: usize,
    /// Generated captions equal to the true one (`None` for teacher-forced captions).
    pub exact_captions: Option<usize>,
    pub kinds: Vec<KindScores>,
    /// Mean seconds a scene: the forward pass over prompt and caption, and the maps after it.
    pub forward_seconds: f64,
    pub maps_seconds: f64,
}

#[derive(Default)]
struct Sums {
    obj: Vec<f32>,
    colour: Vec<f32>,
    func: Vec<f32>,
    pointing: Vec<f32>,
    energy: Vec<f32>,
    interference: Vec<f32>,
    confusion: Vec<f32>,
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f32>() / v.len() as f32
    }
}

/// The prompt of one scene.
pub fn scene_prompt(model: &VisionLanguageModel, scene: &Scene) -> Result<Prompt, ExplainError> {
    let text = model.chat_prompt(QUESTION, 1)?;
    Ok(model
        .prompt(&text, std::slice::from_ref(&scene.image), None)?
        .0)
}

/// What a caption word refers to.
enum Role {
    Shape(usize),
    Colour(usize),
    Function,
}

/// Roles of the caption's words: shape and colour words matched to the scene's objects (by
/// kind, and colour when kinds repeat).
fn roles(scene: &Scene, texts: &[String]) -> Vec<Option<Role>> {
    let kind_of = |w: &str| Kind::ALL.into_iter().find(|k| k.word() == w);
    let colour_of = |w: &str| Colour::ALL.into_iter().find(|c| c.word() == w);
    let find = |kind: Kind, colour: Option<Colour>| -> Option<usize> {
        let matches: Vec<usize> = (0..scene.objects.len())
            .filter(|&i| {
                scene.objects[i].kind == kind && colour.is_none_or(|c| scene.objects[i].colour == c)
            })
            .collect();
        (matches.len() == 1).then(|| matches[0])
    };
    (0..texts.len())
        .map(|i| {
            let w = texts[i].to_lowercase();
            if let Some(kind) = kind_of(&w) {
                let colour = i
                    .checked_sub(1)
                    .and_then(|j| colour_of(&texts[j].to_lowercase()));
                return find(kind, colour).map(Role::Shape);
            }
            if let Some(colour) = colour_of(&w) {
                let kind = texts.get(i + 1).and_then(|n| kind_of(&n.to_lowercase()))?;
                return find(kind, Some(colour)).map(Role::Colour);
            }
            matches!(w.as_str(), "a" | "an" | "and" | "the").then_some(Role::Function)
        })
        .collect()
}

/// Scores every kind of map on `scenes` (teacher-forced true captions, or the model's own).
pub fn evaluate_maps(
    model: &VisionLanguageModel,
    scenes: &[Scene],
    generated: bool,
) -> Result<MapEvaluation, ExplainError> {
    let side = SIZE as usize;
    let mut sums: Vec<Sums> = KINDS.iter().map(|_| Sums::default()).collect();
    let (mut shape_words, mut colour_words, mut function_words, mut second) = (0, 0, 0, 0);
    let (mut exact, mut forward, mut maps_time) = (0, 0.0, 0.0);
    let tokenizer = model.text().tokenizer();
    for (scene_index, scene) in scenes.iter().enumerate() {
        let prompt = scene_prompt(model, scene)?;
        let caption: Vec<u32> = if generated {
            let options = GenerateOptions {
                max_new_tokens: 16,
                sampling: Sampling::Greedy,
                stop_at_eos: true,
            };
            model.generate(&prompt, &options)?.tokens
        } else {
            tokenizer
                .encode(&scene.caption, false)
                .map_err(glassbox_runtime::RuntimeError::from)?
                .ids
        };
        if caption.is_empty() {
            continue;
        }
        let text = tokenizer
            .decode(&caption)
            .map_err(glassbox_runtime::RuntimeError::from)?;
        exact += (text.trim() == scene.caption) as usize;
        let result = explain_answer(
            model,
            &prompt,
            Some(QUESTION),
            &caption,
            ModeChoice::Corrected,
        )?;
        maps_time += result.maps_seconds;
        forward += result.forward_seconds;
        let token_texts: Vec<&str> = result.answer.iter().map(|a| a.text.as_str()).collect();
        let grouped = words(&token_texts);
        let texts: Vec<String> = grouped.iter().map(|w| w.text.clone()).collect();
        let roles = roles(scene, &texts);
        // Each word's map per kind: the maximum over its tokens (one grid: the image).
        let word_map = |kind: usize, w: usize| -> Vec<f32> {
            if KINDS[kind] == "random" {
                let mut rng = StdRng::seed_from_u64(((scene_index as u64) << 16) | w as u64);
                return (0..GRID * GRID).map(|_| rng.r#gen::<f32>()).collect();
            }
            let per_token: Vec<&[Vec<f32>]> = grouped[w]
                .tokens
                .iter()
                .map(|&t| match KINDS[kind] {
                    "attention" => result.attention[t].as_slice(),
                    name => {
                        let variant = glassbox_maps::Variant::ALL
                            .into_iter()
                            .find(|v| v.name() == name)
                            .expect("a TAM variant");
                        result.maps[t].maps.get(variant)
                    }
                })
                .collect();
            merge_maps(&per_token, Reduce::Max).remove(0)
        };
        for role in roles.iter().flatten() {
            match role {
                Role::Shape(o) => {
                    shape_words += 1;
                    second += (*o > 0) as usize;
                }
                Role::Colour(o) => {
                    colour_words += 1;
                    second += (*o > 0) as usize;
                }
                Role::Function => function_words += 1,
            }
        }
        for (k, s) in sums.iter_mut().enumerate() {
            let mut thresholds = Vec::new();
            for (w, role) in roles.iter().enumerate() {
                let (Some(Role::Shape(o)) | Some(Role::Colour(o))) = role else {
                    continue;
                };
                let map = word_map(k, w);
                let object = &scene.objects[*o];
                let scores = score_map(&map, GRID, GRID, &object.mask, side, side);
                if matches!(role, Some(Role::Shape(_))) {
                    s.obj.push(scores.iou);
                    s.pointing.push(scores.pointing_hit as u8 as f32);
                    s.energy.push(scores.energy_in_mask);
                    thresholds.push(scores.threshold as f32);
                } else {
                    s.colour.push(scores.iou);
                }
                if *o > 0 {
                    let earlier: Vec<&[bool]> = scene.objects[..*o]
                        .iter()
                        .map(|e| e.mask.as_slice())
                        .collect();
                    let shares =
                        object_shares(&map, GRID, GRID, &object.mask, &earlier, side, side);
                    s.interference.push(shares.interference);
                    s.confusion.extend(shares.confusion);
                }
            }
            if thresholds.is_empty() {
                continue;
            }
            let threshold = mean(&thresholds);
            for (w, role) in roles.iter().enumerate() {
                if matches!(role, Some(Role::Function)) {
                    let cells = to_u8(&word_map(k, w));
                    let dark = cells.iter().filter(|&&c| (c as f32) < threshold).count();
                    s.func.push(dark as f32 / cells.len() as f32);
                }
            }
        }
    }
    let n = scenes.len().max(1) as f64;
    let kinds = KINDS
        .iter()
        .zip(&sums)
        .map(|(kind, s)| {
            let (obj, func) = (mean(&s.obj), mean(&s.func));
            KindScores {
                kind: kind.to_string(),
                obj_iou: obj,
                colour_iou: mean(&s.colour),
                func_iou: func,
                f1_iou: if obj + func > 0.0 {
                    2.0 * obj * func / (obj + func)
                } else {
                    0.0
                },
                pointing: mean(&s.pointing),
                energy_in_mask: mean(&s.energy),
                interference: mean(&s.interference),
                confusion: mean(&s.confusion),
            }
        })
        .collect();
    Ok(MapEvaluation {
        scenes: scenes.len(),
        captions: if generated {
            "generated"
        } else {
            "teacher_forced"
        },
        shape_words,
        colour_words,
        function_words,
        second_object_words: second,
        exact_captions: generated.then_some(exact),
        kinds,
        forward_seconds: forward / n,
        maps_seconds: maps_time / n,
    })
}
