//! The suite on the in-tree ports, and proof that it can fail: ports with one deliberate bug
//! each must be caught, and the failing check named.

use anychip_conformance::{run, Level, Report, Status};
use anychip_port::*;
use std::sync::Arc;

/// The deliberate bugs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bug {
    /// `exp` off by 0.1% and f32 -> bf16 casts that truncate instead of rounding.
    ExpAndTruncation,
    /// bf16 sums come back with the wrong sign.
    Bf16SumSign,
    /// bf16 products 1% too large.
    Bf16Matmul1Percent,
    /// A fused bf16 SiLU forward 1% too large (within the old 2% L2 bound).
    Bf16Silu1Percent,
    /// Row scatter-adds (the embedding backward: backward only) 1% too large.
    Gradient1Percent,
    /// Row scatter-adds with the wrong sign: training climbs instead of descending.
    GradientSign,
    /// Products of bf16 operands come back rounded to bf16 even into an f32 output (a matrix
    /// unit that returns bf16): autocast attention then rounds its scores S, which the
    /// contract keeps in f32.
    Bf16ProductsRounded,
}

/// `ref` with one deliberate bug.
struct Broken(anychip_port_ref::RefPort, Bug);

impl Broken {
    fn port(bug: Bug) -> Arc<dyn Port> {
        Arc::new(Broken(anychip_port_ref::new(), bug))
    }
    /// A one-element view of `k` broadcast to `shape`.
    fn constant(&self, k: f64, dtype: DType, shape: &[usize]) -> Result<View> {
        let c = View { buf: self.0.alloc(4)?, dtype, layout: Layout::contiguous(&[1]) };
        self.0.fill(&c, k)?;
        Ok(View { layout: Layout { shape: shape.to_vec(), strides: vec![0; shape.len()], offset: 0 }, ..c })
    }
    /// o *= k in place.
    fn scale(&self, o: &View, k: f64) -> Result<()> {
        let c = self.constant(k, o.dtype, o.shape())?;
        self.0.binary(BinaryOp::Mul, o, &c, o)
    }
    /// A new contiguous copy of `x` times `k`.
    fn scaled(&self, x: &View, k: f64) -> Result<View> {
        let y = View {
            buf: self.0.alloc(x.numel() * x.dtype.size())?,
            dtype: x.dtype,
            layout: Layout::contiguous(x.shape()),
        };
        self.0.copy_strided(x, &y)?;
        self.scale(&y, k)?;
        Ok(y)
    }
}

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
        if self.1 == Bug::ExpAndTruncation && o.dtype == DType::BF16 && x.dtype == DType::F32 {
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
        if self.1 == Bug::ExpAndTruncation && op == UnaryOp::Exp {
            self.scale(o, 1.001)?;
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
        self.0.reduce(op, x, o)?;
        if self.1 == Bug::Bf16SumSign && op == ReduceOp::Sum && o.dtype == DType::BF16 {
            self.0.unary(UnaryOp::Neg, o, o)?;
        }
        Ok(())
    }
    fn matmul(&self, a: &View, b: &View, o: &View, al: f32, be: f32) -> Result<()> {
        self.0.matmul(a, b, o, al, be)?;
        if self.1 == Bug::Bf16Matmul1Percent && o.dtype == DType::BF16 {
            self.scale(o, 1.01)?;
        }
        if self.1 == Bug::Bf16ProductsRounded && a.dtype == DType::BF16 && o.dtype == DType::F32 {
            let r =
                View { buf: self.0.alloc(o.numel() * 2)?, dtype: DType::BF16, layout: Layout::contiguous(o.shape()) };
            self.0.cast(o, &r)?;
            self.0.cast(&r, o)?;
        }
        Ok(())
    }
    fn gather_rows(&self, t: &View, i: &View, o: &View) -> Result<()> {
        self.0.gather_rows(t, i, o)
    }
    fn scatter_add_rows(&self, s: &View, i: &View, o: &View) -> Result<()> {
        match self.1 {
            Bug::Gradient1Percent => self.0.scatter_add_rows(&self.scaled(s, 1.01)?, i, o),
            Bug::GradientSign => self.0.scatter_add_rows(&self.scaled(s, -1.0)?, i, o),
            _ => self.0.scatter_add_rows(s, i, o),
        }
    }
    fn random(&self, d: Distribution, s: u64, off: u64, o: &View) -> Result<()> {
        self.0.random(d, s, off, o)
    }
    fn composite(&self, call: &Composite) -> Result<Handled> {
        match call {
            Composite::SiluFwd { y, .. } if self.1 == Bug::Bf16Silu1Percent && y.dtype == DType::BF16 => {
                anychip_decomp::run(self, call)?;
                self.scale(y, 1.01)?;
                Ok(Handled::Yes)
            }
            _ => Ok(Handled::No),
        }
    }
}

fn reference() -> Arc<dyn Port> {
    Arc::new(anychip_port_ref::new())
}

/// "op dtype case" of every failing row.
fn failures(r: &Report) -> Vec<String> {
    r.rows.iter().filter(|x| x.status == Status::Fail).map(|x| format!("{} {} {}", x.op, x.dtype, x.case)).collect()
}

/// Whether some failing row's "op dtype case" starts with `prefix`.
fn blamed(failed: &[String], prefix: &str) -> bool {
    failed.iter().any(|f| f.starts_with(prefix))
}

#[test]
fn a_broken_port_fails_and_the_culprits_are_named() {
    let port = Broken::port(Bug::ExpAndTruncation);
    let failed = failures(&run(&port, &reference(), &[Level::L1]));
    assert!(blamed(&failed, "unary exp"), "{failed:?}");
    assert!(blamed(&failed, "cast to bf16"), "{failed:?}");
    assert!(!blamed(&failed, "matmul"), "an honest op was blamed: {failed:?}");
    // Composites built on the broken exp fail at L2 too (softmax itself cancels a uniform
    // scale, but log-softmax and cross-entropy do not).
    let failed = failures(&run(&port, &reference(), &[Level::L2]));
    assert!(blamed(&failed, "cross_entropy"), "{failed:?}");
    assert!(blamed(&failed, "log_softmax"), "{failed:?}");
}

#[test]
fn a_bf16_sum_with_the_wrong_sign_fails_by_name() {
    let failed = failures(&run(&Broken::port(Bug::Bf16SumSign), &reference(), &[Level::L1]));
    // Every bf16 sum shape, the 13,311-element one included; f32 sums stay honest.
    for case in ["[17,783] -> [17,1]", "[17,783] -> [1,783]", "[17,783] -> [1,1]"] {
        assert!(blamed(&failed, &format!("reduce_sum bf16 {case}")), "{case}: {failed:?}");
    }
    assert!(!blamed(&failed, "reduce_sum f32"), "{failed:?}");
    assert!(!blamed(&failed, "matmul"), "{failed:?}");
}

#[test]
fn a_bf16_matmul_off_by_one_percent_fails_by_name() {
    let failed = failures(&run(&Broken::port(Bug::Bf16Matmul1Percent), &reference(), &[Level::L1]));
    // The longest product (K = 783) included.
    assert!(blamed(&failed, "matmul bf16 [3,17,783]x[783,3]"), "{failed:?}");
    assert!(!blamed(&failed, "matmul f32"), "{failed:?}");
    assert!(!blamed(&failed, "reduce_sum"), "{failed:?}");
}

#[test]
fn a_bf16_composite_off_by_one_percent_fails_l2_by_name() {
    let failed = failures(&run(&Broken::port(Bug::Bf16Silu1Percent), &reference(), &[Level::L2]));
    assert!(blamed(&failed, "silu bf16 silu fwd bf16 [17,783] (y) vs ref"), "{failed:?}");
    assert!(failed.iter().all(|f| f.starts_with("silu bf16 silu fwd")), "an honest composite was blamed: {failed:?}");
}

#[test]
fn autocast_attention_that_rounds_its_scores_fails_l2_by_name() {
    let failed = failures(&run(&Broken::port(Bug::Bf16ProductsRounded), &reference(), &[Level::L2]));
    assert!(blamed(&failed, "attention bf16 attention fwd bf16->f32"), "{failed:?}");
    assert!(blamed(&failed, "attention bf16 attention bwd bf16->f32"), "{failed:?}");
    assert!(!blamed(&failed, "attention f32"), "{failed:?}");
}

#[test]
fn a_wrong_gradient_fails_l3_by_name() {
    let r = run(&Broken::port(Bug::Gradient1Percent), &reference(), &[Level::L3]);
    let failed = failures(&r);
    // The embedding table's gradient is 1% off in both models; the forward is honest.
    for model in ["gpt2", "llama"] {
        assert!(blamed(&failed, &format!("{model} grad f32 ")), "{model}: {failed:?}");
        assert!(!blamed(&failed, &format!("{model} logits")), "{failed:?}");
        assert!(!blamed(&failed, &format!("{model} loss")), "{failed:?}");
    }
}

#[test]
fn a_diverging_loss_curve_fails_l4_by_name() {
    let r = run(&Broken::port(Bug::GradientSign), &reference(), &[Level::L4]);
    let failed = failures(&r);
    assert!(blamed(&failed, "gpt2 loss curve"), "{failed:?}");
    assert!(blamed(&failed, "llama+qk_norm loss curve"), "{failed:?}");
    // Still deterministic: only the curve is wrong.
    assert!(!blamed(&failed, "gpt2 determinism"), "{failed:?}");
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
