use anychip_port::{DType, Port};
use anychip_test_support::*;

#[test]
fn fill_rounds_once_to_the_dtype() {
    let p = anychip_port_ref::new();
    let f = output(&p, DType::F32, &[3]);
    p.fill(&f, 0.1).unwrap();
    assert_same(&get(&p, &f), &[0.1f32; 3]);
    // 1 + 2^-8 is a bf16 tie and goes to even (1.0); 1 + 3*2^-8 goes up to 1 + 2^-6.
    let b = output(&p, DType::BF16, &[2]);
    p.fill(&b, 1.0 + 1.0 / 256.0).unwrap();
    assert_same(&get(&p, &b), &[1.0, 1.0]);
    p.fill(&b, 1.0 + 3.0 / 256.0).unwrap();
    assert_same(&get(&p, &b), &[1.015625, 1.015625]);
    let i = output(&p, DType::I32, &[2]);
    p.fill(&i, -2.7).unwrap();
    assert_eq!(get_i32(&p, &i), vec![-2, -2]);
    p.fill(&f, -0.0).unwrap();
    assert_same(&get(&p, &f), &[-0.0; 3]);
}

#[test]
fn cast_truncates_to_i32_and_rounds_to_bf16() {
    let p = anychip_port_ref::new();
    let x = tensor(&p, &[2.7, -2.7, 0.5, -0.0], DType::F32, &[4]);
    let i = output(&p, DType::I32, &[4]);
    p.cast(&x, &i).unwrap();
    assert_eq!(get_i32(&p, &i), vec![2, -2, 0, 0]);

    // 257 lies half-way between the bf16 neighbours 256 and 258: ties to even gives 256;
    // 259 is half-way between 258 and 260 and goes to 260.
    let n = ints(&p, &[257, 259, -3], &[3]);
    let b = output(&p, DType::BF16, &[3]);
    p.cast(&n, &b).unwrap();
    assert_same(&get(&p, &b), &[256.0, 260.0, -3.0]);

    let back = output(&p, DType::F32, &[3]);
    p.cast(&b, &back).unwrap();
    assert_same(&get(&p, &back), &[256.0, 260.0, -3.0]);

    let specials = tensor(&p, &[f32::NAN, f32::INFINITY, -0.0], DType::F32, &[3]);
    p.cast(&specials, &b).unwrap();
    assert_same(&get(&p, &b), &[f32::NAN, f32::INFINITY, -0.0]);
}

#[test]
fn copy_strided_transposes_broadcasts_and_keeps_nan_payloads() {
    let p = anychip_port_ref::new();
    // x = [[1,2,3],[4,5,6]] read transposed into a [3,2] output.
    let x = tensor(&p, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], DType::F32, &[2, 3]);
    let t = restride(&x, &[3, 2], &[1, 3], 0);
    let out = output(&p, DType::F32, &[3, 2]);
    p.copy_strided(&t, &out).unwrap();
    assert_same(&get(&p, &out), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);

    // Row 1 broadcast over 2 rows, from an offset view.
    let row = restride(&x, &[2, 3], &[0, 1], 3);
    let out = output(&p, DType::F32, &[2, 3]);
    p.copy_strided(&row, &out).unwrap();
    assert_same(&get(&p, &out), &[4.0, 5.0, 6.0, 4.0, 5.0, 6.0]);

    // Writing through a strided out view leaves the gaps alone.
    let dst = tensor(&p, &[0.0; 6], DType::F32, &[6]);
    let every_other = restride(&dst, &[3], &[2], 1);
    p.copy_strided(&tensor(&p, &[7.0, 8.0, 9.0], DType::F32, &[3]), &every_other).unwrap();
    assert_same(&get(&p, &dst), &[0.0, 7.0, 0.0, 8.0, 0.0, 9.0]);

    let payload = f32::from_bits(0x7fa0_0001);
    let x = tensor(&p, &[payload], DType::F32, &[1]);
    let out = output(&p, DType::F32, &[1]);
    p.copy_strided(&x, &out).unwrap();
    assert_eq!(get_bits(&p, &out), vec![0x7fa0_0001]);
}

#[test]
fn movement_rejects_bad_arguments() {
    let p = anychip_port_ref::new();
    let x = tensor(&p, &[1.0, 2.0], DType::F32, &[2]);
    assert_invalid(p.copy_strided(&x, &output(&p, DType::F32, &[3])), "does not match");
    assert_invalid(p.copy_strided(&x, &output(&p, DType::BF16, &[2])), "use cast");
    assert_invalid(p.fill(&restride(&x, &[2], &[1], 1), 0.0), "past the end");
    assert_invalid(p.fill(&restride(&x, &[2], &[1, 1], 0), 0.0), "strides");
}
