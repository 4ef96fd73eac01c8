use anychip_port::{DType, Port, PortError, PortOptions, Registry};
use anychip_test_support::*;

#[test]
fn write_read_copy_round_trip_at_odd_offsets() {
    let p = anychip_port_ref::new();
    let buf = p.alloc(13).unwrap();
    assert_eq!(buf.bytes(), 13);
    let data: Vec<u8> = (1..=7).collect();
    p.write(&buf, 3, &data).unwrap();
    let mut back = [0u8; 7];
    p.read(&buf, 3, &mut back).unwrap();
    assert_eq!(back.to_vec(), data);

    let other = p.alloc(9).unwrap();
    p.copy(&buf, 4, &other, 1, 5).unwrap();
    let mut all = [0u8; 9];
    p.read(&other, 0, &mut all).unwrap();
    assert_eq!(all, [0, 2, 3, 4, 5, 6, 0, 0, 0]);
}

#[test]
fn overlapping_copy_within_a_buffer_behaves_like_memmove() {
    let p = anychip_port_ref::new();
    let buf = p.alloc(8).unwrap();
    p.write(&buf, 0, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    p.copy(&buf, 0, &buf, 2, 5).unwrap();
    let mut all = [0u8; 8];
    p.read(&buf, 0, &mut all).unwrap();
    assert_eq!(all, [1, 2, 1, 2, 3, 4, 5, 8]);
}

#[test]
fn zero_size_buffers_and_transfers_work() {
    let p = anychip_port_ref::new();
    let buf = p.alloc(0).unwrap();
    p.write(&buf, 0, &[]).unwrap();
    p.read(&buf, 0, &mut []).unwrap();
    p.copy(&buf, 0, &buf, 0, 0).unwrap();
    let v = anychip_port::View::contiguous(buf, DType::F32, &[0, 3]);
    p.fill(&v, 1.0).unwrap();
    p.synchronize().unwrap();
}

#[test]
fn out_of_bounds_transfers_are_invalid_not_panics() {
    let p = anychip_port_ref::new();
    let buf = p.alloc(4).unwrap();
    assert_invalid(p.write(&buf, 2, &[0; 3]), "outside the 4-byte buffer");
    assert_invalid(p.read(&buf, usize::MAX, &mut [0; 2]), "outside");
    assert_invalid(p.copy(&buf, 0, &buf, 1, 4), "copy dst");
}

#[test]
fn huge_allocation_is_out_of_memory_not_an_abort() {
    match anychip_port_ref::new().alloc(usize::MAX / 2) {
        Err(PortError::OutOfMemory { .. }) => {}
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
}

#[test]
fn buffers_of_another_port_are_rejected() {
    struct Foreign;
    impl anychip_port::DeviceMemory for Foreign {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn bytes(&self) -> usize {
            16
        }
    }
    let foreign = anychip_port::Buffer(std::sync::Arc::new(Foreign));
    assert_invalid(anychip_port_ref::new().write(&foreign, 0, &[1]), "not allocated by the ref port");
}

#[test]
fn write_op_read_sees_the_result_after_synchronize() {
    let p = anychip_port_ref::new();
    let x = tensor(&p, &[1.0, 2.0], DType::F32, &[2]);
    p.binary(anychip_port::BinaryOp::Add, &x, &x, &x).unwrap();
    p.synchronize().unwrap();
    assert_same(&get(&p, &x), &[2.0, 4.0]);
}

#[test]
fn registers_as_ref_with_its_capabilities() {
    let mut reg = Registry::new();
    anychip_port_ref::register(&mut reg);
    assert_eq!(reg.list()[0].0, "ref");
    let p = reg.create("ref", &PortOptions::default()).unwrap();
    assert_eq!(p.name(), "ref");
    let caps = p.capabilities();
    assert_eq!(caps.storage, vec![DType::F32, DType::BF16, DType::I32]);
    assert_eq!(caps.arithmetic, vec![DType::F32, DType::BF16]);
    assert!(caps.fused.is_empty());
    assert_eq!(caps.device, "host, naive f64-accumulating oracle");
}
