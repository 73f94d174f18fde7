//! A vision-language model whose vision content is known, to show that token activation maps
//! mean something.
//!
//! No real model's vision tokens can be inspected here, so this crate builds one: synthetic
//! scenes of coloured shapes with their pixel masks and captions ([`scene`]), and a small
//! vision front end ([`frontend`]: patch embedding plus LLaVA's MLP projector) trained with
//! the real SmolLM2 frozen, through the runtime's input-embedding gradients ([`train`]), as
//! LLaVA's first training stage does. The trained weights are saved under LLaVA's tensor
//! names, so with SmolLM2's they form an ordinary `LlavaForConditionalGeneration` checkpoint.

pub mod checkpoint;
pub mod evaluate;
pub mod frontend;
pub mod scene;
pub mod train;

pub use checkpoint::{CheckpointError, write_checkpoint};
pub use evaluate::{KINDS, KindScores, MapEvaluation, evaluate_maps, scene_prompt};
pub use frontend::FrontEnd;
pub use scene::{Colour, HELD_OUT_SEED, Kind, Object, Scene, scenes};
pub use train::{
    CHAT_TEMPLATE, CaptionAccuracy, PromptLayout, QUESTION, TrainLog, TrainOptions,
    caption_accuracy, processing, train,
};
