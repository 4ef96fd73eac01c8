//! The suite on the in-tree ports, and proof that it can fail: a port whose `exp` is off by
//! 0.1% and whose bf16 rounding truncates must be caught, by name.

use anychip_conformance::{run, Level, Status};
use anychip_port::*;
use std::sync::Arc;

/// `ref` with two deliberate bugs.
struct Broken(anychip_port_ref::RefPort);

impl Port for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.0.alloc(bytes)
    }
    fn write(&self, d: &Buffer, o: usize, s: &[u8]) -> Result<()> {
        self.0.write(d, o, s)
    }
    fn read(&self, s: &Buffer, o: usize, d: &mut [u8]) -> Result<()> {
        self.0.read(s, o, d)
    }
    fn copy(&self, s: &Buffer, so: usize, d: &Buffer, dof: usize, n: usize) -> Result<()> {
        self.0.copy(s, so, d, dof, n)
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn fill(&self, o: &View, v: f64) -> Result<()> {
        self.0.fill(o, v)
    }
    fn cast(&self, x: &View, o: &View) -> Result<()> {
        if o.dtype == DType::BF16 && x.dtype == DType::F32 {
            // Truncate instead of rounding to nearest even.
            let f =
                View { buf: self.0.alloc(x.numel() * 4)?, dtype: DType::F32, layout: Layout::contiguous(x.shape()) };
            self.0.copy_strided(x, &f)?;
            let mut b = vec![0u8; x.numel() * 4];
            self.0.read(&f.buf, 0, &mut b)?;
            let t: Vec<u8> = b
                .chunks_exact(4)
                .flat_map(|c| ((u32::from_le_bytes([c[0], c[1], c[2], c[3]]) >> 16) as u16).to_le_bytes())
                .collect();
            let tb = View { buf: self.0.alloc(t.len())?, dtype: DType::BF16, layout: Layout::contiguous(x.shape()) };
            self.0.write(&tb.buf, 0, &t)?;
            return self.0.copy_strided(&tb, o);
        }
        self.0.cast(x, o)
    }
    fn copy_strided(&self, x: &View, o: &View) -> Result<()> {
        self.0.copy_strided(x, o)
    }
    fn unary(&self, op: UnaryOp, x: &View, o: &View) -> Result<()> {
        self.0.unary(op, x, o)?;
        if op == UnaryOp::Exp {
            let k = View {
                buf: self.0.alloc(4)?,
                dtype: o.dtype,
                layout: Layout { shape: o.shape().to_vec(), strides: vec![0; o.layout.rank()], offset: 0 },
            };
            self.0.fill(&View { layout: Layout::contiguous(&[1]), ..k.clone() }, 1.001)?;
            self.0.binary(BinaryOp::Mul, o, &k, o)?;
        }
        Ok(())
    }
    fn binary(&self, op: BinaryOp, a: &View, b: &View, o: &View) -> Result<()> {
        self.0.binary(op, a, b, o)
    }
    fn compare(&self, op: CompareOp, a: &View, b: &View, o: &View) -> Result<()> {
        self.0.compare(op, a, b, o)
    }
    fn select(&self, c: &View, a: &View, b: &View, o: &View) -> Result<()> {
        self.0.select(c, a, b, o)
    }
    fn reduce(&self, op: ReduceOp, x: &View, o: &View) -> Result<()> {
        self.0.reduce(op, x, o)
    }
    fn matmul(&self, a: &View, b: &View, o: &View, al: f32, be: f32) -> Result<()> {
        self.0.matmul(a, b, o, al, be)
    }
    fn gather_rows(&self, t: &View, i: &View, o: &View) -> Result<()> {
        self.0.gather_rows(t, i, o)
    }
    fn scatter_add_rows(&self, s: &View, i: &View, o: &View) -> Result<()> {
        self.0.scatter_add_rows(s, i, o)
    }
    fn random(&self, d: Distribution, s: u64, off: u64, o: &View) -> Result<()> {
        self.0.random(d, s, off, o)
    }
}

fn reference() -> Arc<dyn Port> {
    Arc::new(anychip_port_ref::new())
}

#[test]
fn a_broken_port_fails_and_the_culprits_are_named() {
    let port: Arc<dyn Port> = Arc::new(Broken(anychip_port_ref::new()));
    let r = run(&port, &reference(), &[Level::L1]);
    assert!(!r.passed());
    let failed: Vec<String> =
        r.rows.iter().filter(|x| x.status == Status::Fail).map(|x| format!("{} {}", x.op, x.dtype)).collect();
    assert!(failed.iter().any(|f| f.starts_with("unary exp")), "{failed:?}");
    assert!(failed.iter().any(|f| f.starts_with("cast to bf16")), "{failed:?}");
    assert!(!failed.iter().any(|f| f.starts_with("matmul")), "an honest op was blamed: {failed:?}");
    // Composites built on the broken exp fail at L2 too (softmax itself cancels a uniform
    // scale, but log-softmax and cross-entropy do not).
    let r2 = run(&port, &reference(), &[Level::L2]);
    assert!(r2.rows.iter().any(|x| x.status == Status::Fail && x.op == "cross_entropy"));
    assert!(r2.rows.iter().any(|x| x.status == Status::Fail && x.op == "log_softmax"));
}

#[test]
fn report_table_and_json_name_every_row() {
    let r = run(&reference(), &reference(), &[Level::L0]);
    assert!(r.passed(), "{}", r.failures_table());
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), r.rows.len());
    assert!(r.print_table().contains("passed, 0 failed"));
}

mod cpu {
    anychip_conformance::conformance_tests!(std::sync::Arc::new(anychip_port_cpu::new(Some(2))));
}

mod reference_port {
    anychip_conformance::conformance_tests!(std::sync::Arc::new(anychip_port_ref::new()));
}
