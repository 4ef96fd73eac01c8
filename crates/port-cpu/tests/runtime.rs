//! The runtime half: memory, transfers, registration and capabilities.

use anychip_port::{DType, Port, PortOptions, Registry};
use anychip_port_cpu::buffer::{HostBuffer, ALIGN};

#[test]
fn alloc_is_aligned_and_transfers_round_trip() {
    let cpu = anychip_port_cpu::new(Some(1));
    for bytes in [0usize, 1, 3, 64, 1000, 1 << 20] {
        let b = cpu.alloc(bytes).unwrap();
        assert_eq!(b.bytes(), bytes);
        let h = b.downcast::<HostBuffer>().unwrap();
        assert_eq!(h.ptr() as usize % ALIGN, 0, "{bytes}-byte buffer is not {ALIGN}-byte aligned");
        let data: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
        cpu.write(&b, 0, &data).unwrap();
        let mut back = vec![0u8; bytes];
        cpu.read(&b, 0, &mut back).unwrap();
        assert_eq!(back, data);
    }
    let a = cpu.alloc(16).unwrap();
    let b = cpu.alloc(16).unwrap();
    cpu.write(&a, 0, &(0..16).collect::<Vec<u8>>()).unwrap();
    cpu.copy(&a, 4, &b, 8, 8).unwrap();
    let mut got = vec![0u8; 16];
    cpu.read(&b, 0, &mut got).unwrap();
    assert_eq!(&got[8..], &[4, 5, 6, 7, 8, 9, 10, 11]);
    // Out-of-bounds transfers are errors.
    assert!(cpu.write(&a, 10, &[0; 7]).is_err());
    assert!(cpu.read(&a, usize::MAX, &mut [0; 2]).is_err());
    assert!(cpu.copy(&a, 9, &b, 0, 8).is_err());
    cpu.synchronize().unwrap();
}

#[test]
fn registers_as_cpu_with_requested_threads() {
    let mut reg = Registry::new();
    anychip_port_cpu::register(&mut reg);
    assert!(reg.list().iter().any(|(n, _)| n == "cpu"));
    let p = reg.create("cpu", &PortOptions { threads: Some(3) }).unwrap();
    assert_eq!(p.name(), "cpu");
    let caps = p.capabilities();
    assert!(caps.device.contains("3 threads"), "{}", caps.device);
    assert!(caps.storage.contains(&DType::BF16) && caps.fused.contains(&"attention"));
    // Measured (fma_peak_counts_at_least_the_work_it_timed checks the measurement), so no speed
    // bound here: qemu-user runs one thread at well under 1e8 FLOP/s.
    let peak = caps.peak_flops_f32.unwrap();
    assert!(peak.is_finite() && peak > 0.0, "implausible FMA peak {peak}");
}

#[test]
fn fma_peak_counts_at_least_the_work_it_timed() {
    // No speed bound: under qemu-user or on a loaded machine one thread can run below 1e8
    // FLOP/s (67 MFLOP/s seen under qemu-user aarch64 on a Zen 3 EPYC). What must hold anywhere:
    // the best slice's rate, over the whole measurement's wall time, covers at least one
    // slice's FLOPs, and no core does 10 TFLOP/s.
    let t = std::time::Instant::now();
    let one = anychip_port_cpu::measure_fma_peak(1);
    let wall = t.elapsed().as_secs_f64();
    assert!(one.is_finite() && one < 1e13, "{one}");
    assert!(one * wall >= anychip_port_cpu::MIN_SLICE_FLOPS as f64, "{one} FLOP/s over {wall} s");
}

#[test]
fn enter_runs_the_closure_on_a_worker_where_calls_still_work() {
    let cpu = anychip_port_cpu::new(Some(2));
    let buf = cpu.alloc(1 << 20).unwrap();
    let v = anychip_port::View::contiguous(buf.clone(), DType::F32, &[1 << 18]);
    let mut name = None;
    cpu.enter(&mut || {
        name = std::thread::current().name().map(String::from);
        // A parallel op issued from inside runs inline on this worker and its sibling.
        cpu.fill(&v, 2.5).unwrap();
    });
    assert!(name.as_deref().is_some_and(|n| n.starts_with("anychip-cpu-")), "ran on {name:?}");
    let mut got = vec![0u8; 1 << 20];
    cpu.read(&buf, 0, &mut got).unwrap();
    assert!(got.chunks_exact(4).all(|c| f32::from_le_bytes(c.try_into().unwrap()) == 2.5));
}
