//! L0: the runtime. Round trips at odd sizes and offsets, zero-size buffers, device copies,
//! and ordering: a read after an op sees the op's result.

use crate::harness::check_row;
use crate::report::{Level, Row};
use anychip_port::{DType, Layout, Port, View};

pub fn run(p: &dyn Port) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut check = |case: &str, f: &dyn Fn() -> Result<bool, String>| {
        let (ok, note) = match f() {
            Ok(true) => (true, String::new()),
            Ok(false) => (false, "data differs".into()),
            Err(e) => (false, e),
        };
        rows.push(check_row(Level::L0, "runtime", case, ok, note));
    };
    let e = |x: anychip_port::PortError| x.to_string();
    for n in [1usize, 3, 17, 783, 65_537] {
        check(&format!("write/read {n} bytes at offset 5"), &|| {
            let b = p.alloc(n + 8).map_err(e)?;
            let src: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            p.write(&b, 5, &src).map_err(e)?;
            let mut back = vec![0u8; n];
            p.read(&b, 5, &mut back).map_err(e)?;
            Ok(back == src)
        });
        check(&format!("device copy {n} bytes"), &|| {
            let (a, b) = (p.alloc(n).map_err(e)?, p.alloc(n + 3).map_err(e)?);
            let src: Vec<u8> = (0..n).map(|i| (i * 7 % 253) as u8).collect();
            p.write(&a, 0, &src).map_err(e)?;
            p.copy(&a, 0, &b, 3, n).map_err(e)?;
            p.synchronize().map_err(e)?;
            let mut back = vec![0u8; n];
            p.read(&b, 3, &mut back).map_err(e)?;
            Ok(back == src)
        });
    }
    check("zero-size alloc has 0 bytes, writes and reads", &|| {
        let b = p.alloc(0).map_err(e)?;
        p.write(&b, 0, &[]).map_err(e)?;
        p.read(&b, 0, &mut []).map_err(e)?;
        Ok(b.bytes() == 0)
    });
    check("ordering: fill, then read sees it", &|| {
        let b = p.alloc(4 * 1000).map_err(e)?;
        let v = View { buf: b.clone(), dtype: DType::F32, layout: Layout::contiguous(&[1000]) };
        for k in 0..3 {
            p.fill(&v, k as f64 + 0.5).map_err(e)?;
        }
        p.synchronize().map_err(e)?;
        let mut back = vec![0u8; 4000];
        p.read(&b, 0, &mut back).map_err(e)?;
        Ok(back.chunks_exact(4).all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) == 2.5))
    });
    check("read past the end is an error, not a crash", &|| {
        let b = p.alloc(8).map_err(e)?;
        let mut back = vec![0u8; 16];
        Ok(p.read(&b, 0, &mut back).is_err())
    });
    rows
}
