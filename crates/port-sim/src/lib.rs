//! The `sim` port: a chip that is not here, priced call by call.
//!
//! `--port sim:CHIP` runs the engine's real training step — the same op stream, composites and
//! default decompositions a real port would see — against a chip of the database (or of a chip
//! file) without computing anything: buffers hold no data, every allocation is tracked (live and
//! peak bytes), and each call advances a modelled clock by
//!
//!   sum over its kernels of max(FLOPs / peak(dtype), bytes / bandwidth) / eff(op, shape, dtype)
//!   + one launch overhead,
//!
//! where the peaks and bandwidth come from the chip database and the efficiencies, launch
//! overhead and list of fused composites from a sim profile ([`profile`]). A composite the
//! profile lists as fused is one kernel; any other is answered [`Handled::No`], so the engine
//! runs its default decomposition and each primitive is priced (the cost of an unfused
//! composite is visible). The clock is exposed as [`Port::modelled_seconds`], which the
//! engine's bench and profiler read instead of the wall clock.
//!
//! `sim:CHIP+PORT` (debug mode) also runs every call on PORT (e.g. `cpu`), so the step is
//! numerically real and can be checked against the same port run directly.

pub mod cost;
mod memory;
pub mod profile;
pub mod record;

use anychip_plan::chips::{Chip, ChipDb};
use anychip_port::{
    BinaryOp, Buffer, Capabilities, CompareOp, Composite, DType, Distribution, Handled, Port, PortError, ReduceOp,
    Registry, Result, UnaryOp, View,
};
use anyhow::Context;
use cost::{Class, Work};
use memory::{SimMemory, Tracker};
pub use profile::SimProfile;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Description shown by `anychip ports`.
pub const ABOUT: &str =
    "simulated chip: --port sim:CHIP (a database chip or NAME.toml) prices each call on the chip's roofline; shapes only, or sim:CHIP+cpu for values";

/// Which composites are priced as one fused kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fused {
    /// As the chip's sim profile lists them.
    #[default]
    Profile,
    /// None: every composite runs its default decomposition (a port's first day).
    None,
    /// Every composite family.
    All,
}

impl std::str::FromStr for Fused {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Fused, String> {
        match s {
            "profile" => Ok(Fused::Profile),
            "none" => Ok(Fused::None),
            "all" => Ok(Fused::All),
            _ => Err(format!("--fused '{s}': expected profile, none or all")),
        }
    }
}

/// How to open a sim port beyond its chip name.
#[derive(Clone, Default)]
pub struct SimOptions {
    /// Chip files (plan format) added to the database; `NAME.sim.toml` next to one is its profile.
    pub chip_files: Vec<PathBuf>,
    /// `chip.field=value` overrides of database figures.
    pub overrides: Vec<String>,
    pub fused: Fused,
    /// Debug mode: the port that computes the values (None: shapes only).
    pub values: Option<Arc<dyn Port>>,
}

/// Register `sim` so `anychip ports` lists it; it is opened as `sim:CHIP` through [`open`].
pub fn register(reg: &mut Registry) {
    reg.register(
        "sim",
        ABOUT,
        Box::new(|_| {
            Err(PortError::Invalid(
                "the sim port needs a chip: --port sim:CHIP (e.g. sim:h20; `anychip chips` lists them)".into(),
            ))
        }),
    );
}

/// Split `CHIP+PORT` into the chip and the optional port that computes values.
pub fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('+') {
        Some((chip, values)) => (chip, Some(values)),
        None => (spec, None),
    }
}

/// The chip's figures the cost model reads, in SI units.
struct Rates {
    chip: Chip,
    /// Bytes per second.
    bandwidth: f64,
    launch_s: f64,
}

impl Rates {
    /// FLOP/s of the matrix units for `dtype`, or the error naming the figure and its override.
    fn matrix_peak(&self, dtype: DType) -> anyhow::Result<f64> {
        let field = if dtype == DType::BF16 { "bf16_tflops" } else { "fp32_tflops" };
        Ok(self.chip.require(field)? * 1e12)
    }
}

/// The simulated chip.
pub struct SimPort {
    name: String,
    rates: Rates,
    profile: SimProfile,
    fused: Vec<&'static str>,
    values: Option<Arc<dyn Port>>,
    clock: Mutex<f64>,
    tracker: Arc<Tracker>,
}

/// Open `sim:SPEC` where SPEC is `CHIP`, `FILE.toml` or either followed by `+PORT`
/// (`values` in `opts` must then hold that port, opened by the caller's registry).
pub fn open(spec: &str, opts: &SimOptions) -> anyhow::Result<Arc<SimPort>> {
    let (chip_spec, _) = split_spec(spec);
    let mut files = opts.chip_files.clone();
    let chip_name = if chip_spec.ends_with(".toml") {
        let path = PathBuf::from(chip_spec);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read chip file {chip_spec}"))?;
        let name = anychip_plan::chips::parse_chip(&text, chip_spec)?.name;
        files.push(path);
        name
    } else {
        chip_spec.to_string()
    };
    let db = ChipDb::with_user(&files, &opts.overrides)?;
    let chip = db.find(&chip_name)?.clone();
    let profile = profile_for(&chip, &files)?;
    let bandwidth = chip.require("mem_bw_tbs")? * 1e12;
    let fused: Vec<&'static str> = match opts.fused {
        Fused::None => vec![],
        Fused::All => Composite::NAMES.to_vec(),
        Fused::Profile => Composite::NAMES.iter().copied().filter(|n| profile.fused.iter().any(|f| f == n)).collect(),
    };
    let launch_s = profile.launch_us.value * 1e-6;
    Ok(Arc::new(SimPort {
        name: format!("sim:{spec}"),
        rates: Rates { chip, bandwidth, launch_s },
        profile,
        fused,
        values: opts.values.clone(),
        clock: Mutex::new(0.0),
        tracker: Arc::new(Tracker::default()),
    }))
}

/// The chip's own profile (`NAME.sim.toml` next to a chip file that defines it), else the default.
fn profile_for(chip: &Chip, files: &[PathBuf]) -> anyhow::Result<SimProfile> {
    for f in files.iter().rev() {
        let p = profile::companion(f);
        if p.exists() {
            let prof = SimProfile::load(&p)?;
            if chip.answers_to(&prof.chip) {
                return Ok(prof);
            }
        }
    }
    Ok(SimProfile::builtin_default())
}

impl SimPort {
    /// The chip record being simulated.
    pub fn chip(&self) -> &Chip {
        &self.rates.chip
    }
    /// Its sim profile.
    pub fn profile(&self) -> &SimProfile {
        &self.profile
    }
    /// Composite families priced as fused kernels.
    pub fn fused(&self) -> &[&'static str] {
        &self.fused
    }
    /// Peak FLOP/s of the matrix units for `dtype` (for MFU), or why it is unknown.
    pub fn matrix_peak(&self, dtype: DType) -> anyhow::Result<f64> {
        self.rates.matrix_peak(dtype)
    }
    /// Fail now, with the figure and its override named, if a step multiplying in `dtype`
    /// would need a figure the chip lacks.
    pub fn check_figures(&self, dtype: DType) -> anyhow::Result<()> {
        self.rates.matrix_peak(dtype)?;
        self.rates.matrix_peak(DType::F32).map(|_| ()).or_else(|e| {
            // f32 matmuls remain in a bf16 step only where the engine keeps f32 (none today);
            // the error is deferred to the first such call.
            if dtype == DType::BF16 {
                Ok(())
            } else {
                Err(e)
            }
        })
    }
    /// Peak bytes allocated at once since the port was opened.
    pub fn peak_bytes(&self) -> usize {
        self.tracker.peak()
    }
    /// Bytes allocated now.
    pub fn live_bytes(&self) -> usize {
        self.tracker.live()
    }
    /// Usable device memory of the chip in bytes, when the database knows it.
    pub fn usable_memory(&self) -> Option<f64> {
        self.rates.chip.usable_memory_bytes().ok()
    }
    /// Modelled seconds of one call made of `works` (no launch overhead when `works` is empty).
    pub fn price(&self, works: &[Work]) -> anyhow::Result<f64> {
        let mut t = 0.0;
        for w in works {
            let eff = match self.planner_efficiency(w)? {
                Some(e) => e,
                None => self.profile.efficiency(w)?,
            };
            t += self.roofline(w)? / eff;
        }
        Ok(t + if works.is_empty() { 0.0 } else { self.rates.launch_s })
    }
    /// Dtypes the chip multiplies fast: f32 when it has an fp32 figure, bf16 when its bf16 peak
    /// is above its fp32 peak (as a real port says it: a CPU whose bf16 GEMMs only widen to f32
    /// is not fast at bf16, and the engine then runs `--precision bf16` products in f32 on the
    /// sim as it does on the port the chip file was measured on).
    fn fast_matmul(&self) -> Vec<DType> {
        let c = &self.rates.chip;
        let mut out = Vec::new();
        if c.get("fp32_tflops").is_some() {
            out.push(DType::F32);
        }
        match (c.get("bf16_tflops"), c.get("fp32_tflops")) {
            (Some(b), Some(f)) if b <= f => {}
            (Some(_), _) => out.push(DType::BF16),
            (None, _) => {}
        }
        out
    }
    /// The planner's efficiency for a GEMM or attention kernel when the profile asks for it
    /// (`planner_efficiencies`); None for other kernels and profiles.
    fn planner_efficiency(&self, w: &Work) -> anyhow::Result<Option<f64>> {
        if !self.profile.planner_efficiencies {
            return Ok(None);
        }
        static CONSTANTS: std::sync::OnceLock<anychip_plan::calib::Constants> = std::sync::OnceLock::new();
        let k = CONSTANTS.get_or_init(anychip_plan::calib::shipped);
        // The planner prices tensor work at the clock the chip sustains within its board power.
        let clock = anychip_plan::perf::power_clock(&self.rates.chip, k);
        Ok(match (w.class, w.shape.as_slice()) {
            (Class::Gemm, &[m, n, kk]) => {
                let peak = self.rates.matrix_peak(w.dtype)? * clock;
                let dims = (m as f64, n as f64, kk as f64);
                let eff =
                    anychip_plan::perf::gemm_efficiency(k, peak, self.rates.bandwidth, dims, w.dtype.size() as f64);
                Some(eff * clock)
            }
            (Class::Attention, _) => Some(k.attn_eff * clock),
            _ => None,
        })
    }
    /// max(FLOPs / peak, bytes / bandwidth) of one kernel, before efficiency.
    pub fn roofline(&self, w: &Work) -> anyhow::Result<f64> {
        let compute = match w.class {
            Class::Gemm | Class::Attention => w.flops / self.rates.matrix_peak(w.dtype)?,
            // Streaming kernels: their few FLOPs per byte run on the vector units; a chip
            // without an fp32 figure is priced on bandwidth alone.
            Class::Memory => self.rates.chip.get("fp32_tflops").map_or(0.0, |p| w.flops / (p * 1e12)),
        };
        Ok(compute.max(w.bytes / self.rates.bandwidth))
    }

    fn charge(&self, works: Vec<Work>) -> Result<()> {
        let t = self.price(&works).map_err(|e| PortError::Unsupported(format!("{e:#}")))?;
        *self.clock.lock().unwrap_or_else(|p| p.into_inner()) += t;
        Ok(())
    }

    /// The values port's view behind a sim view (debug mode only).
    fn real(&self, v: &View) -> View {
        let mem = v.buf.downcast::<SimMemory>().expect("views reaching the sim port are its own buffers");
        View { buf: mem.real.clone().expect("debug mode buffers hold a real buffer"), ..v.clone() }
    }

    /// Run `f` on the values port with real views, in debug mode; nothing in shapes-only mode.
    fn values(&self, f: impl FnOnce(&dyn Port, &dyn Fn(&View) -> View) -> Result<()>) -> Result<()> {
        match &self.values {
            Some(p) => f(&**p, &|v| self.real(v)),
            None => Ok(()),
        }
    }

    fn shapes_only_error(&self) -> PortError {
        PortError::Unsupported(format!(
            "port {} runs shapes only and holds no tensor values, so it cannot train to convergence, evaluate or sample; price a step with `anychip bench --port {}`, or compute values on the cpu port with `--port {}+cpu`",
            self.name, self.name, self.name
        ))
    }
}

impl Port for SimPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        let c = &self.rates.chip;
        let tf = |f: &str| c.get(f).map_or("?".to_string(), |v| format!("{v}"));
        let mode = match &self.values {
            Some(p) => format!("values on {}", p.name()),
            None => "shapes only".into(),
        };
        Capabilities {
            device: format!(
                "simulated {} ({mode}): {} bf16 / {} fp32 TFLOP/s, {} TB/s, launch {} us, {} fused",
                if c.display.is_empty() { &c.name } else { &c.display },
                tf("bf16_tflops"),
                tf("fp32_tflops"),
                tf("mem_bw_tbs"),
                self.profile.launch_us.value,
                self.fused.len()
            ),
            storage: vec![DType::F32, DType::BF16, DType::I32],
            arithmetic: vec![DType::F32, DType::BF16],
            fast_matmul: self.fast_matmul(),
            fused: self.fused.clone(),
            max_alloc: usize::MAX,
            memory: self.usable_memory().map(|b| b as usize),
            peak_flops_f32: c.get("fp32_tflops").map(|t| t * 1e12),
        }
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        let real = match &self.values {
            Some(p) => Some(p.alloc(bytes)?),
            None => None,
        };
        Ok(Buffer(Arc::new(SimMemory::new(bytes, self.tracker.clone(), real))))
    }

    fn write(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        let n = src.len();
        self.charge(vec![Work { shape: vec![n], ..memory_work("write", n as f64) }])?;
        match &self.values {
            Some(p) => p.write(real_buffer(dst), offset, src),
            None => Ok(()),
        }
    }

    fn read(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        match &self.values {
            Some(p) => p.read(real_buffer(src), offset, dst),
            None => Err(self.shapes_only_error()),
        }
    }

    fn copy(&self, src: &Buffer, so: usize, dst: &Buffer, d: usize, bytes: usize) -> Result<()> {
        self.charge(vec![Work { shape: vec![bytes], ..memory_work("copy", 2.0 * bytes as f64) }])?;
        match &self.values {
            Some(p) => p.copy(real_buffer(src), so, real_buffer(dst), d, bytes),
            None => Ok(()),
        }
    }

    fn synchronize(&self) -> Result<()> {
        match &self.values {
            Some(p) => p.synchronize(),
            None => Ok(()),
        }
    }

    fn fill(&self, out: &View, value: f64) -> Result<()> {
        self.charge(vec![cost::elementwise("fill".into(), out, &[], 0.0)])?;
        self.values(|p, r| p.fill(&r(out), value))
    }
    fn cast(&self, x: &View, out: &View) -> Result<()> {
        self.charge(vec![cost::elementwise("cast".into(), out, &[x], 1.0)])?;
        self.values(|p, r| p.cast(&r(x), &r(out)))
    }
    fn copy_strided(&self, x: &View, out: &View) -> Result<()> {
        self.charge(vec![cost::elementwise("copy_strided".into(), out, &[x], 0.0)])?;
        self.values(|p, r| p.copy_strided(&r(x), &r(out)))
    }
    fn unary(&self, op: UnaryOp, x: &View, out: &View) -> Result<()> {
        self.charge(vec![cost::unary(op, x, out)])?;
        self.values(|p, r| p.unary(op, &r(x), &r(out)))
    }
    fn binary(&self, op: BinaryOp, a: &View, b: &View, out: &View) -> Result<()> {
        self.charge(vec![cost::binary(op, a, b, out)])?;
        self.values(|p, r| p.binary(op, &r(a), &r(b), &r(out)))
    }
    fn compare(&self, op: CompareOp, a: &View, b: &View, out: &View) -> Result<()> {
        self.charge(vec![cost::elementwise(format!("compare_{}", cost::lower(op)), out, &[a, b], 1.0)])?;
        self.values(|p, r| p.compare(op, &r(a), &r(b), &r(out)))
    }
    fn select(&self, c: &View, a: &View, b: &View, out: &View) -> Result<()> {
        self.charge(vec![cost::elementwise("select".into(), out, &[c, a, b], 1.0)])?;
        self.values(|p, r| p.select(&r(c), &r(a), &r(b), &r(out)))
    }
    fn reduce(&self, op: ReduceOp, x: &View, out: &View) -> Result<()> {
        self.charge(vec![cost::reduce(format!("reduce_{}", cost::lower(op)), x, out)])?;
        self.values(|p, r| p.reduce(op, &r(x), &r(out)))
    }
    fn matmul(&self, a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()> {
        self.charge(vec![cost::matmul(a, b, out, beta != 0.0)])?;
        self.values(|p, r| p.matmul(&r(a), &r(b), &r(out), alpha, beta))
    }
    fn gather_rows(&self, t: &View, idx: &View, out: &View) -> Result<()> {
        let bytes = cost::bytes(idx) + 2.0 * cost::bytes(out);
        self.charge(vec![Work { dtype: out.dtype, shape: vec![out.numel()], ..memory_work("gather_rows", bytes) }])?;
        self.values(|p, r| p.gather_rows(&r(t), &r(idx), &r(out)))
    }
    fn scatter_add_rows(&self, src: &View, idx: &View, out: &View) -> Result<()> {
        // Each source row is read and added into a row of `out` (read and written).
        let bytes = cost::bytes(idx) + 3.0 * cost::bytes(src);
        let w = Work { dtype: src.dtype, shape: vec![src.numel()], ..memory_work("scatter_add_rows", bytes) };
        self.charge(vec![Work { flops: src.numel() as f64, ..w }])?;
        self.values(|p, r| p.scatter_add_rows(&r(src), &r(idx), &r(out)))
    }
    fn random(&self, dist: Distribution, seed: u64, offset: u64, out: &View) -> Result<()> {
        self.charge(vec![cost::elementwise("random".into(), out, &[], 20.0)])?;
        self.values(|p, r| p.random(dist, seed, offset, &r(out)))
    }

    fn composite(&self, call: &Composite) -> Result<Handled> {
        if !self.fused.contains(&call.name()) {
            return Ok(Handled::No);
        }
        self.charge(cost::composite(call))?;
        self.values(|p, r| anychip_decomp::dispatch(p, &call.map_views(r)))?;
        Ok(Handled::Yes)
    }

    fn modelled_seconds(&self) -> Option<f64> {
        Some(*self.clock.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn memory_work(op: &str, bytes: f64) -> Work {
    Work { op: op.into(), class: Class::Memory, dtype: DType::F32, shape: vec![1], flops: 0.0, bytes }
}

fn real_buffer(b: &Buffer) -> &Buffer {
    let mem = b.downcast::<SimMemory>().expect("buffers reaching the sim port are its own");
    mem.real.as_ref().expect("debug mode buffers hold a real buffer")
}
