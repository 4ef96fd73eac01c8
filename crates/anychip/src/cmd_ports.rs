//! `anychip ports`: the registered ports and their capabilities.

use anyhow::Result;

/// Print every registered port; one that cannot open here says why.
pub fn ports() -> Result<()> {
    let reg = crate::ports::registry();
    for (name, about) in reg.list() {
        println!("{name}: {about}");
        match reg.create(&name, &Default::default()) {
            Ok(p) => {
                let c = p.capabilities();
                let names = |v: &[anychip_port::DType]| v.iter().map(|d| d.name()).collect::<Vec<_>>().join(",");
                println!("  device:     {}", c.device);
                println!("  storage:    {}", names(&c.storage));
                println!("  arithmetic: {}", names(&c.arithmetic));
                println!("  fast matmul: {}", names(&c.fast_matmul));
                println!(
                    "  fused:      {}",
                    if c.fused.is_empty() { "none (default decompositions)".into() } else { c.fused.join(", ") }
                );
            }
            Err(e) => println!("  unavailable: {e}"),
        }
    }
    Ok(())
}
