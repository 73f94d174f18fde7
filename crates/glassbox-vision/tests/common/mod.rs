//! What the conformance tests of both architectures share: the reference outputs of a
//! fixture (written by `tools/fixtures/gen_*.py`) and error measures.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub struct Reference {
    pub json: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
}

impl Reference {
    pub fn load(dir: &Path) -> Self {
        let json =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let tensors =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
                .unwrap();
        Self { json, tensors }
    }

    pub fn floats(&self, name: &str) -> Vec<f32> {
        self.tensors[name]
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    pub fn case(&self, key: &str) -> &serde_json::Value {
        self.json["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == key)
            .unwrap()
    }
}

/// Largest |a − b| relative to the largest |b|.
pub fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

pub fn ids(case: &serde_json::Value, key: &str) -> Vec<u32> {
    case[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}
