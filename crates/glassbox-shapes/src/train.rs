//! Training the front end with the text model frozen (LLaVA's first stage): the caption's
//! teacher-forced loss, differentiated by the runtime's hand-written backward down to the
//! input embeddings at the image positions, then by the front end's own backward to its
//! weights; Adam.

use std::sync::Mutex;
use std::time::Instant;

use glassbox_runtime::{
    ChatTemplate, GenerateOptions, GradientRow, Model, RuntimeError, Sampling, log_softmax_at,
};
use glassbox_vision::{
    Filter, FixedProcessing, IMAGE_TOKEN, Processing, RgbImage, generate_from_embeddings,
};
use serde::Serialize;

use crate::frontend::{FrontEnd, PATCHES};
use crate::scene::{SIZE, Scene, scenes};

/// The chat template of the known-content model: SmolLM2's turn format, with image parts.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// What the user asks about every scene.
pub const QUESTION: &str = "Describe the image.";

/// The token that ends the assistant's turn (and the caption's last target).
const END_OF_TURN: &str = "<|im_end|>";

/// The SigLIP-style processing of the known-content model: scenes are already tower-sized,
/// so only rescaling and normalisation to [-1, 1] apply.
pub fn processing() -> Processing {
    Processing::Fixed(FixedProcessing {
        width: SIZE,
        height: SIZE,
        filter: Filter::Bicubic,
        rescale_factor: Some(1.0 / 255.0),
        normalize: Some(([0.5; 3], [0.5; 3])),
        image_seq_len: PATCHES,
    })
}

fn pixels(image: &RgbImage) -> Vec<f32> {
    processing()
        .process(image, None)
        .expect("a fixed processor never fails")
        .tiles
        .remove(0)
}

/// The prompt around the image tokens, as token ids.
#[derive(Debug, Clone)]
pub struct PromptLayout {
    pub before: Vec<u32>,
    pub after: Vec<u32>,
    pub end_of_turn: u32,
}

impl PromptLayout {
    /// The rendered chat prompt of [`QUESTION`] with one image, split at the image.
    pub fn new(model: &Model) -> Result<Self, RuntimeError> {
        let template = ChatTemplate::new(CHAT_TEMPLATE, None, Some(END_OF_TURN.into()))?;
        let message = serde_json::json!({
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": QUESTION}],
        });
        let text = template.render(&[message], true)?;
        let (before, after) = text
            .split_once(IMAGE_TOKEN)
            .expect("the template writes the image placeholder");
        let tok = model.tokenizer();
        let encode =
            |s: &str, bos: bool| -> Result<Vec<u32>, RuntimeError> { Ok(tok.encode(s, bos)?.ids) };
        Ok(Self {
            before: encode(before, tok.wants_bos())?,
            after: encode(after, false)?,
            end_of_turn: tok.token_id(END_OF_TURN).ok_or_else(|| {
                RuntimeError::InvalidRequest(format!("the tokenizer has no {END_OF_TURN}"))
            })?,
        })
    }

    /// Input embeddings of the prompt with `image` (`[PATCHES, hidden]`) in place, then
    /// `tail` tokens; and the prompt's ids (image positions hold `placeholder`).
    fn embeddings(
        &self,
        model: &Model,
        image: &[f32],
        tail: &[u32],
        placeholder: u32,
    ) -> Result<(Vec<f32>, Vec<u32>), RuntimeError> {
        let mut e = model.embed(&self.before)?.data;
        e.extend_from_slice(image);
        e.extend(model.embed(&self.after)?.data);
        if !tail.is_empty() {
            e.extend(model.embed(tail)?.data);
        }
        let mut ids = self.before.clone();
        ids.extend(std::iter::repeat_n(placeholder, PATCHES));
        ids.extend(&self.after);
        Ok((e, ids))
    }

    fn len(&self) -> usize {
        self.before.len() + PATCHES + self.after.len()
    }
}

/// Training settings (recorded with the weights).
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub steps: usize,
    pub batch: usize,
    pub learning_rate: f32,
    /// Scenes are drawn from this seed; parameters are initialised from `seed + 1`.
    pub seed: u64,
    pub train_scenes: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: 400,
            batch: 8,
            learning_rate: 2e-3,
            seed: 2026,
            train_scenes: 4000,
        }
    }
}

/// What training did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainLog {
    pub options: TrainOptions,
    /// Mean caption loss (nats a token) of each step.
    pub losses: Vec<f32>,
    pub seconds: f64,
    pub parameters: usize,
}

/// Adam's moment estimates for every parameter tensor.
struct Adam {
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: i32,
}

impl Adam {
    fn new(params: &mut FrontEnd) -> Self {
        let sizes: Vec<usize> = params.tensors_mut().iter().map(|t| t.len()).collect();
        Self {
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            step: 0,
        }
    }

    fn update(&mut self, params: &mut FrontEnd, grads: &mut FrontEnd, lr: f32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.step += 1;
        let (c1, c2) = (1.0 - B1.powi(self.step), 1.0 - B2.powi(self.step));
        for (k, (p, g)) in params
            .tensors_mut()
            .into_iter()
            .zip(grads.tensors_mut())
            .enumerate()
        {
            for i in 0..p.len() {
                self.m[k][i] = B1 * self.m[k][i] + (1.0 - B1) * g[i];
                self.v[k][i] = B2 * self.v[k][i] + (1.0 - B2) * g[i] * g[i];
                p[i] -= lr * (self.m[k][i] / c1) / ((self.v[k][i] / c2).sqrt() + 1e-8);
            }
        }
    }
}

/// Scales `grads` so their global norm is at most `max`.
fn clip(grads: &mut FrontEnd, max: f32) {
    let norm: f32 = grads
        .tensors_mut()
        .iter()
        .flat_map(|t| t.iter())
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt();
    if norm > max {
        let s = max / norm;
        grads
            .tensors_mut()
            .into_iter()
            .for_each(|t| t.iter_mut().for_each(|v| *v *= s));
    }
}

/// Caption targets of a scene: its tokens, then the end of the turn.
fn targets(model: &Model, scene: &Scene, layout: &PromptLayout) -> Result<Vec<u32>, RuntimeError> {
    let mut ids = model.tokenizer().encode(&scene.caption, false)?.ids;
    ids.push(layout.end_of_turn);
    Ok(ids)
}

/// Trains a front end for `model` (frozen) on random scenes; `progress` sees each step's
/// loss.
pub fn train(
    model: &Model,
    options: &TrainOptions,
    progress: &mut dyn FnMut(usize, f32),
) -> Result<(FrontEnd, TrainLog), RuntimeError> {
    let started = Instant::now();
    let d = model.config().hidden_size;
    let layout = PromptLayout::new(model)?;
    // Start image tokens where text tokens are: the mean and spread of the embedding table.
    let sample: Vec<u32> = (0..model.config().vocab_size as u32).step_by(7).collect();
    let table = model.embed(&sample)?.data;
    let mut mean = vec![0f32; d];
    for row in table.chunks(d) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, v)| *m += v / sample.len() as f32);
    }
    let var: f32 = table
        .chunks(d)
        .flat_map(|row| row.iter().zip(&mean).map(|(v, m)| (v - m) * (v - m)))
        .sum::<f32>()
        / table.len() as f32;
    let mut front = FrontEnd::init(options.seed + 1, d, &mean, var.sqrt());
    let mut adam = Adam::new(&mut front);
    let data = scenes(options.seed, options.train_scenes);
    let all_pixels: Vec<Vec<f32>> = data.iter().map(|s| pixels(&s.image)).collect();
    let all_targets: Vec<Vec<u32>> = data
        .iter()
        .map(|s| targets(model, s, &layout))
        .collect::<Result<_, _>>()?;
    let mut losses = Vec::with_capacity(options.steps);
    for step in 0..options.steps {
        let batch: Vec<usize> = (0..options.batch)
            .map(|b| (step * options.batch + b) % data.len())
            .collect();
        let tiles: Vec<Vec<f32>> = batch.iter().map(|&i| all_pixels[i].clone()).collect();
        let (image_tokens, cache) = front.forward(&tiles);
        let start = layout.before.len();
        let mut rows = Vec::with_capacity(batch.len());
        for (b, &i) in batch.iter().enumerate() {
            let t = &all_targets[i];
            let image = &image_tokens[b * PATCHES * d..(b + 1) * PATCHES * d];
            // Teacher forcing: the targets but the last follow the prompt.
            let (e, _) = layout.embeddings(model, image, &t[..t.len() - 1], 0)?;
            let first = layout.len() - 1;
            rows.push(GradientRow::new(e, (first..first + t.len()).collect()));
        }
        let tokens: usize = batch.iter().map(|&i| all_targets[i].len()).sum();
        let loss = Mutex::new(0f64);
        let objective = |row: usize, logits: &glassbox_runtime::Array| -> Vec<f32> {
            let t = &all_targets[batch[row]];
            let vocab = logits.shape[1];
            let mut grad = vec![0f32; logits.data.len()];
            let mut total = 0f64;
            for (p, &target) in t.iter().enumerate() {
                let l = logits.row(p);
                total -= log_softmax_at(l, target) as f64;
                let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let z: f32 = l.iter().map(|v| (v - max).exp()).sum();
                let g = &mut grad[p * vocab..(p + 1) * vocab];
                for (gv, &lv) in g.iter_mut().zip(l) {
                    *gv = (lv - max).exp() / z / tokens as f32;
                }
                g[target as usize] -= 1.0 / tokens as f32;
            }
            *loss.lock().expect("not poisoned") += total;
            grad
        };
        let grads = model.gradients(rows, &[], &objective)?;
        let mut d_image = vec![0f32; image_tokens.len()];
        for (b, g) in grads.iter().enumerate() {
            d_image[b * PATCHES * d..(b + 1) * PATCHES * d]
                .copy_from_slice(&g.input.data[start * d..(start + PATCHES) * d]);
        }
        let mut g = front.backward(&cache, &d_image);
        clip(&mut g, 1.0);
        // Linear warm-up over the first 5% of steps, then linear decay to a tenth.
        let warm = (options.steps / 20).max(1);
        let lr = options.learning_rate
            * if step < warm {
                (step + 1) as f32 / warm as f32
            } else {
                1.0 - 0.9 * (step - warm) as f32 / (options.steps - warm).max(1) as f32
            };
        adam.update(&mut front, &mut g, lr);
        let mean_loss = (*loss.lock().expect("not poisoned") / tokens as f64) as f32;
        losses.push(mean_loss);
        progress(step, mean_loss);
    }
    let parameters = front.parameter_count();
    Ok((
        front,
        TrainLog {
            options: options.clone(),
            losses,
            seconds: started.elapsed().as_secs_f64(),
            parameters,
        },
    ))
}

/// How well the model captions held-out scenes.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionAccuracy {
    pub scenes: usize,
    /// Greedy captions equal to the true caption.
    pub exact: usize,
    /// Teacher-forced: caption tokens that are the model's argmax.
    pub token_accuracy: f32,
    /// Teacher-forced mean loss, nats a token.
    pub loss: f32,
}

/// Greedy and teacher-forced caption accuracy of `front` with `model` on `scenes`.
pub fn caption_accuracy(
    model: &Model,
    front: &FrontEnd,
    scenes: &[Scene],
) -> Result<CaptionAccuracy, RuntimeError> {
    let layout = PromptLayout::new(model)?;
    let (mut exact, mut right, mut total, mut loss) = (0, 0, 0, 0f64);
    let options = GenerateOptions {
        max_new_tokens: 16,
        sampling: Sampling::Greedy,
        stop_at_eos: true,
    };
    for scene in scenes {
        let (tokens, _) = front.forward(&[pixels(&scene.image)]);
        let (e, ids) = layout.embeddings(model, &tokens, &[], 0)?;
        let generation = generate_from_embeddings(model, &ids, &e, &options)?;
        exact += (generation.text.trim() == scene.caption) as usize;
        let t = targets(model, scene, &layout)?;
        let (e, _) = layout.embeddings(model, &tokens, &t[..t.len() - 1], 0)?;
        let first = layout.len() - 1;
        let row = glassbox_runtime::Row::embeddings(e)
            .with_logits(glassbox_runtime::LogitsAt::Range(first..first + t.len()))
            .with_score(t.clone());
        let scores = model
            .forward(vec![row], &glassbox_runtime::Capture::none())?
            .remove(0)
            .scores
            .expect("scores were asked for");
        for (s, &target) in scores.iter().zip(&t) {
            right += (s.argmax == target) as usize;
            loss -= s.logprob as f64;
            total += 1;
        }
    }
    Ok(CaptionAccuracy {
        scenes: scenes.len(),
        exact,
        token_accuracy: right as f32 / total.max(1) as f32,
        loss: (loss / total.max(1) as f64) as f32,
    })
}
