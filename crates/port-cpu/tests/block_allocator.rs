//! The caching allocator (its own test binary: the pool is process-wide, so no other test may
//! allocate while this one counts hits and misses).

use anychip_port::Port;
use anychip_port_cpu::block_allocator;
use anychip_port_cpu::buffer::HostBuffer;

#[test]
fn reuses_freed_blocks_and_stays_within_its_bound() {
    let cpu = anychip_port_cpu::new(Some(1));
    let ptr = |b: &anychip_port::Buffer| b.downcast::<HostBuffer>().unwrap().ptr() as usize;

    // Fresh memory reads as zeros.
    let a = cpu.alloc(4096).unwrap();
    let mut back = vec![1u8; 4096];
    cpu.read(&a, 0, &mut back).unwrap();
    assert!(back.iter().all(|&x| x == 0));

    // A released block comes back for the same size only.
    let first = ptr(&a);
    drop(a);
    let s0 = block_allocator::stats();
    assert_eq!((s0.live, s0.cached), (0, 4096));
    let b = cpu.alloc(4096).unwrap();
    assert_eq!(ptr(&b), first, "a block of the same size is reused");
    assert_eq!(block_allocator::stats().hits, s0.hits + 1);
    let c = cpu.alloc(4000).unwrap();
    assert_ne!(ptr(&c), first);
    assert_eq!(block_allocator::stats().misses, s0.misses + 1);
    drop((b, c));

    // Held bytes never pass 1 + 1/SLACK of the live peak: cached blocks of other sizes get evicted.
    let big: Vec<_> = (0..8).map(|i| cpu.alloc((1 << 20) | (i * 64)).unwrap()).collect();
    drop(big);
    let mut kept = Vec::new();
    for i in 0..8 {
        kept.push(cpu.alloc((3 << 19) | (i * 64)).unwrap());
        let s = block_allocator::stats();
        assert!(s.live + s.cached <= s.peak_live + s.peak_live / block_allocator::SLACK, "{s:?} holds too much");
    }
    assert!(block_allocator::stats().cached < 8 << 20, "no block was evicted");
    drop(kept);
    block_allocator::trim();
    assert_eq!(block_allocator::stats().cached, 0);

    // Large blocks are cut from a freed larger one and merge back into it when released.
    let seg = cpu.alloc(4 << 20).unwrap();
    let base = ptr(&seg);
    // Segments of 2 MiB and more are mapped on a huge-page boundary, and read as zeros too.
    if cfg!(target_os = "linux") && std::env::var_os("ANYCHIP_NO_HUGEPAGES").is_none() {
        assert_eq!(base % (2 << 20), 0, "a huge segment starts on a huge page");
    }
    let mut back = vec![1u8; 4 << 20];
    cpu.read(&seg, 0, &mut back).unwrap();
    assert!(back.iter().all(|&x| x == 0));
    drop(seg);
    let s1 = block_allocator::stats();
    let (x, y) = (cpu.alloc(1 << 20).unwrap(), cpu.alloc((2 << 20) + 5).unwrap());
    assert_eq!((ptr(&x), ptr(&y)), (base, base + (1 << 20)), "both fit in the freed 4 MiB, best fit first");
    assert_eq!((block_allocator::stats().hits, block_allocator::stats().misses), (s1.hits + 2, s1.misses));
    let z = cpu.alloc(2 << 20).unwrap();
    assert_ne!(ptr(&z), base, "the 1 MiB left is too small: fresh memory");
    drop((y, x));
    let whole = cpu.alloc(4 << 20).unwrap();
    assert_eq!(ptr(&whole), base, "the two pieces merged back into the whole segment");
    drop((whole, z));
    // Wholly free segments, mapped ones included, go back to the system.
    block_allocator::trim();
    assert_eq!(block_allocator::stats().cached, 0);
}
