//! `anychip chips measure`: a chip file of this machine from measurement, for `--port sim:FILE`.
//!
//! Writes `NAME.toml` (the chip database's format: peaks, bandwidth, memory, each with
//! `measured` provenance, loadable by `plan --chip-file` too) and `NAME.sim.toml` (the sim
//! profile: per-call overhead, fused composites, efficiencies by op, shape and dtype).
//!
//! What is measured on the `cpu` port: the fp32 FMA peak (independent FMA chains); the bf16
//! matrix rate (the best bf16 GEMM of the grid: the port has no separate bf16 FMA benchmark);
//! streaming bandwidth (out = a + b over 3 x 128 MiB); the cost of an empty call; GEMMs and
//! causal attention over grids of shapes; and every call of training steps of three probe
//! models (sizes chosen to span shapes, not any benchmark's), whose per-call host overhead
//! (autograd, allocation: step time not spent inside port calls) is added to the launch cost.

use anychip_data::write_atomic;
use anychip_model_config::ModelConfig;
use anychip_port::{DType, Port};
use anychip_port_sim::profile::Sourced;
use anychip_port_sim::record::{self, Recorder, Sample};
use anychip_port_sim::SimProfile;
use anychip_train::{Precision, TrainConfig};
use anyhow::{anyhow, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Arguments of `anychip chips measure`.
#[derive(clap::Args, Clone, Debug)]
pub struct MeasureArgs {
    /// Chip file to write; its sim profile goes next to it as NAME.sim.toml.
    #[arg(long)]
    out: PathBuf,
    /// Chip name in the file (default: the file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Worker threads of the measured cpu port (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Repeats of each grid shape (medians are kept).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

/// GEMM shapes [m, n, k]: powers of 4 from 64, plus vocabulary-wide products, up to 4 GFLOP.
fn gemm_shapes() -> Vec<[usize; 3]> {
    let sizes = [64, 256, 1024, 4096];
    let mut v = Vec::new();
    for &m in &sizes {
        for &n in sizes.iter().chain(&[16384]) {
            for &k in &sizes {
                if 2.0 * (m * n * k) as f64 <= 4e9 {
                    v.push([m, n, k]);
                }
            }
        }
    }
    v
}

/// Probe models: widths, vocabularies and GQA ratios spread over the range small models use.
fn probes() -> Vec<(ModelConfig, usize, usize)> {
    vec![
        (ModelConfig::gpt2(4096, 192, 2, 4, 320), 6, 192),
        (ModelConfig::llama(8192, 128, 2, 6, 2, 384, 1024), 8, 128),
        (ModelConfig::gpt2(32768, 384, 2, 8, 512), 4, 384),
    ]
}

/// `anychip chips measure`.
pub fn measure(a: &MeasureArgs) -> Result<()> {
    let name =
        a.name.clone().unwrap_or_else(|| a.out.file_stem().map_or("cpu-here".into(), |s| s.to_string_lossy().into()));
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let port = crate::ports::open("cpu", Some(threads))?;
    let caps = port.capabilities();
    eprintln!("measuring {} ...", caps.device);
    let fp32 = anychip_port_cpu::measure_fma_peak(threads);
    let bw = record::stream_bandwidth(&*port, 32 << 20, 5)?;
    let empty = inline(&port, || record::empty_call_secs(&*port, 2000))?;
    let rec = Arc::new(Recorder::new(port.clone()));
    inline(&port, || record::gemm_grid(&rec, &gemm_shapes(), DType::F32, a.reps))?;
    let mut samples = rec.take();
    inline(&port, || record::gemm_grid(&rec, &gemm_shapes(), DType::BF16, a.reps))?;
    let bf16_samples = rec.take();
    let bf16 = bf16_samples.iter().map(|s| s.works[0].flops / s.secs).fold(0.0, f64::max);
    samples.extend(bf16_samples);
    let attn: Vec<[usize; 2]> = [64, 256, 1024].iter().flat_map(|&t| [32, 64, 128].map(|d| [t, d])).collect();
    for dt in [DType::F32, DType::BF16] {
        inline(&port, || record::attention_grid(&rec, &attn, dt, a.reps))?;
    }
    samples.extend(rec.take());
    let host_per_call = probe_steps(&rec, threads, &mut samples)?;
    let launch = empty + host_per_call;
    let machine = format!("{}, {threads} threads", anychip_port_cpu_model(&caps.device));
    write_chip_file(&a.out, &name, &machine, fp32, bf16, bw)?;
    let sim = anychip_port_sim::open(&a.out.display().to_string(), &Default::default())?;
    let roofline = |w: &anychip_port_sim::cost::Work| sim.roofline(w);
    let source = format!("port cpu on {machine}, `anychip chips measure`");
    let profile = SimProfile {
        chip: name.clone(),
        launch_us: Sourced {
            value: (launch * 1e6 * 100.0).round() / 100.0,
            source: format!(
                "measured: empty call {:.2} us + engine host time per call {:.2} us (probe training steps), {source}",
                empty * 1e6,
                host_per_call * 1e6
            ),
        },
        fused: caps.fused.iter().map(|s| s.to_string()).collect(),
        fused_source: format!("measured: the cpu port's capabilities ({})", caps.device),
        planner_efficiencies: false, // measured below, per op and shape
        planner_efficiencies_source: String::new(),
        eff: record::fit(&samples, empty, &roofline, &source)?,
    };
    let sim_path = anychip_port_sim::profile::companion(&a.out);
    write_atomic(&sim_path, profile.to_text()?.as_bytes())?;
    println!(
        "wrote {} and {}: fp32 {:.0} GFLOP/s (FMA), bf16 {:.0} GFLOP/s (best GEMM), {:.1} GB/s, launch {:.2} us, {} efficiencies",
        a.out.display(),
        sim_path.display(),
        fp32 / 1e9,
        bf16 / 1e9,
        bw / 1e9,
        launch * 1e6,
        profile.eff.len()
    );
    Ok(())
}

/// Run `f` on the port's own worker thread, as a training step runs ([`Port::enter`]).
fn inline<T>(port: &Arc<dyn Port>, f: impl FnOnce() -> anychip_port::Result<T> + Send) -> Result<T>
where
    T: Send,
{
    let mut f = Some(f);
    let mut out = None;
    port.enter(&mut || out = Some(f.take().expect("enter runs its closure once")()));
    Ok(out.ok_or_else(|| anyhow!("the port did not run the measurement"))??)
}

/// Training steps of the probe models in f32 and bf16, every call recorded; returns the
/// median host time per call (step time not spent inside port calls, per call).
fn probe_steps(rec: &Arc<Recorder>, threads: usize, samples: &mut Vec<Sample>) -> Result<f64> {
    let mut host = Vec::new();
    for (model, batch, ctx) in probes() {
        for precision in Precision::ALL {
            let mut cfg = TrainConfig::default_for("probe", model.clone());
            (cfg.batch, cfg.ctx, cfg.precision, cfg.threads, cfg.lr) = (batch, ctx, precision, Some(threads), 1e-4);
            let (warmup, steps) = (1, 3);
            let r = anychip_train::bench::bench(&cfg, rec.clone(), warmup, steps, false)?;
            let s = rec.take();
            let per_step = s.len() / (warmup + steps);
            let timed = &s[per_step * warmup..];
            let in_calls: f64 = timed.iter().map(|x| x.secs).sum::<f64>() / steps as f64;
            host.push(((r.step_ms_median / 1e3 - in_calls) / per_step as f64).max(0.0));
            samples.extend_from_slice(timed);
        }
    }
    host.sort_by(f64::total_cmp);
    Ok(host[host.len() / 2])
}

/// The CPU model from the port's device line (its text up to the first comma).
fn anychip_port_cpu_model(device: &str) -> String {
    device.split(',').next().unwrap_or(device).trim().to_string()
}

/// Physical memory of this machine in GB (MemTotal), for the chip file.
fn mem_total_gb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e9)
}

fn write_chip_file(path: &Path, name: &str, machine: &str, fp32: f64, bf16: f64, bw: f64) -> Result<()> {
    let m = |what: &str| format!("measured by `anychip chips measure` on {machine}: {what}");
    let mut specs = vec![
        format!(
            "fp32_tflops = {{ value = {:.4}, conf = \"H\", source = \"{}\" }}",
            fp32 / 1e12,
            m("independent FMA chains")
        ),
        format!(
            "bf16_tflops = {{ value = {:.4}, conf = \"H\", source = \"{}\" }}",
            bf16 / 1e12,
            m("best bf16 GEMM of the grid")
        ),
        format!(
            "mem_bw_tbs = {{ value = {:.5}, conf = \"H\", source = \"{}\" }}",
            bw / 1e12,
            m("out = a + b over 3 x 128 MiB, best of 5")
        ),
    ];
    if let Some(gb) = mem_total_gb() {
        specs.push(format!("memory_gb = {{ value = {gb:.1}, conf = \"H\", source = \"{}\" }}", m("MemTotal")));
    }
    let text = format!(
        "# This machine as a chip, measured (see docs/sim.md); its sim profile is the .sim.toml next to it.\nname = \"{name}\"\ndisplay = \"{machine}\"\nvendor = \"measured\"\nfamily = \"cpu\"\n\n[specs]\n{}\n",
        specs.join("\n")
    );
    anychip_plan::chips::parse_chip(&text, &path.display().to_string())?;
    write_atomic(path, text.as_bytes())
}

/// `anychip chips`: the planner's chip database commands, plus `measure`.
#[derive(clap::Args, Clone, Debug)]
pub struct ChipsArgs {
    #[command(subcommand)]
    command: Option<ChipsCommand>,
    #[command(flatten)]
    chip_opts: crate::cmd_plan::ChipOpts,
}

#[derive(clap::Subcommand, Clone, Debug)]
enum ChipsCommand {
    /// Measure this machine on the cpu port and write a chip file (and its sim profile) for
    /// `--port sim:FILE.toml`.
    Measure(MeasureArgs),
    #[command(flatten)]
    Db(crate::cmd_chips::ChipsCommand),
}

/// Run `anychip chips`.
pub fn chips(a: ChipsArgs) -> Result<()> {
    match a.command {
        Some(ChipsCommand::Measure(m)) => measure(&m),
        Some(ChipsCommand::Db(c)) => {
            crate::cmd_chips::run_chips(&crate::cmd_chips::ChipsArgs { command: Some(c), chip_opts: a.chip_opts })
        }
        None => crate::cmd_chips::run_chips(&crate::cmd_chips::ChipsArgs { command: None, chip_opts: a.chip_opts }),
    }
}
