//! Shadow mode (`ANYCHIP_SHADOW=1`): every op runs on the chosen port AND on the `ref` oracle,
//! and the first op whose result differs beyond tolerance stops the run with its name, shape,
//! and the worst element. After each op the oracle's copy is overwritten with the port's
//! result, so every op is judged on identical inputs and float drift never accumulates into a
//! false alarm.

use anychip_port::{
    bf16_to_f32, Buffer, Capabilities, Composite, DType, DeviceMemory, Forward, Handled, Port, PortError, Primitive,
    Result, View,
};
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct Pair {
    port: Buffer,
    oracle: Buffer,
    bytes: usize,
}

impl DeviceMemory for Pair {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A port wrapper that mirrors every call onto an oracle port and compares results.
pub struct ShadowPort {
    port: Arc<dyn Port>,
    oracle: Arc<dyn Port>,
    ops: AtomicU64,
    name: String,
}

impl ShadowPort {
    /// Shadow `port` with `oracle` (normally `ref`).
    pub fn new(port: Arc<dyn Port>, oracle: Arc<dyn Port>) -> ShadowPort {
        let name = format!("{}+shadow", port.name());
        ShadowPort { port, oracle, ops: AtomicU64::new(0), name }
    }

    fn pair<'a>(&self, b: &'a Buffer) -> Result<&'a Pair> {
        b.downcast::<Pair>().ok_or_else(|| PortError::Invalid("shadow: buffer from another port".into()))
    }

    fn side(&self, v: &View, oracle: bool) -> View {
        let p = v.buf.downcast::<Pair>().expect("shadow views hold shadow buffers");
        View { buf: if oracle { p.oracle.clone() } else { p.port.clone() }, dtype: v.dtype, layout: v.layout.clone() }
    }

    /// Run `f` on both sides, then compare and re-sync every output.
    fn both(&self, what: &dyn Fn() -> String, outs: &[&View], f: &dyn Fn(&dyn Port, bool) -> Result<()>) -> Result<()> {
        f(self.port.as_ref(), false)?;
        f(self.oracle.as_ref(), true)?;
        let n = self.ops.fetch_add(1, Ordering::Relaxed) + 1;
        for out in outs {
            self.compare(n, what, out)?;
        }
        Ok(())
    }

    fn compare(&self, n: u64, what: &dyn Fn() -> String, out: &View) -> Result<()> {
        let p = self.pair(&out.buf)?;
        let (mut a, mut b) = (vec![0u8; p.bytes], vec![0u8; p.bytes]);
        self.port.read(&p.port, 0, &mut a)?;
        self.oracle.read(&p.oracle, 0, &mut b)?;
        let (abs, rel) = match out.dtype {
            DType::F32 => (1e-3, 1e-3),
            DType::BF16 => (1e-2, 2e-2),
            DType::I32 => (0.0, 0.0),
        };
        let val = |bytes: &[u8], i: usize| -> f64 {
            let s = out.dtype.size();
            let c = &bytes[i * s..i * s + s];
            match out.dtype {
                DType::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                DType::BF16 => bf16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64,
                DType::I32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            }
        };
        for (k, i) in out.layout.indices().enumerate() {
            let (x, y) = (val(&a, i), val(&b, i));
            let same = x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= abs + rel * y.abs();
            if !same {
                return Err(PortError::Device(format!(
                    "shadow: op #{n} {} on port {} diverges from ref at element {k} of {:?} {}: {} {x} vs ref {y} (tolerance {abs} + {rel}*|ref|)",
                    what(),
                    self.port.name(),
                    out.layout.shape,
                    out.dtype,
                    self.port.name()
                )));
            }
        }
        // Judge the next op on identical inputs.
        self.oracle.write(&p.oracle, 0, &a)
    }
}

fn desc(op: &str, v: &View) -> String {
    format!("{op} {:?} {}", v.layout.shape, v.dtype)
}

impl Forward for ShadowPort {
    fn inner(&self) -> &dyn Port {
        self.port.as_ref()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn capabilities(&self) -> Capabilities {
        let mut c = self.port.capabilities();
        c.device = format!("{} (shadowed by ref)", c.device);
        c
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        let (port, oracle) = (self.port.alloc(bytes)?, self.oracle.alloc(bytes)?);
        // Fresh memory is unspecified; make both sides agree so reads of it compare equal.
        let zeros = vec![0u8; bytes];
        self.port.write(&port, 0, &zeros)?;
        self.oracle.write(&oracle, 0, &zeros)?;
        Ok(Buffer(Arc::new(Pair { port, oracle, bytes })))
    }
    fn write(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        let p = self.pair(dst)?;
        self.port.write(&p.port, offset, src)?;
        self.oracle.write(&p.oracle, offset, src)
    }
    fn read(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.port.read(&self.pair(src)?.port, offset, dst)
    }
    fn copy(&self, src: &Buffer, so: usize, dst: &Buffer, d: usize, bytes: usize) -> Result<()> {
        let (s, t) = (self.pair(src)?, self.pair(dst)?);
        self.port.copy(&s.port, so, &t.port, d, bytes)?;
        self.oracle.copy(&s.oracle, so, &t.oracle, d, bytes)
    }
    fn primitive(&self, call: &Primitive) -> Result<()> {
        let out = call.output();
        self.both(&|| desc(&call.name(), out), &[out], &|p, o| call.map_views(&|v| self.side(v, o)).run_on(p))
    }
    fn composite(&self, call: &Composite) -> Result<Handled> {
        let on_port = call.map_views(&|v| self.side(v, false));
        if self.port.composite(&on_port)? == Handled::No {
            // The decomposition runs through this port's primitives, each one shadowed.
            return Ok(Handled::No);
        }
        anychip_decomp::run(self.oracle.as_ref(), &call.map_views(&|v| self.side(v, true)))?;
        let n = self.ops.fetch_add(1, Ordering::Relaxed) + 1;
        for (name, out) in call.outputs() {
            self.compare(n, &|| format!("fused {} ({name})", call.name()), out)?;
        }
        Ok(Handled::Yes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anychip_port::UnaryOp;

    fn shadow() -> ShadowPort {
        ShadowPort::new(Arc::new(anychip_port_cpu::new(Some(1))), Arc::new(anychip_port_ref::new()))
    }

    fn upload(s: &dyn Port, x: &[f32]) -> View {
        let b = s.alloc(x.len() * 4).unwrap();
        s.write(&b, 0, &x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()).unwrap();
        View::contiguous(b, DType::F32, &[x.len()])
    }

    #[test]
    fn agreeing_ports_pass_and_a_divergent_op_is_named() {
        let shadow = shadow();
        let s: &dyn Port = &shadow;
        let x = upload(s, &[0.5, -1.0, 2.0]);
        let y = View::contiguous(s.alloc(12).unwrap(), DType::F32, &[3]);
        s.unary(UnaryOp::Exp, &x, &y).unwrap();
        anychip_decomp::dispatch(s, &Composite::SoftmaxFwd { x: x.clone(), y: y.clone() }).unwrap();
        // Corrupt the port's copy only: the next op that reads it must be caught, by name.
        let p = shadow.pair(&x.buf).unwrap();
        shadow.port.write(&p.port, 4, &7.0f32.to_le_bytes()).unwrap();
        let e = s.unary(UnaryOp::Tanh, &x, &y).unwrap_err().to_string();
        assert!(e.contains("unary(Tanh)") && e.contains("element 1"), "{e}");
    }
}
