//! Linear layers: packed f32 weights on the fast GEMM, or quantized weights on candle's kernels.

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{CpuStorage, CustomOp1, Layout, Module, Shape, Tensor};
use glassbox_kernels::{PackedMatrix, gemm_packed, gemm_packed_backward};

use crate::RuntimeError;

/// Weight storage of a linear layer `y = x · Wᵀ`.
#[derive(Clone)]
pub(crate) enum Linear {
    /// Dequantized to f32 and packed for the AVX-512 GEMM: fast, and differentiable.
    Packed(Arc<PackedMatrix>),
    /// Kept quantized (GGUF block formats) for memory; several matrices whose outputs are
    /// concatenated (a fused projection whose parts may use different formats).
    Quantized(Vec<Arc<QMatMul>>, Vec<usize>),
}

impl Linear {
    pub(crate) fn out_features(&self) -> usize {
        match self {
            Linear::Packed(w) => w.n(),
            Linear::Quantized(_, widths) => widths.iter().sum(),
        }
    }

    /// `x · Wᵀ` into `out` (`rows × out_features`), so callers can reuse buffers.
    pub(crate) fn forward_into(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
    ) -> Result<(), RuntimeError> {
        match self {
            Linear::Packed(w) => {
                gemm_packed(x, w.k(), rows, w, out, w.n(), true);
                Ok(())
            }
            Linear::Quantized(parts, widths) => {
                let k = x.len() / rows.max(1);
                let xt = Tensor::from_slice(x, (rows, k), &candle_core::Device::Cpu)?;
                let outs = parts
                    .iter()
                    .map(|m| m.forward(&xt))
                    .collect::<Result<Vec<_>, _>>()?;
                let y = Tensor::cat(&outs, 1)?;
                debug_assert_eq!(y.dim(1)?, widths.iter().sum::<usize>());
                out.copy_from_slice(&y.flatten_all()?.to_vec1::<f32>()?);
                Ok(())
            }
        }
    }

    /// `dx = dy · W` into `dx` (`rows × in_features`): the input gradient of
    /// [`Linear::forward_into`], on the same packed weights.
    pub(crate) fn backward_into(
        &self,
        dy: &[f32],
        rows: usize,
        dx: &mut [f32],
    ) -> Result<(), RuntimeError> {
        match self {
            Linear::Packed(w) => {
                gemm_packed_backward(dy, w.n(), rows, w, dx, w.k(), true);
                Ok(())
            }
            Linear::Quantized(..) => Err(RuntimeError::GradientsNeedF32),
        }
    }

    /// `x · Wᵀ` on tensors, differentiable with respect to `x` (the weights are constants).
    pub(crate) fn forward_tensor(&self, x: &Tensor) -> Result<Tensor, RuntimeError> {
        match self {
            Linear::Packed(w) => Ok(x.apply_op1(PackedLinear(w.clone()))?),
            Linear::Quantized(..) => Err(RuntimeError::GradientsNeedF32),
        }
    }
}

/// Candle op running the packed GEMM forward, with a backward pass (`∂x = ∂y · W`, on the
/// packing read transposed), which candle's own quantized and fused kernels lack.
struct PackedLinear(Arc<PackedMatrix>);

impl CustomOp1 for PackedLinear {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = &self.0;
        let dims = layout.dims();
        let k = *dims.last().unwrap_or(&0);
        if k != w.k() {
            candle_core::bail!(
                "packed-linear: input has {k} features, weight expects {}",
                w.k()
            );
        }
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("packed-linear: only f32 inputs");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("packed-linear: input must be contiguous");
        };
        let x = &data[start..end];
        let rows = x.len() / k.max(1);
        let mut out = vec![0f32; rows * w.n()];
        gemm_packed(x, k, rows, w, &mut out, w.n(), true);
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("k was read from it") = w.n();
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let w = &self.0;
        let grad = grad_res.contiguous()?;
        let dims = grad.dims().to_vec();
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let rows = g.len() / w.n().max(1);
        let mut out = vec![0f32; rows * w.k()];
        gemm_packed_backward(&g, w.n(), rows, w, &mut out, w.k(), true);
        let mut shape = dims;
        *shape.last_mut().expect("gradients have the output's shape") = w.k();
        Ok(Some(Tensor::from_vec(out, shape, grad_res.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn packed_linear_forward_and_backward_match_dense_matmul() {
        let dev = Device::Cpu;
        let (n, k) = (5, 7);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let lin = Linear::Packed(Arc::new(PackedMatrix::from_rows(&w, n, k, k)));
        let x = Var::from_tensor(
            &Tensor::arange(0f32, 21.0, &dev)
                .unwrap()
                .reshape((3, 7))
                .unwrap(),
        )
        .unwrap();
        let y = lin.forward_tensor(x.as_tensor()).unwrap();
        let wt = Tensor::from_vec(w, (n, k), &dev).unwrap();
        let want = x.as_tensor().matmul(&wt.t().unwrap()).unwrap();
        let diff = (y.clone() - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);

        // d/dx sum(y * c) = c · W.
        let c = Tensor::arange(0f32, 15.0, &dev)
            .unwrap()
            .reshape((3, 5))
            .unwrap();
        let grads = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = grads.get(x.as_tensor()).unwrap();
        let want = c.matmul(&wt).unwrap();
        let diff = (gx - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }
}
