use anychip_port::{DType, Port};
use anychip_test_support::*;

#[test]
fn gather_copies_rows_bit_for_bit() {
    let p = anychip_port_ref::new();
    let table = tensor(&p, &[0.0, 1.0, 10.0, 11.0, 20.0, f32::from_bits(0x7fc0_1234)], DType::F32, &[3, 2]);
    let idx = ints(&p, &[2, 0, 2], &[3]);
    let out = output(&p, DType::F32, &[3, 2]);
    p.gather_rows(&table, &idx, &out).unwrap();
    assert_eq!(
        get_bits(&p, &out),
        [20.0f32.to_bits(), 0x7fc0_1234, 0, 1.0f32.to_bits(), 20.0f32.to_bits(), 0x7fc0_1234]
    );
    // A transposed table: [[0,10,20],[1,11,21]] viewed as [3,2] = [[0,1],[10,11],[20,21]].
    let t = tensor(&p, &[0.0, 10.0, 20.0, 1.0, 11.0, 21.0], DType::F32, &[2, 3]);
    let tv = restride(&t, &[3, 2], &[1, 3], 0);
    p.gather_rows(&tv, &ints(&p, &[1, 1, 0], &[3]), &out).unwrap();
    assert_same(&get(&p, &out), &[10.0, 11.0, 10.0, 11.0, 0.0, 1.0]);
}

#[test]
fn scatter_add_accumulates_repeated_indices() {
    let p = anychip_port_ref::new();
    let src = tensor(&p, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], DType::F32, &[3, 2]);
    let idx = ints(&p, &[1, 0, 1], &[3]);
    let out = tensor(&p, &[100.0, 100.0, 0.5, 0.5], DType::F32, &[2, 2]);
    p.scatter_add_rows(&src, &idx, &out).unwrap();
    assert_same(&get(&p, &out), &[103.0, 104.0, 6.5, 8.5]);
}

#[test]
fn scatter_add_rounds_once_in_bf16() {
    let p = anychip_port_ref::new();
    // 256 + 1 + 1 = 258 exactly in f64; adding one at a time in bf16 would stay at 256.
    let src = tensor(&p, &[1.0, 1.0], DType::F32, &[2, 1]);
    let idx = ints(&p, &[0, 0], &[2]);
    let out = bf16_bits(&p, &[0x4380], &[1, 1]);
    p.scatter_add_rows(&src, &idx, &out).unwrap();
    assert_same(&get(&p, &out), &[258.0]);
}

#[test]
fn out_of_range_indices_are_invalid_and_write_nothing() {
    let p = anychip_port_ref::new();
    let table = tensor(&p, &[1.0, 2.0], DType::F32, &[2, 1]);
    let out = tensor(&p, &[9.0, 9.0], DType::F32, &[2, 1]);
    assert_invalid(p.gather_rows(&table, &ints(&p, &[0, 2], &[2]), &out), "index 2 at position 1");
    assert_invalid(p.gather_rows(&table, &ints(&p, &[-1, 0], &[2]), &out), "index -1");
    assert_invalid(p.scatter_add_rows(&table, &ints(&p, &[0, 5], &[2]), &out), "outside the table's 2 rows");
    assert_same(&get(&p, &out), &[9.0, 9.0]);
    assert_invalid(p.gather_rows(&table, &tensor(&p, &[0.0, 1.0], DType::F32, &[2]), &out), "expected an i32 view");
}
