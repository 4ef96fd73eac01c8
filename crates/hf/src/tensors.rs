//! Reading single or sharded safetensors checkpoints (f32, bf16, f16 → f32) and writing f32.

use anyhow::{anyhow, bail, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The tensors of a checkpoint directory, read lazily file by file.
pub struct Store {
    dir: PathBuf,
    /// tensor name -> file holding it
    index: BTreeMap<String, String>,
    files: BTreeMap<String, Vec<u8>>,
}

impl Store {
    /// Open `dir/model.safetensors` or the shards listed in `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Store> {
        let mut index = BTreeMap::new();
        let idx = dir.join("model.safetensors.index.json");
        let file_names: Vec<String> = if idx.exists() {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&idx)?)
                .map_err(|e| anyhow!("{} is not valid JSON ({e})", idx.display()))?;
            let map = v["weight_map"].as_object().ok_or_else(|| anyhow!("{} has no weight_map", idx.display()))?;
            for (k, f) in map {
                index.insert(k.clone(), f.as_str().unwrap_or_default().to_string());
            }
            let mut f: Vec<String> = index.values().cloned().collect();
            f.dedup();
            f
        } else {
            vec!["model.safetensors".to_string()]
        };
        let mut files = BTreeMap::new();
        for f in file_names {
            if files.contains_key(&f) {
                continue;
            }
            let p = dir.join(&f);
            let bytes = std::fs::read(&p).map_err(|e| anyhow!("cannot read {} ({e})", p.display()))?;
            let st = SafeTensors::deserialize(&bytes)
                .map_err(|e| anyhow!("{} is corrupt or truncated ({e})", p.display()))?;
            for n in st.names() {
                index.entry(n.to_string()).or_insert_with(|| f.clone());
            }
            files.insert(f, bytes);
        }
        Ok(Store { dir: dir.to_path_buf(), index, files })
    }

    /// Whether the checkpoint holds `name`.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Tensor `name` as f32 values and its shape.
    pub fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let file = self
            .index
            .get(name)
            .ok_or_else(|| anyhow!("{}: the checkpoint has no tensor '{name}'", self.dir.display()))?;
        let st = SafeTensors::deserialize(&self.files[file])?;
        let t = st.tensor(name)?;
        let d = t.data();
        let v: Vec<f32> = match t.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => bail!(
                "{}: tensor '{name}' is {other:?}; only f32, bf16 and f16 weights are supported",
                self.dir.display()
            ),
        };
        Ok((v, t.shape().to_vec()))
    }
}

/// Named f32 tensors with their shapes, in name order.
pub type NamedTensors = BTreeMap<String, (Vec<f32>, Vec<usize>)>;

/// Write named f32 tensors as one safetensors file (temp file then rename).
pub fn write(path: &Path, tensors: &NamedTensors) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, (v, s))| (n.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect(), s.clone()))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let data = safetensors::serialize(views, Some(meta))?;
    anychip_data::write_atomic(path, &data)
}
