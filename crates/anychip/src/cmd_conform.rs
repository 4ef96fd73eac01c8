//! `anychip conform`: the conformance suite against the `ref` oracle.

use anychip_conformance::Level;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `anychip conform`.
#[derive(Args)]
pub struct ConformArgs {
    /// Port to check (see `anychip ports`).
    #[arg(long, default_value = "cpu")]
    port: String,
    /// Run levels L0 through this one: L0 runtime, L1 primitives, L2 composites, L3 model
    /// goldens, L4 training behaviour, L5 throughput (reported only); `all` = L5.
    #[arg(long, default_value = "L4")]
    level: String,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Worker threads for the port.
    #[arg(long)]
    threads: Option<usize>,
}

pub fn conform(a: ConformArgs) -> Result<()> {
    let level: Level = a.level.parse().map_err(|e: String| anyhow!(e))?;
    let port = crate::ports::open(&a.port, a.threads)?;
    let reference = crate::ports::open("ref", None)?;
    let report = anychip_conformance::run(&port, &reference, &level.up_to());
    print!("{}", report.print_table());
    if let Some(p) = &a.json {
        std::fs::write(p, report.to_json()).map_err(|e| anyhow!("cannot write {}: {e}", p.display()))?;
    }
    if !report.passed() {
        bail!(
            "port '{}' failed {} conformance checks (rows marked FAIL above)",
            a.port,
            report.count(anychip_conformance::Status::Fail)
        );
    }
    Ok(())
}
