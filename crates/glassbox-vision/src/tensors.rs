//! The tensors of a checkpoint directory, read by name with their shapes checked.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use glassbox_kernels::PackedMatrix;
use glassbox_runtime::RuntimeError;

use rayon::prelude::*;

use crate::error::VisionError;

pub(crate) struct Tensors {
    dir: PathBuf,
    files: MmapedSafetensors,
}

impl Tensors {
    pub(crate) fn open(dir: &Path) -> Result<Self, VisionError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| VisionError::Io {
                path: dir.to_path_buf(),
                message: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        let origin = dir.display().to_string();
        if paths.is_empty() {
            return Err(RuntimeError::MissingTensor {
                origin,
                name: "*.safetensors (no weights file in the directory)".into(),
            }
            .into());
        }
        // SAFETY: mapped read-only; the files must not be truncated while loading.
        let files =
            unsafe { MmapedSafetensors::multi(&paths) }.map_err(|e| RuntimeError::BadWeights {
                origin,
                message: e.to_string(),
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
        })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.files.get(name).is_ok()
    }

    /// Tensor `name` as f32, which must have `shape`.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, VisionError> {
        let origin = self.dir.display().to_string();
        let view = self
            .files
            .get(name)
            .map_err(|_| RuntimeError::MissingTensor {
                origin: origin.clone(),
                name: name.to_string(),
            })?;
        if view.shape() != shape {
            return Err(RuntimeError::BadTensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                actual: view.shape().to_vec(),
            }
            .into());
        }
        let bad = |e: candle_core::Error| RuntimeError::BadWeights {
            origin: origin.clone(),
            message: format!("{name}: {e}"),
        };
        let t = self.files.load(name, &Device::Cpu).map_err(bad)?;
        Ok(t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(bad)?)
    }

    /// A linear layer `[n, k]` packed for the GEMM, with its bias when `bias` is set.
    pub(crate) fn linear(
        &self,
        name: &str,
        n: usize,
        k: usize,
        bias: bool,
    ) -> Result<Dense, VisionError> {
        let w = self.get(&format!("{name}.weight"), &[n, k])?;
        Ok(Dense {
            weight: PackedMatrix::from_rows(&w, n, k, k),
            bias: if bias {
                Some(self.get(&format!("{name}.bias"), &[n])?)
            } else {
                None
            },
        })
    }

    /// A layer norm's weight and bias.
    pub(crate) fn norm(&self, name: &str, d: usize) -> Result<Norm, VisionError> {
        Ok(Norm {
            weight: self.get(&format!("{name}.weight"), &[d])?,
            bias: self.get(&format!("{name}.bias"), &[d])?,
        })
    }
}

/// `y = x·Wᵀ + b`.
pub(crate) struct Dense {
    pub weight: PackedMatrix,
    pub bias: Option<Vec<f32>>,
}

/// Rows a task of the element-wise passes takes (split over rayon's pool: a split image's
/// tower holds 13 × 1024 rows, and one thread would spend seconds on them).
const ROWS_PER_TASK: usize = 64;

impl Dense {
    /// `[m, n]` outputs of `m` input rows.
    pub(crate) fn apply(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = self.weight.matmul(x, m);
        if let Some(b) = &self.bias {
            y.par_chunks_mut(b.len() * ROWS_PER_TASK).for_each(|rows| {
                for row in rows.chunks_mut(b.len()) {
                    row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                }
            });
        }
        y
    }
}

pub(crate) struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Norm {
    pub(crate) fn apply(&self, x: &mut [f32], eps: f32) {
        x.par_chunks_mut(self.weight.len() * ROWS_PER_TASK)
            .for_each(|rows| {
                glassbox_kernels::math::layer_norm_rows_in_place(
                    rows,
                    &self.weight,
                    &self.bias,
                    eps,
                )
            });
    }
}

/// `x += y`, element-wise over rayon's pool.
pub(crate) fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
}
