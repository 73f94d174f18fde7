//! CPU kernels for Glassbox's forward pass and its backward to the inputs.
//!
//! Explanations ask the model thousands of questions, so the forward pass is the hot loop of the
//! whole toolkit. Candle's generic CPU kernels leave a lot on the table on a small machine: its
//! f32 matmul (the `gemm` crate) reaches under half of an AVX-512 core's peak on the projection
//! shapes of small LLMs, and its activations call scalar `exp`. This crate holds the few kernels
//! that dominate the time, written against plain slices so they can be tested in isolation:
//!
//! - [`PackedMatrix`]: a weight matrix packed once at load time into column panels, multiplied
//!   by a register-blocked AVX-512 micro-kernel (portable fallback elsewhere).
//! - [`attention()`]: masked multi-head attention (GQA aware) built on the same GEMM, optionally
//!   returning the attention probabilities that explanations inspect.
//! - [`math`]: vectorised `exp`, softmax, RMS norm and gated activations.
//! - Backward kernels beside each forward one ([`gemm_packed_backward`] on the same packing,
//!   [`attention_backward`], `math::*_backward`): gradients with respect to inputs only, as
//!   attribution needs them (no weight gradients).
//!
//! Every kernel has a straightforward reference counterpart in the tests; the runtime tests the
//! whole model against candle-transformers' models.

mod attention;
mod gemm;
mod gemm_backward;
pub mod math;

pub use attention::{AttentionShape, BlockedSpan, KeyFilter, attention, attention_backward};
pub use gemm::{PackedMatrix, gemm_packed, pack_transposed, pack_transposed_rows};
pub use gemm_backward::gemm_packed_backward;
