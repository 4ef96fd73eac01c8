use anychip_port::{DType, Port};
use anychip_test_support::*;

// A = [[1,2,3],[4,5,6]], B = [[7,8],[9,10],[11,12]]; A@B = [[58,64],[139,154]] by hand.
const A: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
const B: [f32; 6] = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
const AB: [f32; 4] = [58.0, 64.0, 139.0, 154.0];

#[test]
fn small_product_by_hand() {
    let p = anychip_port_ref::new();
    let out = output(&p, DType::F32, &[1, 2, 2]);
    p.matmul(&tensor(&p, &A, DType::F32, &[1, 2, 3]), &tensor(&p, &B, DType::F32, &[1, 3, 2]), &out, 1.0, 0.0).unwrap();
    assert_same(&get(&p, &out), &AB);
}

#[test]
fn transposed_operands_via_strides() {
    let p = anychip_port_ref::new();
    // Store A^T ([3,2]) and B^T ([2,3]) contiguously and view them back as A and B.
    let at = tensor(&p, &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0], DType::F32, &[6]);
    let bt = tensor(&p, &[7.0, 9.0, 11.0, 8.0, 10.0, 12.0], DType::F32, &[6]);
    let a = restride(&at, &[1, 2, 3], &[6, 1, 2], 0);
    let b = restride(&bt, &[1, 3, 2], &[6, 1, 3], 0);
    let out = output(&p, DType::F32, &[1, 2, 2]);
    p.matmul(&a, &b, &out, 1.0, 0.0).unwrap();
    assert_same(&get(&p, &out), &AB);
}

#[test]
fn batch_broadcast_alpha_and_beta() {
    let p = anychip_port_ref::new();
    // b is shared by both batches (stride 0); batch 1 of a is 2A.
    let a2: Vec<f32> = A.iter().chain(A.iter()).enumerate().map(|(i, &v)| if i < 6 { v } else { 2.0 * v }).collect();
    let a = tensor(&p, &a2, DType::F32, &[2, 2, 3]);
    let b = restride(&tensor(&p, &B, DType::F32, &[1, 3, 2]), &[2, 3, 2], &[0, 2, 1], 0);
    let out = tensor(&p, &[1.0; 8], DType::F32, &[2, 2, 2]);
    p.matmul(&a, &b, &out, 0.5, 2.0).unwrap();
    let want: Vec<f32> = AB.iter().map(|v| 0.5 * v + 2.0).chain(AB.iter().map(|v| v + 2.0)).collect();
    assert_same(&get(&p, &out), &want);
}

#[test]
fn beta_zero_ignores_nan_in_out_and_k_zero_gives_beta_out() {
    let p = anychip_port_ref::new();
    let out = tensor(&p, &[f32::NAN; 4], DType::F32, &[1, 2, 2]);
    p.matmul(&tensor(&p, &A, DType::F32, &[1, 2, 3]), &tensor(&p, &B, DType::F32, &[1, 3, 2]), &out, 1.0, 0.0).unwrap();
    assert_same(&get(&p, &out), &AB);

    let empty_a = tensor(&p, &[], DType::F32, &[1, 2, 0]);
    let empty_b = tensor(&p, &[], DType::F32, &[1, 0, 2]);
    let out = tensor(&p, &[1.0, 2.0, 3.0, 4.0], DType::F32, &[1, 2, 2]);
    p.matmul(&empty_a, &empty_b, &out, 1.0, 3.0).unwrap();
    assert_same(&get(&p, &out), &[3.0, 6.0, 9.0, 12.0]);
    p.matmul(&empty_a, &empty_b, &out, 1.0, 0.0).unwrap();
    assert_same(&get(&p, &out), &[0.0; 4]);
}

#[test]
fn bf16_inputs_accumulate_exactly_into_f32_out() {
    let p = anychip_port_ref::new();
    // Row [256, 1, -256] . [1, 1, 1] = 1: exact in f64 whatever the summation order.
    let a = bf16_bits(&p, &[0x4380, 0x3f80, 0xc380], &[1, 1, 3]);
    let b = bf16_bits(&p, &[0x3f80; 3], &[1, 3, 1]);
    let out = output(&p, DType::F32, &[1, 1, 1]);
    p.matmul(&a, &b, &out, 1.0, 0.0).unwrap();
    assert_same(&get(&p, &out), &[1.0]);
    // The same product into bf16 out: 257 (= 256 + 1 via [256,1,0]) rounds to even 256.
    let a = bf16_bits(&p, &[0x4380, 0x3f80, 0], &[1, 1, 3]);
    let out = output(&p, DType::BF16, &[1, 1, 1]);
    p.matmul(&a, &b, &out, 1.0, 0.0).unwrap();
    assert_same(&get(&p, &out), &[256.0]);
}

#[test]
fn matmul_rejects_disagreeing_shapes_and_dtypes() {
    let p = anychip_port_ref::new();
    let a = tensor(&p, &A, DType::F32, &[1, 2, 3]);
    let out = output(&p, DType::F32, &[1, 2, 2]);
    assert_invalid(p.matmul(&a, &tensor(&p, &B, DType::F32, &[1, 2, 3]), &out, 1.0, 0.0), "do not agree");
    assert_invalid(p.matmul(&a, &bf16_bits(&p, &[0; 6], &[1, 3, 2]), &out, 1.0, 0.0), "share a dtype");
    assert_invalid(p.matmul(&tensor(&p, &A, DType::F32, &[2, 3]), &a, &out, 1.0, 0.0), "rank 3");
}
