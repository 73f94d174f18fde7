//! Reading weights from GGUF files and safetensors directories into the runtime's layout.
//!
//! Both formats are mapped to one layout: HF-style rotary halves (GGUF llama checkpoints have
//! their Q/K rows interleaved for llama.cpp's rope and are put back here), norm weights with
//! any `+1` offset folded in, and fused projections (Q|K|V and gate|up as one matrix each,
//! so each is a single GEMM).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor, gguf_file};
use candle_core::{DType, Device};
use glassbox_kernels::PackedMatrix;
use serde::Serialize;

use crate::config::{Architecture, ModelConfig, NormPlacement};
use crate::linear::Linear;
use crate::{RuntimeError, candle_message};

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WeightMode {
    /// Dequantized to f32 and packed: fastest on CPU and required for gradients.
    #[default]
    F32,
    /// GGUF block formats kept as they are (less memory, much slower on CPU, no gradients).
    Quantized,
    /// Every matrix quantized to this format and dequantized back to f32 while loading: the
    /// fast f32 path (gradients included) runs the values a quantized model would hold, so
    /// explanations of a quantized model can be compared with the original's.
    Requantized(QuantFormat),
}

/// Block formats weights can be re-quantized to (GGML's, as llama.cpp writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantFormat {
    Q8_0,
    Q4K,
    Q4_0,
}

impl QuantFormat {
    pub const ALL: [QuantFormat; 3] = [QuantFormat::Q8_0, QuantFormat::Q4K, QuantFormat::Q4_0];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn name(&self) -> &'static str {
        match self {
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q4K => "q4_k",
            QuantFormat::Q4_0 => "q4_0",
        }
    }

    /// The GGML type for rows of width `k`. K-quants need widths that are multiples of 256;
    /// narrower rows fall back as llama.cpp's quantizer does (q4_k → q5_0).
    fn dtype(&self, k: usize) -> GgmlDType {
        match self {
            QuantFormat::Q8_0 => GgmlDType::Q8_0,
            QuantFormat::Q4_0 => GgmlDType::Q4_0,
            QuantFormat::Q4K if k.is_multiple_of(GgmlDType::Q4K.block_size()) => GgmlDType::Q4K,
            QuantFormat::Q4K => GgmlDType::Q5_0,
        }
    }
}

/// An `[n, k]` f32 matrix quantized to `format` and dequantized back.
fn requantized(
    data: Vec<f32>,
    n: usize,
    k: usize,
    format: QuantFormat,
) -> Result<Vec<f32>, RuntimeError> {
    let t = candle_core::Tensor::from_vec(data, (n, k), &Device::Cpu)?;
    let q = QTensor::quantize(&t, format.dtype(k))?;
    Ok(q.dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

pub(crate) struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub post_ffn_norm: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// Q | K | V rows.
    pub qkv: Linear,
    pub qkv_bias: Option<Vec<f32>>,
    pub o: Linear,
    /// Gate | up rows.
    pub gate_up: Linear,
    pub down: Linear,
}

/// Token embedding table `[vocab, hidden]`.
pub(crate) enum Embedding {
    /// Shared with a tied LM head.
    Packed(Arc<PackedMatrix>),
    Dense(Vec<f32>),
}

pub(crate) struct Weights {
    pub embedding: Embedding,
    pub lm_head: Linear,
    pub final_norm: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    /// Parameters counted once (tied matrices once).
    pub parameters: usize,
}

impl Weights {
    /// Writes the embedding rows of `ids` into `out` (`ids.len() × hidden`).
    pub(crate) fn embed_into(&self, ids: &[u32], hidden: usize, out: &mut [f32]) {
        for (row, &id) in out.chunks_mut(hidden).zip(ids) {
            match &self.embedding {
                Embedding::Packed(m) => m.copy_row(id as usize, row),
                Embedding::Dense(d) => {
                    row.copy_from_slice(&d[id as usize * hidden..(id as usize + 1) * hidden])
                }
            }
        }
    }
}

/// Logical weights of the model, named per format by [`tensor_name`].
#[derive(Clone, Copy)]
pub(crate) enum Part {
    Embed,
    Output,
    FinalNorm,
    AttnNorm,
    PostAttnNorm,
    FfnNorm,
    PostFfnNorm,
    Q,
    K,
    V,
    QBias,
    KBias,
    VBias,
    O,
    Gate,
    Up,
    Down,
    QNorm,
    KNorm,
}

pub(crate) fn tensor_name(gguf: bool, arch: Architecture, part: Part, layer: usize) -> String {
    let gemma = arch == Architecture::Gemma3;
    let (g, h): (&str, &str) = match part {
        Part::Embed => ("token_embd.weight", "model.embed_tokens.weight"),
        Part::Output => ("output.weight", "lm_head.weight"),
        Part::FinalNorm => ("output_norm.weight", "model.norm.weight"),
        Part::AttnNorm => ("attn_norm.weight", "input_layernorm.weight"),
        Part::PostAttnNorm => (
            "post_attention_norm.weight",
            "post_attention_layernorm.weight",
        ),
        Part::FfnNorm if gemma => ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
        Part::FfnNorm => ("ffn_norm.weight", "post_attention_layernorm.weight"),
        Part::PostFfnNorm => ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
        Part::Q => ("attn_q.weight", "self_attn.q_proj.weight"),
        Part::K => ("attn_k.weight", "self_attn.k_proj.weight"),
        Part::V => ("attn_v.weight", "self_attn.v_proj.weight"),
        Part::QBias => ("attn_q.bias", "self_attn.q_proj.bias"),
        Part::KBias => ("attn_k.bias", "self_attn.k_proj.bias"),
        Part::VBias => ("attn_v.bias", "self_attn.v_proj.bias"),
        Part::O => ("attn_output.weight", "self_attn.o_proj.weight"),
        Part::Gate => ("ffn_gate.weight", "mlp.gate_proj.weight"),
        Part::Up => ("ffn_up.weight", "mlp.up_proj.weight"),
        Part::Down => ("ffn_down.weight", "mlp.down_proj.weight"),
        Part::QNorm => ("attn_q_norm.weight", "self_attn.q_norm.weight"),
        Part::KNorm => ("attn_k_norm.weight", "self_attn.k_norm.weight"),
    };
    let global = matches!(part, Part::Embed | Part::Output | Part::FinalNorm);
    match (gguf, global) {
        (true, true) => g.to_string(),
        (true, false) => format!("blk.{layer}.{g}"),
        (false, true) => h.to_string(),
        (false, false) => format!("model.layers.{layer}.{h}"),
    }
}

/// A checkpoint's tensors, by file name.
pub(crate) trait TensorSource {
    fn origin(&self) -> &Path;
    fn is_gguf(&self) -> bool;
    fn has(&self, name: &str) -> bool;
    /// How the checkpoint itself names tensor `name` (for error messages).
    fn stored_name(&self, name: &str) -> String {
        name.to_string()
    }
    /// Shape in candle order (`[out, in]` for linear weights).
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    fn load_f32(&mut self, name: &str) -> Result<Vec<f32>, RuntimeError>;
    fn load_quantized(&mut self, name: &str) -> Result<QTensor, RuntimeError>;
}

/// Tensors of an open GGUF file.
pub(crate) struct GgufSource {
    path: PathBuf,
    reader: BufReader<File>,
    content: gguf_file::Content,
}

impl GgufSource {
    /// Opens a GGUF file, checking up front that every tensor lies inside it (a truncated
    /// download is reported as such, not as a confusing read error halfway through loading).
    pub(crate) fn open(path: &Path) -> Result<Self, RuntimeError> {
        let file = File::open(path).map_err(|e| RuntimeError::io(path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| RuntimeError::io(path, e))?
            .len();
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| RuntimeError::BadGguf {
            path: path.to_path_buf(),
            message: candle_message(e),
        })?;
        for (name, info) in &content.tensor_infos {
            let dtype = info.ggml_dtype;
            let bytes = info.shape.elem_count() / dtype.block_size() * dtype.type_size();
            let end = content.tensor_data_offset + info.offset + bytes as u64;
            if end > file_len {
                return Err(RuntimeError::Truncated {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    needed: end,
                    actual: file_len,
                });
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            content,
        })
    }

    pub(crate) fn metadata(&self) -> &HashMap<String, gguf_file::Value> {
        &self.content.metadata
    }
}

impl TensorSource for GgufSource {
    fn origin(&self) -> &Path {
        &self.path
    }

    fn is_gguf(&self) -> bool {
        true
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| i.shape.dims().to_vec())
    }

    fn load_f32(&mut self, name: &str) -> Result<Vec<f32>, RuntimeError> {
        let q = self.load_quantized(name)?;
        Ok(q.dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    fn load_quantized(&mut self, name: &str) -> Result<QTensor, RuntimeError> {
        if !self.has(name) {
            return Err(RuntimeError::MissingTensor {
                origin: self.path.display().to_string(),
                name: name.to_string(),
            });
        }
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| RuntimeError::BadGguf {
                path: self.path.clone(),
                message: format!("tensor {name}: {}", candle_message(e)),
            })
    }
}

/// Tensors of a Hugging Face directory (one or more memory-mapped safetensors files).
///
/// Tensors are asked for by their names in a plain decoder checkpoint (`model.layers.0…`,
/// `lm_head.weight`) and looked up under the checkpoint's own prefix.
pub(crate) struct SafetensorsSource {
    dir: PathBuf,
    tensors: candle_core::safetensors::MmapedSafetensors,
    prefix: String,
    lm_head: String,
}

impl SafetensorsSource {
    /// Opens every `*.safetensors` file of `dir`; `prefix` stands for `model.` in tensor
    /// names and `lm_head` is the LM head's name.
    pub(crate) fn open(dir: &Path, prefix: &str, lm_head: &str) -> Result<Self, RuntimeError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| RuntimeError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(RuntimeError::MissingTensor {
                origin: dir.display().to_string(),
                name: "*.safetensors (no weights file in the directory)".into(),
            });
        }
        // SAFETY: the files are mapped read-only; as with every mmap, they must not be
        // truncated by another process while the model is loading.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
            .map_err(|e| RuntimeError::BadWeights {
                origin: dir.display().to_string(),
                message: candle_message(e),
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
            prefix: prefix.to_string(),
            lm_head: lm_head.to_string(),
        })
    }

    /// The checkpoint's name for a plain decoder's tensor `name`.
    fn actual(&self, name: &str) -> String {
        if name == "lm_head.weight" {
            self.lm_head.clone()
        } else if let Some(rest) = name.strip_prefix("model.") {
            format!("{}{rest}", self.prefix)
        } else {
            name.to_string()
        }
    }
}

impl TensorSource for SafetensorsSource {
    fn origin(&self) -> &Path {
        &self.dir
    }

    fn is_gguf(&self) -> bool {
        false
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.get(&self.actual(name)).is_ok()
    }

    fn stored_name(&self, name: &str) -> String {
        self.actual(name)
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors
            .get(&self.actual(name))
            .ok()
            .map(|v| v.shape().to_vec())
    }

    fn load_f32(&mut self, name: &str) -> Result<Vec<f32>, RuntimeError> {
        let name = &self.actual(name);
        if self.tensors.get(name).is_err() {
            return Err(RuntimeError::MissingTensor {
                origin: self.dir.display().to_string(),
                name: name.to_string(),
            });
        }
        let t = self
            .tensors
            .load(name, &Device::Cpu)
            .map_err(|e| RuntimeError::BadWeights {
                origin: self.dir.display().to_string(),
                message: format!("{name}: {}", candle_message(e)),
            })?;
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    fn load_quantized(&mut self, _name: &str) -> Result<QTensor, RuntimeError> {
        Err(RuntimeError::Unsupported(
            "quantized weights come from GGUF files; load safetensors with f32 weights".into(),
        ))
    }
}

/// Row order that turns llama.cpp's interleaved rotary layout (pairs `2i, 2i+1` of a head)
/// back into the Hugging Face half layout (pairs `i, i + d/2`): `order[dest] = src`.
fn half_layout_rows(heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    (0..heads * head_dim)
        .map(|dest| {
            let (h, r) = (dest / head_dim, dest % head_dim);
            let (j, i) = (r / half, r % half);
            h * head_dim + 2 * i + j
        })
        .collect()
}

fn permute_rows<T: Copy>(data: &[T], order: &[usize]) -> Vec<T> {
    let width = data.len() / order.len();
    order
        .iter()
        .flat_map(|&src| data[src * width..(src + 1) * width].iter().copied())
        .collect()
}

struct Loader<'a> {
    src: &'a mut dyn TensorSource,
    cfg: &'a ModelConfig,
    mode: WeightMode,
    parameters: usize,
}

impl Loader<'_> {
    fn name(&self, part: Part, layer: usize) -> String {
        tensor_name(self.src.is_gguf(), self.cfg.architecture, part, layer)
    }

    fn check_shape(&self, name: &str, expected: &[usize]) -> Result<(), RuntimeError> {
        let actual = self
            .src
            .shape(name)
            .ok_or_else(|| RuntimeError::MissingTensor {
                origin: self.src.origin().display().to_string(),
                name: self.src.stored_name(name),
            })?;
        if actual != expected {
            return Err(RuntimeError::BadTensorShape {
                name: self.src.stored_name(name),
                expected: expected.to_vec(),
                actual,
            });
        }
        Ok(())
    }

    /// A vector (norm weight or bias) of length `len`, with `offset` added.
    fn vector(
        &mut self,
        part: Part,
        layer: usize,
        len: usize,
        offset: f32,
    ) -> Result<Vec<f32>, RuntimeError> {
        let name = self.name(part, layer);
        self.check_shape(&name, &[len])?;
        self.parameters += len;
        let mut v = self.src.load_f32(&name)?;
        if offset != 0.0 {
            v.iter_mut().for_each(|x| *x += offset);
        }
        Ok(v)
    }

    fn norm(&mut self, part: Part, layer: usize, len: usize) -> Result<Vec<f32>, RuntimeError> {
        let offset = if self.src.is_gguf() {
            0.0
        } else {
            self.cfg.hf_norm_offset()
        };
        self.vector(part, layer, len, offset)
    }

    /// Rows `[n, k]` of one matrix, in the runtime's rotary layout.
    fn rows_order(&self, part: Part) -> Option<Vec<usize>> {
        let interleaved =
            self.src.is_gguf() && matches!(self.cfg.arch_name.as_str(), "llama" | "mistral");
        match part {
            Part::Q if interleaved => Some(half_layout_rows(self.cfg.num_heads, self.cfg.head_dim)),
            Part::K if interleaved => {
                Some(half_layout_rows(self.cfg.num_kv_heads, self.cfg.head_dim))
            }
            _ => None,
        }
    }

    /// Several `[n_i, k]` matrices fused by rows into one linear layer.
    fn linear(
        &mut self,
        parts: &[(Part, usize)],
        layer: usize,
        k: usize,
    ) -> Result<Linear, RuntimeError> {
        let mut names = Vec::new();
        for &(part, n) in parts {
            let name = self.name(part, layer);
            self.check_shape(&name, &[n, k])?;
            self.parameters += n * k;
            names.push((name, part, n));
        }
        match self.mode {
            WeightMode::F32 | WeightMode::Requantized(_) => {
                let total: usize = parts.iter().map(|p| p.1).sum();
                let mut rows = Vec::new();
                for (name, part, n) in &names {
                    let data = self.src.load_f32(name)?;
                    let data = match self.mode {
                        WeightMode::Requantized(format) => requantized(data, *n, k, format)?,
                        _ => data,
                    };
                    let data = match self.rows_order(*part) {
                        Some(order) => permute_rows(&data, &order),
                        None => data,
                    };
                    // A single part is used as loaded: no second copy of a large matrix
                    // (the embedding) at load time.
                    if rows.is_empty() {
                        rows = data;
                    } else {
                        rows.extend(data);
                    }
                }
                Ok(Linear::Packed(Arc::new(PackedMatrix::from_rows(
                    &rows, total, k, k,
                ))))
            }
            WeightMode::Quantized => {
                let mut mats = Vec::new();
                let mut widths = Vec::new();
                for (name, part, n) in &names {
                    let q = self.src.load_quantized(name)?;
                    let q = match self.rows_order(*part) {
                        Some(order) => {
                            let dtype = q.dtype();
                            let bytes = permute_rows(&q.data()?, &order);
                            let storage = QStorage::from_data(bytes.into(), &Device::Cpu, dtype)?;
                            QTensor::new(storage, (*n, k))?
                        }
                        None => q,
                    };
                    mats.push(Arc::new(QMatMul::from_qtensor(q)?));
                    widths.push(*n);
                }
                Ok(Linear::Quantized(mats, widths))
            }
        }
    }

    fn layer(&mut self, l: usize) -> Result<LayerWeights, RuntimeError> {
        let c = self.cfg;
        let (d, hd) = (c.hidden_size, c.head_dim);
        let sandwich = c.norm_placement == NormPlacement::Sandwich;
        let qkv_parts = [
            (Part::Q, c.q_width()),
            (Part::K, c.kv_width()),
            (Part::V, c.kv_width()),
        ];
        Ok(LayerWeights {
            attn_norm: self.norm(Part::AttnNorm, l, d)?,
            post_attn_norm: if sandwich {
                Some(self.norm(Part::PostAttnNorm, l, d)?)
            } else {
                None
            },
            ffn_norm: self.norm(Part::FfnNorm, l, d)?,
            post_ffn_norm: if sandwich {
                Some(self.norm(Part::PostFfnNorm, l, d)?)
            } else {
                None
            },
            q_norm: if c.qk_norm {
                Some(self.norm(Part::QNorm, l, hd)?)
            } else {
                None
            },
            k_norm: if c.qk_norm {
                Some(self.norm(Part::KNorm, l, hd)?)
            } else {
                None
            },
            qkv: self.linear(&qkv_parts, l, d)?,
            qkv_bias: if c.qkv_bias {
                let mut b = self.vector(Part::QBias, l, c.q_width(), 0.0)?;
                b.extend(self.vector(Part::KBias, l, c.kv_width(), 0.0)?);
                b.extend(self.vector(Part::VBias, l, c.kv_width(), 0.0)?);
                Some(b)
            } else {
                None
            },
            o: self.linear(&[(Part::O, d)], l, c.q_width())?,
            gate_up: self.linear(
                &[
                    (Part::Gate, c.intermediate_size),
                    (Part::Up, c.intermediate_size),
                ],
                l,
                d,
            )?,
            down: self.linear(&[(Part::Down, d)], l, c.intermediate_size)?,
        })
    }
}

/// Loads all weights of a model described by `cfg` from `src`.
pub(crate) fn load_weights(
    src: &mut dyn TensorSource,
    cfg: &ModelConfig,
    mode: WeightMode,
) -> Result<Weights, RuntimeError> {
    let mut loader = Loader {
        src,
        cfg,
        mode,
        parameters: 0,
    };
    let (v, d) = (cfg.vocab_size, cfg.hidden_size);
    let embed_name = loader.name(Part::Embed, 0);
    let output_name = loader.name(Part::Output, 0);
    let tied = cfg.tied_embeddings || !loader.src.has(&output_name);
    // The tied case needs the embedding matrix as the LM head too: in f32 mode one packed
    // matrix serves both (rows are read back for lookups).
    let embedding_linear = loader.linear(&[(Part::Embed, v)], 0, d)?;
    let embedding = match &embedding_linear {
        Linear::Packed(m) => Embedding::Packed(m.clone()),
        Linear::Quantized(..) => Embedding::Dense(loader.src.load_f32(&embed_name)?),
    };
    let lm_head = if tied {
        embedding_linear
    } else {
        loader.linear(&[(Part::Output, v)], 0, d)?
    };
    let final_norm = loader.norm(Part::FinalNorm, 0, d)?;
    let layers = (0..cfg.num_layers)
        .map(|l| loader.layer(l))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Weights {
        embedding,
        lm_head,
        final_norm,
        layers,
        parameters: loader.parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_rows_go_back_to_half_layout() {
        // One head of dim 4: GGUF rows [a0, b0, a1, b1] hold pairs (0,2) and (1,3) of HF.
        let order = half_layout_rows(1, 4);
        assert_eq!(order, vec![0, 2, 1, 3]);
        let gguf = vec![10, 11, 20, 21, 30, 31, 40, 41]; // 4 rows of width 2
        assert_eq!(
            permute_rows(&gguf, &order),
            vec![10, 11, 30, 31, 20, 21, 40, 41]
        );
        // Two heads permute within each head.
        assert_eq!(half_layout_rows(2, 4), vec![0, 2, 1, 3, 4, 6, 5, 7]);
    }

    #[test]
    fn tensor_names_per_format() {
        assert_eq!(
            tensor_name(true, Architecture::Llama, Part::Q, 3),
            "blk.3.attn_q.weight"
        );
        assert_eq!(
            tensor_name(false, Architecture::Llama, Part::FfnNorm, 0),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(
            tensor_name(false, Architecture::Gemma3, Part::FfnNorm, 0),
            "model.layers.0.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            tensor_name(true, Architecture::Gemma3, Part::Embed, 9),
            "token_embd.weight"
        );
    }
}
