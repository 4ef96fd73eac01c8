//! `anychip.Model`: a loaded model (anychip run or Hugging Face directory) answering with NumPy
//! arrays: loss, logits, generation, and its weights as a state dict.

use crate::errors::{detached, input, Failure, Result};
use anychip_core::{no_grad, Tensor};
use anychip_data::{tokenizer, TokenizerKind};
use anychip_nn::Transformer;
use anychip_train::fixed_batch;
use anychip_train::sample::{generate, SampleOptions};
use numpy::{IntoPyArray, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArray2, PyReadonlyArrayDyn};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

/// A parameter's name, its values as float32 and its shape.
type NamedValues = (String, Vec<f32>, Vec<usize>);

/// The native half of `anychip.Model` (python/anychip/_model.py holds the documented API).
#[pyclass(module = "anychip._native", frozen)]
pub struct NativeModel {
    model: Transformer,
    /// Hugging Face class the weights map to (`GPT2LMHeadModel`, ...).
    arch: String,
    /// The run's tokenizer (anychip runs); None for a Hugging Face directory.
    tokenizer: Option<TokenizerKind>,
    /// Tokens a generated token sees at most: the run's training context, else the model's.
    ctx: usize,
}

/// Token ids of a [B, N] int64 array, copied so the engine can run without the GIL.
fn ids_of(tokens: &PyReadonlyArray2<'_, i64>) -> (Vec<i64>, Vec<usize>) {
    (tokens.as_array().iter().copied().collect(), tokens.as_array().shape().to_vec())
}

#[pymethods]
impl NativeModel {
    /// Load an anychip run (or checkpoint) directory or a Hugging Face directory.
    #[staticmethod]
    #[pyo3(signature = (path, port="cpu", threads=None))]
    fn load(py: Python<'_>, path: PathBuf, port: &str, threads: Option<usize>) -> PyResult<NativeModel> {
        detached(py, || -> Result<NativeModel> {
            if !path.exists() {
                return Err(Failure {
                    kind: crate::errors::Kind::Data,
                    message: format!(
                        "{} does not exist; pass an anychip run directory or a Hugging Face model directory",
                        path.display()
                    ),
                    plan: None,
                });
            }
            let opened = anychip_ports::open(port, threads)?;
            let (model, arch) = fixed_batch::load_model(&path, &opened)?;
            let run = (!anychip_hf::is_hf_dir(&path)).then(|| anychip_train::checkpoint::open(&path)).transpose()?;
            let tokenizer = match &run {
                Some(ck) => Some(ck.cfg.tokenizer.parse::<TokenizerKind>()?),
                None => None,
            };
            let ctx = run.as_ref().map_or(model.config().max_ctx, |ck| ck.cfg.ctx.min(model.config().max_ctx));
            Ok(NativeModel { model, arch: arch.class().to_string(), tokenizer, ctx })
        })
    }

    /// The model's config as JSON (anychip's `ModelConfig` fields).
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(self.model.config()).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    }

    #[getter]
    fn arch(&self) -> &str {
        &self.arch
    }

    #[getter]
    fn ctx(&self) -> usize {
        self.ctx
    }

    #[getter]
    fn n_params(&self) -> usize {
        self.model.n_params()
    }

    #[getter]
    fn tokenizer(&self) -> Option<&'static str> {
        self.tokenizer.map(|t| t.name())
    }

    /// Mean next-token loss on `tokens` [B, T+1] (int64): the same computation as `anychip eval`.
    fn loss(&self, py: Python<'_>, tokens: PyReadonlyArray2<'_, i64>) -> PyResult<f32> {
        let (ids, shape) = ids_of(&tokens);
        detached(py, || -> Result<f32> {
            let (vocab, max_ctx) = (self.model.config().vocab_size, self.model.config().max_ctx);
            let (x, y) = fixed_batch::split_batch(&ids, &shape, self.model.port(), vocab, max_ctx)
                .map_err(|e| input(format!("{e:#}")))?;
            Ok(fixed_batch::loss(&self.model, &x, &y)?)
        })
    }

    /// Logits [B, T, vocab] (float32) for inputs `tokens` [B, T] (int64).
    fn logits<'py>(&self, py: Python<'py>, tokens: PyReadonlyArray2<'_, i64>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let (ids, shape) = ids_of(&tokens);
        let (b, t) = (shape[0], shape[1]);
        let (values, vocab) = detached(py, || -> Result<(Vec<f32>, usize)> {
            let cfg = self.model.config();
            if t == 0 || t > cfg.max_ctx {
                return Err(input(format!("tokens has {t} positions; the model takes 1 to {}", cfg.max_ctx)));
            }
            if let Some(bad) = ids.iter().find(|&&v| v < 0 || v as usize >= cfg.vocab_size) {
                return Err(input(format!("token id {bad} is outside the model's vocabulary of {}", cfg.vocab_size)));
            }
            let x: Vec<i32> = ids.iter().map(|&v| v as i32).collect();
            let _g = no_grad();
            let xt = Tensor::from_i32(self.model.port(), &x, &[b, t]).map_err(anyhow::Error::from)?;
            let logits = self.model.forward(&xt).map_err(anyhow::Error::from)?;
            let vocab = logits.dim(1);
            Ok((logits.to_vec_f32().map_err(anyhow::Error::from)?, vocab))
        })?;
        // The engine's vector becomes the array's memory: no copy.
        values.into_pyarray(py).reshape(vec![b, t, vocab])
    }

    /// Continue `prompt` (token ids) by `tokens` sampled ids; returns prompt + generated ids.
    #[pyo3(signature = (prompt, tokens, temperature, top_k, seed))]
    fn generate_ids<'py>(
        &self,
        py: Python<'py>,
        prompt: Vec<u32>,
        tokens: usize,
        temperature: f32,
        top_k: usize,
        seed: u64,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let vocab = self.model.config().vocab_size;
        if let Some(bad) = prompt.iter().find(|&&v| v as usize >= vocab) {
            return Err(
                input(format!("prompt token id {bad} is outside the model's vocabulary of {vocab}")).into_pyerr(py)
            );
        }
        let opts = SampleOptions { prompt: String::new(), tokens, temperature, top_k, seed };
        let ids = detached(py, || Ok(generate(&self.model, &prompt, self.ctx, &opts, &mut |_| Ok(()))?))?;
        Ok(ids.into_pyarray(py))
    }

    /// Token ids of `text` with the run's tokenizer.
    fn encode<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let kind = self.need_tokenizer(py)?;
        let tok = tokenizer(kind).map_err(|e| Failure::from(e).into_pyerr(py))?;
        let mut ids = tok.encode(text);
        if ids.is_empty() {
            // As `anychip sample` does for an empty prompt: start from end-of-text (or a newline).
            ids.push(tok.eot().unwrap_or(b'\n' as u32));
        }
        Ok(ids.into_pyarray(py))
    }

    /// Text of token ids with the run's tokenizer.
    fn decode(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<String> {
        let kind = self.need_tokenizer(py)?;
        let tok = tokenizer(kind).map_err(|e| Failure::from(e).into_pyerr(py))?;
        Ok(tok.decode(&ids))
    }

    /// Every parameter by anychip name, as float32 arrays of the parameter's shape.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let tensors = detached(py, || -> Result<Vec<NamedValues>> {
            let mut v = Vec::new();
            for p in self.model.params() {
                v.push((
                    p.name.clone(),
                    p.tensor.to_vec_f32().map_err(anyhow::Error::from)?,
                    p.tensor.shape().to_vec(),
                ));
            }
            Ok(v)
        })?;
        let d = PyDict::new(py);
        for (name, values, shape) in tensors {
            d.set_item(name, values.into_pyarray(py).reshape(shape)?)?;
        }
        Ok(d)
    }

    /// Overwrite parameters from float32 arrays by anychip name (a subset is allowed).
    fn load_state_dict(&self, py: Python<'_>, tensors: Vec<(String, PyReadonlyArrayDyn<'_, f32>)>) -> PyResult<()> {
        let copies: Vec<(String, Vec<f32>, Vec<usize>)> = tensors
            .iter()
            .map(|(n, a)| (n.clone(), a.as_array().iter().copied().collect(), a.as_array().shape().to_vec()))
            .collect();
        detached(py, || -> Result<()> {
            for (name, values, shape) in &copies {
                let p = self.model.param(name).ok_or_else(|| {
                    input(format!("the model has no parameter '{name}'; state_dict() lists its names"))
                })?;
                if p.tensor.shape() != shape.as_slice() {
                    return Err(input(format!(
                        "'{name}' has shape {:?} but the array has shape {shape:?}",
                        p.tensor.shape()
                    )));
                }
                let src = Tensor::from_f32(self.model.port(), values, shape, p.tensor.dtype())
                    .map_err(anyhow::Error::from)?;
                p.tensor.assign(&src).map_err(anyhow::Error::from)?;
            }
            Ok(())
        })
    }
}

impl NativeModel {
    fn need_tokenizer(&self, py: Python<'_>) -> PyResult<TokenizerKind> {
        self.tokenizer.ok_or_else(|| {
            Failure {
                kind: crate::errors::Kind::Unsupported,
                message: "this model has no tokenizer (a Hugging Face directory): pass token ids as a NumPy array instead of text".into(),
                plan: None,
            }
            .into_pyerr(py)
        })
    }
}
